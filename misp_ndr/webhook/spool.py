"""Durable storage of accepted payloads, and the memory of what was already submitted.

A payload is on disk (fsynced) before the sensor gets its answer, so neither a Prefect
outage nor a crash of the receiver loses it. Its key is derived from the payload: the same
batch posted again finds its entry and its run instead of making another one.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from misp_ndr.atomic_files import write_atomically

PAYLOAD_MODE = 0o640  # sensor data: the receiver and the workers (same group) read it
ENTRY_SUFFIX = ".json"
PAYLOAD_SUFFIX = ".batch"


def payload_key(job: str, parameters: dict[str, Any], body: bytes,
                client_key: str | None = None) -> str:
    """Same job, options and body (or the same client-chosen key): same key."""
    digest = hashlib.sha256(json.dumps([job, parameters], sort_keys=True).encode())
    digest.update(b"\0")
    digest.update(client_key.encode() if client_key is not None else body)
    return digest.hexdigest()


@dataclass
class SpoolEntry:
    key: str
    job: str
    parameters: dict[str, Any]  # the flow run's, input_path included
    received: str
    flow_run_id: str | None = None
    submitted: str | None = None
    summary: dict[str, Any] = field(default_factory=dict)  # what validation found

    @property
    def pending(self) -> bool:
        return self.flow_run_id is None


class WebhookSpool:
    """`<key>.batch` payloads; their entries in `pending/` until submitted, then in
    `submitted/`, so that counting what waits never reads the whole history."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory.resolve()  # workers read payloads by this absolute path

    def entry(self, key: str) -> SpoolEntry | None:
        for pending in (True, False):
            path = self._entry_path(key, pending)
            if path.is_file():
                return SpoolEntry(**json.loads(path.read_text(encoding="utf-8")))
        return None

    def keep(self, key: str, job: str, parameters: dict[str, Any], body: bytes | None,
             summary: dict[str, Any]) -> SpoolEntry:
        """Write the payload, then the entry that points at it (both fsynced)."""
        parameters = dict(parameters)
        if body is not None:
            payload = self.directory / f"{key}{PAYLOAD_SUFFIX}"
            write_atomically(payload, body, PAYLOAD_MODE)
            parameters["input_path"] = str(payload)
        entry = SpoolEntry(key, job, parameters, _now(), summary=summary)
        self._save(entry)
        return entry

    def mark_submitted(self, entry: SpoolEntry, flow_run_id: str) -> SpoolEntry:
        entry.flow_run_id, entry.submitted = flow_run_id, _now()
        self._save(entry)
        self._entry_path(entry.key, pending=True).unlink(missing_ok=True)
        return entry

    def forget(self, entry: SpoolEntry) -> None:
        """A payload Prefect refused for good: nothing to retry."""
        Path(entry.parameters.get("input_path", "")).unlink(missing_ok=True)
        self._entry_path(entry.key, entry.pending).unlink(missing_ok=True)

    def pending(self) -> list[SpoolEntry]:
        keys = sorted(path.stem for path in (self.directory / "pending").glob(f"*{ENTRY_SUFFIX}"))
        return [entry for key in keys if (entry := self.entry(key)) is not None]

    def prune_submitted(self, older_than: timedelta) -> int:
        """Entries of runs submitted long ago are no longer needed to spot a retry; their
        payload stays only if the run did not succeed (the flow deletes it on success)."""
        limit = (datetime.now(UTC) - older_than).timestamp()
        old = [path for path in (self.directory / "submitted").glob(f"*{ENTRY_SUFFIX}")
               if path.stat().st_mtime < limit]
        for path in old:
            path.unlink(missing_ok=True)
        return len(old)

    def _entry_path(self, key: str, pending: bool) -> Path:
        return self.directory / ("pending" if pending else "submitted") / f"{key}{ENTRY_SUFFIX}"

    def _save(self, entry: SpoolEntry) -> None:
        write_atomically(self._entry_path(entry.key, entry.pending),
                         json.dumps(asdict(entry), sort_keys=True).encode(), PAYLOAD_MODE)


def _now() -> str:
    return datetime.now(UTC).isoformat()
