"""The SQLite files of the ledgers: one connection per delivery, WAL, `synchronous=NORMAL`.

A ledger commits once per item MISP accepted; with the default journal each commit is an
fsync (about 5 ms here), which made the ledger, not MISP, the pace of an export. In WAL mode
with NORMAL sync a commit survives a crash of the process; an OS crash may lose the last
few, and their items are then sent again, which the ledgers' users make harmless (event
UUIDs are fixed, an uncertain sighting is looked up before it is re-sent).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Self

LOCK_WAIT_SECONDS = 30
SQLITE_MAX_PARAMETERS = 500  # bound parameters per statement, well under SQLite's limit


def open_ledger_db(path: Path, schema: str) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, timeout=LOCK_WAIT_SECONDS, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute(schema)
    return db


class LedgerFile:
    """A ledger's open database, closed by `with` (or `close`)."""

    def __init__(self, path: Path, schema: str) -> None:
        self._db = open_ledger_db(path, schema)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
