"""What Prefect costs per run, so users know the fixed price of a flow run: a cold run in a
new process (interpreter, imports, ephemeral API server start) and warm runs in one process,
both of the real export flow on the 9-record sample batch, written as a MISP feed."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.harness import Figure, median_seconds
from misp_ndr.demo import SAMPLES

SMALL_RUN = """
from flows.export import ExportSource, export_detections
export_detections(source=ExportSource.FLOWMON_STDIN, input_path={batch!r},
                  feed_dir={feed!r}, feed_only=True, state_dir={state!r})
"""


def run(quick: bool) -> list[Figure]:
    runs = 1 if quick else 3
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        code = SMALL_RUN.format(batch=str(SAMPLES / "flowmon-batch.tsv"),
                                feed=str(work / "feed"), state=str(work / "state"))
        env = {**os.environ, "PREFECT_HOME": str(work / "prefect"),
               "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
               "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120"}
        def new_process() -> None:
            subprocess.run([sys.executable, "-c", code], env=env, check=True,
                           capture_output=True)

        first, _ = median_seconds(new_process, 1)  # creates the server's database
        cold, _ = median_seconds(new_process, runs)
        imports, _ = median_seconds(lambda: subprocess.run(
            [sys.executable, "-c", "import flows.export"], env=env, check=True,
            capture_output=True), runs)
        warm = _warm_runs(code, env, 1 if quick else 10)
    return [Figure("prefect overhead", "interpreter + imports of a flow module", imports, "s"),
            Figure("prefect overhead", "first run on a new machine (creates the ephemeral "
                   "server's database)", first, "s"),
            Figure("prefect overhead", "small flow run in a new process (cold)", cold, "s"),
            Figure("prefect overhead", "small flow run, process already running (warm)", warm,
                   "s")]


def _warm_runs(code: str, env: dict[str, str], count: int) -> float:
    """Median of `count` runs after a first one, timed inside one child process."""
    timing = (f"import statistics, time\n{code}\ntimes = []\n"
              f"for _ in range({count}):\n    start = time.perf_counter()\n"
              + "\n".join("    " + line for line in code.strip().splitlines())
              + "\n    times.append(time.perf_counter() - start)\n"
              "print(statistics.median(times))")
    done = subprocess.run([sys.executable, "-c", timing], env=env, check=True,
                          capture_output=True, text=True)
    return float(done.stdout.strip().splitlines()[-1])
