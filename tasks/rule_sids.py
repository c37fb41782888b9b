"""Stable Suricata sids for MISP attributes, and the sid map the sightings job reads.

An alert is only useful if its sid still means the same MISP attribute next week: the
sightings job maps sids back to attributes, and analysts tune (disable, threshold) rules by
sid. So each (attribute_uuid, variant) pair owns one sid for life, kept in a small SQLite
file in the state directory.

How a new pair gets its sid, reproducible by hand and on any machine:

    preferred = start + (FNV-1a-64(UTF-8 of "<attribute uuid, lowercase>|<variant>") mod size)

where `size` is the number of per-attribute sids, `[start, end - RESERVED_TOP_SIDS]`. Every
new pair whose preferred sid is free (not held by any pair ever allocated, nor preferred by
a new pair that sorts earlier) takes it. The others, in sort order, take the next free sid
upward, wrapping around to `start`. The sort order is that of the text `<uuid>|<variant>`
(for well-formed UUIDs, by attribute UUID then variant). Two machines with the same
attributes therefore agree on every sid except where their histories made different pairs
collide.

A sid whose pair is no longer in MISP stays allocated: it is never given to another
attribute. A pair whose stored sid lies outside the configured range (the range was moved)
is allocated again, as a new pair, inside the new range.

`rev` starts at 1 and goes up by one whenever what renders into the rule changes (kind,
value, port, event info, tags, event UUID), so Suricata and analysts see an edited rule.
"""

from __future__ import annotations

import csv
import io
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from misp_ndr.errors import ConfigError, InputError
from tasks.rule_indicators import RESERVED_TOP_SIDS

# What renders into a rule: a change in any of these bumps the rule's rev.
RULE_CONTENT_COLUMNS = ["kind", "value", "port", "event_info", "tags", "event_uuid"]
SID_MAP_COLUMNS = ["sid", "rev", "attribute_uuid", "event_uuid", "kind", "variant", "value"]
SID_MAP_DTYPES: dict[str, str] = {
    "sid": "Int64", "rev": "Int32", "attribute_uuid": "string", "event_uuid": "string",
    "kind": "string", "variant": "string", "value": "string",
}

LOCK_WAIT_SECONDS = 120  # another update holding the allocation lock: wait, do not fail
_FNV_OFFSET = np.uint64(0xCBF29CE484222325)
_FNV_PRIME = np.uint64(0x100000001B3)
_CONTENT_HASH_KEY = "misp-ndr-rule-v1"  # 16 bytes, as pandas' SipHash wants

_CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS sids (
    attribute_uuid TEXT NOT NULL,
    variant TEXT NOT NULL,
    sid INTEGER NOT NULL,
    content_hash INTEGER NOT NULL,
    rev INTEGER NOT NULL,
    first_seen TEXT NOT NULL,
    PRIMARY KEY (attribute_uuid, variant)
)
"""
_CREATE_SID_INDEX = "CREATE UNIQUE INDEX IF NOT EXISTS sids_sid_unique ON sids (sid)"
_SELECT_STORED = "SELECT attribute_uuid || '|' || variant, sid, content_hash, rev FROM sids"
_UPSERT = """
INSERT INTO sids (attribute_uuid, variant, sid, content_hash, rev, first_seen)
VALUES (?, ?, ?, ?, ?, ?)
ON CONFLICT (attribute_uuid, variant) DO UPDATE SET
    sid = excluded.sid, content_hash = excluded.content_hash, rev = excluded.rev,
    first_seen = excluded.first_seen
