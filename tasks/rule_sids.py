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

import io
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from misp_ndr.atomic_files import write_atomically
from misp_ndr.errors import ConfigError, InputError
from tasks.arrow_text import arrow_text, joined_row_blocks, true_where
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
_READ_CHUNK_ROWS = 1_000_000  # keeps each aggregated text far below SQLite's 1 GB limit
_SELECT_STORED = """
SELECT max(rowid), group_concat(length(CAST(pair AS BLOB))), CAST(group_concat(pair, '') AS BLOB),
       group_concat(sid), group_concat(content_hash), group_concat(rev)
FROM (SELECT rowid, attribute_uuid || '|' || variant AS pair, sid, content_hash, rev
      FROM sids WHERE rowid > ? ORDER BY rowid LIMIT ?)
"""
_UPSERT = """
INSERT INTO sids (attribute_uuid, variant, sid, content_hash, rev, first_seen)
VALUES (?, ?, ?, ?, ?, ?)
ON CONFLICT (attribute_uuid, variant) DO UPDATE SET
    sid = excluded.sid, content_hash = excluded.content_hash, rev = excluded.rev,
    first_seen = excluded.first_seen
"""
_BUMP_REV = "UPDATE sids SET content_hash = ?, rev = ? WHERE attribute_uuid = ? AND variant = ?"

# The store's rows, also kept as an Arrow file next to it (SNAPSHOT_SUFFIX): read in a
# fraction of the time SQLite takes to hand out a million rows. It is used only while it
# carries the token in `sids_version`, which every change to `sids` replaces: triggers do
# it for any writer (an older misp-ndr, a hand edit), `assign` once per transaction for its
# own writes. A stale, missing or unreadable snapshot just means reading SQLite.
SNAPSHOT_SUFFIX = ".arrow"
_EVENTS = ("INSERT", "UPDATE", "DELETE")
_FRESH_TOKEN = "lower(hex(randomblob(16)))"
_VERSION_SETUP = (
    "CREATE TABLE IF NOT EXISTS sids_version (token TEXT NOT NULL)",
    f"INSERT INTO sids_version SELECT {_FRESH_TOKEN} "
    "WHERE NOT EXISTS (SELECT 1 FROM sids_version)",
    *(f"CREATE TRIGGER IF NOT EXISTS sids_changed_{event.lower()} AFTER {event} ON sids "
      f"BEGIN UPDATE sids_version SET token = {_FRESH_TOKEN}; END" for event in _EVENTS),
)
_CREATE_TRIGGERS = _VERSION_SETUP[2:]
_DROP_TRIGGERS = tuple(f"DROP TRIGGER IF EXISTS sids_changed_{event.lower()}"
                       for event in _EVENTS)
_READ_TOKEN = "SELECT token FROM sids_version"
_NEW_TOKEN = f"UPDATE sids_version SET token = {_FRESH_TOKEN} RETURNING token"
_SNAPSHOT_SCHEMA = pa.schema([("pair", pa.large_string()), ("sid", pa.int64()),
                              ("content_hash", pa.int64()), ("rev", pa.int64())])


def fnv1a_64(texts: pa.Array) -> np.ndarray:
    """FNV-1a 64 of each text's UTF-8 bytes, vectorized over rows: texts of one length are
    one (rows, length) byte matrix, hashed one byte column at a time. Chosen over pandas'
    own hashing because sids must not depend on the pandas version, and over sha256
    because it needs no Python call per row."""
    binary = arrow_text(texts, large=True).cast(pa.large_binary())
    lengths = pc.binary_length(binary).to_numpy(zero_copy_only=False)
    hashes = np.full(len(binary), _FNV_OFFSET, dtype=np.uint64)
    for length in np.unique(lengths).tolist():
        rows = np.flatnonzero(lengths == length)
        same = binary.take(pa.array(rows))
        data = np.frombuffer(same.buffers()[2], dtype=np.uint8, count=len(rows) * length)
        matrix = data.reshape(len(rows), length)
        mixed = hashes[rows]
        for column in range(length):  # in place: no uint64 copy of the matrix (8x its bytes)
            np.bitwise_xor(mixed, matrix[:, column], out=mixed)
            np.multiply(mixed, _FNV_PRIME, out=mixed)
        hashes[rows] = mixed
    return hashes


