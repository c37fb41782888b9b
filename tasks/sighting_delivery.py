"""Deliver planned sightings to MISP, or append them to a JSON lines file when no MISP is
configured, each exactly once across replays, retries and crashes (see SightingLedger).

Every sighting is one `POST /sightings/add` (MISP has no bulk call for it; several values
in one request would hide which of them MISP does not know), with up to
`MISP_NDR_MISP__CONCURRENCY` requests in flight. A sighting by
value carries `filters` so MISP sights only IDS-flagged attributes of the pulled tags, not
every attribute that happens to share the value. The JSON lines file holds exactly those
request bodies, one per line, ready to post to `/sightings/add` once MISP is reachable.
"""

from __future__ import annotations

import json
import logging
import os
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from misp_ndr.config import Settings
from misp_ndr.task_policy import batch_task
from tasks.misp import MispClient, SightingResult
from tasks.misp_clients import PerThreadClients
from tasks.sighting_ledger import PENDING, SENT, SightingLedger

log = logging.getLogger(__name__)
SEND_CHUNK = 500  # sightings marked pending at once: what a crash leaves to look up
LEDGER_FILE = "sightings-ledger.sqlite"  # under the state directory
SIGHTING_TYPE = "0"  # 0 sighting, 1 false positive, 2 expiration


@dataclass
class SightingDelivery:
    destination: str
    sent: int = 0
    duplicates: int = 0  # sent by an earlier run: the ledger says so
    confirmed: int = 0  # outcome unknown after an earlier run; found in MISP (or the file)
    unknown: list[tuple[str, str]] = field(default_factory=list)  # (value, origin)
    failures: list[tuple[str, str]] = field(default_factory=list)  # (what, reason)


def value_filters(settings: Settings) -> dict[str, Any]:
    """What a sighting by value may touch: IDS-flagged attributes, of the pulled tags."""
    tags = settings.rules.event_tags
    return {"to_ids": 1, **({"tags": list(tags)} if tags else {})}


def sighting_body(row: Any, filters: dict[str, Any]) -> dict[str, Any]:
    """The `/sightings/add` request body of one planned sighting (a SIGHTING_COLUMNS row)."""
    body: dict[str, Any] = {"source": row.source, "type": SIGHTING_TYPE,
                            "timestamp": str(row.timestamp)}
    if pd.notna(row.attribute_uuid):
        body["uuid"] = row.attribute_uuid
    else:
        body["values"] = [row.value]
        body["filters"] = filters
    return body


def deliver_sightings_to_misp(sightings: pd.DataFrame, settings: Settings) -> SightingDelivery:
    result = SightingDelivery(f"misp:{settings.misp.url}")
    with SightingLedger(settings.state_dir / LEDGER_FILE) as ledger:
        states = ledger.states(result.destination, sightings["key"])
        todo = _not_yet_sent(sightings, states, result)
        if todo.empty:
            return result
        uncertain = todo["key"].map(states).eq(PENDING).fillna(False).astype(bool)
        found = _found_in_misp(MispClient(settings.misp), todo[uncertain])
        confirmed = todo["key"].isin(found)
        ledger.mark_many(result.destination, _pairs(todo[confirmed]), SENT)
        result.confirmed = int(confirmed.sum())
        _send(todo[~confirmed], settings, ledger, result)
    return result


def _send(todo: pd.DataFrame, settings: Settings, ledger: SightingLedger,
          result: SightingDelivery) -> None:
    """A chunk at a time: its sightings are marked pending (one commit), sent with up to
    `misp.concurrency` in flight, then each marked sent or forgotten as MISP answers. On a
    failure (transient, auth, or a sending thread's own MISP connection failing) those in
    flight finish, the queued ones are forgotten (never sent), and the batch aborts."""
    filters, clients = value_filters(settings), PerThreadClients(settings.misp)
    with ThreadPoolExecutor(settings.misp.concurrency, "misp-sightings") as pool:
        for start in range(0, len(todo), SEND_CHUNK):
            chunk = todo.iloc[start:start + SEND_CHUNK]
            ledger.mark_many(result.destination, _pairs(chunk), PENDING)
            sends = {pool.submit(lambda b: clients.get().add_sighting(b),
                                 sighting_body(row, filters)): row
                     for row in chunk.itertuples(index=False)}
            failure = _collect(sends, ledger, result)
            log.info("MISP %s: %d of %d sightings handled", settings.misp.url,
                     min(start + SEND_CHUNK, len(todo)), len(todo))
            if failure is not None:
                raise failure


