"""The output directory sensors read: replaced as a whole, never left half-written, with the
previous rulesets kept for `misp-ndr update-rules --rollback`.

Layout: the current files, `ruleset.json` (what they are: names, sizes, sha256, time),
and `.history/<UTC time>/` snapshots of earlier rulesets (the newest `keep`).

A ruleset is several files, so replacing it is several renames, and a crash between two
would leave sensors a mix of two rulesets. A publish is therefore journaled: every new
file is first staged (written and fsynced under a hidden temporary name), then
`.publish-journal.json` names the staged files and the snapshot of the ruleset they
replace, then the renames run and the journal goes. Whoever finds a journal (the next
update as it starts, a rollback) finishes the job backwards: the snapshot goes back in
place, the staged files are dropped. A publish that did not finish did not happen. A
rollback is the same journal pointing at the chosen snapshot.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from misp_ndr.atomic_files import already_holds, stage_file, sync_directory, write_atomically
from misp_ndr.errors import InputError, MispNdrError
from misp_ndr.task_policy import batch_task

log = logging.getLogger(__name__)
MANIFEST = "ruleset.json"
HISTORY = ".history"
JOURNAL = ".publish-journal.json"
STAGED_GLOB = ".*.tmp"  # `stage_file` names: left behind only by a run killed while staging


class EmptyRulesetRefused(MispNdrError):
    """An update would replace a non-empty ruleset with an empty one: far more often a
    broken filter or MISP answer than a real "no indicators any more"."""

    def __init__(self, previous: int) -> None:
        super().__init__(f"the update produced no indicators where the current ruleset has "
                         f"{previous}; the ruleset is kept. If that is really intended, run "
                         "again with --allow-empty")


@dataclass
class PublishedRuleset:
    sizes: dict[str, int]  # file name -> bytes
    snapshot: str | None  # where the previous ruleset was kept, if there was one
    removed: list[str]  # files of the previous ruleset no longer produced
    unchanged: list[str] = field(default_factory=list)  # in place already: not rewritten


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
            _keep(output_dir / name, target / name)
    sync_directory(target)
    return label


def _keep(current: Path, kept: Path) -> None:
    """A hard link, not a copy (a ruleset runs to hundreds of MB): the current files are
    only ever replaced by a rename, never written in place, so the kept name goes on
    holding the old bytes. A copy where links are not supported."""
    try:
        os.link(current, kept)
    except OSError:
        shutil.copy2(current, kept)


def publish_ruleset(
    output_dir: Path, files: dict[str, bytes], keep: int, now: datetime | None = None
) -> PublishedRuleset:
    """Snapshot the current ruleset, stage the new files and their manifest, then switch
    to them under a journal (lists before the rules that load them, the manifest last).

    A file already holding exactly its new content is left in place, not rewritten: a
    daily update often changes the rules but not every list, and sensors that watch a
    file (Zeek re-reads an intel file whenever it changes) are spared a reload. The
    snapshot links it all the same, so a rollback or recovery is unaffected."""
    moment = now or datetime.now(UTC)
    output_dir.mkdir(parents=True, exist_ok=True)
    recover_interrupted(output_dir)
    previous = current_files(output_dir)
    snapshot = snapshot_current(output_dir, moment)
    ordered = sorted(files, key=lambda n: (n.endswith(".rules"), n))
    with ThreadPoolExecutor(max_workers=1) as pool:  # hashing runs while the files are staged
        manifest = pool.submit(_manifest, files, moment)
        unchanged = [name for name in ordered
                     if name in previous and already_holds(output_dir / name, files[name])]
        staged = [(stage_file(output_dir / name, files[name]), name) for name in ordered
                  if name not in unchanged]
        staged.append((stage_file(output_dir / MANIFEST, manifest.result()), MANIFEST))
    removed = [name for name in previous if name not in files]
    _switch(output_dir, staged, removed, snapshot)
    prune_history(output_dir, keep)
    return PublishedRuleset({n: len(d) for n, d in files.items()}, snapshot, removed,
                            unchanged)


def _switch(output_dir: Path, staged: list[tuple[Path, str]], removed: list[str],
            fallback: str | None) -> None:
    """The renames, between writing the journal and deleting it."""
    journal = {"staged": [[path.name, name] for path, name in staged], "fallback": fallback}
    write_atomically(output_dir / JOURNAL, json.dumps(journal).encode())
    for path, name in staged:
        os.replace(path, output_dir / name)
    for name in removed:
        (output_dir / name).unlink(missing_ok=True)
    sync_directory(output_dir)
    (output_dir / JOURNAL).unlink()
    sync_directory(output_dir)


def recover_interrupted(output_dir: Path) -> str | None:
    """Undo a switch a crash interrupted, putting its fallback snapshot back (or, for a
    first publish, nothing); drop files staged by a run that never got to its journal.
    Returns the snapshot restored, if any. Safe to repeat: it may itself be interrupted."""
    journal_path = output_dir / JOURNAL
    restored = None
    if journal_path.exists():
        journal = json.loads(journal_path.read_text(encoding="utf-8"))
        restored = journal["fallback"]
        log.warning("%s: an earlier publish or rollback was cut short; putting back %s",
                    output_dir, f"snapshot {restored}" if restored else "no ruleset (a first "
                    "publish)")
        _restore(output_dir, restored, [name for _, name in journal["staged"]])
        journal_path.unlink()
        sync_directory(output_dir)
    for stray in output_dir.glob(STAGED_GLOB):
        stray.unlink(missing_ok=True)
    return restored


def _restore(output_dir: Path, label: str | None, written: list[str]) -> None:
    """Make the directory hold exactly snapshot `label` (no ruleset at all for None): its
    files linked back in place, every other ruleset file named in `written` removed."""
    source = output_dir / HISTORY / label if label else None
    kept = sorted(entry.name for entry in source.iterdir()) if source else []
    for name in sorted(kept, key=lambda n: (n == MANIFEST, n.endswith(".rules"), n)):
        temp = output_dir / f".{name}.restore.tmp"
        temp.unlink(missing_ok=True)
        _keep(source / name, temp)  # type: ignore[operator]
        os.replace(temp, output_dir / name)
    for name in written:
        if name not in kept:
            (output_dir / name).unlink(missing_ok=True)
    sync_directory(output_dir)


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
    """Put a kept ruleset back in place (the newest one by default); returns its label.
    Journaled like a publish whose fallback is the chosen snapshot, so a rollback cut short
    is finished by whoever comes next."""
    recover_interrupted(output_dir)
    kept = snapshots(output_dir)
    if not kept:
        raise InputError(f"no earlier ruleset is kept under {output_dir / HISTORY}")
    chosen = label or kept[0]
    if chosen not in kept:
        raise InputError(f"no ruleset {chosen!r} under {output_dir / HISTORY}; "
                         f"kept: {', '.join(kept)}")
    journal = {"staged": [[None, name] for name in current_files(output_dir)],
               "fallback": chosen}
    write_atomically(output_dir / JOURNAL, json.dumps(journal).encode())
    recover_interrupted(output_dir)
    return chosen


publish_ruleset_task = batch_task(publish_ruleset, "publish-ruleset")
recover_interrupted_task = batch_task(recover_interrupted, "recover-interrupted-publish")
