"""IP addresses: strict vectorized parsing, user filter patterns, and what counts as global.

Addresses live in numpy arrays so a batch of a million is classified without a Python loop
per row: IPv4 as `uint32`, IPv6 as 16-byte big-endian `S16` values (fixed-width bytes
compare lexicographically, which for big-endian integers is numeric order). Address sets
(user filters, the non-global table) are sorted, merged intervals searched with
`np.searchsorted`.

Filter entries (`export.ip_filters`) are either ADS filter *names*, resolved elsewhere
through the Flowmon REST API, or literal patterns parsed here; `is_filter_name` is the
one rule telling them apart.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import cache

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

FAMILY_INVALID = 0
FAMILY_V4 = 4
FAMILY_V6 = 6
V6_DTYPE = np.dtype("S16")
V4_MAX = (1 << 32) - 1

# A pattern like `*.*.*.1` is one interval per address; past this it should be a CIDR.
MAX_PATTERN_INTERVALS = 1 << 20

_LITERAL_CHARACTERS = frozenset("0123456789abcdefABCDEF.:/*-[]{},")
_OCTET_NUMBER = re.compile(r"0|[1-9][0-9]{0,2}")
_IPV4_OCTET_RE2 = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IPV4_RE2 = rf"^(?:{_IPV4_OCTET_RE2}\.){{3}}{_IPV4_OCTET_RE2}$"

AddressValues = Sequence[str | None] | pd.Series | pd.Index | np.ndarray | pa.Array


# --- filter entries -------------------------------------------------------------------------


def is_filter_name(entry: str) -> bool:
    """True when `entry` names an ADS filter rather than spelling an address pattern.

    Rule: after trimming, an entry made only of hex digits, '.', ':', '/', '*', '-', '[',
    ']', '{', '}' and ',' that contains a '.' or a ':' is a literal pattern; anything else
    is a name. So "Servers", "DMZ hosts" and "10" are names, "10.0.0.0/8", "fe80::/10" and
    "10.0.0.300" are (the last one invalid) literals. A filter whose name is made only of
    those characters (e.g. "dead.beef") cannot be referenced by name.
    """
    text = entry.strip()
    is_literal = bool(text) and set(text) <= _LITERAL_CHARACTERS and ("." in text or ":" in text)
    return not is_literal


def pattern_problem(pattern: str) -> str | None:
    """Why `pattern` is not a usable literal pattern, or None when it is.

    Lets a caller skip (and report) one bad pattern received from the ADS API instead of
    failing the whole filter.
    """
    try:
        _pattern_intervals(pattern)
    except ValueError as exc:
        return str(exc)
    return None


def validate_filter_entry(entry: str) -> None:
    """Reject, at configuration time, an invalid literal pattern; names always pass."""
    if not entry.strip():
        raise ValueError("an empty entry is neither an ADS filter name nor an IP pattern")
    if not is_filter_name(entry):
        _pattern_intervals(entry)


# --- pattern parsing -------------------------------------------------------------------------


def _invalid(pattern: str, why: str) -> ValueError:
    return ValueError(f"invalid IP pattern {pattern!r}: {why}")


def _pattern_intervals(pattern: str) -> tuple[int, np.ndarray, np.ndarray]:
    """(family, starts, ends) of one literal pattern: int64 arrays for IPv4, S16 for IPv6.

    Supported: single address, CIDR (host bits are masked, as iptables and Flowmon do),
    `start-end` ranges (both families), and IPv4 octet patterns where each octet is a
    number, `*`, `[x-y]` or `{a,b,c}`.
    """
    text = pattern.strip()
    if not text:
        raise _invalid(pattern, "empty")
    if "%" in text:
        raise _invalid(pattern, "zone ids (%...) are not allowed")
    if any(symbol in text for symbol in "*[{"):
        return _octet_pattern_intervals(pattern, text)
    if "/" in text:
        try:
            network = ipaddress.ip_network(text, strict=False)
        except ValueError:
            raise _invalid(pattern, "not a CIDR network (address/prefix length)") from None
        return _address_interval(network.network_address, network.broadcast_address)
    if "-" in text:
        first_text, _, last_text = text.partition("-")
        first, last = _address(pattern, first_text), _address(pattern, last_text)
        if first.version != last.version:
            raise _invalid(pattern, "the range mixes IPv4 and IPv6")
        if first > last:
            raise _invalid(pattern, "the range starts after it ends")
        return _address_interval(first, last)
    address = _address(pattern, text)
    return _address_interval(address, address)


def _address(pattern: str, text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    try:
        return ipaddress.ip_address(text.strip())
    except ValueError:
        raise _invalid(pattern, f"{text.strip()!r} is not an IPv4 or IPv6 address") from None


def _address_interval(
    first: ipaddress.IPv4Address | ipaddress.IPv6Address,
    last: ipaddress.IPv4Address | ipaddress.IPv6Address,
) -> tuple[int, np.ndarray, np.ndarray]:
    if first.version == 4:
        return FAMILY_V4, np.array([int(first)], np.int64), np.array([int(last)], np.int64)
    return FAMILY_V6, np.array([first.packed], V6_DTYPE), np.array([last.packed], V6_DTYPE)


def _octet_intervals(pattern: str, position: int, token: str) -> list[tuple[int, int]]:
    """The (low, high) value intervals one octet token allows."""

    def number(text: str) -> int:
        if not _OCTET_NUMBER.fullmatch(text) or int(text) > 255:
            raise _invalid(pattern, f"octet {position} has {text!r}, not a number 0-255 "
                                    "without leading zeros")
        return int(text)

    if token == "*":
        return [(0, 255)]
    if token.startswith("[") and token.endswith("]"):
        low_text, dash, high_text = token[1:-1].partition("-")
        if not dash:
            raise _invalid(pattern, f"octet {position} range {token!r} needs the form [x-y]")
        low, high = number(low_text), number(high_text)
        if low > high:
            raise _invalid(pattern, f"octet {position} range {token!r} starts after it ends")
        return [(low, high)]
    if token.startswith("{") and token.endswith("}"):
        values = sorted({number(part) for part in token[1:-1].split(",")})
        return [(value, value) for value in values]
    value = number(token)
    return [(value, value)]


def _octet_pattern_intervals(pattern: str, text: str) -> tuple[int, np.ndarray, np.ndarray]:
    """Expand `a.b.c.d` octet patterns into address intervals without a loop per address.

    Trailing octets that allow everything become the low bits of each interval; the octets
    before the last restricted one are enumerated (their Cartesian product, by broadcasting).
    """
    tokens = text.split(".")
    if len(tokens) != 4:
        raise _invalid(pattern, "an octet pattern needs exactly 4 octets (IPv4 only)")
    octets = [_octet_intervals(pattern, position, token)
              for position, token in enumerate(tokens, start=1)]
    restricted = [index for index, allowed in enumerate(octets) if allowed != [(0, 255)]]
    last_restricted = restricted[-1] if restricted else 0
    enumerated = [np.concatenate([np.arange(low, high + 1) for low, high in allowed])
                  for allowed in octets[:last_restricted]]
    interval_count = int(np.prod([len(values) for values in enumerated], dtype=np.int64))
    interval_count *= len(octets[last_restricted])
    if interval_count > MAX_PATTERN_INTERVALS:
        raise _invalid(pattern, f"expands to {interval_count} separate ranges "
                                f"(limit {MAX_PATTERN_INTERVALS}); use CIDR or ranges")
    prefixes = np.zeros(1, np.int64)
    for values in enumerated:
        prefixes = (prefixes[:, None] * 256 + values[None, :]).ravel()
    lows = np.array([low for low, _ in octets[last_restricted]], np.int64)
    highs = np.array([high for _, high in octets[last_restricted]], np.int64)
    free_bits = 8 * (3 - last_restricted)
    starts = ((prefixes[:, None] * 256 + lows[None, :]) << free_bits).ravel()
    ends = (((prefixes[:, None] * 256 + highs[None, :]) << free_bits) | ((1 << free_bits) - 1))
    return FAMILY_V4, starts, ends.ravel()


# --- interval sets ---------------------------------------------------------------------------


def _v6_successor(values: np.ndarray) -> np.ndarray:
    """value + 1 for S16 big-endian addresses, saturating at the last address."""
    words = np.ascontiguousarray(values).view(">u8").reshape(-1, 2).astype(np.uint64)
    high, low = words[:, 0], words[:, 1]
    next_low = low + np.uint64(1)
    next_high = high + (next_low == 0).astype(np.uint64)
    result = np.stack([next_high, next_low], axis=1).astype(">u8").view(V6_DTYPE).ravel()
    is_last = (high == np.iinfo(np.uint64).max) & (low == np.iinfo(np.uint64).max)
    result[is_last] = values[is_last]
    return result


def _merge_intervals(
    starts: np.ndarray, ends: np.ndarray, successor: Callable[[np.ndarray], np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """Sort, then fuse overlapping or adjacent intervals, all vectorized.

    The running furthest end is a cumulative max over end *ranks*, which works for any
    sortable dtype (S16 has no arithmetic maximum ufunc).
    """
    if len(starts) == 0:
        return starts, ends
    order = np.argsort(starts, kind="stable")
    starts, ends = starts[order], ends[order]
    unique_ends, end_rank = np.unique(ends, return_inverse=True)
    reach = unique_ends[np.maximum.accumulate(end_rank.ravel())]
    opens_group = np.ones(len(starts), dtype=bool)
    opens_group[1:] = starts[1:] > successor(reach[:-1])
    group_first = np.flatnonzero(opens_group)
    group_last = np.append(group_first[1:] - 1, len(starts) - 1)
    return starts[group_first], reach[group_last]


def _inside(values: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Membership of each value in sorted, disjoint [start, end] intervals."""
    if len(starts) == 0 or len(values) == 0:
        return np.zeros(len(values), dtype=bool)
    candidate = np.searchsorted(starts, values, side="right") - 1
    return (candidate >= 0) & (ends[np.maximum(candidate, 0)] >= values)


