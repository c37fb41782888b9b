"""Suricata rule rendering: every rule loads, matches what the indicator says, and no MISP
value or event info can break out of its quoted field."""

from __future__ import annotations

import base64
import re

import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from suricataparser import parse_rule, parse_rules

from misp_ndr.config import RulesSettings
from tasks import suricata_rules as module
from tasks.rule_indicators import (
    RULE_INDICATOR_COLUMNS,
    TAG_SEPARATOR,
    expand_rule_variants,
)
from tasks.suricata_rules import (
    IPREP_CATEGORIES_FILE,
    IPREP_FILE,
    MD5_LIST,
    NAME_DATASET_FILE,
    RULE_LINE_COLUMNS,
    SHA1_LIST,
    SHA256_LIST,
    base64_lines,
    escape_content,
    render_list_rules,
    render_rule_lines,
)
from tasks.suricata_rules_file import check_rules_file, rules_file

SETTINGS = RulesSettings()
EVENT = "5f0c2c9e-1b2a-4c3d-8e9f-0a1b2c3d4e5f"
COMMON_TAIL = ["classtype", "sid", "rev", "metadata"]
CLIENT_TAIL = ["classtype", "target", "sid", "rev", "metadata"]


def attribute_uuid(number: int) -> str:
    return f"00000000-0000-4000-8000-{number:012d}"


def indicators(*rows: dict[str, object]) -> pd.DataFrame:
    """Rule indicator rows; unspecified columns get plausible defaults."""
    filled = [{"attribute_uuid": attribute_uuid(number), "event_uuid": EVENT,
               "event_info": "Emotet wave", "tags": "tlp:amber", "misp_type": row["kind"],
               "port": None, **row} for number, row in enumerate(rows, start=1)]
    return pd.DataFrame(filled, columns=list(RULE_INDICATOR_COLUMNS)).astype(
        RULE_INDICATOR_COLUMNS)


def with_sids(rules: pd.DataFrame, first_sid: int = 1_000_000) -> pd.DataFrame:
    rules = rules.reset_index(drop=True)
    rules["sid"] = pd.array(range(first_sid, first_sid + len(rules)), dtype="Int64")
    rules["rev"] = pd.array([3] * len(rules), dtype="Int32")
    return rules


def render(*rows: dict[str, object]) -> tuple[pd.DataFrame, list]:
    return render_rule_lines(with_sids(expand_rule_variants(indicators(*rows))), SETTINGS)


def only_rule(lines: pd.DataFrame, variant: str | None = None) -> str:
    chosen = lines if variant is None else lines[lines["variant"] == variant]
    assert len(chosen) == 1, chosen
    return chosen["rule"].iloc[0]


def options(rule: str) -> list[tuple[str, str | None]]:
    parsed = parse_rule(rule)
    assert parsed is not None, rule
    return [(option.name, None if option.value is None else str(option.value))
            for option in parsed.options]


def option_names(rule: str) -> list[str]:
    return [name for name, _value in options(rule)]


def content_bytes(quoted: str) -> bytes:
    """A Suricata content value back to the bytes it matches: |hex| groups decoded."""
    body = quoted.strip('"')
    out = b""
    for index, part in enumerate(body.split("|")):
        out += bytes.fromhex(part) if index % 2 else part.encode("ascii")
    return out


def contents(rule: str) -> list[bytes]:
    return [content_bytes(value) for name, value in options(rule) if name == "content"]


# --- one rule per kind and variant --------------------------------------------------------


