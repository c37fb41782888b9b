"""Detections and their indicators become MISP event bodies (pure data, no network).

Every UUID is derived from what the event describes (uuid5), never random: re-running an
export, or retrying it after a crash, addresses the same MISP event and the same
attributes, so MISP answers "already exists" instead of storing a duplicate.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from misp_ndr.config import ExportSettings
from misp_ndr.task_policy import batch_task

# Fixed forever: changing it would re-key every event ever exported.
PROJECT_NAMESPACE = uuid.UUID("6f1d2c7e-5b1a-5e0c-9a57-3c1e8d4b2a90")
_NAMESPACE_BYTES = PROJECT_NAMESPACE.bytes

ATTRIBUTE_CATEGORY = "Network activity"
INHERIT_EVENT_DISTRIBUTION = 5
UNDEFINED_THREAT_LEVEL = 4
MAX_INFO_CHARS = 200
MAX_TAG_CHARS = 255

# Flowmon ADS priority -> MISP threat_level_id (1 high, 2 medium, 3 low), as the seed did.
THREAT_LEVEL_BY_PRIORITY: dict[str, int] = {
    "critical": 1,
    "high": 1,
    "medium": 2,
    "low": 3,
    "info": 3,
}

DETECTION_KEY = ["source_system", "detection_id"]
_CONTROL_CHARS = r"[\x00-\x1f\x7f-\x9f]+"
_UNIX_EPOCH = pd.Timestamp(0, tz="UTC")


def event_uuid(source_system: str, detection_id: str) -> str:
    """The MISP event UUID of one detection: the same detection always maps to it."""
    return project_uuid5(f"{source_system}:{detection_id}")


def attribute_uuid(event: str, attribute_type: str, value: str) -> str:
    """Scoped by the event, so the same IP in two events gets two attributes (MISP needs
    attribute UUIDs unique per instance), while an edit of one event never duplicates."""
    return project_uuid5(f"{event}|{attribute_type}|{value}")


def project_uuid5(name: str) -> str:
    """`str(uuid.uuid5(PROJECT_NAMESPACE, name))` without building UUID objects: four times
    faster on the hundreds of thousands of attributes of a big batch (tests check both
    agree)."""
    digest = hashlib.sha1(_NAMESPACE_BYTES + name.encode("utf-8")).hexdigest()
    variant = "89ab"[int(digest[16], 16) & 0x3]  # RFC 4122 variant bits: 10xx
    return (f"{digest[:8]}-{digest[8:12]}-5{digest[13:16]}-"
            f"{variant}{digest[17:20]}-{digest[20:32]}")


@dataclass(frozen=True)
class EventDraft:
    """One MISP event ready to send: `event` is the body of MISP's JSON "Event" object."""

    uuid: str
    source_system: str
    detection_id: str
    tags: list[str]
    event: dict[str, Any]
    fingerprint: str  # sha256 of the canonical event JSON: equal means "nothing changed"


