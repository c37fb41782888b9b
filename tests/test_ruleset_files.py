"""The rules output directory: whole files only, history kept, rollback restores."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from misp_ndr import atomic_files
from misp_ndr.errors import InputError
from tasks import ruleset_files
from tasks.ruleset_files import (
    JOURNAL,
    current_files,
    publish_ruleset,
    recover_interrupted,
    rollback,
    snapshots,
)

T0 = datetime(2026, 11, 23, 3, 0, tzinfo=UTC)


def publish(out: Path, n: int, files: dict[str, bytes], keep: int = 5) -> None:
    publish_ruleset(out, files, keep=keep, now=T0 + timedelta(days=n))


def test_first_publish_writes_files_and_manifest_without_snapshot(tmp_path: Path) -> None:
    result = publish_ruleset(tmp_path, {"misp.rules": b"r1\n", "misp-ip.txt": b"1.1.1.1\n"},
                             keep=3, now=T0)
    assert result.snapshot is None
    assert (tmp_path / "misp.rules").read_bytes() == b"r1\n"
    assert current_files(tmp_path) == ["misp-ip.txt", "misp.rules"]
    assert result.sizes == {"misp.rules": 3, "misp-ip.txt": 8}


def test_each_publish_keeps_the_previous_ruleset_up_to_the_limit(tmp_path: Path) -> None:
    for n in range(5):
        publish(tmp_path, n, {"misp.rules": f"r{n}\n".encode()}, keep=3)
    kept = snapshots(tmp_path)
    assert len(kept) == 3
    assert (tmp_path / ".history" / kept[0] / "misp.rules").read_bytes() == b"r3\n"


def test_files_no_longer_produced_are_removed(tmp_path: Path) -> None:
    publish(tmp_path, 0, {"misp.rules": b"r\n", "misp-md5.list": b"h\n"})
    result = publish_ruleset(tmp_path, {"misp.rules": b"r2\n"}, keep=5, now=T0 + timedelta(1))
    assert result.removed == ["misp-md5.list"]
    assert not (tmp_path / "misp-md5.list").exists()


def test_rollback_restores_the_previous_ruleset(tmp_path: Path) -> None:
    publish(tmp_path, 0, {"misp.rules": b"good\n", "misp-md5.list": b"h\n"})
    publish(tmp_path, 1, {"misp.rules": b"bad\n"})
    label = rollback(tmp_path)
    assert (tmp_path / "misp.rules").read_bytes() == b"good\n"
    assert (tmp_path / "misp-md5.list").read_bytes() == b"h\n"
    assert current_files(tmp_path) == ["misp-md5.list", "misp.rules"]
    assert label == snapshots(tmp_path)[0]


def test_rollback_without_history_or_to_unknown_label_is_explained(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no earlier ruleset"):
        rollback(tmp_path)
    publish(tmp_path, 0, {"misp.rules": b"a\n"})
    publish(tmp_path, 1, {"misp.rules": b"b\n"})
    with pytest.raises(InputError, match="kept: "):
        rollback(tmp_path, "19990101T000000000000Z")


class Crash(BaseException):
    """The process dying: nothing after it runs, no handler cleans up."""


def crash_after_renames(monkeypatch: pytest.MonkeyPatch, count: int) -> None:
    real = os.replace
    done = []

    def replace(source: Any, target: Any) -> None:
        if len(done) == count:
            raise Crash
        done.append(target)
        real(source, target)

    monkeypatch.setattr(ruleset_files.os, "replace", replace)


def files_of(out: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in out.iterdir() if path.is_file()}


GOOD = {"misp.rules": b"good\n", "misp-ip.txt": b"1.1.1.1\n", "misp-md5.list": b"h\n"}
NEW = {"misp.rules": b"new\n", "misp-ip.txt": b"2.2.2.2\n", "misp-domain.txt": b"d.example\n"}


def cut_publish(out: Path, monkeypatch: pytest.MonkeyPatch, renames: int,
                files: dict[str, bytes]) -> dict[str, bytes]:
    """GOOD published, then a publish of `files` killed after `renames` renames; returns
    the files GOOD left on disk."""
    publish(out, 0, GOOD)
    good = files_of(out)
    with monkeypatch.context() as patch:
        crash_after_renames(patch, renames)
        with pytest.raises(Crash):
            publish(out, 1, files)
    return good


def test_a_file_whose_content_did_not_change_is_left_in_place(tmp_path: Path) -> None:
    """Zeek re-reads an intel file whenever it changes: a daily update that changes the
    rules but not a list must not rewrite the list. What did change is replaced."""
    publish(tmp_path, 0, GOOD)
    before = {name: (tmp_path / name).stat() for name in GOOD}

    result = publish_ruleset(tmp_path, {**GOOD, "misp.rules": b"good, v2\n"}, keep=5,
                             now=T0 + timedelta(days=1))

    after = {name: (tmp_path / name).stat() for name in GOOD}
    assert result.unchanged == ["misp-ip.txt", "misp-md5.list"]
    for name in result.unchanged:
        assert (after[name].st_ino, after[name].st_mtime_ns) == (
            before[name].st_ino, before[name].st_mtime_ns)
    assert after["misp.rules"].st_ino != before["misp.rules"].st_ino
    assert files_of(tmp_path)["misp.rules"] == b"good, v2\n"
    assert result.sizes == {name: len(data) for name, data in
                            {**GOOD, "misp.rules": b"good, v2\n"}.items()}
    rollback(tmp_path)
    assert {name: files_of(tmp_path)[name] for name in GOOD} == GOOD


def test_a_file_edited_in_place_is_written_again(tmp_path: Path) -> None:
    """Whether a file is unchanged is read off the file, not the manifest: a list someone
    edited by hand (same size, other bytes) gets its generated content back."""
    publish(tmp_path, 0, GOOD)
    (tmp_path / "misp-ip.txt").write_bytes(b"6.6.6.6\n")

    result = publish_ruleset(tmp_path, GOOD, keep=5, now=T0 + timedelta(days=1))

    assert result.unchanged == ["misp-md5.list", "misp.rules"]
    assert files_of(tmp_path)["misp-ip.txt"] == GOOD["misp-ip.txt"]


@pytest.mark.parametrize(("on_disk", "holds"), [
    (b"0123456789", True),
    (b"X123456789", False),  # first chunk differs
    (b"01234X6789", False),  # a middle chunk
    (b"012345678X", False),  # the last byte, in a short last chunk
    (b"012345678", False),  # one byte short
    (None, False),  # no file at all
])
def test_already_holds_compares_every_chunk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, on_disk: bytes | None, holds: bool,
) -> None:
    monkeypatch.setattr(atomic_files, "_COMPARE_BYTES", 3)
    path = tmp_path / "misp-ip.txt"
    if on_disk is not None:
        path.write_bytes(on_disk)
    assert atomic_files.already_holds(path, b"0123456789") is holds


def test_a_publish_cut_between_renames_is_undone_whole_by_the_next_one_to_look(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # killed with two new lists in place, the rules and manifest not
    good = cut_publish(tmp_path, monkeypatch, 2, NEW)
    assert (tmp_path / JOURNAL).exists() and files_of(tmp_path) != good
    assert recover_interrupted(tmp_path) == snapshots(tmp_path)[0]
    assert files_of(tmp_path) == good
    assert sorted(path.name for path in tmp_path.glob(".*")) == [".history"]


def test_a_cut_publish_that_left_a_file_in_place_is_undone_whole_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A file left in place (unchanged) is shared by the live ruleset and its snapshot:
    undoing a cut publish must still give the old ruleset back exactly."""
    good = cut_publish(tmp_path, monkeypatch, 1, {**NEW, "misp-md5.list": GOOD["misp-md5.list"]})
    assert recover_interrupted(tmp_path) == snapshots(tmp_path)[0]
    assert files_of(tmp_path) == good


