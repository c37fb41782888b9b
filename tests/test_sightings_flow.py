"""The sightings flow end to end: the rule update's sid map and indicator store on the
bundled demo data, a stateful MISP, the Flowmon API window, the run's artifact, the CLI."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
import responses
from prefect.settings import PREFECT_API_URL
from typer.testing import CliRunner

import flows.sightings
from flows.sightings import SightingSource, submit_sightings
from flows.update_rules import update_rules
from misp_ndr.cli import app
from misp_ndr.demo import SAMPLE_AGE_DAYS
from tasks.run_state import RunWatermarks
from tasks.sightings_report import SightingsIncomplete
from tests.conftest import SAMPLES
from tests.misp_stand_in import MispStandIn, point_settings_at_stand_in

pytestmark = pytest.mark.usefixtures("prefect_harness")

SIGHTINGS = SAMPLES / "sightings"
C2 = "e9df804d-50c8-5644-ba64-6657a2889cb4"  # 45.155.205.233, alerts carry it as metadata
EVIL = "d363c9bc-4c6c-5f18-8be9-2e61c68bcade"  # evil-updates.example, found by sid
MD5 = "2acb469a-2e94-5146-b06b-a0b7257688a4"  # 44d886..., alert of the md5 list rule
FLOWMON = "https://flowmon.example"


def build_demo_rules() -> None:
    """What `misp-ndr demo` does first: rules, sid map and indicator store from the feed."""
    update_rules(feed=str(SAMPLES / "misp-feed"), max_age_days=SAMPLE_AGE_DAYS)


@pytest.fixture
def misp(monkeypatch: pytest.MonkeyPatch) -> Iterator[MispStandIn]:
    """MISP holding the bundled feed's events."""
    point_settings_at_stand_in(monkeypatch, retries=0)
    fast_retry = flows.sightings.deliver_sightings_to_misp_task.with_options(
        retry_delay_seconds=0)
    monkeypatch.setattr(flows.sightings, "deliver_sightings_to_misp_task", fast_retry)
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        stand_in = MispStandIn(rsps)
        for path in sorted((SAMPLES / "misp-feed").glob("*-*.json")):
            event = json.loads(path.read_text())["Event"]
            stand_in.publish_event(event["uuid"], event["info"], event["date"], 1795000000,
                                   event["Attribute"],
                                   tuple(tag["name"] for tag in event.get("Tag", [])))
        yield stand_in


def test_suricata_alerts_of_the_demo_rules_sight_their_attributes_once(
    misp: MispStandIn,
) -> None:
    build_demo_rules()
    report = submit_sightings(source=SightingSource.SURICATA,
                              input_path=str(SIGHTINGS / "eve-misp-alerts.json"))
    sighted = sorted((s["attribute_uuid"], s["source"], s["date_sighting"])
                     for s in misp.sightings)
    assert sighted == sorted([
        (C2, "suricata/edge-ids-1", "1795161605"),  # 3 hits within 08:00-09:00 -> one
        (C2, "suricata/edge-ids-1", "1795165500"),  # 09:05, the next window
        (C2, "suricata/branch-ids-2", "1795162032"),  # another sensor
        (EVIL, "suricata/edge-ids-1", "1795162290"),  # no metadata: the sid map
        (MD5, "suricata/edge-ids-1", "1795162442"),  # list rule: the file's md5, by store
    ])
    assert all("uuid" in body for body in misp.sighting_requests)  # never by value here
    assert report.sent == 5 and report.hits == 7 and len(report.problems) == 1
    assert report.skipped_records["alert from a rule not built from MISP"] == 1

    again = submit_sightings(source=SightingSource.SURICATA,
                             input_path=str(SIGHTINGS / "eve-misp-alerts.json"))
    assert again.sent == 0 and again.duplicates == 5 and len(misp.sightings) == 5

    answer = httpx.post(f"{PREFECT_API_URL.value()}/artifacts/filter", json={
        "artifacts": {"key": {"any_": ["sightings-report"]}}, "sort": "CREATED_DESC",
        "limit": 1, "offset": 0})
    answer.raise_for_status()
    figures = {row["item"]: row["count"] for row in json.loads(answer.json()[0]["data"])}
    assert figures["hits"] == 7 and figures["skipped: sent by an earlier run"] == 5


def test_values_unknown_to_misp_are_reported_with_examples(misp: MispStandIn) -> None:
    build_demo_rules()
    report = submit_sightings(source=SightingSource.CSV, input_path=str(SIGHTINGS / "hits.csv"),
                              source_name="proxy logs")
    assert report.sent == 2  # 81.2.69.160 twice in one hour, login-micros0ft.example.
    assert report.unknown == [("93.184.216.34", "hits.csv line 5")]
    assert "unknown to MISP: 93.184.216.34 (from hits.csv line 5)" in report.render_text()
    assert {s["source"] for s in misp.sightings} == {"proxy logs"}


