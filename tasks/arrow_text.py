"""Text columns in arrow, shared by the renderers: taken from pandas without a detour
through Python strings (millions of values), and boolean kernel results back as numpy."""

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
