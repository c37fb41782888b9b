"""The normalized detection table every input parser produces, and its companions.

A *detection* is one sensor event (a Flowmon ADS event, a Suricata alert). Its table is
"long": one row per (detection, source IP, destination IP) pair, so a Flowmon event with
five targets is five rows sharing `detection_id`. Parsers never drop a record silently:
whatever they cannot read becomes a `ParseProblem`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

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