def rule_content_hash(rules: pd.DataFrame) -> np.ndarray:
    """64-bit hash of what renders into each rule, as signed ints for SQLite. pandas'
    SipHash with a fixed key: if a pandas release ever changed it, every rev would go up
    once, nothing worse. Categorized first (same hashes): event infos, tags and kinds
    repeat across millions of rules."""
    content = rules[RULE_CONTENT_COLUMNS].astype("string").fillna("\x00")
    hashed = pd.util.hash_pandas_object(content, index=False, hash_key=_CONTENT_HASH_KEY,
                                      categorize=True)
    return hashed.to_numpy(dtype=np.uint64).view(np.int64)


@dataclass
class _Stored:
    """Every stored pair (`<uuid>|<variant>`) with its sid, content hash and rev, and the
    store's token they belong to."""

    pairs: pa.Array
    sids: np.ndarray
    hashes: np.ndarray
    revs: np.ndarray
    token: str

    def with_new(self, pairs: pa.Array, sids: np.ndarray, hashes: np.ndarray,
                 token: str) -> _Stored:
        """After `_allocate` stored `pairs` (rev 1): as its upsert does, a pair already
        stored (its sid outside the range) is replaced, any other added."""
        at = pc.index_in(pairs, value_set=self.pairs)
        found = true_where(pc.is_valid(at))
        rows = at.filter(pa.array(found)).to_numpy().astype(np.int64)
        self.sids[rows], self.hashes[rows], self.revs[rows] = sids[found], hashes[found], 1
        added = ~found
        return _Stored(pa.concat_arrays([self.pairs, pairs.filter(pa.array(added))]),
                       np.concatenate([self.sids, sids[added]]),
                       np.concatenate([self.hashes, hashes[added]]),
                       np.concatenate([self.revs, np.ones(int(added.sum()), np.int64)]), token)


def _read_snapshot(path: Path, token: str) -> _Stored | None:
    """The snapshot, if it is of the store as it is now."""
    try:
        table = pa.ipc.open_file(pa.BufferReader(path.read_bytes())).read_all()
    except (OSError, pa.ArrowException):
        return None
    if table.schema.metadata != {b"token": token.encode()} or \
            not table.schema.remove_metadata().equals(_SNAPSHOT_SCHEMA):
        return None
    table = table.combine_chunks()
    return _Stored(table["pair"].combine_chunks(),
                   *(table[name].to_numpy().copy() for name in ("sid", "content_hash", "rev")),
                   token)


def _save_snapshot(path: Path, stored: _Stored) -> None:
    table = pa.table([stored.pairs, stored.sids, stored.hashes, stored.revs],
                     schema=_SNAPSHOT_SCHEMA.with_metadata({"token": stored.token}))
    sink = pa.BufferOutputStream()
    with pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    write_atomically(path, sink.getvalue().to_pybytes())


