"""Pulled MISP attributes become rule indicators: split, canonical, and every rejection told."""

from __future__ import annotations

from typing import Any

import pandas as pd
import pytest

from tasks.rule_indicators import (
    EXCLUDED_INACTIVE,
    HANDLED_TYPES,
    MAX_URL_CHARS,
    PULLED_ATTRIBUTE_COLUMNS,
    RULE_INDICATOR_COLUMNS,
    TAG_SEPARATOR,
    expand_rule_variants,
    normalize_rule_indicators,
)

GOOD_MD5 = "d41d8cd98f00b204e9800998ecf8427e"
GOOD_SHA1 = "da39a3ee5e6b4b0d3255bfef95601890afd80709"
GOOD_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


def pulled(*rows: tuple[str, str | None], **columns: Any) -> pd.DataFrame:
    """(type, value) rows; attribute uuids a1, a2, ... in order; IDS, not deleted."""
    frame = pd.DataFrame({
        "attribute_uuid": [f"a{i}" for i in range(1, len(rows) + 1)],
        "event_uuid": "e1",
        "event_info": "Loader C2",
        "type": [misp_type for misp_type, _ in rows],
        "value": [value for _, value in rows],
        "to_ids": True,
        "deleted": False,
        "tags": f"tlp:green{TAG_SEPARATOR}apt:x",
    })
    for name, values in columns.items():
        frame[name] = values
    return frame.reindex(columns=list(PULLED_ATTRIBUTE_COLUMNS)).astype(PULLED_ATTRIBUTE_COLUMNS)


def kept(frame: pd.DataFrame) -> list[tuple[str, str, str, Any]]:
    indicators, _, _ = normalize_rule_indicators(frame)
    return [(row.attribute_uuid, row.kind, row.value, None if pd.isna(row.port) else row.port)
            for row in indicators.itertuples()]


def reasons(frame: pd.DataFrame) -> list[tuple[str, str, str]]:
    _, problems, _ = normalize_rule_indicators(frame)
    return [(problem.source, problem.reason, problem.excerpt) for problem in problems]


def test_every_handled_type_becomes_its_kind_with_canonical_values() -> None:
    frame = pulled(
        ("ip-src", "91.198.174.192"),
        ("ip-dst", "2A00:1450:4001:0:0:0:0:200E"),
        ("ip-dst|port", "8.8.8.8|53"),
        ("ip-src|port", "2001:4860:4860::8888|443"),
        ("domain", "Evil.Example.COM."),
        ("hostname", "cdn.bücher.example"),
        ("url", "https://evil.example/gate.php?id=1"),
        ("md5", GOOD_MD5.upper()),
        ("sha1", GOOD_SHA1),
        ("sha256", GOOD_SHA256),
        ("filename|md5", f"dropper.exe|{GOOD_MD5}"),
        ("filename|sha1", f"a|b.bin|{GOOD_SHA1}"),
        ("filename|sha256", f"x.dll|{GOOD_SHA256}"),
        ("ja3-fingerprint-md5", "E7D705A3286E19EA42F587B344EE6865"),
    )
    assert kept(frame) == [
        ("a1", "ip", "91.198.174.192", None),
        ("a2", "ip", "2a00:1450:4001::200e", None),
        ("a3", "ip", "8.8.8.8", 53),
        ("a4", "ip", "2001:4860:4860::8888", 443),
        ("a5", "domain", "evil.example.com", None),
        ("a6", "hostname", "cdn.xn--bcher-kva.example", None),
        ("a7", "url", "https://evil.example/gate.php?id=1", None),
        ("a8", "md5", GOOD_MD5, None),
        ("a9", "sha1", GOOD_SHA1, None),
        ("a10", "sha256", GOOD_SHA256, None),
        ("a11", "md5", GOOD_MD5, None),
        ("a12", "sha1", GOOD_SHA1, None),  # a file name may hold '|': the hash is last
        ("a13", "sha256", GOOD_SHA256, None),
        ("a14", "ja3", "e7d705a3286e19ea42f587b344ee6865", None),
    ]
    assert set(HANDLED_TYPES) == set(frame["type"]) | {"ip-dst", "domain|ip"}


def test_indicators_carry_the_attribute_event_and_tags_in_the_rule_schema() -> None:
    indicators, problems, counts = normalize_rule_indicators(pulled(("ip-dst|port", "8.8.8.8|53")))
    assert problems == []
    assert counts == {"kept ip": 1}
    assert indicators.dtypes.to_dict() == {k: pd.Series(dtype=v).dtype
                                           for k, v in RULE_INDICATOR_COLUMNS.items()}
    row = indicators.iloc[0]
    assert (row.attribute_uuid, row.event_uuid, row.event_info, row.misp_type) == (
        "a1", "e1", "Loader C2", "ip-dst|port")
    assert row.tags.split(TAG_SEPARATOR) == ["tlp:green", "apt:x"]


def test_domain_ip_pair_gives_two_independent_indicators() -> None:
    frame = pulled(("domain|ip", "evil.example|185.220.101.4"),
                   ("domain|ip", "evil.example|10.1.1.1"))
    assert kept(frame) == [("a1", "domain", "evil.example", None),
                           ("a1", "ip", "185.220.101.4", None),
                           ("a2", "domain", "evil.example", None)]
    assert reasons(frame) == [("MISP attribute a2",
                               "domain|ip: ip is not a globally routable address",
                               "evil.example|10.1.1.1")]


