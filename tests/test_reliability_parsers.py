"""Hostile input for every parser: good records all come through, each bad one is one problem.

Each parser gets generated batches (hypothesis) of good records with faulty ones mixed in:
random bytes, truncated JSON, wrong JSON types and garbage in each field, missing fields,
deeply nested JSON, non-UTF-8, NUL, a byte order mark, CRLF line ends, blank lines. A fault
either makes a record bad (the parser must report exactly one problem naming its line, item
or event) or leaves it good (it must come through under its key). Nothing may escape as an
exception, nothing may be dropped without a problem. A 64 MiB single line is refused with a
clear problem, and the memory that costs is measured (tracemalloc), never the time.

The parsers are read the way the jobs read them: files through `read_*`, the Flowmon REST API
answer as the decoded JSON list `parse_api_events` receives.
"""

from __future__ import annotations

import csv
import io
import json
import tracemalloc
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import responses
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deployments.definitions import Job
from misp_ndr.config import FlowmonSettings
from misp_ndr.errors import InputError, RejectedError
from misp_ndr.webhook.payloads import check_payload
from tasks.csv_hits import read_hit_file
from tasks.detections import MAX_RECORD_BYTES, Priority
from tasks.flowmon import FlowmonClient, parse_api_events
from tasks.flowmon_batch import parse_custom_script_batch, read_custom_script_batch
from tasks.flowmon_hits import blacklist_hits
from tasks.suricata import parse_eve_lines, read_eve_file
from tasks.suricata_hits import read_suricata_hits
from tests.reliability import Recorder

JOB = "parsers"
EXAMPLES = 10  # batches per parser and fault: under a second each
# Derandomized: the same examples every run, so the generated reliability table (and CI)
# is stable; raise max_examples locally to explore further.
BATCH_SETTINGS = settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
                          suppress_health_check=[HealthCheck.too_slow,
                                                 HealthCheck.data_too_large])
HUGE_LINE_BYTES = 64 << 20
EMPTY = " "  # Flowmon writes an empty tab-separated field as one space
FLOWMON_URL = "https://flowmon.example"
UNTIL = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)

# --- values ---------------------------------------------------------------------------------

_SCALARS = (st.none() | st.booleans() | st.integers() | st.text(max_size=12)
            | st.floats(allow_nan=False, allow_infinity=False))
ANY_JSON = st.recursive(_SCALARS, lambda inner: st.lists(inner, max_size=3)
                        | st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=8)
NOT_TEXT = (st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
            | st.lists(_SCALARS, max_size=3) | st.dictionaries(st.text(max_size=4), _SCALARS,
                                                                  max_size=2))
CONTAINERS = st.lists(_SCALARS, max_size=3) | st.dictionaries(st.text(max_size=4), _SCALARS,
                                                              min_size=1, max_size=2)
# Free text of one field: no field or line separator, anything else (NUL, U+2028, accents).
FIELD_TEXT = st.text(st.characters(blacklist_characters="\t\n\r", codec="utf-8"), max_size=30)
NOT_A_TIME = st.sampled_from(["soon", "2026-13-45 08:15:00", "20.11.2026 08:15", "yesterday",
                              "9999-12-31 00:00:00", "-5", "1e5", "0x5f"])
NOT_A_PRIORITY = st.sampled_from(["Severe", "urgent", "6", "0", "1.5", "high!", "?"])
NOT_A_UUID = st.sampled_from(["x", "0b0e5d8a-1f7d-4a55-9c3b", "not-a-uuid", "12345"])


def nested(depth: int, leaf: str = "0") -> str:
    return "[" * depth + leaf + "]" * depth


# --- the parsers' formats -------------------------------------------------------------------


@dataclass
class Record:
    """One record of a generated batch: its encoded form and what the parser must do."""

    data: Any  # dict (JSON formats) or list of fields (tab-separated, CSV)
    key: Any  # what the parsed output holds for it when good
    good: bool
    raw: bytes | None = None  # bytes written as they are instead of encoding `data`


@dataclass(frozen=True)
class Format:
    """How to make good records of one parser's input, break them, write and read a batch."""

    name: str
    good: Callable[[int], Record]
    encode: Callable[[Any], bytes]
    read: Callable[[Path], tuple[list[Any], list[str]]]  # (keys, problem sources)
    where: Callable[[int, Record], str]  # the problem source naming record n (1-based)
    essential: dict[str, st.SearchStrategy[Any]]  # field -> values that make a record bad
    optional: dict[str, st.SearchStrategy[Any]]  # field -> values a good record survives
    header: bytes = b""
    lines: bool = True  # one record a line (else one JSON array of records)
    first_must_be_good: bool = False  # the format is told from the first record
    json: bool = True


def _at(record: Any, path: str) -> tuple[Any, str]:
    """(container, key) of a dotted field path in a JSON record, or a list index."""
    if isinstance(record, list):
        return record, path
    *parents, last = path.split(".")
    for parent in parents:
        record = record[parent]
    return record, last


def set_field(record: Any, path: str, value: Any) -> None:
    holder, key = _at(record, path)
    if isinstance(holder, list):
        holder[int(key)] = value
    else:
        holder[key] = value


