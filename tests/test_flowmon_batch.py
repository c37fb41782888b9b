"""The batch Flowmon ADS hands a custom script: every layout, per-line errors, local time."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from misp_ndr.errors import ConfigError, InputError
from tasks.detections import DETECTION_COLUMNS
from tasks.flowmon_batch import parse_custom_script_batch, read_custom_script_batch
from tests.conftest import SAMPLES

EMPTY = " "  # ADS writes an empty field as a single space


def classic_line(
    event_id: str = "1001", time: str = "2026-11-20 08:15:00", method: str = "SCANS",
    priority: str = "High", detail: str = "TCP SYN scan", source: str = "81.2.69.160",
    targets: str = "10.0.0.1, 10.0.0.2", ports: str = "22",
) -> str:
    return "\t".join([event_id, time, "2026-11-20 08:10:00", method, "Network scanning",
                      "Security issues", priority, detail, ports, "TCP", source, EMPTY, targets,
                      "probe-1", EMPTY])


def extended_line(field_count: int) -> str:
    fields = ["2002", "2026-11-20 08:20:00", "2026-11-20 08:19:00", "SSHDICT",
              "SSH dictionary attack", EMPTY, EMPTY, "Security issues", "Critical",
              "412 attempts", "22", "TCP", "81.2.69.161", EMPTY, "10.0.0.7", "probe-1", "jdoe"]
    return "\t".join(fields[:field_count])


def ids_line() -> str:
    fields = ["3003", "2026-11-20 08:25:00", EMPTY, "10.0.0.9", "51000", "81.2.69.162", "80",
              "TCP", EMPTY, "ET MALWARE CnC Checkin", "10.0.0.250", "eth2",
              "A Network Trojan was detected", "2"]
    return "\t".join(fields)


def by_id(batch_text: str, **options: Any) -> pd.DataFrame:
    return parse_custom_script_batch(batch_text, **options).detections.set_index("detection_id")


def test_tsv_sample_gives_one_row_per_target_and_reports_the_truncated_line() -> None:
    batch = read_custom_script_batch(SAMPLES / "flowmon-batch.tsv")

    assert batch.records_read == 9
    assert batch.detections["detection_id"].nunique() == 8
    scans = batch.detections[batch.detections["detection_id"] == "418273"]
    assert scans["dst_ip"].tolist() == ["10.20.1.15", "10.20.1.16", "10.20.1.17"]
    assert scans["src_ip"].unique().tolist() == ["141.98.11.55"]
    assert [problem.source for problem in batch.problems] == ["flowmon-batch.tsv line 9"]
    assert "8 tab-separated fields" in batch.problems[0].reason
    assert batch.skipped == {"repeated target of the same event": 1}


def test_tsv_sample_blacklist_domain_hit_fills_domain_and_host_hit_does_not() -> None:
    detections = read_custom_script_batch(SAMPLES / "flowmon-batch.tsv").detections
    domains = detections.set_index("detection_id")["domain"]

    assert domains["418274"] == "update-cdn.example"
    assert pd.isna(domains["418275"])  # BLACKLIST Host: detail names an address
    assert domains.dropna().index.tolist() == ["418274"]


def test_jsonl_sample_reads_ads_and_ids_events() -> None:
    batch = read_custom_script_batch(SAMPLES / "flowmon-batch.jsonl")
    detections = batch.detections.set_index("detection_id")

    assert (batch.records_read, batch.problems, batch.skipped) == (5, [], {})
    assert detections.index.nunique() == 5
    ids_event = detections.loc["418304"]
    assert (ids_event["method"], ids_event["method_description"], ids_event["detail"]) == (
        "IDSP", "A Network Trojan was detected", "ET MALWARE Generic Backdoor CnC Checkin")
    assert (ids_event["src_ip"], ids_event["dst_ip"], ids_event["priority"]) == (
        "10.20.8.15", "62.171.140.22", "high")
    assert detections.loc["418302", "domain"] == "login-verify.example"


def test_samples_follow_the_normalized_schema() -> None:
    for name in ("flowmon-batch.tsv", "flowmon-batch.jsonl"):
        detections = read_custom_script_batch(SAMPLES / name).detections
        assert list(detections.columns) == list(DETECTION_COLUMNS)
        assert str(detections["time"].dtype) == "datetime64[ns, UTC]"
        assert set(detections["source_system"]) == {"flowmon"}


def test_classic_line_fields_land_in_their_columns() -> None:
    row = by_id(classic_line(detail="scan of 256 hosts")).iloc[0]

    assert (row["method"], row["method_description"], row["priority"]) == (
        "SCANS", "Network scanning", "high")
    assert (row["detail"], row["protocol"], row["dst_port"]) == ("scan of 256 hosts", "TCP", 22)
    assert row["time"] == pd.Timestamp("2026-11-20T08:15:00Z")


@pytest.mark.parametrize("field_count", [16, 17])
def test_extended_layout_reads_source_and_targets_from_their_positions(field_count: int) -> None:
    row = by_id(extended_line(field_count)).loc["2002"]

    assert (row["src_ip"], row["dst_ip"], row["priority"]) == ("81.2.69.161", "10.0.0.7",
                                                              "critical")
    assert (row["method"], row["detail"]) == ("SSHDICT", "412 attempts")


def test_ids_layout_is_read_as_an_idsp_event() -> None:
    row = by_id(ids_line()).loc["3003"]

    assert (row["method"], row["method_description"], row["detail"]) == (
        "IDSP", "A Network Trojan was detected", "ET MALWARE CnC Checkin")
    assert (row["src_ip"], row["dst_ip"], row["priority"]) == ("10.0.0.9", "81.2.69.162",
                                                              "medium")


def test_layouts_can_be_mixed_in_one_batch_and_keep_their_order() -> None:
    ads_json = json.dumps({"id": 4004, "timestamp": "2026-11-20 08:30:00", "type": "DOS",
                           "typeDesc": "Denial of service", "severity": "Low",
                           "source": "81.2.69.163", "targets": "10.0.0.8", "detail": "flood"})
    text = "\n".join([ids_line(), classic_line(), ads_json, extended_line(17)])

    detections = parse_custom_script_batch(text).detections

    assert detections["detection_id"].unique().tolist() == ["3003", "1001", "4004", "2002"]


@pytest.mark.parametrize(
    ("name", "priority"),
    [("Critical", "critical"), ("High", "high"), ("Medium", "medium"), ("Low", "low"),
     ("Informational", "info"), ("INFORMATIONAL", "info")],
)
def test_priority_names_map_to_priorities(name: str, priority: str) -> None:
    assert by_id(classic_line(priority=name)).iloc[0]["priority"] == priority


def test_appliance_local_time_is_converted_to_utc() -> None:
    winter = by_id(classic_line(time="2026-11-20 08:15:00"), timezone="Europe/Prague")
    summer = by_id(classic_line(time="2026-07-01 10:00:00"), timezone="Europe/Prague")

    assert winter.iloc[0]["time"] == pd.Timestamp("2026-11-20T07:15:00Z")
    assert summer.iloc[0]["time"] == pd.Timestamp("2026-07-01T08:00:00Z")


def test_time_in_the_autumn_overlap_is_read_as_summer_time() -> None:
    row = by_id(classic_line(time="2026-10-25 02:30:00"), timezone="Europe/Prague").iloc[0]

    assert row["time"] == pd.Timestamp("2026-10-25T00:30:00Z")


def test_unknown_time_zone_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="Mars/Olympus"):
        parse_custom_script_batch(classic_line(), timezone="Mars/Olympus")


@pytest.mark.parametrize(
    ("bad_line", "reason"),
    [
        (classic_line(time="20.11.2026 08:15"), "unreadable time '20.11.2026 08:15'"),
        (classic_line(time="9999-12-31 00:00:00"), "unreadable time '9999-12-31 00:00:00'"),
        (classic_line(priority="Severe"), "unknown priority 'Severe'"),
        (classic_line(event_id=EMPTY), "no event id"),
        ("1005\t2026-11-20 08:15:00\tSCANS", "3 tab-separated fields"),
        ('{"id": 1006, "timestamp": "2026-11-20 08:15:00", "type": ', "not JSON"),
        ("{not json}", "not JSON"),
    ],
)
def test_bad_line_is_reported_with_its_line_number_and_the_rest_goes_through(
    bad_line: str, reason: str
) -> None:
    text = "\n".join([classic_line(event_id="1"), bad_line, classic_line(event_id="3")])

    batch = parse_custom_script_batch(text, origin="stdin")

    assert batch.detections["detection_id"].unique().tolist() == ["1", "3"]
    assert len(batch.problems) == 1
    assert batch.problems[0].source == "stdin line 2"
    assert reason in batch.problems[0].reason
    assert batch.records_read == 3


def test_every_reason_of_a_bad_line_is_named() -> None:
    problem = parse_custom_script_batch(classic_line(time="soon", priority="?")).problems[0]

    assert "unreadable time 'soon'" in problem.reason
    assert "unknown priority '?'" in problem.reason


def test_blank_lines_and_windows_line_ends_are_fine() -> None:
    text = "\r\n" + classic_line() + "\r\n   \r\n\r\n"

    batch = parse_custom_script_batch(text)

    assert (batch.records_read, batch.problems) == (1, [])
    assert batch.detections["dst_ip"].tolist() == ["10.0.0.1", "10.0.0.2"]


def test_event_without_targets_keeps_its_source() -> None:
    detections = by_id(classic_line(targets=EMPTY))

    assert detections["src_ip"].tolist() == ["81.2.69.160"]
    assert detections["dst_ip"].isna().all()


def test_several_ports_leave_the_port_empty() -> None:
    assert pd.isna(by_id(classic_line(ports="22, 3389")).iloc[0]["dst_port"])


def test_blacklist_domain_is_found_in_the_detail_text() -> None:
    detail = "Domain: DNS query for blacklisted domain Evil-Updates.Example. (blacklist abc)"

    row = by_id(classic_line(method="BLACKLIST", detail=detail)).iloc[0]

    assert row["domain"] == "evil-updates.example"


def test_detail_mentioning_a_domain_outside_blacklist_events_fills_nothing() -> None:
    detail = "DNS anomaly: domain bad.example queried 4000 times"

    assert pd.isna(by_id(classic_line(method="DNSANOMALY", detail=detail)).iloc[0]["domain"])


def test_json_targets_as_a_list_are_accepted() -> None:
    event = {"id": 5, "timestamp": "2026-11-20 08:30:00", "type": "SCANS", "severity": "High",
             "source": "81.2.69.163", "targets": ["10.0.0.1", "10.0.0.2"], "detail": "d"}

    assert by_id(json.dumps(event))["dst_ip"].tolist() == ["10.0.0.1", "10.0.0.2"]


def test_missing_batch_file_is_an_input_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"missing\.tsv"):
        read_custom_script_batch(tmp_path / "missing.tsv")
