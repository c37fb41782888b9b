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

import pandas as pd

from misp_ndr.config import RulesSettings
from misp_ndr.errors import MispNdrError
from misp_ndr.task_policy import batch_task
from tasks.detections import ParseProblem
from tasks.flowmon_blacklists import render_flowmon_blacklists
from tasks.rule_customizations import Customizations, apply_customizations
from tasks.rule_indicators import FILE_HASH_KINDS, expand_rule_variants
from tasks.rule_sids import SidAllocator, read_sid_map, write_sid_map
from tasks.suricata_rules import check_rules_file, render_list_rules, render_rule_lines, rules_file
from tasks.zeek_intel import render_zeek_intel

RULES_FILE = "misp.rules"
SID_MAP_FILE = "sid-map.csv"
ZEEK_FILE = "misp.intel"
NAME_KINDS = ("domain", "hostname")


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
    lines = pd.concat([lines, list_lines], ignore_index=True)
    counts: dict[str, int] = {}
    if customizations is not None:
        lines, counts = apply_customizations(lines, customizations)
    header = (f"# misp-ndr ruleset, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC: "
              f"{len(lines)} rules from MISP. Generated: edit {settings.customizations_file}, "
              "not this file.")
    content = rules_file(lines, header)
    invalid = check_rules_file(content)
    if invalid:
        raise RulesetInvalid("generated rules failed validation, the previous ruleset is "
                             f"kept: {'; '.join(invalid[:5])}")
    files |= {RULES_FILE: content, SID_MAP_FILE: write_sid_map(lines)}
    return RulesetBuild(files, lines, problems, counts, listed)


def build_ruleset(
    indicators: pd.DataFrame, settings: RulesSettings, sid_db: Path,
    customizations: Customizations | None, misp_url: str | None = None,
) -> RulesetBuild:
    """`customizations` None: a fast rebuild, without them.

    The Flowmon and Zeek files are rendered in a second thread while the Suricata rules
    are: both are mostly arrow kernels, which run without the GIL."""
    build = RulesetBuild({}, pd.DataFrame())
    with ThreadPoolExecutor(max_workers=1) as pool:
        others = pool.submit(_other_sensor_files, indicators, settings, misp_url)
        if settings.suricata:
            allocator = SidAllocator(sid_db, settings.sid_range_start, settings.sid_range_end)
            build = build_suricata(indicators, settings, allocator, customizations)
            previous_map = settings.output_dir / SID_MAP_FILE
            previous = read_sid_map(previous_map) if previous_map.exists() else None
            build.rule_changes = diff_rules(previous, build.lines)
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
        files[ZEEK_FILE] = render_zeek_intel(indicators, misp_url=misp_url)
    return files, refused


def diff_rules(previous: pd.DataFrame | None, lines: pd.DataFrame) -> dict[str, int]:
    """Rules added, removed and changed (rev bumped) against the previous sid map."""
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


build_ruleset_task = batch_task(build_ruleset, "build-ruleset")
