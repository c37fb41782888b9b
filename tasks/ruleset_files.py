"""The output directory sensors read: replaced file by file, never left half-written,
with the previous rulesets kept for `misp-ndr update-rules --rollback`.

Layout: the current files, `ruleset.json` (what they are: names, sizes, sha256, time),
and `.history/<UTC time>/` snapshots of earlier rulesets (the newest `keep`).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from misp_ndr.atomic_files import write_atomically
from misp_ndr.errors import InputError, MispNdrError
from misp_ndr.task_policy import batch_task

MANIFEST = "ruleset.json"
HISTORY = ".history"


class EmptyRulesetRefused(MispNdrError):
    """An update would replace a non-empty ruleset with an empty one: far more often a
    broken filter or MISP answer than a real "no indicators any more"."""

    def __init__(self, previous: int) -> None:
        super().__init__(f"the update produced no indicators where the current ruleset has "
                         f"{previous}; the ruleset is kept. If that is really intended, run "
                         "again with --allow-empty")


@dataclass
class PublishedRuleset:
    sizes: dict[str, int]  # file name -> bytes written
    snapshot: str | None  # where the previous ruleset was kept, if there was one
    removed: list[str]  # files of the previous ruleset no longer produced


def current_files(output_dir: Path) -> list[str]:
    manifest = output_dir / MANIFEST
    if not manifest.exists():
        return []
    return sorted(json.loads(manifest.read_text(encoding="utf-8"))["files"])


def _manifest(files: dict[str, bytes], created: datetime) -> bytes:
    entries = {name: {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
               for name, data in sorted(files.items())}
    return json.dumps({"created": created.isoformat(), "files": entries}, indent=2).encode()


def snapshot_current(output_dir: Path, moment: datetime) -> str | None:
    names = current_files(output_dir)
    if not names:
        return None
    label = moment.strftime("%Y%m%dT%H%M%S%fZ")
    target = output_dir / HISTORY / label
    target.mkdir(parents=True)
    for name in [*names, MANIFEST]:
        if (output_dir / name).exists():
            shutil.copy2(output_dir / name, target / name)
    return label


def publish_ruleset(
    output_dir: Path, files: dict[str, bytes], keep: int, now: datetime | None = None
) -> PublishedRuleset:
    """Snapshot the current ruleset, then write the new files (lists before the rules
    that load them), drop files no longer produced, write the manifest last."""
    moment = now or datetime.now(UTC)
    output_dir.mkdir(parents=True, exist_ok=True)
    previous = current_files(output_dir)
    snapshot = snapshot_current(output_dir, moment)
    with ThreadPoolExecutor(max_workers=1) as pool:  # hashing runs while the files are written
        manifest = pool.submit(_manifest, files, moment)
        for name in sorted(files, key=lambda n: (n.endswith(".rules"), n)):
            write_atomically(output_dir / name, files[name])
        removed = [name for name in previous if name not in files]
        for name in removed:
            (output_dir / name).unlink(missing_ok=True)
        write_atomically(output_dir / MANIFEST, manifest.result())
    prune_history(output_dir, keep)
    return PublishedRuleset({n: len(d) for n, d in files.items()}, snapshot, removed)


def snapshots(output_dir: Path) -> list[str]:
    """Kept rulesets, newest first."""
    history = output_dir / HISTORY
    if not history.is_dir():
        return []
    return sorted((entry.name for entry in history.iterdir() if entry.is_dir()), reverse=True)


def prune_history(output_dir: Path, keep: int) -> None:
    for label in snapshots(output_dir)[keep:]:
        shutil.rmtree(output_dir / HISTORY / label)


def rollback(output_dir: Path, label: str | None = None) -> str:
    """Put a kept ruleset back in place (the newest one by default); returns its label."""
    kept = snapshots(output_dir)
    if not kept:
        raise InputError(f"no earlier ruleset is kept under {output_dir / HISTORY}")
    chosen = label or kept[0]
    if chosen not in kept:
        raise InputError(f"no ruleset {chosen!r} under {output_dir / HISTORY}; "
                         f"kept: {', '.join(kept)}")
    source = output_dir / HISTORY / chosen
    restored = {entry.name: entry.read_bytes() for entry in source.iterdir()}
    previous = current_files(output_dir)
    for name in sorted(restored, key=lambda n: (n == MANIFEST, n.endswith(".rules"), n)):
        write_atomically(output_dir / name, restored[name])
    for name in previous:
        if name not in restored:
            (output_dir / name).unlink(missing_ok=True)
    return chosen


publish_ruleset_task = batch_task(publish_ruleset, "publish-ruleset")