@pytest.mark.parametrize(("row", "variant", "header", "expected_options"), [
    ({"kind": "ip", "value": "203.0.113.7", "port": 443}, "ip",
     "ip any any <> 203.0.113.7 443", ["msg", *COMMON_TAIL]),
    ({"kind": "domain", "value": "evil.example"}, "dns", "dns any any -> any any",
     ["msg", "dns.query", "dotprefix", "content", "nocase", "endswith", *CLIENT_TAIL]),
    ({"kind": "domain", "value": "evil.example"}, "tls", "tls any any -> any any",
     ["msg", "flow", "tls.sni", "dotprefix", "content", "nocase", "endswith", *CLIENT_TAIL]),
    ({"kind": "hostname", "value": "c2.evil.example"}, "http", "http any any -> any any",
     ["msg", "flow", "http.host", "dotprefix", "content", "endswith", *CLIENT_TAIL]),
    ({"kind": "url", "value": "http://evil.example/gate.php?id=1"}, "http",
     "http any any -> any any",
     ["msg", "flow", "http.host", "content", "startswith", "endswith", "http.uri", "content",
      "startswith", *CLIENT_TAIL]),
    ({"kind": "ja3", "value": "e7d705a3286e19ea42f587b344ee6865"}, "ja3",
     "tls any any -> any any", ["msg", "flow", "ja3.hash", "content", *CLIENT_TAIL]),
])
def test_each_kind_renders_a_rule_with_exactly_the_options_meant(
    row: dict[str, object], variant: str, header: str, expected_options: list[str],
) -> None:
    lines, problems = render(row)

    assert problems == []
    rule = only_rule(lines, variant)
    parsed = parse_rule(rule)
    assert parsed.action == "alert"
    assert parsed.header == header
    assert option_names(rule) == expected_options
    assert parsed.sid == lines.loc[lines["variant"] == variant, "sid"].iloc[0]
    assert parsed.rev == 3
    assert parsed.msg.startswith(f"MISP {row['kind']} {row['value']} - Emotet wave")
    assert parsed.metadata == [f"misp_event_uuid {EVENT}",
                               f"misp_attribute_uuid {attribute_uuid(1)}", "misp_tag tlp:amber"]
    assert check_rules_file(rules_file(lines, "test")) == []


def test_rule_lines_carry_the_sid_map_columns() -> None:
    lines, _ = render({"kind": "domain", "value": "evil.example"})

    assert list(lines.columns) == list(RULE_LINE_COLUMNS)
    assert lines.dtypes.astype(str).to_dict() == {
        name: str(pd.Series(dtype=dtype).dtype) for name, dtype in RULE_LINE_COLUMNS.items()}
    assert sorted(lines["variant"]) == ["dns", "http", "tls"]
    assert set(lines["attribute_uuid"]) == {attribute_uuid(1)}


def test_a_name_matches_itself_and_its_subdomains_only() -> None:
    lines, _ = render({"kind": "domain", "value": "Evil.Example."})

    for rule in lines["rule"]:
        assert contents(rule) == [b".evil.example"]  # with dotprefix: not "notevil.example"
    http_rule = only_rule(lines, "http")
    assert "nocase" not in option_names(http_rule)  # Suricata refuses nocase on http.host


def test_ip_without_port_matches_any_port_and_ipv6_is_written_canonically() -> None:
    lines, _ = render({"kind": "ip", "value": "2001:DB8:0:0::1"},
                      {"kind": "ip", "value": "198.51.100.1"})

    headers = sorted(parse_rule(rule).header for rule in lines["rule"])
    assert headers == ["ip any any <> 198.51.100.1 any", "ip any any <> 2001:db8::1 any"]


def test_url_without_path_matches_the_host_only() -> None:
    lines, _ = render({"kind": "url", "value": "https://Evil.Example/"})

    rule = only_rule(lines)
    assert "http.uri" not in option_names(rule)
    assert contents(rule) == [b"evil.example"]


def test_url_matches_exact_host_and_path_prefix_without_port_credentials_or_fragment() -> None:
    lines, _ = render({"kind": "url", "value": "http://user:pw@evil.example:8080/a/b?x=1#top"})

    rule = only_rule(lines)
    assert contents(rule) == [b"evil.example", b"/a/b?x=1"]


def test_url_with_percent_escapes_matches_the_raw_uri_as_given() -> None:
    lines, _ = render({"kind": "url", "value": "http://evil.example/a%20b"})

    rule = only_rule(lines)
    assert "http.uri.raw" in option_names(rule)
    assert contents(rule)[1] == b"/a%20b"


# --- escaping and rejection ---------------------------------------------------------------


