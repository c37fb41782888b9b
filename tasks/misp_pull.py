"""Pull IDS attributes from MISP's `/attributes/restSearch`, page by page, into a table.

MISP 2.5 traps this module is built around (checked against MISP's source):
- filters not in the attribute search's parameter list are dropped without a word, and
  `event_tags` and `date` are not in it: the event tag filter is `tags` (it matches event
  or attribute tags, so the event-only meaning is re-applied here), the age is `from`;
- `timestamp` looks at the attribute only; an event built unpublished and published later
  keeps its old attribute timestamps, so a published-only window uses `publish_timestamp`;
- with `limit` and `page` MISP pages by offset: without `order` pages are not stable;
- with warninglists enforced (and MISP's allowedlist), pages come back short: only an
  empty page ends the pull;
- deleted attributes are only ever returned to a sync user (perm_sync).

Every filter is also applied here to the rows MISP returned (`query_mask`), so a MISP that
ignores one cannot widen what reaches the sensors; each row dropped that way is counted.
"""

from __future__ import annotations

import gc
import logging
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, NamedTuple, Protocol

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from misp_ndr.config import MispSettings
from misp_ndr.moments import as_utc
from misp_ndr.task_policy import batch_task
from tasks.detections import ParseProblem
from tasks.misp import UnexpectedAnswerError
from tasks.misp_clients import PerThreadClients
from tasks.rule_indicators import (
    HANDLED_TYPES,
    PULLED_ATTRIBUTE_COLUMNS,
    TAG_SEPARATOR,
    empty_table,
)

log = logging.getLogger(__name__)

ATTRIBUTE_ORDER = "Attribute.id asc"  # offset paging needs a stable order
EMPTY_PAGES_AT_END = 2  # see pull_attributes: one empty page may be warninglists at work

# Event facts the local filters need; dropped before the table is handed on.
EVENT_COLUMNS: dict[str, str] = {
    "event_tags": "string",  # the event's own tags, TAG_SEPARATOR-joined
    "event_published": "boolean",
    "event_publish_timestamp": "datetime64[ns, UTC]",
}
_WORKING_COLUMNS = {**PULLED_ATTRIBUTE_COLUMNS, **EVENT_COLUMNS}
_FLAGS = {"1": True, "true": True, "0": False, "false": False}

# Why a row was left out locally, in the order the checks run (the first failing one counts).
SKIP_TYPE = "type not handled"
SKIP_NOT_IDS = "not IDS-flagged or deleted"
SKIP_UNPUBLISHED = "event not published"
SKIP_OLD = "event older than the age window"
SKIP_WINDOW = "changed outside the window"
SKIP_NOT_TAGGED = "event has none of the wanted tags"
SKIP_EXCLUDED = "has an excluded tag"
SKIP_REPEATED = "repeated on a later page"
SKIP_REASONS = (SKIP_TYPE, SKIP_NOT_IDS, SKIP_UNPUBLISHED, SKIP_OLD, SKIP_WINDOW,
                SKIP_NOT_TAGGED, SKIP_EXCLUDED)  # those `query_mask` counts, in its order
CHUNK_ROWS = 10_000  # records converted at once by `attribute_table`
# No indicator is anywhere near this long (a URL rule takes 1 KiB at most): a longer value is
# refused as the record is read, so a huge one is never copied into the table's columns.
MAX_VALUE_CHARS = 65_536
# Kept page tables are joined into blocks of this many rows as the pull goes: hundreds of
# small NumPy columns left between the pages' short-lived JSON fragment the C heap, and
# parsing and converting each later page got slower (a 1M pull: page 200 took 1.4 times
# as long as page 1).
BLOCK_ROWS = 100_000


@dataclass
class AttributeQuery:
    """What to pull. A full pull asks for IDS attributes only; an incremental one
    (`to_ids_only=False`) also asks for non-IDS and deleted ones, to learn what to remove."""

    window_from: datetime | None = None  # changed (or, published-only, published) since
    window_to: datetime | None = None
    max_event_age_days: int = 30  # by the event's date
    event_tags: list[str] = field(default_factory=list)  # any of these, on the event
    exclude_tags: list[str] = field(default_factory=list)  # none of these, event or attribute
    published_only: bool = True
    enforce_warninglists: bool = True
    to_ids_only: bool = True
    types: list[str] = field(default_factory=lambda: list(HANDLED_TYPES))  # empty: all