def _frozen(array: np.ndarray) -> np.ndarray:
    array.setflags(write=False)
    return array


@dataclass(frozen=True, eq=False)
class ParsedAddresses:
    """Parsed form of a column of address strings, row-aligned with the input.

    `family` is 4, 6 or 0 (invalid or missing); `v4` holds the IPv4 value (0 elsewhere),
    `v6` the 16 IPv6 bytes (zero bytes elsewhere).
    """

    family: np.ndarray  # int8
    v4: np.ndarray  # uint32
    v6: np.ndarray  # S16

    def __len__(self) -> int:
        return len(self.family)

    @property
    def valid(self) -> np.ndarray:
        return self.family != FAMILY_INVALID

    def canonical_text(self) -> np.ndarray:
        """Canonical text per row (object array, None where invalid): dotted decimal for
        IPv4, RFC 5952 compressed lowercase for IPv6 ("2001:DB8::0:1" -> "2001:db8::1"),
        so the same address always deduplicates to the same value."""
        text = np.full(len(self), None, dtype=object)
        v4_rows = self.family == FAMILY_V4
        if v4_rows.any():
            values = self.v4[v4_rows]
            octets = [pa.array(((values >> shift) & 255).astype(np.uint8)).cast(pa.string())
                      for shift in (24, 16, 8, 0)]
            joined = pc.binary_join_element_wise(*octets, ".")
            text[v4_rows] = joined.to_numpy(zero_copy_only=False)
        v6_rows = self.family == FAMILY_V6
        if v6_rows.any():
            # Per distinct address: inet_ntop has no vectorized form.
            unique_v6, inverse = np.unique(self.v6[v6_rows], return_inverse=True)
            unique_text = np.array(
                [socket.inet_ntop(socket.AF_INET6, packed.ljust(16, b"\0"))
                 for packed in unique_v6], dtype=object)
            text[v6_rows] = unique_text[inverse.ravel()]
        return text