def content_fingerprint(event: dict[str, Any]) -> str:
    """Key order and whitespace must not count as a change, hence canonical JSON."""
    canonical = json.dumps(event, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def build_event_drafts(
    detections: pd.DataFrame, indicators: pd.DataFrame, export: ExportSettings
) -> list[EventDraft]:
    """One draft per detection that kept at least one indicator.

    An indicator whose detection is missing from `detections` still gets its event (with
    a generic title) rather than vanishing. Drafts come out sorted by event UUID and
    attributes by (type, value), so equal input always gives equal fingerprints.
    """
    if indicators.empty:
        return []
    events = _event_table(detections, indicators, export)
    attributes_by_event = _attributes_by_event(indicators, events, export)
    return [
        _draft(row, attributes_by_event[row["uuid"]], export)
        for row in _records(events)
    ]


def _event_table(
    detections: pd.DataFrame, indicators: pd.DataFrame, export: ExportSettings
) -> pd.DataFrame:
    """One row per detection that has indicators, with every event-level field computed
    column-wise."""
    summary = (
        detections.groupby(DETECTION_KEY, sort=False, dropna=False)
        .agg(
            time=("time", "min"),
            method=("method", "first"),
            method_description=("method_description", "first"),
            priority=("priority", "first"),
            detail=("detail", "first"),
        )
        .reset_index()
    )
    wanted = indicators[DETECTION_KEY].drop_duplicates()
    events = wanted.merge(summary, on=DETECTION_KEY, how="left")
    events["uuid"] = [
        event_uuid(source, detection)
        for source, detection in zip(_pylist(events["source_system"]),
                                     _pylist(events["detection_id"]), strict=True)
    ]
    events["info"] = _event_info(events)
    events["method_tag"] = _method_tags(events, export)
    events["threat_level_id"] = _threat_levels(events["priority"], export)
    events["date"] = events["time"].dt.strftime("%Y-%m-%d").astype("string")
    events["timestamp"] = _epoch_seconds(events["time"])
    return events.sort_values("uuid", kind="stable").reset_index(drop=True)


def _event_info(events: pd.DataFrame) -> pd.Series:
    """'<method description>: <detail>', the seed's title, made safe for MISP's UI."""
    fallback = (events["source_system"].fillna("unknown") + " detection "
                + events["detection_id"].fillna("?"))
    title = events["method_description"].fillna(events["method"]).fillna(fallback)
    info = clean_text(title + (": " + events["detail"]).fillna(""))
    too_long = info.str.len() > MAX_INFO_CHARS
    info = info.mask(too_long, info.str.slice(0, MAX_INFO_CHARS - 3).str.rstrip() + "...")
    return info.mask(info == "", fallback)


def clean_text(text: pd.Series) -> pd.Series:
    """Control characters (newlines, escapes) break MISP's one-line fields and logs."""
    text = text.astype("string").str.replace(_CONTROL_CHARS, " ", regex=True)
    return text.str.replace(r"\s{2,}", " ", regex=True).str.strip()


def _method_tags(events: pd.DataFrame, export: ExportSettings) -> pd.Series:
    tags = [
        export.method_tag_template.format(source=source, method=method or "unknown")
        for source, method in zip(_pylist(events["source_system"]), _pylist(events["method"]),
                                  strict=True)
    ]
    cleaned = clean_text(pd.Series(tags, index=events.index, dtype="string"))
    return cleaned.str.slice(0, MAX_TAG_CHARS)


def _threat_levels(priority: pd.Series, export: ExportSettings) -> pd.Series:
    if export.threat_level != "auto":
        return pd.Series(int(export.threat_level), index=priority.index, dtype="int64")
    levels = priority.astype("string").str.lower().map(THREAT_LEVEL_BY_PRIORITY)
    return levels.fillna(UNDEFINED_THREAT_LEVEL).astype("int64")


def _epoch_seconds(times: pd.Series) -> pd.Series:
    seconds = (times - _UNIX_EPOCH).dt.total_seconds()
    return np.floor(seconds).astype("Int64")


def _attributes_by_event(
    indicators: pd.DataFrame, events: pd.DataFrame, export: ExportSettings
) -> dict[str, list[dict[str, Any]]]:
    """Every attribute dict, built column-wise, then cut into per-event slices."""
    per_event = events[[*DETECTION_KEY, "uuid", "method", "timestamp"]]
    frame = indicators[[*DETECTION_KEY, "attribute_type", "value"]].merge(
        per_event, on=DETECTION_KEY, how="left"
    )
    frame = frame.sort_values(["uuid", "attribute_type", "value"], kind="stable")
    frame = frame.drop_duplicates(["uuid", "attribute_type", "value"]).reset_index(drop=True)
    owners, types, values = (_pylist(frame[name]) for name in ("uuid", "attribute_type", "value"))
    comment = frame["source_system"] + " detection " + frame["detection_id"]
    attributes = pd.DataFrame({
        "uuid": [attribute_uuid(*key) for key in zip(owners, types, values, strict=True)],
        "type": frame["attribute_type"],
        "category": ATTRIBUTE_CATEGORY,
        "value": frame["value"],
        "to_ids": export.to_ids,
        "distribution": INHERIT_EVENT_DISTRIBUTION,
        "comment": clean_text(comment + (" (" + frame["method"] + ")").fillna("")),
        "timestamp": frame["timestamp"],
    })
    records = _records(attributes)
    owner_array = np.asarray(owners, dtype=object)
    starts = np.flatnonzero(np.r_[True, owner_array[1:] != owner_array[:-1]]).tolist()
    ends = [*starts[1:], len(owners)]
    return {owners[start]: records[start:end] for start, end in zip(starts, ends, strict=True)}


def _pylist(column: pd.Series) -> list[Any]:
    """Python objects, NA as None: iterating an Arrow-backed Series item by item is slow."""
    return column.to_numpy(dtype=object, na_value=None).tolist()


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """`DataFrame.to_dict("records")`, several times faster on Arrow-backed columns."""
    names = list(frame.columns)
    columns = [_pylist(frame[name]) for name in names]
    return [dict(zip(names, row, strict=True)) for row in zip(*columns, strict=True)]


def _draft(row: dict[str, Any], attributes: list[dict[str, Any]],
           export: ExportSettings) -> EventDraft:
    source, detection = row["source_system"], row["detection_id"]
    tags = list(dict.fromkeys(tag for tag in (export.tag.strip(), row["method_tag"]) if tag))
    event: dict[str, Any] = {
        "uuid": row["uuid"],
        "info": row["info"],
        "threat_level_id": row["threat_level_id"],
        "analysis": int(export.analysis),
        "distribution": int(export.distribution),
        "published": export.publish,
        "Tag": [{"name": tag} for tag in tags],
        "Attribute": attributes,
    }
    if row["timestamp"] is None:  # no detection time: let MISP stamp it, keep determinism
        for attribute in attributes:
            attribute.pop("timestamp", None)
    else:
        event["date"] = row["date"]
        event["timestamp"] = row["timestamp"]
    return EventDraft(
        uuid=row["uuid"],
        source_system=source,
        detection_id=detection,
        tags=tags,
        event=event,
        fingerprint=content_fingerprint(event),
    )



build_event_drafts_task = batch_task(build_event_drafts, "build-event-drafts")