@dataclass
class PullResult:
    attributes: pd.DataFrame  # PULLED_ATTRIBUTE_COLUMNS
    pages: int  # pages (or feed event files) that held attributes
    by_type: dict[str, int]  # rows passed on, per MISP type
    skipped: dict[str, int] = field(default_factory=dict)  # left out locally: reason -> rows
    # records that are no usable attribute, each named; left out, so an incremental update
    # keeps what the ruleset had for them
    problems: list[ParseProblem] = field(default_factory=list)


class MalformedAttribute(ValueError):
    """A record lacks what every MISP attribute has; the caller names where it was."""


def oldest_event_date(max_event_age_days: int, now: datetime | None = None) -> date:
    """The first event date inside the age window. Rounded up to a whole day, so an event
    pulled today is not the one the indicator store expires as too old today."""
    cutoff = as_utc(now or datetime.now(UTC)) - timedelta(days=max_event_age_days)
    day = cutoff.date()
    return day if cutoff.time() == datetime.min.time() else day + timedelta(days=1)


def window_field(query: AttributeQuery) -> str:
    """A published-only pull follows publication: what an incremental update must see is
    whatever became visible, and an event built unpublished and published later carries
    attribute timestamps older than any window."""
    return "publish_timestamp" if query.published_only else "timestamp"


def restsearch_filters(query: AttributeQuery, now: datetime | None = None) -> dict[str, Any]:
    """The restSearch body for `query`, without `page` and `limit` (MispClient adds them)."""
    both = [0, 1]
    filters: dict[str, Any] = {
        "returnFormat": "json",
        "to_ids": 1 if query.to_ids_only else both,
        "deleted": 0 if query.to_ids_only else both,
        "published": 1 if query.published_only else both,
        "from": oldest_event_date(query.max_event_age_days, now).isoformat(),
        "enforceWarninglist": int(query.enforce_warninglists),
        "includeEventTags": 1,
        "includeContext": 1,  # the event's uuid, info, date, published flag and tags
        "order": ATTRIBUTE_ORDER,
    }
    if query.types:
        filters["type"] = list(query.types)
    tags = [*query.event_tags, *(f"!{tag}" for tag in query.exclude_tags)]
    if tags:
        filters["tags"] = tags
    window = _epoch_window(query)
    if window is not None:
        filters[window_field(query)] = window
    return filters


def _epoch_window(query: AttributeQuery) -> int | list[int] | None:
    if query.window_from is None and query.window_to is None:
        return None
    start = int(as_utc(query.window_from).timestamp()) if query.window_from else 0
    if query.window_to is None:
        return start
    return [start, int(as_utc(query.window_to).timestamp())]


def pull_attributes(
    client: PageSource,
    query: AttributeQuery,
    page_size: int,
    on_page: Callable[[int, int], None] | None = None,
    now: datetime | None = None,
    in_flight: int = 1,
) -> PullResult:
    """Pages 1, 2, ... until MISP answers two empty pages in a row. One is MISP's end mark,
    but warninglists filter each page after paging, so a page in the middle can come back
    empty too: stopping there would publish a partial ruleset. Any error mid-pull
    propagates: a partial pull never poses as a complete one.

    Up to `in_flight` pages are asked for at once (`client` must then be safe to call
    from that many threads, as `PerThreadClients` is): MISP builds the next pages while
    this one is converted, which is most of a real MISP's time per page. Each page becomes
    a small table in the thread that asked for it, its JSON dropped there, and pages are
    read in order: memory grows with the rows kept and the pages in flight, not with the
    number of pages; the result is the same whatever `in_flight` is."""
    now = now or datetime.now(UTC)  # one moment: the request and the local check agree
    filters = restsearch_filters(query, now)
    kept: list[pd.DataFrame] = []  # whole blocks of pages, then the pages since
    in_block = 0  # pages at the end of `kept` not in a block yet
    skipped: Counter[str] = Counter()
    problems: list[ParseProblem] = []
    previous_page: set[str] = set()
    page, empty_in_a_row = 1, 0
    with _collector_paused(), _pages_ahead(
            lambda number: _read_page(client, filters, number, page_size), in_flight) as read:
        while empty_in_a_row < EMPTY_PAGES_AT_END:
            frame, count, found = read(page)
            if on_page is not None:
                on_page(page, count)
            page += 1
            problems += found
            if frame is None:
                empty_in_a_row += 1
                continue
            empty_in_a_row = 0
            uuids = set(frame["attribute_uuid"].dropna())
            if uuids and uuids <= previous_page:
                raise UnexpectedAnswerError(
                    f"MISP answered page {page - 1} with the attributes of page {page - 2} "
                    "again: it does not honour paging (a proxy dropping the request body?)")
            previous_page = uuids
            keep, page_skipped = query_mask(frame, query, now)
            skipped.update(page_skipped)
            kept.append(frame.loc[keep, list(PULLED_ATTRIBUTE_COLUMNS)])
            in_block += 1
            if sum(len(part) for part in kept[-in_block:]) >= BLOCK_ROWS:
                kept[-in_block:] = [pd.concat(kept[-in_block:], ignore_index=True)]
                in_block = 0
    pulled = pd.concat(kept, ignore_index=True) if kept else working_table()
    in_order = {reason: skipped[reason] for reason in SKIP_REASONS if reason in skipped}
    result = _without_repeats(pulled, in_order, pages=page - 1 - EMPTY_PAGES_AT_END)
    result.problems = problems
    return result


