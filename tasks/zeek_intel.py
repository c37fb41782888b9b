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

import pandas as pd

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
UNSAFE_INDICATOR = "unsafe value (whitespace, control character or leading '#')"


def render_zeek_intel(
    indicators: pd.DataFrame, source: str = "MISP", misp_url: str | None = None
) -> bytes:
    """The file's bytes: header, then one line per distinct (indicator, type, event), sorted
    so that an unchanged indicator set gives an unchanged file."""
    table, _ = _zeek_rows(indicators, source, misp_url)
    header = "#fields\t" + "\t".join(ZEEK_FIELDS) + "\n"
    rows = table.drop_duplicates().sort_values(list(ZEEK_FIELDS))
    lines = rows["indicator"].str.cat([rows[field] for field in ZEEK_FIELDS[1:]], sep="\t")
    body = "\n".join(lines.tolist()) + "\n" if len(lines) else ""
    return (header + body).encode()


def zeek_intel_skipped(indicators: pd.DataFrame) -> dict[str, int]:
    """Indicators left out of the file, by reason, for the run report."""
    _, skipped = _zeek_rows(indicators, "MISP", None)
    return skipped


def _zeek_rows(
    indicators: pd.DataFrame, source: str, misp_url: str | None
) -> tuple[pd.DataFrame, dict[str, int]]:
    kinds = indicators["kind"].astype("string")
    types = kinds.map(ZEEK_TYPES).astype("string")
    skipped = {f"{kind} (no standard Zeek intel type)": int(count)
               for kind, count in kinds[types.isna()].value_counts().items()}
    chosen = indicators[types.notna()]
    types = types[types.notna()]
    values = chosen["value"].astype("string")
    is_url = (chosen["kind"] == "url").to_numpy(dtype=bool)
    values = values.where(~is_url, values.str.replace(URL_SCHEME, "", n=1, regex=True))
    is_cidr = (chosen["kind"] == "ip") & values.str.contains("/", regex=False)
    types = types.where(~is_cidr.fillna(False).astype(bool), "Intel::SUBNET")
    unsafe = line_unsafe(values) | values.str.startswith("#").fillna(True).astype(bool)
    if unsafe.any():
        skipped[UNSAFE_INDICATOR] = int(unsafe.sum())
    table = pd.DataFrame({
        "indicator": values, "indicator_type": types,
        "meta.source": meta_field(pd.Series(source, index=chosen.index, dtype="string")),
        "meta.desc": meta_field(chosen["event_info"]),
        "meta.url": _event_links(chosen["event_uuid"], misp_url),
    })[~unsafe]
    return table, skipped


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