def _as_arrow_strings(values: AddressValues) -> pa.Array:
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if isinstance(values, pa.Array):
        return values.cast(pa.string())
    return pa.array(values, type=pa.string(), from_pandas=True)


def _pack_ipv6(text: str) -> bytes | None:
    try:
        return socket.inet_pton(socket.AF_INET6, text)
    except (OSError, ValueError):  # malformed, or non-ASCII / NUL characters
        return None


def parse_addresses(values: AddressValues) -> ParsedAddresses:
    """Parse address strings strictly; anything else (NA included) gets family 0.

    IPv4 is fully vectorized (RE2 validation, then split_pattern and casts): exactly four
    decimal octets 0-255, no leading zeros ("010.1.1.1" is ambiguous: octal to some
    tools), no spaces. IPv6 goes through `socket.inet_pton` once per DISTINCT candidate
    string (those containing ':'); that is the remaining per-value step. Zone ids
    ("fe80::1%eth0") are rejected: they are not addresses outside one host.
    """
    text = _as_arrow_strings(values)
    count = len(text)
    family = np.zeros(count, dtype=np.int8)
    v4 = np.zeros(count, dtype=np.uint32)
    v6 = np.zeros(count, dtype=V6_DTYPE)

    is_v4 = pc.fill_null(pc.match_substring_regex(text, _IPV4_RE2), False)
    is_v4_rows = is_v4.to_numpy(zero_copy_only=False)
    if is_v4_rows.any():
        parts = pc.list_flatten(pc.split_pattern(text.filter(is_v4), "."))
        octets = pc.cast(parts, pa.uint32()).to_numpy().reshape(-1, 4)
        v4[is_v4_rows] = (octets[:, 0] << 24) | (octets[:, 1] << 16) | (octets[:, 2] << 8) \
            | octets[:, 3]
        family[is_v4_rows] = FAMILY_V4

    has_colon = pc.fill_null(pc.match_substring(text, ":"), False).to_numpy(zero_copy_only=False)
    v6_candidate_rows = np.flatnonzero(has_colon & ~is_v4_rows)
    if len(v6_candidate_rows):
        encoded = pc.dictionary_encode(text.take(pa.array(v6_candidate_rows)))
        packed = [_pack_ipv6(candidate) for candidate in encoded.dictionary.to_pylist()]
        unique_ok = np.array([address is not None for address in packed], dtype=bool)
        unique_v6 = np.array([address or b"" for address in packed], dtype=V6_DTYPE)
        codes = encoded.indices.to_numpy()
        ok = unique_ok[codes]
        v6[v6_candidate_rows[ok]] = unique_v6[codes[ok]]
        family[v6_candidate_rows[ok]] = FAMILY_V6
    return ParsedAddresses(_frozen(family), _frozen(v4), _frozen(v6))


