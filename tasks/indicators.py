"""Indicators: the (detection, MISP attribute type, value) rows an exported event is made of.

`detections_to_indicators` reshapes the long detection table into indicator rows;
`select_indicators` decides which of them may leave the organisation: valid, globally
reachable, not excluded by the user's filters, and once per MISP event.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import idna
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from misp_ndr.task_policy import batch_task
from tasks.detections import ParseProblem
from tasks.ip_addresses import (
    AddressRanges,
    factorize_addresses,
    non_global_mask,
    parse_addresses,
)

INDICATOR_COLUMNS: dict[str, str] = {
    "source_system": "string",
    "detection_id": "string",
    "attribute_type": "string",  # ip-src | ip-dst | domain | hostname
    "value": "string",
}

# detection column -> MISP attribute type, in the order rows are emitted per detection.
ATTRIBUTE_TYPE_BY_COLUMN: dict[str, str] = {
    "src_ip": "ip-src",
    "dst_ip": "ip-dst",
    "domain": "domain",
    "hostname": "hostname",
}
IP_ATTRIBUTE_TYPES = frozenset({"ip-src", "ip-dst"})
NAME_ATTRIBUTE_TYPES = frozenset({"domain", "hostname"})

SELECTION_COUNT_KEYS = ("indicators", "non_global", "filtered", "invalid", "duplicate", "kept")

# Names that never resolve on the public Internet (RFC 6761, 6762, 8375, 9476; ICANN's
# ".internal"): exporting them would only leak internal naming.
NON_GLOBAL_NAME_SUFFIXES = ("localhost", "local", "internal", "home.arpa", "invalid", "test",
                            "alt")

_KEPT, _NON_GLOBAL, _FILTERED, _INVALID = 0, 1, 2, 3
_CATEGORY_NAMES = {_KEPT: "kept", _NON_GLOBAL: "non_global", _FILTERED: "filtered",
                   _INVALID: "invalid"}

# (RE2 pattern matched on the lowercase A-label name, reason), most telling first. The last
# two follow MISP's own domain check (a dot, then a final label of 2+ [a-z0-9-]).
_NAME_CHECKS: tuple[tuple[str, str], ...] = (
    (r"^$", "is empty"),
    (r"[\x00-\x20\x7f]", "contains whitespace or a control character"),
    (r"[^a-z0-9._-]", "contains a character not allowed in a DNS name "
                      "(letters, digits, '-', '_', '.')"),
    (r"^\.|\.\.|\.$", "has an empty label"),
    (r"[^.]{64}", "has a label longer than 63 characters"),
    (r"^.{254}", "is longer than 253 characters"),
    (r"\.[0-9]+$", "ends in a numeric label (an IP address is not a DNS name)"),
    (r"\.[^.]*[^a-z0-9.-][^.]*$|\.[^.]$", "has a last label MISP rejects "
                                         "(needs 2+ letters, digits or '-')"),
)


def empty_indicators() -> pd.DataFrame:
    return pd.DataFrame({name: pd.Series(dtype=dtype) for name, dtype in INDICATOR_COLUMNS.items()})


def detections_to_indicators(detections: pd.DataFrame) -> pd.DataFrame:
    """One indicator row per non-empty src_ip / dst_ip / domain / hostname cell.

    Values are passed on as written (no trimming): judging them is `select_indicators`'
    job. NA and blank cells (Flowmon writes a single space for an empty field) give no row.
    Rows stay in detection order, then in `ATTRIBUTE_TYPE_BY_COLUMN` order.
    """
    frame = detections.reset_index(drop=True)
    parts = []
    for rank, (column, attribute_type) in enumerate(ATTRIBUTE_TYPE_BY_COLUMN.items()):
        values = frame[column].astype("string")
        present = (values.str.strip().str.len() > 0).fillna(False).to_numpy(dtype=bool)
        rows = np.flatnonzero(present)
        parts.append(pd.DataFrame({
            "source_system": frame["source_system"].to_numpy()[rows],
            "detection_id": frame["detection_id"].to_numpy()[rows],
            "attribute_type": attribute_type,
            "value": values.to_numpy()[rows],
            "_order": rows * len(ATTRIBUTE_TYPE_BY_COLUMN) + rank,
        }))
    combined = pd.concat(parts, ignore_index=True).sort_values("_order", kind="stable")
    return combined.drop(columns="_order").astype(INDICATOR_COLUMNS).reset_index(drop=True)


def normalize_dns_names(names: pd.Series | pd.Index | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(normalized, reason) per name: the lowercase A-label form without one trailing dot,
    or None with the reason it is invalid.

    Vectorized (pyarrow RE2) except for non-ASCII names, which go through IDNA 2008 / UTS 46
    (`idna` package) one by one and are stored as punycode; call it on distinct names.
    """
    text = pc.replace_substring_regex(pa.array(names, type=pa.string(), from_pandas=True),
                                      r"\.$", "", max_replacements=1)
    count = len(text)
    reason = np.full(count, None, dtype=object)
    non_ascii_rows = np.flatnonzero(
        ~pc.fill_null(pc.string_is_ascii(text), True).to_numpy(zero_copy_only=False))
    a_labels: list[str] = []
    for row in non_ascii_rows:
        try:
            a_labels.append(idna.encode(text[row].as_py(), uts46=True).decode("ascii"))
        except (idna.IDNAError, UnicodeError) as exc:
            a_labels.append("")
            reason[row] = f"is not a valid internationalized name ({str(exc)[:80]})"
    if len(non_ascii_rows):
        is_replaced = np.zeros(count, dtype=bool)
        is_replaced[non_ascii_rows] = True
        text = pc.replace_with_mask(text, pa.array(is_replaced), pa.array(a_labels, pa.string()))
    lowered = pc.ascii_lower(text)
    reason[pc.is_null(lowered).to_numpy(zero_copy_only=False)] = "is empty"
    for pattern, why in _NAME_CHECKS:  # the first failed check names the problem
        failed = pc.fill_null(pc.match_substring_regex(lowered, pattern), False)
        reason[failed.to_numpy(zero_copy_only=False) & pd.isna(reason)] = why
    normalized = lowered.to_numpy(zero_copy_only=False).astype(object)
    normalized[pd.notna(reason)] = None
    return normalized, reason


