"""The event batch Flowmon ADS hands a custom script on standard input.

Each line is one event, in one of four layouts told apart per line (a batch may mix them):

- JSON (ADS 12.5+), a line starting with '{'. ADS events have the keys `id, timestamp, type,
  typeDesc, severity, source, targets, detail`; IDS events have no `timestamp` but
  `id, firstSeen, category, severity, srcIp, dstIp, signatureName`.
- Tab-separated, empty fields written as one space, told apart by field count:
  15 fields, the classic ADS line; 16 or 17, the extended ADS line (ADS 12.5+);
  14, an IDS event.

Field positions (index from 0) as public Flowmon scripts read them; the columns not listed
are ignored:

  layout    id time method description priority detail ports protocols source targets
  classic    0   1    3        4          6        7      8      9        10      12
  extended   0   1    3        4          8        9      -      -        12      14
  IDS        0   1    -       12         13        9      -      -         3       5

The classic line's field 13 (data feed) and the JSON `netFlowSource` name the probe that saw
the event (the detection's `sensor`). Extended-line ports and protocols are not read: their
positions are unverified. IDS events get the method code `IDSP` (the ADS name of IDS events);
a numeric IDS severity is read on Suricata's scale (1 high, 2 medium, 3 low), the IDS probe
being Suricata-based.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd

from misp_ndr.errors import InputError
from misp_ndr.task_policy import batch_task
from tasks.detections import (
    OverlongLine,
    ParsedBatch,
    ParseProblem,
    Priority,
    bounded_lines,
    checked_line,
    is_blank,
    record_line,
    unpaired_surrogate,
)
from tasks.flowmon import (
    ADS_RECORD_COLUMNS,
    address_list_text,
    ads_records_to_batch,
    check_timezone,
    event_id_problem,
    scalar_text,
    text_or_none,
)
from tasks.suricata import severity_priority

IDS_METHOD = "IDSP"

# field count -> {record column: field index}
TSV_LAYOUTS: dict[int, dict[str, int]] = {
    15: {"detection_id": 0, "time": 1, "method": 3, "method_description": 4, "priority": 6,
         "detail": 7, "ports": 8, "protocol": 9, "src_ip": 10, "targets": 12, "sensor": 13},
    16: {"detection_id": 0, "time": 1, "method": 3, "method_description": 4, "priority": 8,
         "detail": 9, "src_ip": 12, "targets": 14},
    17: {"detection_id": 0, "time": 1, "method": 3, "method_description": 4, "priority": 8,
         "detail": 9, "src_ip": 12, "targets": 14},
    14: {"detection_id": 0, "time": 1, "method_description": 12, "priority": 13, "detail": 9,
         "src_ip": 3, "targets": 5},
}
IDS_FIELD_COUNT = 14
_IDS_SEVERITY_NAMES = {str(number): severity_priority(number).value for number in range(1, 4)}


class _BadLine(ValueError):
    """A line that cannot be read as an event; its message is the problem's reason."""


def read_custom_script_batch(path: str | Path, timezone: str = "UTC") -> ParsedBatch:
    """A batch saved to a file (the CLI spools standard input there first), streamed line
    by line: a line over `MAX_RECORD_BYTES` is reported, never held in memory."""
    path = Path(path)
    check_timezone(timezone)
    try:
        with path.open("rb") as handle:
            return parse_custom_script_lines(
                _decoded(bounded_lines(handle)), origin=path.name, timezone=timezone)
    except OSError as exc:
        raise InputError(
            f"cannot read Flowmon batch {path}: {exc.strerror or type(exc).__name__}"
        ) from None


def _decoded(lines: Iterable[bytes | OverlongLine]) -> Iterator[str | OverlongLine]:
    """ADS text is UTF-8; a stray byte becomes U+FFFD rather than costing the event."""
    for line in lines:
        yield line if isinstance(line, OverlongLine) else line.decode("utf-8", "replace")


def parse_custom_script_batch(
    text: str, origin: str = "flowmon batch", timezone: str = "UTC"
) -> ParsedBatch:
    """The detections of one custom-script batch. `timezone` is the appliance clock's IANA
    zone: ADS writes local times without an offset."""
    return parse_custom_script_lines(text.split("\n"), origin, timezone)


