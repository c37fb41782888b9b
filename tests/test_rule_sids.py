"""Stable sids: what an analyst tuning rules by sid, and the sightings job, rely on."""

from __future__ import annotations

import csv
import io
import sqlite3
import uuid
from contextlib import closing
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest

from misp_ndr.errors import ConfigError, InputError
from tasks import arrow_text
from tasks.rule_indicators import RESERVED_TOP_SIDS, RULE_INDICATOR_COLUMNS, expand_rule_variants
from tasks.rule_sids import SID_MAP_COLUMNS, SidAllocator, read_sid_map, write_sid_map
from tasks.ruleset_build import diff_rules, previous_rules

START = 1_000_000
END = 1_999_999


def attribute_uuid(number: int) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"attribute-{number}"))


def indicators(rows: list[dict[str, object]]) -> pd.DataFrame:
    defaults = {"event_uuid": "e0000000-0000-4000-8000-000000000001", "event_info": "Phishing",
                "tags": "tlp:amber", "misp_type": "ip-dst", "kind": "ip", "port": None}
    frame = pd.DataFrame([{**defaults, **row} for row in rows])
    return frame.reindex(columns=list(RULE_INDICATOR_COLUMNS)).astype(RULE_INDICATOR_COLUMNS)


def ip_rules(numbers: range | list[int]) -> pd.DataFrame:
    return expand_rule_variants(indicators(
        [{"attribute_uuid": attribute_uuid(n), "value": f"198.51.{n // 250}.{n % 250}"}
         for n in numbers]))


def sids_by_uuid(assigned: pd.DataFrame) -> dict[str, int]:
    return dict(zip(assigned["attribute_uuid"], assigned["sid"].astype(int), strict=True))


def reference_preferred_sid(pair: str, start: int, end: int) -> int:
    """The documented formula, written independently of the vectorized one."""
    value = 0xCBF29CE484222325
    for byte in pair.encode():
        value = ((value ^ byte) * 0x100000001B3) % 2**64
    return start + value % (end - RESERVED_TOP_SIDS - start + 1)


def test_same_attribute_keeps_its_sid_across_runs_and_new_attributes(tmp_path: Path) -> None:
    first = SidAllocator(tmp_path / "sids.sqlite", START, END).assign(ip_rules(range(50)))
    again = SidAllocator(tmp_path / "sids.sqlite", START, END).assign(ip_rules(range(500)))
    before, after = sids_by_uuid(first), sids_by_uuid(again)
    assert {key: after[key] for key in before} == before
    assert again["sid"].is_unique


def test_a_new_attribute_gets_the_sid_its_uuid_names_on_any_machine(tmp_path: Path) -> None:
    rules = ip_rules(range(200))
    here = SidAllocator(tmp_path / "a.sqlite", START, END).assign(rules)
    elsewhere = SidAllocator(tmp_path / "b.sqlite", START, END).assign(rules.iloc[::-1])
    assert sids_by_uuid(here) == sids_by_uuid(elsewhere)
    for row in here.itertuples():
        assert row.sid == reference_preferred_sid(f"{row.attribute_uuid}|ip", START, END)


def test_sids_stay_in_range_below_the_reserved_top(tmp_path: Path) -> None:
    end = START + RESERVED_TOP_SIDS + 99  # 100 per-attribute sids
    assigned = SidAllocator(tmp_path / "sids.sqlite", START, end).assign(ip_rules(range(100)))
    assert sorted(assigned["sid"]) == list(range(START, START + 100))


def test_domain_variants_each_get_their_own_sid(tmp_path: Path) -> None:
    rules = expand_rule_variants(indicators([{"attribute_uuid": attribute_uuid(1),
                                              "kind": "domain", "value": "evil.example"}]))
    assigned = SidAllocator(tmp_path / "sids.sqlite", START, END).assign(rules)
    assert sorted(assigned["variant"]) == ["dns", "http", "tls"]
    assert assigned["sid"].nunique() == 3


