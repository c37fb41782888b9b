"""The Zeek Intel framework file (`misp.intel`) from the rule indicators.

Load it with `redef Intel::read_files += { "/path/to/misp.intel" };` and
`@load frameworks/intel/seen`; Zeek re-reads the file when it changes (it is replaced
atomically). Tab-separated, one indicator per line, `-` for an empty field:

    #fields  indicator  indicator_type  meta.source  meta.desc  meta.url

Types: ip -> Intel::ADDR (Intel::SUBNET for a CIDR), domain and hostname -> Intel::DOMAIN,
url -> Intel::URL written without its scheme (Zeek's HTTP scripts report URLs as
`host/path`), md5 / sha1 / sha256 -> Intel::FILE_HASH. JA3 has no standard intel type and is
left out, counted. `meta.desc` is the MISP event info; `meta.url` links to the event when the
MISP URL is known.

No value can add a line or a column: an indicator holding whitespace or a control
character, or starting with `#` (Zeek would read a comment), is left out and counted; in the
meta fields such characters become spaces.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from tasks.arrow_text import arrow_text, sorted_distinct_joined_lines, true_where
from tasks.detections import ParseProblem
from tasks.flowmon_blacklists import LINE_UNSAFE, line_unsafe

ZEEK_FIELDS = ("indicator", "indicator_type", "meta.source", "meta.desc", "meta.url")
ZEEK_TYPES: dict[str, str] = {
    "ip": "Intel::ADDR",
    "domain": "Intel::DOMAIN",
    "hostname": "Intel::DOMAIN",
    "url": "Intel::URL",
    "md5": "Intel::FILE_HASH",
    "sha1": "Intel::FILE_HASH",
    "sha256": "Intel::FILE_HASH",
}
UNSET = "-"  # Zeek's input framework reads a lone hyphen as an unset field
URL_SCHEME = r"^[A-Za-z][A-Za-z0-9+.\-]*://"
ZEEK_FILE_LABEL = "Zeek intel"
UNSAFE_INDICATOR = "unsafe value (whitespace, control character or leading '#')"
_NEWLINE_EMPTY = (pa.scalar("\n", pa.large_string()), pa.scalar("", pa.large_string()))


def render_zeek_intel(
    indicators: pd.DataFrame, source: str = "MISP", misp_url: str | None = None
) -> tuple[bytes, list[ParseProblem]]:
    """The file's bytes, and the indicators left out as unsafe, each named for the run
    report (a kind Zeek has no type for is expected, and only counted).

    The file: header, then one line per distinct (indicator, type, event), sorted so that
    an unchanged indicator set gives an unchanged file. Lines are built, sorted and
    deduplicated as (indicator, rest of the line) in arrow. No field holds a tab or any
    character below it (they are refused or cleaned), so this orders the lines exactly as
    sorting them as whole texts would."""
    values, types, written, _ = _zeek_rows(indicators)
    header = ("#fields\t" + "\t".join(ZEEK_FIELDS) + "\n").encode()
    # everything after the indicator depends on (type, event info, event UUID) alone: made
    # once per distinct triple, then spread to the lines
    parts = [pd.factorize(pd.Series(pd.arrays.ArrowStringArray(types)), use_na_sentinel=False),
             pd.factorize(indicators["event_info"].astype("string"), use_na_sentinel=False),
             pd.factorize(indicators["event_uuid"].astype("string"), use_na_sentinel=False)]
    triple = parts[0][0][written]
    for codes, uniques in parts[1:]:
        triple = triple * (len(uniques) + 1) + codes[written]
    rows, _ = pd.factorize(triple)
    first = np.flatnonzero(written)[np.unique(rows, return_index=True)[1]]  # one per triple
    source_field = meta_field(pd.Series([source] * len(first), dtype="string"))
    tails = pc.binary_join_element_wise(  # "\t<type>\t<source>\t<desc>\t<url>\n"
        pa.scalar("", pa.large_string()),
        arrow_text(types.take(pa.array(first)), large=True),
        arrow_text(source_field, large=True),
        arrow_text(meta_field(indicators["event_info"].iloc[first]), large=True),
        pc.binary_join_element_wise(arrow_text(_event_links(
            indicators["event_uuid"].iloc[first], misp_url), large=True), *_NEWLINE_EMPTY),
        pa.scalar("\t", pa.large_string()))
    unsafe = np.flatnonzero(true_where(pc.is_valid(types)) & ~written)
    refused = [ParseProblem.make(f"{ZEEK_FILE_LABEL}, attribute {attribute}",
                                 UNSAFE_INDICATOR, repr(value))
               for attribute, value in zip(indicators["attribute_uuid"].iloc[unsafe],
                                           values.take(pa.array(unsafe, pa.int64())).to_pylist(),
                                           strict=True)]
    content = sorted_distinct_joined_lines(values.filter(pa.array(written)), tails, rows,
                                           prefix=header)
    return content, refused


def zeek_intel_skipped(indicators: pd.DataFrame) -> dict[str, int]:
    """Indicators left out of the file, by reason, for the run report."""
    return _zeek_rows(indicators)[3]


def _zeek_rows(indicators: pd.DataFrame) -> tuple[pa.Array, pa.Array, np.ndarray, dict[str, int]]:
    """Per indicator its Zeek indicator text and type; whether its line is written, and
    what was left out, by reason."""
    kinds = arrow_text(indicators["kind"], large=True)
    known = pa.array(list(ZEEK_TYPES), pa.large_string())
    types = pa.array(list(ZEEK_TYPES.values()), pa.large_string()).take(
        pc.index_in(kinds, value_set=known))
    has_type = true_where(pc.is_valid(types))
    skipped = {f"{kind} (no standard Zeek intel type)": int(count) for kind, count in
               pd.Series(pd.arrays.ArrowStringArray(kinds.filter(pa.array(~has_type))))
               .value_counts().items()}
    values = arrow_text(indicators["value"], large=True)
    is_url = pc.fill_null(pc.equal(kinds, "url"), False)
    values = pc.replace_with_mask(values, is_url, pc.replace_substring_regex(  # URLs alone
        values.filter(is_url), URL_SCHEME, "", max_replacements=1))
    is_cidr = pc.fill_null(pc.and_(pc.equal(kinds, "ip"), pc.match_substring(values, "/")),
                           False)
    types = pc.if_else(is_cidr, "Intel::SUBNET", types)
    unsafe = pc.or_(pc.match_substring_regex(values, LINE_UNSAFE),
                    pc.or_(pc.equal(pc.utf8_length(values), 0), pc.starts_with(values, "#")))
    is_unsafe = has_type & ~true_where(pc.invert(pc.fill_null(unsafe, True)))
    if is_unsafe.any():
        skipped[UNSAFE_INDICATOR] = int(is_unsafe.sum())
    return values, types, has_type & ~is_unsafe, skipped


def meta_field(texts: pd.Series) -> pd.Series:
    """Free text made safe for one tab-separated field: every run of whitespace or control
    characters becomes one space; empty -> `-`."""
    cleaned = texts.astype("string").str.replace(f"{LINE_UNSAFE}+", " ", regex=True).str.strip()
    return cleaned.mask(cleaned.fillna("") == "", UNSET)


def _event_links(event_uuids: pd.Series, misp_url: str | None) -> pd.Series:
    if misp_url is None:
        return pd.Series(UNSET, index=event_uuids.index, dtype="string")
    links = f"{misp_url.rstrip('/')}/events/view/" + event_uuids.astype("string")
    return links.mask(line_unsafe(links), UNSET)
