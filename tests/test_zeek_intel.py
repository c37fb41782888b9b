"""The Zeek intel file: five tab-separated fields a line, one indicator a line, always."""

from __future__ import annotations

import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from tasks.rule_indicators import RULE_INDICATOR_COLUMNS
from tasks.zeek_intel import UNSAFE_INDICATOR, render_zeek_intel, zeek_intel_skipped

HEADER = "#fields\tindicator\tindicator_type\tmeta.source\tmeta.desc\tmeta.url\n"
EVENT_UUID = "e0000000-0000-4000-8000-000000000001"
HOSTILE = ["\t", "\n", "\r", "\x00", "\x0b", "\x0c", "\x1c", "\x85", "\u2028",
           "\u2029", " ", "\xa0"]


def indicators(rows: list[tuple[str, str, str | None]]) -> pd.DataFrame:
    frame = pd.DataFrame(
        [{"attribute_uuid": f"00000000-0000-4000-8000-{index:012d}", "event_uuid": EVENT_UUID,
          "kind": kind, "value": value, "event_info": info}
         for index, (kind, value, info) in enumerate(rows)],
        columns=list(RULE_INDICATOR_COLUMNS))
    return frame.astype(RULE_INDICATOR_COLUMNS)


def test_exact_file_for_a_small_example() -> None:
    content, _ = render_zeek_intel(indicators([
        ("ip", "192.0.2.1", "Phishing wave\t2\nsee ticket"),
        ("ip", "198.51.100.0/24", "Scanner net"),
        ("domain", "evil.example", None),
        ("url", "https://evil.example/login?a=1", "Phishing"),
        ("sha256", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", ""),
        ("ja3", "e7d705a3286e19ea42f587b344ee6865", "Cobalt Strike"),
    ]), misp_url="https://misp.example.org/")
    link = f"https://misp.example.org/events/view/{EVENT_UUID}"
    assert content.decode() == HEADER + "".join(f"{line}\n" for line in [
        f"192.0.2.1\tIntel::ADDR\tMISP\tPhishing wave 2 see ticket\t{link}",
        f"198.51.100.0/24\tIntel::SUBNET\tMISP\tScanner net\t{link}",
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\tIntel::FILE_HASH"
        f"\tMISP\t-\t{link}",
        f"evil.example\tIntel::DOMAIN\tMISP\t-\t{link}",
        f"evil.example/login?a=1\tIntel::URL\tMISP\tPhishing\t{link}",
    ])


def test_without_misp_url_the_link_is_unset_and_ja3_is_counted() -> None:
    rows = indicators([("hostname", "c2.evil.example", "C2"), ("ja3", "a" * 32, "C2")])
    assert render_zeek_intel(rows, source="CIRCL MISP")[0].decode() == (
        HEADER + "c2.evil.example\tIntel::DOMAIN\tCIRCL MISP\tC2\t-\n")
    assert zeek_intel_skipped(rows) == {"ja3 (no standard Zeek intel type)": 1}


def test_empty_indicator_set_is_the_header_alone() -> None:
    assert render_zeek_intel(indicators([])) == (HEADER.encode(), [])


def test_indicator_that_would_break_the_file_is_left_out_and_counted() -> None:
    rows = indicators([("domain", "evil.example\n1.2.3.4\tIntel::ADDR", "x"),
                       ("url", "http://#comment", "x"), ("domain", "ok.example", "x")])
    content, refused = render_zeek_intel(rows)
    assert content.decode() == HEADER + "ok.example\tIntel::DOMAIN\tMISP\tx\t-\n"
    assert [(problem.reason, problem.excerpt) for problem in refused] == [
        (UNSAFE_INDICATOR, repr("evil.example\n1.2.3.4\tIntel::ADDR")),
        (UNSAFE_INDICATOR, repr("#comment"))]
    assert zeek_intel_skipped(rows) == {
        "unsafe value (whitespace, control character or leading '#')": 2}


def test_same_indicator_in_one_event_is_one_line() -> None:
    rows = indicators([("ip", "192.0.2.1", "x"), ("ip", "192.0.2.1", "x")])
    assert render_zeek_intel(rows)[0].decode().count("192.0.2.1") == 1


texts = st.text(st.sampled_from(["a", "1", ".", "-", "#", *HOSTILE]), max_size=12)


@settings(max_examples=80, deadline=None)
@given(rows=st.lists(st.tuples(st.sampled_from(["ip", "domain", "url", "md5", "ja3"]),
                               texts, texts | st.none()), max_size=25),
       source=texts)
def test_hostile_values_never_add_lines_or_fields(
    rows: list[tuple[str, str, str | None]], source: str
) -> None:
    frame = indicators([(kind, f"{kind}-{i}-{value}", info)
                        for i, (kind, value, info) in enumerate(rows)])
    text = render_zeek_intel(frame, source=source)[0].decode()
    lines = text.split("\n")[:-1]
    assert text.splitlines() == lines
    assert lines[0] == HEADER.rstrip("\n")
    assert all(len(line.split("\t")) == 5 for line in lines[1:])
    written = len(lines) - 1
    skipped = sum(zeek_intel_skipped(frame).values())
    assert written + skipped == len(rows)
    assert not any(line.startswith("#") for line in lines[1:])


prefixed = st.text(st.sampled_from(["a", "b", ".", "/", "é"]), min_size=1, max_size=4)


@settings(max_examples=150, deadline=None)
@given(rows=st.lists(st.tuples(st.sampled_from(["ip", "domain", "url", "md5"]), prefixed,
                               st.sampled_from(["x", "y", "x y", "x  y", "x\ty", "", None]),
                               st.sampled_from([EVENT_UUID, EVENT_UUID[:-1] + "2"])),
                     max_size=30),
       misp_url=st.sampled_from(["https://misp.example.org", None]))
def test_lines_are_those_of_each_indicator_alone_sorted_and_distinct(
    rows: list[tuple[str, str, str | None, str]], misp_url: str | None
) -> None:
    """Values sharing prefixes, in several events, event infos that differ only in their
    whitespace: the file is the set of lines each indicator gives on its own, in Python's
    string order, each once."""
    frame = indicators([(kind, value, info) for kind, value, info, _ in rows])
    frame["event_uuid"] = pd.Series([event for *_, event in rows], dtype="string")
    lines = render_zeek_intel(frame, misp_url=misp_url)[0].decode()
    alone = {line for index in range(len(frame)) for line in render_zeek_intel(
        frame.iloc[[index]], misp_url=misp_url)[0].decode().splitlines()[1:]}
    assert lines == HEADER + "".join(f"{line}\n" for line in sorted(alone))
