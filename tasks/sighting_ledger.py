"""Which sightings already reached which destination: replays never count twice.

MISP gives no way to make a sighting idempotent through `/sightings/add` (it assigns the
sighting UUID itself), so the ledger is what prevents duplicates. Each sighting is written
`pending` just before its request and `sent` right after MISP confirmed it. A `pending` row
found later means the outcome is unknown (the process died, or MISP took the write but its
answer was lost): delivery asks MISP whether the sighting is there before sending it again.
"""

from __future__ import annotations

from collections.abc import Iterable
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path

from tasks.ledger_db import SQLITE_MAX_PARAMETERS, LedgerFile

PENDING = "pending"
SENT = "sent"

SCHEMA = """
CREATE TABLE IF NOT EXISTS sighting (
    destination TEXT NOT NULL,
    key TEXT NOT NULL,
    state TEXT NOT NULL,
    timestamp INTEGER NOT NULL,
    changed_at TEXT NOT NULL,
    PRIMARY KEY (destination, key)
)
"""


class SightingLedger(LedgerFile):
    """SQLite file under the state directory; one row per (destination, sighting key)."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, SCHEMA)

    def states(self, destination: str, keys: Iterable[str]) -> dict[str, str]:
        """State of each of `keys` the ledger knows."""
        wanted = list(keys)
        found: dict[str, str] = {}
        for start in range(0, len(wanted), SQLITE_MAX_PARAMETERS):
            chunk = wanted[start : start + SQLITE_MAX_PARAMETERS]
            marks = ",".join("?" * len(chunk))
            found.update(self._db.execute(
                f"SELECT key, state FROM sighting WHERE destination = ? AND key IN ({marks})",
                [destination, *chunk],
            ))
        return found

    def mark(self, destination: str, key: str, state: str, timestamp: int) -> None:
        """Committed on return: the ledger never lags behind what was sent."""
        self._db.execute(
            "INSERT OR REPLACE INTO sighting VALUES (?, ?, ?, ?, ?)",
            (destination, key, state, timestamp, datetime.now(UTC).isoformat()),
        )

    def mark_many(self, destination: str, rows: Iterable[tuple[str, int]], state: str) -> None:
        """(key, timestamp) pairs in one transaction: for a file written in one go."""
        now = datetime.now(UTC).isoformat()
        with closing(self._db.cursor()) as cursor:
            cursor.execute("BEGIN")
            cursor.executemany(
                "INSERT OR REPLACE INTO sighting VALUES (?, ?, ?, ?, ?)",
                ((destination, key, state, timestamp, now) for key, timestamp in rows),
            )
            cursor.execute("COMMIT")

    def forget(self, destination: str, key: str) -> None:
        """A sighting MISP refused (or whose value it does not know) was not added: the
        next run may try it again."""
        self._db.execute("DELETE FROM sighting WHERE destination = ? AND key = ?",
                         (destination, key))