def drop_field(record: Any, path: str) -> None:
    holder, key = _at(record, path)
    if isinstance(holder, list):
        holder[int(key)] = EMPTY
    else:
        del holder[key]


def json_line(record: Any) -> bytes:
    """Raw UTF-8; a lone surrogate (which UTF-8 cannot carry) is written escaped, "\\ud800",
    as a JSON writer would."""
    try:
        return json.dumps(record, ensure_ascii=False).encode()
    except UnicodeEncodeError:
        return json.dumps(record).encode()


# eve.json, read by the export job ----------------------------------------------------------

EVE_TIME = "2026-11-20T08:15:02.123456+0000"


def eve_alert(flow_id: int, sid: int = 2_000_001, **alert: Any) -> dict[str, Any]:
    return {"timestamp": EVE_TIME, "flow_id": flow_id, "event_type": "alert",
            "src_ip": "10.1.1.5", "src_port": 50000, "dest_ip": "81.2.69.160",
            "dest_port": 443, "proto": "TCP", "host": "edge-ids",
            "alert": {"signature_id": sid, "signature": "ET TEST", "category": "Misc",
                      "severity": 2, **alert}}


def eve_export_good(index: int) -> Record:
    return Record(eve_alert(1000 + index), f"{1000 + index}-2000001", True)


def read_eve_export(path: Path) -> tuple[list[Any], list[str]]:
    batch = read_eve_file(path)
    return batch.detections["detection_id"].tolist(), [p.source for p in batch.problems]


EVE_ESSENTIAL: dict[str, st.SearchStrategy[Any]] = {
    "event_type": NOT_TEXT.filter(lambda value: not isinstance(value, str)) | st.just(""),
    "timestamp": NOT_TEXT | NOT_A_TIME | st.just("2026-11-20T08:15:02"),  # no offset
    "alert": NOT_TEXT.filter(lambda value: not isinstance(value, dict)),
    "alert.signature_id": (st.booleans() | st.floats(allow_nan=False) | CONTAINERS
                           | st.sampled_from(["", "x", "²", "٣", "-1", "1.5"])),
}
EVE_OPTIONAL: dict[str, st.SearchStrategy[Any]] = {
    name: ANY_JSON for name in ("src_ip", "dest_ip", "src_port", "dest_port", "proto", "host",
                                "dns", "http", "tls", "alert.signature", "alert.category",
                                "alert.severity", "alert.metadata")
}

EVE_EXPORT = Format(
    "eve.json (export)", eve_export_good, json_line, read_eve_export,
    lambda number, _record: f"eve.json line {number}", EVE_ESSENTIAL, EVE_OPTIONAL)


# eve.json, read by the sightings job -------------------------------------------------------


def hit_uuid(index: int) -> str:
    return str(uuid.UUID(int=index + 1))


def eve_hits_good(index: int) -> Record:
    record = eve_alert(1000 + index, metadata={"misp_attribute_uuid": [hit_uuid(index)]})
    return Record(record, hit_uuid(index), True)


def read_eve_hits(path: Path) -> tuple[list[Any], list[str]]:
    batch = read_suricata_hits(path, None)
    return batch.hits["attribute_uuid"].tolist(), [p.source for p in batch.problems]


EVE_HITS = Format(
    "eve.json (sightings)", eve_hits_good, json_line, read_eve_hits,
    lambda number, _record: f"eve.json line {number}",
    {**EVE_ESSENTIAL,
     "alert.metadata.misp_attribute_uuid": NOT_A_UUID | st.lists(NOT_A_UUID, min_size=1)
     | st.integers() | st.dictionaries(st.text(max_size=3), _SCALARS, max_size=2)},
    {name: strategy for name, strategy in EVE_OPTIONAL.items() if name != "alert.metadata"})


# Flowmon ADS custom-script batch, tab-separated --------------------------------------------


def tsv_good(index: int) -> Record:
    fields = [str(5000 + index), "2026-11-20 08:15:00", "2026-11-20 08:10:00", "SCANS",
              "Network scanning", "Security issues", "High", "TCP SYN scan", "22", "TCP",
              "81.2.69.160", EMPTY, "10.0.0.1, 10.0.0.2", "probe-1", EMPTY]
    return Record(fields, str(5000 + index), True)


def read_flowmon_batch(path: Path) -> tuple[list[Any], list[str]]:
    batch = read_custom_script_batch(path)
    return (batch.detections["detection_id"].drop_duplicates().tolist(),
            [p.source for p in batch.problems])


TSV_OPTIONAL_FIELDS = (2, 3, 4, 5, 7, 8, 9, 10, 11, 12, 13, 14)
FLOWMON_TSV = Format(
    "flowmon batch (tab-separated)", tsv_good, lambda fields: "\t".join(fields).encode(),
    read_flowmon_batch, lambda number, _record: f"batch line {number}",
    {"0": st.sampled_from([EMPTY, "", "  "]), "1": NOT_A_TIME, "6": NOT_A_PRIORITY},
    {str(index): FIELD_TEXT for index in TSV_OPTIONAL_FIELDS}, json=False)


