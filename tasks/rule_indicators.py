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

from collections import Counter

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from misp_ndr.task_policy import batch_task
from tasks.arrow_text import arrow_text
from tasks.detections import ParseProblem
from tasks.flowmon_blacklists import LINE_UNSAFE
from tasks.indicators import non_global_names, normalize_dns_names
from tasks.ip_addresses import non_global_mask, parse_addresses

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


# --- normalization: pulled attributes -> rule indicators ----------------------------------

_WHOLE, _LEFT, _RIGHT = "whole", "left", "right"  # which piece of a value holds the part
_HASH_LENGTHS = {"md5": 32, "sha1": 40, "sha256": 64, "ja3": 32}
_HASH_NAMES = {"md5": "an MD5 hash", "sha1": "a SHA-1 hash", "sha256": "a SHA-256 hash",
               "ja3": "a JA3 fingerprint (MD5)"}

# MISP type -> the (kind, piece) parts a sensor can match. Composite values split at their
# last '|': neither a hash, a port nor an address holds one, a file name may.
_TYPE_PARTS: dict[str, tuple[tuple[str, str], ...]] = {
    "ip-src": (("ip", _WHOLE),),
    "ip-dst": (("ip", _WHOLE),),
    "ip-src|port": (("ip", _LEFT),),
    "ip-dst|port": (("ip", _LEFT),),
    "domain": (("domain", _WHOLE),),
    "hostname": (("hostname", _WHOLE),),
    "domain|ip": (("domain", _LEFT), ("ip", _RIGHT)),
    "url": (("url", _WHOLE),),
    "md5": (("md5", _WHOLE),),
    "sha1": (("sha1", _WHOLE),),
    "sha256": (("sha256", _WHOLE),),
    "filename|md5": (("md5", _RIGHT),),
    "filename|sha1": (("sha1", _RIGHT),),
    "filename|sha256": (("sha256", _RIGHT),),
    "ja3-fingerprint-md5": (("ja3", _WHOLE),),
}
HANDLED_TYPES: tuple[str, ...] = tuple(_TYPE_PARTS)
PORT_TYPES = frozenset({"ip-src|port", "ip-dst|port"})  # the right piece is the port
MAX_URL_CHARS = 2048

EXCLUDED_INACTIVE = "excluded: deleted or not IDS-flagged"
_NOT_A_PAIR = "has no '|' between its two parts"
_EMPTY = "is empty"
# scheme:// (optional), user@ (optional), a host (bracketed IPv6, or 1+ characters), an
# optional :port, then the path, query, fragment or the end: "http:///x" has no host.
_URL_HOST = (r"^(?:[A-Za-z][A-Za-z0-9+.\-]*://)?(?:[^/?#@]*@)?"
             r"(?:\[[0-9A-Fa-f:.]+\]|[^/?#:@\[\]]+)(?::[0-9]+)?(?:[/?#]|$)")


def normalize_rule_indicators(
    pulled: pd.DataFrame,
) -> tuple[pd.DataFrame, list[ParseProblem], dict[str, int]]:
    """Pulled attributes (PULLED_ATTRIBUTE_COLUMNS) -> rule indicators, what was rejected,
    and counts: `kept <kind>`, `rejected <kind> <reason>`, `skipped type <type>` and
    `EXCLUDED_INACTIVE`.

    Deleted and non-IDS rows are no indicators (the caller removes their earlier ones);
    types outside HANDLED_TYPES are counted and skipped. Every part is validated and made
    canonical: addresses strict and globally routable (RFC 5952 text for IPv6; networks
    are rejected, a sensor rule here is about one host), names as lowercase A-labels
    without a trailing dot and not internal (single label, reserved suffix), ports 1-65535,
    hashes lowercase hex of their exact length, URLs as given but with a host, no
    whitespace or control character and at most MAX_URL_CHARS. Each rejected part is one
    ParseProblem naming the attribute. `domain|ip` gives two independent parts.
    """
    frame = pulled.reindex(columns=list(PULLED_ATTRIBUTE_COLUMNS))
    frame = frame.astype(PULLED_ATTRIBUTE_COLUMNS).reset_index(drop=True)
    counts: Counter[str] = Counter()
    active = (frame["to_ids"].fillna(False) & ~frame["deleted"].fillna(False)).to_numpy(bool)
    if (~active).any():
        counts[EXCLUDED_INACTIVE] = int((~active).sum())
    handled = frame["type"].isin(HANDLED_TYPES).to_numpy(bool)
    for misp_type, count in frame.loc[active & ~handled, "type"].value_counts().items():
        counts[f"skipped type {misp_type}"] = int(count)

    parts = _split_parts(frame, np.flatnonzero(active & handled))
    value, port, kind_reason, reason = _judge_parts(parts)
    kept = pd.isna(reason)
    for kind, count in pd.Series(parts["kind"][kept]).value_counts().items():
        counts[f"kept {kind}"] = int(count)
    for key, count in pd.Series(
            (kind_reason[~kept] + " " + reason[~kept]).astype(object)).value_counts().items():
        counts[f"rejected {key}"] = int(count)

    rows = pa.array(parts["row"][kept], pa.int64())
    carried = {name: pd.arrays.ArrowStringArray(arrow_text(frame[name]).take(rows))
               for name in ("attribute_uuid", "event_uuid", "event_info", "tags")}
    indicators = pd.DataFrame({
        **carried,
        "misp_type": parts["misp_type"][kept],
        "kind": parts["kind"][kept],
        "value": value[kept],
        "port": port[kept],
    }).astype(RULE_INDICATOR_COLUMNS)
    problems = _rejections(frame, parts, ~kept, kind_reason, reason)
    return indicators, problems, dict(counts)


