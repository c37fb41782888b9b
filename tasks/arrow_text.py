"""Text columns in arrow, shared by the renderers: taken from pandas without a detour
through Python strings (millions of values), boolean kernel results back as numpy, and
rows sorted, deduplicated and joined into the bytes of an output file."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

_KEY_CHUNK_ROWS = 1 << 20  # bounds the (rows, 8) index matrix of `_prefix_keys`


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
    each chunk is joined in arrow and its text read from the result's buffer in place.
    Indexing the result (`joined[0]`) would first copy the whole text into a scalar: a
    rules file is hundreds of MB, so that copy and its fresh pages were a third of the
    page faults of a whole update."""
    chunks = rows.chunks if isinstance(rows, pa.ChunkedArray) else [rows]
    pieces: list[bytes | memoryview] = [prefix]
    for chunk in chunks:
        if len(chunk):
            pieces += [_joined_chunk(chunk), b"\n"]
    return b"".join(pieces)


def _joined_chunk(rows: pa.Array) -> memoryview:
    """The rows joined by newlines, a view of the joined array's data buffer."""
    large = pc.sum(pc.binary_length(rows)).as_py() + len(rows) >= 2**31 - 1
    rows = rows.cast(pa.large_string() if large else pa.string())
    list_type, offset_type = ((pa.LargeListArray, pa.int64()) if large
                              else (pa.ListArray, pa.int32()))
    whole = list_type.from_arrays(pa.array([0, len(rows)], offset_type), rows)
    joined = pc.binary_join(whole, pa.scalar("\n", rows.type))
    if joined.null_count:
        raise ValueError("a line to join is missing (null)")
    _validity, offsets, data = joined.buffers()
    start, end = np.frombuffer(offsets, dtype=offset_type.to_pandas_dtype())[
        joined.offset: joined.offset + 2]
    return memoryview(data)[start:end] if data is not None else memoryview(b"")


def sorted_distinct_lines(values: pa.Array, prefix: bytes = b"") -> bytes:
    """`prefix`, then the distinct values in UTF-8 byte order (Python's string order), each
    ending in a newline. Sorted first, then equal neighbours dropped: one pass over
    millions of values instead of a hash table and a sort."""
    values = values.cast(pa.large_string())
    if not len(values):
        return prefix
    # The first 8 bytes as a number sort in the same order as the texts (zero padding
    # puts a shorter text first), so arrow compares whole texts only among equal prefixes:
    # about 3x faster than sorting the texts alone, same order.
    keyed = pa.table({"prefix": _prefix_keys(values), "text": values})
    ordered = values.take(pc.sort_indices(keyed, sort_keys=[("prefix", "ascending"),
                                                           ("text", "ascending")]))
    keep = np.ones(len(ordered), dtype=bool)
    keep[1:] = ~pc.equal(ordered.slice(1), ordered.slice(0, len(ordered) - 1)).to_numpy(
        zero_copy_only=False)
    return joined_lines(ordered.filter(pa.array(keep)), prefix)


def _prefix_keys(values: pa.Array) -> np.ndarray:
    """Per value (large_string, no nulls), its first 8 bytes, zero-padded, big-endian."""
    offsets = np.frombuffer(values.buffers()[1], dtype=np.int64)[
        values.offset: values.offset + len(values) + 1]
    data = np.frombuffer(values.buffers()[2], dtype=np.uint8)
    keys = np.empty(len(values), dtype=np.uint64)
    column = np.arange(8)
    for start in range(0, len(values), _KEY_CHUNK_ROWS):
        starts = offsets[start: start + _KEY_CHUNK_ROWS + 1]
        inside = column < np.diff(starts)[:, None]
        picked = np.where(inside, data[np.where(inside, starts[:-1, None] + column, 0)], 0)
        keys[start: start + len(inside)] = picked.astype(np.uint8).view(">u8").ravel()
    return keys