def uuids_preferring(offset: int, size_end: int, count: int) -> list[str]:
    found = [attribute_uuid(n) for n in range(20_000)
             if reference_preferred_sid(f"{attribute_uuid(n)}|ip", START, size_end)
             == START + offset]
    return sorted(found)[:count]


def rules_for(uuids: list[str]) -> pd.DataFrame:
    return expand_rule_variants(indicators(
        [{"attribute_uuid": u, "value": f"203.0.113.{i}"} for i, u in enumerate(uuids)]))


def test_collisions_probe_upward_in_uuid_order_and_wrap_around(tmp_path: Path) -> None:
    end = START + RESERVED_TOP_SIDS + 9  # 10 sids: collisions are easy to make
    top = uuids_preferring(9, end, 2)
    assigned = SidAllocator(tmp_path / "sids.sqlite", START, end).assign(rules_for(top[::-1]))
    assert sids_by_uuid(assigned) == {top[0]: START + 9, top[1]: START}


def test_a_sid_is_never_given_to_another_attribute(tmp_path: Path) -> None:
    end = START + RESERVED_TOP_SIDS + 9
    first, second = uuids_preferring(4, end, 2)
    allocator = SidAllocator(tmp_path / "sids.sqlite", START, end)
    assert sids_by_uuid(allocator.assign(rules_for([second]))) == {second: START + 4}
    # `second` left MISP; `first` prefers the same sid, sorts first, and still cannot have it
    assert sids_by_uuid(allocator.assign(rules_for([first]))) == {first: START + 5}
    assert sids_by_uuid(allocator.assign(rules_for([first, second]))) == {
        first: START + 5, second: START + 4}


def test_full_range_names_the_settings_to_widen(tmp_path: Path) -> None:
    end = START + RESERVED_TOP_SIDS + 9
    allocator = SidAllocator(tmp_path / "sids.sqlite", START, end)
    allocator.assign(ip_rules(range(8)))
    with pytest.raises(ConfigError, match="MISP_NDR_RULES__SID_RANGE_START / _END"):
        allocator.assign(ip_rules(range(11)))
    exactly_full = allocator.assign(ip_rules(range(10)))
    assert sorted(exactly_full["sid"]) == list(range(START, START + 10))


def test_rev_goes_up_only_when_rule_content_changes(tmp_path: Path) -> None:
    allocator = SidAllocator(tmp_path / "sids.sqlite", START, END)
    base = {"attribute_uuid": attribute_uuid(7), "value": "192.0.2.7"}

    def rev_after(**changes: object) -> int:
        return int(allocator.assign(expand_rule_variants(indicators([{**base, **changes}])))
                   ["rev"].iloc[0])

    assert rev_after() == 1
    assert rev_after() == 1
    assert rev_after(misp_type="ip-src") == 1  # not rendered into the rule
    assert rev_after(event_info="Phishing wave 2") == 2
    assert rev_after(event_info="Phishing wave 2", tags="tlp:red") == 3
    assert rev_after(event_info="Phishing wave 2", tags="tlp:red", port=443) == 4
    assert rev_after(event_info="Phishing wave 2", tags="tlp:red", port=443) == 4


def test_moving_the_range_reallocates_inside_the_new_one(tmp_path: Path) -> None:
    SidAllocator(tmp_path / "sids.sqlite", START, END).assign(ip_rules(range(20)))
    moved = SidAllocator(tmp_path / "sids.sqlite", 3_000_000, 3_999_999).assign(
        ip_rules(range(20)))
    assert moved["sid"].between(3_000_000, 3_999_999 - RESERVED_TOP_SIDS).all()
    assert (moved["rev"] == 1).all()


@pytest.mark.parametrize("numbers", [[1, 1], [3, 1, 2, 1]], ids=["neighbours", "apart"])
def test_duplicate_pairs_are_refused_before_anything_is_stored(
    tmp_path: Path, numbers: list[int]
) -> None:
    rules = ip_rules(numbers)
    with pytest.raises(ValueError, match="more than once"):
        SidAllocator(tmp_path / "sids.sqlite", START, END).assign(rules)
    again = SidAllocator(tmp_path / "sids.sqlite", START, END).assign(ip_rules([1]))
    assert int(again["sid"].iloc[0]) == reference_preferred_sid(
        f"{attribute_uuid(1)}|ip", START, END)


