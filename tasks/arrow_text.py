"""Text columns in arrow, shared by the renderers: taken from pandas without a detour
through Python strings (millions of values), boolean kernel results back as numpy, and
rows joined into the bytes of an output file."""

from __future__ import annotations

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
