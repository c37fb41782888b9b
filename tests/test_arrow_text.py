"""Rows sorted, deduplicated and joined into an output file's bytes: every renderer's
last step."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tasks import arrow_text
from tasks.arrow_text import joined_lines, sorted_distinct_joined_lines, sorted_distinct_lines


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


@pytest.mark.parametrize("block_rows", [1, 2, 3, 7])
def test_output_built_block_by_block_is_the_same_across_block_and_chunk_edges(
    block_rows: int, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Files are written a block of rows at a time (131,072 in use): blocks that end
    inside a chunk, span chunks or hold one row lose, repeat and reorder nothing."""
    monkeypatch.setattr(arrow_text, "_BLOCK_ROWS", block_rows)
    chunks = [["r0", "r1", "r2"], [], ["r3"], ["", "r5", "r6", "r7", "r8"], ["r9"]]
    rows = pa.chunked_array([pa.array(chunk, pa.string()) for chunk in chunks])
    flat = [row for chunk in chunks for row in chunk]
    assert joined_lines(rows, b"#\n") == python_join(flat, b"#\n")
    assert joined_lines(rows.slice(2, 6)) == python_join(flat[2:8])
    values = pa.array(["b", "a", "c", "a", "e", "d", "b", "f", "g"], pa.string())
    assert sorted_distinct_lines(values, b"#\n") == python_join(list("abcdefg"), b"#\n")


def test_a_missing_row_is_refused_not_dropped() -> None:
    with pytest.raises(ValueError, match="missing"):
        joined_lines(pa.array(["a", None, "c"], pa.string()))


# texts sharing their first bytes, shorter and longer than the 8-byte sort keys, multibyte
texts = st.text(st.sampled_from(["a", "b", "\x00", "\x01", "\u00e9", "\U0001f600"]),
                max_size=11)


@settings(max_examples=200, deadline=None)
@given(values=st.lists(texts, max_size=40), cut=st.integers(0, 3),
       kind=st.sampled_from([pa.string(), pa.large_string()]))
def test_sorted_distinct_lines_are_pythons_sorted_set(values: list[str], cut: int,
                                                       kind: pa.DataType) -> None:
    """Also on a slice of a longer array, whose text runs on past the values read."""
    array = pa.array(["\U0001f600" * 3] * cut + values + ["zz"] * cut, kind)
    assert sorted_distinct_lines(array.slice(cut, len(values)), b"#\n") == python_join(
        sorted(set(values)), b"#\n")


@settings(max_examples=200, deadline=None)
@given(pairs=st.lists(st.tuples(texts, st.integers(0, 3)), max_size=40))
def test_joined_lines_are_ordered_by_head_then_tail_and_distinct(
    pairs: list[tuple[str, int]]
) -> None:
    """Tails 0 and 2 are equal texts: their lines are one line, not two."""
    tails = ["\tb\n", "\ta\n", "\tb\n", "\t\n"]
    heads = pa.array([head for head, _ in pairs], pa.string())
    tail_of = np.array([tail for _, tail in pairs], dtype=np.int64)
    lines = {(head, tails[tail]) for head, tail in pairs}
    assert sorted_distinct_joined_lines(heads, pa.array(tails), tail_of, b"#\n") == (
        b"#\n" + b"".join((head + tail).encode() for head, tail in sorted(lines)))


def test_a_missing_value_to_sort_is_refused_not_dropped() -> None:
    with pytest.raises(ValueError, match="missing"):
        sorted_distinct_lines(pa.array(["b", None, "a"], pa.string()))
