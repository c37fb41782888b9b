"""Address parsing, user filter patterns and the global / non-global decision."""

from __future__ import annotations

import ipaddress
import random
import socket

import numpy as np
import pandas as pd
import pytest

from tasks.ip_addresses import (
    FAMILY_INVALID,
    FAMILY_V4,
    FAMILY_V6,
    GLOBAL_EXCEPTIONS,
    NON_GLOBAL_RANGES,
    V6_DTYPE,
    AddressRanges,
    factorize_addresses,
    is_filter_name,
    non_global_mask,
    parse_addresses,
    pattern_problem,
    validate_filter_entry,
)

# Where non_global_mask deliberately disagrees with ipaddress.ip_address(x).is_global
# (Python 3.11-3.13 differ among themselves; a newer Python simply disagrees less).
DELIBERATE_DIFFERENCES: dict[str, str] = {
    "224.0.0.0/4": "multicast is never a peer worth sharing; is_global says True",
    "192.0.0.0/24": "IANA: the whole IETF block is non-global except .9 and .10 (older "
                    "Python only knew 192.0.0.0/29 and .170/31)",
    "ff00::/8": "multicast",
    "::/3": "outside global unicast 2000::/3 (is_global says True for e.g. ::1:0:0:0)",
    "4000::/2": "outside global unicast 2000::/3",
    "8000::/1": "outside global unicast 2000::/3 (fec0::/10 site local, 5f00::/16 ...)",
    "3fff::/20": "documentation prefix (RFC 9637), newer than Python's table",
    # IANA's globally reachable blocks inside 2001::/23, newer than older Pythons' table:
    "2001:1::1/128": "PCP anycast", "2001:1::2/128": "TURN anycast",
    "2001:1::3/128": "DNS-SD SRP anycast", "2001:3::/32": "AMT",
    "2001:4:112::/48": "AS112-v6", "2001:20::/28": "ORCHIDv2", "2001:30::/28": "drone remote ID",
    "2002::/16": "6to4 follows its embedded IPv4 address",
    "64:ff9b::/96": "NAT64 follows its embedded IPv4 address",
    "::ffff:0:0/96": "IPv4-mapped follows its embedded IPv4 address (older Python: never "
                     "global)",
}
DIFFERENCE_NETWORKS = [ipaddress.ip_network(cidr) for cidr in DELIBERATE_DIFFERENCES]


def ranges(*patterns: str) -> AddressRanges:
    return AddressRanges.from_patterns(patterns)


def matches(address_ranges: AddressRanges, addresses: list[str]) -> list[bool]:
    return address_ranges.contains(parse_addresses(addresses)).tolist()


# --- filter entries -------------------------------------------------------------------------


@pytest.mark.parametrize("entry", ["Servers", "DMZ hosts", "10", "scanner-whitelist", "ab"])
def test_filter_names_pass_validation_unresolved(entry: str) -> None:
    assert is_filter_name(entry)
    validate_filter_entry(entry)


@pytest.mark.parametrize("entry", [
    "8.8.8.8", "10.0.0.0/8", "1.2.3.*", "10.*.*.*", "1.2.3.[9-20]", "1.2.3.{1,5,9}",
    "1.2.3.4-1.2.3.99", "2001:db8::/32", "2001:db8::1-2001:db8::ff", "::1", " 8.8.8.8 ",
    "10.[0-3].*.{1,2}", "*.*.*.*", "10.1.2.3/8",
])
def test_valid_literal_patterns_pass_validation(entry: str) -> None:
    assert not is_filter_name(entry)
    validate_filter_entry(entry)


@pytest.mark.parametrize(("entry", "why"), [
    ("10.0.0.300", "not an IPv4 or IPv6 address"),
    ("1.2.3.0/33", "CIDR"),
    ("1.2.3.[9-2]", "starts after it ends"),
    ("1.2.3.99-1.2.3.4", "starts after it ends"),
    ("1.2.3.4-2001:db8::1", "mixes IPv4 and IPv6"),
    ("1.2.3.{}", "octet 4"),
    ("1.2.3.[7]", "[x-y]"),
    ("1.2.*", "exactly 4 octets"),
    ("010.0.0.1", "not an IPv4 or IPv6 address"),
    ("1.2.3.04-1.2.3.5", "not an IPv4 or IPv6 address"),
    ("*.*.*.1", "use CIDR"),
    ("fe80::1", None),
])
def test_invalid_literal_is_rejected_naming_the_entry(entry: str, why: str | None) -> None:
    if why is None:
        validate_filter_entry(entry)
        return
    with pytest.raises(ValueError, match=why) as error:
        validate_filter_entry(entry)
    assert entry in str(error.value)
    assert pattern_problem(entry) == str(error.value)


