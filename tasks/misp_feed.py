"""A MISP feed directory: what the export writes when no MISP URL is configured.

MISP (Sync Actions > Feeds, format "MISP Feed") reads `manifest.json` to learn which
events exist and when they changed, `hashes.csv` for fast value lookups, then fetches
`<uuid>.json` for each new or changed event. Files follow PyMISP's feed generator
(`MISPEvent.to_feed`, `pymisp.tools.feed.feed_meta_generator`).

Every file is replaced atomically (temp file in the same directory, then `os.replace`), so
a MISP pulling the feed mid-run, or a crash, never sees a half-written file; event files
are written before the manifest that lists them.
"""

from __future__ import annotations

import hashlib
import io
import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import pandas as pd

from misp_ndr.atomic_files import write_atomically
from misp_ndr.errors import InputError
from tasks.misp_events import EventDraft, project_uuid5

MANIFEST = "manifest.json"
HASHES = "hashes.csv"
DEFAULT_ORG_NAME = "misp-ndr"
TIME_FIELDS = frozenset({"timestamp", "publish_timestamp", "date"})
MANIFEST_FIELDS = ("Orgc", "Tag", "info", "date", "analysis", "threat_level_id", "timestamp")

WriteOutcome = Literal["created", "updated", "unchanged"]


@dataclass
class FeedWriteResult:
    created: int = 0
    updated: int = 0
    unchanged: int = 0


def write_feed(
    drafts: list[EventDraft], feed_dir: Path, org_name: str = DEFAULT_ORG_NAME
) -> FeedWriteResult:
    """Write or refresh one event file per draft and merge them into the feed's manifest
    and hashes: events from earlier runs stay listed."""
    feed_dir.mkdir(parents=True, exist_ok=True)
    manifest = _load_manifest(feed_dir) if (feed_dir / MANIFEST).exists() else {}
    org = {"name": org_name, "uuid": project_uuid5(f"org:{org_name}")}
    result = FeedWriteResult()
    events = {draft.uuid: draft for draft in drafts}  # one file per event, last draft wins
    for event_id, draft in events.items():
        path = _event_path(feed_dir, event_id)
        event = feed_event(draft, org, previous=_read_json(path) if path.exists() else None)
        outcome = _write_if_changed(path, _json_bytes(event))
        setattr(result, outcome, getattr(result, outcome) + 1)
        manifest[event_id] = manifest_entry(event)
    _write_if_changed(feed_dir / HASHES, _merged_hashes(feed_dir / HASHES, events))
    _write_if_changed(feed_dir / MANIFEST, _json_bytes(dict(sorted(manifest.items()))))
    return result


