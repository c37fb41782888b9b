"""From the indicator set to every output file, validated before anything is written.

Suricata: one rule per (attribute, variant) with a stable sid, or, beyond the dataset
threshold, IPs and names in datasets / IP reputation lists loaded by a handful of rules;
file hashes in hash lists. Then Flowmon ADS blacklists, the Zeek intel file and the sid
map the sightings job reads.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from pyarrow import csv as pa_csv

from misp_ndr.config import RulesSettings
from misp_ndr.errors import MispNdrError
from misp_ndr.task_policy import batch_task
from tasks.detections import ParseProblem
from tasks.flowmon_blacklists import render_flowmon_blacklists
from tasks.rule_customizations import Customizations, apply_customizations
from tasks.rule_indicators import FILE_HASH_KINDS, expand_rule_variants
from tasks.rule_sids import SID_MAP_COLUMNS, SidAllocator, read_sid_map, write_sid_map
from tasks.suricata_rules import render_list_rules, render_rule_lines
from tasks.suricata_rules_file import checked_rules_file
from tasks.zeek_intel import render_zeek_intel

RULES_FILE = "misp.rules"
SID_MAP_FILE = "sid-map.csv"
ZEEK_FILE = "misp.intel"
NAME_KINDS = ("domain", "hostname")
_SID_MAP_HEADER = (",".join(SID_MAP_COLUMNS) + "\n").encode()


class RulesetInvalid(MispNdrError):
    """The generated rules failed validation: nothing is written, the old ruleset stays."""


@dataclass
class RulesetBuild:
    files: dict[str, bytes]
    lines: pd.DataFrame  # Suricata rule lines after customizations (empty when off)
    problems: list[ParseProblem] = field(default_factory=list)
    customization_counts: dict[str, int] = field(default_factory=dict)
    dataset_kinds: list[str] = field(default_factory=list)
    rule_changes: dict[str, int] = field(default_factory=dict)


def kinds_for_datasets(indicators: pd.DataFrame, threshold: int) -> list[str]:
    """IPs, or names, past the threshold go to lists: a rule each would not scale."""
    counts = indicators["kind"].value_counts()
    chosen = ["ip"] if counts.get("ip", 0) > threshold else []
    if sum(counts.get(kind, 0) for kind in NAME_KINDS) > threshold:
        chosen += list(NAME_KINDS)
    return chosen


def build_suricata(
    indicators: pd.DataFrame, settings: RulesSettings, allocator: SidAllocator,
    customizations: Customizations | None,
) -> RulesetBuild:
    listed = kinds_for_datasets(indicators, settings.dataset_threshold)
    kind = indicators["kind"]
    one_each = indicators[~kind.isin([*listed, *FILE_HASH_KINDS])]
    lines, problems = render_rule_lines(allocator.assign(expand_rule_variants(one_each)),
                                        settings)
    list_lines, files = render_list_rules(indicators[kind.isin(FILE_HASH_KINDS)],
                                          indicators[kind.isin(listed)], settings)
    # per-attribute lines come in sid order, list rules' sids are above theirs: in sid
    # order, the rules file and the sid map need not reorder millions of rows
    lines = pd.concat([lines, list_lines.sort_values("sid", kind="stable")], ignore_index=True)
    counts: dict[str, int] = {}
    if customizations is not None:
        lines, counts = apply_customizations(lines, customizations)
    header = (f"# misp-ndr ruleset, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC: "
              f"{len(lines)} rules from MISP. Generated: edit {settings.customizations_file}, "
              "not this file.")
    with ThreadPoolExecutor(max_workers=1) as pool:  # both are mostly arrow kernels
        sid_map = pool.submit(write_sid_map, lines)
        content, invalid = checked_rules_file(lines, header)
        if invalid:
            raise RulesetInvalid("generated rules failed validation, the previous ruleset "
                                 f"is kept: {'; '.join(invalid[:5])}")
        files |= {RULES_FILE: content, SID_MAP_FILE: sid_map.result()}
    return RulesetBuild(files, lines, problems, counts, listed)


def build_ruleset(
    indicators: pd.DataFrame, settings: RulesSettings, sid_db: Path,
    customizations: Customizations | None, misp_url: str | None = None,
) -> RulesetBuild:
    """`customizations` None: a fast rebuild, without them.

    The Flowmon and Zeek files are rendered, and the previous sid map read, in a second
    thread while the Suricata rules are: all mostly arrow kernels, which run without the
    GIL."""
    build = RulesetBuild({}, pd.DataFrame())
    previous_map = settings.output_dir / SID_MAP_FILE
    with ThreadPoolExecutor(max_workers=1) as pool:
        others = pool.submit(_other_sensor_files, indicators, settings, misp_url)
        if settings.suricata:
            previous = pool.submit(previous_rules, previous_map)
            allocator = SidAllocator(sid_db, settings.sid_range_start, settings.sid_range_end)
            build = build_suricata(indicators, settings, allocator, customizations)
            build.rule_changes = diff_rules(previous.result(), build.lines)
        files, refused = others.result()
    build.files |= files
    build.problems += refused
    return build


def _other_sensor_files(
    indicators: pd.DataFrame, settings: RulesSettings, misp_url: str | None,
) -> tuple[dict[str, bytes], list[ParseProblem]]:
    """The Flowmon blacklists and the Zeek intel file, as settings ask, and the values
    Flowmon refused."""
    files: dict[str, bytes] = {}
    refused: list[ParseProblem] = []
    if settings.flowmon:
        blacklists, refused = render_flowmon_blacklists(indicators)
        files |= blacklists
    if settings.zeek:
        files[ZEEK_FILE], unsafe = render_zeek_intel(indicators, misp_url=misp_url)
        refused += unsafe
    return files, refused


def previous_rules(path: Path) -> pd.DataFrame | None:
    """`sid` and `rev` of the previous sid map, for `diff_rules` (None: no map yet). Read by arrow's
    multithreaded CSV reader (the map has a line per rule, a pandas parse of every column
    took most of a second per million); any file it does not read cleanly, or whose sid /
    rev are not whole numbers, goes through `read_sid_map`, which accepts or refuses it."""
    if not path.exists():
        return None
    try:
        data = path.read_bytes()
        if not data.startswith(_SID_MAP_HEADER):
            raise ValueError("not a sid map we wrote")
        pa.LargeBinaryArray.from_buffers(  # the whole file is UTF-8 (checked, not copied)
            pa.large_binary(), 1, [None, pa.py_buffer(np.array([0, len(data)], np.int64)),
                                   pa.py_buffer(data)]).cast(pa.large_string())
        table = pa_csv.read_csv(
            pa.BufferReader(data), parse_options=pa_csv.ParseOptions(newlines_in_values=True),
            convert_options=pa_csv.ConvertOptions(
                include_columns=["sid", "rev"], strings_can_be_null=False,
                column_types={"sid": pa.string(), "rev": pa.string()}))
        columns = {}
        for name, digits in (("sid", 18), ("rev", 9)):
            text = table[name]
            whole = pc.match_substring_regex(text, rf"^[0-9]{{1,{digits}}}$")
            if pc.all(whole, skip_nulls=False).as_py() is False:  # None: no rows
                raise ValueError(f"{name} is not a whole number")
            columns[name] = pc.cast(text, pa.int64()).to_numpy()
    except (pa.ArrowException, ValueError, OSError):
        return read_sid_map(path)[["sid", "rev"]]
    return pd.DataFrame({"sid": pd.array(columns["sid"], dtype="Int64"),
                         "rev": pd.array(columns["rev"], dtype="Int32")})


def diff_rules(previous: pd.DataFrame | None, lines: pd.DataFrame) -> dict[str, int]:
    """Rules added, removed and changed (rev bumped) against the previous sid map."""
    fast = _diff_unique_sids(previous, lines)
    if fast is not None:
        return fast
    if lines.empty:
        current = pd.DataFrame({"sid": pd.Series(dtype="Int64"), "rev": pd.Series(dtype="Int32")})
    else:
        current = lines[["sid", "rev"]]
    if previous is None or previous.empty:
        return {"added": len(current), "removed": 0, "changed": 0}
    joined = previous[["sid", "rev"]].astype({"sid": "Int64", "rev": "Int32"}).merge(
        current.astype({"sid": "Int64", "rev": "Int32"}), on="sid", how="outer",
        suffixes=("_old", "_new"), indicator=True)
    both = joined["_merge"] == "both"
    return {
        "added": int((joined["_merge"] == "right_only").sum()),
        "removed": int((joined["_merge"] == "left_only").sum()),
        "changed": int((both & (joined["rev_old"] != joined["rev_new"])).sum()),
    }


def _diff_unique_sids(previous: pd.DataFrame | None,
                      lines: pd.DataFrame) -> dict[str, int] | None:
    """`diff_rules` in numpy when every sid on both sides is present and unique (always, for
    maps we wrote): the same counts as the outer merge, without a pandas join of millions
    of rows. None otherwise, and the merge decides."""
    if previous is None or previous.empty or lines.empty:
        return None
    sides = []
    for frame in (previous, lines):
        sid, rev = frame["sid"].astype("Int64"), frame["rev"].astype("Int32")
        if sid.hasnans or rev.hasnans:
            return None
        sides.append((sid.to_numpy(dtype=np.int64), rev.to_numpy(dtype=np.int64)))
    (old_sid, old_rev), (new_sid, new_rev) = sides
    if _repeated(old_sid) or _repeated(new_sid):
        return None
    _common, old_at, new_at = np.intersect1d(old_sid, new_sid, assume_unique=True,
                                            return_indices=True)
    return {"added": len(new_sid) - len(old_at), "removed": len(old_sid) - len(old_at),
            "changed": int((old_rev[old_at] != new_rev[new_at]).sum())}


def _repeated(values: np.ndarray) -> bool:
    """Whether a value occurs twice (a sort: numpy's unique is several times slower)."""
    ordered = np.sort(values)
    return bool((ordered[1:] == ordered[:-1]).any())


build_ruleset_task = batch_task(build_ruleset, "build-ruleset")
