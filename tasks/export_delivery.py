"""Deliver built events to MISP (or, with no MISP configured, to a MISP feed directory).

Delivery is resumable: each event is recorded in the ledger right after MISP accepted it,
so when a transient failure aborts the batch, Prefect's task retry (or the next run)
sends only what is left.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from misp_ndr.config import Settings
from misp_ndr.task_policy import batch_task
from tasks.export_ledger import ExportLedger
from tasks.misp import MispClient
from tasks.misp_events import EventDraft
from tasks.misp_feed import write_feed

log = logging.getLogger(__name__)
PROGRESS_EVERY = 200


@dataclass
class DeliveryResult:
    destination: str
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)  # (event uuid, reason)
    notes: list[tuple[str, str]] = field(default_factory=list)  # delivered, but worth a look


def destination_name(settings: Settings, feed_dir: Path, to_misp: bool) -> str:
    """Ledger key and report label: a MISP URL or a feed directory, never mixed up."""
    return f"misp:{settings.misp.url}" if to_misp else f"feed:{feed_dir.resolve()}"


def deliver_to_misp(drafts: list[EventDraft], settings: Settings) -> DeliveryResult:
    ledger = ExportLedger(settings.state_dir / "export-ledger.sqlite")
    result = DeliveryResult(destination_name(settings, Path(), to_misp=True))
    known = ledger.fingerprints(result.destination, (d.uuid for d in drafts))
    todo = [draft for draft in drafts if known.get(draft.uuid) != draft.fingerprint]
    result.unchanged = len(drafts) - len(todo)
    if not todo:
        return result
    client = MispClient(settings.misp)
    for tag in sorted({tag for draft in todo for tag in draft.tags}):
        client.ensure_tag(tag)
    for done, draft in enumerate(todo, start=1):
        outcome = client.push_event(draft)  # TransientError / AuthError abort the batch
        if done % PROGRESS_EVERY == 0 or done == len(todo):
            log.info("MISP %s: %d of %d events sent", settings.misp.url, done, len(todo))
        if outcome.status == "failed":
            result.failures.append((draft.uuid, outcome.reason))
            continue
        ledger.record(result.destination, draft.uuid, draft.source_system,
                      draft.detection_id, draft.fingerprint)
        if outcome.reason:
            result.notes.append((draft.uuid, outcome.reason))
        if outcome.status == "created":
            result.created += 1
        else:
            result.updated += 1
    return result


def deliver_to_feed(drafts: list[EventDraft], feed_dir: Path) -> DeliveryResult:
    written = write_feed(drafts, feed_dir)
    return DeliveryResult(
        destination=f"feed:{feed_dir.resolve()}",
        created=written.created,
        updated=written.updated,
        unchanged=written.unchanged,
    )


deliver_to_misp_task = batch_task(deliver_to_misp, "deliver-to-misp", remote=True)
deliver_to_feed_task = batch_task(deliver_to_feed, "deliver-to-misp-feed")
