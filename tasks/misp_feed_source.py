"""Indicators from a MISP feed (a directory or an http(s) URL) instead of a MISP server.

A feed is `manifest.json` (event UUID -> summary) and one `<uuid>.json` per event, as MISP
and `tasks.misp_feed` write it. The query is applied here, as MISP would apply it to a
restSearch: events older than the age window are skipped from the manifest without being
read, every other filter runs on the attribute table (`tasks.misp_pull.query_mask`). Event
files are read one at a time and reduced to table rows at once, so memory follows the
attributes kept, not the size of the feed. `tasks.misp_feed.read_feed` is not used for
directories: it loads every event of the feed before anything can be skipped.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import date, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import requests

from misp_ndr.config import TlsClientSettings
from misp_ndr.errors import ConfigError, InputError, TransientError
from misp_ndr.http import TRANSIENT_STATUSES, build_session, describe_failure, raise_for_answer
from misp_ndr.task_policy import batch_task
from tasks.detections import ParseProblem
from tasks.misp_feed import MANIFEST, event_file_name
from tasks.misp_pull import (
    AttributeQuery,
    MalformedAttribute,
    PullResult,
    attribute_table,
    oldest_event_date,
    record_excerpt,
    record_name,
    select_pulled,
)

SYSTEM = "MISP feed"
SKIP_OLD_EVENTS = "events older than the age window (by the manifest date, not read)"

FeedReader = Callable[[str], bytes]  # file name inside the feed -> its bytes


def read_feed_attributes(location: str, query: AttributeQuery, tls: TlsClientSettings,
                         now: datetime | None = None) -> PullResult:
    """The feed's attributes that satisfy `query`, as `pull_attributes` returns them;
    `pages` counts the event files read. A missing or broken feed, manifest or event file
    raises InputError naming it (an unreachable URL: TransientError); a malformed record
    in a good event file is one of the result's `problems`, and the rest is read."""
    shown = displayed_location(location)
    read = _url_reader(location, tls) if _is_url(location) else _directory_reader(location)
    manifest = _json(read(MANIFEST), shown, MANIFEST)
    if not isinstance(manifest, dict):
        raise InputError(f"{SYSTEM} {shown}: {MANIFEST} is not a JSON object")
    oldest = oldest_event_date(query.max_event_age_days, now)
    listed = sorted(event_id for event_id in manifest
                    if not _listed_before(manifest[event_id], oldest))
    problems: list[ParseProblem] = []
    reading = _EventInProgress()

    def refused(position: int, record: Any, why: MalformedAttribute) -> None:
        where = f"feed event {reading.event_id}"
        reading.refused.append(ParseProblem.make(
            record_name(where, position - reading.first + 1, record), f"{where}: {why}",
            record_excerpt(record)))

    def pairs() -> Iterator[tuple[Any, Any]]:
        position = 0
        for event_id in listed:
            event = _event(read, shown, event_id)
            reading.start(event_id, position + 1)
            attributes = event_attributes(event)
            for attribute in attributes:
                position += 1
                yield attribute, event
            problems.extend(reading.finish(shown, len(attributes)))

    pulled = attribute_table(pairs(), on_malformed=refused)
    result = select_pulled(pulled, query, pages=len(listed), now=now)
    result.problems = problems
    skipped_old = len(manifest) - len(listed)
    if skipped_old:
        result.skipped[SKIP_OLD_EVENTS] = skipped_old
    return result


class _EventInProgress:
    """The event file whose records `attribute_table` is checking, and those it refused.
    A file in which not one record is an attribute is not the event it claims to be: the
    feed is broken there, and a full rebuild without that event would be a partial ruleset."""

    def __init__(self) -> None:
        self.event_id = ""
        self.first = 1  # stream position of the event's first record
        self.refused: list[ParseProblem] = []

    def start(self, event_id: str, first: int) -> None:
        self.event_id, self.first, self.refused = event_id, first, []

    def finish(self, shown: str, records: int) -> list[ParseProblem]:
        if records and len(self.refused) == records:
            raise InputError(f"{SYSTEM} {shown}: event {self.event_id}: "
                             f"{self.refused[0].reason}")
        return self.refused


def event_attributes(event: dict[str, Any]) -> list[Any]:
    """The event's attributes and those of its objects: restSearch returns both too."""
    attributes = list(event.get("Attribute") or [])
    for item in event.get("Object") or []:
        if isinstance(item, dict):
            attributes += item.get("Attribute") or []
    return attributes


def displayed_location(location: str) -> str:
    """The location as logs and errors may show it: no user, password or query string."""
    if not _is_url(location):
        return location
    parts = urlsplit(location)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _is_url(location: str) -> bool:
    return location.lower().startswith(("http://", "https://"))


def _listed_before(entry: Any, oldest: date) -> bool:
    """Only a readable manifest date may skip an event; anything else is read and judged
    by its own file."""
    try:
        return date.fromisoformat(str(entry.get("date"))) < oldest
    except (AttributeError, ValueError):
        return False


def _event(read: FeedReader, shown: str, event_id: str) -> dict[str, Any]:
    name = event_file_name(f"{SYSTEM} {shown}", event_id)
    document = _json(read(name), shown, name)
    event = document.get("Event") if isinstance(document, dict) else None
    found = event.get("uuid") if isinstance(event, dict) else None
    if found != event_id:
        raise InputError(f"{SYSTEM} {shown}: {name} holds event {found!r}, not {event_id}")
    return event




def _json(data: bytes, shown: str, name: str) -> Any:
    """Bytes that are not UTF-8 are read with U+FFFD in their place: the value holding
    them is then refused alone (`attribute_table`), not the whole event file."""
    try:
        return json.loads(data.decode("utf-8", errors="replace"))
    except ValueError as exc:
        raise InputError(f"{SYSTEM} {shown}: {name} is not valid JSON ({exc})") from None


def _directory_reader(location: str) -> FeedReader:
    folder = Path(location)
    if not (folder / MANIFEST).is_file():
        raise InputError(f"{location} is not a MISP feed: {MANIFEST} is missing")

    def read(name: str) -> bytes:
        try:
            return (folder / name).read_bytes()
        except OSError as exc:
            raise InputError(f"{SYSTEM} {location}: cannot read {name} "
                             f"({exc.strerror or type(exc).__name__})") from None
    return read


def _url_reader(location: str, tls: TlsClientSettings) -> FeedReader:
    session = build_session(tls, SYSTEM)
    parts = urlsplit(location)
    shown = displayed_location(location).rstrip("/")

    def read(name: str) -> bytes:
        what = f"reading {shown}/{name}"
        url = urlunsplit(parts._replace(path=f"{parts.path.rstrip('/')}/{name}", fragment=""))
        try:
            answer = session.get(url, timeout=tls.timeout)
        except requests.exceptions.SSLError as exc:
            raise ConfigError(f"{SYSTEM} {shown}: {describe_failure(exc)}") from None
        except requests.RequestException as exc:
            raise TransientError(f"{SYSTEM} {what}: {describe_failure(exc)} "
                                 "after retries") from None
        status = answer.status_code
        if status in (401, 403) or status in TRANSIENT_STATUSES:
            raise_for_answer(status, SYSTEM, what)
        if status >= 400:
            raise InputError(f"{SYSTEM} {shown}: {name} is missing (HTTP {status})")
        return answer.content
    return read


read_feed_attributes_task = batch_task(read_feed_attributes, "read-feed-attributes", remote=True)
