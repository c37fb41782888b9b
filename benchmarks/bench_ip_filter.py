"""IP filter + dedup (issue #6, benchmark 1): one export batch's addresses, against the
obvious stdlib loop.

Timed (`filter_batch`): the address part of `select_indicators`, through the same public
functions: `parse_addresses` (Arrow / NumPy, no per-row Python), `factorize_addresses`
(integer dedup), `non_global_mask` and `AddressRanges.covers` (sorted intervals behind a
block table) on the distinct addresses. Not timed: `select_indicators`' per-row DataFrame
work (the per-event dedup of (source, detection, type, value) rows and the kept table) and
the canonical text, which only `select_indicators`' output needs.

Data (seeded, built vectorized, outside the timing): 80 % IPv4 / 20 % IPv6 strings (IPv6
compressed or full, some groups uppercase, some IPv4-mapped), about 30 % non-global (RFC
1918, loopback, CGNAT, link local, multicast, documentation, ULA, ...), 20 % duplicate rows
(a tenth of them re-spelled in uppercase) and 1 % invalid strings. User filters: 0 / 100 /
10,000 global CIDRs (80 % IPv4 /8-/32, 20 % IPv6 /32-/128), as strings through
`resolve_ip_filters`, the export's entry point.

Baseline: `ipaddress.ip_address(s)`, `.is_global`, `any(ip in net for net in networks)`
and a set, on a slice of the same batch, scaled per address; the kept sets must agree
except for the differences tests/test_ip_addresses.py documents (`DELIBERATE_DIFFERENCES`).

One core: Arrow runs with one CPU and one I/O thread (restored afterwards); the NumPy and
pandas operations used here are single-threaded anyway. Memory is the peak on top of the
input (tracemalloc for NumPy and pandas, a fresh Arrow pool for Arrow), divided by the
input's Arrow buffers (offsets + UTF-8 data).
"""

from __future__ import annotations

import ipaddress
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from benchmarks import harness
from benchmarks.harness import Figure, median_seconds, peak_bytes, size_label
from misp_ndr.config import FlowmonSettings
from tasks.ip_addresses import (
    FAMILY_V4,
    FAMILY_V6,
    AddressRanges,
    ParsedAddresses,
    factorize_addresses,
    non_global_mask,
    parse_addresses,
)
from tasks.user_ip_filters import resolve_ip_filters
from tests.test_ip_addresses import DIFFERENCE_NETWORKS

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

NAME = "ip_filter"
CIDR_COUNTS = (0, 100, 10_000)
TARGET_SIZE, TARGET_CIDRS = 1_000_000, 10_000
TARGET_SECONDS, TARGET_SPEEDUP, TARGET_MEMORY = 0.5, 2000.0, 3.0

# Share of the rows per kind before duplication; IPv6 is 20 % of the valid ones.
V4_GLOBAL, V4_NON_GLOBAL, V6_GLOBAL, V6_NON_GLOBAL, INVALID = 0.55, 0.24, 0.14, 0.06, 0.01
DUPLICATE_SHARE = 0.20
V6_PROVIDERS = 4096  # /32 prefixes the global IPv6 addresses (and filters) are drawn from

# Whole /8s of global unicast IPv4 (no special-purpose block inside).
_GLOBAL_FIRST_OCTETS = np.array(
    [octet for octet in range(1, 224)
     if octet not in (10, 100, 127, 169, 172, 192, 198, 203)], np.uint32)
# (network, prefix length, share) of the non-global IPv4 rows: mostly big private blocks,
# so few of them repeat by chance (the duplicates are made on purpose, DUPLICATE_SHARE).
_NON_GLOBAL_V4 = [("10.0.0.0", 8, 0.45), ("172.16.0.0", 12, 0.2), ("192.168.0.0", 16, 0.1),
                  ("100.64.0.0", 10, 0.1), ("127.0.0.0", 8, 0.03), ("169.254.0.0", 16, 0.03),
                  ("224.0.0.0", 4, 0.05), ("240.0.0.0", 4, 0.01), ("198.18.0.0", 15, 0.01),
                  ("0.0.0.0", 8, 0.01), ("192.0.2.0", 24, 0.004), ("198.51.100.0", 24, 0.003),
                  ("203.0.113.0", 24, 0.003)]
