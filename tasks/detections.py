"""The normalized detection table every input parser produces, and its companions.

A *detection* is one sensor event (a Flowmon ADS event, a Suricata alert). Its table is
"long": one row per (detection, source IP, destination IP) pair, so a Flowmon event with
five targets is five rows sharing `detection_id`. Parsers never drop a record silently:
whatever they cannot read becomes a `ParseProblem`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from typing import BinaryIO

import numpy as np
import pandas as pd


class Priority(StrEnum):
    """Detection priority, the Flowmon ADS scale; Suricata severities map onto it."""

    CRITICAL = "critical"
    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"
    INFO = "info"


PRIORITY_ORDER = [Priority.INFO, Priority.LOW, Priority.MEDIUM, Priority.HIGH, Priority.CRITICAL]

# column -> pandas dtype. Strings are nullable (pd.NA where the sensor gave nothing).
DETECTION_COLUMNS: dict[str, str] = {
    "detection_id": "string",  # unique within source_system
    "source_system": "string",  # "flowmon" | "suricata"
    "time": "datetime64[ns, UTC]",
    "method": "string",  # short code: ADS method (SCANS) or Suricata signature id
    "method_description": "string",  # ADS method description or Suricata signature text
    "priority": "string",  # a Priority value
    "src_ip": "string",
    "dst_ip": "string",
    "src_port": "Int32",
    "dst_port": "Int32",
    "protocol": "string",
    "domain": "string",  # a DNS query name or a domain blacklist hit -> MISP `domain`
    "hostname": "string",  # an HTTP Host or TLS SNI (a host's FQDN) -> MISP `hostname`
    "detail": "string",  # free text
    "sensor": "string",  # the probe that saw it: ADS flow source, Suricata sensor-name
}


def empty_detections() -> pd.DataFrame:
    """A zero-row table with the normalized columns and dtypes."""
    return pd.DataFrame({name: pd.Series(dtype=dtype) for name, dtype in DETECTION_COLUMNS.items()})


def normalize_detections(frame: pd.DataFrame) -> pd.DataFrame:
    """Reorder and cast a parser's output to the normalized schema (missing columns -> NA)."""
    out = frame.reindex(columns=list(DETECTION_COLUMNS))
    return out.astype(DETECTION_COLUMNS).reset_index(drop=True)


@dataclass(frozen=True)
class ParseProblem:
    """One input record that could not be used: where it was and why."""

    source: str  # e.g. "eve.json line 12", "flowmon batch line 3", "flowmon api event 991"
    reason: str
    excerpt: str = ""  # the start of the offending record, truncated, for the report

    @staticmethod
    def make(source: str, reason: str, record: str | bytes = "") -> ParseProblem:
        text = record.decode("utf-8", "replace") if isinstance(record, bytes) else record
        return ParseProblem(source, reason, text[:120])


# One input record (a line of eve.json, of a Flowmon batch, of a JSON lines hit file) longer
# than this is refused, as one problem, without being parsed or even held in memory: a real
# record is far smaller (an ADS event naming 100,000 targets is under 2 MB), and parsing a
# huge line is what costs memory (a JSON array of empty objects takes 20 times its text).
# Bytes for files; characters for text handed over already decoded (webhook payloads).
MAX_RECORD_BYTES = 8 * 1024 * 1024
_SKIP_CHUNK_BYTES = 1 << 20
_UTF8_BOM = "\ufeff"


@dataclass(frozen=True)
class OverlongLine:
    """A line past `MAX_RECORD_BYTES`, read past rather than kept: its start and length."""

    head: bytes
    length: int


def bounded_lines(
    handle: BinaryIO, limit: int = MAX_RECORD_BYTES
) -> Iterator[bytes | OverlongLine]:
    """The lines of a binary file, but a line longer than `limit` bytes (newline aside) comes
    as an `OverlongLine`: memory stays within `limit` whatever the file holds."""
    while line := handle.readline(limit + 1):
        if len(line) <= limit or line.endswith(b"\n"):
            yield line
            continue
        head, length = line[:120], len(line)
        del line
        while (rest := handle.readline(_SKIP_CHUNK_BYTES)) and not rest.endswith(b"\n"):
            length += len(rest)
        length += len(rest.rstrip(b"\r\n"))
        yield OverlongLine(head, length)