def test_empty_filter_entry_is_rejected() -> None:
    with pytest.raises(ValueError, match="empty"):
        validate_filter_entry("  ")


# --- parsing --------------------------------------------------------------------------------


@pytest.mark.parametrize("text", [
    "010.1.1.1", "1.2.3", "1.2.3.4.5", "256.1.1.1", " 1.2.3.4", "1.2.3.4 ", "1.2.3.4\n",
    "1.2.3.-4", "+1.2.3.4", "1.2.3.4/32", "0x1.2.3.4", "\u0661.2.3.4", "", "fe80::1%eth0",
    "2001:db8::g", "1::2::3", "::ffff:010.1.1.1", "1.2.3.4:80", "[::1]", "localhost",
])
def test_malformed_addresses_are_invalid(text: str) -> None:
    parsed = parse_addresses([text])
    assert parsed.family.tolist() == [FAMILY_INVALID]
    assert parsed.canonical_text().tolist() == [None]


def test_missing_values_are_invalid_not_errors() -> None:
    parsed = parse_addresses(pd.Series(["1.2.3.4", None, pd.NA], dtype="string"))
    assert parsed.family.tolist() == [FAMILY_V4, FAMILY_INVALID, FAMILY_INVALID]


def test_ipv4_parsing_agrees_with_ipaddress_on_random_addresses() -> None:
    rng = random.Random(4)
    values = [rng.getrandbits(32) for _ in range(5000)] + [0, 2**32 - 1]
    texts = [str(ipaddress.IPv4Address(value)) for value in values]
    parsed = parse_addresses(texts)
    assert (parsed.family == FAMILY_V4).all()
    assert parsed.v4.tolist() == values
    assert parsed.canonical_text().tolist() == texts