_INVALID_FORMS = ["{a}.{b}.{c}.{big}", "{a}.{b}.{c}", "0{a}.{b}.{c}.{d}", "{a}.{b}.{c}.{d}:80",
                  "2001:db8::{a}g", "{a}:{b}::{c}::1", "host{a}.example", ""]

_HEX_LOWER = pa.array([f"{value:x}" for value in range(1 << 16)])
_HEX_UPPER = pa.array([f"{value:X}" for value in range(1 << 16)])


def _dotted(values: np.ndarray) -> pa.Array:
    octets = [pa.array(((values >> shift) & 255).astype(np.uint8)).cast(pa.string())
              for shift in (24, 16, 8, 0)]
    return pc.binary_join_element_wise(*octets, ".")


def _v4_global(rng: np.random.Generator, count: int) -> np.ndarray:
    first = rng.choice(_GLOBAL_FIRST_OCTETS, count)
    return (first << 24) | rng.integers(0, 1 << 24, count, dtype=np.uint32)


def _v4_non_global(rng: np.random.Generator, count: int) -> np.ndarray:
    shares = np.array([share for _, _, share in _NON_GLOBAL_V4])
    blocks = rng.choice(len(_NON_GLOBAL_V4), count, p=shares / shares.sum())
    bases = np.array([_ipv4_int(network) for network, _, _ in _NON_GLOBAL_V4], np.uint32)[blocks]
    host_bits = np.array([32 - length for _, length, _ in _NON_GLOBAL_V4], np.uint64)[blocks]
    hosts = rng.integers(0, 1 << 32, count, dtype=np.uint64) & ((np.uint64(1) << host_bits) - 1)
    return bases | hosts.astype(np.uint32)


def _ipv4_int(text: str) -> int:
    a, b, c, d = (int(part) for part in text.split("."))
    return (a << 24) | (b << 16) | (c << 8) | d


def _hex_groups(rng: np.random.Generator, groups: np.ndarray,
                upper_share: float) -> list[pa.Array]:
    """Hex text of each column of `groups` (rows x k), a share of the groups uppercase."""
    columns = []
    for column in groups.T:
        indices = pa.array(column.astype(np.uint16))
        upper = pa.array(rng.random(len(column)) < upper_share)
        columns.append(pc.if_else(upper, _HEX_UPPER.take(indices), _HEX_LOWER.take(indices)))
    return columns


def _providers() -> np.ndarray:
    """The first two groups of every global IPv6 address: a fixed set of /32s."""
    rng = np.random.default_rng([harness.SEED, 6])
    return np.stack([rng.integers(0x2400, 0x3000, V6_PROVIDERS),
                     rng.integers(0, 1 << 16, V6_PROVIDERS)], axis=1)


def _v6_global(rng: np.random.Generator, count: int) -> pa.Array:
    """Compressed text: half 'p:p:x:x::x', half all eight groups; 10 % IPv4-mapped."""
    groups = rng.integers(1, 1 << 16, (count, 8))
    groups[:, :2] = _providers()[rng.integers(0, V6_PROVIDERS, count)]
    text = _hex_groups(rng, groups, upper_share=0.1)
    short = pc.binary_join_element_wise(
        pc.binary_join_element_wise(*text[:4], ":"), text[7], "::")
    full = pc.binary_join_element_wise(*text, ":")
    compressed = pc.if_else(pa.array(rng.random(count) < 0.5), short, full)
    mapped = pc.binary_join_element_wise("::ffff", _dotted(_v4_global(rng, count)), ":")
    return pc.if_else(pa.array(rng.random(count) < 0.1), mapped, compressed)


