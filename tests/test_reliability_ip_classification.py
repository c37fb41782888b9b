"""IP classification against the standard library, on addresses chosen to be awkward.

Random IPv4 and IPv6 addresses, biased into (and onto the edges of) every special-purpose
range the stdlib's `ipaddress` tables and IANA's registries list, in every spelling: IPv4-
mapped, IPv4-compatible, 6to4, Teredo, NAT64, zone ids, leading zeros, upper case,
compressed and expanded forms, dotted IPv4 tails. Three things are compared with `ipaddress`:
whether the text is an address at all, which address it is, and whether it is global (what
`non_global_mask` decides, and what `select_indicators` then lets leave the organisation).

The reference is `ipaddress` with each deliberate difference of `DELIBERATE_DIFFERENCES`
(tests/test_ip_addresses.py, where each is explained) applied, and one more for parsing:
zone ids ("fe80::1%eth0") are not addresses outside one host, so they are invalid here.
Any other disagreement fails: a non-global address kept is an *injected* item in the
reliability table (it would leave the organisation), a global one dropped is *lost*.
"""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tasks.indicators import select_indicators
from tasks.ip_addresses import (
    FAMILY_INVALID,
    FAMILY_V4,
    GLOBAL_EXCEPTIONS,
    NON_GLOBAL_RANGES,
    AddressRanges,
    non_global_mask,
    parse_addresses,
)
from tests.reliability import Recorder
from tests.test_ip_addresses import DELIBERATE_DIFFERENCES

JOB = "ip classification"
Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
BULK_SIZE = 200_000
# Derandomized: the same examples every run, so the generated reliability table (and CI)
# is stable; raise max_examples locally to explore further.
HYPOTHESIS_SETTINGS = settings(max_examples=150, deadline=None, database=None, derandomize=True,
                               suppress_health_check=[HealthCheck.too_slow])


def net(cidr: str) -> Network:
    return ipaddress.ip_network(cidr)


# --- the reference: ipaddress, with each deliberate difference applied ----------------------

MULTICAST_V4, IETF_V4 = net("224.0.0.0/4"), net("192.0.0.0/24")
IETF_V4_GLOBAL = {ipaddress.IPv4Address("192.0.0.9"), ipaddress.IPv4Address("192.0.0.10")}
GLOBAL_UNICAST, DOCUMENTATION_3FFF = net("2000::/3"), net("3fff::/20")
IANA_GLOBAL_IN_2001_23 = [net(cidr) for cidr in ("2001:1::1/128", "2001:1::2/128",
                                                  "2001:1::3/128", "2001:3::/32",
                                                  "2001:4:112::/48", "2001:20::/28",
                                                  "2001:30::/28")]
MAPPED, NAT64, SIX_TO_FOUR = net("::ffff:0:0/96"), net("64:ff9b::/96"), net("2002::/16")
# Which deliberate differences each rule of `expected_global` implements: kept equal to the
# list in tests/test_ip_addresses.py, so neither can change without the other.
RULES_FOR_DIFFERENCES = {
    "224.0.0.0/4": "multicast", "ff00::/8": "outside 2000::/3",
    "192.0.0.0/24": "IETF block", "::/3": "outside 2000::/3", "4000::/2": "outside 2000::/3",
    "8000::/1": "outside 2000::/3", "3fff::/20": "3fff::/20",
    **{str(network): "IANA global in 2001::/23" for network in IANA_GLOBAL_IN_2001_23},
    "2002::/16": "embedded", "64:ff9b::/96": "embedded", "::ffff:0:0/96": "embedded",
}


def embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv4-mapped, NAT64 or 6to4 address carries (not IPv4-compatible
    ::a.b.c.d, deprecated, nor Teredo, whose client address is obfuscated)."""
    if address in MAPPED or address in NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return address.sixtofour


def expected_global(address: Address) -> bool:
    if isinstance(address, ipaddress.IPv4Address):
        if address in MULTICAST_V4:
            return False
        if address in IETF_V4:
            return address in IETF_V4_GLOBAL
        return address.is_global
    carried = embedded_ipv4(address)
    if carried is not None:
        return expected_global(carried)
    if address not in GLOBAL_UNICAST or address in DOCUMENTATION_3FFF:
        return False
    if any(address in network for network in IANA_GLOBAL_IN_2001_23):
        return True
    return address.is_global


def reference_parse(text: str) -> Address | None:
    """ipaddress' reading of `text`, zone ids refused (the one parsing difference)."""
    if "%" in text:
        return None
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def test_the_reference_implements_exactly_the_listed_deliberate_differences() -> None:
    assert set(RULES_FOR_DIFFERENCES) == set(DELIBERATE_DIFFERENCES)


# --- addresses chosen to be awkward ---------------------------------------------------------


def stdlib_special_networks() -> list[Network]:
    """Every network the stdlib's tables know, whatever the Python version's names."""
    found: list[Network] = []
    for constants in (ipaddress._IPv4Constants, ipaddress._IPv6Constants):  # type: ignore[attr-defined]
        for name, value in vars(constants).items():
            if name.startswith("__"):
                continue
            values = value if isinstance(value, list | tuple) else [value]
            found += [item for item in values
                      if isinstance(item, ipaddress.IPv4Network | ipaddress.IPv6Network)]
    return found


SPECIAL_NETWORKS: list[Network] = sorted(
    {*stdlib_special_networks(),
     *(net(cidr) for _, cidr in NON_GLOBAL_RANGES + GLOBAL_EXCEPTIONS),
     *(net(cidr) for cidr in DELIBERATE_DIFFERENCES),
     net("100.64.0.0/10"), net("2001::/32"),  # CGNAT (special-cased by is_global), Teredo
     net("::/96"), net("64:ff9b:1::/48"), net("2000::/3")},
    key=lambda network: (network.version, network))


def in_network(rng: random.Random, network: Network) -> int:
    """An address inside `network` or just outside, edges much more often than chance."""
    first, last = int(network.network_address), int(network.broadcast_address)
    top = 2 ** network.max_prefixlen - 1
    value = rng.choice([first, last, first - 1, last + 1, first + 1, last - 1,
                        rng.randint(first, last), rng.randint(first, last)])
    return min(max(value, 0), top)


def as_address(version: int, value: int) -> Address:
    return ipaddress.IPv4Address(value) if version == 4 else ipaddress.IPv6Address(value)


def random_v4(rng: random.Random) -> ipaddress.IPv4Address:
    return ipaddress.IPv4Address(rng.getrandbits(32))


def carrier_forms(rng: random.Random, inner: ipaddress.IPv4Address) -> list[ipaddress.IPv6Address]:
    """The IPv6 forms that carry an IPv4 address: mapped, compatible, NAT64, 6to4, Teredo."""
    value = int(inner)
    return [
        ipaddress.IPv6Address((0xFFFF << 32) | value),
        ipaddress.IPv6Address(value),
        ipaddress.IPv6Address(int(ipaddress.IPv6Address("64:ff9b::")) | value),
        ipaddress.IPv6Address((0x2002 << 112) | (value << 80) | rng.getrandbits(80)),
        ipaddress.IPv6Address((0x20010000 << 96) | (value << 64) | rng.getrandbits(64)),
    ]


def interesting_address(rng: random.Random) -> Address:
    kind = rng.random()
    if kind < 0.55:
        network = rng.choice(SPECIAL_NETWORKS)
        return as_address(network.version, in_network(rng, network))
    if kind < 0.7:  # an IPv4 address in another form, the IPv4 often a special one
        inner = rng.choice([random_v4(rng), ipaddress.IPv4Address(in_network(
            rng, rng.choice([n for n in SPECIAL_NETWORKS if n.version == 4])))])
        return rng.choice(carrier_forms(rng, inner))
    if kind < 0.85:
        return random_v4(rng)
    return ipaddress.IPv6Address(rng.getrandbits(128) >> rng.choice([0, 0, 3, 16, 64, 100]))