def pull_misp_attributes(settings: MispSettings, query: AttributeQuery,
                         page_size: int) -> PullResult:
    """`pull_attributes` with a client per thread built from settings (the flow's entry
    point), `settings.concurrency` pages in flight, logging each page: a long pull shows
    it is moving."""
    def progress(page: int, count: int) -> None:
        log.info("MISP attribute search page %d: %d attributes", page, count)
    return pull_attributes(PerThreadClients(settings), query, page_size, on_page=progress,
                           in_flight=settings.concurrency)


class PageSource(Protocol):
    def search_attributes(self, filters: dict[str, Any], page: int,
                          limit: int) -> list[dict[str, Any]]: ...


class _Page(NamedTuple):
    frame: pd.DataFrame | None  # None: an empty page
    count: int  # records MISP sent
    problems: list[ParseProblem]  # the malformed ones, left out


@contextmanager
def _pages_ahead(read_page: Callable[[int], _Page],
                 in_flight: int) -> Iterator[Callable[[int], _Page]]:
    """`read(n)`: page n, read by a worker thread, with pages n+1 ... n+in_flight-1 asked
    for meanwhile (with 1, nothing is asked for ahead). Pages asked for past the end are
    a few empty answers; leaving the block cancels those not started and waits for the
    rest, so no request outlives the pull."""
    with ThreadPoolExecutor(in_flight, "misp-pull") as pool:
        asked: dict[int, Future[_Page]] = {}

        def read(number: int) -> _Page:
            for ahead in range(number, number + in_flight):
                if ahead not in asked:
                    asked[ahead] = pool.submit(read_page, ahead)
            return asked.pop(number).result()
        try:
            yield read
        finally:
            for waiting in asked.values():
                waiting.cancel()


def _read_page(client: PageSource, filters: dict[str, Any], page: int,
               page_size: int) -> _Page:
    """One page as a working table; its parsed JSON lives only in here. A malformed record
    becomes one problem and the rest of the page is read; a page without a single usable
    record is not an attribute list at all (a proxy's or another endpoint's answer), and
    fails the pull."""
    records = client.search_attributes(filters, page, page_size)
    if not records:
        return _Page(None, 0, [])
    found: list[ParseProblem] = []

    def refused(position: int, record: Any, why: MalformedAttribute) -> None:
        found.append(ParseProblem.make(record_name(f"restSearch page {page}", position,
                                                    record), str(why), record_excerpt(record)))

    def pairs() -> Iterator[tuple[Any, Any]]:
        for attribute in records:
            yield attribute, attribute.get("Event") if isinstance(attribute, dict) else None
    frame = attribute_table(pairs(), on_malformed=refused)
    if len(found) == len(records):
        raise UnexpectedAnswerError(f"MISP answered page {page} with a malformed "
                                    f"attribute: {found[0].reason}")
    return _Page(frame, len(records), found)


def record_name(where: str, position: int, record: Any) -> str:
    """How a report names a record: its attribute UUID when it has a readable one, else
    where it was (and MISP's id, if any)."""
    uuid = record.get("uuid") if isinstance(record, dict) else None
    if _is_ascii(uuid) and uuid:
        return f"MISP attribute {uuid[:64]}"
    number = record.get("id") if isinstance(record, dict) else None
    known = f" (id {str(number)[:20]})" if isinstance(number, str | int) else ""
    return f"MISP {where} record {position}{known}"