# Flowmon ADS custom-script batch, JSON lines -----------------------------------------------


def ads_json_good(index: int) -> Record:
    record = {"id": 7000 + index, "timestamp": "2026-11-20 08:15:00", "type": "SCANS",
              "typeDesc": "Network scanning", "severity": "High", "source": "81.2.69.160",
              "targets": "10.0.0.1, 10.0.0.2", "detail": "TCP SYN scan",
              "netFlowSource": "probe-1"}
    return Record(record, str(7000 + index), True)


FLOWMON_JSON = Format(
    "flowmon batch (JSON lines)", ads_json_good, json_line, read_flowmon_batch,
    lambda number, _record: f"batch line {number}",
    {"id": st.booleans() | st.floats(allow_nan=False) | CONTAINERS | st.sampled_from(["", " "]),
     "timestamp": CONTAINERS | st.booleans() | NOT_A_TIME,
     "severity": NOT_A_PRIORITY | st.booleans() | CONTAINERS | st.floats(allow_nan=False)},
    {name: ANY_JSON for name in ("type", "typeDesc", "detail", "netFlowSource", "source",
                                 "targets", "userIdentity", "perspective")})


# Flowmon ADS REST API answer ---------------------------------------------------------------


def api_good(index: int) -> Record:
    record = {"id": 9000 + index, "time": "2026-11-20 08:15:00", "type": "SCANS",
              "typeDesc": "Network scanning", "priority": 4, "detail": "TCP SYN scan",
              "source": {"ip": "81.2.69.160"}, "targets": [{"ip": "10.0.0.1"}],
              "nfSource": "probe-1"}
    return Record(record, str(9000 + index), True)


def read_api_answer(path: Path) -> tuple[list[Any], list[str]]:
    batch = parse_api_events(json.loads(path.read_bytes()), Priority.INFO)
    return (batch.detections["detection_id"].drop_duplicates().tolist(),
            [p.source for p in batch.problems])


def api_where(number: int, record: Record) -> str:
    """Problems name the event by id when it has a usable one, else by position."""
    event_id = record.data.get("id") if isinstance(record.data, dict) else None
    usable = (isinstance(event_id, str) and event_id.strip()) or (
        isinstance(event_id, int) and not isinstance(event_id, bool))
    return f"flowmon api event {event_id}" if usable else f"flowmon api record {number}"


FLOWMON_API = Format(
    "flowmon REST API events", api_good, json_line, read_api_answer, api_where,
    {"id": st.booleans() | st.floats(allow_nan=False) | CONTAINERS | st.sampled_from(["", " "]),
     "time": CONTAINERS | st.booleans() | NOT_A_TIME,
     "priority": NOT_A_PRIORITY | st.booleans() | CONTAINERS | st.sampled_from([0, 6, 99, 1.5])},
    {name: ANY_JSON for name in ("type", "typeDesc", "detail", "nfSource", "source", "targets",
                                 "perspectives", "method")}, lines=False)


# Hit files (CSV, JSON lines, JSON array) ---------------------------------------------------


def hit_good(index: int) -> Record:
    value = f"host-{index}.evil.example"
    return Record({"value": value, "time": 1_772_359_200 + index, "sensor": "proxy"}, value,
                  True)


def csv_good(index: int) -> Record:
    value = f"host-{index}.evil.example"
    return Record([value, "2026-11-20T08:15:00Z", "proxy"], value, True)


def csv_line(fields: list[str]) -> bytes:
    out = io.StringIO()
    csv.writer(out, lineterminator="").writerow(fields)
    return out.getvalue().encode()


def read_hits(path: Path) -> tuple[list[Any], list[str]]:
    batch = read_hit_file(path)
    return batch.hits["value"].tolist(), [p.source for p in batch.problems]


HIT_ESSENTIAL: dict[str, st.SearchStrategy[Any]] = {
    "value": NOT_TEXT | st.sampled_from(["", "  "]),
    "time": st.booleans() | CONTAINERS | NOT_A_TIME,
}
HIT_OPTIONAL: dict[str, st.SearchStrategy[Any]] = {"sensor": ANY_JSON, "comment": ANY_JSON}
HITS_JSON_LINES = Format(
    "hit file (JSON lines)", hit_good, json_line, read_hits,
    lambda number, _record: f"hits line {number}", HIT_ESSENTIAL, HIT_OPTIONAL,
    first_must_be_good=True)
HITS_JSON_ARRAY = Format(
    "hit file (JSON array)", hit_good, json_line, read_hits,
    lambda number, _record: f"hits item {number}", HIT_ESSENTIAL, HIT_OPTIONAL, lines=False,
    first_must_be_good=True)
HITS_CSV = Format(
    "hit file (CSV)", csv_good, csv_line, read_hits,
    lambda number, _record: f"hits line {number}",
    {"0": st.sampled_from(["", "  "]), "1": NOT_A_TIME | st.sampled_from(["", "true"])},
    {"2": FIELD_TEXT}, header=b"value,time,sensor\n", first_must_be_good=True, json=False)