"""
_BUMP_REV = "UPDATE sids SET content_hash = ?, rev = ? WHERE attribute_uuid = ? AND variant = ?"


def fnv1a_64(texts: pd.Series) -> np.ndarray:
    """FNV-1a 64 of each text's UTF-8 bytes, vectorized over rows (one pass per byte
    column). Chosen over pandas' own hashing because sids must not depend on the pandas
    version, and over sha256 because it needs no Python call per row."""
    encoded = np.asarray(texts.str.encode("utf-8").to_numpy(dtype=object), dtype=np.bytes_)
    width = encoded.dtype.itemsize
    lengths = np.char.str_len(encoded)
    matrix = encoded.view(np.uint8).reshape(len(encoded), width)
    hashes = np.full(len(encoded), _FNV_OFFSET, dtype=np.uint64)
    for column in range(width):
        mixed = (hashes ^ matrix[:, column].astype(np.uint64)) * _FNV_PRIME
        hashes = np.where(column < lengths, mixed, hashes)
    return hashes


def rule_content_hash(rules: pd.DataFrame) -> np.ndarray:
    """64-bit hash of what renders into each rule, as signed ints for SQLite. pandas'
    SipHash with a fixed key: if a pandas release ever changed it, every rev would go up
    once, nothing worse."""
    content = rules[RULE_CONTENT_COLUMNS].astype("string").fillna("\x00")
    hashed = pd.util.hash_pandas_object(content, index=False, hash_key=_CONTENT_HASH_KEY,
                                      categorize=False)
    return hashed.to_numpy(dtype=np.uint64).view(np.int64)


class SidAllocator:
    """The SQLite file of allocated sids. One `assign` call is one transaction, so two
    concurrent runs cannot hand out the same sid."""

    def __init__(self, path: Path, start: int, end: int) -> None:
        self.path = path
        self.first = start
        self.last = end - RESERVED_TOP_SIDS
        if self.last < self.first:
            raise ConfigError(
                f"sid range {start}-{end} leaves no sid below the {RESERVED_TOP_SIDS} reserved "
                "at its top; widen MISP_NDR_RULES__SID_RANGE_START / _END")

    @property
    def size(self) -> int:
        return self.last - self.first + 1

    def assign(self, rules: pd.DataFrame) -> pd.DataFrame:
        """`rules` (rows of `expand_rule_variants`) with `sid` (Int64) and `rev` (Int32)
        added, in the same order. Raises ValueError if a pair is missing or occurs twice:
        the caller's bug, and two rules with one sid would be worse than no update."""
        uuids = rules["attribute_uuid"].astype("string").str.lower()
        variants = rules["variant"].astype("string")
        batch = pd.DataFrame({
            "attribute_uuid": uuids, "variant": variants, "pair": uuids + "|" + variants,
            "content_hash": rule_content_hash(rules), "row": np.arange(len(rules)),
        })
        _refuse_unusable_pairs(batch["pair"])
        self.path.parent.mkdir(parents=True, exist_ok=True)
        connection = sqlite3.connect(self.path, isolation_level=None, timeout=LOCK_WAIT_SECONDS)
        try:
            connection.execute(_CREATE_TABLE)
            connection.execute(_CREATE_SID_INDEX)
            connection.execute("BEGIN IMMEDIATE")
            assigned = self._assign_in_transaction(connection, batch)
            connection.execute("COMMIT")
        except BaseException:
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            raise
        finally:
            connection.close()
        sids = np.empty(len(rules), dtype=np.int64)
        revs = np.empty(len(rules), dtype=np.int64)
        sids[assigned["row"]] = assigned["sid"]
        revs[assigned["row"]] = assigned["rev"]
        return rules.assign(sid=pd.array(sids, dtype="Int64"), rev=pd.array(revs, dtype="Int32"))

    def _assign_in_transaction(
        self, connection: sqlite3.Connection, batch: pd.DataFrame
    ) -> pd.DataFrame:
        stored = pd.DataFrame(
            connection.execute(_SELECT_STORED).fetchall(),
            columns=["pair", "sid", "stored_hash", "stored_rev"],
        ).astype({"pair": "string", "sid": "Int64", "stored_hash": "Int64",
                  "stored_rev": "Int64"})  # nullable: stays exact through the merge
        in_range = stored[stored["sid"].between(self.first, self.last)]
        joined = batch.merge(in_range, on="pair", how="left")
        is_known = joined["sid"].notna().to_numpy()
        known = self._update_revs(connection, joined[is_known].astype(
            {"sid": "int64", "stored_hash": "int64", "stored_rev": "int64"}))
        new = joined[~is_known]
        new = new.iloc[new["pair"].argsort()]  # the documented allocation order
        bulk_load = len(new) > len(stored)
        if bulk_load:  # rebuilding the index once beats updating it per row (~5x)
            connection.execute("DROP INDEX sids_sid_unique")
        new = self._allocate(connection, new, in_range["sid"].to_numpy("int64"))
        if bulk_load:
            connection.execute(_CREATE_SID_INDEX)  # also re-checks every sid is unique
        return pd.concat([known, new])[["row", "sid", "rev"]]

    def _update_revs(self, connection: sqlite3.Connection, known: pd.DataFrame) -> pd.DataFrame:
        changed = known["content_hash"] != known["stored_hash"]
        rev = known["stored_rev"] + changed.astype("int64")
        bumped = known[changed].assign(rev=rev[changed])
        connection.executemany(_BUMP_REV, zip(
            bumped["content_hash"].tolist(), bumped["rev"].tolist(),
            bumped["attribute_uuid"].tolist(), bumped["variant"].tolist(), strict=True))
        return known.assign(rev=rev)

    def _allocate(
        self, connection: sqlite3.Connection, new: pd.DataFrame, taken: np.ndarray
    ) -> pd.DataFrame:
        free = self.size - len(taken)
        if len(new) > free:
            raise ConfigError(
                f"the sid range is full: {len(new)} new rules but {free} free sids in "
                f"{self.first}-{self.last}; widen MISP_NDR_RULES__SID_RANGE_START / _END "
                f"(the top {RESERVED_TOP_SIDS} sids are reserved for list rules)")
        if new.empty:
            return new.assign(sid=pd.Series(dtype="int64"), rev=pd.Series(dtype="int64"))
        preferred = fnv1a_64(new["pair"]) % np.uint64(self.size)
        offsets = _place(preferred.astype(np.int64), taken - self.first, self.size)
        allocated = new.assign(sid=offsets + self.first, rev=1)
        first_seen = datetime.now(UTC).isoformat(timespec="seconds")
        connection.executemany(_UPSERT, zip(
            allocated["attribute_uuid"].tolist(), allocated["variant"].tolist(),
            allocated["sid"].tolist(), allocated["content_hash"].tolist(),
            allocated["rev"].tolist(), [first_seen] * len(allocated), strict=True))
        return allocated


