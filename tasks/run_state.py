"""Where each scheduled job resumes: the end of the window of its last successful run.

A watermark only moves after a run that lost nothing, so a failed run is simply covered
again by the next one (exports are idempotent, so the overlap is harmless).
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

from misp_ndr.atomic_files import write_atomically


class RunWatermarks:
    """A small JSON file of `job key -> ISO-8601 UTC time` under the state directory."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def _load(self) -> dict[str, str]:
        if not self.path.exists():
            return {}
        return json.loads(self.path.read_text(encoding="utf-8"))

    def get(self, key: str) -> datetime | None:
        value = self._load().get(key)
        return datetime.fromisoformat(value) if value else None

    def advance(self, key: str, moment: datetime) -> None:
        marks = self._load()
        marks[key] = moment.isoformat()
        write_atomically(self.path, json.dumps(marks, indent=2, sort_keys=True).encode())