def _collect(sends: dict[Future[SightingResult], Any], ledger: SightingLedger,
             result: SightingDelivery) -> Exception | None:
    failure: Exception | None = None
    for sent in as_completed(sends):
        row = sends[sent]
        if sent.cancelled():
            ledger.forget(result.destination, row.key)
            continue
        try:
            outcome = sent.result()
        except Exception as exc:  # ours or not: it stays pending (it may have reached
            failure = failure or exc  # MISP) and the others are still marked as answered
            for queued in sends:
                queued.cancel()
            continue
        if outcome.status == "added":
            ledger.mark(result.destination, row.key, SENT, row.timestamp)
            result.sent += 1
        else:
            ledger.forget(result.destination, row.key)
            _record_miss(result, row, outcome.status, outcome.reason)
    return failure


def _pairs(sightings: pd.DataFrame) -> list[tuple[str, int]]:
    return list(zip(sightings["key"], sightings["timestamp"].astype(int), strict=True))


def deliver_sightings_to_file(sightings: pd.DataFrame, path: Path,
                              settings: Settings) -> SightingDelivery:
    result = SightingDelivery(f"file:{path.resolve()}")
    filters = value_filters(settings)
    with SightingLedger(settings.state_dir / LEDGER_FILE) as ledger:
        states = ledger.states(result.destination, sightings["key"])
        todo = _not_yet_sent(sightings, states, result)
        lines = [json.dumps(sighting_body(row, filters), sort_keys=True)
                 for row in todo.itertuples(index=False)]
        uncertain = todo["key"].map(states).eq(PENDING).fillna(False).to_numpy(dtype=bool)
        on_file = _lines_on_file(path) if uncertain.any() else set()
        already = uncertain & pd.Series(lines, dtype="object").isin(on_file).to_numpy()
        rows = _pairs(todo)
        pending = [pair for pair, there in zip(rows, already, strict=True) if not there]
        ledger.mark_many(result.destination, pending, PENDING)
        _append_lines(path, [line for line, there in zip(lines, already, strict=True)
                             if not there])
        ledger.mark_many(result.destination, rows, SENT)
        result.confirmed = int(already.sum())
        result.sent = len(rows) - result.confirmed
    return result


def _not_yet_sent(sightings: pd.DataFrame, states: dict[str, str],
                  result: SightingDelivery) -> pd.DataFrame:
    sent = sightings["key"].map(states).eq(SENT).fillna(False).astype(bool)
    result.duplicates = int(sent.sum())
    return sightings[~sent]


def _found_in_misp(client: MispClient, uncertain: pd.DataFrame) -> set[str]:
    """Keys of sightings an earlier run may have added without learning it: one search
    per (source, time), matched on attribute UUID or value."""
    found: set[str] = set()
    for (source, timestamp), group in uncertain.groupby(["source", "timestamp"]):
        existing = client.find_sightings(str(source), int(timestamp))
        uuids = {str(s.get("attribute_uuid", "")).lower() for s in existing}
        # a composite attribute (domain|ip) is sighted by either half of its value
        values = {part for s in existing for part in str(s.get("attribute_value", "")).split("|")}
        by_uuid = group["attribute_uuid"].notna()
        hit = group["attribute_uuid"].str.lower().isin(uuids).where(
            by_uuid, group["value"].isin(values))
        found.update(group.loc[hit.fillna(False).astype(bool), "key"])
    return found


def _record_miss(result: SightingDelivery, row: Any, status: str, reason: str) -> None:
    target = row.value if pd.isna(row.attribute_uuid) else f"attribute {row.attribute_uuid}"
    if status == "unknown":
        result.unknown.append((target, row.origin))
    else:
        result.failures.append((f"sighting of {target}", reason))


def _lines_on_file(path: Path) -> set[str]:
    if not path.exists():
        return set()
    return set(path.read_text(encoding="utf-8").splitlines())


def _append_lines(path: Path, lines: list[str]) -> None:
    """Append and fsync. A line torn by an earlier crash (no final newline) is cut off
    first: its sighting is still `pending` in the ledger and is written again whole."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a+b") as handle:
        handle.truncate(_end_of_last_line(handle))
        handle.write("".join(line + "\n" for line in lines).encode("utf-8"))
        handle.flush()
        os.fsync(handle.fileno())


def _end_of_last_line(handle: Any) -> int:
    """Size of the file up to and including its last newline (0 if it has none)."""
    size = handle.seek(0, os.SEEK_END)
    start = size
    while start > 0:
        start = max(start - 65536, 0)
        handle.seek(start)
        chunk = handle.read(size - start)
        if chunk.rfind(b"\n") >= 0:
            return start + chunk.rfind(b"\n") + 1
    return 0


deliver_sightings_to_misp_task = batch_task(deliver_sightings_to_misp, "deliver-sightings",
                                            remote=True)
deliver_sightings_to_file_task = batch_task(deliver_sightings_to_file,
                                            "write-sightings-file")