def test_quotes_semicolons_backslashes_and_pipes_in_a_url_become_hex_and_match_as_given() -> None:
    path = '/x"; sid:1; y\\z|w'
    lines, problems = render({"kind": "url", "value": f"http://evil.example{path}"})

    assert problems == []
    rule = only_rule(lines)
    assert contents(rule)[1] == path.encode()
    assert option_names(rule).count("sid") == 1
    raw_uri_content = [value for name, value in options(rule) if name == "content"][1]
    assert raw_uri_content == '"/x|22 3B| sid:1|3B| y|5C|z|7C|w"'


def test_non_ascii_url_path_is_matched_as_its_utf8_bytes() -> None:
    lines, _ = render({"kind": "url", "value": "http://evil.example/café"})

    assert contents(only_rule(lines))[1] == "/café".encode()


def test_raw_unicode_domain_is_rejected_once_and_punycode_is_rendered() -> None:
    lines, problems = render({"kind": "domain", "value": "bücher.example"},
                             {"kind": "domain", "value": "xn--bcher-kva.example"})

    assert set(lines["value"]) == {"xn--bcher-kva.example"}
    assert len(problems) == 1  # one report for the attribute, not one per variant
    assert problems[0].source == f"MISP attribute {attribute_uuid(1)}"
    assert "punycode" in problems[0].reason
    assert problems[0].excerpt == "bücher.example"


def test_event_info_with_newlines_quotes_and_semicolons_stays_inside_msg() -> None:
    info = 'Op "Night";\r\nsid:1; \\ rev:9; (drop)\u2028ünïcode'
    lines, _ = render({"kind": "ip", "value": "203.0.113.7", "event_info": info})

    rule = only_rule(lines)
    assert "\n" not in rule and "\r" not in rule
    assert option_names(rule) == ["msg", *COMMON_TAIL]
    msg = parse_rule(rule).msg
    assert msg.isascii() and msg.isprintable()
    assert not set(msg) & set('";\\')
    assert msg.startswith("MISP ip 203.0.113.7 - Op 'Night', sid:1, / rev:9, (drop)")


def test_long_event_info_is_shortened() -> None:
    lines, _ = render({"kind": "ip", "value": "203.0.113.7", "event_info": "x" * 5000})

    assert len(parse_rule(only_rule(lines)).msg) < 250


@pytest.mark.parametrize(("row", "reason"), [
    ({"kind": "url", "value": "http://evil.example/a\nb"}, "control characters"),
    ({"kind": "url", "value": "http://evil.example/a\x00b"}, "control characters"),
    ({"kind": "url", "value": "http://evil.example/" + "a" * 1100}, "longer than 1024 bytes"),
    ({"kind": "url", "value": "ftp://evil.example/x"}, "not an http(s) URL"),
    ({"kind": "url", "value": "http:///x"}, "not a URL with a host"),
    ({"kind": "url", "value": "http://bücher.example/x"}, "punycode"),
    ({"kind": "ip", "value": "1.2.3.4 any (msg:x; sid:1;)"}, "not an IP address"),
    ({"kind": "ip", "value": "203.0.113.7", "port": 70000}, "port is outside"),
    ({"kind": "domain", "value": "evil example"}, "whitespace"),
    ({"kind": "ja3", "value": "not-a-hash"}, "JA3"),
    ({"kind": "ip", "value": "203.0.113.7", "attribute_uuid": "x, misp_tag y"}, "UUID"),
    ({"kind": "ip", "value": "203.0.113.7", "event_uuid": None}, "UUID"),
])
def test_unsafe_or_unmatchable_values_are_reported_never_rendered(
    row: dict[str, object], reason: str,
) -> None:
    lines, problems = render(row)

    assert lines.empty
    assert len(problems) == 1
    assert reason in problems[0].reason


def test_rows_without_sid_or_outside_the_range_or_of_unknown_variant_are_reported() -> None:
    rules = with_sids(expand_rule_variants(indicators(
        {"kind": "ip", "value": "203.0.113.1"}, {"kind": "ip", "value": "203.0.113.2"},
        {"kind": "ip", "value": "203.0.113.3"}, {"kind": "ip", "value": "203.0.113.4"})))
    rules.loc[0, "sid"] = pd.NA
    rules.loc[1, "sid"] = SETTINGS.sid_range_end  # reserved for list rules
    rules.loc[2, "variant"] = "dns"

    lines, problems = render_rule_lines(rules, SETTINGS)

    assert list(lines["value"]) == ["203.0.113.4"]
    assert sorted(problem.reason for problem in problems) == [
        "has no Suricata rule for its kind and variant", "has no sid / rev",
        "sid is outside the configured per-attribute range"]


