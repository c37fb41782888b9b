"""What every benchmark shares: seeded data, medians of several runs, peak memory, and one
table of figures (value, target, verdict) printed by `run.py`."""

from __future__ import annotations

import gc
import statistics
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import pyarrow as pa

T = TypeVar("T")
SEED = 20261201


@dataclass(frozen=True)
class Figure:
    """One measured figure; `target` is a human text ('< 0.5 s'), `met` its verdict."""

    benchmark: str
    case: str
    value: float
    unit: str
    target: str = ""
    met: bool | None = None

    def row(self) -> list[str]:
        verdict = {None: "", True: "met", False: "NOT MET"}[self.met]
        return [self.benchmark, self.case, _number(self.value), self.unit, self.target, verdict]


def median_seconds(action: Callable[[], T], runs: int) -> tuple[float, T]:
    """Median wall time of `runs` calls, and the last call's result."""
    times, result = [], None
    for _ in range(runs):
        gc.collect()
        start = time.perf_counter()
        result = action()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result  # type: ignore[return-value]


def peak_bytes(action: Callable[[], T]) -> tuple[int, T]:
    """Peak memory `action` allocated on top of what existed: Python and NumPy objects
    (tracemalloc) plus Arrow buffers. Arrow's pool keeps one high-water mark for the whole
    process, so `action` runs on a fresh proxy pool, whose mark is its own."""
    gc.collect()
    previous = pa.default_memory_pool()
    fresh = pa.proxy_memory_pool(previous)  # must outlive its use as the default pool
    pa.set_memory_pool(fresh)
    tracemalloc.start()
    try:
        result = action()
        _, python_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        pa.set_memory_pool(previous)
    return python_peak + (fresh.max_memory() or 0), result


def print_table(figures: list[Figure]) -> None:
    header = ["benchmark", "case", "value", "unit", "target", "verdict"]
    rows = [header] + [figure.row() for figure in figures]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    for number, row in enumerate(rows):
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))
        if number == 0:
            print("  ".join("-" * width for width in widths))


def size_label(count: int) -> str:
    if count % 1_000_000 == 0:
        return f"{count // 1_000_000}M"
    return f"{count // 1000}k" if count % 1000 == 0 else str(count)


def _number(value: float) -> str:
    if value >= 1000:
        return f"{value:,.0f}"
    return f"{value:.3g}" if value < 10 else f"{value:.1f}"