def _v6_non_global(rng: np.random.Generator, count: int) -> pa.Array:
    """Link local, unique local, multicast, documentation, loopback, mapped private."""
    groups = _hex_groups(rng, rng.integers(1, 1 << 16, (count, 4)), upper_share=0.1)
    tail = pc.binary_join_element_wise(*groups, ":")
    ula = pc.binary_join_element_wise(_HEX_LOWER.take(
        pa.array(rng.integers(0xfc00, 0xfe00, count).astype(np.uint16))), tail, "::")
    forms = [pc.binary_join_element_wise("fe80:", tail, ":"), ula,
             pc.binary_join_element_wise("ff02:", groups[3], ":"),
             pc.binary_join_element_wise("2001:db8:", tail, ":"),
             pa.array(["::1"] * count),
             pc.binary_join_element_wise("::ffff", _dotted(_v4_non_global(rng, count)), ":")]
    choice = rng.choice(len(forms), count, p=[0.32, 0.32, 0.1, 0.1, 0.01, 0.15])
    return pc.choose(pa.array(choice.astype(np.int8)), *forms)


def _invalid(rng: np.random.Generator, count: int) -> pa.Array:
    numbers = {name: pa.array(rng.integers(1, 256, count)).cast(pa.string())
               for name in "abcd"}
    numbers["big"] = pa.array(rng.integers(256, 1000, count)).cast(pa.string())
    forms = []
    for form in _INVALID_FORMS:
        pieces = form.replace("}", "{").split("{")  # literal, name, literal, name, ...
        parts = [numbers[piece] if index % 2 else piece for index, piece in enumerate(pieces)]
        forms.append(pc.binary_join_element_wise(*parts, "") if len(parts) > 1
                     else pa.array(parts * count))
    return pc.choose(pa.array(rng.integers(0, len(forms), count).astype(np.int8)), *forms)


def synthetic_addresses(count: int, seed: int = harness.SEED) -> pa.StringArray:
    """`count` address strings; 20 % repeat an earlier row (a share of them re-spelled in
    uppercase, the same IPv6 address in another spelling)."""
    rng = np.random.default_rng(seed)
    distinct = count - int(count * DUPLICATE_SHARE)
    shares = np.array([V4_GLOBAL, V4_NON_GLOBAL, V6_GLOBAL, V6_NON_GLOBAL, INVALID])
    counts = rng.multinomial(distinct, shares / shares.sum())
    parts = [_dotted(_v4_global(rng, counts[0])), _dotted(_v4_non_global(rng, counts[1])),
             _v6_global(rng, counts[2]), _v6_non_global(rng, counts[3]),
             _invalid(rng, counts[4])]
    unique = pa.concat_arrays([part.cast(pa.string()) for part in parts])
    repeats = unique.take(pa.array(rng.integers(0, distinct, count - distinct)))
    repeats = pc.if_else(pa.array(rng.random(len(repeats)) < 0.1), pc.ascii_upper(repeats),
                         repeats)
    rows = pa.concat_arrays([unique, repeats])
    return rows.take(pa.array(rng.permutation(count)))


def synthetic_cidrs(count: int, seed: int = harness.SEED) -> list[str]:
    """`count` global CIDRs, 80 % IPv4 (/8-/32, mostly long), 20 % IPv6 (/32-/128 inside
    the providers' /32s, mostly short): 10k of them filter about 12 % of the rows."""
    rng = np.random.default_rng([seed, count])
    v4_count = int(count * 0.8)
    v6_count = count - v4_count
    v4_lengths = _weighted_lengths(rng, v4_count, 8, 32, growth=2 ** 0.25)
    v4_masks = ((1 << 32) - (1 << (32 - v4_lengths.astype(np.int64)))).astype(np.uint32)
    v4 = pc.binary_join_element_wise(
        _dotted(_v4_global(rng, v4_count) & v4_masks),
        pa.array(v4_lengths).cast(pa.string()), "/")
    v6_lengths = _weighted_lengths(rng, v6_count, 32, 128, growth=2 ** -0.25)
    groups = rng.integers(0, 1 << 16, (v6_count, 8))
    groups[:, :2] = _providers()[rng.integers(0, V6_PROVIDERS, v6_count)]
    kept_bits = np.clip(v6_lengths[:, None] - 16 * np.arange(8)[None, :], 0, 16)
    groups &= ((1 << 16) - (1 << (16 - kept_bits))).astype(groups.dtype)
    v6 = pc.binary_join_element_wise(
        pc.binary_join_element_wise(*_hex_groups(rng, groups, 0.0), ":"),
        pa.array(v6_lengths).cast(pa.string()), "/")
    return pa.concat_arrays([v4, v6]).to_pylist()


