"""Hits from any other sensor: a file of (indicator value, time[, sensor]) records.

SIEMs, proxies and scripts export in whatever they have, so three formats are accepted, told
apart by the first non-blank character: `[` a JSON array of objects, `{` JSON lines, anything
else CSV with a header row. Names (columns or keys) are matched case-insensitively and without
surrounding spaces: `value`, `time` and the optional `sensor`; anything else is ignored.

The indicator is named by value only (the file cannot know MISP's attribute UUIDs); the value
is kept as written, canonicalization happens when hits are matched to indicators. A time is
ISO 8601 (an offset is honoured, none means UTC) or Unix epoch seconds.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd

from misp_ndr.errors import InputError
from misp_ndr.task_policy import batch_task
from tasks.detections import ParseProblem, checked_line, times_to_utc, unpaired_surrogate
from tasks.sighting_hits import HitBatch, normalize_hits
from tasks.suricata import BadRecord, json_object

VALUE, TIME, SENSOR = "value", "time", "sensor"
TIME_HINT = "want ISO 8601 or Unix epoch seconds"
_EPOCH_SECONDS = r"\d+(?:\.\d+)?"
# Beyond this (year 2255) the hit table's nanosecond times overflow; in practice a bigger
# number is epoch milliseconds written by mistake, which must not become a far-future time.
_MAX_EPOCH_SECONDS = 9_000_000_000
_FIRST_CHARACTER = re.compile(r"\s*(\S)")
# A CSV file's physical lines, ends kept, split as the csv module wants them (newline=""):
# at \r\n, \r or \n. Yielded one at a time, where io.StringIO would hold the whole text
# again at 4 bytes a character.
_PHYSICAL_LINE = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+")

# One input record: its line or item number, the raw value / time / sensor (str or None) and
# the record itself, kept only to quote it in a problem.
_Row = tuple[int, Any, Any, Any, Any]
_Problem = tuple[int, str, Any]  # number, reason, record
_ROW_COLUMNS = ["number", VALUE, TIME, SENSOR, "record"]


def read_hit_file(path: str | Path, default_sensor: str = "csv") -> HitBatch:
    """The hits of a CSV / JSON / JSON lines file; a file that cannot be read at all, or
    whose format is unusable as a whole, is an `InputError` naming it."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(
            f"cannot read hit file {path}: {exc.strerror or type(exc).__name__}"
        ) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"hit file {path} is not UTF-8 text (byte {exc.start})") from None
    del data  # the text is all we need: half the memory while parsing a big file
    return _parse(text, path.name, str(path), default_sensor)


def parse_hit_text(text: str, origin: str, default_sensor: str = "csv") -> HitBatch:
    """The hits of one file's text; `origin` names it in problems and in each hit's origin."""
    return _parse(text, origin, origin, default_sensor)


def _parse(text: str, origin: str, label: str, default_sensor: str) -> HitBatch:
    """`label` names the file in an `InputError` (its path when read from disk)."""
    text = text.removeprefix("\ufeff")
    first = _FIRST_CHARACTER.match(text)
    if first is None:  # an export with nothing in it: no hits, nothing wrong
        return HitBatch(normalize_hits(pd.DataFrame()))
    if first.group(1) == "[":
        rows, problems = _json_array_rows(text, label)
        unit = "item"
    elif first.group(1) == "{":
        rows, problems = _json_line_rows(text)
        unit = "line"
    else:
        rows, problems = _csv_rows(text, label)
        unit = "line"
    return _rows_to_batch(rows, problems, f"{origin} {unit}", default_sensor)


def _json_array_rows(text: str, label: str) -> tuple[list[_Row], list[_Problem]]:
    try:
        items = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"hit file {label} is not a valid JSON array ({exc.msg} at line "
                         f"{exc.lineno} column {exc.colno})") from None
    except RecursionError:
        raise InputError(f"hit file {label} is not a usable JSON array (nested too deeply)"
                         ) from None
    rows: list[_Row] = []
    problems: list[_Problem] = []
    for number, item in enumerate(items, start=1):
        if not isinstance(item, dict):
            problems.append((number, "not a JSON object", json.dumps(item, ensure_ascii=False)))
            continue
        try:
            rows.append(_json_row(number, item, item))
        except BadRecord as exc:
            problems.append((number, str(exc), item))
    return rows, problems


def _json_line_rows(text: str) -> tuple[list[_Row], list[_Problem]]:
    """Split on newlines only: str.splitlines would also break at U+2028 and the like,
    which JSON allows raw inside strings."""
    rows: list[_Row] = []
    problems: list[_Problem] = []
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        checked = checked_line("", line)
        if isinstance(checked, ParseProblem):
            problems.append((number, checked.reason, checked.excerpt))
            continue
        try:
            rows.append(_json_row(number, json_object(line), line))
        except BadRecord as exc:
            problems.append((number, str(exc), line))
    return rows, problems


def _json_row(number: int, record: dict[str, Any], quoted: Any) -> _Row:
    """A JSON number time is kept as its JSON text, so one column holds every time and a
    `true` or a list shows in the problem as the file wrote it."""
    fields: dict[str, Any] = {}
    for key, field_value in record.items():
        fields.setdefault(key.strip().lower(), field_value)
    value = fields.get(VALUE)
    if value is not None and not isinstance(value, str):
        raise BadRecord(f"value is not a string ({json.dumps(value)[:40]})")
    time = fields.get(TIME)
    time_text = time if time is None or isinstance(time, str) else json.dumps(time)
    sensor = fields.get(SENSOR)
    sensor = sensor if isinstance(sensor, str) else None
    if (reason := unpaired_surrogate([value, time_text, sensor])) is not None:
        raise BadRecord(reason)
    return number, value, time_text, sensor, quoted


