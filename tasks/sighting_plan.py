"""From hits to the sightings worth sending: resolve values to attributes, then aggregate.

Resolution: a hit that names only a value is looked up in the indicator store the last rule
update kept (the indicators the sensors were given), after canonicalizing it the same way
(IPs in canonical text, names lowercase A-labels, hashes lowercase). Found: it becomes a
sighting of each attribute with that value, by UUID. Not found: it stays a sighting by value,
which MISP narrows with `filters` (IDS-flagged, the pull tags) so that unrelated attributes
with the same value are not sighted.

Aggregation: at most one sighting per indicator per sensor per window. Windows are fixed
(aligned on the Unix epoch), not sliding: a hit always falls in the same window whatever
batch it arrives in, so a replayed or re-split input maps to the same sighting keys and the
ledger can tell what was already sent. The sighting's time is its window's earliest hit.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pandas as pd

from misp_ndr.task_policy import batch_task
from tasks.indicators import normalize_dns_names
from tasks.ip_addresses import parse_addresses

SENSOR_PLACEHOLDER = "{sensor}"
MAX_SOURCE_CHARS = 255  # MISP's sightings.source column
_HASH = r"[0-9A-Fa-f]{32}|[0-9A-Fa-f]{40}|[0-9A-Fa-f]{64}"

SIGHTING_COLUMNS: dict[str, str] = {
    "key": "string",  # identity for the ledger: target|sensor|window start
    "attribute_uuid": "string",  # NA: a sighting by value
    "value": "string",  # canonical value; NA when only the UUID is known
    "sensor": "string",
    "source": "string",  # the sighting's `source` in MISP
    "timestamp": "int64",  # Unix seconds of the window's earliest hit
    "hits": "int64",  # hits aggregated into this sighting
    "origin": "string",  # where its earliest hit was read
}


@dataclass
class SightingPlan:
    sightings: pd.DataFrame  # SIGHTING_COLUMNS
    hits_read: int
    resolved_locally: int  # hits by value that the indicator store turned into UUIDs


def canonical_values(values: pd.Series) -> pd.Series:
    """The form the indicator store keeps, so a sensor's `EVIL.example.` finds
    `evil.example`; values of no known shape (URLs, ...) are only stripped."""
    text = values.astype("string").str.strip()
    result = text.copy()
    addresses = parse_addresses(text)
    is_ip = addresses.valid
    result[is_ip] = addresses.canonical_text()[is_ip]
    is_hash = text.str.fullmatch(_HASH).fillna(False).to_numpy(dtype=bool) & ~is_ip
    result[is_hash] = text[is_hash].str.lower()
    others = ~is_ip & ~is_hash & text.notna().to_numpy()
    if others.any():
        distinct = text[others].unique()
        names, reason = normalize_dns_names(np.asarray(distinct, dtype=object))
        as_name = pd.Series(np.where(pd.isna(reason), names, distinct), index=distinct)
        result[others] = text[others].map(as_name)
    return result.astype("string")


def resolve_hits(hits: pd.DataFrame, store: pd.DataFrame | None) -> tuple[pd.DataFrame, int]:
    """Hits with `attribute_uuid` filled from the store where the value is known there; a
    value held by several attributes gives one row per attribute."""
    hits = hits.assign(value=canonical_values(hits["value"]))
    by_value = hits["attribute_uuid"].isna() & hits["value"].notna()
    if store is None or store.empty or not by_value.any():
        return hits, 0
    known = store[["value", "attribute_uuid"]].dropna().drop_duplicates()
    looked_up = hits[by_value].drop(columns="attribute_uuid").merge(
        known, on="value", how="left", sort=False)
    resolved = int(hits[by_value]["value"].isin(known["value"]).sum())
    resolved_rows = pd.concat([hits[~by_value], looked_up], ignore_index=True)
    return resolved_rows.astype(hits.dtypes.to_dict()), resolved


def aggregate_hits(hits: pd.DataFrame, window_minutes: int, source: str) -> pd.DataFrame:
    """One row per (attribute or value, sensor, window): SIGHTING_COLUMNS."""
    if hits.empty:
        return pd.DataFrame({n: pd.Series(dtype=t) for n, t in SIGHTING_COLUMNS.items()})
    seconds = hits["time"].astype("int64") // 10**9
    width = max(window_minutes * 60, 1)
    target = hits["attribute_uuid"].fillna("value:" + hits["value"])
    frame = pd.DataFrame({
        "target": target, "sensor": hits["sensor"], "window": seconds // width * width,
        "seconds": seconds, "attribute_uuid": hits["attribute_uuid"], "value": hits["value"],
        "origin": hits["origin"],
    }).sort_values("seconds", kind="stable")
    grouped = frame.groupby(["target", "sensor", "window"], sort=True, dropna=False)
    first = grouped.first()
    first["hits"] = grouped.size()
    first = first.reset_index()
    first["key"] = (first["target"] + "|" + first["sensor"] + "|"
                    + first["window"].astype("string"))
    first["source"] = source_names(first["sensor"], source)
    first["timestamp"] = first["seconds"]
    return first[list(SIGHTING_COLUMNS)].astype(SIGHTING_COLUMNS).reset_index(drop=True)


def source_names(sensors: pd.Series, template: str) -> pd.Series:
    """`template` with `{sensor}` replaced (plain replacement: a sensor name is data, never
    a format string), control characters removed, cut to what MISP stores."""
    names = {
        sensor: re.sub(r"[\x00-\x1f\x7f]", "", template.replace(SENSOR_PLACEHOLDER, sensor))
        [:MAX_SOURCE_CHARS]
        for sensor in sensors.dropna().unique()  # a handful of sensors per batch
    }
    return sensors.map(names).astype("string")


def plan_sightings(
    hits: pd.DataFrame, store: pd.DataFrame | None, window_minutes: int, source: str
) -> SightingPlan:
    resolved, resolved_count = resolve_hits(hits, store)
    sightings = aggregate_hits(resolved, window_minutes, source)
    return SightingPlan(sightings, len(hits), resolved_count)


plan_sightings_task = batch_task(plan_sightings, "plan-sightings")