def _split_parts(frame: pd.DataFrame, rows: np.ndarray) -> dict[str, np.ndarray]:
    """One entry per (attribute row, part), in row order: its kind, its raw text (None if
    the composite value has no '|'), and for ip-*|port types the raw port. Types are
    worked on as codes of the few distinct ones: millions of rows, a dozen types."""
    type_codes, type_names = pd.factorize(frame["type"].to_numpy(dtype=object)[rows])
    whole = arrow_text(frame["value"]).take(pa.array(rows, pa.int64()))
    pieces = pc.extract_regex(whole, r"(?s)^(?P<left>.*)\|(?P<right>[^|]*)$")
    by_piece = {
        _WHOLE: whole.to_numpy(zero_copy_only=False),
        _LEFT: pc.struct_field(pieces, "left").to_numpy(zero_copy_only=False),
        _RIGHT: pc.struct_field(pieces, "right").to_numpy(zero_copy_only=False),
    }
    is_port_type = np.isin(type_names, list(PORT_TYPES))[type_codes]
    slots: list[dict[str, np.ndarray]] = []
    for slot in range(max(len(parts) for parts in _TYPE_PARTS.values())):
        spec = [(_TYPE_PARTS[name][slot] if len(_TYPE_PARTS.get(name, ())) > slot else None)
                for name in type_names]
        present = np.flatnonzero(np.array([part is not None for part in spec], bool)[type_codes])
        codes = type_codes[present]
        kind = np.array([part and part[0] for part in spec], dtype=object)[codes]
        piece = np.array([part and part[1] for part in spec], dtype=object)[codes]
        raw = np.full(len(present), None, dtype=object)
        for name, texts in by_piece.items():
            here = piece == name
            raw[here] = texts[present[here]]
        slots.append({
            "order": present * 2 + slot, "row": rows[present],
            "misp_type": np.asarray(type_names, dtype=object)[codes], "kind": kind, "raw": raw,
            "split_failed": (piece != _WHOLE) & pd.isna(raw),
            "port_raw": np.where(is_port_type[present], by_piece[_RIGHT][present], None),
        })
    table = {name: np.concatenate([slot[name] for slot in slots]) for name in slots[0]}
    order = np.argsort(table["order"], kind="stable")
    return {name: values[order] for name, values in table.items()}