def non_global_names(names: np.ndarray) -> np.ndarray:
    """Single-label names and reserved suffixes (NON_GLOBAL_NAME_SUFFIXES)."""
    text = pa.array(names, type=pa.string(), from_pandas=True)
    suffixes = "|".join(suffix.replace(".", r"\.") for suffix in NON_GLOBAL_NAME_SUFFIXES)
    reserved = pc.match_substring_regex(text, rf"^[^.]*$|(^|\.)({suffixes})$")
    return pc.fill_null(reserved, False).to_numpy(zero_copy_only=False)


@dataclass
class IndicatorSelection:
    """What `select_indicators` kept, why the rest was not, and the invalid values."""

    kept: pd.DataFrame  # INDICATOR_COLUMNS, values canonical
    counts: dict[str, int]  # SELECTION_COUNT_KEYS; indicators = sum of the others
    problems: list[ParseProblem] = field(default_factory=list)


@dataclass
class _Judgement:
    """Per indicator row: category, canonical value (None unless valid), invalid reason."""

    category: np.ndarray
    canonical: np.ndarray
    reason: np.ndarray


def _judge_addresses(values: pd.Series, user_ranges: AddressRanges) -> _Judgement:
    """Invalid, then non-global, then user-filtered: the first that applies. A user's IPv4
    filter also covers the IPv6 forms that carry that address (::ffff:a.b.c.d, NAT64, 6to4).

    Every row is parsed (vectorized), then deduplicated on the parsed integers, so each
    distinct address is judged and written out once, whatever its spellings."""
    codes, distinct = factorize_addresses(parse_addresses(values))
    category = np.select([non_global_mask(distinct), user_ranges.covers(distinct)],
                         [_NON_GLOBAL, _FILTERED], default=_KEPT)
    invalid = np.flatnonzero(codes < 0)
    reason = np.full(len(codes), None, dtype=object)
    reason[invalid] = np.where(values.isna().to_numpy()[invalid], "is empty",
                               "is not a valid IPv4 or IPv6 address")
    return _Judgement(np.append(category, _INVALID)[codes],
                      np.append(distinct.canonical_text(), None)[codes], reason)


def _judge_names(values: pd.Series) -> _Judgement:
    codes, distinct = pd.factorize(values)
    normalized, reason = normalize_dns_names(np.asarray(distinct, dtype=object))
    category = np.select([pd.notna(reason), non_global_names(normalized)],
                         [_INVALID, _NON_GLOBAL], default=_KEPT)
    return _spread(codes, category, normalized, reason)


