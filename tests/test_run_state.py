"""Watermarks, the export ledger and export windows: what makes re-runs safe."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from misp_ndr.config import load_settings
from misp_ndr.moments import parse_moment
from tasks.export_ledger import ExportLedger
from tasks.flowmon_window import advance_flowmon_watermark, flowmon_window
from tasks.run_state import RunWatermarks

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def test_watermark_round_trips_and_survives_a_new_process(tmp_path: Path) -> None:
    RunWatermarks(tmp_path / "w.json").advance("job", NOW)
    assert RunWatermarks(tmp_path / "w.json").get("job") == NOW
    assert RunWatermarks(tmp_path / "w.json").get("other") is None


def test_ledger_knows_fingerprints_per_destination(tmp_path: Path) -> None:
    ledger = ExportLedger(tmp_path / "ledger.sqlite")
    ledger.record("misp:https://a/", "u1", "flowmon", "1", "fp1")
    ledger.record("misp:https://a/", "u1", "flowmon", "1", "fp2")  # an update replaces
    assert ledger.fingerprints("misp:https://a/", ["u1", "u2"]) == {"u1": "fp2"}
    assert ledger.fingerprints("misp:https://b/", ["u1"]) == {}


def test_ledger_lookup_handles_more_uuids_than_sqlite_parameters(tmp_path: Path) -> None:
    ledger = ExportLedger(tmp_path / "ledger.sqlite")
    for n in range(1200):
        ledger.record("d", f"u{n}", "suricata", str(n), "fp")
    assert len(ledger.fingerprints("d", [f"u{n}" for n in range(2000)])) == 1200


def test_first_api_window_looks_back_then_resumes_from_watermark_with_overlap() -> None:
    settings = load_settings({"flowmon": {"first_run_lookback_hours": 6,
                                          "window_overlap_minutes": 10}})
    first = flowmon_window(settings, None, NOW)
    assert first.start == NOW - timedelta(hours=6)
    advance_flowmon_watermark(settings, first)
    later = NOW + timedelta(hours=1)
    second = flowmon_window(settings, None, later)
    assert second.start == NOW - timedelta(minutes=10)
    assert second.end == later


def test_explicit_window_wins_and_empty_window_is_refused() -> None:
    settings = load_settings()
    window = flowmon_window(settings, NOW - timedelta(days=2), NOW)
    assert window.start == NOW - timedelta(days=2)
    with pytest.raises(ValueError, match="empty export window"):
        flowmon_window(settings, NOW, NOW - timedelta(hours=1))


@pytest.mark.parametrize(("text", "expected"), [
    ("7d", NOW - timedelta(days=7)),
    ("90m", NOW - timedelta(minutes=90)),
    ("2026-11-20T08:00", datetime(2026, 11, 20, 8, 0, tzinfo=UTC)),
    ("2026-11-20T09:00+01:00", datetime(2026, 11, 20, 8, 0, tzinfo=UTC)),
])
def test_command_line_times(text: str, expected: datetime) -> None:
    assert parse_moment(text, now=NOW) == expected


def test_command_line_time_typo_is_explained() -> None:
    with pytest.raises(ValueError, match="neither an ISO-8601 time"):
        parse_moment("yesterday", now=NOW)
