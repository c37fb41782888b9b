"""Rows joined into an output file's bytes: every renderer's last step."""

from __future__ import annotations

import pyarrow as pa
import pytest

from tasks.arrow_text import joined_lines


def python_join(rows: list[str], prefix: bytes = b"") -> bytes:
    return prefix + b"".join(row.encode() + b"\n" for row in rows)


@pytest.mark.parametrize("kind", [pa.string(), pa.large_string()])
def test_rows_end_in_newlines_after_the_prefix(kind: pa.DataType) -> None:
    rows = ["alert ip any any <> 5.6.7.8 any (sid:1;)", "", "caf\u00e9 \u2603", "x" * 5000]
    assert joined_lines(pa.array(rows, kind), b"# header\n") == python_join(rows, b"# header\n")


def test_chunks_are_joined_in_order_and_empty_ones_skipped() -> None:
    chunks = [["a", "b"], [], ["c"], [""], ["d", "e"]]
    rows = pa.chunked_array([pa.array(chunk, pa.string()) for chunk in chunks])
    assert joined_lines(rows) == python_join([row for chunk in chunks for row in chunk])


def test_a_slice_joins_only_its_own_rows() -> None:
    rows = pa.array([f"rule {n}" for n in range(10)]).slice(3, 4)
    assert joined_lines(rows, b"#\n") == python_join([f"rule {n}" for n in range(3, 7)], b"#\n")


def test_empty_rows_are_empty_lines_and_no_rows_is_the_prefix() -> None:
    assert joined_lines(pa.array(["", ""], pa.string())) == b"\n\n"
    assert joined_lines(pa.array([], pa.string()), b"# only\n") == b"# only\n"


def test_a_missing_row_is_refused_not_dropped() -> None:
    with pytest.raises(ValueError, match="missing"):
        joined_lines(pa.array(["a", None, "c"], pa.string()))
