"""Suricata eve.json alerts become detections; everything else is counted or reported."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from misp_ndr.errors import InputError
from tasks.detections import DETECTION_COLUMNS, Priority
from tasks.suricata import REPEATED_ALERT, parse_eve_lines, read_eve_file
from tests.conftest import SAMPLES

EVE_SAMPLE = SAMPLES / "eve.json"


def alert(**overrides: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "timestamp": "2026-11-20T08:15:02.123456+0000",
        "flow_id": 1234,
        "event_type": "alert",
        "src_ip": "10.1.1.5",
        "src_port": 50000,
        "dest_ip": "81.2.69.160",
        "dest_port": 443,
        "proto": "TCP",
        "alert": {"signature_id": 2000001, "signature": "ET TEST signature",
                  "category": "Misc activity", "severity": 2},
    }
    record.update(overrides)
    return record


def line(record: Any) -> str:
    return json.dumps(record)


def test_sample_alerts_become_one_detection_each_and_the_rest_is_accounted_for() -> None:
    batch = read_eve_file(EVE_SAMPLE)

    assert batch.records_read == 12
    assert batch.detections["detection_id"].nunique() == 6
    assert batch.skipped == {
        "eve flow record (not an alert)": 2,
        "eve dns record (not an alert)": 1,
        "eve stats record (not an alert)": 1,
        REPEATED_ALERT: 1,
    }
    assert [problem.source for problem in batch.problems] == ["eve.json line 9"]
    assert batch.problems[0].reason.startswith("not JSON")
    assert (len(batch.detections) + sum(batch.skipped.values()) + len(batch.problems)
            == batch.records_read)


def test_sample_detections_follow_the_normalized_schema() -> None:
    detections = read_eve_file(EVE_SAMPLE).detections

    assert list(detections.columns) == list(DETECTION_COLUMNS)
    assert {str(dtype) for dtype in detections.dtypes} <= {
        "string", "Int32", "datetime64[ns, UTC]"}
    assert set(detections["source_system"]) == {"suricata"}
    assert set(detections["priority"]) <= {priority.value for priority in Priority}


def test_sample_context_fills_hostname_and_domain() -> None:
    detections = read_eve_file(EVE_SAMPLE).detections.set_index("method")

    assert detections.loc["2024217", "hostname"] == "cdn-sync.example"  # http.hostname
    assert detections.loc["2035595", "hostname"] == "files-share.example"  # tls.sni
    assert detections.loc["2027758", "domain"] == "xk4q9z.dyn-resolve.example"  # dns.query
    assert pd.isna(detections.loc["2001219", "hostname"])


def test_rereading_the_same_file_gives_the_same_detection_ids() -> None:
    first = read_eve_file(EVE_SAMPLE).detections["detection_id"].tolist()
    second = read_eve_file(EVE_SAMPLE).detections["detection_id"].tolist()

    assert first == second
    assert "1421337054813921-2024217" in first


def test_same_signature_on_same_flow_is_one_detection_at_its_first_time() -> None:
    later = alert(timestamp="2026-11-20T08:15:09.000000+0000", http={"hostname": "h.example"})
    earlier = alert(timestamp="2026-11-20T08:15:01.000000+0000")

    batch = parse_eve_lines([line(later), line(earlier)])

    assert len(batch.detections) == 1
    row = batch.detections.iloc[0]
    assert row["detection_id"] == "1234-2000001"
    assert row["time"] == pd.Timestamp("2026-11-20T08:15:01Z")
    assert row["hostname"] == "h.example"  # context of the repeat is not lost
    assert batch.skipped == {REPEATED_ALERT: 1}


def test_other_signature_on_same_flow_is_another_detection() -> None:
    other = alert(alert={"signature_id": 2000002, "signature": "other", "severity": 1})

    batch = parse_eve_lines([line(alert()), line(other)])

    assert sorted(batch.detections["detection_id"]) == ["1234-2000001", "1234-2000002"]


def test_alert_without_flow_id_is_keyed_by_its_line() -> None:
    record = alert()
    del record["flow_id"]
    other = dict(record, src_ip="10.1.1.6")

    first = parse_eve_lines([line(record), line(other)]).detections["detection_id"].tolist()
    again = parse_eve_lines([line(record)]).detections["detection_id"].tolist()

    assert len(set(first)) == 2
    assert again == first[:1]
    assert len(first[0]) == 16


def test_timestamps_with_offsets_become_utc() -> None:
    record = alert(timestamp="2026-11-20T09:15:02.5+0100")

    detections = parse_eve_lines([line(record)]).detections

    assert detections.loc[0, "time"] == pd.Timestamp("2026-11-20T08:15:02.5Z")


@pytest.mark.parametrize(
    ("severity", "priority"),
    [(1, "high"), (2, "medium"), (3, "low"), (4, "info"), (None, "info"), ("1", "info")],
)
def test_severity_maps_to_priority(severity: Any, priority: str) -> None:
    record = alert(alert={"signature_id": 1, "signature": "s", "severity": severity})

    assert parse_eve_lines([line(record)]).detections.loc[0, "priority"] == priority


def test_alert_fields_map_to_columns() -> None:
    row = parse_eve_lines([line(alert())]).detections.iloc[0]

    assert (row["method"], row["method_description"], row["detail"]) == (
        "2000001", "ET TEST signature", "Misc activity")
    assert (row["src_ip"], row["src_port"], row["dst_ip"], row["dst_port"], row["protocol"]) == (
        "10.1.1.5", 50000, "81.2.69.160", 443, "TCP")


@pytest.mark.parametrize(
    "dns",
    [
        {"query": [{"rrname": "Bad.Example.", "rrtype": "A"}]},  # eve v2
        {"version": 3, "queries": [{"rrname": "bad.example", "rrtype": "A"}]},  # eve v3
        {"rrname": "bad.example"},
    ],
)
def test_dns_query_name_becomes_domain(dns: dict[str, Any]) -> None:
    detections = parse_eve_lines([line(alert(dns=dns))]).detections

    assert detections.loc[0, "domain"] == "bad.example"


def test_http_host_wins_over_tls_sni() -> None:
    record = alert(http={"hostname": "web.example"}, tls={"sni": "tls.example"})

    assert parse_eve_lines([line(record)]).detections.loc[0, "hostname"] == "web.example"


@pytest.mark.parametrize(
    ("bad_line", "reason"),
    [
        ('{"timestamp": "2026-11-20T08:15:02+0000", "event_type": "al', "not JSON"),
        ("[1, 2]", "not a JSON object"),
        (line({"timestamp": "2026-11-20T08:15:02+0000"}), "no event_type"),
        (line(alert(alert="ET TEST")), "without an 'alert' object"),
        (line(alert(alert={"signature": "no id"})), "signature_id"),
        (line(alert(alert={"signature_id": "abc"})), "signature_id"),
        (line(alert(timestamp=None)), "timestamp is missing"),
        (line(alert(timestamp="yesterday")), "unreadable timestamp 'yesterday'"),
        (line(alert(timestamp="2026-11-20T08:15:02")), "UTC offset"),
        (line(alert(timestamp="9999-11-20T08:15:02+0000")), "unreadable timestamp"),
    ],
)
def test_bad_record_is_reported_with_its_line_and_the_rest_goes_through(
    bad_line: str, reason: str
) -> None:
    batch = parse_eve_lines([line(alert()), bad_line, line(alert(flow_id=99))], origin="eve-x")

    assert len(batch.detections) == 2
    assert len(batch.problems) == 1
    assert batch.problems[0].source == "eve-x line 2"
    assert reason in batch.problems[0].reason
    assert batch.problems[0].excerpt == bad_line[:120]
    assert batch.records_read == 3


def test_blank_lines_are_neither_records_nor_problems() -> None:
    batch = parse_eve_lines(["\n", line(alert()) + "\n", "   \r\n"])

    assert (batch.records_read, len(batch.detections), batch.problems) == (1, 1, [])


def test_byte_lines_are_read_and_invalid_utf8_is_a_problem() -> None:
    batch = parse_eve_lines([line(alert()).encode() + b"\n", b'{"event_type": "\xff"}\n'])

    assert len(batch.detections) == 1
    assert [problem.reason for problem in batch.problems] == ["not UTF-8 text"]


def test_no_alerts_gives_an_empty_table_with_the_schema() -> None:
    batch = parse_eve_lines([line({"timestamp": "2026-11-20T08:15:02+0000",
                                   "event_type": "stats"})])

    assert batch.detections.empty
    assert list(batch.detections.columns) == list(DETECTION_COLUMNS)
    assert batch.skipped == {"eve stats record (not an alert)": 1}


def test_missing_file_is_an_input_error_naming_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "eve.json"

    with pytest.raises(InputError, match=re.escape(str(missing))):
        read_eve_file(missing)
