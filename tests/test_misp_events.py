"""Detections + indicators -> MISP event drafts: deterministic, complete, settings-driven."""

from __future__ import annotations

import random
import string
import uuid

import pandas as pd
import pytest

from misp_ndr.config import ExportSettings
from tasks.detections import normalize_detections
from tasks.misp_events import (
    PROJECT_NAMESPACE,
    EventDraft,
    build_event_drafts,
    event_uuid,
    project_uuid5,
)


def detections(*rows: dict) -> pd.DataFrame:
    defaults = {"source_system": "flowmon", "time": "2026-11-20 10:00:00",
                "method": "SCANS", "method_description": "Port scanning",
                "priority": "high", "detail": "Horizontal TCP scan"}
    frame = pd.DataFrame([{**defaults, **row} for row in rows])
    frame["time"] = pd.to_datetime(frame["time"], utc=True)
    return normalize_detections(frame)


def indicators(*rows: tuple[str, str, str]) -> pd.DataFrame:
    """(detection_id, attribute_type, value) rows of flowmon detections."""
    return pd.DataFrame(
        [("flowmon", detection, kind, value) for detection, kind, value in rows],
        columns=["source_system", "detection_id", "attribute_type", "value"],
    ).astype("string")


def drafts_by_detection(drafts: list[EventDraft]) -> dict[str, EventDraft]:
    return {draft.detection_id: draft for draft in drafts}


def test_one_event_per_detection_that_has_indicators() -> None:
    found = detections({"detection_id": "1", "dst_ip": "203.0.113.1"},
                       {"detection_id": "1", "dst_ip": "203.0.113.2"},
                       {"detection_id": "2"})
    kept = indicators(("1", "ip-dst", "203.0.113.1"), ("1", "ip-dst", "203.0.113.2"))
    drafts = build_event_drafts(found, kept, ExportSettings())
    assert [draft.detection_id for draft in drafts] == ["1"]
    values = [a["value"] for a in drafts[0].event["Attribute"]]
    assert values == ["203.0.113.1", "203.0.113.2"]


def test_event_follows_detection_and_export_settings() -> None:
    found = detections({"detection_id": "991", "time": "2026-11-20 23:59:30"})
    kept = indicators(("991", "ip-src", "198.51.100.7"), ("991", "domain", "evil.example"))
    export = ExportSettings(tag="soc:ndr", to_ids=True, distribution=1, publish=False,
                            analysis=2)
    draft = build_event_drafts(found, kept, export)[0]
    event = draft.event
    assert draft.uuid == event["uuid"] == event_uuid("flowmon", "991")
    assert event["info"] == "Port scanning: Horizontal TCP scan"
    assert event["date"] == "2026-11-20"
    assert event["timestamp"] == int(pd.Timestamp("2026-11-20 23:59:30", tz="UTC").timestamp())
    assert (event["threat_level_id"], event["analysis"]) == (1, 2)
    assert (event["distribution"], event["published"]) == (1, False)
    assert draft.tags == ["soc:ndr", 'flowmon:method="SCANS"']
    assert event["Tag"] == [{"name": "soc:ndr"}, {"name": 'flowmon:method="SCANS"'}]
    for attribute in event["Attribute"]:
        assert attribute["category"] == "Network activity"
        assert attribute["to_ids"] is True
        assert attribute["distribution"] == 5
        assert attribute["comment"] == "flowmon detection 991 (SCANS)"
        assert attribute["timestamp"] == event["timestamp"]
    assert {(a["type"], a["value"]) for a in event["Attribute"]} == {
        ("ip-src", "198.51.100.7"), ("domain", "evil.example")}


@pytest.mark.parametrize(("priority", "level"), [
    ("critical", 1), ("high", 1), ("medium", 2), ("low", 3), ("info", 3), (None, 4)])
def test_auto_threat_level_follows_priority(priority: str | None, level: int) -> None:
    found = detections({"detection_id": "1", "priority": priority})
    draft = build_event_drafts(found, indicators(("1", "ip-dst", "203.0.113.1")),
                               ExportSettings())[0]
    assert draft.event["threat_level_id"] == level


def test_fixed_threat_level_ignores_priority() -> None:
    found = detections({"detection_id": "1", "priority": "critical"})
    draft = build_event_drafts(found, indicators(("1", "ip-dst", "203.0.113.1")),
                               ExportSettings(threat_level=4))[0]
    assert draft.event["threat_level_id"] == 4