def _weighted_lengths(rng: np.random.Generator, count: int, low: int, high: int,
                      growth: float) -> np.ndarray:
    lengths = np.arange(low, high + 1)
    weights = growth ** (lengths - low)
    return rng.choice(lengths, count, p=weights / weights.sum())


# --- what is timed ----------------------------------------------------------------------------


def filter_batch(text: pa.Array, user_ranges: AddressRanges) -> tuple[ParsedAddresses, np.ndarray]:
    """The distinct valid addresses of a batch, and which of them may be exported."""
    _, distinct = factorize_addresses(parse_addresses(text))
    return distinct, ~(non_global_mask(distinct) | user_ranges.covers(distinct))


def user_filters(cidrs: list[str]) -> AddressRanges:
    """The filters as the export builds them. Only ADS filter names would read the cache
    file or ask Flowmon; these are all literals."""
    cache = Path(tempfile.gettempdir()) / "bench-ip-filter-ads-cache.json"
    return resolve_ip_filters(cidrs, FlowmonSettings(), cache)


def kept_addresses(distinct: ParsedAddresses, kept: np.ndarray) -> set[Address]:
    """`filter_batch`'s kept addresses as stdlib objects, to compare with the baseline."""
    v4 = kept & (distinct.family == FAMILY_V4)
    v6 = kept & (distinct.family == FAMILY_V6)
    return ({ipaddress.IPv4Address(int(value)) for value in distinct.v4[v4]}
            | {ipaddress.IPv6Address(bytes(value).ljust(16, b"\0")) for value in distinct.v6[v6]})


def stdlib_baseline(texts: list[str | None], networks: list[Network]) -> set[Address]:
    """The obvious per-address loop."""
    kept: set[Address] = set()
    for text in texts:
        try:
            address = ipaddress.ip_address(text)
        except ValueError:
            continue
        if address.is_global and not any(address in network for network in networks):
            kept.add(address)
    return kept


def _documented_difference(address: Address) -> bool:
    return any(address in network for network in DIFFERENCE_NETWORKS
               if network.version == address.version)


@contextmanager
def _one_core() -> Iterator[None]:
    cpus, io_threads = pa.cpu_count(), pa.io_thread_count()
    pa.set_cpu_count(1)
    pa.set_io_thread_count(1)
    try:
        yield
    finally:
        pa.set_cpu_count(cpus)
        pa.set_io_thread_count(io_threads)


def _memory_figure(text: pa.Array, user_ranges: AddressRanges) -> Figure:
    """Peak extra memory of `filter_batch` over the input's Arrow buffers."""
    peak, _ = peak_bytes(partial(filter_batch, text, user_ranges))
    ratio = peak / text.nbytes
    is_target = len(text) == TARGET_SIZE
    return Figure(NAME, f"peak memory / input strings, {size_label(len(text))} x "
                        f"{TARGET_CIDRS} CIDRs", ratio, "x",
                  f"<= {TARGET_MEMORY:g}x" if is_target else "",
                  ratio <= TARGET_MEMORY if is_target else None)


# --- figures ----------------------------------------------------------------------------------


def run(quick: bool) -> list[Figure]:
    sizes = {10_000: 2} if quick else {100_000: 5, 1_000_000: 5, 5_000_000: 3}
    slices = (dict.fromkeys(CIDR_COUNTS, 200) if quick
              else {0: 20_000, 100: 20_000, 10_000: 2_000})
    compared_size = min(sizes) if quick else TARGET_SIZE  # the batch the stdlib loop slices
    cidrs = {count: synthetic_cidrs(count) for count in CIDR_COUNTS}
    figures: list[Figure] = []
    with _one_core():
        ranges = {}
        for count in CIDR_COUNTS:
            seconds, ranges[count] = median_seconds(partial(user_filters, cidrs[count]), 3)
            figures.append(Figure(NAME, f"resolve_ip_filters, {count} CIDRs (once per run)",
                                  seconds, "s"))
        for size, runs in sizes.items():
            text = synthetic_addresses(size)
            if size == compared_size:
                figures += _mix_figures(text, ranges[TARGET_CIDRS])
            seconds = {count: _wall_and_cpu_seconds(partial(filter_batch, text, ranges[count]),
                                                    runs) for count in CIDR_COUNTS}
            figures += _timing_figures(size, seconds)
            if size == compared_size:
                per_million = {count: wall / size * 1e6 for count, (wall, _) in seconds.items()}
                figures += _baseline_figures(text, cidrs, ranges, slices, per_million)
            figures.append(_memory_figure(text, ranges[TARGET_CIDRS]))
    return figures


