"""Flowmon ADS blacklist files from the rule indicators: one indicator per line.

Files: `misp-ip.txt` (IP addresses), `misp-domain.txt` (domains and host names),
`misp-url.txt` (URLs); each sorted, without duplicates, `\\n` line ends, empty when MISP has
nothing of that kind (an empty list clears the blacklist rather than keeping stale ones).

Pointing Flowmon ADS at them: ADS > Settings > Processing > Blacklists, add a custom
blacklist source whose URL is where these files are served (any HTTP(S) server reading the
output directory), or copy them to the appliance; ADS refreshes custom sources on its own
schedule. The exact line format ADS expects for custom sources was not found in public
documentation; one indicator per line is the working assumption, and this module is the one
place to change if an appliance wants another.

A value with whitespace or a control character (line breaks of any kind, tabs, NUL, U+2028)
is never written: it would spread one indicator over two lines, the second one an indicator
nobody chose. Such values are returned as problems.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from tasks.arrow_text import joined_lines
from tasks.detections import ParseProblem

BLACKLIST_KINDS: dict[str, tuple[str, ...]] = {
    "misp-ip.txt": ("ip",),
    "misp-domain.txt": ("domain", "hostname"),
    "misp-url.txt": ("url",),
}
# Literal characters, not `\s`: pandas runs this through Python's re or RE2 depending on
# the string storage, and the two disagree on what `\s` covers.
LINE_UNSAFE = "[\x00-\x20\x7f-\xa0\u1680\u2000-\u200b\u2028\u2029\u202f\u205f\u3000\ufeff]"
_KEY_CHUNK_ROWS = 1 << 20  # bounds the (rows, 8) index matrix of `_prefix_keys`


def line_unsafe(values: pd.Series) -> pd.Series:
    """True where a value is empty, missing, or holds whitespace or a control character."""
    text = values.astype("string")
    unsafe = text.str.contains(LINE_UNSAFE, regex=True) | (text.str.len() == 0)
    return unsafe.fillna(True).astype(bool)


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


def render_flowmon_blacklists(
    indicators: pd.DataFrame,
) -> tuple[dict[str, bytes], list[ParseProblem]]:
    """File name -> content, and the values refused."""
    files: dict[str, bytes] = {}
    problems: list[ParseProblem] = []
    kinds = indicators["kind"]
    for name, blacklist_kinds in BLACKLIST_KINDS.items():
        chosen = indicators.loc[kinds.isin(blacklist_kinds), ["attribute_uuid", "value"]]
        unsafe = line_unsafe(chosen["value"])
        problems += [
            ParseProblem.make(f"{name}, attribute {attribute}",
                              "value holds whitespace or a control character; one indicator "
                              "would spread over two lines", repr(value))
            for attribute, value in chosen.loc[unsafe].itertuples(index=False)
        ]
        values = pd.array(chosen.loc[~unsafe, "value"], dtype="string").__arrow_array__()
        files[name] = sorted_distinct_lines(values.combine_chunks())
    return files, problems
