"""The MISP feed directory: MISP's layout, merges across runs, atomic, checked on read."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest
from pymisp.tools.feed import feed_meta_generator

from misp_ndr.config import ExportSettings
from misp_ndr.errors import InputError
from tasks.detections import normalize_detections
from tasks.misp_events import EventDraft, build_event_drafts
from tasks.misp_feed import read_feed, write_feed


def make_drafts(ids: list[str], **export: object) -> list[EventDraft]:
    found = pd.DataFrame({"detection_id": ids, "source_system": "flowmon",
                          "time": pd.Timestamp("2026-11-20 10:00", tz="UTC"),
                          "method": "SCANS", "method_description": "Port scanning",
                          "priority": "medium", "detail": "scan"})
    kept = pd.DataFrame({
        "source_system": "flowmon",
        "detection_id": [i for i in ids for _ in range(2)],
        "attribute_type": ["ip-dst", "domain"] * len(ids),
        "value": [v for i in ids for v in (f"203.0.113.{i}", f"host{i}.example")],
    }).astype("string")
    return build_event_drafts(normalize_detections(found), kept, ExportSettings(**export))


def manifest(feed: Path) -> dict:
    return json.loads((feed / "manifest.json").read_text())


def hash_lines(feed: Path) -> set[str]:
    return set((feed / "hashes.csv").read_text().splitlines())


def test_feed_has_misp_layout_and_matches_pymisp_feed_generator(tmp_path: Path) -> None:
    feed = tmp_path / "feed"
    drafts = make_drafts(["1", "2"])
    assert write_feed(drafts, feed, org_name="ACME CSIRT").created == 2

    listed = manifest(feed)
    assert set(listed) == {draft.uuid for draft in drafts}
    assert sorted(p.name for p in feed.iterdir()) == sorted(
        ["manifest.json", "hashes.csv", *(f"{d.uuid}.json" for d in drafts)])
    event = json.loads((feed / f"{drafts[0].uuid}.json").read_text())["Event"]
    for field in ("uuid", "info", "date", "timestamp", "publish_timestamp", "threat_level_id",
                  "analysis", "published", "Orgc", "Tag", "Attribute"):
        assert field in event
    assert event["Orgc"]["name"] == "ACME CSIRT"
    assert listed[drafts[0].uuid]["Orgc"] == event["Orgc"]
    assert listed[drafts[0].uuid]["Tag"] == event["Tag"]

    # PyMISP's own generator, run on a copy of our event files, agrees on the index files.
    reference = tmp_path / "reference"
    shutil.copytree(feed, reference)
    feed_meta_generator(reference)
    assert hash_lines(reference) == hash_lines(feed)
    expected = manifest(reference)
    for event_id, entry in listed.items():
        for field in ("info", "date", "analysis", "threat_level_id", "timestamp"):
            assert str(entry[field]) == str(expected[event_id][field])
        assert entry["Orgc"]["uuid"] == expected[event_id]["Orgc"]["uuid"]


def test_later_runs_merge_into_manifest_and_hashes(tmp_path: Path) -> None:
    first, second = make_drafts(["1", "2"]), make_drafts(["3"])
    write_feed(first, tmp_path)
    result = write_feed(second, tmp_path)
    assert (result.created, result.updated, result.unchanged) == (1, 0, 0)
    assert set(manifest(tmp_path)) == {d.uuid for d in first + second}
    assert {line.split(",")[1] for line in hash_lines(tmp_path)} == {
        d.uuid for d in first + second}
    assert len(read_feed(tmp_path)) == 3


def test_rerun_with_same_events_rewrites_nothing(tmp_path: Path) -> None:
    drafts = make_drafts(["1", "2"])
    write_feed(drafts, tmp_path)
    before = {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()}
    result = write_feed(drafts, tmp_path)
    assert (result.created, result.updated, result.unchanged) == (0, 0, 2)
    assert {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()} == before


def test_changed_event_is_rewritten_with_newer_timestamps_so_misp_refetches(
    tmp_path: Path,
) -> None:
    write_feed(make_drafts(["1"], to_ids=False), tmp_path)
    old = read_feed(tmp_path)[0]["Event"]
    result = write_feed(make_drafts(["1"], to_ids=True), tmp_path)
    new = read_feed(tmp_path)[0]["Event"]
    assert (result.created, result.updated) == (0, 1)
    assert all(attribute["to_ids"] is True for attribute in new["Attribute"])
    assert int(new["timestamp"]) > int(old["timestamp"])
    assert all(int(a["timestamp"]) > int(old["timestamp"]) for a in new["Attribute"])
    assert manifest(tmp_path)[new["uuid"]]["timestamp"] == new["timestamp"]


def test_failed_write_leaves_the_old_file_and_no_temp_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_feed(make_drafts(["1"]), tmp_path)
    files_before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    def disk_full(*_: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", disk_full)
    with pytest.raises(OSError, match="No space"):
        write_feed(make_drafts(["1", "2"]), tmp_path)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == files_before


def test_empty_batch_still_gives_a_valid_feed(tmp_path: Path) -> None:
    write_feed([], tmp_path / "feed")
    assert read_feed(tmp_path / "feed") == []
    assert (tmp_path / "feed" / "hashes.csv").read_text() == ""


def test_read_feed_names_a_missing_event_file(tmp_path: Path) -> None:
    drafts = make_drafts(["1", "2"])
    write_feed(drafts, tmp_path)
    (tmp_path / f"{drafts[1].uuid}.json").unlink()
    with pytest.raises(InputError, match=f"{drafts[1].uuid}.*missing"):
        read_feed(tmp_path)


def test_read_feed_rejects_a_file_holding_another_event(tmp_path: Path) -> None:
    drafts = make_drafts(["1", "2"])
    write_feed(drafts, tmp_path)
    first, second = (tmp_path / f"{d.uuid}.json" for d in drafts)
    first.write_bytes(second.read_bytes())
    with pytest.raises(InputError, match=f"holds event '{drafts[1].uuid}'"):
        read_feed(tmp_path)


def test_read_feed_rejects_a_manifest_key_that_is_not_a_uuid(tmp_path: Path) -> None:
    (tmp_path / "manifest.json").write_text(json.dumps({"../../etc/passwd": {}}))
    with pytest.raises(InputError, match="not an event UUID"):
        read_feed(tmp_path)


def test_read_feed_without_manifest_or_with_broken_json(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"manifest\.json is missing"):
        read_feed(tmp_path)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(InputError, match="cannot read"):
        read_feed(tmp_path)
    with pytest.raises(InputError, match="cannot read"):
        write_feed(make_drafts(["1"]), tmp_path)  # never overwrite earlier runs' manifest
