"""IP addresses: strict vectorized parsing, user filter patterns, and what counts as global.

Addresses live in numpy arrays so a batch of a million is classified without a Python loop
per row: IPv4 as `uint32`, IPv6 as 16-byte big-endian `S16` values (fixed-width bytes
compare lexicographically, which for big-endian integers is numeric order). Text is parsed
by Arrow kernels (RE2 validation, splits, casts) and NumPy, never per row in Python. Address
sets (user filters, the non-global table) are sorted, merged intervals searched with
`np.searchsorted`, behind a table of /20 blocks that settles most addresses with one lookup.

Filter entries (`export.ip_filters`) are either ADS filter *names*, resolved elsewhere
through the Flowmon REST API, or literal patterns parsed here; `is_filter_name` is the
one rule telling them apart.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import cache, cached_property

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
_IPV4_ADDRESS_RE2 = rf"(?:{_IPV4_OCTET_RE2}\.){{3}}{_IPV4_OCTET_RE2}"
_IPV4_RE2 = rf"^{_IPV4_ADDRESS_RE2}$"


def _ipv6_re2() -> str:
    """RFC 3986's IPv6address grammar, which is what inet_pton accepts: 8 groups of 1-4 hex
    digits, one '::' standing for at least one zero group, an optional dotted IPv4 tail."""
    h16 = "[0-9A-Fa-f]{1,4}"
    ls32 = rf"(?:{h16}:{h16}|{_IPV4_ADDRESS_RE2})"
    after_gap = [rf"(?:{h16}:){{{4 - before}}}{ls32}" for before in range(5)] + [h16, ""]
    forms = [rf"(?:{h16}:){{6}}{ls32}", rf"::(?:{h16}:){{5}}{ls32}"]
    forms += [rf"(?:(?:{h16}:){{0,{before}}}{h16})?::{tail}"
              for before, tail in enumerate(after_gap)]
    return "^(?:" + "|".join(forms) + ")$"


_IPV6_RE2 = _ipv6_re2()
_DECIMAL_VALUE = np.zeros(256, np.uint32)  # ASCII byte -> value of that decimal digit
_DECIMAL_VALUE[np.frombuffer(b"0123456789", np.uint8)] = np.arange(10)
_HEX_VALUE = np.zeros(256, np.uint8)  # ASCII byte -> value of that hex digit
_HEX_VALUE[np.frombuffer(b"0123456789abcdef", np.uint8)] = np.arange(16)
_HEX_VALUE[np.frombuffer(b"ABCDEF", np.uint8)] = np.arange(10, 16)
# Rows parsed per round: bounds the Arrow intermediates (lists of octets and groups) to a few
# MB whatever the batch size, and keeps them in cache.
_PARSE_CHUNK_ROWS = 1 << 16

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


# Blocks are the addresses sharing their first _BLOCK_BITS bits (a /20 in either family).
# A one-byte-per-block table says whether a block lies outside every interval, inside one,
# or is mixed; only addresses in mixed blocks need `_inside`'s binary search, whose
# unpredictable branches and cache misses dominate otherwise (about 70 ns per address
# against 10,000 intervals, a few ns for a table lookup).
_BLOCK_BITS = 20
_OUTSIDE, _INSIDE, _MIXED = 0, 1, 2


def _v4_block(values: np.ndarray) -> np.ndarray:
    return values >> np.uint32(32 - _BLOCK_BITS)


def _v6_block(values: np.ndarray) -> np.ndarray:
    first_words = np.ascontiguousarray(values).view(">u4")[::4]
    return first_words.astype(np.uint32) >> np.uint32(32 - _BLOCK_BITS)


def _v4_block_bounds(blocks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    first = blocks.astype(np.uint32) << np.uint32(32 - _BLOCK_BITS)
    return first, first | np.uint32((1 << (32 - _BLOCK_BITS)) - 1)


def _v6_block_bounds(blocks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    first = np.zeros((len(blocks), 4), ">u4")
    first[:, 0] = blocks.astype(np.uint32) << np.uint32(32 - _BLOCK_BITS)
    last = np.full((len(blocks), 4), 0xFFFFFFFF, ">u4")
    last[:, 0] = first[:, 0] | np.uint32((1 << (32 - _BLOCK_BITS)) - 1)
    return first.view(V6_DTYPE).ravel(), last.view(V6_DTYPE).ravel()


def _block_table(
    starts: np.ndarray,
    ends: np.ndarray,
    block: Callable[[np.ndarray], np.ndarray],
    block_bounds: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]],
) -> np.ndarray:
    """Per block: _OUTSIDE, _INSIDE or _MIXED for sorted, disjoint intervals."""
    table_size = 1 << _BLOCK_BITS
    first, last = block(starts).astype(np.intp), block(ends).astype(np.intp)
    spans = last > first + 1  # blocks strictly between an interval's ends are inside it
    depth = np.cumsum(np.bincount(first[spans] + 1, minlength=table_size + 1)
                      - np.bincount(last[spans], minlength=table_size + 1))
    table = np.where(depth[:table_size] > 0, _INSIDE, _OUTSIDE).astype(np.uint8)
    edges = np.unique(np.concatenate([first, last]))
    low, high = block_bounds(edges)
    candidate = np.searchsorted(starts, low, side="right") - 1
    whole = (candidate >= 0) & (ends[np.maximum(candidate, 0)] >= high)
    table[edges] = np.where(whole, _INSIDE, _MIXED)
    return _frozen(table)


def _inside_blocks(
    values: np.ndarray, starts: np.ndarray, ends: np.ndarray, table: np.ndarray,
    block: Callable[[np.ndarray], np.ndarray],
) -> np.ndarray:
    """`_inside`, answered by the block table where it can be."""
    state = table[block(values)]
    result = state == _INSIDE
    mixed = np.flatnonzero(state == _MIXED)
    result[mixed] = _inside(values[mixed], starts, ends)
    return result


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
    """One contiguous Arrow string array: the parsers read its buffers directly. A pandas
    Series backed by Arrow converts to a chunked array (e.g. after `pd.concat`)."""
    if not isinstance(values, pa.Array | pa.ChunkedArray):
        values = pa.array(values, type=pa.string(), from_pandas=True)
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    return values.cast(pa.string())


def _fixed_width_bytes(text: pa.Array, width: int) -> np.ndarray:
    """(rows, width) uint8 view of strings that all have exactly `width` bytes."""
    fixed = pc.cast(text, pa.binary(width))
    return np.frombuffer(fixed.buffers()[1], np.uint8, len(fixed) * width,
                         fixed.offset * width).reshape(-1, width)


def _ipv4_values(text: pa.Array) -> np.ndarray:
    """uint32 values of strings already validated as dotted quads.

    Read straight from the Arrow buffers: the three dots of each string (in order, as the
    strings lie back to back), then the 1-3 digits before each dot and before the end.
    Twice as fast as splitting the strings and casting the parts.
    """
    count = len(text)
    ends = np.frombuffer(text.buffers()[1], np.int32, count + 1, text.offset * 4)
    data = np.frombuffer(text.buffers()[2], np.uint8)
    dots = np.flatnonzero(data[ends[0]:ends[-1]] == ord(".")).reshape(count, 3) + ends[0]
    last = np.empty((count, 4), dtype=np.intp)  # the last digit of each octet
    last[:, :3] = dots - 1
    last[:, 3] = ends[1:] - 1
    digits = np.empty((count, 4), dtype=np.intp)  # how many digits each octet has
    digits[:, 0] = dots[:, 0] - ends[:-1]
    digits[:, 1:3] = np.diff(dots, axis=1) - 1
    digits[:, 3] = ends[1:] - dots[:, 2] - 1
    octets = _DECIMAL_VALUE[data[last]]
    octets += _DECIMAL_VALUE[data[last - 1]] * 10 * (digits >= 2)
    octets += _DECIMAL_VALUE[data[last - 2]] * 100 * (digits >= 3)
    return (octets[:, 0] << 24) | (octets[:, 1] << 16) | (octets[:, 2] << 8) | octets[:, 3]


def _ipv6_values(text: pa.Array) -> np.ndarray:
    """S16 values of strings already validated by `_IPV6_RE2`.

    A dotted IPv4 tail is parsed as IPv4 and stands in as "0:0" meanwhile. Each side of the
    '::' is split into groups: left groups take positions 0, 1, ..., right groups end at
    position 7, and what lies between stays zero. An empty side ("::1", "1::") yields one
    empty group, which reads as 0 at position 0 or 7: harmless, '::' covers it.
    """
    words = np.zeros((len(text), 8), np.uint16)
    dotted = pc.match_substring(text, ".")
    dotted_rows = np.flatnonzero(dotted.to_numpy(zero_copy_only=False))
    if len(dotted_rows):
        dotted_text = text.filter(dotted)
        tails = _ipv4_values(pc.replace_substring_regex(dotted_text, "^.*:", ""))
        heads = pc.replace_substring_regex(dotted_text, r"[0-9.]+$", "0:0")
        text = pc.replace_with_mask(text, dotted, heads)
    sides = pc.split_pattern(text, "::", max_splits=1)
    side_row = pc.list_parent_indices(sides).to_numpy()
    is_right_side = np.arange(len(side_row)) > sides.offsets.to_numpy()[side_row]
    groups = pc.split_pattern(pc.list_flatten(sides), ":")
    group_side = pc.list_parent_indices(groups).to_numpy()
    position = np.arange(len(group_side)) - groups.offsets.to_numpy()[group_side]
    side_group_count = pc.list_value_length(groups).to_numpy()
    position += np.where(is_right_side, 8 - side_group_count, 0)[group_side]
    digits = _HEX_VALUE[_fixed_width_bytes(
        pc.ascii_lpad(pc.list_flatten(groups), 4, "0"), 4)].astype(np.uint16)
    words[side_row[group_side], position] = (
        (digits[:, 0] << 12) | (digits[:, 1] << 8) | (digits[:, 2] << 4) | digits[:, 3])
    if len(dotted_rows):
        words[dotted_rows, 6], words[dotted_rows, 7] = tails >> 16, tails & 0xFFFF
    return words.astype(">u2").view(V6_DTYPE).ravel()


def _parse_chunk(text: pa.Array, family: np.ndarray, v4: np.ndarray, v6: np.ndarray) -> None:
    """Parse one chunk of strings into its rows of the output arrays (views)."""
    is_v4 = pc.fill_null(pc.match_substring_regex(text, _IPV4_RE2), False)
    is_v4_rows = is_v4.to_numpy(zero_copy_only=False)
    if is_v4_rows.any():
        v4[is_v4_rows] = _ipv4_values(text.filter(is_v4))
        family[is_v4_rows] = FAMILY_V4
    others = text.filter(pc.invert(is_v4))
    is_v6 = pc.fill_null(pc.match_substring_regex(others, _IPV6_RE2), False)
    v6_rows = np.flatnonzero(~is_v4_rows)[is_v6.to_numpy(zero_copy_only=False)]
    if len(v6_rows):
        v6[v6_rows] = _ipv6_values(others.filter(is_v6))
        family[v6_rows] = FAMILY_V6


def parse_addresses(values: AddressValues) -> ParsedAddresses:
    """Parse address strings strictly; anything else (NA included) gets family 0.

    IPv4: exactly four decimal octets 0-255, no leading zeros ("010.1.1.1" is ambiguous:
    octal to some tools), no spaces. IPv6: what inet_pton accepts (RFC 3986's grammar), any
    case, with or without a dotted IPv4 tail. Zone ids ("fe80::1%eth0") are rejected: they
    are not addresses outside one host. Validation is RE2, conversion Arrow splits and casts
    plus NumPy, `_PARSE_CHUNK_ROWS` rows at a time.
    """
    text = _as_arrow_strings(values)
    count = len(text)
    family = np.zeros(count, dtype=np.int8)
    v4 = np.zeros(count, dtype=np.uint32)
    v6 = np.zeros(count, dtype=V6_DTYPE)
    for start in range(0, count, _PARSE_CHUNK_ROWS):
        rows = slice(start, min(start + _PARSE_CHUNK_ROWS, count))
        _parse_chunk(text.slice(start, _PARSE_CHUNK_ROWS), family[rows], v4[rows], v6[rows])
    return ParsedAddresses(_frozen(family), _frozen(v4), _frozen(v6))


def factorize_addresses(parsed: ParsedAddresses) -> tuple[np.ndarray, ParsedAddresses]:
    """(codes, distinct), like `pd.factorize`: rows holding the same address, however it
    was spelled, share a code into `distinct` (IPv4 first, then IPv6); invalid rows get -1.

    Works on the integers, not the text, and then only the distinct addresses need judging
    or writing out. Codes are int32, half the memory of intp (a batch has far fewer than
    2**31 rows): this step is the peak of a batch's memory.
    """
    codes = np.full(len(parsed), -1, dtype=np.int32)
    v4_distinct = _factorize_v4(parsed, codes)
    v6_distinct = _factorize_v6(parsed, codes, len(v4_distinct))
    v4_count, total = len(v4_distinct), len(v4_distinct) + len(v6_distinct)
    family = np.full(total, FAMILY_V6, dtype=np.int8)
    family[:v4_count] = FAMILY_V4
    v4 = np.zeros(total, dtype=np.uint32)
    v4[:v4_count] = v4_distinct
    v6 = np.zeros(total, dtype=V6_DTYPE)
    v6[v4_count:] = v6_distinct
    return codes, ParsedAddresses(_frozen(family), _frozen(v4), _frozen(v6))


# Rows are deduplicated in this many parts (by the low bits of their value), which keeps the
# temporaries (sort keys, hash tables) to a fraction of the batch.
_FACTORIZE_PARTS = 4


def _rows_in_parts(low_bytes: np.ndarray, in_family: np.ndarray) -> Iterator[np.ndarray]:
    """Row numbers of a family's rows, part by part: equal values fall in the same part."""
    part = low_bytes & np.uint8(_FACTORIZE_PARTS - 1)
    part[~in_family] = _FACTORIZE_PARTS
    for number in range(_FACTORIZE_PARTS):
        yield np.flatnonzero(part == number)


def _factorize_v4(parsed: ParsedAddresses, codes: np.ndarray) -> np.ndarray:
    """Set the codes of the IPv4 rows (from 0 on); returns the distinct values in code order.

    A value and its row's number fit in one uint64, so a part is one in-place (SIMD) sort,
    after which equal values are neighbours: about 3x faster than hashing with
    `pd.factorize`, whose table costs 34 bytes per row.
    """
    distinct: list[np.ndarray] = []
    first_code = 0
    for rows in _rows_in_parts(parsed.v4.astype(np.uint8), parsed.family == FAMILY_V4):
        keys = parsed.v4[rows].astype(np.uint64) << np.uint64(32)
        keys |= np.arange(len(rows), dtype=np.uint64)
        keys.sort()
        values = (keys >> np.uint64(32)).astype(np.uint32)
        is_new = np.ones(len(values), dtype=bool)
        np.not_equal(values[1:], values[:-1], out=is_new[1:])
        keys &= np.uint64(0xFFFFFFFF)
        codes[rows[keys.astype(np.intp)]] = np.cumsum(is_new, dtype=np.int32) + (first_code - 1)
        distinct.append(values[is_new])
        first_code += len(distinct[-1])
    return np.concatenate(distinct)


def _factorize_v6(parsed: ParsedAddresses, codes: np.ndarray, first_code: int) -> np.ndarray:
    """Set the codes of the IPv6 rows (from `first_code` on); returns the distinct values in
    code order. 16 bytes and a row number do not fit a machine word: Arrow hashes them."""
    distinct: list[np.ndarray] = []
    last_bytes = np.ascontiguousarray(parsed.v6).view(np.uint8)[V6_DTYPE.itemsize - 1::16]
    for rows in _rows_in_parts(last_bytes, parsed.family == FAMILY_V6):
        values = np.ascontiguousarray(parsed.v6[rows])
        encoded = pc.dictionary_encode(pa.FixedSizeBinaryArray.from_buffers(
            pa.binary(16), len(rows), [None, pa.py_buffer(values)]))
        codes[rows] = encoded.indices.to_numpy() + first_code
        distinct.append(np.frombuffer(encoded.dictionary.buffers()[1], V6_DTYPE,
                                      len(encoded.dictionary)))
        first_code += len(distinct[-1])
    return np.concatenate(distinct)


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
        result = self._contains_v4(parsed.v4) & (parsed.family == FAMILY_V4)
        v6_rows = np.flatnonzero(parsed.family == FAMILY_V6)
        result[v6_rows] = self._contains_v6(parsed.v6[v6_rows])
        return result

    def covers(self, parsed: ParsedAddresses) -> np.ndarray:
        """`contains`, and also true for the IPv6 forms that carry an IPv4 address of the
        set (::ffff:a.b.c.d, NAT64, 6to4): a user's "8.8.8.0/24" means those hosts."""
        result = self.contains(parsed)
        rows, embedded = _embedded_ipv4(parsed)
        result[rows] |= self._contains_v4(embedded)
        return result

    @cached_property
    def _v4_blocks(self) -> np.ndarray:
        return _block_table(self.v4_starts, self.v4_ends, _v4_block, _v4_block_bounds)

    @cached_property
    def _v6_blocks(self) -> np.ndarray:
        return _block_table(self.v6_starts, self.v6_ends, _v6_block, _v6_block_bounds)

    def _contains_v4(self, values: np.ndarray) -> np.ndarray:
        if len(self.v4_starts) == 0 or len(values) == 0:
            return np.zeros(len(values), dtype=bool)
        return _inside_blocks(values, self.v4_starts, self.v4_ends, self._v4_blocks, _v4_block)

    def _contains_v6(self, values: np.ndarray) -> np.ndarray:
        if len(self.v6_starts) == 0 or len(values) == 0:
            return np.zeros(len(values), dtype=bool)
        return _inside_blocks(values, self.v6_starts, self.v6_ends, self._v6_blocks, _v6_block)

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

# The first three 32-bit words of the IPv6 forms whose last word is an IPv4 address, and the
# first 16 bits of 6to4 (see `_embedded_ipv4`).
_IPV4_MAPPED_WORDS = np.frombuffer(ipaddress.IPv6Address("::ffff:0:0").packed[:12], ">u4")
_NAT64_WORDS = np.frombuffer(ipaddress.IPv6Address("64:ff9b::").packed[:12], ">u4")
_6TO4_PREFIX = int.from_bytes(ipaddress.IPv6Address("2002::").packed[:2], "big")


@cache
def _special_purpose_ranges() -> tuple[AddressRanges, AddressRanges]:
    return (AddressRanges.from_patterns(cidr for _, cidr in NON_GLOBAL_RANGES),
            AddressRanges.from_patterns(cidr for _, cidr in GLOBAL_EXCEPTIONS))


def _embedded_ipv4(parsed: ParsedAddresses) -> tuple[np.ndarray, np.ndarray]:
    """(rows, IPv4 values) of IPv6 addresses that carry an IPv4 address: IPv4-mapped
    (::ffff:a.b.c.d), NAT64 (64:ff9b::a.b.c.d) and 6to4 (2002:AABB:CCDD::/48)."""
    v6_rows = np.flatnonzero(parsed.family == FAMILY_V6)
    words = np.ascontiguousarray(parsed.v6[v6_rows]).view(">u4").reshape(-1, 4)
    words = words.astype(np.uint32)
    six_to_four = (words[:, 0] >> 16) == _6TO4_PREFIX
    carrier = ((words[:, :3] == _IPV4_MAPPED_WORDS).all(axis=1)
               | (words[:, :3] == _NAT64_WORDS).all(axis=1) | six_to_four)
    embedded = np.where(six_to_four, (words[:, 0] << 16) | (words[:, 1] >> 16), words[:, 3])
    return v6_rows[carrier], embedded[carrier]


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
    non_global, exceptions = _special_purpose_ranges()
    mask = non_global.contains(parsed) & ~exceptions.contains(parsed)
    rows, embedded = _embedded_ipv4(parsed)
    mask[rows] = non_global._contains_v4(embedded) & ~exceptions._contains_v4(embedded)
    return mask