@dataclass
class _Batch:
    """The pairs of one `assign` call, in its rows' order (or a subset, `rows` saying which)."""

    rows: np.ndarray
    uuids: pa.Array
    variants: pa.Array
    pairs: pa.Array
    content_hash: np.ndarray

    def subset(self, rows: np.ndarray) -> _Batch:
        chosen = pa.array(rows)
        return _Batch(self.rows[rows], self.uuids.take(chosen), self.variants.take(chosen),
                      self.pairs.take(chosen), self.content_hash[rows])


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
    def snapshot_path(self) -> Path:
        return self.path.with_name(self.path.name + SNAPSHOT_SUFFIX)

    @property
    def size(self) -> int:
        return self.last - self.first + 1

    def assign(self, rules: pd.DataFrame) -> pd.DataFrame:
        """`rules` (rows of `expand_rule_variants`) with `sid` (Int64) and `rev` (Int32)
        added, in the same order. Raises ValueError if a pair is missing or occurs twice:
        the caller's bug, and two rules with one sid would be worse than no update."""
        uuids = pc.utf8_lower(arrow_text(rules["attribute_uuid"], large=True))
        variants = arrow_text(rules["variant"], large=True)
        pairs = pc.binary_join_element_wise(uuids, variants, pa.scalar("|", pa.large_string()))
        batch = _Batch(np.arange(len(rules)), uuids, variants, pairs, rule_content_hash(rules))
        if batch.pairs.null_count:
            _refuse_unusable_pairs(batch.pairs)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        connection = sqlite3.connect(self.path, isolation_level=None, timeout=LOCK_WAIT_SECONDS)
        try:
            for statement in (_CREATE_TABLE, _CREATE_SID_INDEX, *_VERSION_SETUP):
                connection.execute(statement)
            connection.execute("BEGIN IMMEDIATE")
            sids, revs, state = self._assign_in_transaction(connection, batch)
            connection.execute("COMMIT")
        except BaseException:
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            raise
        finally:
            connection.close()
        if state is not None:
            _save_snapshot(self.snapshot_path, state)
        return rules.assign(sid=pd.array(sids, dtype="Int64"), rev=pd.array(revs, dtype="Int32"))

    def _assign_in_transaction(
        self, connection: sqlite3.Connection, batch: _Batch
    ) -> tuple[np.ndarray, np.ndarray, _Stored | None]:
        """(sid, rev) per batch row, and the store's rows as committed when the snapshot
        must be (re)written (None when it is current)."""
        token = connection.execute(_READ_TOKEN).fetchone()[0]
        stored = _read_snapshot(self.snapshot_path, token)
        current = stored is not None
        if stored is None:
            stored = _stored(connection)
        for statement in _DROP_TRIGGERS:  # our own writes change the token once, below
            connection.execute(statement)
        in_range = (stored.sids >= self.first) & (stored.sids <= self.last)
        kept = np.flatnonzero(in_range)
        match = pc.index_in(batch.pairs, value_set=stored.pairs.filter(pa.array(in_range)))
        is_known = true_where(pc.is_valid(match))
        sids = np.empty(len(batch.rows), dtype=np.int64)
        revs = np.empty(len(batch.rows), dtype=np.int64)
        known = kept[match.filter(pa.array(is_known)).to_numpy()]
        new_rows = np.flatnonzero(~is_known)
        new = batch.subset(new_rows[pc.sort_indices(batch.pairs.take(
            pa.array(new_rows))).to_numpy()])  # the documented allocation order
        if _repeats(known, new.pairs):
            _refuse_unusable_pairs(batch.pairs)  # raises, naming them; rolled back
        sids[is_known] = stored.sids[known]
        revs[is_known], changed = self._update_revs(
            connection, batch, np.flatnonzero(is_known), stored.hashes[known],
            stored.revs[known])
        bulk_load = len(new.rows) > len(stored.sids)
        if bulk_load:  # rebuilding the index once beats updating it per row (~5x)
            connection.execute("DROP INDEX sids_sid_unique")
        sids[new.rows] = self._allocate(connection, new, stored.sids[in_range])
        revs[new.rows] = 1
        if bulk_load:
            connection.execute(_CREATE_SID_INDEX)  # also re-checks every sid is unique
        wrote = bool(changed.any() or len(new.rows))
        if wrote:
            token = connection.execute(_NEW_TOKEN).fetchone()[0]
        for statement in _CREATE_TRIGGERS:
            connection.execute(statement)
        if current and not wrote:
            return sids, revs, None
        bumped = known[changed]
        stored.hashes[bumped] = batch.content_hash[np.flatnonzero(is_known)[changed]]
        stored.revs[bumped] = revs[np.flatnonzero(is_known)[changed]]
        return sids, revs, stored.with_new(new.pairs, sids[new.rows], new.content_hash, token)

    def _update_revs(self, connection: sqlite3.Connection, batch: _Batch, rows: np.ndarray,
                     stored_hash: np.ndarray, stored_rev: np.ndarray,
                     ) -> tuple[np.ndarray, np.ndarray]:
        """Revs of the known pairs at `rows`, and which changed; only the changed ones are
        copied and stored (none, most days)."""
        changed = batch.content_hash[rows] != stored_hash
        rev = stored_rev + changed
        bumped = batch.subset(rows[changed])
        connection.executemany(_BUMP_REV, zip(
            bumped.content_hash.tolist(), rev[changed].tolist(), bumped.uuids.to_pylist(),
            bumped.variants.to_pylist(), strict=True))
        return rev, changed

    def _allocate(self, connection: sqlite3.Connection, new: _Batch,
                  taken: np.ndarray) -> np.ndarray:
        """Sids for the new pairs (in allocation order), stored with rev 1."""
        free = self.size - len(taken)
        if len(new.rows) > free:
            raise ConfigError(
                f"the sid range is full: {len(new.rows)} new rules but {free} free sids in "
                f"{self.first}-{self.last}; widen MISP_NDR_RULES__SID_RANGE_START / _END "
                f"(the top {RESERVED_TOP_SIDS} sids are reserved for list rules)")
        if not len(new.rows):
            return np.array([], dtype=np.int64)
        preferred = fnv1a_64(new.pairs) % np.uint64(self.size)
        sids = _place(preferred.astype(np.int64), taken - self.first, self.size) + self.first
        first_seen = datetime.now(UTC).isoformat(timespec="seconds")
        count = len(sids)
        connection.executemany(_UPSERT, zip(
            new.uuids.to_pylist(), new.variants.to_pylist(), sids.tolist(),
            new.content_hash.tolist(), [1] * count, [first_seen] * count, strict=True))
        return sids


