"""Hits from Flowmon ADS BLACKLIST events, read by the export job's parsers (REST API or
the custom-script batch), kept only when the blacklist that fired holds MISP indicators.

ADS names the blacklist and the listed indicator only in the event's detail text, e.g.
`Host: communication with blacklisted address 185.16.38.113 (blacklist MISP-ips)` or
`Domain: DNS query for blacklisted domain evil.example (blacklist MISP-domains)`. The exact
wording is not publicly documented (the samples follow the pattern above), so the reading is
tolerant and every event it cannot place is reported, never dropped:

- blacklist name: the word after `blacklist` (or `blacklist:`); none found is a problem,
  unless the configured names include `*` (every blacklist counts);
- indicator: the domain ADS names (Domain submethod), else the address after `address`,
  else the event's global (public) source and target addresses.
"""

from __future__ import annotations

import fnmatch

import numpy as np
import pandas as pd

from misp_ndr.task_policy import batch_task
from tasks.detections import ParsedBatch, ParseProblem
from tasks.ip_addresses import non_global_mask, parse_addresses
from tasks.sighting_hits import HitBatch, empty_hits, normalize_hits

BLACKLIST_METHOD = "BLACKLIST"
NOT_BLACKLIST = "ADS event of another method than BLACKLIST"
OTHER_BLACKLIST = "hit on a blacklist not holding MISP indicators"
_BLACKLIST_NAME = r"(?i)\bblacklist\b:?\s+['\"]?([^\s'\"(),;]+)"
_ADDRESS = r"(?i)\baddress(?:es)?:?\s+([0-9a-f:.]+[0-9a-f])"


def blacklist_hits(batch: ParsedBatch, blacklists: list[str]) -> HitBatch:
    """The hits of `batch`'s BLACKLIST events on the blacklists named by `blacklists`
    (case-insensitive shell patterns)."""
    detections = batch.detections
    is_blacklist = detections["method"].str.upper().eq(BLACKLIST_METHOD).fillna(False)
    events = detections[is_blacklist.astype(bool)]
    other = detections.loc[~is_blacklist.astype(bool), "detection_id"].nunique()
    skipped = {**batch.skipped, **({NOT_BLACKLIST: int(other)} if other else {})}
    result = HitBatch(empty_hits(), list(batch.problems), batch.records_read, skipped)
    if events.empty:
        return result
    names = events["detail"].str.extract(_BLACKLIST_NAME, expand=False)
    wanted = _wanted_blacklists(names, blacklists)
    unnamed = names.isna().to_numpy() & ~wanted
    result.problems += [
        ParseProblem.make(f"flowmon event {event_id}",
                          "BLACKLIST event without a blacklist name in its detail; "
                          "cannot tell whether MISP sourced it", detail or "")
        for event_id, detail in events.loc[unnamed, ["detection_id", "detail"]]
        .drop_duplicates("detection_id").itertuples(index=False)
    ]
    foreign = int(events.loc[~wanted & ~unnamed, "detection_id"].nunique())
    if foreign:
        result.skipped[OTHER_BLACKLIST] = foreign
    result.hits = _indicator_rows(events[wanted])
    placed = set(result.hits["origin"].str.removeprefix("flowmon event "))
    result.problems += [
        ParseProblem.make(f"flowmon event {event_id}", "BLACKLIST event naming no indicator "
                          "(no domain, no address, no public source or target)", detail or "")
        for event_id, detail in events.loc[wanted, ["detection_id", "detail"]]
        .drop_duplicates("detection_id").itertuples(index=False) if event_id not in placed
    ]
    return result


def _wanted_blacklists(names: pd.Series, patterns: list[str]) -> np.ndarray:
    if "*" in patterns:
        return np.ones(len(names), dtype=bool)
    lowered = [pattern.lower() for pattern in patterns]
    verdict = {name: any(fnmatch.fnmatchcase(name.lower(), p) for p in lowered)
               for name in names.dropna().unique()}  # a handful of blacklist names
    return names.map(verdict).fillna(False).to_numpy(dtype=bool)


def _indicator_rows(events: pd.DataFrame) -> pd.DataFrame:
    """One hit per event and indicator: the named domain or address, else the event's
    global addresses (the long table has one row per target, so addresses repeat)."""
    named = events["domain"].fillna(events["detail"].str.extract(_ADDRESS, expand=False))
    addresses = pd.concat([events["src_ip"], events["dst_ip"]])
    parsed = parse_addresses(addresses)
    is_global = pd.Series(parsed.valid & ~non_global_mask(parsed), index=addresses.index)
    fallback = pd.DataFrame({"row": addresses.index, "value": addresses})[is_global.to_numpy()]
    fallback = fallback[named.loc[fallback["row"]].isna().to_numpy()]
    rows = pd.concat([
        pd.DataFrame({"row": named.index, "value": named})[named.notna().to_numpy()],
        fallback,
    ])
    base = events.loc[rows["row"]]
    sensor = ("flowmon/" + base["sensor"]).fillna("flowmon")
    hits = pd.DataFrame({
        "time": base["time"].to_numpy(), "sensor": sensor.to_numpy(),
        "value": rows["value"].to_numpy(), "attribute_uuid": pd.NA,
        "origin": ("flowmon event " + base["detection_id"]).to_numpy(),
    }).drop_duplicates(["origin", "value"])
    return normalize_hits(hits)


blacklist_hits_task = batch_task(blacklist_hits, "flowmon-blacklist-hits")
