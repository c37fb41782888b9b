"""Suricata alerts from our rules become hits: by the attribute UUID in the rule metadata or
the sid map, by value for list rules; alerts of other rules are counted, bad lines reported."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from misp_ndr.errors import InputError
from tasks.rule_sids import SID_MAP_COLUMNS, read_sid_map, write_sid_map
from tasks.sighting_hits import HIT_COLUMNS
from tasks.suricata_hits import (
    NO_LIST_VALUE,
    NOT_FROM_MISP,
    parse_suricata_hit_lines,
    read_suricata_hits,
)

DOMAIN_UUID = "5f0c9a8e-1b2c-4d3e-8f40-0123456789ab"
IP_UUID = "6a1d2b3c-4e5f-4a6b-9c7d-abcdefabcdef"
EVENT_UUID = "11111111-2222-4333-8444-555555555555"
DOMAIN_SID, IP_SID = 1_000_100, 1_000_200
MD5_SID, SHA256_SID, IPREP_SID, NAME_DNS_SID, NAME_TLS_SID = (
    1_999_999, 1_999_997, 1_999_996, 1_999_995, 1_999_994)
FOREIGN_SID = 2_013_028  # an ET Open rule
PUBLIC_IP, OTHER_PUBLIC_IP, LOCAL_IP = "81.2.69.160", "185.16.38.113", "10.1.1.5"


@pytest.fixture
def sid_map(tmp_path: Path) -> pd.DataFrame:
    """A sid map as `update-rules` writes it, read back the way the sightings job does."""
    rows = [
        (DOMAIN_SID, 3, DOMAIN_UUID, EVENT_UUID, "domain", "dns", "evil.example"),
        (IP_SID, 1, IP_UUID, EVENT_UUID, "ip", "ip", PUBLIC_IP),
        (MD5_SID, 1, None, None, "md5", "filemd5", "misp-md5.list"),
        (SHA256_SID, 1, None, None, "sha256", "filesha256", "misp-sha256.list"),
        (IPREP_SID, 1, None, None, "ip", "iprep", "misp-iprep.list"),
        (NAME_DNS_SID, 1, None, None, "name", "dns", "misp-domains.lst"),
        (NAME_TLS_SID, 1, None, None, "name", "tls", "misp-domains.lst"),
    ]
    path = tmp_path / "misp-sids.csv"
    path.write_bytes(write_sid_map(pd.DataFrame(rows, columns=SID_MAP_COLUMNS)))
    return read_sid_map(path)


def alert(sid: int, metadata: dict[str, list[str]] | None = None, **fields: Any) -> str:
    record: dict[str, Any] = {
        "timestamp": "2026-11-20T09:15:02.123456+0100",
        "flow_id": 1234,
        "event_type": "alert",
        "src_ip": LOCAL_IP,
        "src_port": 50000,
        "dest_ip": PUBLIC_IP,
        "dest_port": 443,
        "proto": "TCP",
        "alert": {"signature_id": sid, "signature": "MISP test", "severity": 2},
    }
    if metadata is not None:
        record["alert"]["metadata"] = metadata
    record.update(fields)
    return json.dumps(record)


def rows(batch: Any) -> list[tuple[Any, ...]]:
    """(value, attribute_uuid, origin) per hit, NA as None."""
    table = batch.hits[["value", "attribute_uuid", "origin"]].astype(object)
    return [tuple(row) for row in table.where(table.notna(), None).itertuples(index=False)]


def test_metadata_uuid_names_the_attribute_and_the_sid_map_its_value(
    sid_map: pd.DataFrame,
) -> None:
    metadata = {"misp_event_uuid": [EVENT_UUID],
                "misp_attribute_uuid": ["not-a-uuid-first?", DOMAIN_UUID.upper()],
                "misp_tag": ["tlp:green"]}
    lines = [alert(DOMAIN_SID, metadata),
             alert(FOREIGN_SID, {"misp_attribute_uuid": [IP_UUID]})]

    batch = parse_suricata_hit_lines(lines, sid_map)

    assert dict(batch.hits.dtypes.astype(str)) == HIT_COLUMNS
    assert rows(batch) == [("evil.example", DOMAIN_UUID, "eve.json line 1"),
                           (None, IP_UUID, "eve.json line 2")]
    assert batch.hits["time"].tolist() == [pd.Timestamp("2026-11-20T08:15:02.123456Z")] * 2
    assert batch.problems == []


def test_metadata_uuid_of_another_attribute_than_the_sid_map_gets_no_value(
    sid_map: pd.DataFrame,
) -> None:
    batch = parse_suricata_hit_lines(
        [alert(DOMAIN_SID, {"misp_attribute_uuid": [IP_UUID]})], sid_map)

    assert rows(batch) == [(None, IP_UUID, "eve.json line 1")]


def test_without_metadata_the_sid_map_names_the_attribute(sid_map: pd.DataFrame) -> None:
    batch = parse_suricata_hit_lines([alert(IP_SID), alert(DOMAIN_SID, {"other": ["x"]})],
                                     sid_map)

    assert rows(batch) == [(PUBLIC_IP, IP_UUID, "eve.json line 1"),
                           ("evil.example", DOMAIN_UUID, "eve.json line 2")]


def test_ip_list_alert_hits_each_global_address(sid_map: pd.DataFrame) -> None:
    lines = [alert(IPREP_SID),
             alert(IPREP_SID, src_ip=OTHER_PUBLIC_IP),
             alert(IPREP_SID, src_ip=LOCAL_IP, dest_ip="192.168.7.7")]

    batch = parse_suricata_hit_lines(lines, sid_map, origin="eve-1.json")

    assert rows(batch) == [(PUBLIC_IP, None, "eve-1.json line 1"),
                           (OTHER_PUBLIC_IP, None, "eve-1.json line 2"),
                           (PUBLIC_IP, None, "eve-1.json line 2")]
    assert [problem.source for problem in batch.problems] == ["eve-1.json line 3"]
    assert batch.problems[0].reason.startswith(NO_LIST_VALUE)


def test_name_list_alert_hits_the_dns_query_tls_sni_or_http_host(
    sid_map: pd.DataFrame,
) -> None:
    lines = [
        alert(NAME_DNS_SID, dns={"queries": [{"rrname": "Bad.Example."}]}),
        alert(NAME_TLS_SID, tls={"sni": "c2.example"}),
        alert(FOREIGN_SID, {"misp_list": ["misp-domains.lst"]},
              http={"hostname": "drop.example", "url": "/x"}),
        alert(NAME_DNS_SID),
    ]

    batch = parse_suricata_hit_lines(lines, sid_map)

    assert rows(batch) == [("bad.example", None, "eve.json line 1"),
                           ("c2.example", None, "eve.json line 2"),
                           ("drop.example", None, "eve.json line 3")]
    assert [problem.source for problem in batch.problems] == ["eve.json line 4"]
    assert batch.problems[0].reason.startswith(NO_LIST_VALUE)


def test_hash_list_alert_hits_the_file_hashes_it_carries(sid_map: pd.DataFrame) -> None:
    md5 = "d41d8cd98f00b204e9800998ecf8427e"
    sha256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    lines = [
        alert(MD5_SID, files=[{"filename": "a.exe", "md5": md5, "sha256": sha256},
                              {"filename": "b.exe", "md5": md5}]),
        alert(SHA256_SID, fileinfo={"filename": "a.exe", "md5": md5, "sha256": sha256}),
        alert(MD5_SID, files=[{"filename": "c.exe"}]),
    ]

    batch = parse_suricata_hit_lines(lines, sid_map)

    assert rows(batch) == [(md5, None, "eve.json line 1"), (sha256, None, "eve.json line 2")]
    assert [problem.source for problem in batch.problems] == ["eve.json line 3"]


def test_alerts_of_rules_not_built_from_misp_and_other_records_are_counted(
    sid_map: pd.DataFrame,
) -> None:
    lines = [alert(FOREIGN_SID, {"signature_severity": ["Major"]}),
             alert(FOREIGN_SID),
             json.dumps({"event_type": "flow", "timestamp": "2026-11-20T09:15:02+0100"}),
             alert(DOMAIN_SID)]

    batch = parse_suricata_hit_lines(lines, sid_map)

    assert batch.skipped == {NOT_FROM_MISP: 2, "eve flow record (not an alert)": 1}
    assert rows(batch) == [("evil.example", DOMAIN_UUID, "eve.json line 4")]
    assert batch.problems == []
    assert batch.records_read == 4


def test_malformed_lines_are_reported_and_the_rest_goes_through(
    sid_map: pd.DataFrame,
) -> None:
    no_sid = json.loads(alert(DOMAIN_SID))
    del no_sid["alert"]["signature_id"]
    no_time = json.loads(alert(DOMAIN_SID))
    del no_time["timestamp"]
    lines = [
        alert(DOMAIN_SID),  # 1
        "{truncated",  # 2
        "",  # 3: blank, not a record
        json.dumps(no_sid),  # 4
        json.dumps(no_time),  # 5
        alert(DOMAIN_SID, timestamp="2026-11-20 09:15:02"),  # 6: no offset
        alert(DOMAIN_SID, {"misp_attribute_uuid": ["e9df-not-a-uuid"]}),  # 7
        alert(IPREP_SID, timestamp="not a time", src_ip=LOCAL_IP, dest_ip=LOCAL_IP),  # 8
        "[1, 2]",  # 9
        alert(IP_SID).encode() + b"\r\n",  # 10
        '{"event_type": ' + "[" * 100_000,  # 11: nested deeper than Python can parse
    ]

    batch = parse_suricata_hit_lines(lines, sid_map)

    assert [hit[2] for hit in rows(batch)] == ["eve.json line 1", "eve.json line 10"]
    problems = {problem.source: problem.reason for problem in batch.problems}
    assert list(problems) == [f"eve.json line {number}" for number in (2, 4, 5, 6, 7, 8, 9, 11)]
    assert problems["eve.json line 2"].startswith("not JSON")
    assert "signature_id" in problems["eve.json line 4"]
    assert "timestamp" in problems["eve.json line 5"]
    assert problems["eve.json line 6"].startswith("unreadable timestamp")
    assert "e9df-not-a-uuid" in problems["eve.json line 7"]
    assert problems["eve.json line 8"].startswith("unreadable timestamp")  # one problem
    assert problems["eve.json line 9"] == "not a JSON object"
    assert batch.records_read == 10


def test_sensor_is_suricata_slash_host_else_suricata(sid_map: pd.DataFrame) -> None:
    lines = [alert(DOMAIN_SID, host="edge-ids-1"), alert(DOMAIN_SID),
             alert(DOMAIN_SID, host="  "), alert(DOMAIN_SID, host=7)]

    batch = parse_suricata_hit_lines(lines, sid_map)

    assert batch.hits["sensor"].tolist() == [
        "suricata/edge-ids-1", "suricata", "suricata", "suricata"]


def test_without_a_sid_map_only_metadata_identifies_misp_rules() -> None:
    lines = [
        alert(DOMAIN_SID, {"misp_attribute_uuid": [DOMAIN_UUID]}),
        alert(IP_SID),  # the sid map would have known it
        alert(MD5_SID, {"misp_list": ["misp-md5.list"]},
              files=[{"md5": "d41d8cd98f00b204e9800998ecf8427e"}]),
        alert(IPREP_SID, {"misp_list": ["misp-iprep.list"]}),
        alert(FOREIGN_SID, {"misp_list": ["someone-elses.list"]}),
    ]

    batch = parse_suricata_hit_lines(lines, None)

    assert rows(batch) == [(None, DOMAIN_UUID, "eve.json line 1"),
                           ("d41d8cd98f00b204e9800998ecf8427e", None, "eve.json line 3"),
                           (PUBLIC_IP, None, "eve.json line 4")]
    assert batch.skipped == {NOT_FROM_MISP: 1}
    assert [problem.source for problem in batch.problems] == ["eve.json line 5"]
    assert "someone-elses.list" in batch.problems[0].reason


def test_read_suricata_hits_streams_a_file(tmp_path: Path, sid_map: pd.DataFrame) -> None:
    path = tmp_path / "eve-2026-11-20.json"
    path.write_text("\n".join([alert(DOMAIN_SID), "oops", alert(FOREIGN_SID)]) + "\n")

    batch = read_suricata_hits(path, sid_map)

    assert rows(batch) == [("evil.example", DOMAIN_UUID, "eve-2026-11-20.json line 1")]
    assert [problem.source for problem in batch.problems] == ["eve-2026-11-20.json line 2"]
    assert batch.skipped == {NOT_FROM_MISP: 1}
    assert batch.records_read == 3


def test_an_unreadable_eve_file_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"missing-eve\.json"):
        read_suricata_hits(tmp_path / "missing-eve.json", None)