def test_after_a_cut_publish_the_next_one_keeps_the_good_ruleset_for_rollback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    good = cut_publish(tmp_path, monkeypatch, 1, NEW)
    publish(tmp_path, 2, NEW)
    assert {n: files_of(tmp_path)[n] for n in NEW} == NEW
    rollback(tmp_path)
    assert files_of(tmp_path) == good


def test_a_first_publish_cut_short_leaves_no_ruleset_rather_than_part_of_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    with monkeypatch.context() as patch:
        crash_after_renames(patch, 1)
        with pytest.raises(Crash):
            publish(tmp_path, 0, NEW)
    assert recover_interrupted(tmp_path) is None
    assert files_of(tmp_path) == {}


def test_a_rollback_cut_short_is_finished_by_the_next_one_to_look(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    publish(tmp_path, 0, GOOD)
    good = files_of(tmp_path)
    publish(tmp_path, 1, NEW)
    with monkeypatch.context() as patch:
        crash_after_renames(patch, 1)
        with pytest.raises(Crash):
            rollback(tmp_path)
    recover_interrupted(tmp_path)
    assert files_of(tmp_path) == good


def test_files_staged_by_a_run_killed_before_its_journal_are_removed(tmp_path: Path) -> None:
    publish(tmp_path, 0, GOOD)
    good = files_of(tmp_path)
    (tmp_path / ".misp.rules.abc123.tmp").write_bytes(b"half")
    assert recover_interrupted(tmp_path) is None
    assert files_of(tmp_path) == good