def test_misp_down_fails_the_run_and_the_next_run_sends_everything_once(
    misp: MispStandIn,
) -> None:
    misp.sightings_down = True
    with pytest.raises(SightingsIncomplete) as failed:
        submit_sightings(source=SightingSource.CSV, input_path=str(SIGHTINGS / "hits.csv"))
    assert "delivery aborted" in failed.value.report.failures[0][1]
    misp.sightings_down = False
    report = submit_sightings(source=SightingSource.CSV, input_path=str(SIGHTINGS / "hits.csv"))
    assert report.sent == 2 and len(misp.sightings) == 2


def test_every_answer_lost_still_adds_each_sighting_once(misp: MispStandIn) -> None:
    """MISP stores each sighting but its answer is lost: every task retry finds the one
    the previous attempt added and sends only the next."""
    misp.lost_sighting_answers = set(range(1, 100))
    report = submit_sightings(source=SightingSource.CSV, input_path=str(SIGHTINGS / "hits.csv"))
    added = [(s["attribute_uuid"], s["date_sighting"]) for s in misp.sightings]
    assert len(added) == len(set(added)) == 2  # 81.2.69.160 and login-micros0ft.example.
    assert report.sent == 0 and report.confirmed + report.duplicates == 2 and report.succeeded


@pytest.fixture
def appliance(monkeypatch: pytest.MonkeyPatch) -> Iterator[responses.RequestsMock]:
    monkeypatch.setenv("MISP_NDR_FLOWMON__URL", FLOWMON)
    monkeypatch.setenv("MISP_NDR_FLOWMON__USER", "misp-sync")
    monkeypatch.setenv("MISP_NDR_FLOWMON__PASSWORD", "pw-Flowmon-1")
    monkeypatch.setenv("MISP_NDR_FLOWMON__MIN_PRIORITY", "critical")  # export's, not ours
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        rsps.post(f"{FLOWMON}/resources/oauth/token", json={"access_token": "t",
                                                            "expires_in": 60})
        rsps.get(f"{FLOWMON}/rest/ads/events", json=[
            {"id": 7, "type": "BLACKLIST", "time": "2026-11-20 08:20:00", "priority": "low",
             "detail": "Host: communication with blacklisted address 185.220.101.4 "
                       "(blacklist MISP-ips)", "nfSource": "edge-probe-1",
             "source": {"ip": "10.0.0.7"}, "targets": [{"ip": "185.220.101.4"}]},
            {"id": 8, "type": "SCANS", "time": "2026-11-20 08:21:00", "priority": "high",
             "detail": "scan", "source": {"ip": "45.155.205.233"}, "targets": []},
        ])
        yield rsps


def test_flowmon_api_hits_of_every_priority_count_and_the_window_advances(
    appliance: responses.RequestsMock, tmp_path: Path,
) -> None:
    until = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
    report = submit_sightings(source=SightingSource.FLOWMON_API, until=until)
    lines = [json.loads(line) for line in (tmp_path / "out/sightings.jsonl").read_text()
             .splitlines()]
    assert lines == [{"values": ["185.220.101.4"], "filters": {"to_ids": 1},
                      "source": "flowmon/edge-probe-1", "type": "0",
                      "timestamp": "1795162800"}]
    assert report.skipped_records == {"ADS event of another method than BLACKLIST": 1}
    marks = RunWatermarks(tmp_path / ".misp-ndr" / "watermarks.json")
    assert marks.get(f"sightings:flowmon-api:{FLOWMON}/") == until
    assert marks.get(f"export:flowmon-api:{FLOWMON}/") is None


def test_cli_reads_stdin_batches_and_writes_json_lines(tmp_path: Path) -> None:
    batch = (SIGHTINGS / "flowmon-blacklist.jsonl").read_text()
    result = CliRunner().invoke(app, ["sightings", "--source", "flowmon-stdin", "--out",
                                      str(tmp_path / "s.jsonl"), "--source-name",
                                      "ADS {sensor}"], input=batch)
    assert result.exit_code == 0, result.output
    assert "sightings sent (or written to the file)" in result.output
    lines = (tmp_path / "s.jsonl").read_text().splitlines()
    assert len(lines) == 3 and all('"source": "ADS flowmon/edge-probe-1"' in ln for ln in lines)
    assert list((tmp_path / ".misp-ndr" / "spool").iterdir()) == []
