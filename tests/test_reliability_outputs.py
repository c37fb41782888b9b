"""Hostile MISP values through the whole rule pipeline: nothing escapes its field, nothing
is dropped without a word.

The renderers' own property tests (tests/test_suricata_rules.py, test_zeek_intel.py,
test_flowmon_blacklists.py) feed each renderer indicator rows. These start one step
earlier, from attribute records as MISP's JSON carries them (any Unicode: control
characters, quotes, `;`, `\\`, `|`, line breaks, NUL, lone surrogates), through
`attribute_table`, `normalize_rule_indicators` and `build_ruleset`, and hold the files a
sensor reads to an oracle written here:

- every attribute is accounted for: each of its parts is an indicator, or a report names
  the attribute; each indicator reaches every output of its kind, or a report names it;
- every Suricata rule parses (suricataparser) with exactly the options meant, in order;
  every `content` decodes back to (part of) its indicator; `msg` and `metadata` hold
  nothing but what they are for;
- the Zeek file: one line per indicator, five tab-separated fields, no raw tab or line
  break in a value; the Flowmon lists: one indicator per line, nothing else.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from suricataparser import parse_rule

from misp_ndr.config import RulesSettings
from tasks.detections import ParseProblem
from tasks.misp_pull import attribute_table
from tasks.rule_indicators import (
    RULE_INDICATOR_COLUMNS,
    TAG_SEPARATOR,
    normalize_rule_indicators,
)
from tasks.ruleset_build import build_ruleset
from tests.reliability import Recorder

EVENT = "5f0c2c9e-1b2a-4c3d-8e9f-0a1b2c3d4e5f"
MISP_URL = "https://misp.example.org"
CLIENT_TAIL = ["classtype", "target", "sid", "rev", "metadata"]
# variant -> the options its rule must have, in order (a URL rule may add a URI match)
OPTIONS: dict[str, list[str]] = {
    "ip": ["msg", "classtype", "sid", "rev", "metadata"],
    "dns": ["msg", "dns.query", "dotprefix", "content", "nocase", "endswith", *CLIENT_TAIL],
    "tls": ["msg", "flow", "tls.sni", "dotprefix", "content", "nocase", "endswith",
            *CLIENT_TAIL],
    "http": ["msg", "flow", "http.host", "dotprefix", "content", "endswith", *CLIENT_TAIL],
    "ja3": ["msg", "flow", "ja3.hash", "content", *CLIENT_TAIL],
}
URL_HOST = ["msg", "flow", "http.host", "content", "startswith", "endswith"]
URL_OPTIONS = [[*URL_HOST, *CLIENT_TAIL]] + [
    [*URL_HOST, buffer, "content", "startswith", *CLIENT_TAIL]
    for buffer in ("http.uri", "http.uri.raw")]
BUFFERS = {"dns.query": "dns", "tls.sni": "tls", "http.host": "http", "ja3.hash": "ja3"}
RULE_VARIANTS = {"ip": ("ip",), "domain": ("dns", "tls", "http"),
                 "hostname": ("dns", "tls", "http"), "url": ("http",), "ja3": ("ja3",)}
FLOWMON_FILES = {"ip": "misp-ip.txt", "domain": "misp-domain.txt",
                 "hostname": "misp-domain.txt", "url": "misp-url.txt"}
HASH_FILES = {"md5": "misp-md5.list", "sha1": "misp-sha1.list", "sha256": "misp-sha256.list"}
ZEEK_TYPES = {"ip": "Intel::ADDR", "domain": "Intel::DOMAIN", "hostname": "Intel::DOMAIN",
              "url": "Intel::URL", "md5": "Intel::FILE_HASH", "sha1": "Intel::FILE_HASH",
              "sha256": "Intel::FILE_HASH"}
CONTENT = re.compile(r'"(?:[^"\\;|]|\|(?:[0-9A-F]{2} ?)+\|)*"')  # the only form allowed

# --- what MISP may send ---------------------------------------------------------------------

any_character = st.characters(exclude_categories=())  # surrogates and controls included
INJECTIONS = ['"', ";", "\\", "|", "\n", "\r", "\t", "\x00", "\u2028", "\x85", "\ufeff",
              '"; sid:1; rev:1; msg:"x', ")\nalert ip any any -> any any (sid:2;)", "\\;",
              "|00|", "#", " ", "\ud800", "%0a", "xn--", "\u00e9", "\u202e"]
hostile = st.text(any_character, max_size=24) | st.sampled_from(INJECTIONS)
SEEDS: dict[str, str] = {  # a valid value of each type, for hostile text to be put into
    "ip-dst": "45.155.205.233", "ip-src": "2001:4860:4860::8888",
    "ip-dst|port": "45.155.205.233|8443", "ip-src|port": "185.220.101.4|53",
    "domain": "evil-updates.example", "hostname": "cdn.evil-updates.example",
    "domain|ip": "evil-updates.example|185.220.101.4",
    "url": "http://evil-updates.example/gate.php?id=7",
    "ja3-fingerprint-md5": "e7d705a3286e19ea42f587b344ee6865",
    "md5": "0800fc577294c34e0b28ad2839435945",
    "sha1": "a94a8fe5ccb19ba61c4c0823b3e0d1b5b1b0a0a5",
    "sha256": "2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae",
    "filename|md5": "invoice.exe|0800fc577294c34e0b28ad2839435945",
}


@st.composite
def hostile_value(draw: st.DrawFn, seed: str) -> str:
    """The seed with hostile text put in at any place, or hostile text alone."""
    text = draw(hostile)
    where = draw(st.sampled_from(["alone", "before", "after", "inside", "seed"]))
    cut = draw(st.integers(0, len(seed)))
    return {"alone": text, "before": text + seed, "after": seed + text,
            "inside": seed[:cut] + text + seed[cut:], "seed": seed}[where]


@st.composite
def misp_records(draw: st.DrawFn) -> list[dict[str, Any]]:
    """Attribute records of one restSearch page (includeContext), values hostile."""
    chosen = draw(st.lists(st.sampled_from(sorted(SEEDS)), min_size=1, max_size=16))
    info = draw(hostile)
    tags = draw(st.lists(hostile, max_size=3))
    event = {"uuid": EVENT, "info": f"Loader {info}", "date": "2026-11-20", "published": True,
             "Tag": [{"name": tag} for tag in tags]}
    return [{"uuid": f"00000000-0000-4000-8000-{number:012d}", "type": misp_type,
             "category": "Network activity", "value": draw(hostile_value(SEEDS[misp_type])),
             "to_ids": True, "deleted": False, "timestamp": "1795150000", "Event": event}
            for number, misp_type in enumerate(chosen, start=1)]


# --- running the pipeline ---------------------------------------------------------------------


@dataclass
class Outcome:
    records: list[dict[str, Any]]
    indicators: pd.DataFrame
    files: dict[str, bytes]
    problems: list[ParseProblem] = field(default_factory=list)

    def reported(self, uuid: str) -> bool:
        return any(uuid in problem.source for problem in self.problems)


def run_pipeline(records: list[dict[str, Any]], work: Path) -> Outcome:
    """MISP's JSON (as PyMISP's json.loads gives it) -> the files a sensor reads."""
    page = json.loads(json.dumps(records))
    refused: list[ParseProblem] = []

    def note(position: int, record: Any, why: Exception) -> None:
        refused.append(ParseProblem.make(f"MISP attribute {record.get('uuid')}", str(why)))
    pulled = attribute_table(((record, record["Event"]) for record in page), on_malformed=note)
    indicators, rejected, _counts = normalize_rule_indicators(pulled)
    rules = RulesSettings(output_dir=work / "rules")
    build = build_ruleset(indicators, rules, work / "sids.sqlite", None, MISP_URL)
    return Outcome(records, indicators, build.files, [*refused, *rejected, *build.problems])


def parts_of(misp_type: str) -> int:
    return 2 if misp_type == "domain|ip" else 1


def decoded(content: str) -> str:
    """A Suricata content value back to its text: |XX XX| groups are bytes."""
    pieces = content[1:-1].split("|")
    raw = b"".join(bytes.fromhex(piece) if odd else piece.encode("ascii")
                   for odd, piece in ((index % 2, piece) for index, piece in enumerate(pieces)))
    return raw.decode("utf-8")


def file_lines(outcome: Outcome, name: str) -> list[str]:
    text = outcome.files.get(name, b"").decode("utf-8")
    assert text == "" or text.endswith("\n"), name
    lines = text.split("\n")[:-1]
    assert text.splitlines() == lines, f"{name}: a value holds a line break"  # any reader's
    return lines


# --- the oracle ----------------------------------------------------------------------------


def check_accounting(outcome: Outcome) -> None:
    """Each part of each attribute is an indicator or named in a report."""
    for record in outcome.records:
        uuid = record["uuid"]
        kept = int((outcome.indicators["attribute_uuid"] == uuid).sum())
        assert kept == parts_of(record["type"]) or outcome.reported(uuid), record


def rule_findings(outcome: Outcome) -> tuple[Counter[tuple[str, str]], int]:
    """(attribute UUID, variant) of every per-attribute rule, and how many rules hold
    anything not meant (options, metadata, a content no indicator gives)."""
    found: Counter[tuple[str, str]] = Counter()
    injected = 0
    indicators = outcome.indicators
    values = dict(zip(indicators["attribute_uuid"] + " " + indicators["kind"],
                      zip(indicators["value"], indicators["port"], strict=True), strict=True))
    for line in file_lines(outcome, "misp.rules"):
        if line.startswith("#"):
            continue
        rule = parse_rule(line)
        assert rule is not None, line
        names = [option.name for option in rule.options]
        metadata = rule.metadata
        assert not re.search(r'["\\;]', rule.msg), rule.msg
        if metadata and metadata[0].startswith("misp_list "):
            keyword = names[1] if names[1] != "flow" else names[2]
            injected += names[-4:] != ["classtype", *names[-3:]] or len(metadata) != 1
            assert keyword in ("filemd5", "filesha1", "filesha256", "iprep", "dns.query",
                               "tls.sni", "http.host"), line
            continue
        event, attribute, *tags = metadata
        uuid = attribute.removeprefix("misp_attribute_uuid ")
        kind = rule.msg.split(" ")[1]
        variant = next((BUFFERS[name] for name in names if name in BUFFERS), "ip")
        expected = URL_OPTIONS if kind == "url" else [OPTIONS[variant]]
        injected += names not in expected
        injected += event != f"misp_event_uuid {EVENT}"
        injected += not all(re.fullmatch(r"misp_tag [A-Za-z0-9_.:=-]+", tag) for tag in tags)
        contents = [str(option.value) for option in rule.options if option.name == "content"]
        assert all(CONTENT.fullmatch(content) for content in contents), line
        value, port = values.get(f"{uuid} {kind}", (None, None))
        if kind == "ip":  # the address is the rule's header, its only match
            injected += bool(contents) or rule.header != (
                f"ip any any <> {value} {'any' if pd.isna(port) else port}")
        else:
            injected += value is None or not contents_belong(kind, contents, value)
        found[(uuid, variant)] += 1
    return found, injected


def contents_belong(kind: str, contents: list[str], value: str) -> bool:
    """Every content of the rule is the indicator or a piece of it, as it decodes."""
    texts = [decoded(content) for content in contents]
    if kind in ("domain", "hostname"):
        return texts == [f".{value}"]
    if kind == "ja3":
        return texts == [value]
    return bool(texts) and texts[0].lower() in value.lower() and all(
        text in value for text in texts[1:])  # url: its host, then the start of its URI


def check_rules(outcome: Outcome) -> int:
    found, injected = rule_findings(outcome)
    assert all(count == 1 for count in found.values()), found
    for row in outcome.indicators.itertuples():
        for variant in RULE_VARIANTS.get(row.kind, ()):
            assert found[(row.attribute_uuid, variant)] == 1 or outcome.reported(
                row.attribute_uuid), (row, variant)
    return injected


def check_lists(outcome: Outcome) -> int:
    """Flowmon lists and Suricata hash lists: one kept indicator per line, each there."""
    injected = 0
    for files, transform in ((FLOWMON_FILES, str), (HASH_FILES, str.lower)):
        for name in set(files.values()):
            lines = file_lines(outcome, name)
            chosen = outcome.indicators[outcome.indicators["kind"].isin(
                [kind for kind, file in files.items() if file == name])]
            wanted = {transform(value) for value in chosen["value"]}
            injected += sum(1 for line in lines if line not in wanted)
            assert len(lines) == len(set(lines)), name
            for row in chosen.itertuples():
                assert transform(row.value) in lines or outcome.reported(
                    row.attribute_uuid), (name, row)
    return injected


def check_zeek(outcome: Outcome) -> int:
    lines = file_lines(outcome, "misp.intel")
    assert lines[0] == "#fields\tindicator\tindicator_type\tmeta.source\tmeta.desc\tmeta.url"
    rows = [line.split("\t") for line in lines[1:]]
    injected = sum(1 for row in rows if len(row) != 5 or row[0].startswith("#"))
    kept = outcome.indicators[outcome.indicators["kind"].isin(list(ZEEK_TYPES))]
    # Zeek writes a URL without its scheme: two URLs of one event can share a line
    wanted = {(re.sub(r"^[A-Za-z][A-Za-z0-9+.\-]*://", "", row.value, count=1),
               ZEEK_TYPES[row.kind]) for row in kept.itertuples()}
    whole = [tuple(row) for row in rows if len(row) == 5]
    injected += len(whole) - len(set(whole))  # a line twice
    injected += sum(1 for row in whole if row[:2] not in wanted)
    missing = wanted - {row[:2] for row in whole}
    assert not missing, f"kept indicators missing from the Zeek file, unreported: {missing}"
    return injected


CHECKS: dict[str, Callable[[Outcome], int]] = {
    "Suricata rules (every type that becomes a rule): parse, exactly the options meant, "
    "each content decodes to its indicator": check_rules,
    "Flowmon blacklists and Suricata hash lists: one indicator per line": check_lists,
    "Zeek intel file: one line per indicator, five fields": check_zeek,
}


def test_hostile_misp_values_give_faithful_outputs_or_a_report(
    tmp_path: Path, reliability: Recorder,
) -> None:
    """One pipeline run per generated page, held to every output's oracle: the expensive
    part is the build, not the checks."""
    tally: Counter[str] = Counter()

    @settings(max_examples=90, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(records=misp_records())
    def run(records: list[dict[str, Any]]) -> None:
        outcome = run_pipeline(records, tmp_path)
        check_accounting(outcome)
        tally["examples"] += 1
        tally["attributes"] += len(records)
        for name, check in CHECKS.items():
            injected = check(outcome)
            tally[name] += injected
            assert injected == 0, name

    run()
    assert tally["attributes"] > tally["examples"]  # pages of several attributes were tried
    for name in CHECKS:
        reliability.record("outputs", f"arbitrary Unicode in MISP values, event infos and "
                           f"tags ({tally['attributes']} attributes): {name}",
                           checked=tally["examples"], injected=tally[name])


def test_tag_separator_never_splits_a_metadata_tag(tmp_path: Path) -> None:
    """A tag holding the separator itself is cleaned, not read as two tags."""
    records = [{"uuid": "00000000-0000-4000-8000-000000000001", "type": "domain",
                "value": "evil-updates.example", "to_ids": True, "deleted": False,
                "Event": {"uuid": EVENT, "info": "x",
                          "Tag": [{"name": f"a{TAG_SEPARATOR}b; sid:1"}]}}]
    outcome = run_pipeline(records, tmp_path)

    rules = [line for line in file_lines(outcome, "misp.rules") if not line.startswith("#")]
    assert len(rules) == 3
    assert all(parse_rule(rule).metadata[2:] == ["misp_tag a_b_sid:1"] for rule in rules)


def test_an_indicator_zeek_leaves_out_is_reported(tmp_path: Path) -> None:
    row = {"attribute_uuid": "00000000-0000-4000-8000-000000000001", "event_uuid": EVENT,
           "event_info": "x", "tags": "", "misp_type": "url", "kind": "url",
           "value": "#http://evil.example/", "port": None}
    indicators = pd.DataFrame([row]).astype(RULE_INDICATOR_COLUMNS)
    build = build_ruleset(indicators, RulesSettings(output_dir=tmp_path / "rules", suricata=False,
                                                    flowmon=False), tmp_path / "sids.sqlite",
                          None, MISP_URL)

    assert build.files["misp.intel"].count(b"\n") == 1  # the header alone
    assert any(row["attribute_uuid"] in problem.source for problem in build.problems)