def record_excerpt(record: Any) -> str:
    """The start of a record's value for the report; never more than that is copied."""
    value = record.get("value") if isinstance(record, dict) else record
    text = value[:120] if isinstance(value, str) else repr(value)[:120]
    return text.encode("utf-8", "replace").decode("utf-8")


@contextmanager
def _collector_paused() -> Iterator[None]:
    """No cyclic garbage collection while pages are parsed and converted: for the whole
    pull, as worker threads parse pages at any moment. A page's JSON is some 90 container
    objects per attribute, all alive until the page is a table, and freed by reference
    counting after: collections in between only traverse them again and again (a third of
    the pull's time without this, more in a worker with a large heap). The switch is
    process-wide: it is only turned back on by whoever turned it off."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def working_table() -> pd.DataFrame:
    return empty_table(_WORKING_COLUMNS)


def attribute_table(
    pairs: Iterable[tuple[Any, Any]],
    on_malformed: Callable[[int, Any, MalformedAttribute], None] | None = None,
) -> pd.DataFrame:
    """(attribute, its event) JSON pairs -> one row each: PULLED_ATTRIBUTE_COLUMNS plus the
    EVENT_COLUMNS the local filters need. Each pair is checked as it comes (so a caller
    reading a stream can tell where a bad one was), then up to CHUNK_ROWS of them are
    converted column by column and let go: memory follows the rows, not the JSON.

    A malformed pair raises MalformedAttribute; with `on_malformed`, it is handed to it
    (1-based position in the stream, the record, what is wrong) and left out instead."""
    frames: list[pd.DataFrame] = []
    attributes: list[dict[str, Any]] = []
    events: list[dict[str, Any]] = []
    for position, (attribute, event) in enumerate(pairs, start=1):
        # ASCII fast paths inline, the full checks only for the rest: this runs once per
        # attribute of a million-row pull
        if not (isinstance(attribute, dict) and isinstance(event, dict)
                and type(uuid := attribute.get("uuid")) is str and uuid.isascii()
                and type(event_uuid := event.get("uuid")) is str and event_uuid.isascii()
                and ((type(kind := attribute.get("type")) is str and kind.isascii())
                     or _is_text(kind))
                and ((type(value := attribute.get("value")) is str and value.isascii()
                      and len(value) <= MAX_VALUE_CHARS) or _usable_value(value))
                and ((to_ids := attribute.get("to_ids")) is True or _is_flag(to_ids))
                and ((deleted := attribute.get("deleted", False)) is False
                     or _is_flag(deleted))):
            problem = _malformed(position, attribute, event)
            if on_malformed is None:
                raise problem
            on_malformed(position, attribute, problem)
            continue
        attributes.append(attribute)
        events.append(event)
        if len(attributes) == CHUNK_ROWS:
            frames.append(_chunk_table(attributes, events))
            attributes, events = [], []
    if attributes:
        frames.append(_chunk_table(attributes, events))
    if not frames:
        return working_table()
    return frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)


def _is_ascii(value: Any) -> bool:
    return type(value) is str and value.isascii()


def _is_text(value: Any) -> bool:
    """A str that has a UTF-8 form. JSON may carry a lone surrogate (`"\\ud800"`) and
    Python's json reads it, but arrow refuses a whole column for one such string."""
    if type(value) is not str:
        return False
    if value.isascii():
        return True
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _is_flag(value: Any) -> bool:
    """A flag in any form MISP writes (or none given). An unreadable one must not count as
    "not IDS": an incremental update would remove the attribute's rules for it."""
    if value is True or value is False or value is None:
        return True
    return type(value) in (str, int) and str(value).strip().lower() in _FLAGS


def _usable_value(value: Any) -> bool:
    """Text of a sane length, a number, or nothing. Text holding U+FFFD is how bytes that
    were not UTF-8 arrive once decoded with replacement (a feed file): the value MISP holds
    is not the one read, and a rule for it would match neither."""
    if type(value) is str:
        return len(value) <= MAX_VALUE_CHARS and "\ufffd" not in value and _is_text(value)
    return value is None or type(value) in (int, float)


