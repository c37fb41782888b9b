"""All benchmarks, one table:  python benchmarks/run.py [--quick] [--only NAME ...]

Figures are medians of several runs in this process, on seeded synthetic data; ratios are
measured in the same run. `--quick` runs tiny sizes only, to check the benchmarks still
work (its figures mean nothing). Targets and the machine's figures: benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import importlib
import os
import platform
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.harness import Figure, print_table

BENCHMARKS = ["ip_filter", "rule_rendering", "rule_update", "export", "sightings",
              "prefect_overhead"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test")
    parser.add_argument("--only", nargs="+", choices=BENCHMARKS, default=BENCHMARKS)
    args = parser.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"Python {platform.python_version()}")
    figures: list[Figure] = []
    for name in args.only:
        module = importlib.import_module(f"benchmarks.bench_{name}")
        print(f"running {name} ...", file=sys.stderr, flush=True)
        figures += module.run(quick=args.quick)
    print_table(figures)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