@dataclass(frozen=True, eq=False)
class AddressRanges:
    """An immutable set of addresses: sorted, merged [start, end] intervals per family."""

    v4_starts: np.ndarray  # uint32
    v4_ends: np.ndarray  # uint32
    v6_starts: np.ndarray  # S16
    v6_ends: np.ndarray  # S16

    def __post_init__(self) -> None:
        for array in (self.v4_starts, self.v4_ends, self.v6_starts, self.v6_ends):
            array.setflags(write=False)

    @classmethod
    def empty(cls) -> AddressRanges:
        return cls.from_patterns([])

    @classmethod
    def from_patterns(cls, patterns: Iterable[str]) -> AddressRanges:
        """Build from literal patterns; raises ValueError naming the first invalid one."""
        v4_parts: list[tuple[np.ndarray, np.ndarray]] = [
            (np.zeros(0, np.int64), np.zeros(0, np.int64))]
        v6_parts: list[tuple[np.ndarray, np.ndarray]] = [
            (np.zeros(0, V6_DTYPE), np.zeros(0, V6_DTYPE))]
        for pattern in patterns:
            family, starts, ends = _pattern_intervals(pattern)
            (v4_parts if family == FAMILY_V4 else v6_parts).append((starts, ends))
        v4_starts, v4_ends = _merge_intervals(
            np.concatenate([starts for starts, _ in v4_parts]),
            np.concatenate([ends for _, ends in v4_parts]),
            lambda reach: reach + 1,
        )
        v6_starts, v6_ends = _merge_intervals(
            np.concatenate([starts for starts, _ in v6_parts]),
            np.concatenate([ends for _, ends in v6_parts]),
            _v6_successor,
        )
        return cls(v4_starts.astype(np.uint32), v4_ends.astype(np.uint32),
                   v6_starts.astype(V6_DTYPE), v6_ends.astype(V6_DTYPE))

    @property
    def interval_count(self) -> int:
        return len(self.v4_starts) + len(self.v6_starts)

    def contains(self, parsed: ParsedAddresses) -> np.ndarray:
        """Per row: is the address inside the set? Invalid rows are never inside."""
        result = np.zeros(len(parsed), dtype=bool)
        v4_rows = parsed.family == FAMILY_V4
        result[v4_rows] = _inside(parsed.v4[v4_rows], self.v4_starts, self.v4_ends)
        v6_rows = parsed.family == FAMILY_V6
        result[v6_rows] = _inside(parsed.v6[v6_rows], self.v6_starts, self.v6_ends)
        return result

    def __repr__(self) -> str:
        return (f"AddressRanges({len(self.v4_starts)} IPv4 intervals, "
                f"{len(self.v6_starts)} IPv6 intervals)")


