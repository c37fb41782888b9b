"""The normalized detection table every input parser produces, and its companions.

A *detection* is one sensor event (a Flowmon ADS event, a Suricata alert). Its table is
"long": one row per (detection, source IP, destination IP) pair, so a Flowmon event with
five targets is five rows sharing `detection_id`. Parsers never drop a record silently:
whatever they cannot read becomes a `ParseProblem`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

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
