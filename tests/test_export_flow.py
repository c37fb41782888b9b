"""The export flow end to end under Prefect's test harness, delivering to a MISP feed."""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path

import pytest

from flows.export import ExportSource, export_detections
from tasks.misp_feed import read_feed
from tests.conftest import SAMPLES

pytestmark = pytest.mark.usefixtures("prefect_harness")


def attribute_values(events: list[dict]) -> list[str]:
    return [attr["value"] for event in events for attr in event["Event"].get("Attribute", [])]


def is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def run_export(tmp_path: Path, source: ExportSource, sample: str, **options: object):
    return export_detections(source=source, input_path=str(SAMPLES / sample),
                             feed_dir=str(tmp_path / "feed"), **options)


def test_suricata_alerts_become_feed_events_with_only_global_addresses(tmp_path: Path) -> None:
    report = run_export(tmp_path, ExportSource.SURICATA, "eve.json")
    events = read_feed(tmp_path / "feed")
    assert report.succeeded
    assert report.created == report.events_built == len(events) > 0
    ips = [value for value in attribute_values(events) if is_ip(value)]
    assert ips and all(ipaddress.ip_address(ip).is_global for ip in ips)
    assert report.indicator_counts["non_global"] > 0
    for event in events:
        tags = [tag["name"] for tag in event["Event"]["Tag"]]
        assert tags[0] == "misp-ndr"
        assert tags[1].startswith('suricata:method="')
        assert event["Event"]["distribution"] in (0, "0")
        assert all(attr["to_ids"] is False for attr in event["Event"]["Attribute"])


def test_malformed_records_are_reported_and_the_rest_exported(tmp_path: Path) -> None:
    report = run_export(tmp_path, ExportSource.FLOWMON_STDIN, "flowmon-batch.tsv")
    assert report.succeeded
    assert any("line" in problem.source for problem in report.problems)
    assert report.events_built > 0


def test_rerun_exports_nothing_twice(tmp_path: Path) -> None:
    first = run_export(tmp_path, ExportSource.FLOWMON_STDIN, "flowmon-batch.jsonl")
    files_before = sorted(p.name for p in (tmp_path / "feed").iterdir())
    second = run_export(tmp_path, ExportSource.FLOWMON_STDIN, "flowmon-batch.jsonl")
    assert first.created > 0
    assert (second.created, second.updated, second.unchanged) == (0, 0, first.created)
    assert sorted(p.name for p in (tmp_path / "feed").iterdir()) == files_before


def test_dry_run_builds_events_but_writes_nothing(tmp_path: Path) -> None:
    report = run_export(tmp_path, ExportSource.SURICATA, "eve.json", dry_run=True)
    assert report.dry_run and report.events_built > 0
    assert not (tmp_path / "feed").exists()


def test_run_parameters_override_configuration(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MISP_NDR_EXPORT__TAG", "from-env")
    baseline = run_export(tmp_path / "a", ExportSource.SURICATA, "eve.json")
    everything = [v for v in attribute_values(read_feed(tmp_path / "a" / "feed")) if is_ip(v)]
    blocked = everything[0]
    report = run_export(tmp_path / "b", ExportSource.SURICATA, "eve.json", tag="from-run",
                        to_ids=True, distribution=3, ip_filters=[blocked])
    events = read_feed(tmp_path / "b" / "feed")
    assert blocked not in attribute_values(events)
    assert report.indicator_counts["filtered"] >= 1
    assert baseline.indicator_counts["filtered"] == 0
    for event in events:
        assert event["Event"]["Tag"][0]["name"] == "from-run"
        assert int(event["Event"]["distribution"]) == 3
        assert all(attr["to_ids"] is True for attr in event["Event"]["Attribute"])


def test_each_run_publishes_its_report_as_a_table_artifact(tmp_path: Path) -> None:
    import httpx
    from prefect.settings import PREFECT_API_URL

    report = run_export(tmp_path, ExportSource.SURICATA, "eve.json")
    # Prefect 3.8's client sends null filter fields this server refuses: ask the API itself
    answer = httpx.post(f"{PREFECT_API_URL.value()}/artifacts/filter", json={
        "artifacts": {"key": {"any_": ["export-report"]}}, "sort": "CREATED_DESC",
        "limit": 1, "offset": 0})
    answer.raise_for_status()
    rows = json.loads(answer.json()[0]["data"])
    figures = {row["item"]: row["count"] for row in rows}
    assert figures["events created"] == report.created
    assert figures["dropped as non-global"] == report.indicator_counts["non_global"]
    assert any(row["item"] == "problem" and "line" in row["detail"] for row in rows)