def _spread(codes: np.ndarray, category: np.ndarray, canonical: np.ndarray,
            reason: np.ndarray) -> _Judgement:
    """Per-distinct-value results back onto rows. pd.factorize codes NA as -1, which picks
    the appended 'empty value' entry."""
    return _Judgement(np.append(category, _INVALID)[codes],
                      np.append(canonical.astype(object), None)[codes],
                      np.append(reason.astype(object), "is empty")[codes])


def select_indicators(indicators: pd.DataFrame, user_ranges: AddressRanges) -> IndicatorSelection:
    """Keep what may be shared: valid, global, not matched by the user's filters, and once
    per (source_system, detection_id, attribute_type, canonical value), i.e. per MISP event.

    Each distinct address (deduplicated on its parsed integer value, however it is spelled)
    and each distinct name (pd.factorize) is judged once. Every row lands in exactly one count:
    a repeat of an earlier row of the same event is a `duplicate` whatever its value (so a
    Flowmon event with five targets repeating one private source counts one `non_global`,
    four `duplicate`); first occurrences count as `invalid`, `non_global`, `filtered`
    (user ranges) or `kept`, in that precedence. One ParseProblem per counted invalid row.
    Names: lowercase, one trailing dot stripped, IDNA names as punycode; single-label and
    reserved-suffix names (NON_GLOBAL_NAME_SUFFIXES) count as non-global.
    """
    frame = indicators.reindex(columns=list(INDICATOR_COLUMNS)).astype(INDICATOR_COLUMNS)
    frame = frame.reset_index(drop=True)
    count = len(frame)
    category = np.full(count, _INVALID)
    canonical = np.full(count, None, dtype=object)
    reason = np.full(count, "has an unknown attribute type", dtype=object)
    attribute_types = frame["attribute_type"].to_numpy(dtype=object, na_value=None)
    ip_rows = np.flatnonzero(np.isin(attribute_types, list(IP_ATTRIBUTE_TYPES)))
    name_rows = np.flatnonzero(np.isin(attribute_types, list(NAME_ATTRIBUTE_TYPES)))
    for rows, judgement in (
        (ip_rows, _judge_addresses(frame["value"].iloc[ip_rows], user_ranges)),
        (name_rows, _judge_names(frame["value"].iloc[name_rows])),
    ):
        category[rows], canonical[rows], reason[rows] = (
            judgement.category, judgement.canonical, judgement.reason)

    raw_values = frame["value"].to_numpy(dtype=object, na_value=None)
    dedup_key = frame[["source_system", "detection_id", "attribute_type"]].assign(
        value=np.where(pd.isna(canonical), raw_values, canonical))
    duplicate = dedup_key.duplicated(keep="first").to_numpy()
    counts = {"indicators": count, "duplicate": int(duplicate.sum())}
    for code, name in _CATEGORY_NAMES.items():
        counts[name] = int(((category == code) & ~duplicate).sum())
    kept_rows = np.flatnonzero((category == _KEPT) & ~duplicate)
    kept = frame.iloc[kept_rows].assign(value=canonical[kept_rows]).astype(INDICATOR_COLUMNS)
    return IndicatorSelection(
        kept=kept.reset_index(drop=True),
        counts={key: counts[key] for key in SELECTION_COUNT_KEYS},
        problems=_problems(frame, np.flatnonzero((category == _INVALID) & ~duplicate), reason),
    )


def _problems(frame: pd.DataFrame, rows: np.ndarray, reason: np.ndarray) -> list[ParseProblem]:
    """One ParseProblem per invalid row (few by nature, so a loop over them is fine)."""
    subset = frame.iloc[rows]
    return [
        ParseProblem.make(f"{source} detection {detection}", f"{kind} value {why}",
                          "" if pd.isna(value) else value)
        for source, detection, kind, value, why in zip(
            subset["source_system"], subset["detection_id"], subset["attribute_type"],
            subset["value"], reason[rows], strict=True)
    ]


def select_export_indicators(
    detections: pd.DataFrame, user_ranges: AddressRanges
) -> IndicatorSelection:
    """The indicators worth exporting from a batch of detections."""
    return select_indicators(detections_to_indicators(detections), user_ranges)


select_export_indicators_task = batch_task(select_export_indicators, "select-export-indicators")