def spellings(rng: random.Random, address: Address) -> str:
    """One of the many texts that name `address` (or, with a zone id, do not here)."""
    if isinstance(address, ipaddress.IPv4Address):
        return str(address)
    groups = address.exploded.split(":")
    choice = rng.randrange(7)
    if choice == 0:
        return address.exploded
    if choice == 1:
        return str(address).upper()
    if choice == 2:  # groups without their leading zeros, no '::'
        return ":".join(group.lstrip("0") or "0" for group in groups)
    if choice == 3:  # the last 32 bits as a dotted IPv4 tail
        tail = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        return ":".join(groups[:6]) + f":{tail}"
    if choice == 4:  # '::' over a random run of groups that happen to be zero, or none
        return compressed_anywhere(rng, groups)
    if choice == 5:
        return f"{address}%{rng.choice(['eth0', '1', 'en0'])}"
    return str(address)


def compressed_anywhere(rng: random.Random, groups: list[str]) -> str:
    zero_runs = [(start, end) for start in range(8) for end in range(start + 1, 9)
                 if all(int(group, 16) == 0 for group in groups[start:end])]
    if not zero_runs:
        return ":".join(groups)
    start, end = rng.choice(zero_runs)
    return ":".join(groups[:start]) + "::" + ":".join(groups[end:])


def mangled(rng: random.Random, text: str) -> str:
    """Near misses: a character added, removed or replaced; leading zeros; spaces."""
    position = rng.randrange(len(text) + 1)
    character = rng.choice("0:.fFg% 1")
    return rng.choice([
        text[:position] + character + text[position:],
        text[:position] + text[position + 1:],
        text[:position] + character + text[position + 1:],
        ".".join("0" + part for part in text.split(".")) if "." in text else text + ":",
        f" {text}", text.replace(":", "::", 1),
    ])


def awkward_texts(rng: random.Random, count: int) -> list[str]:
    texts = []
    for _ in range(count):
        text = spellings(rng, interesting_address(rng))
        texts.append(mangled(rng, text) if rng.random() < 0.15 else text)
    return texts


# --- comparing with the reference -----------------------------------------------------------


@dataclass
class Comparison:
    """Disagreements with the reference, by kind."""

    checked: int = 0
    valid: int = 0
    non_global_kept: list[str] = field(default_factory=list)  # injected
    global_dropped: list[str] = field(default_factory=list)  # lost
    parsed_not_an_address: list[str] = field(default_factory=list)  # injected
    refused_an_address: list[str] = field(default_factory=list)  # lost
    wrong_value: list[str] = field(default_factory=list)
    differs_from_plain_stdlib: int = 0  # where a deliberate difference decided

    def add(self, texts: list[str]) -> None:
        parsed = parse_addresses(texts)
        non_global = non_global_mask(parsed)
        for row, text in enumerate(texts):
            self.checked += 1
            reference = reference_parse(text)
            ours_valid = parsed.family[row] != FAMILY_INVALID
            if reference is None:
                if ours_valid:
                    self.parsed_not_an_address.append(text)
                continue
            if not ours_valid:
                self.refused_an_address.append(text)
                continue
            self.valid += 1
            value = (int(parsed.v4[row]) if parsed.family[row] == FAMILY_V4
                     else int.from_bytes(parsed.v6[row].ljust(16, b"\0"), "big"))
            if (reference.version, int(reference)) != (int(parsed.family[row]), value):
                self.wrong_value.append(text)
            wanted = expected_global(reference)
            self.differs_from_plain_stdlib += wanted != reference.is_global
            if wanted and non_global[row]:
                self.global_dropped.append(text)
            elif not wanted and not non_global[row]:
                self.non_global_kept.append(text)

    def add_counts(self, other: Comparison) -> None:
        """Another comparison's counts (its disagreements already asserted away)."""
        self.checked += other.checked
        self.valid += other.valid
        self.differs_from_plain_stdlib += other.differs_from_plain_stdlib

    def record(self, reliability: Recorder, what: str) -> None:
        reliability.record(JOB, f"{what}: address or not, and which",
                           checked=self.checked, injected=len(self.parsed_not_an_address),
                           lost=len(self.refused_an_address) + len(self.wrong_value))
        reliability.record(JOB, f"{what}: global or not", checked=self.valid,
                           injected=len(self.non_global_kept), lost=len(self.global_dropped))
        assert self.failures() == {}

    def failures(self) -> dict[str, list[str]]:
        kinds = {"non-global kept": self.non_global_kept,
                 "global dropped": self.global_dropped,
                 "parsed, but not an address": self.parsed_not_an_address,
                 "an address refused": self.refused_an_address,
                 "another address read": self.wrong_value}
        return {kind: texts[:10] for kind, texts in kinds.items() if texts}


