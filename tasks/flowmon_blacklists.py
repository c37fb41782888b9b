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

import pandas as pd

from tasks.arrow_text import sorted_distinct_lines
from tasks.detections import ParseProblem

BLACKLIST_KINDS: dict[str, tuple[str, ...]] = {
    "misp-ip.txt": ("ip",),
    "misp-domain.txt": ("domain", "hostname"),
    "misp-url.txt": ("url",),
}
# Literal characters, not `\s`: pandas runs this through Python's re or RE2 depending on
# the string storage, and the two disagree on what `\s` covers.
LINE_UNSAFE = "[\x00-\x20\x7f-\xa0\u1680\u2000-\u200b\u2028\u2029\u202f\u205f\u3000\ufeff]"


def line_unsafe(values: pd.Series) -> pd.Series:
    """True where a value is empty, missing, or holds whitespace or a control character."""
    text = values.astype("string")
    unsafe = text.str.contains(LINE_UNSAFE, regex=True) | (text.str.len() == 0)
    return unsafe.fillna(True).astype(bool)


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