def record_line(number: int, raw: str | bytes | OverlongLine) -> str | bytes | OverlongLine:
    """One input line without its line end, and without the byte order mark some Windows
    tools put before line 1 (it would otherwise stick to the first record's first field)."""
    if isinstance(raw, OverlongLine):
        return raw
    if isinstance(raw, bytes):
        line = raw.rstrip(b"\r\n")
        return line.removeprefix(_UTF8_BOM.encode()) if number == 1 else line
    text = raw.rstrip("\r\n")
    return text.removeprefix(_UTF8_BOM) if number == 1 else text


def is_blank(line: str | bytes | OverlongLine) -> bool:
    return not isinstance(line, OverlongLine) and not line.strip()


def checked_line(
    source: str, line: str | bytes | OverlongLine, limit: int = MAX_RECORD_BYTES
) -> str | bytes | ParseProblem:
    """The line, when within the record size limit; else the problem naming it."""
    if isinstance(line, OverlongLine):
        return ParseProblem.make(source, _overlong_reason(line.length, limit), line.head)
    if len(line) > limit:
        return ParseProblem.make(source, _overlong_reason(len(line), limit), line[:120])
    return line


def _overlong_reason(length: int, limit: int) -> str:
    return (f"record of {length} bytes is longer than the {limit}-byte limit for one record: "
            "not read")


_SURROGATE = re.compile("[\ud800-\udfff]")


def unpaired_surrogate(values: Iterable[object]) -> str | None:
    """Why a record's texts are not Unicode, or None. JSON may escape half of a UTF-16 pair
    ("\\ud800"), which decodes to a string no UTF-8 encoder (Arrow, MISP) accepts: one such
    field would otherwise fail the whole batch far from its line."""
    for value in values:
        if isinstance(value, str) and not value.isascii() and (
                found := _SURROGATE.search(value)):
            return f"text with an unpaired UTF-16 surrogate (\\u{ord(found.group()):04x})"
    return None


@dataclass
class ParsedBatch:
    """What a parser returns: the detections it read and the records it could not."""

    detections: pd.DataFrame
    problems: list[ParseProblem] = field(default_factory=list)
    records_read: int = 0  # input records seen (lines / events), parseable or not
    skipped: dict[str, int] = field(default_factory=dict)  # deliberate skips: reason -> count


# Times: every input ends as UTC in the detection table.
HAS_UTC_OFFSET = r"(?:Z|[+-]\d\d:?\d\d)$"
# The detection table keeps nanosecond times (years 1677-2262); a day of margin for the zone
# shift. A time outside cannot be a real detection: it is unreadable, not a crash.
_TABLE_TIME_RANGE = (
    pd.Timestamp.min + pd.Timedelta(days=1), pd.Timestamp.max - pd.Timedelta(days=1)
)
_TABLE_TIME_RANGE_UTC = tuple(bound.tz_localize("UTC") for bound in _TABLE_TIME_RANGE)


def times_to_utc(texts: pd.Series, timezone: str) -> pd.Series:
    """ISO-like times to UTC; NaT where unreadable.

    A time with a UTC offset keeps it; a time without one is the appliance clock in
    `timezone`. In the autumn DST overlap the earlier (summer time) instant is taken, and a
    time inside the spring gap moves forward: ADS writes local times without offsets, so
    neither can be told apart, and one hour off beats dropping the detection.
    """
    texts = texts.astype("string").str.strip()
    result = pd.Series(pd.NaT, index=texts.index, dtype="datetime64[ns, UTC]")
    with_offset = texts.str.contains(HAS_UTC_OFFSET, regex=True).fillna(False).astype(bool)
    if with_offset.any():
        aware = pd.to_datetime(texts[with_offset], format="ISO8601", utc=True, errors="coerce")
        result[with_offset] = aware.where(aware.between(*_TABLE_TIME_RANGE_UTC))
    naive = ~with_offset & texts.notna()
    if naive.any():
        local = pd.to_datetime(texts[naive], format="ISO8601", errors="coerce")
        local = local.where(local.between(*_TABLE_TIME_RANGE))
        result[naive] = local.dt.tz_localize(
            timezone, ambiguous=np.ones(len(local), dtype=bool), nonexistent="shift_forward"
        ).dt.tz_convert("UTC")
    return result
