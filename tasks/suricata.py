"""Suricata eve.json alerts become the detection table.

Only `alert` records are detections; flow, dns, stats and the other eve record types are
counted as skipped. An alert's `detection_id` is `<flow_id>-<signature_id>`, so the alerts
one signature raises on one flow are a single detection (one MISP event), and re-reading the
same file yields the same ids. An alert without a flow id is keyed by a hash of its line.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

import pandas as pd

from misp_ndr.errors import InputError
from misp_ndr.task_policy import batch_task
from tasks.detections import (
    HAS_UTC_OFFSET,
    OverlongLine,
    ParsedBatch,
    ParseProblem,
    Priority,
    bounded_lines,
    checked_line,
    empty_detections,
    is_blank,
    normalize_detections,
    record_line,
    times_to_utc,
    unpaired_surrogate,
)

SOURCE_SYSTEM = "suricata"
SEVERITY_PRIORITY: dict[int, Priority] = {1: Priority.HIGH, 2: Priority.MEDIUM, 3: Priority.LOW}
REPEATED_ALERT = "alert repeated on the same flow and signature"
LINE_HASH_CHARS = 16
# ASCII digits only: str.isdigit() also accepts "²" and "٣", which int() then rejects or reads.
_DECIMAL_INTEGER = re.compile(r"[0-9]+")

_ALERT_COLUMNS = [
    "line", "record", "detection_id", "timestamp", "method", "method_description", "priority",
    "src_ip", "dst_ip", "src_port", "dst_port", "protocol", "domain", "hostname", "detail",
    "sensor",
]


class BadRecord(ValueError):
    """A line that is not a usable alert; its message is the problem's reason."""


def severity_priority(severity: Any) -> Priority:
    """Suricata severity 1 high, 2 medium, 3 low; anything else (4+, missing) is info."""
    if isinstance(severity, bool) or not isinstance(severity, int):
        return Priority.INFO
    return SEVERITY_PRIORITY.get(severity, Priority.INFO)


def read_eve_file(path: str | Path) -> ParsedBatch:
    with eve_lines(Path(path)) as lines:
        return parse_eve_lines(lines, origin=Path(path).name)


@contextmanager
def eve_lines(path: Path) -> Iterator[Iterator[bytes | OverlongLine]]:
    """Stream an eve.json file's lines; a file that cannot be opened or read is an
    `InputError` (a bad line is not: the parsers report it and go on). A line over
    `MAX_RECORD_BYTES` is read past, never held: see `bounded_lines`."""
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise InputError(
            f"cannot read Suricata eve file {path}: {exc.strerror or type(exc).__name__}"
        ) from None
    with handle:
        yield _lines(handle, path)


def _lines(handle: BinaryIO, path: Path) -> Iterator[bytes | OverlongLine]:
    try:
        yield from bounded_lines(handle)
    except OSError as exc:
        raise InputError(f"reading Suricata eve file {path} failed: {exc}") from None


def parse_eve_lines(
    lines: Iterable[str | bytes | OverlongLine], origin: str = "eve.json"
) -> ParsedBatch:
    """Alerts of eve JSON lines; each unreadable line becomes a problem naming its number."""
    alerts: list[tuple[Any, ...]] = []
    problems: list[ParseProblem] = []
    skipped: dict[str, int] = {}
    records_read = 0
    for number, raw in enumerate(lines, start=1):
        line = record_line(number, raw)
        if is_blank(line):
            continue
        records_read += 1
        checked = checked_line(f"{origin} line {number}", line)
        if isinstance(checked, ParseProblem):
            problems.append(checked)
            continue
        line = checked
        try:
            record = json_object(line)
            event_type = record.get("event_type")
            if event_type != "alert":
                if not isinstance(event_type, str) or not event_type:
                    raise BadRecord("no event_type")
                reason = f"eve {event_type} record (not an alert)"
                skipped[reason] = skipped.get(reason, 0) + 1
                continue
            alerts.append(_alert_row(number, line, record))
        except BadRecord as exc:
            problems.append(ParseProblem.make(f"{origin} line {number}", str(exc), line))
    batch = _alerts_to_batch(pd.DataFrame(alerts, columns=_ALERT_COLUMNS), origin)
    skipped.update(batch.skipped)
    return ParsedBatch(batch.detections, problems + batch.problems, records_read, skipped)


def json_object(line: str | bytes) -> dict[str, Any]:
    """One JSON object of a line. Bytes must be UTF-8 (json.loads would let encoded
    surrogates through, and guess UTF-16 from two odd bytes)."""
    try:
        record = json.loads(line.decode("utf-8") if isinstance(line, bytes) else line)
    except UnicodeDecodeError:
        raise BadRecord("not UTF-8 text") from None
    except ValueError as exc:
        raise BadRecord(f"not JSON ({exc.msg} at column {exc.colno})") from None
    except RecursionError:
        raise BadRecord("JSON nested too deeply") from None
    if not isinstance(record, dict):
        raise BadRecord("not a JSON object")
    return record