def test_tags_become_metadata_values_without_separators_and_unusable_ones_are_dropped() -> None:
    tags = TAG_SEPARATOR.join([
        'misp-galaxy:threat-actor="APT 28"', "tlp:amber", "tlp:amber", "a,b;c", "ÜÖÄ", " "])
    lines, _ = render({"kind": "ip", "value": "203.0.113.7", "tags": tags})

    assert parse_rule(only_rule(lines)).metadata[2:] == [
        "misp_tag misp-galaxy:threat-actor=_APT_28", "misp_tag tlp:amber", "misp_tag a_b_c"]


def test_many_long_tags_are_capped_so_the_rule_fits_a_suricata_line() -> None:
    tags = TAG_SEPARATOR.join(f"tag{number}-" + "x" * 200 for number in range(200))
    lines, _ = render({"kind": "ip", "value": "203.0.113.7", "tags": tags})

    rule = only_rule(lines)
    assert len(rule) < 8192
    assert 5 < len(parse_rule(rule).metadata) < 200


def test_no_rows_render_an_empty_table() -> None:
    lines, problems = render_rule_lines(with_sids(expand_rule_variants(indicators())), SETTINGS)

    assert lines.empty and list(lines.columns) == list(RULE_LINE_COLUMNS)
    assert problems == []


# --- property: nothing from MISP escapes its quoted field ---------------------------------

EXPECTED_NAMES = {
    "ip": ["msg", *COMMON_TAIL],
    "dns": ["msg", "dns.query", "dotprefix", "content", "nocase", "endswith", *CLIENT_TAIL],
    "tls": ["msg", "flow", "tls.sni", "dotprefix", "content", "nocase", "endswith",
            *CLIENT_TAIL],
    "ja3": ["msg", "flow", "ja3.hash", "content", *CLIENT_TAIL],
}
URL_HOST_ONLY = ["msg", "flow", "http.host", "content", "startswith", "endswith", *CLIENT_TAIL]


def expected_names(kind: str, variant: str, rule: str) -> list[str]:
    if kind == "url":
        uri = [name for name in ("http.uri", "http.uri.raw") if f"{name};" in rule]
        return URL_HOST_ONLY[:6] + ([*uri, "content", "startswith"] if uri else []) \
            + URL_HOST_ONLY[6:]
    if variant == "http":
        return ["msg", "flow", "http.host", "dotprefix", "content", "endswith", *CLIENT_TAIL]
    return EXPECTED_NAMES[variant]


hostile_text = st.text(st.characters(codec="utf-8"), max_size=60) | st.sampled_from([
    '"', ";", "\\", "|", '"; sid:1; rev:1; msg:"', ")\nalert ip any any -> any any (sid:2;)",
    "\\;", "\\\"", "|00|", "\u2028", "\x85", "\ud7ff", "#", "(", ")"])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    values=st.lists(st.tuples(st.sampled_from(["ip", "domain", "hostname", "url", "ja3"]),
                              hostile_text, hostile_text), min_size=1, max_size=8),
    info=hostile_text, tag=hostile_text,
)
def test_arbitrary_values_and_event_infos_never_break_out_of_their_quotes(
    values: list[tuple[str, str, str]], info: str, tag: str,
) -> None:
    rows = [{"kind": kind, "value": prefix + text if kind != "url" else
             f"http://evil.example/{prefix}{text}",
             "event_info": info, "tags": TAG_SEPARATOR.join([tag, "tlp:red"])}
            for kind, prefix, text in values]
    rules = with_sids(expand_rule_variants(indicators(*rows)))

    lines, problems = render_rule_lines(rules, SETTINGS)

    rejected = {problem.source for problem in problems}
    rendered = set("MISP attribute " + lines["attribute_uuid"])
    assert rendered | rejected == {f"MISP attribute {uuid}" for uuid in rules["attribute_uuid"]}
    content = rules_file(lines, "property test")
    assert check_rules_file(content) == []
    assert len(parse_rules(content.decode())) == len(lines)  # never a second rule per line
    for line in lines.itertuples():
        assert option_names(line.rule) == expected_names(line.kind, line.variant, line.rule)
        metadata = parse_rule(line.rule).metadata
        assert metadata[:2] == [f"misp_event_uuid {EVENT}",
                                f"misp_attribute_uuid {line.attribute_uuid}"]
        assert all(re.fullmatch(r"misp_tag [A-Za-z0-9_.:=-]+", item) for item in metadata[2:])