def _csv_rows(text: str, label: str) -> tuple[list[_Row], list[_Problem]]:
    """Rows with their first file line (header = 1). Rows of nothing but empty cells (the
    trailing `,,,` of spreadsheet exports) are blank lines, not records. The csv module
    cannot resume after its own error (a field over its size limit), so that one is an
    `InputError` for the whole file."""
    reader = csv.reader(match.group() for match in _PHYSICAL_LINE.finditer(text))
    try:
        value_at, time_at, sensor_at = _csv_columns(reader, label)
        rows: list[_Row] = []
        previous_end = reader.line_num
        for row in reader:
            number, previous_end = previous_end + 1, reader.line_num
            if not _has_content(row):
                continue
            width = len(row)
            rows.append((
                number,
                row[value_at] if value_at < width else None,
                row[time_at] if time_at < width else None,
                row[sensor_at] if sensor_at is not None and sensor_at < width else None,
                row,
            ))
    except csv.Error as exc:
        raise InputError(f"hit file {label} is not readable CSV at line {reader.line_num}: "
                         f"{exc}") from None
    return rows, []


def _csv_columns(reader: Iterator[list[str]], label: str) -> tuple[int, int, int | None]:
    """Positions of the value, time and (optional) sensor columns in the header row."""
    header = next((row for row in reader if _has_content(row)), [])
    columns: dict[str, int] = {}
    for index, name in enumerate(header):
        columns.setdefault(name.strip().lower(), index)
    missing = [name for name in (VALUE, TIME) if name not in columns]
    if missing:
        found = ", ".join(repr(name.strip()) for name in header) or "nothing"
        raise InputError(f"hit file {label} has no {' or '.join(missing)} column in its CSV "
                         f"header (found {found})")
    return columns[VALUE], columns[TIME], columns.get(SENSOR)


def _has_content(row: list[str]) -> bool:
    return any(cell.strip() for cell in row)


def _rows_to_batch(
    rows: list[_Row], unparsed: list[_Problem], where: str, default_sensor: str
) -> HitBatch:
    """Column-wise: values and times checked for every row at once; a row with no value or
    an unreadable time becomes a problem, the others hits. `unparsed` are the records that
    did not even give a row."""
    frame = pd.DataFrame(rows, columns=_ROW_COLUMNS)
    values = _stripped(frame[VALUE])
    raw_times = _stripped(frame[TIME])
    times = hit_times(raw_times)
    no_value = values.isna().to_numpy()
    bad_time = times.isna().to_numpy() & ~no_value
    problems = unparsed + [(number, "no value", record) for number, record in zip(
        frame.loc[no_value, "number"], frame.loc[no_value, "record"], strict=True)]
    problems += [
        (number, _time_reason(stamp), record) for number, stamp, record in zip(
            frame.loc[bad_time, "number"], raw_times[bad_time], frame.loc[bad_time, "record"],
            strict=True)
    ]
    usable = ~(no_value | bad_time)
    hits = pd.DataFrame({
        "time": times[usable],
        "sensor": _stripped(frame[SENSOR]).fillna(default_sensor)[usable],
        "value": values[usable],
        "attribute_uuid": pd.NA,
        "origin": where + " " + frame.loc[usable, "number"].astype(str),
    })
    return HitBatch(
        hits=normalize_hits(hits),
        problems=[ParseProblem.make(f"{where} {number}", reason, _excerpt(record))
                  for number, reason, record in sorted(problems, key=lambda item: item[0])],
        records_read=len(rows) + len(unparsed),
    )


def hit_times(texts: pd.Series) -> pd.Series:
    """Time texts to UTC, NaT where unreadable: all digits (a decimal fraction allowed) is
    Unix epoch seconds, anything else ISO 8601 (an offset honoured, none meaning UTC)."""
    texts = texts.astype("string").str.strip()
    result = pd.Series(pd.NaT, index=texts.index, dtype="datetime64[ns, UTC]")
    epoch = texts.str.fullmatch(_EPOCH_SECONDS).fillna(False).to_numpy(dtype=bool)
    if epoch.any():
        seconds = pd.to_numeric(texts[epoch], errors="coerce").astype("float64")
        result[epoch] = pd.to_datetime(seconds.where(seconds < _MAX_EPOCH_SECONDS), unit="s",
                                       utc=True)
    iso = ~epoch & texts.notna().to_numpy()
    if iso.any():
        result[iso] = times_to_utc(texts[iso], "UTC")
    return result


def _time_reason(stamp: Any) -> str:
    if stamp is pd.NA:
        return f"no time ({TIME_HINT})"
    return f"unreadable time {stamp[:40]!r} ({TIME_HINT})"


def _stripped(column: pd.Series) -> pd.Series:
    """Text with surrounding spaces removed; empty becomes NA."""
    return column.astype("string").str.strip().replace("", pd.NA)


def _excerpt(record: str | list[str] | dict[str, Any]) -> str:
    """The record as the report quotes it: a JSON line as read, a CSV row re-joined, an
    array item as JSON."""
    if isinstance(record, str):
        return record
    if isinstance(record, list):
        return ",".join(record)
    return json.dumps(record, ensure_ascii=False)


read_hit_file_task = batch_task(read_hit_file, "read-hit-file")
