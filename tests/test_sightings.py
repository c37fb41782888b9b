"""Sightings without Prefect: which hits become which sightings, and that MISP (or the JSON
lines file) gets each exactly once, whatever replays, lost answers and crashes happen."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import responses

from misp_ndr.config import Settings, load_settings
from misp_ndr.errors import TransientError
from tasks.flowmon_batch import parse_custom_script_batch
from tasks.flowmon_hits import NOT_BLACKLIST, OTHER_BLACKLIST, blacklist_hits
from tasks.sighting_delivery import (
    LEDGER_FILE,
    SightingDelivery,
    deliver_sightings_to_file,
    deliver_sightings_to_misp,
)
from tasks.sighting_hits import normalize_hits
from tasks.sighting_ledger import PENDING, SightingLedger
from tasks.sighting_plan import plan_sightings
from tests.conftest import SAMPLES
from tests.misp_stand_in import MispStandIn, point_settings_at_stand_in

EVIL = "d363c9bc-4c6c-5f18-8be9-2e61c68bcade"
C2 = "e9df804d-50c8-5644-ba64-6657a2889cb4"
HOUR = "2026-11-20T08:"
T0 = 1795161600  # 2026-11-20T08:00:00Z


def hits(*rows: tuple[str, str, str | None, str | None]) -> pd.DataFrame:
    """(time, sensor, value, attribute uuid) rows."""
    frame = pd.DataFrame(rows, columns=["time", "sensor", "value", "attribute_uuid"])
    frame["time"] = pd.to_datetime(frame["time"], utc=True)
    frame["origin"] = [f"test line {n}" for n in range(1, len(rows) + 1)]
    return normalize_hits(frame)


def store(*pairs: tuple[str, str]) -> pd.DataFrame:
    return pd.DataFrame(pairs, columns=["value", "attribute_uuid"], dtype="string")


# --- planning: resolution and aggregation ----------------------------------------------------


def test_a_scan_hitting_one_indicator_50000_times_is_one_sighting_per_window() -> None:
    times = pd.date_range("2026-11-20T08:00:00Z", periods=50_000, freq="144ms")  # 2 hours
    frame = pd.DataFrame({"time": times, "sensor": "ids-1", "value": "45.155.205.233",
                          "attribute_uuid": C2, "origin": "eve.json"})
    plan = plan_sightings(normalize_hits(frame), None, 60, "{sensor}")
    assert plan.hits_read == 50_000
    assert plan.sightings["hits"].tolist() == [25_000, 25_000]
    assert plan.sightings["timestamp"].tolist() == [T0, T0 + 3600]  # earliest hit of each


def test_windows_are_per_sensor_and_fixed_so_a_split_batch_keeps_its_keys() -> None:
    rows = [(f"{HOUR}05:00Z", "ids-1", None, C2), (f"{HOUR}55:00Z", "ids-1", None, C2),
            (f"{HOUR}10:00Z", "ids-2", None, C2), ("2026-11-20T09:01:00Z", "ids-1", None, C2)]
    whole = plan_sightings(hits(*rows), None, 60, "{sensor}").sightings
    assert len(whole) == 3 and sorted(whole["hits"]) == [1, 1, 2]
    halves = [plan_sightings(hits(*part), None, 60, "{sensor}").sightings
              for part in (rows[:1], rows[1:])]
    assert set(pd.concat(halves)["key"]) == set(whole["key"])
    every_hit = plan_sightings(hits(*rows), None, 0, "{sensor}").sightings
    assert len(every_hit) == 4


def test_values_resolve_through_the_indicator_store_in_canonical_form() -> None:
    plan = plan_sightings(hits(
        (f"{HOUR}01:00Z", "proxy", "EVIL-Updates.Example.", None),
        (f"{HOUR}02:00Z", "proxy", "2A0B:4340:005E:0:0:0:0:15", None),
        (f"{HOUR}03:00Z", "proxy", "93.184.216.34", None),
    ), store(("evil-updates.example", EVIL), ("2a0b:4340:5e::15", "c03b4269")), 60, "{sensor}")
    by_value = plan.sightings.set_index("value")
    assert by_value.loc["evil-updates.example", "attribute_uuid"] == EVIL
    assert by_value.loc["2a0b:4340:5e::15", "attribute_uuid"] == "c03b4269"
    assert pd.isna(by_value.loc["93.184.216.34", "attribute_uuid"])  # left to MISP's filters
    assert plan.resolved_locally == 2


def test_a_value_two_attributes_share_is_a_sighting_of_each() -> None:
    plan = plan_sightings(hits((f"{HOUR}01:00Z", "proxy", "81.2.69.160", None)),
                          store(("81.2.69.160", "a-1"), ("81.2.69.160", "a-2")), 60, "x")
    assert sorted(plan.sightings["attribute_uuid"]) == ["a-1", "a-2"]


def test_source_template_takes_the_sensor_name_as_data_never_as_a_format() -> None:
    plan = plan_sightings(hits((f"{HOUR}01:00Z", "probe {0} {sensor}\x1b[31m", "1.1.1.1", None)),
                          None, 60, "misp-ndr {sensor}")
    assert plan.sightings["source"].tolist() == ["misp-ndr probe {0} {sensor}[31m"]


# --- Flowmon blacklist hits --------------------------------------------------------------------


def test_only_hits_on_misp_sourced_blacklists_count() -> None:
    batch = parse_custom_script_batch(
        (SAMPLES / "sightings" / "flowmon-blacklist.jsonl").read_text())
    result = blacklist_hits(batch, ["misp*"])
    assert result.hits["value"].tolist() == ["185.220.101.4", "cdn.evil-updates.example",
                                             "185.220.101.4", "31.184.198.71"]
    assert set(result.hits["sensor"]) == {"flowmon/edge-probe-1"}
    assert result.skipped[OTHER_BLACKLIST] == 1 and result.skipped[NOT_BLACKLIST] == 1
    everything = blacklist_hits(batch, ["*"])
    assert "185.16.38.113" in everything.hits["value"].tolist()


def test_a_blacklist_event_that_names_no_list_is_reported_not_dropped() -> None:
    line = ("9\t2026-11-20 08:00:00\t2026-11-20 08:00:00\tBLACKLIST\tBlacklisted\tSecurity\t"
            "High\tHost: communication with blacklisted address 185.220.101.4\t443\tTCP\t"
            "10.0.0.1\t \t185.220.101.4\tprobe\t ")
    result = blacklist_hits(parse_custom_script_batch(line), ["misp*"])
    assert result.hits.empty
    assert [p.source for p in result.problems] == ["flowmon event 9"]
    assert "without a blacklist name" in result.problems[0].reason


# --- delivery to MISP --------------------------------------------------------------------------


@pytest.fixture
def misp(monkeypatch: pytest.MonkeyPatch) -> Iterator[MispStandIn]:
    point_settings_at_stand_in(monkeypatch)
    monkeypatch.setenv("MISP_NDR_RULES__EVENT_TAGS", "misp-ndr:demo")
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        stand_in = MispStandIn(rsps)
        stand_in.publish_event("7b8d7e2e-b97e-53d0-a162-1377e3a20daa", "C2", "2026-11-17",
                               T0, [{"uuid": C2, "type": "ip-dst", "value": "45.155.205.233"},
                                    {"uuid": EVIL, "type": "domain",
                                     "value": "evil-updates.example"}],
                               tags=("misp-ndr:demo",))
        stand_in.publish_event("0d5c0bd5-0000-5000-8000-000000000001", "other", "2026-11-17",
                               T0, [{"uuid": "not-ids", "type": "ip-dst", "to_ids": False,
                                     "value": "45.155.205.233"}], tags=("misp-ndr:demo",))
        yield stand_in


def canonical(body: dict) -> str:
    return json.dumps(body, sort_keys=True)


def sample_plan() -> pd.DataFrame:
    return plan_sightings(hits(
        (f"{HOUR}00:05Z", "ids-1", "45.155.205.233", C2),
        (f"{HOUR}20:00Z", "ids-1", "45.155.205.233", C2),
        (f"{HOUR}10:00Z", "proxy", "evil-updates.example", None),
        (f"{HOUR}11:00Z", "proxy", "198.51.7.7", None),
    ), None, 60, "misp-ndr {sensor}").sightings


def test_requests_are_shaped_as_misps_api_says(misp: MispStandIn) -> None:
    result = deliver_sightings_to_misp(sample_plan(), load_settings())
    assert sorted(misp.sighting_requests, key=canonical) == sorted([
        {"uuid": C2, "source": "misp-ndr ids-1", "type": "0", "timestamp": str(T0 + 5)},
        {"values": ["198.51.7.7"], "filters": {"to_ids": 1, "tags": ["misp-ndr:demo"]},
         "source": "misp-ndr proxy", "type": "0", "timestamp": str(T0 + 660)},
        {"values": ["evil-updates.example"], "filters": {"to_ids": 1, "tags": ["misp-ndr:demo"]},
         "source": "misp-ndr proxy", "type": "0", "timestamp": str(T0 + 600)},
    ], key=canonical)  # sent concurrently: in any order
    assert result.sent == 2
    assert result.unknown == [("198.51.7.7", "test line 4")]
    # the IDS filter kept the same value's non-IDS attribute out
    assert sorted(s["attribute_uuid"] for s in misp.sightings) == sorted([C2, EVIL])


def test_replay_adds_nothing(misp: MispStandIn) -> None:
    settings = load_settings()
    deliver_sightings_to_misp(sample_plan(), settings)
    again = deliver_sightings_to_misp(sample_plan(), settings)
    assert len(misp.sightings) == 2
    assert again.duplicates == 2 and again.sent == 0
    assert len(misp.sighting_requests) == 3 + 1  # only the unknown value is asked again


def test_a_lost_answer_is_checked_for_not_resent(misp: MispStandIn,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """MISP stores the sighting but the answer never arrives (502): the run fails; its
    retry finds the sighting in MISP instead of adding it twice."""
    monkeypatch.setenv("MISP_NDR_MISP__CONCURRENCY", "1")  # request 1 is C2's
    misp.lost_sighting_answers = {1}
    settings = load_settings()
    with pytest.raises(TransientError):
        deliver_sightings_to_misp(sample_plan(), settings)
    retry = deliver_sightings_to_misp(sample_plan(), settings)
    assert retry.confirmed == 1
    assert retry.sent + retry.duplicates == 1  # EVIL: by whichever run reached it first
    assert sorted(s["attribute_uuid"] for s in misp.sightings) == sorted([C2, EVIL])
    assert [r.get("uuid") for r in misp.sighting_requests].count(C2) == 1


@pytest.mark.parametrize("concurrency", ["1", "8"])
def test_answers_lost_during_concurrent_sends_leave_each_sighting_once(
    misp: MispStandIn, monkeypatch: pytest.MonkeyPatch, concurrency: str,
) -> None:
    monkeypatch.setenv("MISP_NDR_MISP__CONCURRENCY", concurrency)
    minutes = pd.date_range("2026-11-20T08:00:00Z", periods=60, freq="1min")
    frame = pd.DataFrame({"time": minutes, "sensor": "ids-1", "value": "45.155.205.233",
                          "attribute_uuid": C2, "origin": "eve.json"})
    plan = plan_sightings(normalize_hits(frame), None, 1, "{sensor}").sightings
    misp.lost_sighting_answers = {5, 17, 30}  # stored by MISP, answered 502
    settings = load_settings()
    outcomes = []
    for _ in range(4):  # as Prefect retries the task
        try:
            outcomes.append(deliver_sightings_to_misp(plan, settings))
            break
        except TransientError as exc:
            outcomes.append(exc)
    assert isinstance(outcomes[0], TransientError)
    assert isinstance(outcomes[-1], SightingDelivery) and outcomes[-1].confirmed >= 1
    stamps = [s["date_sighting"] for s in misp.sightings]
    assert sorted(stamps) == sorted(str(stamp) for stamp in plan["timestamp"])  # once each
    requested = [r["timestamp"] for r in misp.sighting_requests]
    assert all(requested.count(misp.sighting_requests[n - 1]["timestamp"]) == 1
               for n in misp.lost_sighting_answers)


def test_a_crash_before_the_request_left_sends_it_on_the_next_run(misp: MispStandIn) -> None:
    settings = load_settings()
    plan = sample_plan()
    with SightingLedger(settings.state_dir / LEDGER_FILE) as ledger:
        for key, stamp in zip(plan["key"], plan["timestamp"], strict=True):
            ledger.mark(f"misp:{settings.misp.url}", key, PENDING, int(stamp))
    result = deliver_sightings_to_misp(plan, settings)
    assert result.sent == 2 and result.confirmed == 0
    assert len(misp.sightings) == 2


# --- delivery to a JSON lines file ---------------------------------------------------------------


def file_settings(tmp_path: Path) -> Settings:
    return load_settings({"state_dir": str(tmp_path / "state")})


def test_the_file_holds_request_bodies_once_across_replays(tmp_path: Path) -> None:
    out = tmp_path / "sightings.jsonl"
    first = deliver_sightings_to_file(sample_plan(), out, file_settings(tmp_path))
    again = deliver_sightings_to_file(sample_plan(), out, file_settings(tmp_path))
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert first.sent == 3 and again.sent == 0 and again.duplicates == 3
    assert len(lines) == 3
    assert {"uuid": C2, "source": "misp-ndr ids-1", "type": "0",
            "timestamp": str(T0 + 5)} in lines
    assert {"values": ["198.51.7.7"], "filters": {"to_ids": 1}, "source": "misp-ndr proxy",
            "type": "0", "timestamp": str(T0 + 660)} in lines


def test_a_line_torn_by_a_crash_is_rewritten_whole(tmp_path: Path) -> None:
    out = tmp_path / "sightings.jsonl"
    settings = file_settings(tmp_path)
    plan = sample_plan()
    deliver_sightings_to_file(plan.iloc[:1], out, settings)
    whole = out.read_text()
    with SightingLedger(settings.state_dir / LEDGER_FILE) as ledger:  # crash mid-append
        for key, stamp in zip(plan["key"][1:], plan["timestamp"][1:], strict=True):
            ledger.mark(f"file:{out.resolve()}", key, PENDING, int(stamp))
    out.write_text(whole + '{"source": "misp-ndr pro')
    result = deliver_sightings_to_file(plan, out, settings)
    lines = out.read_text().splitlines()
    assert result.sent == 2 and result.duplicates == 1
    assert len(lines) == 3 and all(json.loads(line) for line in lines)