def test_ipv6_is_parsed_in_any_spelling_and_written_canonically() -> None:
    parsed = parse_addresses(["2001:DB8::0:1", "2001:0db8:0000:0000:0000:0000:0000:0001",
                              "::", "FFFF:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "2001:db8::"])
    assert parsed.family.tolist() == [FAMILY_V6] * 5
    assert parsed.canonical_text().tolist() == [
        "2001:db8::1", "2001:db8::1", "::", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
        "2001:db8::"]


def test_ipv6_text_round_trips_through_ipaddress() -> None:
    rng = random.Random(6)
    addresses = [ipaddress.IPv6Address(rng.getrandbits(128) >> rng.choice([0, 16, 64, 112]))
                 for _ in range(2000)]
    parsed = parse_addresses([address.exploded.upper() for address in addresses])
    assert [ipaddress.IPv6Address(text) for text in parsed.canonical_text()] == addresses


def test_ipv6_parsing_agrees_with_inet_pton_on_mutated_strings() -> None:
    rng = random.Random(66)
    texts = [":".join(["1"] * left) + "::" + ":".join(["2"] * right) + tail
             for left in range(9) for right in range(9) for tail in ("", ":1.2.3.4")]
    for _ in range(5000):
        address = ipaddress.IPv6Address(rng.getrandbits(128) >> rng.choice([0, 16, 64, 112]))
        text = rng.choice([str(address), address.exploded, str(address).upper(),
                           f"::ffff:{ipaddress.IPv4Address(rng.getrandbits(32))}"])
        position, character = rng.randrange(len(text) + 1), rng.choice("0:.fFg")
        texts.append(rng.choice([text, text[:position] + character + text[position:],
                                 text[:position] + text[position + 1:]]))

    def inet_pton(text: str) -> bytes | None:
        try:
            return socket.inet_pton(socket.AF_INET6, text)
        except OSError:
            return None

    parsed = parse_addresses(texts)
    ours = [value.ljust(16, b"\0") if family == FAMILY_V6 else None
            for family, value in zip(parsed.family.tolist(), parsed.v6.tolist(), strict=True)]
    assert ours == [inet_pton(text) for text in texts]
    assert 0.2 < parsed.valid.mean() < 0.9


def test_fixed_width_bytes_order_ipv6_numerically() -> None:
    rng = random.Random(16)
    values = [rng.getrandbits(128) >> rng.choice([0, 8, 64, 120]) for _ in range(3000)]
    packed = np.array([value.to_bytes(16, "big") for value in values], dtype=V6_DTYPE)
    by_bytes = [int.from_bytes(item.ljust(16, b"\0"), "big") for item in np.sort(packed)]
    assert by_bytes == sorted(values)


# --- user ranges ----------------------------------------------------------------------------


def test_cidr_range_and_single_address_match_exactly_their_edges() -> None:
    user = ranges("10.0.0.0/8", "192.0.2.10-192.0.2.20", "8.8.8.8", "2001:db8::/120")
    assert matches(user, ["10.0.0.0", "10.255.255.255", "9.255.255.255", "11.0.0.0"]) == [
        True, True, False, False]
    assert matches(user, ["192.0.2.9", "192.0.2.10", "192.0.2.20", "192.0.2.21"]) == [
        False, True, True, False]
    assert matches(user, ["8.8.8.7", "8.8.8.8", "8.8.8.9"]) == [False, True, False]
    assert matches(user, ["2001:db8::", "2001:db8::ff", "2001:db8::100", "10.0.0.1x"]) == [
        True, True, False, False]


def test_ipv4_filter_never_matches_ipv6_and_vice_versa() -> None:
    assert matches(ranges("0.0.0.0/0"), ["::1", "::ffff:1.2.3.4", "1.2.3.4"]) == [
        False, False, True]
    assert matches(ranges("::/0"), ["1.2.3.4", "::1"]) == [False, True]


def test_ipv6_range_pattern() -> None:
    user = ranges("2001:db8::ff:ffff-2001:db8::1:0:0")
    assert matches(user, ["2001:db8::ff:fffe", "2001:db8::ff:ffff", "2001:db8::100:0",
                          "2001:db8::1:0:0", "2001:db8::1:0:1"]) == [
        False, True, True, True, False]


def _octet_reference(pattern: str, address: str) -> bool:
    """Plain per-octet check, independent of the interval expansion under test."""
    for token, octet in zip(pattern.split("."), map(int, address.split(".")), strict=True):
        if token == "*":
            continue
        if token.startswith("["):
            low, high = map(int, token[1:-1].split("-"))
            if not low <= octet <= high:
                return False
        elif token.startswith("{"):
            if octet not in {int(part) for part in token[1:-1].split(",")}:
                return False
        elif octet != int(token):
            return False
    return True


def _values_near(token: str) -> list[int]:
    """Octet values on and just beside what a token allows, so samples hit every edge."""
    if token == "*":
        return [0, 1, 254, 255]
    bounds = [int(part) for part in token.strip("[]{}").replace("-", ",").split(",")]
    return [value for bound in bounds for value in (bound - 1, bound, bound + 1)
            if 0 <= value <= 255]


@pytest.mark.parametrize("pattern", [
    "1.2.3.*", "10.*.*.*", "*.*.*.*", "1.*.3.4", "1.2.3.[9-20]", "1.2.3.{1,5,9}",
    "[1-3].*.{0,255}.*", "{1,2}.[0-1].*.{7,200}", "*.*.[4-5].*",
])
def test_octet_patterns_match_like_a_per_octet_check(pattern: str) -> None:
    rng = random.Random(pattern)
    near = [_values_near(token) for token in pattern.split(".")]
    addresses = [".".join(str(rng.choice([*values, rng.randrange(256)])) for values in near)
                 for _ in range(3000)]
    expected = [_octet_reference(pattern, address) for address in addresses]
    assert matches(ranges(pattern), addresses) == expected
    assert any(expected) and (pattern == "*.*.*.*" or not all(expected))


def test_overlapping_and_adjacent_patterns_merge_into_one_interval() -> None:
    merged = ranges("10.0.0.0/25", "10.0.0.128/25", "10.0.0.5", "10.0.0.200-10.0.1.10",
                    "2001:db8::/64", "2001:db8:0:1::/64", "2001:db8::1")
    assert merged.v4_starts.tolist() == [int(ipaddress.IPv4Address("10.0.0.0"))]
    assert merged.v4_ends.tolist() == [int(ipaddress.IPv4Address("10.0.1.10"))]
    assert merged.interval_count == 2


def test_random_cidrs_match_like_ipaddress() -> None:
    rng = random.Random(10)
    networks = [ipaddress.ip_network((rng.getrandbits(32), rng.randint(8, 32)), strict=False)
                for _ in range(300)]
    user = AddressRanges.from_patterns(str(network) for network in networks)
    addresses = [ipaddress.IPv4Address(rng.getrandbits(32)) for _ in range(3000)]
    addresses += [network.network_address for network in networks]
    addresses += [network.broadcast_address + 1 for network in networks
                  if int(network.broadcast_address) < 2**32 - 1]
    expected = [any(address in network for network in networks) for address in addresses]
    assert matches(user, [str(address) for address in addresses]) == expected


def test_ranges_match_like_ipaddress_around_block_edges() -> None:
    """Most lookups are answered by a table of /20 blocks: intervals that start, end or span
    at block edges, and addresses beside them, in both families."""
    rng = random.Random(20)
    for bits in (32, 128):
        block = 1 << (bits - 20)
        starts = [rng.getrandbits(20) * block + rng.choice([-1, 0, 1]) for _ in range(300)]
        intervals = [(max(start, 0), min(max(start, 0) + length, 2 ** bits - 1))
                     for start in starts
                     for length in [rng.choice([0, 1, block - 2, block - 1, block, 3 * block])]]
        address = ipaddress.IPv4Address if bits == 32 else ipaddress.IPv6Address
        user = AddressRanges.from_patterns(f"{address(first)}-{address(last)}"
                                           for first, last in intervals)
        values = sorted({min(max(value + offset, 0), 2 ** bits - 1)
                         for first, last in intervals for value in (first, last)
                         for offset in (-1, 0, 1, block)})
        expected = [any(first <= value <= last for first, last in intervals) for value in values]
        assert matches(user, [str(address(value)) for value in values]) == expected
        assert any(expected) and not all(expected)


def test_covers_also_matches_the_ipv6_forms_of_a_covered_ipv4_address() -> None:
    user = ranges("8.8.8.0/24", "2001:db8::/32")
    parsed = parse_addresses(["8.8.8.8", "::ffff:8.8.8.8", "64:ff9b::808:808", "2002:808:808::1",
                              "2002:909:909::1", "2001:db8::1", "::ffff:9.9.9.9", "bad"])
    assert user.contains(parsed).tolist() == [True, False, False, False, False, True, False,
                                              False]
    assert user.covers(parsed).tolist() == [True, True, True, True, False, True, False, False]


def test_factorize_addresses_gives_each_address_one_code_whatever_its_spelling() -> None:
    texts = ["8.8.8.8", "2001:DB8::1", "bad", "2001:db8:0::1", "8.8.8.8", None,
             "::ffff:8.8.8.8", "::FFFF:808:808"]
    codes, distinct = factorize_addresses(parse_addresses(texts))
    canonical = distinct.canonical_text()
    assert [canonical[code] if code >= 0 else None for code in codes] == [
        "8.8.8.8", "2001:db8::1", None, "2001:db8::1", "8.8.8.8", None, "::ffff:8.8.8.8",
        "::ffff:8.8.8.8"]
    rng = random.Random(13)
    pool = ([str(ipaddress.IPv4Address(rng.getrandbits(32))) for _ in range(500)]
            + [str(ipaddress.IPv6Address(rng.getrandbits(128))) for _ in range(500)])
    texts = [rng.choice(pool) for _ in range(5000)]
    codes, distinct = factorize_addresses(parse_addresses(texts))
    assert len(distinct) == len(set(texts))
    assert [ipaddress.ip_address(text) for text in distinct.canonical_text()[codes]] == [
        ipaddress.ip_address(text) for text in texts]


def test_ranges_cannot_be_modified_after_building() -> None:
    user = ranges("10.0.0.0/8")
    with pytest.raises(ValueError):
        user.v4_starts[0] = 0


def test_empty_ranges_match_nothing() -> None:
    assert matches(AddressRanges.empty(), ["1.2.3.4", "::1", "bad"]) == [False] * 3


# --- global / non-global --------------------------------------------------------------------


def _edge_addresses() -> list[str]:
    """Both edges of every table entry, and their outside neighbours."""
    edges: list[str] = []
    for _, cidr in NON_GLOBAL_RANGES + GLOBAL_EXCEPTIONS:
        network = ipaddress.ip_network(cidr)
        top = 2 ** network.max_prefixlen - 1
        first, last = int(network.network_address), int(network.broadcast_address)
        for value in (first - 1, first, first + 1, last - 1, last, last + 1):
            if 0 <= value <= top:
                edges.append(str(ipaddress.ip_address(value) if network.version == 4
                                 else ipaddress.IPv6Address(value)))
    return edges


def _random_addresses(rng: random.Random) -> list[str]:
    v4 = [str(ipaddress.IPv4Address(rng.getrandbits(32))) for _ in range(20000)]
    v6 = [str(ipaddress.IPv6Address(rng.getrandbits(128))) for _ in range(3000)]
    unicast = [str(ipaddress.IPv6Address((1 << 125) | rng.getrandbits(125)))
               for _ in range(3000)]
    embedded = [f"{prefix}{ipaddress.IPv4Address(rng.getrandbits(32))}"
                for prefix in ("::ffff:", "64:ff9b::") for _ in range(500)]
    six_to_four = [str(ipaddress.IPv6Address((0x2002 << 112) | (rng.getrandbits(32) << 80)
                                             | rng.getrandbits(80))) for _ in range(500)]
    return v4 + v6 + unicast + embedded + six_to_four


def test_non_global_mask_agrees_with_is_global_except_documented_differences() -> None:
    sample = _edge_addresses() + _random_addresses(random.Random(1))
    ours = non_global_mask(parse_addresses(sample))
    undocumented = [
        address for address, non_global in zip(sample, ours.tolist(), strict=True)
        if non_global == ipaddress.ip_address(address).is_global
        and not any(ipaddress.ip_address(address) in network
                    for network in DIFFERENCE_NETWORKS
                    if network.version == ipaddress.ip_address(address).version)
    ]
    assert undocumented == []
    assert 0.05 < ours.mean() < 0.95  # the sample really mixes both kinds


@pytest.mark.parametrize(("address", "non_global"), [
    ("8.8.8.8", False), ("10.1.2.3", True), ("100.64.0.1", True), ("100.128.0.1", False),
    ("127.0.0.1", True), ("169.254.1.1", True), ("172.31.255.255", True), ("172.32.0.0", False),
    ("192.0.0.8", True), ("192.0.0.9", False), ("192.0.0.10", False), ("192.0.0.11", True),
    ("192.0.2.1", True), ("198.18.0.1", True), ("198.51.100.7", True), ("203.0.113.9", True),
    ("224.0.0.251", True), ("239.255.255.250", True), ("240.0.0.1", True),
    ("255.255.255.255", True), ("0.0.0.0", True),
    ("2606:4700::1111", False), ("::1", True), ("::", True), ("fe80::1", True),
    ("fd00::1", True), ("fec0::1", True), ("ff02::1", True), ("2001:db8::1", True),
    ("3fff::1", True), ("5f00::1", True), ("100::1", True), ("2001::1", True),
    ("2001:1::1", False), ("2001:4:112::1", False), ("2001:20::1", False),
    ("4000::1", True),
    ("::ffff:8.8.8.8", False), ("::ffff:10.0.0.1", True),
    ("64:ff9b::8.8.8.8", False), ("64:ff9b::192.168.1.1", True), ("64:ff9b:1::1", True),
    ("2002:808:808::1", False), ("2002:c0a8:101::1", True), ("2002:c000:9::", False),
])
def test_known_addresses_are_classified_as_iana_says(address: str, non_global: bool) -> None:
    assert non_global_mask(parse_addresses([address])).tolist() == [non_global]


def test_invalid_addresses_are_neither_global_nor_non_global() -> None:
    parsed = parse_addresses(["not-an-ip", None, "10.0.0.1"])
    assert non_global_mask(parsed).tolist() == [False, False, True]
    assert parsed.family.tolist() == [FAMILY_INVALID, FAMILY_INVALID, FAMILY_V4]


def test_a_concatenated_arrow_backed_series_parses_like_one_list() -> None:
    """`pd.concat` of Arrow-backed columns hands the parser a chunked array."""
    halves = [pd.Series(["198.51.100.7", None], dtype="string[pyarrow]"),
              pd.Series(["2001:db8::1", "45.155.205.233"], dtype="string[pyarrow]")]
    parsed = parse_addresses(pd.concat(halves))
    expected = parse_addresses(["198.51.100.7", None, "2001:db8::1", "45.155.205.233"])
    assert parsed.family.tolist() == expected.family.tolist() == [4, 0, 6, 4]
    assert parsed.v4.tolist() == expected.v4.tolist()