def test_a_seeded_bulk_of_awkward_addresses_agrees_with_ipaddress(
    reliability: Recorder,
) -> None:
    comparison = Comparison()

    comparison.add(awkward_texts(random.Random(7), BULK_SIZE))

    assert comparison.valid > BULK_SIZE // 2  # mostly addresses, near misses too
    assert comparison.differs_from_plain_stdlib > 1000  # the deliberate differences were hit
    comparison.record(reliability, f"{BULK_SIZE // 1000}k seeded addresses, special ranges "
                                   "and their edges, all spellings")


def test_every_special_range_edge_agrees_with_ipaddress(reliability: Recorder) -> None:
    texts = []
    for network in SPECIAL_NETWORKS:
        first, last = int(network.network_address), int(network.broadcast_address)
        top = 2 ** network.max_prefixlen - 1
        for value in (first - 1, first, first + 1, last - 1, last, last + 1):
            if 0 <= value <= top:
                address = as_address(network.version, value)
                texts.append(str(address))
                if isinstance(address, ipaddress.IPv4Address):
                    texts += [str(form) for form in carrier_forms(random.Random(value), address)]
    comparison = Comparison()

    comparison.add(texts)

    assert comparison.valid == len(texts)
    comparison.record(reliability, f"both edges of {len(SPECIAL_NETWORKS)} special-purpose "
                                   "ranges, and their IPv6 carrier forms")


V4_TEXT = st.integers(0, 2**32 - 1).map(lambda value: str(ipaddress.IPv4Address(value)))
V6_TEXT = st.integers(0, 2**128 - 1).map(lambda value: str(ipaddress.IPv6Address(value)))
NEAR_MISS = st.text(alphabet="0123456789abcdefABCDEF:.%/ xg", min_size=1, max_size=45)
SPECIAL_TEXT = st.builds(lambda network, offset: str(network[offset % network.num_addresses]),
                         st.sampled_from(SPECIAL_NETWORKS), st.integers(0, 2**128))


def test_hypothesis_generated_addresses_agree_with_ipaddress(reliability: Recorder) -> None:
    """Two generators: seeds for the awkward-address sampler above (hypothesis shrinks the
    batch size), and texts drawn directly, near misses included."""
    total = Comparison()

    @HYPOTHESIS_SETTINGS
    @given(seed=st.integers(0, 2**32 - 1), count=st.integers(1, 40))
    def sampled(seed: int, count: int) -> None:
        comparison = Comparison()
        comparison.add(awkward_texts(random.Random(seed), count))
        assert comparison.failures() == {}
        total.add_counts(comparison)

    @HYPOTHESIS_SETTINGS
    @given(texts=st.lists(V4_TEXT | V6_TEXT | NEAR_MISS | SPECIAL_TEXT, min_size=1,
                          max_size=30))
    def drawn(texts: list[str]) -> None:
        comparison = Comparison()
        comparison.add(texts)
        assert comparison.failures() == {}
        total.add_counts(comparison)

    sampled()
    drawn()
    total.record(reliability, "hypothesis-generated addresses and near misses")


# --- what the export lets out ----------------------------------------------------------------