@settings(max_examples=100, deadline=None)
@given(st.lists(st.text(st.characters(codec="utf-8", exclude_categories=["Cc"]), max_size=40),
                max_size=10))
def test_content_escaping_round_trips_to_the_utf8_bytes(texts: list[str]) -> None:
    escaped = escape_content(pa.array(texts, pa.string())).to_pylist()

    assert [content_bytes(text) for text in escaped] == [text.encode() for text in texts]
    assert all(not set(text) & set('";\\') for text in escaped)


# --- list rules and their files -------------------------------------------------------------


def list_inputs() -> tuple[pd.DataFrame, pd.DataFrame]:
    hashes = indicators(
        {"kind": "md5", "value": "D41D8CD98F00B204E9800998ECF8427E"},
        {"kind": "md5", "value": "d41d8cd98f00b204e9800998ecf8427e"},
        {"kind": "md5", "value": "00000000000000000000000000000001"},
        {"kind": "sha256", "value": "ab" * 32},
    )
    members = indicators(
        {"kind": "ip", "value": "203.0.113.7", "port": 443},
        {"kind": "ip", "value": "2001:db8::1"},
        {"kind": "domain", "value": "evil.example"},
        {"kind": "hostname", "value": "c2.evil.example"},
        {"kind": "domain", "value": "evil.example"},
    )
    return hashes, members


def test_hash_lists_hold_one_lowercase_hash_per_line_and_get_a_rule_each() -> None:
    hashes, members = list_inputs()

    lines, files = render_list_rules(hashes, members, SETTINGS)

    assert files[MD5_LIST] == (b"00000000000000000000000000000001\n"
                               b"d41d8cd98f00b204e9800998ecf8427e\n")
    assert files[SHA256_LIST] == b"ab" * 32 + b"\n"
    assert files[SHA1_LIST] == b""  # always written, so suricata.yaml never names a lost file
    rule_options = {variant: dict(options(rule)) for variant, rule in
                    zip(lines["variant"], lines["rule"], strict=True)}
    assert rule_options["filemd5"]["filemd5"] == MD5_LIST
    assert rule_options["filesha256"]["filesha256"] == SHA256_LIST
    assert "filesha1" not in rule_options  # no rule for an empty list


def test_names_dataset_holds_base64_names_checked_in_dns_tls_and_http() -> None:
    hashes, members = list_inputs()

    lines, files = render_list_rules(hashes, members, SETTINGS)

    names = [base64.b64decode(line) for line in files[NAME_DATASET_FILE].splitlines()]
    assert sorted(names) == [b"c2.evil.example", b"evil.example"]
    dataset_rules = lines[lines["kind"] == "name"]
    assert sorted(dataset_rules["variant"]) == ["dns", "http", "tls"]
    for rule in dataset_rules["rule"]:
        assert dict(options(rule))["dataset"] == (
            "isset,misp-domains,type string,load misp-domains.lst")


def test_ip_reputation_files_list_each_address_in_the_misp_category() -> None:
    hashes, members = list_inputs()

    lines, files = render_list_rules(hashes, members, SETTINGS)

    assert files[IPREP_FILE] == b"2001:db8::1,1,100\n203.0.113.7,1,100\n"
    assert files[IPREP_CATEGORIES_FILE].startswith(b"1,MISP,")
    rule = only_rule(lines[lines["variant"] == "iprep"])
    assert dict(options(rule))["iprep"] == "any,MISP,>,0"