def feed_event(
    draft: EventDraft, org: dict[str, str], previous: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The draft as a feed file: with its creator organisation and publish time.

    MISP re-fetches a feed event, and overwrites its attributes, only when their
    timestamps grew. So a changed event (same detection, new content) is stamped now,
    attributes included, while an unchanged one keeps its previous file byte for byte.
    """
    event = {**draft.event, "Orgc": org}
    earlier = previous.get("Event") if isinstance(previous, dict) else None
    if isinstance(earlier, dict) and _without_times(earlier) == _without_times(event):
        return previous
    if earlier is not None or "timestamp" not in event:
        event = _stamped_now(event)
    event["publish_timestamp"] = event["timestamp"]
    return {"Event": event}


def _without_times(event: dict[str, Any]) -> dict[str, Any]:
    body = {key: value for key, value in event.items() if key not in TIME_FIELDS}
    body["Attribute"] = [{key: value for key, value in attribute.items() if key != "timestamp"}
                         for attribute in event.get("Attribute", [])]
    return body


def _stamped_now(event: dict[str, Any]) -> dict[str, Any]:
    now = datetime.now(UTC)
    stamp = int(now.timestamp())
    return {
        **event,
        "timestamp": stamp,
        "date": event.get("date") or now.strftime("%Y-%m-%d"),
        "Attribute": [{**attribute, "timestamp": stamp}
                      for attribute in event.get("Attribute", [])],
    }


def manifest_entry(feed_file: dict[str, Any]) -> dict[str, Any]:
    event = feed_file["Event"]
    return {field: event[field] for field in MANIFEST_FIELDS}


def attribute_hashes(attributes: list[dict[str, Any]]) -> list[str]:
    """What `hashes.csv` lists for an event, as PyMISP computes it: the md5 of each value
    (of each part of a composite `a|b` value)."""
    hashes = []
    for attribute in attributes:
        value = str(attribute["value"])
        parts = value.split("|") if "|" in attribute["type"] else [value]
        hashes += [hashlib.md5(part.encode("utf-8")).hexdigest() for part in parts]
    return hashes


def read_feed(feed_dir: Path) -> list[dict[str, Any]]:
    """Every event file the manifest lists, as `{"Event": {...}}` dicts in UUID order.

    Raises InputError naming the first inconsistency: a missing or unreadable file, or a
    file that holds another event than the manifest says.
    """
    manifest = _load_manifest(feed_dir)
    events = []
    for event_id in sorted(manifest):
        path = _event_path(feed_dir, event_id)
        if not path.is_file():
            raise InputError(f"MISP feed {feed_dir}: manifest lists event {event_id} "
                             f"but {path.name} is missing")
        event = _read_json(path)
        found = event.get("Event", {}).get("uuid") if isinstance(event, dict) else None
        if found != event_id:
            raise InputError(f"MISP feed {feed_dir}: {path.name} holds event {found!r}, "
                             f"not {event_id}")
        events.append(event)
    return events


def _load_manifest(feed_dir: Path) -> dict[str, Any]:
    path = feed_dir / MANIFEST
    if not path.is_file():
        raise InputError(f"{feed_dir} is not a MISP feed: {MANIFEST} is missing")
    manifest = _read_json(path)
    if not isinstance(manifest, dict):
        raise InputError(f"{path} is not a MISP feed manifest (expected a JSON object)")
    return manifest


def event_file_name(feed: str, event_id: str) -> str:
    """Only a canonical UUID may become a file name: a manifest key is untrusted input."""
    try:
        canonical = str(uuid.UUID(event_id))
    except (ValueError, TypeError, AttributeError):
        canonical = None
    if canonical != event_id:
        raise InputError(f"{feed}: manifest key {event_id!r} is not an event UUID")
    return f"{event_id}.json"


def _event_path(feed_dir: Path, event_id: str) -> Path:
    return feed_dir / event_file_name(f"MISP feed {feed_dir}", event_id)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read {path}: {exc}") from None


def _json_bytes(data: Any) -> bytes:
    return json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _merged_hashes(path: Path, events: dict[str, EventDraft]) -> bytes:
    """`<md5>,<event uuid>` lines, no header: earlier runs' lines stay, this batch's
    events get theirs replaced."""
    fresh = [(value_hash, event_id) for event_id, draft in events.items()
             for value_hash in attribute_hashes(draft.event.get("Attribute", []))]
    table = pd.DataFrame(fresh, columns=["hash", "event"], dtype="string")
    if path.exists() and path.stat().st_size:
        kept = pd.read_csv(path, header=None, names=["hash", "event"], dtype="string")
        table = pd.concat([kept[~kept["event"].isin(list(events))], table])
    table = table.sort_values(["event", "hash"], kind="stable")
    out = io.StringIO()
    table.to_csv(out, header=False, index=False, lineterminator="\n")
    return out.getvalue().encode("utf-8")


def _write_if_changed(path: Path, data: bytes) -> WriteOutcome:
    """Unchanged files are left alone: their mtime (and MISP's next pull) stay put."""
    if not path.exists():
        write_atomically(path, data)
        return "created"
    if path.read_bytes() == data:
        return "unchanged"
    write_atomically(path, data)
    return "updated"