def alert_essentials(record: dict[str, Any]) -> tuple[dict[str, Any], int, str]:
    """An alert record's `alert` object, signature id and timestamp: without them it is
    no usable alert (BadRecord)."""
    alert = record.get("alert")
    if not isinstance(alert, dict):
        raise BadRecord("alert record without an 'alert' object")
    signature_id = integer_or_none(alert.get("signature_id"))
    if signature_id is None:
        raise BadRecord("alert.signature_id is missing or not an integer")
    timestamp = record.get("timestamp")
    if not isinstance(timestamp, str):
        raise BadRecord("timestamp is missing" if timestamp is None else
                        f"timestamp is not text ({json.dumps(timestamp)[:40]})")
    return alert, signature_id, timestamp


def _alert_row(number: int, line: str | bytes, record: dict[str, Any]) -> tuple[Any, ...]:
    alert, signature_id, timestamp = alert_essentials(record)
    flow_id = integer_or_none(record.get("flow_id"))
    row = (
        number, line, _detection_id(flow_id, signature_id, line), timestamp, str(signature_id),
        stripped_text(alert.get("signature")), severity_priority(alert.get("severity")).value,
        stripped_text(record.get("src_ip")), stripped_text(record.get("dest_ip")),
        _port(record.get("src_port")), _port(record.get("dest_port")),
        stripped_text(record.get("proto")), dns_name(record.get("dns")), host_name(record),
        stripped_text(alert.get("category")), stripped_text(record.get("host")),
    )
    if (reason := unpaired_surrogate(row[3:])) is not None:
        raise BadRecord(reason)
    return row


def _detection_id(flow_id: int | None, signature_id: int, line: str | bytes) -> str:
    if flow_id is not None:
        return f"{flow_id}-{signature_id}"
    data = line.encode("utf-8") if isinstance(line, str) else line
    return hashlib.sha256(data.strip()).hexdigest()[:LINE_HASH_CHARS]


def integer_or_none(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and _DECIMAL_INTEGER.fullmatch(value.strip()):
        return int(value)
    return None


def _port(value: Any) -> int | None:
    port = integer_or_none(value)
    return port if port is not None and 0 <= port <= 65535 else None


def stripped_text(value: Any) -> str | None:
    return value.strip() or None if isinstance(value, str) else None


def host_name(record: dict[str, Any]) -> str | None:
    """HTTP Host, else TLS SNI: the name the client asked the server for."""
    http, tls = record.get("http"), record.get("tls")
    hostname = stripped_text(http.get("hostname")) if isinstance(http, dict) else None
    return hostname or (stripped_text(tls.get("sni")) if isinstance(tls, dict) else None)


def dns_name(dns: Any) -> str | None:
    """The queried name of a DNS alert: eve v2 `query[]`, v3 `queries[]`, or `rrname`.
    When an alert carries several questions, the first is kept."""
    if not isinstance(dns, dict):
        return None
    for key in ("query", "queries"):
        questions = dns.get(key)
        if isinstance(questions, list):
            for question in questions:
                name = stripped_text(question.get("rrname")) if isinstance(question, dict) else None
                if name:
                    return name.rstrip(".").lower()
    name = stripped_text(dns.get("rrname"))
    return name.rstrip(".").lower() if name else None


def _alerts_to_batch(alerts: pd.DataFrame, origin: str) -> ParsedBatch:
    """Column-wise: timestamps to UTC (bad ones become problems), then repeats merged."""
    if alerts.empty:
        return ParsedBatch(empty_detections())
    with_offset = alerts["timestamp"].str.contains(HAS_UTC_OFFSET, regex=True)
    times = times_to_utc(alerts["timestamp"].where(with_offset), "UTC")
    unreadable = times.isna()
    problems = [
        ParseProblem.make(f"{origin} line {number}",
                          f"unreadable timestamp {stamp[:40]!r} (want ISO 8601 with a UTC offset)",
                          line)
        for number, stamp, line in zip(
            alerts.loc[unreadable, "line"], alerts.loc[unreadable, "timestamp"],
            alerts.loc[unreadable, "record"], strict=True,
        )
    ]
    rows = alerts.assign(time=times, source_system=SOURCE_SYSTEM)[~unreadable]
    merged = _merge_repeated_alerts(rows)
    skipped = {REPEATED_ALERT: len(rows) - len(merged)} if len(merged) < len(rows) else {}
    return ParsedBatch(normalize_detections(merged), problems=problems, skipped=skipped)


def _merge_repeated_alerts(rows: pd.DataFrame) -> pd.DataFrame:
    """One row per (detection, source, destination): the earliest time, and per column the
    first value any of the repeats had (a later alert may carry the HTTP host)."""
    key = ["detection_id", "src_ip", "dst_ip"]
    ordered = rows.sort_values("time", kind="stable")
    return ordered.groupby(key, sort=False, dropna=False).first().reset_index()


read_suricata_alerts_task = batch_task(read_eve_file, "read-suricata-alerts")
