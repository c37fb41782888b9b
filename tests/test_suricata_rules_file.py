"""The rules file and its check: the header, the order, and a check that names each broken
line, whose one-pattern fast path reports exactly what every check on every line does."""

from __future__ import annotations

import random
import re

import numpy as np
import pandas as pd
import pyarrow.compute as pc
import pytest
from suricataparser import parse_rule

from tasks import suricata_rules_file as module
from tasks.suricata_rules import RULE_LINE_COLUMNS
from tasks.suricata_rules_file import check_rules_file, checked_rules_file, rules_file
from tests.test_suricata_rules import render

# --- rules file and its check ---------------------------------------------------------------


def test_rules_file_has_the_header_then_rules_by_sid_and_a_trailing_newline() -> None:
    lines, _ = render({"kind": "ip", "value": "203.0.113.7"}, {"kind": "ja3", "value": "0" * 32})
    lines = lines.iloc[::-1]

    content = rules_file(lines, "misp-ndr ruleset\n# already a comment\nbell\x07")

    text = content.decode()
    assert text.endswith(";)\n")
    head, first, second = text.splitlines()[:3], *text.splitlines()[3:]
    assert head == ["# misp-ndr ruleset", "# already a comment", "# bell"]
    assert parse_rule(first).sid < parse_rule(second).sid


def test_rules_file_of_no_rules_is_the_header_alone() -> None:
    content = rules_file(pd.DataFrame(columns=list(RULE_LINE_COLUMNS)), "nothing yet")

    assert content == b"# nothing yet\n"
    assert check_rules_file(content) == []


GOOD = 'alert ip any any -> any any (msg:"ok \\; fine"; sid:{sid}; rev:1;)'


@pytest.mark.parametrize(("content", "problem"), [
    (GOOD.format(sid=1) + "\n" + GOOD.format(sid=1) + "\n", "line 1: sid 1 is on more than one"),
    ('alert ip any any -> any any (msg:"open; sid:1; rev:1;)\n', "line 1: is not a rule"),
    ('alert ip any any -> any any (msg:"a;b"; sid:1; rev:1;)\n', "line 1: is not a rule"),
    ('alert ip any any -> any any msg:"a"; sid:1; rev:1;\n', "line 1: is not a rule"),
    ('alert ip any any -> any any (msg:"a"; rev:1;)\n', "line 1: has no sid"),
    ('alert ip any any -> any any (msg:"a"; sid:1;)\n', "line 1: has no rev"),
    ('alert ip any any -> any any (sid:1; rev:1;)\n', "line 1: has no msg"),
    ('alert ip any any -> any any (msg:"a\x0b"; sid:1; rev:1;)\n', "control character"),
    (b'alert ip any any -> any any (msg:"\xff"; sid:1; rev:1;)\n', "not valid UTF-8"),
    (" " + GOOD.format(sid=1) + "\n", "starts with whitespace"),
    (GOOD.format(sid=1), "not terminated by a newline"),
    ("# header\n\n" + GOOD.format(sid=1)[:-1] + "\\\n", "line 3: ends with"),
])
def test_check_rules_file_names_the_broken_line(content: str | bytes, problem: str) -> None:
    data = content if isinstance(content, bytes) else content.encode()

    problems = check_rules_file(data)

    assert any(problem in found for found in problems), problems


def test_check_rules_file_accepts_comments_disabled_rules_and_blank_lines() -> None:
    content = ("# header\n\n# " + GOOD.format(sid=1) + "\n" + GOOD.format(sid=1) + "\n"
               + GOOD.format(sid=2) + "\n").encode()

    assert check_rules_file(content) == []


# --- the check's one-pattern fast path finds what every check on every line finds ----------


def every_check_on_every_line(content: bytes) -> list[str]:
    """check_rules_file without its fast path: each check runs on every line."""
    lines, valid_utf8 = module._file_lines(content)
    problems, is_rule, found = module._checked_lines(lines, np.arange(len(lines)), valid_utf8)
    long_lines = pc.greater(pc.binary_length(lines), module.MAX_RULE_BYTES).to_numpy(
        zero_copy_only=False) & is_rule
    problems += [(int(n) + 1, f"is longer than {module.MAX_RULE_BYTES} bytes")
                 for n in np.flatnonzero(long_lines)]
    problems += module._sid_problems(module._sid_texts(lines), np.flatnonzero(is_rule), found)
    return [f"line {number}: {why}" for number, why in sorted(problems)]