def test_the_export_keeps_exactly_the_global_addresses(reliability: Recorder) -> None:
    """Through `select_indicators`, the gate of the export job: one detection per address."""
    rng = random.Random(11)
    texts = [spellings(rng, interesting_address(rng)) for _ in range(50_000)]
    references = [reference_parse(text) for text in texts]
    indicators = pd.DataFrame({"source_system": "suricata",
                               "detection_id": [str(row) for row in range(len(texts))],
                               "attribute_type": "ip-dst", "value": texts})

    kept = select_indicators(indicators, AddressRanges.empty()).kept

    expected = [(str(row), reference.version, int(reference))
                for row, reference in enumerate(references)
                if reference is not None and expected_global(reference)]
    reached = [(row, address.version, int(address)) for row, address in zip(
        kept["detection_id"], map(ipaddress.ip_address, kept["value"]), strict=True)]
    assert 0.2 < len(expected) / len(texts) < 0.8
    reliability.check(JOB, "export gate (select_indicators): 50k awkward addresses",
                      expected, reached)


# --- CIDR membership (the user's filters) ---------------------------------------------------


def random_network(rng: random.Random) -> Network:
    if rng.random() < 0.5:
        return ipaddress.IPv4Network((rng.getrandbits(32), rng.randint(0, 32)), strict=False)
    return ipaddress.IPv6Network((rng.getrandbits(128), rng.choice([0, 3, 16, 32, 48, 64,
                                                                    96, 120, 127, 128])),
                                 strict=False)


def covered_by(address: Address, networks: Iterable[Network]) -> bool:
    """The user's IPv4 filter also covers the IPv6 forms carrying its addresses."""
    carried = embedded_ipv4(address) if isinstance(address, ipaddress.IPv6Address) else None
    return any(address in network or (carried is not None and carried in network)
               for network in networks)


def filter_comparison(rng: random.Random, make_text: Callable[[Address], str]
                      ) -> tuple[int, list[str], list[str]]:
    """(checked, matched wrongly, missed) for random networks against awkward addresses."""
    networks = [random_network(rng) for _ in range(rng.randint(1, 60))]
    addresses = [as_address(network.version, in_network(rng, network))
                 for network in networks for _ in range(5)]
    addresses += [interesting_address(rng) for _ in range(200)]
    addresses += [form for address in addresses[:100]
                  if isinstance(address, ipaddress.IPv4Address)
                  for form in carrier_forms(rng, address)]
    texts = [make_text(address) for address in addresses]
    ours = AddressRanges.from_patterns(str(network) for network in networks).covers(
        parse_addresses(texts)).tolist()
    expected = [covered_by(address, networks) for address in addresses]
    wrongly = [text for text, o, e in zip(texts, ours, expected, strict=True) if o and not e]
    missed = [text for text, o, e in zip(texts, ours, expected, strict=True) if e and not o]
    return len(texts), wrongly, missed


def test_cidr_filters_cover_like_ipaddress_membership(reliability: Recorder) -> None:
    rng = random.Random(21)
    checked, wrongly, missed = 0, [], []
    for _ in range(40):
        count, wrong, miss = filter_comparison(rng, lambda address: spellings(rng, address)
                                               .split("%")[0])
        checked, wrongly, missed = checked + count, wrongly + wrong, missed + miss
    assert (wrongly[:5], missed[:5]) == ([], [])
    reliability.record(JOB, "user CIDR filters (both families, carrier forms) vs ipaddress",
                       checked=checked, injected=len(missed), lost=len(wrongly))


def test_zone_ids_are_invalid_here_though_ipaddress_reads_them() -> None:
    texts = ["fe80::1%eth0", "2001:db8::1%1", "::ffff:8.8.8.8%en0"]

    assert parse_addresses(texts).family.tolist() == [FAMILY_INVALID] * 3
    assert all(ipaddress.ip_address(text) for text in texts)


def test_mask_and_parse_agree_on_numpy_and_arrow_input() -> None:
    """The same texts as a list, a numpy object array and an Arrow-backed Series."""
    texts = awkward_texts(random.Random(5), 2000)
    results = [non_global_mask(parse_addresses(values)).tolist() for values in (
        texts, np.array(texts, dtype=object), pd.Series(texts, dtype="string[pyarrow]"))]

    assert results[0] == results[1] == results[2]
