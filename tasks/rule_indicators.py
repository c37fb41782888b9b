"""The tables of the rule update job, from MISP attributes to rules with sids.

1. *pulled attributes* (`PULLED_ATTRIBUTE_COLUMNS`): MISP attributes as restSearch or a feed
   gives them, one row per attribute.
2. *rule indicators* (`RULE_INDICATOR_COLUMNS`): what a sensor can match, one row per
   detectable value: composite types split (`ip-dst|port` -> ip + port, `domain|ip` -> two
   rows, `filename|md5` -> md5), values canonical and validated. Rejected values are
   reported, never silently dropped.
3. *rule rows* (`expand_rule_variants`): one row per rule to render. A domain matches in
   DNS, TLS SNI and HTTP Host, so it is three rules; each (attribute, variant) pair owns one
   sid for life.
"""

from __future__ import annotations

import pandas as pd

TAG_SEPARATOR = "\x1f"  # tag names may contain commas, pipes and spaces, never this

PULLED_ATTRIBUTE_COLUMNS: dict[str, str] = {
    "attribute_uuid": "string",
    "event_uuid": "string",
    "event_info": "string",
    "event_date": "datetime64[ns, UTC]",  # the event's date: the age window applies to it
    "attribute_timestamp": "datetime64[ns, UTC]",
    "type": "string",  # MISP attribute type, e.g. ip-dst|port, filename|md5
    "category": "string",
    "value": "string",
    "to_ids": "boolean",
    "deleted": "boolean",
    "tags": "string",  # event and attribute tag names, TAG_SEPARATOR-joined
}

# kind: what a sensor matches. ip, domain, hostname, url, md5, sha1, sha256, ja3
RULE_INDICATOR_COLUMNS: dict[str, str] = {
    "attribute_uuid": "string",
    "event_uuid": "string",
    "event_info": "string",
    "tags": "string",
    "misp_type": "string",  # the attribute's MISP type, for reports and the sid map
    "kind": "string",
    "value": "string",  # canonical: IPs normalized, names lowercase punycode, URLs as given
    "port": "Int32",  # from ip-*|port types, else NA
}

RULE_VARIANTS: dict[str, tuple[str, ...]] = {
    "ip": ("ip",),
    "domain": ("dns", "tls", "http"),
    "hostname": ("dns", "tls", "http"),
    "url": ("http",),
    "ja3": ("ja3",),
}
FILE_HASH_KINDS = ("md5", "sha1", "sha256")  # matched through hash list files, not one rule each


def empty_table(columns: dict[str, str]) -> pd.DataFrame:
    return pd.DataFrame({name: pd.Series(dtype=dtype) for name, dtype in columns.items()})


def expand_rule_variants(indicators: pd.DataFrame) -> pd.DataFrame:
    """One row per rule: the indicator's columns plus `variant` (see RULE_VARIANTS).
    File hashes have no per-indicator rule and produce no row."""
    variants = pd.DataFrame(
        [(kind, variant) for kind, names in RULE_VARIANTS.items() for variant in names],
        columns=["kind", "variant"],
    ).astype("string")
    return indicators.merge(variants, on="kind", how="inner", sort=False)

# Rules that reference list files or datasets (not one attribute each) take fixed sids at
# the top of the configured range; per-attribute sids are allocated below them.
RESERVED_TOP_SIDS = 32
