"""From detections to the indicators an exported MISP event may carry."""

from __future__ import annotations

import pandas as pd
import pytest

from tasks.detections import empty_detections, normalize_detections
from tasks.indicators import (
    INDICATOR_COLUMNS,
    SELECTION_COUNT_KEYS,
    IndicatorSelection,
    detections_to_indicators,
    normalize_dns_names,
    select_indicators,
)
from tasks.ip_addresses import AddressRanges

NO_FILTERS = AddressRanges.empty()


def detections(*rows: dict[str, str | None]) -> pd.DataFrame:
    return normalize_detections(pd.DataFrame(
        [{"source_system": "flowmon", **row} for row in rows]))


def indicators(*rows: tuple[str, str, str]) -> pd.DataFrame:
    """(detection_id, attribute_type, value) rows from Suricata."""
    return pd.DataFrame(
        [{"source_system": "suricata", "detection_id": detection, "attribute_type": kind,
          "value": value} for detection, kind, value in rows],
        columns=list(INDICATOR_COLUMNS)).astype(INDICATOR_COLUMNS)


def kept_rows(selection: IndicatorSelection) -> list[tuple[str, str, str]]:
    kept = selection.kept
    return list(zip(kept["detection_id"], kept["attribute_type"], kept["value"], strict=True))


def assert_counts_add_up(selection: IndicatorSelection) -> None:
    counts = selection.counts
    assert tuple(counts) == SELECTION_COUNT_KEYS
    assert counts["indicators"] == sum(counts[key] for key in SELECTION_COUNT_KEYS[1:])
    assert counts["kept"] == len(selection.kept)
    assert counts["invalid"] == len(selection.problems)


# --- detections_to_indicators ---------------------------------------------------------------


def test_each_address_and_name_becomes_an_indicator_of_its_misp_type() -> None:
    table = detections(
        {"detection_id": "7", "src_ip": "8.8.8.8", "dst_ip": "1.1.1.1",
         "domain": "evil.example", "hostname": "cdn.evil.example"},
        {"detection_id": "8", "src_ip": "9.9.9.9"},
    )
    result = detections_to_indicators(table)
    assert list(result.columns) == list(INDICATOR_COLUMNS)
    assert all(pd.api.types.is_string_dtype(dtype) for dtype in result.dtypes)
    assert list(result.itertuples(index=False, name=None)) == [
        ("flowmon", "7", "ip-src", "8.8.8.8"),
        ("flowmon", "7", "ip-dst", "1.1.1.1"),
        ("flowmon", "7", "domain", "evil.example"),
        ("flowmon", "7", "hostname", "cdn.evil.example"),
        ("flowmon", "8", "ip-src", "9.9.9.9"),
    ]


def test_missing_and_blank_values_produce_no_indicator() -> None:
    table = detections({"detection_id": "1", "src_ip": " ", "dst_ip": None, "domain": "",
                        "hostname": "\t"})
    assert detections_to_indicators(table).empty


def test_no_detections_give_an_empty_indicator_table_with_its_columns() -> None:
    result = detections_to_indicators(empty_detections())
    assert result.empty and list(result.columns) == list(INDICATOR_COLUMNS)


# --- select_indicators: addresses -----------------------------------------------------------


def test_private_and_special_addresses_are_never_exported() -> None:
    selection = select_indicators(indicators(
        ("1", "ip-src", "10.0.0.5"), ("1", "ip-dst", "8.8.8.8"), ("1", "ip-dst", "fe80::1"),
        ("2", "ip-src", "192.168.1.1"), ("2", "ip-dst", "2002:c0a8:101::1"),
    ), NO_FILTERS)
    assert kept_rows(selection) == [("1", "ip-dst", "8.8.8.8")]
    assert selection.counts["non_global"] == 4
    assert_counts_add_up(selection)


def test_user_filters_drop_matching_addresses_and_are_counted() -> None:
    user = AddressRanges.from_patterns(["8.8.8.0/24", "1.1.1.[1-3]", "2606:4700::/32"])
    selection = select_indicators(indicators(
        ("1", "ip-dst", "8.8.8.8"), ("1", "ip-dst", "1.1.1.2"), ("1", "ip-dst", "1.1.1.4"),
        ("1", "ip-src", "2606:4700::1111"), ("1", "ip-src", "10.0.0.1"),
    ), user)
    assert kept_rows(selection) == [("1", "ip-dst", "1.1.1.4")]
    assert selection.counts["filtered"] == 3
    assert selection.counts["non_global"] == 1  # non-global wins over a user filter
    assert_counts_add_up(selection)