def parse_custom_script_lines(
    lines: Iterable[str | OverlongLine], origin: str = "flowmon batch", timezone: str = "UTC"
) -> ParsedBatch:
    """`parse_custom_script_batch` over lines (split on newlines only, as ADS writes them)."""
    check_timezone(timezone)
    json_records: list[dict[str, Any]] = []
    tsv_lines: dict[int, list[tuple[int, str, list[str]]]] = {n: [] for n in TSV_LAYOUTS}
    problems: list[ParseProblem] = []
    records_read = 0
    for number, raw in enumerate(lines, start=1):
        line = record_line(number, raw)
        if is_blank(line):
            continue
        records_read += 1
        where = f"{origin} line {number}"
        checked = checked_line(where, line)
        if isinstance(checked, ParseProblem):
            problems.append(checked)
            continue
        assert isinstance(checked, str)  # text lines in, text lines out
        line = checked
        try:
            if line.lstrip().startswith("{"):
                json_records.append(_json_record(number, where, line))
            else:
                fields = line.split("\t")
                if len(fields) not in TSV_LAYOUTS:
                    raise _BadLine(
                        f"{len(fields)} tab-separated fields; expected 14 (IDS event), "
                        "15 (classic ADS event) or 16-17 (extended ADS event)"
                    )
                tsv_lines[len(fields)].append((number, line, fields))
        except _BadLine as exc:
            problems.append(ParseProblem.make(where, str(exc), line))
    frames = [_tsv_records(count, lines, origin) for count, lines in tsv_lines.items() if lines]
    if json_records or not frames:
        frames.append(pd.DataFrame(json_records, columns=ADS_RECORD_COLUMNS))
    records = pd.concat(frames, ignore_index=True)  # ordered by line in ads_records_to_batch
    is_ids = records["method"].eq(IDS_METHOD).fillna(False).astype(bool)
    records.loc[is_ids, "priority"] = _ids_priority(records.loc[is_ids, "priority"])
    batch = ads_records_to_batch(records, timezone, Priority.INFO)
    return ParsedBatch(batch.detections, problems + batch.problems, records_read, batch.skipped)


def _tsv_records(
    field_count: int, lines: list[tuple[int, str, list[str]]], origin: str
) -> pd.DataFrame:
    """All lines of one layout at once: a table of fields, columns picked by position."""
    fields = pd.DataFrame([line_fields for _, _, line_fields in lines])
    records = pd.DataFrame(
        {column: fields[index] for column, index in TSV_LAYOUTS[field_count].items()}
    ).reindex(columns=ADS_RECORD_COLUMNS)
    records["position"] = [number for number, _, _ in lines]
    records["where"] = origin + " line " + records["position"].astype("string")
    records["record"] = [line for _, line, _ in lines]
    if field_count == IDS_FIELD_COUNT:
        records["method"] = IDS_METHOD
    return records


def _ids_priority(severity: pd.Series) -> pd.Series:
    """A numeric IDS severity on Suricata's scale (4 and up is info); a name as it is."""
    text = severity.astype("string").str.strip()
    numeric = text.str.fullmatch(r"\d+").fillna(False).astype(bool)
    on_suricata_scale = text.map(_IDS_SEVERITY_NAMES).fillna(Priority.INFO.value)
    return on_suricata_scale.where(numeric, text).astype("string")


def _json_record(number: int, where: str, line: str) -> dict[str, Any]:
    try:
        event = json.loads(line)
    except ValueError as exc:
        raise _BadLine(f"not JSON ({exc})") from None
    except RecursionError:
        raise _BadLine("JSON nested too deeply") from None
    if not isinstance(event, dict):
        raise _BadLine("not a JSON object")
    if (reason := event_id_problem(event.get("id"))) is not None:
        raise _BadLine(reason)
    keys = ADS_JSON_KEYS if "timestamp" in event else IDS_JSON_KEYS
    return _keyed_json_record(number, where, line, event, keys)


# JSON batch keys -> record columns: ADS events, and IDS events (which have no timestamp)
ADS_JSON_KEYS = {"detection_id": "id", "time": "timestamp", "method": "type",
                 "method_description": "typeDesc", "priority": "severity", "detail": "detail",
                 "src_ip": "source", "targets": "targets", "sensor": "netFlowSource"}
IDS_JSON_KEYS = {"detection_id": "id", "time": "firstSeen", "method_description": "category",
                 "priority": "severity", "detail": "signatureName", "src_ip": "srcIp",
                 "targets": "dstIp"}
# How a JSON value becomes a record column: free text by default. A wrong-typed time or
# priority is kept as written so its problem shows it ("unreadable time '[]'").
_READERS = {"src_ip": address_list_text, "targets": address_list_text,
            "detection_id": text_or_none, "time": text_or_none, "priority": text_or_none}


def _keyed_json_record(
    number: int, where: str, line: str, event: dict[str, Any], keys: dict[str, str]
) -> dict[str, Any]:
    record: dict[str, Any] = {"position": number, "where": where, "record": line,
                              "method": IDS_METHOD, "protocol": None, "ports": None}
    for column, key in keys.items():
        record[column] = _READERS.get(column, scalar_text)(event.get(key))
    if (reason := unpaired_surrogate(value for column, value in record.items()
                                     if column != "record")) is not None:
        raise _BadLine(reason)
    return record


read_flowmon_batch_task = batch_task(read_custom_script_batch, "read-flowmon-batch")
