"""Deliver built events to MISP (or, with no MISP configured, to a MISP feed directory).

Delivery is resumable: each event is recorded in the ledger right after MISP accepted it,
so when a transient failure aborts the batch, Prefect's task retry (or the next run)
sends only what is left. Events go out a few at a time (`MISP_NDR_MISP__CONCURRENCY`):
most of a request's time is MISP's, not ours.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

from misp_ndr.config import Settings
from misp_ndr.task_policy import batch_task
from tasks.export_ledger import ExportLedger
from tasks.misp import MispClient, PushResult
from tasks.misp_clients import PerThreadClients
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
    """Up to `misp.concurrency` events in flight; each is recorded in the ledger as soon as
    MISP accepted it. A failure (transient, auth, or any other: a sending thread's MISP
    connection may fail on its own) stops new sends, lets those in flight finish (and be
    recorded), then aborts the batch for a retry of what is left."""
    with ExportLedger(settings.state_dir / "export-ledger.sqlite") as ledger:
        result = DeliveryResult(destination_name(settings, Path(), to_misp=True))
        known = ledger.fingerprints(result.destination, (d.uuid for d in drafts))
        todo = [draft for draft in drafts if known.get(draft.uuid) != draft.fingerprint]
        result.unchanged = len(drafts) - len(todo)
        if todo:
            _send(todo, settings, ledger, result)
    return result


def _send(todo: list[EventDraft], settings: Settings, ledger: ExportLedger,
          result: DeliveryResult) -> None:
    client = MispClient(settings.misp)
    for tag in sorted({tag for draft in todo for tag in draft.tags}):
        client.ensure_tag(tag)
    clients = PerThreadClients(settings.misp)
    failure: Exception | None = None
    with ThreadPoolExecutor(settings.misp.concurrency, "misp-export") as pool:
        sends = {pool.submit(lambda d: clients.get().push_event(d), draft): draft
                 for draft in todo}
        for done, sent in enumerate(as_completed(sends), start=1):
            if sent.cancelled():  # after a failure: left for the retry
                continue
            try:
                outcome = sent.result()
            except Exception as exc:  # not only ours: whatever it is, record the others
                failure = failure or exc
                for pending in sends:
                    pending.cancel()
                continue
            _record(result, ledger, sends[sent], outcome)
            if done % PROGRESS_EVERY == 0 or done == len(todo):
                log.info("MISP %s: %d of %d events sent", settings.misp.url, done, len(todo))
    if failure is not None:
        raise failure


def _record(result: DeliveryResult, ledger: ExportLedger, draft: EventDraft,
            outcome: PushResult) -> None:
    if outcome.status == "failed":
        result.failures.append((draft.uuid, outcome.reason))
        return
    ledger.record(result.destination, draft.uuid, draft.source_system,
                  draft.detection_id, draft.fingerprint)
    if outcome.reason:
        result.notes.append((draft.uuid, outcome.reason))
    if outcome.status == "created":
        result.created += 1
    else:
        result.updated += 1


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