def _malformed(position: int, attribute: Any, event: Any) -> MalformedAttribute:
    """What is wrong with a record that failed the check in `attribute_table`."""
    if not isinstance(attribute, dict):
        return MalformedAttribute(f"record {position} is not an object")
    for key in ("uuid", "type"):
        if not isinstance(attribute.get(key), str):
            return MalformedAttribute(f"record {position} has no {key}")
    if not _is_ascii(attribute["uuid"]):
        return MalformedAttribute(f"record {position} has a uuid that is not a UUID")
    uuid = attribute["uuid"][:64]
    if not _is_text(attribute["type"]):
        return MalformedAttribute(f"attribute {uuid} has a type that is not valid Unicode")
    if not (isinstance(event, dict) and _is_ascii(event.get("uuid"))):
        return MalformedAttribute(f"attribute {uuid} has no event uuid")
    for flag in ("to_ids", "deleted"):
        if not _is_flag(attribute.get(flag)):
            return MalformedAttribute(f"attribute {uuid} has {flag} "
                                      f"{repr(attribute.get(flag))[:20]}, not a flag")
    value = attribute.get("value")
    if type(value) is not str:
        return MalformedAttribute(f"attribute {uuid} has a {type(value).__name__} value, "
                                  "not text")
    if len(value) > MAX_VALUE_CHARS:
        return MalformedAttribute(f"attribute {uuid} has a value of {len(value)} characters, "
                                  f"over the {MAX_VALUE_CHARS} any indicator needs")
    if "\ufffd" in value:
        return MalformedAttribute(f"attribute {uuid} has a value that was not valid UTF-8 "
                                  "(it holds U+FFFD)")
    return MalformedAttribute(f"attribute {uuid} has a value that is not valid Unicode "
                              "(a lone surrogate)")


def _chunk_table(attributes: list[dict[str, Any]], events: list[dict[str, Any]]) -> pd.DataFrame:
    """Checked records -> working table rows: one list comprehension per column, then one
    conversion each. Building a tuple per record, then an object frame converted column
    by column, took longer than parsing MISP's answer."""
    tags, event_tags = _tag_columns(attributes, events)
    values = [attribute.get("value") for attribute in attributes]
    columns = {
        "attribute_uuid": _strings([attribute["uuid"] for attribute in attributes]),
        "event_uuid": _strings([event["uuid"] for event in events]),
        "event_info": _strings([event.get("info") for event in events]),
        "event_date": _dates([event.get("date") for event in events]),
        "attribute_timestamp": _epoch_times([attribute.get("timestamp")
                                             for attribute in attributes]),
        "type": _strings([attribute["type"] for attribute in attributes]),
        "category": _strings([attribute.get("category") for attribute in attributes]),
        "value": _strings([value if value is None or type(value) is str else str(value)
                           for value in values]),
        "to_ids": _flags([attribute.get("to_ids") for attribute in attributes]),
        "deleted": _flags([attribute.get("deleted", False) for attribute in attributes]),
        "tags": _strings(tags),
        "event_tags": _strings(event_tags),
        "event_published": _flags([event.get("published") for event in events]),
        "event_publish_timestamp": _epoch_times([event.get("publish_timestamp")
                                                 for event in events]),
    }
    return pd.DataFrame(columns).astype(_WORKING_COLUMNS)


def _tag_columns(attributes: list[dict[str, Any]],
                 events: list[dict[str, Any]]) -> tuple[list[str], list[str]]:
    """Per row, TAG_SEPARATOR-joined and each name once: every tag (the event's, then the
    attribute's) and the event's own (its tags, then those the attribute inherited).
    Each attribute of a restSearch page carries its own copy of its event: the names of
    an event's tags are read once and reused while the copies compare equal."""
    tags, event_tags = [], []
    read: dict[str, _EventTags] = {}  # event uuid -> what its tags are
    for attribute, event in zip(attributes, events, strict=True):
        on_event = event.get("Tag")
        known = read.get(event["uuid"])
        if known is None or known.tags != on_event:
            known = read[event["uuid"]] = _event_tags(on_event)
        on_attribute = attribute.get("Tag")
        if on_attribute == known.as_inherited:  # the event's tags alone: most attributes
            tags.append(known.joined)
            event_tags.append(known.joined)
            continue
        names = known.names
        own, inherited = _attribute_tags(on_attribute, known)
        tags.append(TAG_SEPARATOR.join(dict.fromkeys(names + own)))
        event_tags.append(TAG_SEPARATOR.join(dict.fromkeys(names + inherited)))
    return tags, event_tags


