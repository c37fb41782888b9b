"""What every benchmark shares: seeded data, medians of several runs, peak memory, and one
table of figures (value, target, verdict) printed by `run.py`."""

from __future__ import annotations

import gc
import resource
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


@dataclass(frozen=True)
class Timing:
    """Wall seconds, and the CPU seconds the whole process (every thread) spent in user
    and in kernel mode: on a machine of N cores, no wall time can beat (user + system) / N,
    and kernel time that grows faster than the input (page faults) shows up apart."""

    wall: float
    user: float
    system: float

    @property
    def cpu(self) -> float:
        return self.user + self.system


def timed(action: Callable[[], T]) -> tuple[Timing, T]:
    """One call's Timing (after a garbage collection, outside the timing), and its result."""
    gc.collect()
    before = resource.getrusage(resource.RUSAGE_SELF)
    start = time.perf_counter()
    result = action()
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_SELF)
    return Timing(wall, after.ru_utime - before.ru_utime,
                  after.ru_stime - before.ru_stime), result


def median_timing(timings: list[Timing]) -> Timing:
    """Each field's median over the runs (a run's wall and CPU need not be one run's)."""
    return Timing(*(statistics.median(getattr(timing, name) for timing in timings)
                    for name in ("wall", "user", "system")))


def median_timed(action: Callable[[], T], runs: int) -> tuple[Timing, T]:
    """Median Timing of `runs` calls, and the last call's result."""
    timings, result = [], None
    for _ in range(runs):
        timing, result = timed(action)
        timings.append(timing)
    return median_timing(timings), result  # type: ignore[return-value]


def median_seconds(action: Callable[[], T], runs: int) -> tuple[float, T]:
    """Median wall time of `runs` calls, and the last call's result."""
    timing, result = median_timed(action, runs)
    return timing.wall, result


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
