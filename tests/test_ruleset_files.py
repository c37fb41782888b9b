"""The rules output directory: whole files only, history kept, rollback restores."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from misp_ndr.errors import InputError
from tasks.ruleset_files import current_files, publish_ruleset, rollback, snapshots

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