def test_ipv4_filter_also_drops_ipv6_forms_carrying_that_address() -> None:
    user = AddressRanges.from_patterns(["8.8.8.0/24"])
    selection = select_indicators(indicators(
        ("1", "ip-dst", "::ffff:8.8.8.8"), ("1", "ip-dst", "64:ff9b::808:809"),
        ("1", "ip-dst", "2002:808:80a::1"), ("1", "ip-dst", "2002:909:909::1"),
    ), user)
    assert kept_rows(selection) == [("1", "ip-dst", "2002:909:909::1")]
    assert selection.counts["filtered"] == 3


def test_invalid_address_is_reported_with_its_detection_and_value() -> None:
    selection = select_indicators(indicators(
        ("41", "ip-src", "010.0.0.1"), ("41", "ip-dst", "8.8.8.8"), ("42", "ip-dst", "8.8.8.8:53"),
    ), NO_FILTERS)
    assert kept_rows(selection) == [("41", "ip-dst", "8.8.8.8")]
    assert [(p.source, p.excerpt) for p in selection.problems] == [
        ("suricata detection 41", "010.0.0.1"), ("suricata detection 42", "8.8.8.8:53")]
    assert all("ip-" in p.reason and "not a valid" in p.reason for p in selection.problems)
    assert_counts_add_up(selection)


def test_ipv6_is_exported_in_canonical_form_and_spellings_deduplicate() -> None:
    selection = select_indicators(indicators(
        ("1", "ip-dst", "2606:4700:0000::1111"), ("1", "ip-dst", "2606:4700::1111"),
        ("1", "ip-dst", "2606:4700::1111"), ("2", "ip-dst", "2606:4700::1111"),
    ), NO_FILTERS)
    assert kept_rows(selection) == [("1", "ip-dst", "2606:4700::1111"),
                                    ("2", "ip-dst", "2606:4700::1111")]
    assert selection.counts["duplicate"] == 2
    assert_counts_add_up(selection)


def test_same_address_as_source_and_destination_stays_twice() -> None:
    selection = select_indicators(indicators(("1", "ip-src", "8.8.8.8"),
                                             ("1", "ip-dst", "8.8.8.8")), NO_FILTERS)
    assert len(selection.kept) == 2


def test_long_format_repeats_count_once_then_as_duplicates() -> None:
    table = detections(*[{"detection_id": "5", "src_ip": "10.0.0.9", "dst_ip": f"8.8.8.{n}"}
                         for n in range(1, 6)])
    selection = select_indicators(detections_to_indicators(table), NO_FILTERS)
    assert selection.counts == {"indicators": 10, "non_global": 1, "filtered": 0,
                                "invalid": 0, "duplicate": 4, "kept": 5}


# --- select_indicators: names ---------------------------------------------------------------


def test_names_are_lowercased_without_trailing_dot_and_idna_as_punycode() -> None:
    selection = select_indicators(indicators(
        ("1", "domain", "Evil.EXAMPLE.com."), ("1", "domain", "evil.example.com"),
        ("1", "hostname", "Bücher.example"), ("1", "domain", "xn--bcher-kva.example"),
    ), NO_FILTERS)
    assert kept_rows(selection) == [("1", "domain", "evil.example.com"),
                                    ("1", "hostname", "xn--bcher-kva.example"),
                                    ("1", "domain", "xn--bcher-kva.example")]
    assert selection.counts["duplicate"] == 1
    assert_counts_add_up(selection)