def test_list_rules_take_fixed_sids_at_the_top_of_the_range_and_load_cleanly() -> None:
    hashes, members = list_inputs()

    lines, _ = render_list_rules(hashes, members, SETTINGS)

    top = SETTINGS.sid_range_end
    assert dict(zip(lines["variant"], lines["sid"], strict=True)) == {
        "filemd5": top, "filesha256": top - 2, "iprep": top - 3, "dns": top - 4, "tls": top - 5,
        "http": top - 6}
    assert lines["attribute_uuid"].isna().all()
    assert list(lines.columns) == list(RULE_LINE_COLUMNS)
    assert check_rules_file(rules_file(lines, "lists")) == []
    assert all(parse_rule(rule) is not None for rule in lines["rule"])


def test_invalid_list_values_are_left_out_of_the_files() -> None:
    hashes = indicators({"kind": "md5", "value": "xyz"}, {"kind": "sha1", "value": "a" * 39})
    members = indicators({"kind": "ip", "value": "300.1.1.1"},
                         {"kind": "domain", "value": "bad name"})

    lines, files = render_list_rules(hashes, members, SETTINGS)

    assert lines.empty
    assert files[MD5_LIST] == files[SHA1_LIST] == files[NAME_DATASET_FILE] == b""
    assert files[IPREP_FILE] == b""


@pytest.mark.parametrize("text", ["", "a", "ab", "abc", "abcd", "xn--bcher-kva.example",
                                  "é" * 40, "x" * 253])
def test_base64_lines_match_the_standard_encoding(text: str) -> None:
    encoded = base64_lines(pa.array([text, "pad"], pa.string())).to_pylist()

    assert encoded == [base64.b64encode(text.encode()).decode(), "cGFk"]


def test_rules_come_in_sid_order_and_problems_by_kind_then_as_given() -> None:
    """Lines in sid order (what the rules file and the sid map are written in); refused
    rows reported in a fixed order (by kind, then as given) whatever their sids."""
    rows = expand_rule_variants(indicators(
        {"kind": "domain", "value": "evil.example"},
        {"kind": "url", "value": "ftp://evil.example/x"},
        {"kind": "ip", "value": "not-an-ip"},
        {"kind": "ip", "value": "203.0.113.9"},
        {"kind": "domain", "value": "bücher.example"},
        {"kind": "url", "value": "gopher://evil.example/"},
        {"kind": "ip", "value": "203.0.113.300"}))
    rows = with_sids(rows)
    rows["sid"] = pd.array(rows["sid"].to_numpy(dtype=int)[::-1], dtype="Int64")

    lines, problems = render_rule_lines(rows, SETTINGS)

    assert lines["sid"].tolist() == sorted(lines["sid"].tolist())
    assert lines["value"].tolist() == ["203.0.113.9"] + ["evil.example"] * 3
    assert [(problem.source, problem.excerpt) for problem in problems] == [
        (f"MISP attribute {attribute_uuid(5)}", "bücher.example"),
        (f"MISP attribute {attribute_uuid(3)}", "not-an-ip"),
        (f"MISP attribute {attribute_uuid(7)}", "203.0.113.300"),
        (f"MISP attribute {attribute_uuid(2)}", "ftp://evil.example/x"),
        (f"MISP attribute {attribute_uuid(6)}", "gopher://evil.example/"),
    ]


def test_rules_rendered_in_blocks_are_the_rules_rendered_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Rule text is built in blocks of rows (an arrow string array stops at 2 GiB, a
    5M-rule set is over 3 GB): block edges must not show in the rules or the file."""
    rows = [{"kind": "ip", "value": f"203.0.113.{n}"} for n in range(1, 8)] + [
        {"kind": "domain", "value": "evil.example", "event_info": ""},
        {"kind": "url", "value": 'http://evil.example/a;b"c'}]
    whole, _ = render(*rows)
    monkeypatch.setattr(module, "_TEXT_BLOCK_ROWS", 3)

    blocks, problems = render(*rows)

    assert problems == []
    assert blocks["rule"].tolist() == whole["rule"].tolist()
    assert rules_file(blocks, "h") == rules_file(whole, "h")
    assert check_rules_file(rules_file(blocks, "h")) == []