# --- global vs non-global --------------------------------------------------------------------

# Not globally reachable: the IANA IPv4 and IPv6 Special-Purpose Address Registries entries
# with Globally Reachable = False (as of 2025), plus multicast, the deprecated site-local
# block, and in IPv6 everything outside global unicast 2000::/3. Addresses that embed an
# IPv4 address (IPv4-mapped, NAT64 64:ff9b::/96, 6to4) are judged by that address instead,
# see `non_global_mask`.
NON_GLOBAL_RANGES: tuple[tuple[str, str], ...] = (
    ("this network (RFC 791)", "0.0.0.0/8"),
    ("private use (RFC 1918)", "10.0.0.0/8"),
    ("shared address space / CGNAT (RFC 6598)", "100.64.0.0/10"),
    ("loopback (RFC 1122)", "127.0.0.0/8"),
    ("link local (RFC 3927)", "169.254.0.0/16"),
    ("private use (RFC 1918)", "172.16.0.0/12"),
    ("IETF protocol assignments (RFC 6890)", "192.0.0.0/24"),
    ("documentation TEST-NET-1 (RFC 5737)", "192.0.2.0/24"),
    ("private use (RFC 1918)", "192.168.0.0/16"),
    ("benchmarking (RFC 2544)", "198.18.0.0/15"),
    ("documentation TEST-NET-2 (RFC 5737)", "198.51.100.0/24"),
    ("documentation TEST-NET-3 (RFC 5737)", "203.0.113.0/24"),
    ("multicast (RFC 5771)", "224.0.0.0/4"),
    ("reserved (RFC 1112)", "240.0.0.0/4"),
    ("limited broadcast (RFC 919)", "255.255.255.255/32"),
    ("outside global unicast 2000::/3 (RFC 4291): unspecified, loopback, mapped, ...",
     "::/3"),
    ("IPv4/IPv6 translation, local use (RFC 8215)", "64:ff9b:1::/48"),
    ("discard only (RFC 6666)", "100::/64"),
    ("dummy prefix (RFC 9780)", "100:0:0:1::/64"),
    ("IETF protocol assignments, incl. Teredo (RFC 2928)", "2001::/23"),
    ("benchmarking (RFC 5180)", "2001:2::/48"),
    ("deprecated ORCHID (RFC 4843)", "2001:10::/28"),
    ("documentation (RFC 3849)", "2001:db8::/32"),
    ("documentation (RFC 9637)", "3fff::/20"),
    ("outside global unicast 2000::/3 (RFC 4291)", "4000::/2"),
    ("SRv6 SIDs (RFC 9602)", "5f00::/16"),
    ("outside global unicast 2000::/3 (RFC 4291)", "8000::/1"),
    ("unique local (RFC 4193)", "fc00::/7"),
    ("link local (RFC 4291)", "fe80::/10"),
    ("deprecated site local (RFC 3879)", "fec0::/10"),
    ("multicast (RFC 4291)", "ff00::/8"),
)

# Globally reachable blocks IANA lists inside a non-global block above.
GLOBAL_EXCEPTIONS: tuple[tuple[str, str], ...] = (
    ("PCP anycast (RFC 7723)", "192.0.0.9/32"),
    ("TURN anycast (RFC 8155)", "192.0.0.10/32"),
    ("PCP anycast (RFC 7723)", "2001:1::1/128"),
    ("TURN anycast (RFC 8155)", "2001:1::2/128"),
    ("DNS-SD SRP anycast (RFC 9665)", "2001:1::3/128"),
    ("AMT (RFC 7450)", "2001:3::/32"),
    ("AS112-v6 (RFC 7535)", "2001:4:112::/48"),
    ("ORCHIDv2 (RFC 7343)", "2001:20::/28"),
    ("drone remote ID tags (RFC 9374)", "2001:30::/28"),
)