@pytest.mark.parametrize(("name", "why"), [
    ("evil\x00.com", "control character"),
    ("evil .com", "whitespace"),
    ("evil\n.com", "whitespace"),
    ("evil..com", "empty label"),
    (".evil.com", "empty label"),
    ("evil.com..", "empty label"),
    ("a" * 64 + ".com", "longer than 63"),
    (".".join(["a" * 62] * 4) + ".com", "longer than 253"),  # 255 characters
    ("evil.com:8080", "not allowed"),
    ("1.2.3.4", "numeric"),
    ("evil.c", "last label"),
    ("ex\u200dample.com", "internationalized"),
    ("☃" * 70 + ".com", "internationalized"),
])
def test_invalid_names_are_reported_not_exported(name: str, why: str) -> None:
    selection = select_indicators(indicators(("9", "hostname", name),
                                             ("9", "domain", "ok.example")), NO_FILTERS)
    assert kept_rows(selection) == [("9", "domain", "ok.example")]
    [problem] = selection.problems
    assert problem.source == "suricata detection 9"
    assert why in problem.reason and problem.reason.startswith("hostname")
    assert problem.excerpt == name[:120]
    assert_counts_add_up(selection)


def test_longest_valid_name_is_kept() -> None:
    name = ".".join(["a" * 63] * 3 + ["b" * 61])  # 253 characters
    selection = select_indicators(indicators(("1", "domain", name)), NO_FILTERS)
    assert kept_rows(selection) == [("1", "domain", name)]


@pytest.mark.parametrize("name", ["wpad", "printer.local", "router.home.arpa", "localhost",
                                  "db.corp.internal", "x.test"])
def test_internal_names_are_non_global_not_invalid(name: str) -> None:
    selection = select_indicators(indicators(("1", "domain", name)), NO_FILTERS)
    assert selection.kept.empty and not selection.problems
    assert selection.counts["non_global"] == 1


def test_normalize_dns_names_handles_missing_values() -> None:
    normalized, reasons = normalize_dns_names(pd.Index(["A.b.Co", None]))
    assert normalized.tolist() == ["a.b.co", None]
    assert reasons.tolist() == [None, "is empty"]


# --- select_indicators: everything together -------------------------------------------------


def test_unknown_type_and_missing_value_are_invalid() -> None:
    selection = select_indicators(pd.DataFrame({
        "source_system": ["suricata", "suricata"], "detection_id": ["1", "2"],
        "attribute_type": ["url", "ip-dst"], "value": ["http://x.example/", None]}),
        NO_FILTERS)
    assert selection.kept.empty
    assert [p.reason for p in selection.problems] == [
        "url value has an unknown attribute type", "ip-dst value is empty"]
    assert_counts_add_up(selection)


def test_long_invalid_value_is_truncated_in_the_problem() -> None:
    selection = select_indicators(indicators(("1", "ip-src", "9" * 5000)), NO_FILTERS)
    assert len(selection.problems[0].excerpt) == 120


def test_empty_input_gives_zero_counts_and_an_empty_typed_table() -> None:
    selection = select_indicators(indicators(), NO_FILTERS)
    assert selection.counts == dict.fromkeys(SELECTION_COUNT_KEYS, 0)
    assert list(selection.kept.columns) == list(INDICATOR_COLUMNS)
    assert selection.problems == []


def test_mixed_batch_counts_every_indicator_exactly_once() -> None:
    table = detections(
        {"detection_id": "1", "src_ip": "10.0.0.1", "dst_ip": "8.8.8.8", "domain": "a.example"},
        {"detection_id": "1", "src_ip": "10.0.0.1", "dst_ip": "9.9.9.9", "domain": "a.example"},
        {"detection_id": "2", "src_ip": "999.1.1.1", "dst_ip": "8.8.4.4",
         "hostname": "bad host.example"},
        {"detection_id": "3", "src_ip": "8.8.8.8", "dst_ip": "2001:db8::1"},
    )
    user = AddressRanges.from_patterns(["8.8.4.0/24"])
    selection = select_indicators(detections_to_indicators(table), user)
    assert selection.counts == {"indicators": 11, "non_global": 2, "filtered": 1,
                                "invalid": 2, "duplicate": 2, "kept": 4}
    assert kept_rows(selection) == [("1", "ip-dst", "8.8.8.8"), ("1", "domain", "a.example"),
                                    ("1", "ip-dst", "9.9.9.9"), ("3", "ip-src", "8.8.8.8")]
    assert all(pd.api.types.is_string_dtype(dtype) for dtype in selection.kept.dtypes)