FORMATS = [EVE_EXPORT, EVE_HITS, FLOWMON_TSV, FLOWMON_JSON, FLOWMON_API, HITS_JSON_LINES,
           HITS_JSON_ARRAY, HITS_CSV]
FILE_NAMES = {FLOWMON_TSV.name: "batch", FLOWMON_JSON.name: "batch", EVE_EXPORT.name: "eve.json",
              EVE_HITS.name: "eve.json", FLOWMON_API.name: "answer.json"}


# --- faults: each turns a good record into another record, good or bad ----------------------


def surely_bad_line(data: bytes) -> bool:
    """One line, not blank by any parser's rule, and no JSON object (a random one could be a
    real record); "{" and "{}" are the objects that surely are not."""
    if b"\n" in data or not data.strip() or not data.decode("utf-8", "replace").strip():
        return False
    return not data.lstrip().startswith(b"{") or data.strip() in (b"{", b"{}")


def random_bytes(fmt: Format, draw: st.DrawFn, record: Record) -> Record:
    """Any bytes; for hit files valid UTF-8 only, as they are decoded whole (one bad byte
    refuses the file: `test_a_non_utf8_hit_file_is_refused_whole`)."""
    strategy = (st.text(max_size=40).map(str.encode) if fmt.name.startswith("hit file")
                else st.binary(min_size=1, max_size=60))
    raw = draw(strategy.filter(surely_bad_line))
    return Record(record.data, record.key, False, raw=raw)


def truncated(fmt: Format, draw: st.DrawFn, record: Record) -> Record:
    whole = fmt.encode(record.data)
    if fmt.json:
        cut = draw(st.integers(1, len(whole) - 1))
    else:  # fewer fields than any layout has
        tabs = [index for index, byte in enumerate(whole) if byte in b"\t,"][:12]
        cut = draw(st.sampled_from(tabs[:1] if fmt is HITS_CSV else tabs))
    return Record(record.data, record.key, False, raw=whole[:cut])


def wrong_essential(fmt: Format, draw: st.DrawFn, record: Record) -> Record:
    name = draw(st.sampled_from(sorted(fmt.essential)))
    set_field(record.data, name, draw(fmt.essential[name]))
    return Record(record.data, record.key, False)


def wrong_optional(fmt: Format, draw: st.DrawFn, record: Record) -> Record:
    for name in draw(st.lists(st.sampled_from(sorted(fmt.optional)), min_size=1, unique=True)):
        set_field(record.data, name, draw(fmt.optional[name]))
    return record


def missing_essential(fmt: Format, draw: st.DrawFn, record: Record) -> Record:
    # Without an attribute UUID an alert is from a rule not built from MISP: a counted skip.
    drop_field(record.data, draw(st.sampled_from(sorted(
        name for name in fmt.essential if not name.endswith("misp_attribute_uuid")))))
    return Record(record.data, record.key, False)


def missing_optional(fmt: Format, draw: st.DrawFn, record: Record) -> Record:
    for name in draw(st.lists(st.sampled_from(sorted(fmt.optional)), min_size=1, unique=True)):
        holder, key = _at(record.data, name)
        if isinstance(holder, list) or key in holder:
            drop_field(record.data, name)
    return record


def deeply_nested(fmt: Format, draw: st.DrawFn, record: Record) -> Record:
    """Past the JSON decoder's recursion limit: the record cannot be read."""
    text = json.dumps(record.data)
    raw = (text[:-1] + ', "nested": ' + nested(draw(st.integers(5_000, 200_000))) + "}")
    return Record(record.data, record.key, False, raw=raw.encode())


def moderately_nested(fmt: Format, draw: st.DrawFn, record: Record) -> Record:
    """Well within the decoder's limit, in a field nobody reads: still a good record."""
    text = json.dumps(record.data)
    raw = text[:-1] + ', "nested": ' + nested(draw(st.integers(1, 300)), '{"a": null}') + "}"
    return Record(record.data, record.key, True, raw=raw.encode())