def test_keeps_row_order_index_and_types(tmp_path: Path) -> None:
    rules = ip_rules(range(5)).set_axis([10, 11, 12, 13, 14])
    assigned = SidAllocator(tmp_path / "sids.sqlite", START, END).assign(rules)
    assert list(assigned.index) == [10, 11, 12, 13, 14]
    assert list(assigned["value"]) == list(rules["value"])
    assert str(assigned["sid"].dtype) == "Int64" and str(assigned["rev"].dtype) == "Int32"
    empty = SidAllocator(tmp_path / "sids.sqlite", START, END).assign(rules.iloc[:0])
    assert empty.empty and {"sid", "rev"} <= set(empty.columns)


def test_uppercase_uuid_is_the_same_attribute(tmp_path: Path) -> None:
    allocator = SidAllocator(tmp_path / "sids.sqlite", START, END)
    lower = allocator.assign(ip_rules([3]))
    upper = allocator.assign(ip_rules([3]).assign(
        attribute_uuid=lambda frame: frame["attribute_uuid"].str.upper()))
    assert list(lower["sid"]) == list(upper["sid"])


def test_a_hundred_thousand_new_pairs_get_distinct_sids_in_range(tmp_path: Path) -> None:
    """Scale, not speed: timings belong in benchmarks, not in unit tests."""
    assigned = SidAllocator(tmp_path / "sids.sqlite", START, END).assign(
        ip_rules(range(100_000)))
    assert assigned["sid"].is_unique
    assert assigned["sid"].between(START, END - RESERVED_TOP_SIDS).all()


def rule_lines(values: list[str]) -> pd.DataFrame:
    return pd.DataFrame({
        "sid": pd.array([1_000_010 + i for i in range(len(values))], dtype="Int64"),
        "rev": pd.array([1] * len(values), dtype="Int32"),
        "attribute_uuid": [attribute_uuid(i) for i in range(len(values))],
        "event_uuid": "e0000000-0000-4000-8000-000000000001",
        "kind": "url", "variant": "http", "value": values,
        "rule": "alert http any any -> any any (sid:1;)",
    }).astype({"attribute_uuid": "string", "event_uuid": "string", "kind": "string",
               "variant": "string", "value": "string"})


def test_sid_map_round_trips_values_with_commas_quotes_and_line_breaks(tmp_path: Path) -> None:
    values = ['http://x.example/a,b', 'http://x.example/"q"', "http://x.example/\r\nInjected",
              "null", "NA"]
    lines = rule_lines(values)
    (tmp_path / "sid-map.csv").write_bytes(write_sid_map(lines))
    back = read_sid_map(tmp_path / "sid-map.csv")
    assert back.to_dict("records") == lines[SID_MAP_COLUMNS].to_dict("records")


