"""Which events already reached which MISP, with what content.

MISP itself refuses a second event with the same UUID, so the ledger is not what prevents
duplicates; it saves the requests: an unchanged detection is not sent again, a changed one
(e.g. Flowmon added a target) is sent as an update.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path

from tasks.ledger_db import SQLITE_MAX_PARAMETERS, LedgerFile

SCHEMA = """
CREATE TABLE IF NOT EXISTS exported_event (
    destination TEXT NOT NULL,
    event_uuid TEXT NOT NULL,
    source_system TEXT NOT NULL,
    detection_id TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    exported_at TEXT NOT NULL,
    PRIMARY KEY (destination, event_uuid)
)
"""


class ExportLedger(LedgerFile):
    """SQLite file under the state directory; one row per (destination, event UUID)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        super().__init__(path, SCHEMA)

    def fingerprints(self, destination: str, uuids: Iterable[str]) -> dict[str, str]:
        """Fingerprint last exported for each of `uuids` that was exported before."""
        wanted = list(uuids)
        found: dict[str, str] = {}
        for start in range(0, len(wanted), SQLITE_MAX_PARAMETERS):
            chunk = wanted[start : start + SQLITE_MAX_PARAMETERS]
            marks = ",".join("?" * len(chunk))
            found.update(self._db.execute(
                "SELECT event_uuid, fingerprint FROM exported_event "
                f"WHERE destination = ? AND event_uuid IN ({marks})",
                [destination, *chunk],
            ))
        return found

    def record(
        self, destination: str, uuid: str, source_system: str, detection_id: str, fingerprint: str
    ) -> None:
        """Called right after each successful write, so a crash loses at most one entry."""
        self._db.execute(
            "INSERT OR REPLACE INTO exported_event VALUES (?, ?, ?, ?, ?, ?)",
            (destination, uuid, source_system, detection_id, fingerprint,
             datetime.now(UTC).isoformat()),
        )
