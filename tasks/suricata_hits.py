"""Hits from Suricata eve.json alerts raised by the rules `misp-ndr update-rules` builds.

Which MISP attribute an alert is about, first answer wins:

1. the alert's rule metadata: our rules carry `misp_attribute_uuid`, which Suricata copies
   into the alert (`alert.metadata`, a dict of lists of strings);
2. the sid map `update-rules` wrote with the rules, for sensors that log alerts without
   metadata;
3. a list rule (file hash lists, the names dataset, IP reputation) stands for every indicator
   in its list, so its alert names no attribute: the hit is by value, the global addresses,
   the DNS / TLS / HTTP name or the file hashes the alert carries, matched to indicators
   later;
4. anything else comes from a rule not built from MISP: counted as skipped, not a problem.

eve files run to gigabytes, so lines are streamed and each alert keeps only the few fields a
hit needs; times, addresses and the sid map's values are handled column-wise at the end.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from misp_ndr.task_policy import batch_task
from tasks.detections import (
    HAS_UTC_OFFSET,
    OverlongLine,
    ParseProblem,
    checked_line,
    is_blank,
    record_line,
    times_to_utc,
    unpaired_surrogate,
)
from tasks.ip_addresses import non_global_mask, parse_addresses
from tasks.sighting_hits import HitBatch, normalize_hits
from tasks.suricata import (
    BadRecord,
    alert_essentials,
    dns_name,
    eve_lines,
    host_name,
    json_object,
    stripped_text,
)
from tasks.suricata_rules import HASH_LISTS, IPREP_FILE, NAME_DATASET_FILE

SENSOR_PREFIX = "suricata"
NOT_FROM_MISP = "alert from a rule not built from MISP"
NO_LIST_VALUE = "list rule alert without a matchable value"
ATTRIBUTE_KEY = "misp_attribute_uuid"
LIST_KEY = "misp_list"
# list file (the value of a list rule's `misp_list` metadata) -> the kind of its entries
LIST_FILE_KINDS: dict[str, str] = {
    **{file_name: kind for kind, (_keyword, file_name, _digits) in HASH_LISTS.items()},
    NAME_DATASET_FILE: "name",
    IPREP_FILE: "ip",
}
LIST_KINDS = frozenset(LIST_FILE_KINDS.values())
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.IGNORECASE)

_ALERT_COLUMNS = ["line", "timestamp", "host"]
_CANDIDATE_COLUMNS = ["line", "sid", "attribute_uuid", "value", "kind"]


class _Rule(NamedTuple):
    """What the sid map says about one sid."""

    attribute_uuid: str | None  # None for a list rule
    kind: str | None


@dataclass
class _Collected:
    """What the line loop keeps: per alert the line, timestamp and host; per hit candidate
    the line, sid and either the attribute UUID or a list value of some kind."""

    alerts: list[tuple[int, str, str | None]] = field(default_factory=list)
    candidates: list[tuple[int, int, str | None, str | None, str | None]] = field(
        default_factory=list)
    problems: list[tuple[int, ParseProblem]] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)
    records_read: int = 0

    def skip(self, reason: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1


def read_suricata_hits(path: str | Path, sid_map: pd.DataFrame | None) -> HitBatch:
    with eve_lines(Path(path)) as lines:
        return parse_suricata_hit_lines(lines, sid_map, origin=Path(path).name)


def parse_suricata_hit_lines(
    lines: Iterable[str | bytes | OverlongLine], sid_map: pd.DataFrame | None,
    origin: str = "eve.json",
) -> HitBatch:
    """Hits of eve JSON lines; `sid_map` (columns of `tasks.rule_sids.SID_MAP_COLUMNS`) may
    be None, then only metadata UUIDs and `misp_list` metadata identify MISP rules."""
    rules = _rules_by_sid(sid_map)
    collected = _Collected()
    for number, raw in enumerate(lines, start=1):
        line = record_line(number, raw)
        if is_blank(line):
            continue
        collected.records_read += 1
        checked = checked_line(f"{origin} line {number}", line)
        if isinstance(checked, ParseProblem):
            collected.problems.append((number, checked))
            continue
        line = checked
        try:
            _collect_record(number, json_object(line), rules, collected)
        except BadRecord as exc:
            collected.problems.append(
                (number, ParseProblem.make(f"{origin} line {number}", str(exc), line)))
    return _to_batch(collected, sid_map, origin)


def _rules_by_sid(sid_map: pd.DataFrame | None) -> dict[int, _Rule]:
    if sid_map is None:
        return {}
    table = sid_map[sid_map["sid"].notna()].drop_duplicates("sid")
    uuids = _lowered(table["attribute_uuid"])
    kinds = _lowered(table["kind"])
    return dict(zip(table["sid"].astype("int64").tolist(),
                    map(_Rule._make, zip(_nullable(uuids), _nullable(kinds), strict=True)),
                    strict=True))


def _lowered(column: pd.Series) -> pd.Series:
    return column.astype("string").str.strip().str.lower().replace("", pd.NA)


def _nullable(column: pd.Series) -> list[str | None]:
    return column.astype(object).where(column.notna(), None).tolist()


def _collect_record(
    number: int, record: dict[str, Any], rules: dict[int, _Rule], collected: _Collected
) -> None:
    event_type = record.get("event_type")
    if event_type != "alert":
        if not isinstance(event_type, str) or not event_type:
            raise BadRecord("no event_type")
        collected.skip(f"eve {event_type} record (not an alert)")
        return
    alert, sid, timestamp = alert_essentials(record)
    metadata = alert.get("metadata")
    metadata = metadata if isinstance(metadata, dict) else {}
    rule = rules.get(sid)
    uuid = _metadata_uuid(metadata) or (rule.attribute_uuid if rule else None)
    if uuid:
        candidates = [(number, sid, uuid, None, None)]
    else:
        kind = _list_kind(rule, metadata)
        if kind is None:
            collected.skip(NOT_FROM_MISP)
            return
        values = _list_values(kind, record)
        if not values:
            raise BadRecord(f"{NO_LIST_VALUE} ({kind} list)")
        candidates = [(number, sid, None, value, kind) for value in values]
    host = stripped_text(record.get("host"))
    reason = unpaired_surrogate([timestamp, host, *(value for *_, value, _kind in candidates)])
    if reason is not None:
        raise BadRecord(reason)
    collected.alerts.append((number, timestamp, host))
    collected.candidates.extend(candidates)


def _metadata_entries(metadata: dict[str, Any], key: str) -> list[Any]:
    """Suricata writes each metadata key as a list of strings; a bare value is tolerated."""
    entries = metadata.get(key)
    if entries is None:
        return []
    return entries if isinstance(entries, list) else [entries]


def _metadata_uuid(metadata: dict[str, Any]) -> str | None:
    entries = _metadata_entries(metadata, ATTRIBUTE_KEY)
    for entry in entries:
        if isinstance(entry, str) and _UUID.fullmatch(entry.strip()):
            return entry.strip().lower()
    if entries:
        raise BadRecord(f"alert.metadata.{ATTRIBUTE_KEY} {str(entries[0])[:60]!r} is not a UUID")
    return None


def _list_kind(rule: _Rule | None, metadata: dict[str, Any]) -> str | None:
    """The kind of list a list rule loads, None when the alert is not from a list rule.
    The sid map is asked first; the `misp_list` metadata names the list file."""
    mapped = rule if rule is not None and rule.attribute_uuid is None else None
    if mapped is None and LIST_KEY not in metadata:
        return None
    if mapped is not None and mapped.kind in LIST_KINDS:
        return mapped.kind
    listed = _metadata_entries(metadata, LIST_KEY)
    for entry in listed:
        if isinstance(entry, str) and entry.strip() in LIST_FILE_KINDS:
            return LIST_FILE_KINDS[entry.strip()]
    raise BadRecord(f"list rule of unknown kind (sid map kind "
                    f"{mapped.kind if mapped else None!r}, {LIST_KEY} "
                    f"{[str(entry)[:60] for entry in listed]!r})")


def _list_values(kind: str, record: dict[str, Any]) -> list[str]:
    """The values of the alert that a list of `kind` may have matched, deduplicated. For
    addresses, whether they are global is decided later for all alerts at once."""
    if kind == "ip":
        found = [stripped_text(record.get("src_ip")), stripped_text(record.get("dest_ip"))]
    elif kind == "name":
        found = [dns_name(record.get("dns")), host_name(record)]
    else:
        files = record.get("files")
        holders = [entry for entry in files if isinstance(entry, dict)] \
            if isinstance(files, list) else []
        fileinfo = record.get("fileinfo")
        holders += [fileinfo] if isinstance(fileinfo, dict) else []
        found = [stripped_text(holder.get(kind)) for holder in holders]
    return list(dict.fromkeys(value for value in found if value))


def _to_batch(collected: _Collected, sid_map: pd.DataFrame | None, origin: str) -> HitBatch:
    """Column-wise: timestamps to UTC (an unreadable one drops its alert, as a problem),
    list addresses kept when global, uuid hits given the sid map's value."""
    problems = collected.problems
    alerts = pd.DataFrame(collected.alerts, columns=_ALERT_COLUMNS).set_index("line")
    times = _alert_times(alerts["timestamp"])
    unreadable = times.isna()
    problems += [
        (number, ParseProblem(f"{origin} line {number}", f"unreadable timestamp {stamp[:40]!r} "
                              "(want ISO 8601 with a UTC offset)"))
        for number, stamp in alerts.loc[unreadable, "timestamp"].items()
    ]
    candidates = pd.DataFrame(collected.candidates, columns=_CANDIDATE_COLUMNS)
    candidates = candidates[~unreadable.loc[candidates["line"]].to_numpy()]
    candidates, unmatched = _global_addresses_only(candidates)
    problems += [
        (number, ParseProblem(f"{origin} line {number}",
                              f"{NO_LIST_VALUE} (ip list: no global src_ip or dest_ip)"))
        for number in unmatched
    ]
    hosts = alerts.loc[candidates["line"], "host"].astype("string")
    hits = pd.DataFrame({  # .array: row-aligned, and times stay datetime, not Timestamps
        "time": times.loc[candidates["line"]].array,
        "sensor": (f"{SENSOR_PREFIX}/" + hosts).fillna(SENSOR_PREFIX).array,
        "value": _with_rule_values(candidates, sid_map).array,
        "attribute_uuid": candidates["attribute_uuid"].astype("string").array,
        "origin": (f"{origin} line " + candidates["line"].astype(str)).array,
    })
    return HitBatch(
        hits=normalize_hits(hits),
        problems=[problem for _, problem in sorted(problems, key=lambda item: item[0])],
        records_read=collected.records_read,
        skipped=collected.skipped,
    )