_IPV4_MAPPED_PREFIX = np.frombuffer(ipaddress.IPv6Address("::ffff:0:0").packed[:12], np.uint8)
_NAT64_PREFIX = np.frombuffer(ipaddress.IPv6Address("64:ff9b::").packed[:12], np.uint8)
_6TO4_PREFIX = np.frombuffer(ipaddress.IPv6Address("2002::").packed[:2], np.uint8)


@cache
def _special_purpose_ranges() -> tuple[AddressRanges, AddressRanges]:
    return (AddressRanges.from_patterns(cidr for _, cidr in NON_GLOBAL_RANGES),
            AddressRanges.from_patterns(cidr for _, cidr in GLOBAL_EXCEPTIONS))


def _direct_non_global(parsed: ParsedAddresses) -> np.ndarray:
    non_global, exceptions = _special_purpose_ranges()
    return non_global.contains(parsed) & ~exceptions.contains(parsed)


def _embedded_ipv4(parsed: ParsedAddresses) -> tuple[np.ndarray, np.ndarray]:
    """(rows, IPv4 values) of IPv6 addresses that carry an IPv4 address: IPv4-mapped
    (::ffff:a.b.c.d), NAT64 (64:ff9b::a.b.c.d) and 6to4 (2002:AABB:CCDD::/48)."""
    v6_rows = np.flatnonzero(parsed.family == FAMILY_V6)
    octets = np.ascontiguousarray(parsed.v6[v6_rows]).view(np.uint8).reshape(-1, 16)
    trailing_v4 = ((octets[:, :12] == _IPV4_MAPPED_PREFIX).all(axis=1)
                   | (octets[:, :12] == _NAT64_PREFIX).all(axis=1))
    six_to_four = (octets[:, :2] == _6TO4_PREFIX).all(axis=1)
    carrier = trailing_v4 | six_to_four
    first_octet = np.where(six_to_four, 2, 12)[carrier]
    v4_octets = octets[carrier][np.arange(len(first_octet))[:, None],
                                first_octet[:, None] + np.arange(4)].astype(np.uint32)
    v4 = (v4_octets[:, 0] << 24) | (v4_octets[:, 1] << 16) | (v4_octets[:, 2] << 8) \
        | v4_octets[:, 3]
    return v6_rows[carrier], v4


def unwrap_embedded_ipv4(parsed: ParsedAddresses) -> ParsedAddresses:
    """The same rows, with IPv4-mapped, NAT64 and 6to4 addresses replaced by the IPv4
    address they carry: the host that matters when judging or filtering them."""
    rows, embedded = _embedded_ipv4(parsed)
    family, v4, v6 = parsed.family.copy(), parsed.v4.copy(), parsed.v6.copy()
    family[rows], v4[rows], v6[rows] = FAMILY_V4, embedded, b""
    return ParsedAddresses(_frozen(family), _frozen(v4), _frozen(v6))


def non_global_mask(parsed: ParsedAddresses) -> np.ndarray:
    """Per row: is the address NOT globally reachable (must never be exported)?

    Uses `NON_GLOBAL_RANGES` minus `GLOBAL_EXCEPTIONS`; IPv4-mapped, NAT64 and 6to4
    addresses are judged by their embedded IPv4 address (6to4 of a public IPv4 is
    global, of a private one is not). Invalid rows are False: they are rejected as invalid,
    not as non-global.

    Deliberate differences from `ipaddress.ip_address(x).is_global` (Python 3.11-3.13):
    multicast (224/4, ff00::/8) and everything outside 2000::/3 (fec0::/10, 5f00::/16,
    4000::/2...) are non-global here, as are the whole 192.0.0.0/24 except .9 and .10 and
    3fff::/20 (IANA registry / RFC 9637); the IANA global blocks inside 2001::/23
    (2001:1::1-3, 2001:3::/32, 2001:4:112::/48, 2001:20::/28, 2001:30::/28) are global
    here; NAT64 and 6to4 follow their embedded IPv4 address. Each is listed in
    tests/test_ip_addresses.py with its reason.
    """
    return _direct_non_global(unwrap_embedded_ipv4(parsed))