def test_rerun_in_any_row_order_gives_identical_drafts() -> None:
    found = detections(*({"detection_id": str(i)} for i in range(20)))
    kept = indicators(*((str(i), "ip-dst", f"203.0.113.{i}") for i in range(20)),
                      *((str(i), "domain", f"host{i}.example") for i in range(20)))
    first = build_event_drafts(found, kept, ExportSettings())
    shuffled = build_event_drafts(found.sample(frac=1, random_state=1),
                                  kept.sample(frac=1, random_state=2), ExportSettings())
    assert first == shuffled
    assert len({draft.uuid for draft in first}) == 20


def test_changed_settings_keep_uuids_but_change_the_fingerprint() -> None:
    found = detections({"detection_id": "1"})
    kept = indicators(("1", "ip-dst", "203.0.113.1"))
    before = build_event_drafts(found, kept, ExportSettings(to_ids=False))[0]
    after = build_event_drafts(found, kept, ExportSettings(to_ids=True))[0]
    assert before.uuid == after.uuid
    assert before.event["Attribute"][0]["uuid"] == after.event["Attribute"][0]["uuid"]
    assert before.fingerprint != after.fingerprint


def test_same_value_in_two_events_gets_two_attribute_uuids() -> None:
    found = detections({"detection_id": "1"}, {"detection_id": "2"})
    kept = indicators(("1", "ip-dst", "203.0.113.1"), ("2", "ip-dst", "203.0.113.1"))
    drafts = build_event_drafts(found, kept, ExportSettings())
    assert len({draft.event["Attribute"][0]["uuid"] for draft in drafts}) == 2


def test_title_loses_control_characters_and_is_trimmed() -> None:
    found = detections({"detection_id": "1", "method_description": "Blacklist\nhit\x1b[31m",
                        "detail": "x" * 500})
    info = build_event_drafts(found, indicators(("1", "ip-dst", "203.0.113.1")),
                              ExportSettings())[0].event["info"]
    assert info.startswith("Blacklist hit [31m: xxx")
    assert len(info) <= 200 and info.endswith("...")


def test_title_falls_back_to_method_then_detection() -> None:
    found = detections({"detection_id": "1", "method_description": None, "detail": None},
                       {"detection_id": "2", "method_description": None, "method": None,
                        "detail": None})
    kept = indicators(("1", "ip-dst", "203.0.113.1"), ("2", "ip-dst", "203.0.113.2"))
    drafts = drafts_by_detection(build_event_drafts(found, kept, ExportSettings()))
    assert drafts["1"].event["info"] == "SCANS"
    assert drafts["2"].event["info"] == "flowmon detection 2"
    assert drafts["2"].tags[1] == 'flowmon:method="unknown"'


def test_seed_style_method_tag_and_duplicate_tags() -> None:
    found = detections({"detection_id": "1", "method": "misp-ndr"},
                       {"detection_id": "2", "method": "SCANS"})
    kept = indicators(("1", "ip-dst", "203.0.113.1"), ("2", "ip-dst", "203.0.113.2"))
    export = ExportSettings(method_tag_template="{method}")
    drafts = drafts_by_detection(build_event_drafts(found, kept, export))
    assert drafts["1"].tags == ["misp-ndr"]
    assert drafts["2"].tags == ["misp-ndr", "SCANS"]


def test_indicator_of_a_detection_missing_from_the_table_is_still_exported() -> None:
    found = detections({"detection_id": "1"})
    kept = indicators(("1", "ip-dst", "203.0.113.1"), ("7", "ip-dst", "203.0.113.7"))
    drafts = drafts_by_detection(build_event_drafts(found, kept, ExportSettings()))
    orphan = drafts["7"].event
    assert orphan["info"] == "flowmon detection 7"
    assert orphan["threat_level_id"] == 4
    assert "timestamp" not in orphan and "date" not in orphan  # MISP stamps it
    assert all("timestamp" not in a for a in orphan["Attribute"])


def test_no_indicators_no_events() -> None:
    assert build_event_drafts(detections({"detection_id": "1"}), indicators(),
                              ExportSettings()) == []


def test_fast_uuid5_is_exactly_uuid5() -> None:
    rng = random.Random(7)
    names = ["", "flowmon:1", "é€ü|ip-dst|2001:db8::1",
             *("".join(rng.choices(string.printable, k=rng.randint(1, 60)))
               for _ in range(2000))]
    for name in names:
        assert project_uuid5(name) == str(uuid.uuid5(PROJECT_NAMESPACE, name))