def _alert_times(stamps: pd.Series) -> pd.Series:
    """Suricata always writes an offset; a time without one is not Suricata's: unreadable."""
    stamps = stamps.astype("string")
    with_offset = stamps.str.contains(HAS_UTC_OFFSET, regex=True).fillna(False).astype(bool)
    return times_to_utc(stamps.where(with_offset), "UTC")


def _global_addresses_only(candidates: pd.DataFrame) -> tuple[pd.DataFrame, list[int]]:
    """Drop ip list candidates that are not global addresses (the alert's local host is
    never the listed indicator); also the lines of ip list alerts left with none."""
    is_ip = candidates["kind"].eq("ip").to_numpy(dtype=bool)
    if not is_ip.any():
        return candidates, []
    parsed = parse_addresses(candidates.loc[is_ip, "value"])
    keep = np.ones(len(candidates), dtype=bool)
    keep[is_ip] = parsed.valid & ~non_global_mask(parsed)
    ip_lines = candidates.loc[is_ip, "line"].unique()
    kept_lines = candidates.loc[is_ip & keep, "line"].unique()
    return candidates[keep], np.setdiff1d(ip_lines, kept_lines).tolist()


def _with_rule_values(candidates: pd.DataFrame, sid_map: pd.DataFrame | None) -> pd.Series:
    """A list hit's own value; a uuid hit's value from the sid map row with that sid and
    that attribute (a metadata UUID the map disagrees with gets no value, rather than
    another attribute's)."""
    values = candidates["value"].astype("string")
    if sid_map is None or candidates.empty:
        return values
    rules = sid_map.assign(attribute_uuid=_lowered(sid_map["attribute_uuid"]))
    rules = rules.dropna(subset=["sid", "attribute_uuid"]).drop_duplicates(
        ["sid", "attribute_uuid"])
    keys = pd.DataFrame({"sid": candidates["sid"].astype("int64").to_numpy(),
                         "attribute_uuid": candidates["attribute_uuid"].astype("string")
                         .to_numpy()})
    found = keys.merge(
        pd.DataFrame({"sid": rules["sid"].astype("int64").to_numpy(),
                      "attribute_uuid": rules["attribute_uuid"].to_numpy(),
                      "rule_value": rules["value"].astype("string").to_numpy()}),
        on=["sid", "attribute_uuid"], how="left",
    )
    return values.fillna(pd.Series(found["rule_value"].to_numpy(), index=values.index))


read_suricata_hits_task = batch_task(read_suricata_hits, "read-suricata-hits")