def not_utf8(fmt: Format, draw: st.DrawFn, record: Record) -> Record:
    """A byte that is no UTF-8 inside a text field. An eve line is unreadable (Suricata writes
    UTF-8, escaping anything else); a Flowmon batch keeps the event, U+FFFD in its text."""
    bad = draw(st.sampled_from([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xe9t\xe9", b"\x80"]))
    whole = fmt.encode(record.data)
    is_eve = fmt.name.startswith("eve")
    marker = b"ET TEST" if is_eve else b"TCP SYN scan"
    assert marker in whole
    return Record(record.data, record.key, not is_eve, raw=whole.replace(marker, marker + bad, 1))


def nul_bytes(fmt: Format, draw: st.DrawFn, record: Record) -> Record:
    """A raw NUL: JSON forbids control characters in strings; in Flowmon's text it is text."""
    whole = fmt.encode(record.data)
    if fmt.json:
        position = draw(st.integers(1, len(whole) - 1))
        return Record(record.data, record.key, False,
                      raw=whole[:position] + b"\x00" + whole[position:])
    marker = b"TCP SYN scan" if fmt is FLOWMON_TSV else b"proxy"
    return Record(record.data, record.key, True, raw=whole.replace(marker, marker + b"\x00"))


def not_an_object(fmt: Format, draw: st.DrawFn, record: Record) -> Record:
    value = draw(_SCALARS | st.lists(_SCALARS, max_size=3))
    return Record(value, record.key, False, raw=json.dumps(value).encode())


@dataclass(frozen=True)
class Fault:
    name: str
    make: Callable[[Format, st.DrawFn, Record], Record]
    applies: Callable[[Format], bool] = lambda _fmt: True


FAULTS = [
    # A CSV line of random bytes may well be a valid row ("abc,123"): not for CSV.
    Fault("random bytes", random_bytes, lambda fmt: fmt.lines and fmt.json),
    Fault("truncated record", truncated, lambda fmt: fmt.lines),
    Fault("wrong type or garbage in an essential field", wrong_essential),
    Fault("wrong type or garbage in an optional field", wrong_optional),
    Fault("essential field missing", missing_essential),
    Fault("optional field missing", missing_optional),
    Fault("JSON nested 5k-200k deep", deeply_nested, lambda fmt: fmt.json and fmt.lines),
    Fault("JSON nested up to 300 deep in an unread field", moderately_nested,
          lambda fmt: fmt.json),
    Fault("non-UTF-8 bytes in a text field", not_utf8,
          lambda fmt: fmt.lines and fmt.name.startswith(("eve", "flowmon batch"))),
    Fault("raw NUL byte", nul_bytes, lambda fmt: fmt.lines),
    Fault("not a JSON object", not_an_object, lambda fmt: fmt.json),
]
# Whole-batch dressing: every record stays what it is.
DRESSINGS = ["byte order mark before line 1", "CRLF line ends", "blank and empty lines"]


# --- one generated batch --------------------------------------------------------------------


@dataclass
class Outcome:
    """What many generated batches of one parser and fault added up to."""

    good: list[Any] = field(default_factory=list)
    parsed: list[Any] = field(default_factory=list)
    bad: list[Any] = field(default_factory=list)
    problems: list[Any] = field(default_factory=list)
    batches: int = 0

    def record(self, reliability: Recorder, fault: str) -> None:
        """One row: every good record parsed once and every bad one reported once; a record
        or a problem nobody expected counts as injected."""
        reliability.check(JOB, fault,
                          [("record", key) for key in self.good]
                          + [("problem", where) for where in self.bad],
                          [("record", key) for key in self.parsed]
                          + [("problem", where) for where in self.problems])


def batch_records(fmt: Format, fault: Fault | None, draw: st.DrawFn) -> list[Record]:
    count = draw(st.integers(1, 8))
    records = [fmt.good(index) for index in range(count)]
    if fault is None:
        return records
    faulty = draw(st.lists(st.integers(0, count - 1), min_size=1, max_size=count, unique=True))
    if fmt.first_must_be_good and len(records) > 1:
        faulty = [index for index in faulty if index != 0] or [count - 1]
    if fmt.first_must_be_good and len(records) == 1:
        records.append(fmt.good(1))
        faulty = [1]
    for index in faulty:
        records[index] = fault.make(fmt, draw, records[index])
    return records


def write_batch(fmt: Format, records: list[Record], path: Path, dressing: str | None,
                draw: st.DrawFn | None) -> list[int]:
    """Write the batch; returns each record's line (or item) number, 1-based."""
    encoded = [record.raw if record.raw is not None else fmt.encode(record.data)
               for record in records]
    if not fmt.lines:
        path.write_bytes(b"[" + b",\n".join(encoded) + b"]")
        return list(range(1, len(records) + 1))
    lines: list[bytes] = [fmt.header.rstrip(b"\n")] if fmt.header else []
    numbers = []
    for line in encoded:
        if dressing == "blank and empty lines" and draw is not None:
            lines += draw(st.lists(st.sampled_from([b"", b"  ", b"\t", b"\r", b" \t "]),
                                   max_size=3))
        lines.append(line)
        numbers.append(len(lines))
    end = b"\r\n" if dressing == "CRLF line ends" else b"\n"
    data = end.join(lines) + (draw(st.sampled_from([b"", end])) if draw else end)
    if dressing == "byte order mark before line 1":
        data = b"\xef\xbb\xbf" + data
    path.write_bytes(data)
    return numbers


def run_batch(fmt: Format, fault: Fault | None, dressing: str | None, draw: st.DrawFn,
              directory: Path, outcome: Outcome) -> None:
    check_batch(fmt, batch_records(fmt, fault, draw), dressing, draw, directory, outcome)


def check_batch(fmt: Format, records: list[Record], dressing: str | None,
                draw: st.DrawFn | None, directory: Path, outcome: Outcome) -> None:
    """Write, parse, and compare one batch record by record; add it to `outcome`."""
    outcome.batches += 1
    path = directory / FILE_NAMES.get(fmt.name, "hits")
    numbers = write_batch(fmt, records, path, dressing, draw)
    keys, problems = fmt.read(path)
    tag = outcome.batches  # keys of different batches must not meet
    good = [(tag, record.key) for record in records if record.good]
    bad = [(tag, fmt.where(number, record))
           for number, record in zip(numbers, records, strict=True) if not record.good]
    assert sorted(map(str, keys)) == sorted(str(key) for _, key in good)
    assert sorted(problems) == sorted(where for _, where in bad), problems
    outcome.good += good
    outcome.parsed += [(tag, key) for key in keys]
    outcome.bad += bad
    outcome.problems += [(tag, where) for where in problems]


CASES = [pytest.param(fmt, fault, id=f"{fmt.name}: {fault.name}")
         for fmt in FORMATS for fault in FAULTS if fault.applies(fmt)]


@pytest.mark.parametrize(("fmt", "fault"), CASES)
def test_good_records_come_through_and_each_bad_one_is_one_problem(
    fmt: Format, fault: Fault, tmp_path: Path, reliability: Recorder
) -> None:
    outcome = Outcome()

    @BATCH_SETTINGS
    @given(st.data())
    def one_batch(data: st.DataObject) -> None:
        run_batch(fmt, fault, None, data.draw, tmp_path, outcome)

    one_batch()
    outcome.record(reliability, f"{fmt.name}: {fault.name}")


# Values each parser once took for good, or crashed on, and others worth naming: every one is
# tried, whatever hypothesis happens to draw.
KNOWN_BAD: dict[str, list[tuple[str, Any]]] = {
    EVE_EXPORT.name: [
        ("alert.signature_id", "²"), ("alert.signature_id", "٣"), ("alert.signature_id", True),
        ("alert.signature_id", 1.5), ("alert.signature_id", "-1"), ("timestamp", 5),
        ("timestamp", "2026-11-20T08:15:02"), ("timestamp", "2026-11-20T25:00:00+00:00"),
        ("event_type", ["alert"]), ("event_type", ""), ("alert", "x"),
        ("alert.signature", "\ud800"), ("src_ip", "\udfff")],
    EVE_HITS.name: [
        ("alert.signature_id", "²"), ("alert.signature_id", "٣"), ("timestamp", 5),
        ("alert.metadata.misp_attribute_uuid", ["x"]), ("alert.metadata.misp_attribute_uuid", 5),
        ("alert.metadata.misp_attribute_uuid", [None]), ("host", "\ud800")],
    FLOWMON_TSV.name: [("0", EMPTY), ("1", "soon"), ("1", "9999-12-31 00:00:00"),
                       ("6", "Severe")],
    FLOWMON_JSON.name: [
        ("id", True), ("id", 1.5), ("id", []), ("id", {"a": 1}), ("id", " "), ("timestamp", []),
        ("severity", True), ("detail", "\ud800"), ("id", "\ud800")],
    FLOWMON_API.name: [("id", True), ("id", [1]), ("id", " "), ("time", {}), ("priority", 9),
                       ("typeDesc", "\ud800")],
    HITS_JSON_LINES.name: [("value", 5), ("value", ""), ("value", "\ud800"), ("time", True),
                           ("time", "soon"), ("sensor", "\udc00")],
    HITS_JSON_ARRAY.name: [("value", [5]), ("value", "\ud800"), ("time", {})],
    HITS_CSV.name: [("0", ""), ("1", "soon"), ("1", "99999999999999999999")],
}


@pytest.mark.parametrize("fmt", FORMATS, ids=lambda fmt: fmt.name)
def test_every_known_bad_value_is_one_problem(
    fmt: Format, tmp_path: Path, reliability: Recorder
) -> None:
    records = []
    for index, (name, value) in enumerate(KNOWN_BAD[fmt.name]):
        records.append(fmt.good(2 * index))
        bad = fmt.good(2 * index + 1)
        set_field(bad.data, name, value)
        records.append(Record(bad.data, bad.key, False))
    outcome = Outcome()

    check_batch(fmt, records, None, None, tmp_path, outcome)

    outcome.record(reliability, f"{fmt.name}: each known bad value once")


DRESSED = [pytest.param(fmt, dressing, id=f"{fmt.name}: {dressing}")
           for fmt in FORMATS if fmt.lines for dressing in DRESSINGS]


@pytest.mark.parametrize(("fmt", "dressing"), DRESSED)
def test_bom_crlf_and_blank_lines_cost_no_record_and_raise_no_problem(
    fmt: Format, dressing: str, tmp_path: Path, reliability: Recorder
) -> None:
    outcome = Outcome()

    @BATCH_SETTINGS
    @given(st.data())
    def one_batch(data: st.DataObject) -> None:
        run_batch(fmt, None, dressing, data.draw, tmp_path, outcome)

    one_batch()
    assert outcome.problems == []
    outcome.record(reliability, f"{fmt.name}: {dressing}")


def test_a_posted_eve_alert_with_a_line_separator_in_a_string_is_one_record(
    reliability: Recorder,
) -> None:
    alerts = [eve_alert(1, signature="ET TEST\u2028two lines"), eve_alert(2)]
    body = b"\n".join(json_line(alert) for alert in alerts) + b"\n"

    checked = check_payload(Job.EXPORT, [("source", "suricata")], body)

    assert (checked.records, checked.problems) == (2, [])
    reliability.record(JOB, "posted eve batch: U+2028 inside a JSON string", checked=2)


# --- Flowmon blacklist hits (sightings): the detail text is all ADS tells ------------------

NO_BLACKLIST_WORD = FIELD_TEXT.filter(lambda text: "blacklist" not in text.lower())


def blacklist_event(index: int, kind: str, noise: str) -> tuple[list[str], Any]:
    """A BLACKLIST event's fields and what it must give: a hit key, a problem, or nothing."""
    fields = tsv_good(index).data
    event_id, address = fields[0], f"185.16.38.{index % 250}"
    fields[3], fields[10], fields[12] = "BLACKLIST", "10.0.0.5", "10.0.0.6"
    details = {
        "hit": f"Host: communication with blacklisted address {address} (blacklist MISP-ips)",
        "domain hit": f"Domain: DNS query for blacklisted domain d{index}.evil.example "
                      "(blacklist MISP-domains)",
        "no blacklist name": f"Host: communication flagged {noise}",
        "no indicator": "Host: suspicious communication (blacklist MISP-ips)",
        "another blacklist": f"Host: address {address} (blacklist Vendor-feed) {noise}",
    }
    fields[7] = details[kind] + ("" if kind == "no blacklist name" else f" {noise}")
    value = {"hit": address, "domain hit": f"d{index}.evil.example"}.get(kind)
    outcome = (("hit", event_id, value) if value else
               None if kind == "another blacklist" else ("problem", f"flowmon event {event_id}"))
    return fields, outcome


def test_flowmon_blacklist_hits_from_hostile_detail_texts(
    tmp_path: Path, reliability: Recorder
) -> None:
    """Hits where a MISP blacklist fired, one problem where ADS' text cannot be placed, a
    counted skip for other blacklists: whatever noise the detail text carries around them."""
    totals = Outcome()

    @BATCH_SETTINGS
    @given(st.lists(st.tuples(st.sampled_from(["hit", "domain hit", "no blacklist name",
                                               "no indicator", "another blacklist"]),
                              NO_BLACKLIST_WORD), min_size=1, max_size=10))
    def one_batch(events: list[tuple[str, str]]) -> None:
        built = [blacklist_event(index, kind, noise) for index, (kind, noise) in
                 enumerate(events)]
        path = tmp_path / "batch"
        path.write_bytes(b"\n".join(FLOWMON_TSV.encode(fields) for fields, _ in built))
        hits = blacklist_hits(read_custom_script_batch(path), ["misp-*"])
        totals.batches += 1
        expected = [outcome for _, outcome in built if outcome is not None]
        reached = [("hit", origin.removeprefix("flowmon event "), value) for origin, value
                   in zip(hits.hits["origin"], hits.hits["value"], strict=True)]
        reached += [("problem", problem.source) for problem in hits.problems]
        assert sorted(reached) == sorted(expected)
        skipped = sum(outcome is None for _, outcome in built)
        assert hits.skipped.get("hit on a blacklist not holding MISP indicators", 0) == skipped
        totals.good += [(totals.batches, *item) for item in expected]
        totals.parsed += [(totals.batches, *item) for item in reached]

    one_batch()
    reliability.check(JOB, "flowmon blacklist hits: noise in ADS detail texts", totals.good,
                      totals.parsed)


# --- a huge single line ---------------------------------------------------------------------


def huge_json_line() -> bytes:
    return b'{"event_type": "alert", "value": "' + b"x" * HUGE_LINE_BYTES + b'"}'


def peak_memory(action: Callable[[], Any]) -> tuple[Any, int]:
    """(result, peak bytes Python allocated while running `action`)."""
    tracemalloc.start()
    try:
        result = action()
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


HUGE_LINE_FORMATS = [EVE_EXPORT, EVE_HITS, FLOWMON_TSV, FLOWMON_JSON, HITS_JSON_LINES]


@pytest.mark.parametrize("fmt", HUGE_LINE_FORMATS, ids=lambda fmt: fmt.name)
def test_a_64_mib_line_is_one_problem_and_costs_bounded_memory(
    fmt: Format, tmp_path: Path, reliability: Recorder
) -> None:
    records = [fmt.good(index) for index in range(4)]
    huge = huge_json_line() if fmt.json else b"1\t" + b"x" * HUGE_LINE_BYTES
    lines = [fmt.encode(records[0].data), huge] + [fmt.encode(r.data) for r in records[1:]]
    path = tmp_path / FILE_NAMES.get(fmt.name, "hits")
    path.write_bytes(fmt.header + b"\n".join(lines) + b"\n")
    size = path.stat().st_size

    (keys, problems), peak = peak_memory(lambda: fmt.read(path))

    huge_number = 3 if fmt.header else 2
    problem_source = fmt.where(huge_number, records[0])
    assert problems == [problem_source]
    outcome = Outcome(good=[record.key for record in records], parsed=keys,
                      bad=[problem_source], problems=problems)
    outcome.record(reliability, f"{fmt.name}: one 64 MiB line among good ones")
    # Files are streamed line by line and the line is never held: a fixed cap, not the file.
    bound = 3 * MAX_RECORD_BYTES if fmt is not HITS_JSON_LINES else 4 * size
    assert peak < bound, f"peak {peak >> 20} MiB for a {size >> 20} MiB file"


def test_the_huge_line_problem_says_what_the_limit_is(tmp_path: Path) -> None:
    path = tmp_path / "eve.json"
    path.write_bytes(huge_json_line() + b"\n")

    problem = read_eve_file(path).problems[0]

    assert problem.source == "eve.json line 1"
    assert str(MAX_RECORD_BYTES) in problem.reason and "limit" in problem.reason
    assert problem.excerpt.startswith('{"event_type": "alert"') and len(problem.excerpt) <= 120


def test_a_line_just_within_the_limit_is_still_read(tmp_path: Path) -> None:
    record = eve_alert(77)
    record["payload_printable"] = ""
    padding = MAX_RECORD_BYTES - len(json_line(record))
    record["payload_printable"] = "x" * padding
    path = tmp_path / "eve.json"
    path.write_bytes(json_line(record) + b"\n")

    batch = read_eve_file(path)

    assert len(json_line(record)) == MAX_RECORD_BYTES
    assert (batch.detections["detection_id"].tolist(), batch.problems) == (["77-2000001"], [])


@pytest.mark.parametrize("as_text", [
    pytest.param(lambda data: parse_eve_lines(data.decode().split("\n")), id="eve lines"),
    pytest.param(lambda data: parse_custom_script_batch(data.decode()), id="flowmon batch"),
])
def test_a_huge_line_handed_over_as_text_is_refused_within_4x_its_size(
    as_text: Callable[[bytes], Any], reliability: Recorder
) -> None:
    """Webhook payloads arrive decoded: the text is already in memory, parsing must not
    multiply it (a JSON array of empty objects takes 20 times its text once parsed)."""
    data = b"[" + b"{}," * (HUGE_LINE_BYTES // 3) + b"{}]"

    batch, peak = peak_memory(lambda: as_text(data))

    assert len(batch.problems) == 1 and "longer than the" in batch.problems[0].reason
    assert peak < 4 * len(data)
    reliability.record(JOB, "text payload: one 64 MiB JSON line of empty objects",
                       checked=1, injected=len(batch.detections))


def test_csv_hit_file_with_a_huge_field_is_refused_whole_within_4x_its_size(
    tmp_path: Path, reliability: Recorder
) -> None:
    """The csv module cannot resume after a field over its limit: the file is refused, with a
    clear error naming it and the line, before anything is sighted."""
    path = tmp_path / "hits.csv"
    path.write_bytes(b"value,time\nevil.example,1\n" + b"x" * HUGE_LINE_BYTES + b",1\n")

    def read() -> str:
        with pytest.raises(InputError, match="not readable CSV at line 3") as caught:
            read_hit_file(path)
        return str(caught.value)

    message, peak = peak_memory(read)

    assert str(path) in message
    assert peak < 4 * path.stat().st_size
    reliability.record(JOB, "hit file (CSV): one 64 MiB field refuses the file", checked=1)


@pytest.mark.parametrize(("content", "offset"), [
    (b'{"value": "evil.example", "time": 1}\n{"value": "\xff", "time": 1}\n', 48),
    (b"value,time\nevil.example,1\nbad\x80.example,1\n", 29),
], ids=["JSON lines", "CSV"])
def test_a_non_utf8_hit_file_is_refused_whole(
    content: bytes, offset: int, tmp_path: Path, reliability: Recorder
) -> None:
    """Hit files are decoded as a whole: a byte that is no UTF-8 refuses the file with the
    byte's offset, before anything is sighted (a guess at the encoding could sight a value
    that was never in MISP)."""
    path = tmp_path / "hits"
    path.write_bytes(content)

    with pytest.raises(InputError, match=rf"not UTF-8 text \(byte {offset}\)"):
        read_hit_file(path)
    assert content[offset] >= 0x80
    reliability.record(JOB, "hit file: a non-UTF-8 byte refuses the file", checked=1)


# --- the REST API answer as a whole ---------------------------------------------------------


@responses.activate
@pytest.mark.parametrize("body", [
    pytest.param(nested(100_000), id="nested 100k deep"),
    pytest.param("[" * 50 + "{" * 2, id="truncated"),
    pytest.param('"events"', id="a string"),
    pytest.param('{"total": 3}', id="an object without a list"),
])
def test_an_unusable_api_answer_is_a_clear_rejection_not_a_crash(body: str) -> None:
    responses.add(responses.POST, f"{FLOWMON_URL}/resources/oauth/token",
                  json={"access_token": "t0ken"})
    responses.add(responses.GET, f"{FLOWMON_URL}/rest/ads/events", body=body,
                  content_type="application/json")
    settings_ = FlowmonSettings(url=FLOWMON_URL, user="misp", password="s3cret", retries=0)

    with pytest.raises(RejectedError, match="ADS event list") as caught:
        FlowmonClient(settings_).fetch_events(UNTIL - timedelta(hours=1), UNTIL)

    assert "s3cret" not in str(caught.value) and "t0ken" not in str(caught.value)