def _stored(connection: sqlite3.Connection) -> _Stored:
    """Every stored (pair, sid, content hash, rev), read in chunks of aggregated text: one
    row of SQLite output per chunk instead of a Python tuple per pair. Pairs come as one
    byte string with their byte lengths, so no character in a UUID can confuse the split."""
    pairs, sids, hashes, revs = [], [], [], []
    after = 0
    while True:
        last, lengths, joined, *numbers = connection.execute(
            _SELECT_STORED, (after, _READ_CHUNK_ROWS)).fetchone()
        if last is None:
            break
        offsets = np.concatenate(([0], np.cumsum(_integers(lengths))))
        if offsets[-1] != len(joined):
            raise ValueError("the sid store returned pairs of unexpected lengths")
        pairs.append(pa.LargeStringArray.from_buffers(
            len(offsets) - 1, pa.py_buffer(offsets), pa.py_buffer(joined)))
        for column, text in zip((sids, hashes, revs), numbers, strict=True):
            column.append(_integers(text))
        after = last
    if not pairs:
        empty = np.array([], dtype=np.int64)
        return _Stored(pa.array([], pa.large_string()), empty, empty.copy(), empty.copy(), "")
    return _Stored(pa.concat_arrays(pairs),
                   *(np.concatenate(column) for column in (sids, hashes, revs)), "")


def _integers(text: str) -> np.ndarray:
    """Comma-separated integers (a group_concat) as int64, parsed in arrow."""
    parts = pc.split_pattern(pa.array([text], pa.large_string()), ",").flatten()
    return pc.cast(parts, pa.int64()).to_numpy()


