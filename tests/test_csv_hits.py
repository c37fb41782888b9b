"""Hit files from any other sensor (CSV, JSON array, JSON lines) become hits; every record
that cannot be used is reported by its line or item, never dropped."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from misp_ndr.errors import InputError
from tasks.csv_hits import parse_hit_text, read_hit_file
from tasks.sighting_hits import HIT_COLUMNS

UTC = "UTC"


def stamp(text: str) -> pd.Timestamp:
    return pd.Timestamp(text).tz_convert(UTC)


def sources(batch_problems: list) -> list[str]:
    return [problem.source for problem in batch_problems]


def test_csv_rows_become_hits_with_the_hit_schema(tmp_path: Path) -> None:
    path = tmp_path / "proxy-hits.csv"
    path.write_bytes(
        "\ufeff Value ,TIME, Sensor ,comment\n"
        "evil.example,2026-03-01T10:00:00+01:00, proxy-1 ,ignored\n"
        '"http://evil.example/a,b",2026-03-01T10:05:00Z,,x\n'
        "  81.2.69.160  ,1772359200\n".encode()
    )

    batch = read_hit_file(path, default_sensor="siem")

    assert dict(batch.hits.dtypes.astype(str)) == HIT_COLUMNS
    assert batch.hits["value"].tolist() == [
        "evil.example", "http://evil.example/a,b", "81.2.69.160"]
    assert batch.hits["time"].tolist() == [
        stamp("2026-03-01T09:00:00Z"), stamp("2026-03-01T10:05:00Z"),
        stamp("2026-03-01T10:00:00Z")]
    assert batch.hits["sensor"].tolist() == ["proxy-1", "siem", "siem"]
    assert batch.hits["attribute_uuid"].isna().all()
    assert batch.hits["origin"].tolist() == [
        "proxy-hits.csv line 2", "proxy-hits.csv line 3", "proxy-hits.csv line 4"]
    assert batch.problems == []
    assert batch.records_read == 3


def test_time_formats_iso_naive_and_epoch_seconds() -> None:
    text = ("value,time\n"
            "a,2026-03-01T10:00:00+02:00\n"
            "b,2026-03-01 10:00:00\n"
            "c,1772359200\n"
            "d,1772359200.5\n")

    times = parse_hit_text(text, "t.csv").hits["time"].tolist()

    assert times == [stamp("2026-03-01T08:00:00Z"), stamp("2026-03-01T10:00:00Z"),
                     stamp("2026-03-01T10:00:00Z"), stamp("2026-03-01T10:00:00.5Z")]


def test_bad_csv_rows_are_problems_named_by_file_line_and_the_rest_is_read() -> None:
    text = ("value,time,sensor\n"  # line 1
            "\n"  # 2: blank, ignored
            "good.example,2026-03-01T10:00:00Z\n"  # 3
            ",2026-03-01T10:00:00Z,s\n"  # 4: no value
            '"two\nlines",1772359200\n'  # 5-6: one record over two lines
            "bad.example,yesterday\n"  # 7
            "no-time.example\n"  # 8
            "ms.example,1772359200000\n"  # 9: epoch milliseconds by mistake
            ",,\n"  # 10: spreadsheet filler, not a record
            "last.example,1772359200\n")  # 11

    batch = parse_hit_text(text, "hits.csv")

    assert batch.hits["origin"].tolist() == [
        "hits.csv line 3", "hits.csv line 5", "hits.csv line 11"]
    assert sources(batch.problems) == [
        "hits.csv line 4", "hits.csv line 7", "hits.csv line 8", "hits.csv line 9"]
    reasons = [problem.reason for problem in batch.problems]
    assert reasons[0] == "no value"
    assert reasons[1].startswith("unreadable time 'yesterday'")
    assert reasons[2].startswith("no time")
    assert reasons[3].startswith("unreadable time '1772359200000'")
    assert batch.problems[1].excerpt == "bad.example,yesterday"
    assert batch.records_read == 7
    assert len(batch.hits) + len(batch.problems) == batch.records_read


def test_json_array_items_and_their_problems() -> None:
    items = [
        {"VALUE": " evil.example ", "Time": 1772359200, "sensor": "edr"},
        {"value": "81.2.69.160", "time": "2026-03-01T11:00:00+01:00", "other": 1},
        "not an object",
        {"value": 42, "time": 1772359200},
        {"value": "x.example", "time": True},
        {"value": None, "time": 1772359200},
    ]

    batch = parse_hit_text(json.dumps(items), "hits.json")

    assert batch.hits["value"].tolist() == ["evil.example", "81.2.69.160"]
    assert batch.hits["time"].tolist() == [stamp("2026-03-01T10:00:00Z")] * 2
    assert batch.hits["sensor"].tolist() == ["edr", "csv"]
    assert batch.hits["origin"].tolist() == ["hits.json item 1", "hits.json item 2"]
    assert sources(batch.problems) == [
        "hits.json item 3", "hits.json item 4", "hits.json item 5", "hits.json item 6"]
    assert batch.problems[0].reason == "not a JSON object"
    assert batch.problems[1].reason.startswith("value is not a string")
    assert batch.problems[2].reason.startswith("unreadable time 'true'")
    assert batch.problems[3].reason == "no value"
    assert batch.records_read == 6


def test_json_lines_skip_blank_lines_and_report_bad_ones() -> None:
    text = ('{"value": "evil.example", "time": "1772359200", "sensor": " dns-fw "}\n'
            "\n"
            "[1, 2]\n"
            "{not json\n"
            + '{"a": ' + "[" * 100_000 + "\n"  # nested deeper than Python can parse
            + '{"value": "a\u2028b.example", "time": 1772359200}\r\n')

    batch = parse_hit_text(text, "hits.jsonl", default_sensor="fw")

    assert batch.hits["value"].tolist() == ["evil.example", "a\u2028b.example"]
    assert batch.hits["sensor"].tolist() == ["dns-fw", "fw"]
    assert batch.hits["origin"].tolist() == ["hits.jsonl line 1", "hits.jsonl line 6"]
    assert sources(batch.problems) == [
        "hits.jsonl line 3", "hits.jsonl line 4", "hits.jsonl line 5"]
    assert batch.problems[0].reason == "not a JSON object"
    assert batch.problems[1].reason.startswith("not JSON")
    assert "nested too deeply" in batch.problems[2].reason
    assert batch.records_read == 5


@pytest.mark.parametrize(("content", "expected"), [
    (b"indicator,time\nevil.example,1772359200\n", "no value column"),
    (b"value,when\nevil.example,1772359200\n", "no time column"),
    (b"Sensor\n", "no value or time column"),
    (b'[{"value": "evil.example", "time": 1}', "not a valid JSON array"),
    (b"value,time\n\xff\xfe,1772359200\n", "not UTF-8"),
    (b"value,time\n" + b"x" * 200_000 + b",1772359200\n", "not readable CSV at line 2"),
    (b"[" * 100_000, "nested too deeply"),
])
def test_unusable_files_raise_input_error_naming_the_file(
    tmp_path: Path, content: bytes, expected: str
) -> None:
    path = tmp_path / "broken.txt"
    path.write_bytes(content)

    with pytest.raises(InputError, match=expected) as caught:
        read_hit_file(path)

    assert str(path) in str(caught.value)


def test_missing_file_raises_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"absent\.csv"):
        read_hit_file(tmp_path / "absent.csv")


def test_an_empty_file_has_no_hits_and_no_problems(tmp_path: Path) -> None:
    path = tmp_path / "empty.csv"
    path.write_text(" \n\n")

    batch = read_hit_file(path)

    assert batch.hits.empty
    assert list(batch.hits.columns) == list(HIT_COLUMNS)
    assert batch.problems == []
    assert batch.records_read == 0
