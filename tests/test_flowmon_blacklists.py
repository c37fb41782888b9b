"""Flowmon ADS blacklists: one indicator per line, and never a line nobody chose."""

from __future__ import annotations

import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from tasks.flowmon_blacklists import render_flowmon_blacklists
from tasks.rule_indicators import RULE_INDICATOR_COLUMNS

HOSTILE = ["\t", "\n", "\r", "\x00", "\x0b", "\x0c", "\x1c", "\x85", "\u2028",
           "\u2029", " ", "\xa0", "\ufeff"]


def indicators(rows: list[tuple[str, str]]) -> pd.DataFrame:
    frame = pd.DataFrame(
        [{"attribute_uuid": f"00000000-0000-4000-8000-{index:012d}", "kind": kind,
          "value": value, "event_info": "Phishing"} for index, (kind, value) in enumerate(rows)],
        columns=list(RULE_INDICATOR_COLUMNS))
    return frame.astype(RULE_INDICATOR_COLUMNS)


def test_exact_files_for_a_small_example() -> None:
    files, problems = render_flowmon_blacklists(indicators([
        ("ip", "198.51.100.7"), ("ip", "192.0.2.1"), ("ip", "198.51.100.7"),
        ("domain", "evil.example"), ("hostname", "cdn.evil.example"),
        ("url", "http://evil.example/a,b?c=1"), ("md5", "d41d8cd98f00b204e9800998ecf8427e"),
        ("ja3", "e7d705a3286e19ea42f587b344ee6865"),
    ]))
    assert files == {
        "misp-ip.txt": b"192.0.2.1\n198.51.100.7\n",
        "misp-domain.txt": b"cdn.evil.example\nevil.example\n",
        "misp-url.txt": b"http://evil.example/a,b?c=1\n",
    }
    assert problems == []


def test_no_indicators_of_a_kind_gives_an_empty_file() -> None:
    files, _ = render_flowmon_blacklists(indicators([("ip", "192.0.2.1")]))
    assert files["misp-domain.txt"] == b"" and files["misp-url.txt"] == b""


def test_value_with_a_line_break_is_refused_and_named() -> None:
    files, problems = render_flowmon_blacklists(indicators([
        ("domain", "evil.example\n10.0.0.0"), ("domain", "good.example")]))
    assert files["misp-domain.txt"] == b"good.example\n"
    assert len(problems) == 1
    assert "00000000-0000-4000-8000-000000000000" in problems[0].source
    assert problems[0].source.startswith("misp-domain.txt")
    assert "\n" not in problems[0].excerpt


values = st.lists(st.text(st.sampled_from(["a", "1", ".", "/", ":", *HOSTILE]), max_size=12),
                  max_size=25)


@settings(max_examples=80, deadline=None)
@given(ips=values, names=values, urls=values)
def test_every_line_is_exactly_one_safe_input_value(
    ips: list[str], names: list[str], urls: list[str]
) -> None:
    rows = [("ip", v) for v in ips] + [("hostname", v) for v in names] + [("url", v)
                                                                          for v in urls]
    files, problems = render_flowmon_blacklists(indicators(rows))
    refused = 0
    for name, given_values in (("misp-ip.txt", ips), ("misp-domain.txt", names),
                               ("misp-url.txt", urls)):
        text = files[name].decode()
        safe = {v for v in given_values if v and not any(c in v for c in "".join(HOSTILE))}
        refused += sum(1 for v in given_values if v not in safe)
        lines = text.split("\n")[:-1] if text else []
        assert lines == sorted(safe)
        assert text.splitlines() == lines  # no other character any reader takes as a break
    assert len(problems) == refused
