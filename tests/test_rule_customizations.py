"""Local customizations: an analyst's disables, drops, thresholds and edits survive updates."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from suricataparser import parse_rule

from misp_ndr.errors import ConfigError
from tasks.rule_customizations import (
    Customizations,
    apply_customizations,
    backup_customizations,
    load_customizations,
    parse_customizations,
    rule_problem,
)

DOMAIN_UUID = "5f0c2c9e-0b7a-4d8e-9c1f-2a3b4c5d6e7f"
IP_UUID = "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"
EVENT_UUID = "e0000000-0000-4000-8000-000000000001"


def rule(sid: int, sticky: str, value: str) -> str:
    return (f'alert {sticky.split(".")[0]} $HOME_NET any -> any any (msg:"MISP: {value} '
            f'(Phishing\\; wave 2)"; {sticky}; content:"{value}"; nocase; '
            f"metadata: misp_attribute_uuid {DOMAIN_UUID}; sid:{sid}; rev:1;)")


def ruleset() -> pd.DataFrame:
    rows = [
        (1000001, 1, DOMAIN_UUID, "domain", "dns", "evil.example",
         rule(1000001, "dns.query", "evil.example")),
        (1000002, 1, DOMAIN_UUID, "domain", "tls", "evil.example",
         rule(1000002, "tls.sni", "evil.example")),
        (1000003, 1, DOMAIN_UUID, "domain", "http", "evil.example",
         rule(1000003, "http.host", "evil.example")),
        (1000004, 2, IP_UUID, "ip", "ip", "192.0.2.1",
         'alert ip $HOME_NET any -> 192.0.2.1 any (msg:"MISP: 192.0.2.1"; sid:1000004; rev:2;)'),
        (1999990, 1, None, "md5", "filemd5", None,
         'alert http any any -> any any (msg:"MISP: file md5"; filemd5:misp-md5.list; '
         "sid:1999990; rev:1;)"),
    ]
    frame = pd.DataFrame(rows, columns=["sid", "rev", "attribute_uuid", "kind", "variant",
                                        "value", "rule"]).assign(event_uuid=EVENT_UUID)
    return frame.astype({"sid": "Int64", "rev": "Int32", "attribute_uuid": "string",
                         "event_uuid": "string", "kind": "string", "variant": "string",
                         "value": "string", "rule": "string"})


def customized(text: str) -> tuple[dict[int, str], dict[str, int]]:
    lines, counts = apply_customizations(ruleset(), parse_customizations(text, "local.conf"))
    return dict(zip(lines["sid"].astype(int), lines["rule"], strict=True)), counts


def test_disable_by_sid_keeps_the_rule_commented_out() -> None:
    rules, counts = customized("disable 1000004\n")
    assert rules[1000004] == "# " + ruleset()["rule"].iloc[3]
    assert not rules[1000001].startswith("#")
    assert counts["disable 1000004 (local.conf line 1)"] == 1


def test_disable_by_attribute_uuid_comments_out_every_protocol_rule() -> None:
    rules, counts = customized(f"disable {DOMAIN_UUID.upper()}  # noisy CDN\n")
    assert [sid for sid, text in rules.items() if text.startswith("# ")] == [
        1000001, 1000002, 1000003]
    assert counts[f"disable {DOMAIN_UUID} (local.conf line 1)"] == 3


def test_drop_turns_an_alert_into_a_drop() -> None:
    rules, _ = customized("drop 1000004")
    assert rules[1000004].startswith("drop ip $HOME_NET any -> 192.0.2.1 any (")


def test_threshold_goes_before_sid_and_the_rule_still_parses() -> None:
    rules, counts = customized(
        "threshold 1000002 seconds 3600, count 1, track by_src, type limit\n")
    parsed = parse_rule(rules[1000002])
    assert parsed is not None
    names = [option.name for option in parsed.options]
    assert names[names.index("sid") - 1] == "threshold"
    assert "threshold: type limit, track by_src, count 1, seconds 3600; sid:1000002;" in (
        rules[1000002])
    assert counts["threshold 1000002 (local.conf line 1)"] == 1


def test_a_second_threshold_replaces_the_first() -> None:
    rules, _ = customized("threshold 1000004 type limit, track by_src, count 1, seconds 60\n"
                          "threshold 1000004 type both, track by_dst, count 5, seconds 600\n")
    assert rules[1000004].count("threshold:") == 1
    assert "threshold: type both, track by_dst, count 5, seconds 600; sid:1000004;" in (
        rules[1000004])


def test_modify_applies_a_regex_with_groups_and_escaped_quotes() -> None:
    rules, counts = customized(
        r'modify 1000004 "msg:\"MISP: ([^\"]+)\"" "msg:\"LOCAL #1 \1\""  # rename' + "\n")
    assert 'msg:"LOCAL #1 192.0.2.1";' in rules[1000004]
    assert counts["modify 1000004 (local.conf line 1)"] == 1


@pytest.mark.parametrize("edit", [
    r'modify 1000004 "\)$" ""',  # closing parenthesis gone
    r'modify 1000004 "sid:1000004" "sid:1000005"',  # would break the sid map
    r'modify 1000004 "sid:\d+; " ""',  # sid gone
    r'modify 1000004 "msg:\"" "msg:\"\""',  # unbalanced quotes
    r'modify 1000004 "MISP: " "MISP:\n"',  # splits the rule over two lines
])
def test_modify_that_breaks_the_rule_is_not_applied_and_is_reported(edit: str) -> None:
    rules, counts = customized(edit)
    assert rules[1000004] == ruleset()["rule"].iloc[3]
    assert counts["rejected"] == 1
    assert counts["modify 1000004 (local.conf line 1) rejected"] == 1


def test_customizations_of_absent_rules_are_counted_unmatched_not_errors() -> None:
    rules, counts = customized("disable 1234567\n"
                               "drop 11111111-2222-4333-8444-555555555555\n"
                               'modify 1000004 "no such text" "x"\n')
    assert rules == dict(zip(ruleset()["sid"].astype(int), ruleset()["rule"], strict=True))
    assert counts["unmatched"] == 3


def test_all_kinds_on_one_rule_apply_in_a_fixed_order() -> None:
    rules, _ = customized("disable 1000004\n"
                          "drop 1000004\n"
                          "threshold 1000004 type limit, track by_src, count 1, seconds 60\n"
                          'modify 1000004 "192\\.0\\.2\\.1 any" "192.0.2.1 443"\n')
    text = rules[1000004]
    assert text.startswith("# drop ip $HOME_NET any -> 192.0.2.1 443 (")
    assert parse_rule(text.removeprefix("# ")) is not None


def test_list_rules_without_attribute_can_be_targeted_by_sid() -> None:
    rules, _ = customized("disable 1999990")
    assert rules[1999990].startswith("# alert http")


def test_comments_blank_lines_and_uppercase_uuid_are_accepted() -> None:
    parsed = parse_customizations(
        f"# local tuning\n\n   disable 1000001   # FP on the proxy\n"
        f"modify {DOMAIN_UUID.upper()} \"a#b\" \"c\"  # hash inside quotes is not a comment\n",
        "local.conf")
    assert [(entry.action, entry.target, entry.where) for entry in parsed.entries] == [
        ("disable", "1000001", "local.conf line 3"), ("modify", DOMAIN_UUID, "local.conf line 4")]
    assert parsed.entries[1].pattern is not None and parsed.entries[1].pattern.pattern == "a#b"


@pytest.mark.parametrize(("line", "expected_form"), [
    ("enable 1000001", "disable <sid|attribute uuid>"),
    ("disable evil.example", "disable <sid|attribute uuid>"),
    ("drop", "drop <sid|attribute uuid>"),
    ("threshold 1000001 type limit, track by_src, count 1", "threshold <sid|attribute uuid>"),
    ("threshold 1000001 type limit, track by_src, count 1; sid:5, seconds 1",
     "threshold <sid|attribute uuid>"),
    ("threshold 1000001 type limit, type both, track by_src, count 1, seconds 1",
     "threshold <sid|attribute uuid>"),
    ('modify 1000001 "([" "x"', "modify <sid|attribute uuid>"),
    (r'modify 1000001 "(a)" "\2"', "modify <sid|attribute uuid>"),
    ("modify 1000001 msg x", "modify <sid|attribute uuid>"),
])
def test_bad_line_names_file_line_and_expected_form(line: str, expected_form: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_customizations(f"disable 1000002\n{line}\n", "local.conf")
    assert "local.conf line 2" in str(caught.value)
    assert expected_form in str(caught.value)


def test_missing_file_means_no_customizations(tmp_path: Path) -> None:
    assert load_customizations(tmp_path / "absent.conf") == Customizations()


def test_loaded_file_is_named_in_errors(tmp_path: Path) -> None:
    path = tmp_path / "rule-customizations.conf"
    path.write_text("disable 1000001\ndisble 1000002\n")
    with pytest.raises(ConfigError, match=r"rule-customizations\.conf line 2"):
        load_customizations(path)


def test_backup_moves_the_file_aside_with_a_utc_stamp(tmp_path: Path) -> None:
    path = tmp_path / "rule-customizations.conf"
    path.write_text("disable 1000001\n")
    backup = backup_customizations(path)
    assert backup is not None and not path.exists()
    assert backup.parent == tmp_path and backup.read_text() == "disable 1000001\n"
    assert backup.name.startswith("rule-customizations.conf.") and backup.name.endswith("Z.bak")
    assert backup_customizations(path) is None


@pytest.mark.parametrize(("text", "problem"), [
    ('alert ip any any -> any any (msg:"a (b"; sid:7; rev:1;)', None),
    ('alert ip any any -> any any (msg:"a\\"; sid:7; rev:1;)', "unbalanced quotes"),
    ("alert ip any any -> any any (msg:x; sid:7; rev:1;", "unbalanced parentheses"),
    ("alert ip any any -> any any (msg:x; sid:7; rev:1;) extra", "after"),
    ("alert ip any any -> any any (msg:x; rev:1;)", "sid:7"),
    ("hello ip any any -> any any (sid:7;)", "header"),
])
def test_structural_check(text: str, problem: str | None) -> None:
    found = rule_problem(text, 7)
    assert found is None if problem is None else problem in (found or "")