@pytest.mark.parametrize("block_rows", [1, 2, 3])
def test_sid_map_built_block_by_block_is_pythons_csv_in_sid_order(
    block_rows: int, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The map is made a block of rows at a time (131,072 in use): quoted values in one
    block and not the next, rows given out of sid order, a missing value."""
    monkeypatch.setattr(arrow_text, "_BLOCK_ROWS", block_rows)
    values = ["http://x.example/a,b", "http://x.example/plain", 'http://x.example/"q"',
              "http://x.example/\r\nInjected", "plain", None, "http://x.example/c"]
    lines = rule_lines(["-"] * len(values)).assign(value=pd.array(values, dtype="string"))
    lines = lines.iloc[[3, 0, 6, 1, 5, 2, 4]]  # out of sid order
    expected = io.StringIO(newline="")
    writer = csv.writer(expected, lineterminator="\n")
    writer.writerow(SID_MAP_COLUMNS)
    for row in lines.sort_values("sid")[SID_MAP_COLUMNS].itertuples(index=False):
        writer.writerow(["" if pd.isna(value) else value for value in row])
    assert write_sid_map(lines).decode() == expected.getvalue()


def test_sid_map_header_order_and_list_rules_without_attribute(tmp_path: Path) -> None:
    lines = pd.concat([rule_lines(["http://b.example/"]), rule_lines(["-"]).assign(
        sid=pd.array([1_999_990], dtype="Int64"), attribute_uuid=pd.NA, event_uuid=pd.NA,
        kind="md5", variant="filemd5", value=pd.NA)]).iloc[::-1]
    text = write_sid_map(lines).decode()
    assert text.splitlines()[0] == "sid,rev,attribute_uuid,event_uuid,kind,variant,value"
    assert text.splitlines()[2] == "1999990,1,,,md5,filemd5,"
    (tmp_path / "sid-map.csv").write_text(text)
    assert read_sid_map(tmp_path / "sid-map.csv")["attribute_uuid"].isna().tolist() == [
        False, True]


@pytest.mark.parametrize("content", ["", "sid,rev\n1,1\n",
                                     "sid,rev,attribute_uuid,event_uuid,kind,variant,value\n"
                                     "12x,1,a,b,ip,ip,192.0.2.1\n"])
def test_unreadable_sid_map_is_an_input_error_naming_the_file(tmp_path: Path,
                                                              content: str) -> None:
    path = tmp_path / "sid-map.csv"
    path.write_text(content)
    with pytest.raises(InputError, match=r"sid-map\.csv"):
        read_sid_map(path)


def test_same_attributes_in_any_order_get_the_same_sids_on_another_machine(
    tmp_path: Path,
) -> None:
    rules = ip_rules(range(2000))
    here = SidAllocator(tmp_path / "here.sqlite", 1_000_000, 1_002_199).assign(rules)
    shuffled = rules.sample(frac=1, random_state=3)
    there = SidAllocator(tmp_path / "there.sqlite", 1_000_000, 1_002_199).assign(shuffled)
    assert sids_by_uuid(here) == sids_by_uuid(there)  # dense range: collisions included


def test_previous_rules_reads_sid_and_rev_as_read_sid_map_does(tmp_path: Path) -> None:
    """The diff's fast reader, on a map whose values hold commas, quotes and line breaks."""
    lines = rule_lines(['http://x.example/a,b', 'http://x.example/"q"',
                        "http://x.example/\r\nInjected", "null"]).assign(
        rev=pd.array([1, 2, 3, 4], dtype="Int32"))
    path = tmp_path / "sid-map.csv"
    path.write_bytes(write_sid_map(lines))

    fast = previous_rules(path)

    slow = read_sid_map(path)[["sid", "rev"]]
    assert fast.to_dict("records") == slow.to_dict("records")
    assert fast["rev"].tolist() == [1, 2, 3, 4]


@pytest.mark.parametrize("content", ["", "sid,rev\n1,1\n",
                                     "sid,rev,attribute_uuid,event_uuid,kind,variant,value\n"
                                     "12x,1,a,b,ip,ip,192.0.2.1\n"])
def test_previous_rules_refuses_what_read_sid_map_refuses(tmp_path: Path, content: str) -> None:
    path = tmp_path / "sid-map.csv"
    path.write_text(content)
    with pytest.raises(InputError, match=r"sid-map\.csv"):
        previous_rules(path)


@pytest.mark.parametrize(("old", "new"), [
    ([(1, 1), (2, 1), (3, 1)], [(2, 1), (3, 2), (4, 1), (5, 1)]),  # unique sids: numpy
    ([(1, 1), (1, 2), (3, 1)], [(1, 1), (3, 2), (4, 1)]),  # a repeated sid: the merge
])
def test_diff_counts_added_removed_and_changed_rules(old: list[tuple[int, int]],
                                                     new: list[tuple[int, int]]) -> None:
    def frame(pairs: list[tuple[int, int]]) -> pd.DataFrame:
        return pd.DataFrame({"sid": pd.array([s for s, _ in pairs], dtype="Int64"),
                             "rev": pd.array([r for _, r in pairs], dtype="Int32")})

    changes = diff_rules(frame(old), frame(new))

    old_revs = {}
    for sid, rev in old:
        old_revs.setdefault(sid, []).append(rev)
    changed = sum(rev != before for sid, rev in new for before in old_revs.get(sid, []))
    assert changes == {"added": len({s for s, _ in new} - set(old_revs)),
                       "removed": len(set(old_revs) - {s for s, _ in new}),
                       "changed": changed}


def stored_rows(path: Path) -> set[tuple[str, int, int, int]]:
    """What the SQLite file holds, read without the allocator."""
    with closing(sqlite3.connect(path)) as connection:
        return set(connection.execute(
            "SELECT attribute_uuid || '|' || variant, sid, content_hash, rev FROM sids"))


def snapshot_rows(allocator: SidAllocator) -> set[tuple[str, int, int, int]]:
    table = pa.ipc.open_file(allocator.snapshot_path.read_bytes()).read_all()
    return set(zip(*(table[name].to_pylist() for name in table.column_names), strict=True))


def test_the_store_snapshot_follows_every_kind_of_change(tmp_path: Path) -> None:
    """New pairs, rev bumps, a moved range (pairs stored again) and an unchanged run: the
    Arrow snapshot always holds what SQLite holds, so reading it gives the same sids."""
    path = tmp_path / "sids.sqlite"
    steps = [
        (START, END, ip_rules(range(30))),
        (START, END, ip_rules(range(40))),
        (START, END, ip_rules(range(40)).assign(event_info="Wave 2")),
        (3_000_000, 3_999_999, ip_rules(range(10, 50))),
        (3_000_000, 3_999_999, ip_rules(range(10, 50))),
    ]
    for start, end, rules in steps:
        allocator = SidAllocator(path, start, end)
        assigned = allocator.assign(rules)
        assert snapshot_rows(allocator) == stored_rows(path)
        allocator.snapshot_path.unlink()  # the same call without the snapshot: SQLite
        assert allocator.assign(rules)[["sid", "rev"]].equals(assigned[["sid", "rev"]])


@pytest.mark.parametrize("edit", [
    "UPDATE sids SET sid = sid + 1 WHERE rowid = (SELECT max(rowid) FROM sids)",
    "DELETE FROM sids WHERE rowid = 1",
    "UPDATE sids SET rev = 7",
])
def test_a_change_made_behind_the_allocators_back_retires_the_snapshot(
    tmp_path: Path, edit: str,
) -> None:
    """A hand edit (or an older misp-ndr) writes SQLite only: the snapshot must not be
    believed afterwards."""
    path = tmp_path / "sids.sqlite"
    allocator = SidAllocator(path, START, END)
    allocator.assign(ip_rules(range(20)))
    with closing(sqlite3.connect(path)) as connection, connection:
        connection.execute(edit)

    assigned = allocator.assign(ip_rules(range(20)))

    expected = {pair.split("|")[0]: (sid, rev) for pair, sid, _hash, rev in stored_rows(path)}
    assert {uuid: (int(sid), int(rev)) for uuid, sid, rev in zip(
        assigned["attribute_uuid"], assigned["sid"], assigned["rev"], strict=True)} == expected
    assert snapshot_rows(allocator) == stored_rows(path)


@pytest.mark.parametrize("body", [
    "1,1,a,b,ip,ip\n",  # a short row: pandas fills it
    "1,1,a,b,ip,ip,x,extra\n",  # a long row
    '1,1,a,b,url,http,"x\n2,2,y"\n3,1,a,b,ip,ip,z\n',  # a line break inside quotes
    "1,1,a,b,ip,ip,\xff\n",  # not UTF-8
])
def test_previous_rules_agrees_with_read_sid_map_on_odd_maps(tmp_path: Path, body: str) -> None:
    path = tmp_path / "sid-map.csv"
    path.write_bytes((",".join(SID_MAP_COLUMNS) + "\n" + body).encode("latin-1"))
    try:
        expected = read_sid_map(path)[["sid", "rev"]].to_dict("records")
    except InputError:
        with pytest.raises(InputError):
            previous_rules(path)
    else:
        assert previous_rules(path).to_dict("records") == expected