def _repeats(known: np.ndarray, sorted_new_pairs: pa.Array) -> bool:
    """Whether a pair occurs twice: a stored pair matched by two rows, or a new pair given
    twice. The new pairs come sorted (their allocation order), so a repeat is a neighbour:
    no hash table of a million pairs on a first build."""
    ordered = np.sort(known)
    if (ordered[1:] == ordered[:-1]).any():
        return True
    count = len(sorted_new_pairs)
    return count > 1 and bool(true_where(pc.equal(sorted_new_pairs.slice(1),
                                                  sorted_new_pairs.slice(0, count - 1))).any())


def _refuse_unusable_pairs(pairs: pa.Array) -> None:
    if not pairs.null_count and len(pc.unique(pairs)) == len(pairs):
        return
    texts = pd.Series(pd.arrays.ArrowStringArray(pairs))
    if texts.isna().any():
        raise ValueError(f"{int(texts.isna().sum())} rule rows have no attribute_uuid or variant")
    duplicated = texts[texts.duplicated()].unique()
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
    """Linear probing with wrap-around, in the given order. `jumps` maps an occupied slot
    walked before to a later slot, every slot in between occupied (path compression), so
    a long run of taken sids is walked once, not once per collision; it only holds slots
    the collisions walked, whatever the size of the range."""
    size = len(occupied)
    taken = bytearray(occupied.view(np.uint8).tobytes())
    jumps: dict[int, int] = {}
    placed = []
    for start in starts.tolist():
        slot, walked = start, []
        while taken[slot]:
            walked.append(slot)
            slot = jumps.get(slot, slot + 1) % size
        for visited in walked:
            jumps[visited] = slot
        taken[slot] = 1
        placed.append(slot)
    return placed


def write_sid_map(lines: pd.DataFrame) -> bytes:
    """The map as CSV, sorted by sid; values are quoted when they hold commas, quotes or
    line breaks (as Python's csv module does: `\\r` alone is not quoted), so any CSV
    reader gets them back intact. Built in arrow, a block of rows at a time (a map has a
    line per rule: whole columns of text at once were fresh memory the size of the map,
    several times over). Rows already in sid order (a built ruleset's) are not reordered."""
    header = (",".join(SID_MAP_COLUMNS) + "\n").encode()
    if not len(lines):
        return header
    sids = lines["sid"].astype("Int64")
    keys = sids.to_numpy(dtype=np.int64, na_value=np.iinfo(np.int64).max)
    order = None
    if sids.hasnans or (len(keys) > 1 and (np.diff(keys) < 0).any()):
        # NA last, ties in their order: as pandas' stable sort_values
        order = pa.array(np.lexsort((np.arange(len(keys)), sids.isna().to_numpy(), keys)))
    columns = [_arrow_column(lines[name], order) for name in SID_MAP_COLUMNS]
    comma = pa.scalar(",", pa.large_string())
    return joined_row_blocks(len(lines), lambda start, count: pc.binary_join_element_wise(
        *(_csv_field(column.slice(start, count)) for column in columns), comma), header)


def _arrow_column(column: pd.Series, order: pa.Array | None) -> pa.Array:
    """One map column in arrow (integers stay integers), in `order` when given."""
    values = (pa.array(column.array) if pd.api.types.is_integer_dtype(column.dtype)
              else arrow_text(column))
    return values if order is None else values.take(order)


def _csv_field(values: pa.Array) -> pa.Array:
    """One block of a CSV column: NA empty, values with `,` `"` or a newline quoted, quotes
    doubled."""
    text = pc.fill_null(values.cast(pa.large_string()), "")
    if pa.types.is_integer(values.type):  # digits and '-' only: never quoted
        return text
    needs_quotes = true_where(pc.match_substring_regex(text, '[,"\n]'))
    rows = np.flatnonzero(needs_quotes)
    if not len(rows):
        return text
    quote = pa.scalar('"', pa.large_string())
    quoted = pc.binary_join_element_wise(
        quote, pc.replace_substring(text.take(pa.array(rows)), '"', '""'), quote,
        pa.scalar("", pa.large_string()))
    return pc.replace_with_mask(text, pa.array(needs_quotes), quoted)


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