class _EventTags(NamedTuple):
    tags: Any  # the event's `Tag` as MISP sent it
    names: list[str]
    joined: str  # the names, each once, as the tag columns hold them
    as_inherited: list[dict[str, Any]] | None  # how includeEventTags copies them


def _event_tags(tags: Any) -> _EventTags:
    copies = None
    if isinstance(tags, list) and all(isinstance(tag, dict) for tag in tags):
        copies = [{**tag, "inherited": 1} for tag in tags]
    names = _tag_names(tags)
    return _EventTags(tags, names, TAG_SEPARATOR.join(dict.fromkeys(names)), copies)


def _attribute_tags(tags: Any, event: _EventTags) -> tuple[list[str], list[str]]:
    """`_attribute_tag_names`, with the copies of the event's tags that includeEventTags
    puts first on every attribute compared (in C) rather than read tag by tag: they name
    the event's tags, all inherited."""
    copies = event.as_inherited
    if copies and isinstance(tags, list) and tags[:len(copies)] == copies:
        own, own_inherited = _attribute_tag_names(tags[len(copies):])
        return event.names + own, event.names + own_inherited
    return _attribute_tag_names(tags)


def _tag_names(tags: Any) -> list[str]:
    """Tag names from `[{"name": ...}]` (or `[{"Tag": {...}}]`); the separator can never
    appear inside one."""
    names = []
    for tag in tags or []:
        tag = tag.get("Tag", tag) if isinstance(tag, dict) else None
        name = tag.get("name") if isinstance(tag, dict) else None
        if isinstance(name, str) and name:
            names.append(name.replace(TAG_SEPARATOR, " "))
    return names


def _attribute_tag_names(tags: Any) -> tuple[list[str], list[str]]:
    """`_tag_names` of an attribute's tags, and of those among them marked inherited (from
    the event), in one pass."""
    names, inherited = [], []
    for tag in tags or []:
        if not isinstance(tag, dict):
            continue
        inner = tag.get("Tag", tag)
        name = inner.get("name") if isinstance(inner, dict) else None
        if isinstance(name, str) and name:
            name = name.replace(TAG_SEPARATOR, " ")
            names.append(name)
            if _truthy(tag.get("inherited")):
                inherited.append(name)
    return names, inherited


def _truthy(value: Any) -> bool:
    return value is True or str(value).strip().lower() in ("1", "true")


def _strings(values: list[Any]) -> pd.api.extensions.ExtensionArray:
    """Free text (event info, tags, category) may hold a lone surrogate: arrow refuses the
    column, so only then is each text remade with `?` in its place."""
    try:
        return pd.array(values, dtype="string")
    except UnicodeEncodeError:
        return pd.array([value.encode("utf-8", "replace").decode("utf-8")
                         if isinstance(value, str) else value for value in values],
                        dtype="string")


def _flags(values: list[Any]) -> pd.api.extensions.ExtensionArray:
    """MISP writes flags as true/false, 1/0 or "1"/"0" depending on version; else NA."""
    return pd.array([value if value is True or value is False
                     else None if value is None else _FLAGS.get(str(value).strip().lower())
                     for value in values], dtype="boolean")


def _epoch_times(values: list[Any]) -> pd.DatetimeIndex:
    """Epoch seconds, as text or numbers; else NaT. Plain digits (what MISP sends) are
    parsed by Arrow: `to_numeric` on text costs more than the rest of the column."""
    text = _strings(values)
    arrow = pa.array(text)
    if pc.all(pc.match_substring_regex(arrow, r"^[0-9]{1,18}$")).as_py():
        seconds = pd.array(pc.cast(arrow, pa.int64()), dtype="Int64")
    else:
        seconds = pd.to_numeric(text, errors="coerce")
    return pd.to_datetime(seconds, unit="s", utc=True, errors="coerce")


def _dates(values: list[Any]) -> pd.DatetimeIndex:
    return pd.to_datetime(_strings(values), format="%Y-%m-%d", utc=True, errors="coerce")