@pytest.mark.parametrize(("misp_type", "value", "reason"), [
    ("ip-dst", "10.0.0.1", "ip is not a globally routable address"),
    ("ip-src", "fe80::1", "ip is not a globally routable address"),
    ("ip-dst", "::ffff:192.168.1.1", "ip is not a globally routable address"),
    ("ip-dst", "256.1.1.1", "ip is not a valid IPv4 or IPv6 address"),
    ("ip-dst", " 8.8.8.8", "ip is not a valid IPv4 or IPv6 address"),
    ("ip-dst", "91.198.174.0/24", "ip is a network (CIDR), not one address"),
    ("ip-dst|port", "8.8.8.8|0", "port is not a number from 1 to 65535"),
    ("ip-dst|port", "8.8.8.8|65536", "port is not a number from 1 to 65535"),
    ("ip-dst|port", "8.8.8.8|http", "port is not a number from 1 to 65535"),
    ("ip-dst|port", "8.8.8.8|", "port is not a number from 1 to 65535"),
    ("ip-dst|port", "8.8.8.8", "value has no '|' between its two parts"),
    ("filename|md5", GOOD_MD5, "value has no '|' between its two parts"),
    ("domain", "evil..example", "domain has an empty label"),
    ("domain", "localhost", "domain is not a public DNS name (single label or reserved suffix)"),
    ("hostname", "printer.corp.internal",
     "hostname is not a public DNS name (single label or reserved suffix)"),
    ("hostname", "bad host.example", "hostname contains whitespace or a control character"),
    ("url", "http://evil.example/a b", "url contains whitespace or a control character"),
    ("url", "http://evil.example/\x07", "url contains whitespace or a control character"),
    ("url", "/gate.php?id=1", "url has no host"),
    ("url", "http:///gate.php", "url has no host"),
    ("url", "http://" + "a" * MAX_URL_CHARS, f"url is longer than {MAX_URL_CHARS} characters"),
    ("md5", GOOD_MD5[:-1], "md5 is not 32 hexadecimal digits (an MD5 hash)"),
    ("sha1", "g" * 40, "sha1 is not 40 hexadecimal digits (a SHA-1 hash)"),
    ("sha256", GOOD_MD5, "sha256 is not 64 hexadecimal digits (a SHA-256 hash)"),
    ("filename|sha256", f"x.exe|{GOOD_SHA1}",
     "sha256 is not 64 hexadecimal digits (a SHA-256 hash)"),
    ("ja3-fingerprint-md5", "not-a-fingerprint",
     "ja3 is not 32 hexadecimal digits (a JA3 fingerprint (MD5))"),
    ("domain", None, "domain is empty"),
    ("url", "", "url is empty"),
])
def test_bad_values_are_rejected_with_the_reason_and_the_attribute(
    misp_type: str, value: str | None, reason: str
) -> None:
    frame = pulled(("ip-dst", "91.198.174.192"), (misp_type, value))
    indicators, problems, counts = normalize_rule_indicators(frame)
    assert list(indicators["attribute_uuid"]) == ["a1"]
    assert [(p.source, p.reason, p.excerpt) for p in problems] == [
        ("MISP attribute a2", f"{misp_type}: {reason}", (value or "")[:120])]
    assert counts == {"kept ip": 1, f"rejected {reason}": 1}


def test_urls_with_credentials_ports_or_ipv6_hosts_are_valid() -> None:
    frame = pulled(("url", "http://user:pw@evil.example:8080/x"), ("url", "http://[2001:db8::1]/x"),
                   ("url", "evil.example/gate.php"), ("url", "http://" + "a" * (MAX_URL_CHARS - 7)))
    assert [kind for _, kind, _, _ in kept(frame)] == ["url"] * 4


def test_deleted_and_non_ids_attributes_are_no_indicators_but_are_counted() -> None:
    frame = pulled(("ip-dst", "91.198.174.192"), ("ip-dst", "91.198.174.193"),
                   ("ip-dst", "10.0.0.1"),
                   to_ids=[True, False, False], deleted=[False, False, True])
    indicators, problems, counts = normalize_rule_indicators(frame)
    assert list(indicators["value"]) == ["91.198.174.192"]
    assert problems == []  # a deleted private address is not a rejection: it is gone anyway
    assert counts == {"kept ip": 1, EXCLUDED_INACTIVE: 2}


def test_other_types_are_skipped_and_counted_per_type() -> None:
    frame = pulled(("email-src", "a@evil.example"), ("ip-dst", "91.198.174.192"),
                   ("email-src", "b@evil.example"), ("hostname|port", "evil.example|80"))
    indicators, problems, counts = normalize_rule_indicators(frame)
    assert list(indicators["attribute_uuid"]) == ["a2"]
    assert problems == []
    assert counts == {"kept ip": 1, "skipped type email-src": 2, "skipped type hostname|port": 1}


def test_every_attribute_part_is_kept_rejected_or_counted() -> None:
    types = list(HANDLED_TYPES) * 3 + ["text"]
    values = ["91.198.174.192", "not valid", "8.8.8.8|80"] * (len(types) // 3) + ["x"]
    frame = pulled(*zip(types, values[:len(types)], strict=True))
    indicators, problems, counts = normalize_rule_indicators(frame)
    parts = len(types) - 1 + 3  # three domain|ip attributes have two parts
    assert len(indicators) + len(problems) == parts
    assert sum(n for key, n in counts.items() if key.startswith(("kept", "rejected"))) == parts
    assert counts["skipped type text"] == 1


def test_empty_input_gives_empty_typed_output() -> None:
    indicators, problems, counts = normalize_rule_indicators(pulled())
    assert indicators.empty and problems == [] and counts == {}
    assert list(indicators.columns) == list(RULE_INDICATOR_COLUMNS)


def test_indicators_expand_into_one_rule_per_variant() -> None:
    indicators, _, _ = normalize_rule_indicators(pulled(("domain", "evil.example"),
                                                        ("md5", GOOD_MD5)))
    rules = expand_rule_variants(indicators)
    assert list(rules["variant"]) == ["dns", "tls", "http"]