EDITS = ['"', ";", "\\", "(", ")", "[", " ", "\x07", "\t", "\u00e9", "|", "#", ":", "\r"]


def one_rule_of_each_kind() -> pd.DataFrame:
    """Rendered lines to break: an ip, a domain (three rules), a URL with characters to
    escape, a JA3 hash."""
    lines, problems = render(
        {"kind": "ip", "value": "203.0.113.7", "port": 443},
        {"kind": "domain", "value": "evil.example"},
        {"kind": "url", "value": 'http://evil.example/a;b"c|d%20e'},
        {"kind": "ja3", "value": "e7d705a3286e19ea42f587b344ee6865"})
    assert problems == []
    return lines


def test_fast_path_of_the_check_reports_exactly_what_the_full_check_reports() -> None:
    """Rendered rules with one character inserted, replaced or deleted at seeded random
    places (quotes, semicolons, backslashes, parentheses, control and non-ASCII bytes):
    the fast path must neither miss a problem nor invent one."""
    lines = one_rule_of_each_kind()
    rules = lines["rule"].tolist()
    chance = random.Random(6)
    broken_files = 0
    for _ in range(200):
        edited = list(rules)
        row = chance.randrange(len(edited))
        rule, at = edited[row], chance.randrange(len(edited[row]))
        action = chance.choice(["insert", "replace", "delete"])
        edit = "" if action == "delete" else chance.choice(EDITS)
        edited[row] = rule[:at] + edit + rule[at + (action != "insert"):]
        content = ("# header\n" + "\n".join(edited) + "\n").encode()

        found = check_rules_file(content)

        assert found == every_check_on_every_line(content), edited[row]
        broken_files += bool(found)
    assert broken_files > 50  # the edits do break rules, so both paths had work to do


def test_the_build_checks_the_lines_it_joins_as_the_file_check_reads_the_file() -> None:
    """The build checks the rule lines before they are joined, not the file split again:
    same content, and the same problems with the same line numbers (after a header of
    several lines, over blocks of lines), as `check_rules_file` on the written file."""
    lines = one_rule_of_each_kind()
    chance = random.Random(7)
    broken = 0
    for _ in range(60):
        edited = lines.copy()
        rules = edited["rule"].tolist()
        for row in chance.sample(range(len(rules)), 2):
            at = chance.randrange(len(rules[row]))
            rules[row] = rules[row][:at] + chance.choice(EDITS) + rules[row][at + 1:]
        edited["rule"] = pd.array(rules, dtype="string[pyarrow]")
        header = "misp-ndr ruleset\nsecond line\n# third"

        content, found = checked_rules_file(edited, header)

        assert content == rules_file(edited, header)
        assert found == check_rules_file(content), rules
        broken += bool(found)
    assert broken > 20


def test_the_build_check_numbers_lines_across_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Blocks of lines are checked in two threads: a line's number must not depend on its
    block, nor a sid repeated in two blocks go unseen."""
    lines, _ = render(*({"kind": "ip", "value": f"203.0.113.{n}"} for n in range(1, 8)))
    rules = lines["rule"].tolist()
    rules[5] = rules[5].replace("msg:", "msg ")
    rules[6] = re.sub(r"sid:[0-9]+", re.search(r"sid:[0-9]+", rules[1])[0], rules[6])
    lines["rule"] = pd.array(rules, dtype="string[pyarrow]")
    monkeypatch.setattr(module, "_CHECK_BLOCK_ROWS", 2)

    content, found = checked_rules_file(lines, "one\ntwo")

    assert found == check_rules_file(content)
    assert found[0].startswith("line 4: sid ") and found[0].endswith("on more than one line: 4, 9")
    assert found[1].startswith("line 8: is not a rule")