def select_pulled(pulled: pd.DataFrame, query: AttributeQuery, pages: int,
                  now: datetime | None = None) -> PullResult:
    """Apply `query` to pulled rows, drop repeats of an attribute and count both."""
    keep, skipped = query_mask(pulled, query, now)
    return _without_repeats(pulled[keep], skipped, pages)


def _without_repeats(kept: pd.DataFrame, skipped: dict[str, int], pages: int) -> PullResult:
    """Rows that passed the query, without repeats of an attribute (the last copy wins:
    offset paging can show an attribute twice if MISP changes mid-pull), counted."""
    repeated = kept["attribute_uuid"].duplicated(keep="last").to_numpy()
    if repeated.any():
        skipped[SKIP_REPEATED] = int(repeated.sum())
        kept = kept[~repeated]
    kept = kept.reindex(columns=list(PULLED_ATTRIBUTE_COLUMNS))
    kept = kept.astype(PULLED_ATTRIBUTE_COLUMNS).reset_index(drop=True)
    by_type = {str(kind): int(count)
               for kind, count in kept["type"].value_counts(sort=False).sort_index().items()}
    return PullResult(kept, pages, by_type, skipped)


def query_mask(frame: pd.DataFrame, query: AttributeQuery,
               now: datetime | None = None) -> tuple[np.ndarray, dict[str, int]]:
    """Rows that satisfy `query`, and per reason how many do not (the first failed check
    counts). A value the source did not give (NA) never fails a check: it cannot prove the
    row wrong, and MISP already applied the same filter."""
    failed = [
        (SKIP_TYPE, _outside(frame["type"], query.types) if query.types else None),
        (SKIP_NOT_IDS, (frame["to_ids"].eq(False) | frame["deleted"].eq(True))
         if query.to_ids_only else None),
        (SKIP_UNPUBLISHED, frame["event_published"].eq(False) if query.published_only
         else None),
        (SKIP_OLD, frame["event_date"].lt(
            pd.Timestamp(oldest_event_date(query.max_event_age_days, now), tz="UTC"))),
        (SKIP_WINDOW, _outside_window(frame, query)),
        (SKIP_NOT_TAGGED, ~_has_tag(frame["event_tags"], query.event_tags)
         if query.event_tags else None),
        (SKIP_EXCLUDED, _has_tag(frame["tags"], query.exclude_tags)
         if query.exclude_tags else None),
    ]
    keep = np.ones(len(frame), dtype=bool)
    skipped: dict[str, int] = {}
    for reason, mask in failed:
        if mask is None:
            continue
        dropped = keep & np.asarray(pd.Series(mask).fillna(False), dtype=bool)
        if dropped.any():
            skipped[reason] = int(dropped.sum())
        keep &= ~dropped
    return keep, skipped


def _outside(values: pd.Series, allowed: list[str]) -> pd.Series:
    return ~values.isin(allowed) & values.notna()


def _outside_window(frame: pd.DataFrame, query: AttributeQuery) -> pd.Series | None:
    if query.window_from is None and query.window_to is None:
        return None
    column = ("event_publish_timestamp" if window_field(query) == "publish_timestamp"
              else "attribute_timestamp")
    times = frame[column]
    outside = pd.Series(False, index=frame.index)
    if query.window_from is not None:
        outside |= times.lt(pd.Timestamp(as_utc(query.window_from))).fillna(False)
    if query.window_to is not None:
        outside |= times.gt(pd.Timestamp(as_utc(query.window_to))).fillna(False)
    return outside


def _tag_pattern(tags: list[str]) -> str:
    """One RE2 pattern matching a TAG_SEPARATOR-joined tag list that holds any of `tags`,
    compared as MISP does: case-insensitively, `%` standing for any run of characters."""
    alternatives = "|".join(re.escape(tag).replace("%", f"[^{TAG_SEPARATOR}]*")
                            for tag in tags)
    return f"(?:^|{TAG_SEPARATOR})(?:{alternatives})(?:{TAG_SEPARATOR}|$)"


def _has_tag(joined_tags: pd.Series, tags: list[str]) -> np.ndarray:
    text = pa.array(joined_tags.astype("string").fillna(""), type=pa.string())
    found = pc.match_substring_regex(text, _tag_pattern(tags), ignore_case=True)
    return found.to_numpy(zero_copy_only=False).astype(bool)


pull_misp_attributes_task = batch_task(pull_misp_attributes, "pull-misp-attributes", remote=True)