def _judge_parts(
    parts: dict[str, np.ndarray],
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(canonical value, port, what the reason is about (the kind, "port" or "value"),
    reason or None) per part."""
    count = len(parts["kind"])
    value = np.full(count, None, dtype=object)
    reason = np.full(count, None, dtype=object)
    kind_reason = parts["kind"].astype(object).copy()
    raw = parts["raw"]
    for kind, judge in (("ip", _judge_addresses), ("domain", _judge_names),
                        ("hostname", _judge_names), ("url", _judge_urls),
                        *((name, _judge_hashes) for name in _HASH_LENGTHS)):
        rows = np.flatnonzero(parts["kind"] == kind)
        if len(rows):
            value[rows], reason[rows] = judge(kind, raw[rows])
    empty = pd.isna(raw) | (pd.Series(raw, dtype="string").str.len() == 0).fillna(True)
    reason[empty.to_numpy(bool)] = _EMPTY
    split_failed = parts["split_failed"].astype(bool)
    reason[split_failed], kind_reason[split_failed] = _NOT_A_PAIR, "value"
    port, port_reason = _judge_ports(parts["port_raw"])
    bad_port = pd.isna(reason) & pd.notna(port_reason)
    reason[bad_port], kind_reason[bad_port] = port_reason[bad_port], "port"
    value[pd.notna(reason)] = None
    return value, port, kind_reason, reason


def _judge_addresses(kind: str, raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    codes, distinct = pd.factorize(pd.Series(raw, dtype="string"))
    distinct = np.asarray(distinct, dtype=object)
    parsed = parse_addresses(distinct)
    is_network = pd.Series(distinct, dtype="string").str.contains("/", regex=False)
    reason = _first_failure(len(distinct), (
        (is_network.fillna(False).to_numpy(bool), "is a network (CIDR), not one address"),
        (~parsed.valid, "is not a valid IPv4 or IPv6 address"),
        (non_global_mask(parsed), "is not a globally routable address"),
    ))
    return _spread(codes, parsed.canonical_text(), reason)


def _judge_names(kind: str, raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    codes, distinct = pd.factorize(pd.Series(raw, dtype="string"))
    normalized, reason = normalize_dns_names(np.asarray(distinct, dtype=object))
    internal = non_global_names(normalized) & pd.isna(reason)
    reason[internal] = "is not a public DNS name (single label or reserved suffix)"
    return _spread(codes, normalized, reason)


def _judge_urls(kind: str, raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    text = pa.array(raw, type=pa.string(), from_pandas=True)

    def failed(check: pa.Array) -> np.ndarray:
        return pc.fill_null(check, False).to_numpy(zero_copy_only=False)

    reason = _first_failure(len(raw), (
        (failed(pc.greater(pc.utf8_length(text), MAX_URL_CHARS)),
         f"is longer than {MAX_URL_CHARS} characters"),
        # every character a sensor file would read as a break or a field end (C1 controls,
        # U+2028, no-break and ideographic spaces, ...): a URL on the wire has them escaped
        (failed(pc.match_substring_regex(text, LINE_UNSAFE)),
         "contains whitespace or a control character"),
        (failed(pc.invert(pc.match_substring_regex(text, _URL_HOST))), "has no host"),
    ))
    return raw.astype(object), reason


def _judge_hashes(kind: str, raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    lowered = pc.utf8_lower(pa.array(raw, type=pa.string(), from_pandas=True))
    length = _HASH_LENGTHS[kind]
    good = pc.fill_null(pc.match_substring_regex(lowered, f"^[0-9a-f]{{{length}}}$"), False)
    reason = np.where(good.to_numpy(zero_copy_only=False), None,
                      f"is not {length} hexadecimal digits ({_HASH_NAMES[kind]})")
    return lowered.to_numpy(zero_copy_only=False).astype(object), reason.astype(object)


def _judge_ports(raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(port or NA, reason or None); rows without a port (raw None) are fine."""
    text = pd.Series(raw, dtype="string")
    digits = text.str.fullmatch(r"[0-9]{1,5}").fillna(False).astype(bool)
    number = pd.to_numeric(text.where(digits), errors="coerce").astype("Int64")
    good = number.between(1, 65535).fillna(False).to_numpy(bool)
    reason = np.where(text.notna().to_numpy(bool) & ~good,
                      "is not a number from 1 to 65535", None).astype(object)
    return pd.array(number.where(good), dtype="Int32"), reason


def _first_failure(count: int, checks: tuple[tuple[np.ndarray, str], ...]) -> np.ndarray:
    """Per row, the reason of the first check it fails (None if it passes them all)."""
    reason = np.full(count, None, dtype=object)
    for failed, why in checks:
        reason[failed & pd.isna(reason)] = why
    return reason


def _spread(codes: np.ndarray, canonical: np.ndarray,
            reason: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-distinct results back onto parts; NA values (code -1) pick the appended entry."""
    return (np.append(canonical.astype(object), None)[codes],
            np.append(reason.astype(object), _EMPTY)[codes])


def _rejections(frame: pd.DataFrame, parts: dict[str, np.ndarray], rejected: np.ndarray,
                kind_reason: np.ndarray, reason: np.ndarray) -> list[ParseProblem]:
    """One ParseProblem per rejected part (few by nature: a loop over them is fine)."""
    rows = parts["row"][rejected]
    return [
        ParseProblem.make(f"MISP attribute {uuid}", f"{misp_type}: {about} {why}",
                          "" if pd.isna(value) else value)
        for uuid, value, misp_type, about, why in zip(
            frame["attribute_uuid"].iloc[rows], frame["value"].iloc[rows],
            parts["misp_type"][rejected], kind_reason[rejected], reason[rejected],
            strict=True)
    ]


normalize_rule_indicators_task = batch_task(normalize_rule_indicators, "normalize-rule-indicators")
