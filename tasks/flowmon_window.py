"""Which time window a job reading the Flowmon REST API covers: since its last successful run,
with overlap. Each job (export, sightings) keeps its own watermark."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from misp_ndr.config import Settings
from misp_ndr.moments import as_utc
from misp_ndr.task_policy import batch_task
from tasks.run_state import RunWatermarks


@dataclass(frozen=True)
class FlowmonWindow:
    start: datetime
    end: datetime
    watermark_key: str

    def __str__(self) -> str:
        return f"{self.start.isoformat()} .. {self.end.isoformat()}"


def _watermarks(settings: Settings) -> RunWatermarks:
    return RunWatermarks(settings.state_dir / "watermarks.json")


def flowmon_window(
    settings: Settings, since: datetime | None, until: datetime | None, job: str = "export"
) -> FlowmonWindow:
    """Explicit bounds win; else from the watermark minus the overlap (ADS stores events a
    few minutes after their detection time), or a first-run lookback, up to now."""
    key = f"{job}:flowmon-api:{settings.flowmon.url}"
    end = as_utc(until) if until else datetime.now(UTC)
    if since is not None:
        start = as_utc(since)
    else:
        mark = _watermarks(settings).get(key)
        overlap = timedelta(minutes=settings.flowmon.window_overlap_minutes)
        lookback = timedelta(hours=settings.flowmon.first_run_lookback_hours)
        start = mark - overlap if mark else end - lookback
    if start >= end:
        raise ValueError(
            f"empty {job} window: {start.isoformat()} is not before {end.isoformat()}"
        )
    return FlowmonWindow(start, end, key)


def advance_flowmon_watermark(settings: Settings, window: FlowmonWindow) -> None:
    _watermarks(settings).advance(window.watermark_key, window.end)


flowmon_window_task = batch_task(flowmon_window, "flowmon-window")
advance_flowmon_watermark_task = batch_task(advance_flowmon_watermark,
                                            "advance-flowmon-watermark")
