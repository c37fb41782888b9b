"""Reading indicators from a MISP feed directory or URL, the query applied locally."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import responses

from misp_ndr.config import TlsClientSettings
from misp_ndr.errors import AuthError, InputError, TransientError
from tasks.misp_feed_source import SKIP_OLD_EVENTS, displayed_location, read_feed_attributes
from tasks.misp_pull import (
    SKIP_EXCLUDED,
    SKIP_NOT_IDS,
    SKIP_NOT_TAGGED,
    SKIP_TYPE,
    SKIP_UNPUBLISHED,
    SKIP_WINDOW,
    AttributeQuery,
)
from tasks.rule_indicators import PULLED_ATTRIBUTE_COLUMNS, TAG_SEPARATOR
from tests.conftest import SAMPLES

NOW = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
TLS = TlsClientSettings(retries=0, timeout=5)
FEED_URL = "https://feeds.example.org/misp"
C2 = "7b8d7e2e-b97e-53d0-a162-1377e3a20daa"
PHISH = "8e71235d-f3a2-5196-9ce0-c93dd8fecc53"
OLD = "6a319dd2-21dc-53cb-be86-91dd278dc9f2"


def feed_attribute(number: int, misp_type: str = "ip-dst", value: str = "91.198.174.192",
                   **fields: Any) -> dict[str, Any]:
    return {"uuid": f"00000000-0000-4000-8000-{number:012d}", "type": misp_type,
            "category": "Network activity", "value": value, "to_ids": True,
            "timestamp": 1795150000, **fields}


def feed_event(event_id: str, *attributes: dict[str, Any], tags: tuple[str, ...] = ("tlp:green",),
               date: str = "2026-11-20", published: bool = True, **fields: Any) -> dict[str, Any]:
    return {"Event": {"uuid": event_id, "info": f"event {event_id[:4]}", "date": date,
                      "published": published, "timestamp": 1795150000,
                      "publish_timestamp": 1795150000, "Tag": [{"name": tag} for tag in tags],
                      "Attribute": list(attributes), **fields}}


def manifest(*events: dict[str, Any]) -> dict[str, Any]:
    return {event["Event"]["uuid"]: {"info": event["Event"]["info"],
                                     "date": event["Event"]["date"],
                                     "Tag": event["Event"]["Tag"]} for event in events}


def write_feed_dir(folder: Path, *events: dict[str, Any]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "manifest.json").write_text(json.dumps(manifest(*events)))
    for event in events:
        (folder / f"{event['Event']['uuid']}.json").write_text(json.dumps(event))
    return folder


def query(**overrides: Any) -> AttributeQuery:
    return AttributeQuery(**{"max_event_age_days": 30, **overrides})


def numbers(frame: Any) -> list[int]:
    return [int(uuid[-12:]) for uuid in frame["attribute_uuid"]]


@pytest.fixture
def rsps() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock() as mock:
        yield mock


def test_directory_feed_gives_the_same_table_as_a_misp_pull(tmp_path: Path) -> None:
    folder = write_feed_dir(tmp_path / "feed", feed_event(
        C2, feed_attribute(1, "ip-dst|port", "91.198.174.192|443", Tag=[{"name": "c2"}])))
    result = read_feed_attributes(str(folder), query(), TLS, now=NOW)
    assert list(result.attributes.columns) == list(PULLED_ATTRIBUTE_COLUMNS)
    row = result.attributes.iloc[0]
    assert (row.event_uuid, row.event_info, row.type, row.value, row.to_ids, row.deleted) == (
        C2, "event 7b8d", "ip-dst|port", "91.198.174.192|443", True, False)
    assert row.tags.split(TAG_SEPARATOR) == ["tlp:green", "c2"]
    assert (result.pages, result.by_type, result.skipped) == (1, {"ip-dst|port": 1}, {})


def test_object_attributes_are_read_too(tmp_path: Path) -> None:
    event = feed_event(C2, feed_attribute(1), Object=[
        {"name": "domain-ip", "Attribute": [feed_attribute(2, "domain", "evil.example")]}])
    result = read_feed_attributes(str(write_feed_dir(tmp_path, event)), query(), TLS, now=NOW)
    assert numbers(result.attributes) == [1, 2]


def test_query_is_applied_locally_and_every_left_out_row_is_counted(tmp_path: Path) -> None:
    folder = write_feed_dir(
        tmp_path,
        feed_event(C2, feed_attribute(1), feed_attribute(2, to_ids=False),
                   feed_attribute(3, deleted=True), feed_attribute(4, "email-src", "a@b.example"),
                   feed_attribute(5, Tag=[{"name": "false-positive"}])),
        feed_event(PHISH, feed_attribute(6), published=False),
        feed_event(OLD, feed_attribute(7), tags=("tlp:red",)),
    )
    result = read_feed_attributes(str(folder), query(exclude_tags=["False-Positive", "tlp:red"]),
                                  TLS, now=NOW)
    assert numbers(result.attributes) == [1]
    assert result.skipped == {SKIP_NOT_IDS: 2, SKIP_TYPE: 1, SKIP_EXCLUDED: 2,
                              SKIP_UNPUBLISHED: 1}


def test_incremental_query_keeps_non_ids_and_deleted_attributes(tmp_path: Path) -> None:
    folder = write_feed_dir(tmp_path, feed_event(
        C2, feed_attribute(1), feed_attribute(2, to_ids=False), feed_attribute(3, deleted=True)))
    result = read_feed_attributes(str(folder), query(to_ids_only=False), TLS, now=NOW)
    assert numbers(result.attributes) == [1, 2, 3]
    assert list(result.attributes["deleted"]) == [False, False, True]


def test_events_outside_the_age_window_are_not_even_read(tmp_path: Path) -> None:
    old = feed_event(OLD, feed_attribute(1), date="2026-09-30")
    folder = write_feed_dir(tmp_path, feed_event(C2, feed_attribute(2)), old)
    (folder / f"{OLD}.json").unlink()  # reading it would fail
    result = read_feed_attributes(str(folder), query(), TLS, now=NOW)
    assert numbers(result.attributes) == [2]
    assert result.pages == 1
    assert result.skipped == {SKIP_OLD_EVENTS: 1}


def test_wanted_tags_must_be_on_the_event(tmp_path: Path) -> None:
    folder = write_feed_dir(
        tmp_path, feed_event(C2, feed_attribute(1)),
        feed_event(PHISH, feed_attribute(2, Tag=[{"name": "tlp:green"}]), tags=()))
    result = read_feed_attributes(str(folder), query(event_tags=["TLP:GREEN"]), TLS, now=NOW)
    assert numbers(result.attributes) == [1]
    assert result.skipped == {SKIP_NOT_TAGGED: 1}


def test_a_window_selects_by_publication_or_by_attribute_change(tmp_path: Path) -> None:
    folder = write_feed_dir(
        tmp_path, feed_event(C2, feed_attribute(1, timestamp=1795400000)),
        feed_event(PHISH, feed_attribute(2, timestamp=1795000000), publish_timestamp=1795400000))
    since = datetime.fromtimestamp(1795300000, UTC)
    published = read_feed_attributes(str(folder), query(window_from=since), TLS, now=NOW)
    assert numbers(published.attributes) == [2]  # published after `since`, attribute older
    changed = read_feed_attributes(str(folder), query(window_from=since, published_only=False),
                                   TLS, now=NOW)
    assert numbers(changed.attributes) == [1]
    assert changed.skipped == {SKIP_WINDOW: 1}


def test_bundled_sample_feed_reads_with_its_red_event_excluded() -> None:
    result = read_feed_attributes(str(SAMPLES / "misp-feed"), query(exclude_tags=["tlp:red"]),
                                  TLS, now=NOW)
    assert result.pages == 3
    assert len(result.attributes) == sum(result.by_type.values()) > 10
    assert not result.attributes["tags"].str.contains("tlp:red").any()


@pytest.mark.parametrize(("break_feed", "message"), [
    (lambda folder: (folder / "manifest.json").unlink(), "manifest.json is missing"),
    (lambda folder: (folder / "manifest.json").write_text("[1, 2]"), "is not a JSON object"),
    (lambda folder: (folder / f"{C2}.json").unlink(), f"cannot read {C2}.json"),
    (lambda folder: (folder / f"{C2}.json").write_text("{not json"), "is not valid JSON"),
    (lambda folder: (folder / f"{C2}.json").write_text(json.dumps(feed_event(PHISH))),
     f"holds event '{PHISH}'"),
    (lambda folder: (folder / "manifest.json").write_text(json.dumps({"../../etc/passwd": {}})),
     "is not an event UUID"),
    (lambda folder: (folder / f"{C2}.json").write_text(json.dumps(feed_event(C2, {"value": 1}))),
     f"event {C2}: record 1 has no uuid"),
])
def test_a_broken_feed_raises_an_input_error_naming_it(
    tmp_path: Path, break_feed: Any, message: str
) -> None:
    folder = write_feed_dir(tmp_path / "feed", feed_event(C2, feed_attribute(1)))
    break_feed(folder)
    with pytest.raises(InputError, match=message) as caught:
        read_feed_attributes(str(folder), query(), TLS, now=NOW)
    assert str(folder) in str(caught.value)


def test_url_feed_reads_the_manifest_then_each_event(rsps: responses.RequestsMock) -> None:
    event = feed_event(C2, feed_attribute(1))
    rsps.get(f"{FEED_URL}/manifest.json", json=manifest(event))
    rsps.get(f"{FEED_URL}/{C2}.json", json=event)
    result = read_feed_attributes(FEED_URL + "/", query(), TLS, now=NOW)
    assert numbers(result.attributes) == [1]
    assert [call.request.url for call in rsps.calls] == [f"{FEED_URL}/manifest.json",
                                                         f"{FEED_URL}/{C2}.json"]


@pytest.mark.parametrize(("status", "error"), [
    (404, InputError), (410, InputError), (403, AuthError), (503, TransientError),
])
def test_url_feed_failures_are_classified(rsps: responses.RequestsMock, status: int,
                                          error: type[Exception]) -> None:
    rsps.get(f"{FEED_URL}/manifest.json", json=manifest(feed_event(C2)))
    rsps.get(f"{FEED_URL}/{C2}.json", status=status, body="no")
    with pytest.raises(error, match=f"{C2}.json"):
        read_feed_attributes(FEED_URL, query(), TLS, now=NOW)


def test_url_credentials_are_sent_but_never_appear_in_errors(
    rsps: responses.RequestsMock,
) -> None:
    location = "https://reader:S3cretPass@feeds.example.org/misp?token=T0ken"
    rsps.get("https://reader:S3cretPass@feeds.example.org/misp/manifest.json?token=T0ken",
             status=404)
    with pytest.raises(InputError) as caught:
        read_feed_attributes(location, query(), TLS, now=NOW)
    assert "S3cretPass" not in str(caught.value) and "T0ken" not in str(caught.value)
    assert "https://feeds.example.org/misp" in str(caught.value)
    assert rsps.calls[0].request.headers["Authorization"].startswith("Basic ")
    assert displayed_location(location) == "https://feeds.example.org/misp"
