"""Text columns in arrow, shared by the renderers: taken from pandas without a detour
through Python strings (millions of values), boolean kernel results back as numpy, and
rows sorted, deduplicated and joined into the bytes of an output file."""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc


def arrow_text(values: pd.Series | pa.Array | pa.ChunkedArray | np.ndarray | list[str | None],
               large: bool = False) -> pa.Array:
    """`values` as one arrow string array (missing values null); `large` for large_string
    (64-bit offsets), which some kernels need once a column's text passes 2 GiB."""
    if isinstance(values, pd.Series):
        values = pd.array(values, dtype="string").__arrow_array__()
    elif not isinstance(values, pa.Array | pa.ChunkedArray):
        values = pa.array(values, type=pa.string(), from_pandas=True)
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    return values.cast(pa.large_string() if large else pa.string())


def true_where(condition: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A boolean kernel result as numpy, nulls as False."""
    return np.asarray(pc.fill_null(condition, False).to_numpy(zero_copy_only=False), dtype=bool)


def joined_lines(rows: pa.Array | pa.ChunkedArray, prefix: bytes = b"") -> bytes:
    """`prefix`, then every row (text, no nulls) ending in a newline, as one bytes object:
    each block of rows is joined in arrow and its text read from the result's buffer in
    place. Indexing the result (`joined[0]`) would first copy the whole text into a
    scalar: a rules file is hundreds of MB, so that copy and its fresh pages were a third
    of the page faults of a whole update."""
    rows = rows if isinstance(rows, pa.ChunkedArray) else pa.chunked_array([rows], rows.type)
    return joined_row_blocks(len(rows), lambda start, count: _one_array(rows.slice(start, count)),
                             prefix)


def joined_row_blocks(rows: int, block: Callable[[int, int], pa.Array],
                      prefix: bytes = b"") -> bytes:
    """`joined_lines` of rows made a block at a time: `block(start, count)` gives rows
    `start` to `start + count` (fewer at the end), and no more than a block of them exists
    at once."""
    return _in_blocks(prefix, rows, lambda start, count: _joined_chunk(block(start, count)),
                      end=b"\n")


_BLOCK_ROWS = 1 << 17


def _in_blocks(prefix: bytes, rows: int, block: Callable[[int, int], memoryview],
               end: bytes = b"") -> bytes:
    """`prefix`, then `block(start, count)` and `end` for each run of _BLOCK_ROWS of `rows`
    rows, as one bytes object. Written to a BytesIO, whose buffer becomes the result
    without a copy (it grows by remapping, not copying), and each block's text is freed
    before the next is made, so the allocator reuses its memory. Made all at once, every
    block's text was fresh memory, which the kernel zeroes on first touch: for a 463 MB
    rules file in a new process (a scheduled run) that took 1.4 s of the join's 1.5 s;
    block by block the join takes 0.26 s."""
    out = io.BytesIO()
    out.write(prefix)
    for start in range(0, rows, _BLOCK_ROWS):
        out.write(block(start, _BLOCK_ROWS))
        out.write(end)
    return out.getvalue()


def _one_array(rows: pa.ChunkedArray) -> pa.Array:
    """The rows as one array: a view when they lie in one chunk."""
    return rows.chunk(0) if rows.num_chunks == 1 else rows.combine_chunks()


def _joined_chunk(rows: pa.Array) -> memoryview:
    """The rows joined by newlines, a view of the joined array's data buffer."""
    large = pc.sum(pc.binary_length(rows)).as_py() + len(rows) >= 2**31 - 1
    rows = rows.cast(pa.large_string() if large else pa.string())
    list_type, offset_type = ((pa.LargeListArray, pa.int64()) if large
                              else (pa.ListArray, pa.int32()))
    whole = list_type.from_arrays(pa.array([0, len(rows)], offset_type), rows)
    return _text_view(pc.binary_join(whole, pa.scalar("\n", rows.type)))


def _text_view(texts: pa.Array) -> memoryview:
    """All of `texts` back to back, a view of its data buffer (indexing a row would copy
    it into a scalar first); a missing row is refused, as a line would be lost."""
    if texts.null_count:
        raise ValueError("a line to join is missing (null)")
    offset_type = np.int64 if pa.types.is_large_string(texts.type) else np.int32
    _validity, offsets, data = texts.buffers()
    bounds = np.frombuffer(offsets, dtype=offset_type)[texts.offset: texts.offset + len(texts) + 1]
    return memoryview(data)[bounds[0]:bounds[-1]] if data is not None else memoryview(b"")


def sorted_distinct_lines(values: pa.Array, prefix: bytes = b"") -> bytes:
    """`prefix`, then the distinct values in UTF-8 byte order (Python's string order), each
    ending in a newline."""
    return sorted_distinct_joined_lines(values, pa.array(["\n"]), np.zeros(len(values), int),
                                        prefix)


def sorted_distinct_joined_lines(heads: pa.Array, tails: pa.Array, tail_of: np.ndarray,
                                 prefix: bytes = b"") -> bytes:
    """`prefix`, then the distinct lines `heads[i] + tails[tail_of[i]]` (each tail ends in
    the newline), ordered by head, then by tail, both in UTF-8 byte order.

    Sorted and deduplicated as (head, tail number) pairs, then built once, in order: the
    joined lines are neither sorted as long texts nor joined twice. When every tail starts
    with a character below every head's (the Zeek file: a tab; its fields hold no control
    characters), this is also the order and the distinct set of the whole lines."""
    heads = heads.cast(pa.large_string())
    if not len(heads):
        return prefix
    tails = tails.cast(pa.large_string())
    ranks = pc.rank(tails, tiebreaker="dense").to_numpy()[tail_of]  # equal tails, equal rank
    # The first 8 bytes as a number sort in the same order as the texts (zero padding
    # puts a shorter text first), so arrow compares whole texts only among equal prefixes:
    # about 3x faster than sorting the texts alone, same order.
    keyed = pa.table({"prefix": _prefix_keys(heads), "head": heads, "tail": ranks})
    order = pc.sort_indices(keyed, sort_keys=[("prefix", "ascending"), ("head", "ascending"),
                                              ("tail", "ascending")]).to_numpy()
    ordered, ranks = heads.take(order), ranks[order]
    keep = np.ones(len(ordered), dtype=bool)
    keep[1:] = (ranks[1:] != ranks[:-1]) | ~true_where(
        pc.equal(ordered.slice(1), ordered.slice(0, len(ordered) - 1)))
    heads, tails = ordered.filter(pa.array(keep)), tails.take(pa.array(tail_of[order][keep]))
    nothing = pa.scalar("", pa.large_string())
    return _in_blocks(prefix, len(heads), lambda start, count: _text_view(
        pc.binary_join_element_wise(heads.slice(start, count), tails.slice(start, count),
                                    nothing)))


def _prefix_keys(values: pa.Array) -> np.ndarray:
    """Per value (large_string), its first 8 bytes, zero-padded, as a big-endian number.
    Each is one 8-byte read of the text buffer (from a little earlier for the last values,
    so no read passes its end), shifted and cut to the value's length."""
    offsets = np.frombuffer(values.buffers()[1], dtype=np.int64)[
        values.offset: values.offset + len(values) + 1]
    buffer = values.buffers()[2]
    data = np.frombuffer(buffer, dtype=np.uint8) if buffer is not None else np.empty(0, np.uint8)
    if len(data) < 8:
        data = np.concatenate([data, np.zeros(8, dtype=np.uint8)])
    starts = offsets[:-1]
    read_at = np.minimum(starts, len(data) - 8)
    windows = np.lib.stride_tricks.as_strided(data, shape=(len(data) - 7, 8), strides=(1, 1))
    words = windows[read_at].view(">u8").ravel().astype(np.uint64)
    words <<= (8 * (starts - read_at)).astype(np.uint64)
    kept = np.minimum(np.diff(offsets), 8)  # bytes of the value in its key
    mask = np.left_shift(np.uint64(2**64 - 1), ((64 - 8 * kept) % 64).astype(np.uint64))
    return np.where(kept > 0, words & mask, np.uint64(0))