def _wall_and_cpu_seconds(action: Callable[[], object], runs: int) -> tuple[float, float]:
    """Median wall time (the harness's) and median CPU time of the same runs: on a shared
    machine the CPU time shows the linear growth that waiting for a core can hide."""
    cpu_seconds = []

    def measured() -> None:
        start = time.process_time()
        action()
        cpu_seconds.append(time.process_time() - start)

    wall, _ = median_seconds(measured, runs)
    return wall, statistics.median(cpu_seconds)


def _timing_figures(size: int, seconds: dict[int, tuple[float, float]]) -> list[Figure]:
    figures = []
    for count, (wall, cpu) in seconds.items():
        case = f"{size_label(size)} addresses x {count} CIDRs"
        is_target = (size, count) == (TARGET_SIZE, TARGET_CIDRS)
        figures += [Figure(NAME, case, wall, "s", f"< {TARGET_SECONDS:g} s" if is_target else "",
                           wall < TARGET_SECONDS if is_target else None),
                    Figure(NAME, f"{case}, per million", wall / size * 1e6, "s/M"),
                    Figure(NAME, f"{case}, CPU per million", cpu / size * 1e6, "s/M")]
    return figures


def _baseline_figures(text: pa.Array, cidrs: dict[int, list[str]],
                      ranges: dict[int, AddressRanges], slices: dict[int, int],
                      per_million: dict[int, float]) -> list[Figure]:
    """The stdlib loop on a slice of the batch, its speed per million, the product's speedup
    over it (at the batch size timed above) and whether both keep the same addresses."""
    figures = []
    for count in CIDR_COUNTS:
        sample = text.slice(0, slices[count])
        texts = sample.to_pylist()
        networks = [ipaddress.ip_network(cidr, strict=False) for cidr in cidrs[count]]
        seconds, expected = median_seconds(partial(stdlib_baseline, texts, networks), 3)
        baseline = seconds / len(texts) * 1e6
        figures.append(Figure(NAME, f"stdlib loop, {count} CIDRs ({len(texts):,} addresses)",
                              baseline, "s/M"))
        speedup = baseline / per_million[count]
        is_target = count == TARGET_CIDRS and len(text) == TARGET_SIZE
        figures.append(Figure(NAME, f"speedup over the stdlib loop, {count} CIDRs", speedup,
                              "x", f">= {TARGET_SPEEDUP:g}x" if is_target else "",
                              speedup >= TARGET_SPEEDUP if is_target else None))
        differing = kept_addresses(*filter_batch(sample, ranges[count])) ^ expected
        documented = sum(map(_documented_difference, differing))
        figures.append(Figure(NAME, f"kept-set mismatches vs stdlib, {count} CIDRs",
                              len(differing) - documented, "addresses", "= 0",
                              len(differing) == documented))
        figures.append(Figure(NAME, f"documented differences, {count} CIDRs (not counted)",
                              documented, "addresses"))
    return figures


def _mix_figures(text: pa.Array, user_ranges: AddressRanges) -> list[Figure]:
    """What the generated batch is made of, measured by the product (not timed)."""
    parsed = parse_addresses(text)
    _, distinct = factorize_addresses(parsed)
    non_global = non_global_mask(parsed)
    filtered = user_ranges.covers(parsed) & ~non_global
    shares = {"IPv6": (parsed.family == FAMILY_V6).mean(), "non-global": non_global.mean(),
              "invalid": (~parsed.valid).mean(),
              "an address of an earlier row": 1 - len(distinct) / parsed.valid.sum(),
              f"global, filtered by {TARGET_CIDRS} CIDRs": filtered.mean()}
    return [Figure(NAME, f"{size_label(len(text))} batch, rows {what}", 100 * share, "%")
            for what, share in shares.items()]
