"""Scheduled exports from the Flowmon ADS REST API: windows resume only after success."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import responses

import flows.export
from flows.export import ExportSource, export_detections
from tasks.export_report import ExportIncomplete
from tasks.misp_feed import read_feed
from tasks.run_state import RunWatermarks

pytestmark = pytest.mark.usefixtures("prefect_harness")

BASE = "https://flowmon.example"
UNTIL = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
EVENTS = [
    {"id": 501, "type": "SCANS", "time": "2026-11-20 08:15:00", "detail": "TCP SYN scan",
     "priority": 4, "source": {"ip": "45.155.205.233"}, "targets": [{"ip": "10.0.0.1"}]},
    {"id": 502, "type": "BLACKLIST", "time": "2026-11-20 08:20:00", "detail": "Host blacklist",
     "priority": 5, "source": {"ip": "10.0.0.7"}, "targets": [{"ip": "185.220.101.4"}]},
]


@pytest.fixture
def appliance(monkeypatch: pytest.MonkeyPatch) -> Iterator[responses.RequestsMock]:
    monkeypatch.setenv("MISP_NDR_FLOWMON__URL", BASE)
    monkeypatch.setenv("MISP_NDR_FLOWMON__USER", "misp-sync")
    monkeypatch.setenv("MISP_NDR_FLOWMON__PASSWORD", "pw-Flowmon-1")
    monkeypatch.setenv("MISP_NDR_FLOWMON__RETRIES", "0")
    monkeypatch.setenv("MISP_NDR_FLOWMON__WINDOW_OVERLAP_MINUTES", "15")
    fast_retry = flows.export.fetch_flowmon_detections_task.with_options(retry_delay_seconds=0)
    monkeypatch.setattr(flows.export, "fetch_flowmon_detections_task", fast_retry)
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        rsps.post(f"{BASE}/resources/oauth/token", json={"access_token": "t", "expires_in": 60})
        yield rsps


def searches(rsps: responses.RequestsMock) -> list[dict[str, Any]]:
    return [json.loads(parse_qs(urlsplit(call.request.url).query)["search"][0])
            for call in rsps.calls if "/rest/ads/events" in call.request.url]


def export_api(until: datetime = UNTIL, **options: Any) -> flows.export.ExportReport:
    return export_detections(source=ExportSource.FLOWMON_API, until=until, **options)


def test_api_events_are_exported_and_the_next_run_resumes_where_this_one_ended(
    appliance: responses.RequestsMock, tmp_path: Path,
) -> None:
    appliance.get(f"{BASE}/rest/ads/events", json=EVENTS)
    first = export_api()
    assert first.created == 2
    values = {a["value"] for e in read_feed(tmp_path / "out/misp-feed")
              for a in e["Event"]["Attribute"]}
    assert values == {"45.155.205.233", "185.220.101.4"}
    watermarks = RunWatermarks(tmp_path / ".misp-ndr" / "watermarks.json")
    assert watermarks.get(f"export:flowmon-api:{BASE}/") == UNTIL
    second = export_api(until=datetime(2026, 11, 20, 10, 0, tzinfo=UTC))
    assert second.created == 0 and second.unchanged == 2
    assert searches(appliance)[-1]["from"] == "2026-11-20 08:45"  # watermark - overlap


def test_appliance_outage_fails_the_run_and_keeps_the_window(
    appliance: responses.RequestsMock, tmp_path: Path,
) -> None:
    appliance.get(f"{BASE}/rest/ads/events", status=503)
    with pytest.raises(Exception, match="503"):
        export_api()
    assert len(searches(appliance)) == 4  # first try + 3 Prefect task retries
    assert not (tmp_path / ".misp-ndr" / "watermarks.json").exists()


def test_failed_delivery_does_not_move_the_watermark(
    appliance: responses.RequestsMock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    appliance.get(f"{BASE}/rest/ads/events", json=EVENTS)
    (tmp_path / "blocked").write_text("a file where the feed directory should be")
    with pytest.raises(ExportIncomplete):
        export_api(feed_dir=str(tmp_path / "blocked"))
    assert not (tmp_path / ".misp-ndr" / "watermarks.json").exists()


def test_ads_filter_names_drop_their_addresses(appliance: responses.RequestsMock) -> None:
    appliance.get(f"{BASE}/rest/ads/events", json=EVENTS)
    appliance.get(f"{BASE}/rest/ads/filters", json=[
        {"name": "Known scanners", "patterns": [{"pattern": "45.155.205.*"}]}])
    report = export_api(ip_filters=["Known scanners"])
    assert report.indicator_counts["filtered"] == 1
    assert report.created == 1