def _refuse_unusable_pairs(pairs: pd.Series) -> None:
    if pairs.isna().any():
        raise ValueError(f"{int(pairs.isna().sum())} rule rows have no attribute_uuid or variant")
    duplicated = pairs[pairs.duplicated()].unique()
    if len(duplicated):
        examples = ", ".join(duplicated[:3])
        raise ValueError(f"{len(duplicated)} (attribute_uuid, variant) pairs occur more than "
                         f"once (e.g. {examples}); each pair must be one rule")


def _place(preferred: np.ndarray, taken: np.ndarray, size: int) -> np.ndarray:
    """Offsets in [0, size) for new pairs, given in allocation order. Vectorized for the
    pairs that get their preferred offset; a loop only over the collisions."""
    occupied = np.zeros(size, dtype=bool)
    occupied[taken] = True
    collides = occupied[preferred] | pd.Series(preferred).duplicated().to_numpy()
    occupied[preferred[~collides]] = True
    offsets = preferred.copy()
    if collides.any():
        offsets[collides] = _probe_upward(preferred[collides], occupied)
    return offsets


def _probe_upward(starts: np.ndarray, occupied: np.ndarray) -> list[int]:
    """Linear probing with wrap-around, in the given order. `links` is a union-find over
    occupied slots (each points at a later slot), so a long run of taken sids is walked
    once, not once per collision."""
    size = len(occupied)
    links_array = np.arange(size)
    links_array[occupied] = (np.flatnonzero(occupied) + 1) % size
    links: list[int] = links_array.tolist()
    placed = []
    for start in starts.tolist():
        slot = _find_free(links, start)
        placed.append(slot)
        links[slot] = (slot + 1) % size
    return placed


def _find_free(links: list[int], slot: int) -> int:
    root = slot
    while links[root] != root:
        root = links[root]
    while links[slot] != root:  # path compression
        links[slot], slot = root, links[slot]
    return root


def write_sid_map(lines: pd.DataFrame) -> bytes:
    """The map as CSV, sorted by sid; values are quoted when they hold commas, quotes or
    line breaks, so any CSV reader gets them back intact."""
    table = lines[SID_MAP_COLUMNS].sort_values("sid", kind="stable")
    return table.to_csv(index=False, lineterminator="\n", quoting=csv.QUOTE_MINIMAL).encode()


def sid_map_for_alerts(path: Path | None, default: Path) -> pd.DataFrame | None:
    """The sid map named (it must exist), else the one `update-rules` last wrote, if any:
    without it, alerts still map through the UUIDs in their rules' metadata."""
    if path is None and not default.exists():
        return None
    return read_sid_map(path or default)


def read_sid_map(path: Path) -> pd.DataFrame:
    """The map a ruleset was written with. Every value is read as text (a domain named
    `null` stays `null`); a map that is not ours raises InputError naming the file."""
    try:
        text = path.read_bytes().decode("utf-8")  # not read_text: keep CR inside quoted values
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read the sid map {path}: {exc}") from exc
    try:
        table = pd.read_csv(io.StringIO(text), dtype="string", keep_default_na=False,
                            na_values=[""])
    except (pd.errors.EmptyDataError, pd.errors.ParserError) as exc:
        raise InputError(f"{path} is not a readable sid map: {exc}") from exc
    missing = [name for name in SID_MAP_COLUMNS if name not in table.columns]
    if missing:
        raise InputError(f"{path} is not a sid map: no column {', '.join(missing)}")
    table = table[SID_MAP_COLUMNS]
    numeric = table["sid"].str.fullmatch(r"\d{1,18}") & table["rev"].str.fullmatch(r"\d{1,9}")
    unreadable = ~numeric.fillna(False).astype(bool)
    if unreadable.any():
        rows = (np.flatnonzero(unreadable.to_numpy())[:5] + 1).tolist()
        raise InputError(f"{path}: sid or rev is not a whole number in data row(s) {rows}")
    return table.astype(SID_MAP_DTYPES)
