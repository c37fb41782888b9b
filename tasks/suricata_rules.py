"""Suricata rules from MISP indicators: one line per rule, and the list files some rules load.

Per-attribute rules (`render_rule_lines`), action `alert`, one per (attribute, variant):

- ip: `alert ip any any <> <ip> <port|any>`: both directions, any protocol with ports when a
  port is given (Suricata then skips ICMP and other port-less protocols).
- domain / hostname: the name and every subdomain (`dotprefix; content:".<name>"; endswith`)
  in the DNS query (`dns.query`, `nocase`), the TLS SNI (`tls.sni`, `nocase`) or the HTTP
  Host (`http.host`: Suricata lowercases that buffer and refuses `nocase` on it).
- url: `http.host` equal to the URL's host, and, when the URL has a path or query, the request
  URI starting with it: `http.uri` (normalized), or `http.uri.raw` when the URL carries
  %-escapes, since the normalized buffer holds them decoded. HTTPS URLs only match where
  Suricata sees the decrypted traffic.
- ja3: `ja3.hash; content:"<md5>"` (needs `app-layer.protocols.tls.ja3-fingerprints: yes`).

Every rule carries `msg:"MISP <kind> <value> - <event info>"` (printable ASCII only, capped),
`classtype:trojan-activity`, `sid`, `rev` and `metadata:misp_event_uuid <uuid>,
misp_attribute_uuid <uuid>, misp_tag <tag>, ...`: Suricata copies metadata into eve alerts,
which is how the sightings job maps an alert back to its attribute. Rules matching a client's
request name the client as the attacked host (`target:src_ip`); ip rules match both
directions, so they name no target.

Safety: a value reaches a rule only inside a quoted `content`, where `"` `;` `\\` `|` and every
byte outside printable ASCII are written as `|XX|` hex. Values with control characters or
line breaks, over MAX_VALUE_BYTES, names not in punycode form and anything else that cannot
be matched faithfully are left out and reported as `ParseProblem`s, never rendered.

List rules (`render_list_rules`) take fixed sids from the top of the range
(`sid_range_end - LIST_RULE_SID_OFFSETS[...]`) and load files written next to the rules file:

- `misp-md5.list`, `misp-sha1.list`, `misp-sha256.list`: one lowercase hex hash per line, for
  `filemd5` / `filesha1` / `filesha256` (files seen in HTTP, SMTP, FTP, SMB, NFS, HTTP/2);
- `misp-domains.lst`: a `string` dataset, one base64-encoded name per line, checked on
  `dns.query`, `tls.sni` and `http.host`. Dataset lookups are EXACT: unlike the per-name
  rules, a listed name does not match its subdomains;
- `misp-iprep.list` (`<ip>,1,100`) with `misp-categories.txt` (`1,MISP,...`), for
  `iprep:any,MISP,>,0`. Reputation has no ports: an `ip|port` indicator listed there
  matches every port.

Every list file is always written, empty when it has no entries, so the suricata.yaml lines
below never name a missing file; a list rule is only rendered when its list is not empty.

suricata.yaml on the sensor, with `/var/lib/misp-ndr/rules` standing for the directory the
files are copied to (`MISP_NDR_RULES__OUTPUT_DIR` when Suricata runs on the same host):

    default-rule-path: /var/lib/misp-ndr/rules  # hash lists are read relative to this
    rule-files:
      - misp.rules                              # datasets: relative to the rules file
    reputation-categories-file: /var/lib/misp-ndr/rules/misp-categories.txt
    default-reputation-path: /var/lib/misp-ndr/rules
    reputation-files:
      - misp-iprep.list
    datasets:
      defaults:
        memcap: 256mb                           # room for the names dataset
        hashsize: 1048576
    app-layer:
      protocols:
        tls:
          ja3-fingerprints: yes                 # only if MISP holds JA3 hashes

A rule reload (`suricatasc -c reload-rules`) re-reads the rules, the lists they load and the
reputation files; the categories file is only read at start-up, so restart Suricata once
after adding these lines.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from misp_ndr.config import RulesSettings
from tasks.arrow_text import (
    arrow_text,
    sorted_distinct_joined_lines,
    sorted_distinct_lines,
    true_where,
)
from tasks.detections import ParseProblem
from tasks.indicators import normalize_dns_names
from tasks.ip_addresses import parse_addresses
from tasks.rule_indicators import RESERVED_TOP_SIDS, RULE_VARIANTS, TAG_SEPARATOR

log = logging.getLogger(__name__)

RULE_LINE_COLUMNS: dict[str, str] = {
    "sid": "Int64",
    "rev": "Int32",
    "attribute_uuid": "string",  # NA for list rules
    "event_uuid": "string",  # NA for list rules
    "kind": "string",  # indicator kind; for list rules the list's kind (md5, ..., ip, name)
    "variant": "string",  # dns/tls/http/ip/ja3; for list rules filemd5, iprep, dns, ...
    "value": "string",  # the indicator value; for list rules the list file name
    "rule": "string",  # the whole rule, one line
}

ACTION = "alert"
CLASSTYPE = "trojan-activity"
MAX_VALUE_BYTES = 1024
MAX_RULE_BYTES = 8191  # Suricata reads rule lines into an 8192-byte buffer (with the NUL)
MSG_VALUE_CHARS = 80
MSG_EVENT_INFO_CHARS = 120
TAG_CHARS = 100  # one misp_tag value
TAG_BUDGET_CHARS = 2000  # all misp_tag entries of one rule; later tags are left out

MD5_LIST = "misp-md5.list"
SHA1_LIST = "misp-sha1.list"
SHA256_LIST = "misp-sha256.list"
NAME_DATASET = "misp-domains"
NAME_DATASET_FILE = "misp-domains.lst"
IPREP_FILE = "misp-iprep.list"
IPREP_CATEGORIES_FILE = "misp-categories.txt"
IPREP_CATEGORY_ID = 1
IPREP_CATEGORY = "MISP"
IPREP_SCORE = 100  # 1-127; the rule only asks "listed at all" (> 0)

HASH_LISTS: dict[str, tuple[str, str, int]] = {  # kind -> (keyword, file, hex digits)
    "md5": ("filemd5", MD5_LIST, 32),
    "sha1": ("filesha1", SHA1_LIST, 40),
    "sha256": ("filesha256", SHA256_LIST, 64),
}
# (list kind, variant) -> offset below sid_range_end. Fixed, so a list rule keeps its sid
# whichever lists exist this run; must stay below RESERVED_TOP_SIDS.
LIST_RULE_SID_OFFSETS: dict[tuple[str, str], int] = {
    ("md5", "filemd5"): 0,
    ("sha1", "filesha1"): 1,
    ("sha256", "filesha256"): 2,
    ("ip", "iprep"): 3,
    ("name", "dns"): 4,
    ("name", "tls"): 5,
    ("name", "http"): 6,
}
assert max(LIST_RULE_SID_OFFSETS.values()) < RESERVED_TOP_SIDS

# variant -> (protocol, options before the name's content, modifiers after it)
_NAME_MATCHES: dict[str, tuple[str, str, str]] = {
    "dns": ("dns", "dns.query; dotprefix; ", "nocase; endswith; "),
    "tls": ("tls", "flow:established,to_server; tls.sni; dotprefix; ", "nocase; endswith; "),
    "http": ("http", "flow:established,to_server; http.host; dotprefix; ", "endswith; "),
}
_NAME_BUFFERS = {"dns": "dns.query", "tls": "tls.sni", "http": "http.host"}
assert set(_NAME_MATCHES) == set(RULE_VARIANTS["domain"]) == set(RULE_VARIANTS["hostname"])
_NAME_KINDS = ("domain", "hostname")
_CLIENT_TARGET = "target:src_ip; "

_UUID = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
_CONTROL = r"[\x00-\x1f\x7f-\x9f\x{2028}\x{2029}]"
_URL = (r"^(?:(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://)?(?:[^/?#@]*@)?"
        r"(?P<host>\[[0-9A-Fa-f:.]+\]|[^:/?#\[\]@]+)(?::[0-9]{0,5})?"
        r"(?P<path>[/?][^#]*)?(?:#.*)?$")
_HTTP_SCHEMES = ("", "http", "https")
_NON_PUNYCODE = "is not ASCII: names must be in punycode (xn--) form"

# Content escaping, one table row per byte value: the byte itself, or `|XX|`.
_CONTENT_SAFE = np.array([0x20 <= b < 0x7F and b not in b'"\\;|' for b in range(256)])
_CONTENT_ESCAPES = np.array(
    [list(bytes([b]).ljust(4, b"\0")) if _CONTENT_SAFE[b] else list(b"|%02X|" % b)
     for b in range(256)], dtype=np.uint8)
_CONTENT_ESCAPE_LENGTHS = np.where(_CONTENT_SAFE, 1, 4)
_NEEDS_ESCAPE = r'["\\;|]|[^\x20-\x7e]'

_BASE64_ALPHABET = np.frombuffer(
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/", dtype=np.uint8)
_BASE64_CHUNK_ROWS = 1 << 16


def empty_rule_lines() -> pd.DataFrame:
    return pd.DataFrame({name: pd.Series(dtype=dtype) for name, dtype in RULE_LINE_COLUMNS.items()})


# ---------------------------------------------------------------------------------------------
# Text helpers (pyarrow, whole columns at once)


def _repeated(text: str, count: int) -> pa.Array:
    """`text` `count` times, built in numpy: several times faster than `pa.repeat`."""
    data = text.encode()
    offsets = np.arange(count + 1, dtype=np.int64) * len(data)
    if offsets[-1] >= 2**31:
        return pa.repeat(pa.scalar(text, pa.string()), count)
    return pa.StringArray.from_buffers(
        count, pa.py_buffer(offsets.astype(np.int32)),
        pa.py_buffer(np.tile(np.frombuffer(data, np.uint8), count)))


def _concat(*pieces: str | pa.Array) -> pa.Array:
    """Row-wise concatenation; literal pieces are repeated into arrays first, as arrow's
    kernel is several times slower when it broadcasts scalars itself."""
    count = max(len(piece) for piece in pieces if isinstance(piece, pa.Array))
    arrays = [piece if isinstance(piece, pa.Array) else _repeated(piece, count)
              for piece in pieces]
    return pc.binary_join_element_wise(*arrays, "")


def escape_content(values: pa.Array) -> pa.Array:
    """Text as a Suricata `content` body: printable ASCII stays, except `"` `;` `\\` `|`,
    which with every other byte (UTF-8 encoded) become hex, consecutive ones sharing one
    `|..|` group. Callers reject control characters first: this function would escape them,
    but a value holding them is not a faithful indicator."""
    values = pc.fill_null(arrow_text(values), "")
    rows = np.flatnonzero(true_where(pc.match_substring_regex(values, _NEEDS_ESCAPE)))
    if not len(rows):
        return values
    escaped = _escape_bytes(values.take(pa.array(rows)))
    replaced = np.zeros(len(values), dtype=bool)
    replaced[rows] = True
    return pc.replace_with_mask(values, pa.array(replaced), escaped)


def _escape_bytes(values: pa.Array) -> pa.Array:
    binary = values.cast(pa.large_binary())
    offsets = np.frombuffer(binary.buffers()[1], dtype=np.int64)[
        binary.offset: binary.offset + len(binary) + 1]
    data = np.frombuffer(binary.buffers()[2], dtype=np.uint8)[offsets[0]: offsets[-1]]
    offsets = offsets - offsets[0]
    out_lengths = _CONTENT_ESCAPE_LENGTHS[data]
    out_ends = np.concatenate(([0], np.cumsum(out_lengths)))
    kept = np.arange(4) < out_lengths[:, None]
    out = _CONTENT_ESCAPES[data][kept]
    escaped = pa.LargeStringArray.from_buffers(
        len(binary), pa.py_buffer(out_ends[offsets].astype(np.int64)), pa.py_buffer(out.tobytes()))
    # a literal "|" is itself escaped, so "||" only ever joins two hex groups
    return pc.replace_substring(escaped, "||", " ").cast(pa.string())


def msg_text(values: pa.Array, max_chars: int) -> pa.Array:
    """Free text made safe for a quoted `msg`: printable ASCII only (other characters become
    '?', whitespace and control runs one space), no `"` `;` `\\`, at most `max_chars`."""
    text = pc.fill_null(arrow_text(values), "")
    dirty = true_where(pc.match_substring_regex(text, r'[^\x20-\x7e]|["\\;]|^ | $|  '))
    if dirty.any():
        rows = pa.array(np.flatnonzero(dirty))
        text = pc.replace_with_mask(text, pa.array(dirty), _msg_safe(text.take(rows)))
    too_long = pc.greater(pc.utf8_length(text), max_chars)
    shortened = _concat(
        pc.utf8_trim_whitespace(pc.utf8_slice_codeunits(text, 0, max_chars - 3)), "...")
    return pc.if_else(too_long, shortened, text)


def _msg_safe(text: pa.Array) -> pa.Array:
    text = pc.replace_substring_regex(text, r"[\s\x00-\x1f\x7f-\x9f\x{2028}\x{2029}]+", " ")
    text = pc.replace_substring_regex(text, r"[^\x20-\x7e]+", "?")
    for unsafe, replacement in (('"', "'"), (";", ","), ("\\", "/")):
        text = pc.replace_substring(text, unsafe, replacement)
    return pc.utf8_trim_whitespace(text)


def _per_distinct(values: pd.Series, transform: Callable[[pa.Array], pa.Array]) -> pa.Array:
    """`transform` applied once per distinct value (event infos and tag sets repeat across
    the rules of an event), spread back to every row; NA is transformed as one value."""
    categorical = values.astype("category")  # nothing to do where the column is one
    uniques = np.array([*categorical.cat.categories.astype(object), None], dtype=object)
    codes = categorical.cat.codes.to_numpy()
    codes = np.where(codes < 0, len(uniques) - 1, codes)
    return transform(arrow_text(uniques)).take(pa.array(codes))


def tag_metadata(tag_sets: pa.Array) -> pa.Array:
    """Per TAG_SEPARATOR-joined tag set: `, misp_tag <tag>` entries for a metadata option.
    Metadata values cannot hold `,` `;` `"` or spaces: each tag keeps [A-Za-z0-9_.:=-], runs
    of anything else become one '_', a tag left empty is dropped, repeats are dropped, and
    tags past TAG_BUDGET_CHARS are left out so the rule stays under Suricata's line limit."""
    tag_lists = pc.split_pattern(pc.fill_null(arrow_text(tag_sets), ""), TAG_SEPARATOR)
    parents = pc.list_parent_indices(tag_lists).to_numpy()
    tags = pc.replace_substring_regex(pc.list_flatten(tag_lists), r"[^A-Za-z0-9_.:=-]+", "_")
    tags = pc.utf8_slice_codeunits(pc.utf8_trim(tags, "_"), 0, TAG_CHARS)
    entries = pd.DataFrame({"parent": parents, "tag": tags.to_numpy(zero_copy_only=False)})
    entries = entries[entries["tag"] != ""].drop_duplicates()
    entries["spent"] = (entries["tag"].str.len() + len(", misp_tag ")).groupby(
        entries["parent"]).cumsum()
    entries = entries[entries["spent"] <= TAG_BUDGET_CHARS]
    counts = np.bincount(entries["parent"].to_numpy(), minlength=len(tag_sets))
    offsets = pa.array(np.concatenate(([0], np.cumsum(counts))).astype(np.int32))
    prefixed = _concat(", misp_tag ", arrow_text(entries["tag"]))
    return pc.binary_join(pa.ListArray.from_arrays(offsets, prefixed), "")


# ---------------------------------------------------------------------------------------------
# Per-attribute rules


class _Rejections:
    """The first reason each row cannot be rendered; None while it still can."""

    def __init__(self, count: int) -> None:
        self.reason = np.full(count, None, dtype=object)
        self.open = np.ones(count, dtype=bool)

    def add(self, failed: np.ndarray, why: str | np.ndarray) -> None:
        hit = failed & self.open
        self.reason[hit] = why[hit] if isinstance(why, np.ndarray) else why
        self.open &= ~hit


@dataclass(frozen=True)
class _Matches:
    """The matching part of one kind's rules: the header after the action, the options
    before classtype, and why a row cannot be matched (None where it can)."""

    header: pa.Array
    options: pa.Array
    target: str
    reason: np.ndarray


def _ip_matches(rules: pd.DataFrame) -> _Matches:
    parsed = parse_addresses(arrow_text(rules["value"]))
    reason = np.full(len(rules), None, dtype=object)
    reason[~parsed.valid] = "is not an IP address"
    addresses = pc.fill_null(arrow_text(parsed.canonical_text()), "")
    port = rules["port"].astype("Int32")
    bad_port = (port.notna() & ~port.between(1, 65535)).to_numpy(dtype=bool, na_value=False)
    reason[bad_port & pd.isna(reason)] = "port is outside 1-65535"
    port_text = arrow_text(port.astype("string").fillna("any"))
    header = _concat("ip any any <> ", addresses, " ", port_text)
    return _Matches(header, _repeated("", len(rules)), "", reason)


def _checked_names(values: pa.Array) -> tuple[pa.Array, np.ndarray]:
    """(lowercase name, reason per row), checked once per distinct value (a name has a rule
    per variant). Raw Unicode names are refused, not converted: they would never match the
    punycode on the wire, and mean the pull stage let one by."""
    encoded = pc.dictionary_encode(pc.fill_null(values, ""))
    distinct = encoded.dictionary
    ascii_names = true_where(pc.string_is_ascii(distinct))
    names, reason = normalize_dns_names(pc.if_else(pa.array(ascii_names), distinct, ""))
    reason[~ascii_names] = _NON_PUNYCODE
    rows = encoded.indices.to_numpy()
    return pa.array(names, type=pa.string(), from_pandas=True).take(encoded.indices), reason[rows]


def _name_matches(rules: pd.DataFrame) -> _Matches:
    """All variants of a name kind at once, so each name is checked once, not per variant."""
    names, reason = _checked_names(arrow_text(rules["value"]))
    variant = pa.array(pd.Categorical(rules["variant"], categories=list(_NAME_MATCHES)).codes)
    protocol, before, after = (arrow_text(list(column)) for column in zip(*_NAME_MATCHES.values(),
                                                                        strict=True))
    header = _concat(protocol.take(variant), " any any -> any any")
    options = _concat(before.take(variant), 'content:".', pc.fill_null(names, ""), '"; ',
                      after.take(variant))
    return _Matches(header, options, _CLIENT_TARGET, reason)


def _url_matches(rules: pd.DataFrame) -> _Matches:
    values = arrow_text(rules["value"])
    parts = pc.extract_regex(values, _URL)
    parsed = true_where(pc.is_valid(parts))
    scheme = pc.utf8_lower(pc.fill_null(pc.struct_field(parts, "scheme"), ""))
    host = pc.replace_substring_regex(
        pc.utf8_lower(pc.fill_null(pc.struct_field(parts, "host"), "")), r"\.$", "")
    path = pc.fill_null(pc.struct_field(parts, "path"), "")

    reason = np.full(len(rules), None, dtype=object)
    # "http:///x" would otherwise read as host "http"
    lost_scheme = true_where(pc.match_substring(values, "://")) & true_where(pc.equal(scheme, ""))
    reason[~parsed | lost_scheme] = "is not a URL with a host"
    bad_scheme = ~true_where(pc.is_in(scheme, pa.array(_HTTP_SCHEMES)))
    reason[bad_scheme & pd.isna(reason)] = "is not an http(s) URL"
    names, name_reason = _checked_names(host)
    is_address = parse_addresses(pc.replace_substring_regex(host, r"^\[(.*)\]$", r"\1")).valid
    name_reason[is_address] = None
    host_bad = pd.notna(name_reason) & pd.isna(reason)
    reason[host_bad] = np.char.add("host ", name_reason[host_bad].astype(str)).astype(object)
    host_text = pc.if_else(pa.array(is_address), host, pc.fill_null(names, ""))

    has_path = ~true_where(pc.is_in(path, pa.array(["", "/"])))
    raw_uri = true_where(pc.match_substring(path, "%"))
    uri_buffer = pc.if_else(pa.array(raw_uri), "http.uri.raw", "http.uri")
    uri_options = _concat(
        uri_buffer, '; content:"', escape_content(path), '"; startswith; ')
    uri_options = pc.if_else(pa.array(has_path), uri_options, "")
    options = _concat(
        'flow:established,to_server; http.host; content:"', host_text,
        '"; startswith; endswith; ', uri_options)
    return _Matches(_repeated("http any any -> any any", len(rules)), options, _CLIENT_TARGET,
                    reason)


def _ja3_matches(rules: pd.DataFrame) -> _Matches:
    hashes = pc.utf8_lower(arrow_text(rules["value"]))
    reason = np.full(len(rules), None, dtype=object)
    reason[~true_where(pc.match_substring_regex(hashes, r"^[0-9a-f]{32}$"))] = \
        "is not a JA3 hash (32 hex digits)"
    options = _concat(
        'flow:established,to_server; ja3.hash; content:"', pc.fill_null(hashes, ""), '"; ')
    return _Matches(_repeated("tls any any -> any any", len(rules)), options, _CLIENT_TARGET,
                    reason)


_KIND_MATCHES: dict[str, Callable[[pd.DataFrame], _Matches]] = {
    "ip": _ip_matches,
    "domain": _name_matches,
    "hostname": _name_matches,
    "url": _url_matches,
    "ja3": _ja3_matches,
}


def _common_rejections(rules: pd.DataFrame, settings: RulesSettings) -> _Rejections:
    """What makes a row unrenderable whatever its kind."""
    rejections = _Rejections(len(rules))
    for column in ("attribute_uuid", "event_uuid"):
        is_uuid = true_where(pc.match_substring_regex(arrow_text(rules[column]), _UUID))
        rejections.add(~is_uuid, f"{column.replace('_', ' ')} is missing or not a UUID")
    supported = np.zeros(len(rules), dtype=bool)
    for kind, variants in RULE_VARIANTS.items():
        supported |= ((rules["kind"] == kind) & rules["variant"].isin(variants)).to_numpy(
            dtype=bool, na_value=False)
    rejections.add(~supported, "has no Suricata rule for its kind and variant")
    sid, rev = rules["sid"].astype("Int64"), rules["rev"].astype("Int32")
    rejections.add((sid.isna() | rev.isna() | (rev < 1)).to_numpy(dtype=bool, na_value=True),
                   "has no sid / rev")
    in_range = sid.between(settings.sid_range_start, settings.sid_range_end - RESERVED_TOP_SIDS)
    rejections.add(~in_range.to_numpy(dtype=bool, na_value=False),
                   "sid is outside the configured per-attribute range")
    values = arrow_text(rules["value"])
    rejections.add(~true_where(pc.greater(pc.utf8_length(values), 0)), "value is empty")
    rejections.add(true_where(pc.match_substring_regex(values, _CONTROL)),
                   "value contains control characters or line breaks")
    rejections.add(true_where(pc.greater(pc.binary_length(values), MAX_VALUE_BYTES)),
                   f"value is longer than {MAX_VALUE_BYTES} bytes")
    return rejections


def _matching_parts(rules: pd.DataFrame, rejections: _Rejections) -> list[pa.Array]:
    """Header, options and target of every row, in the rows' order: each kind's rows are
    matched in one vectorized call (only the columns matchers read are copied out), and
    the parts spread back to the rows they belong to."""
    codes, kinds = pd.factorize(rules["kind"].to_numpy(dtype=object, na_value=""))
    matched = rules[_MATCHED_COLUMNS]
    parts: list[list[pa.Array]] = [[], []]
    positions, targets = [], []
    for code, kind in enumerate(kinds):
        rows = np.flatnonzero(codes == code)
        matcher = _KIND_MATCHES.get(kind)
        if matcher is None:  # already rejected: no rule for this kind
            matches = _Matches(_repeated("", len(rows)), _repeated("", len(rows)), "",
                               np.full(len(rows), None, dtype=object))
        else:
            matches = matcher(matched.iloc[rows].reset_index(drop=True))
        reason = np.full(len(rules), None, dtype=object)
        reason[rows] = matches.reason
        rejections.add(pd.notna(reason), reason)
        parts[0].append(pc.fill_null(arrow_text(matches.header), ""))
        parts[1].append(pc.fill_null(arrow_text(matches.options), ""))
        positions.append(rows)
        targets.append(matches.target)
    if not positions:
        return [_repeated("", 0)] * 3
    back = np.empty(len(rules), dtype=np.int64)
    back[np.concatenate(positions)] = np.arange(len(rules))
    spread = [pa.concat_arrays(arrays).take(pa.array(back)) for arrays in parts]
    return [*spread, arrow_text(targets).take(pa.array(codes))]


_MATCHED_COLUMNS = ["value", "port", "variant"]


def _rule_text(rules: pd.DataFrame, header: pa.Array, options: pa.Array,
               target: pa.Array) -> pa.ChunkedArray:
    """Whole rules, in blocks of _TEXT_BLOCK_ROWS rows: one arrow string array holds at
    most 2 GiB, and a million rules are about 0.75 GB of text."""
    value_text = msg_text(arrow_text(rules["value"]), MSG_VALUE_CHARS)
    info_part = _per_distinct(rules["event_info"], _info_part)
    tags = _per_distinct(rules["tags"], tag_metadata)
    pieces = (
        f"{ACTION} ", header, ' (msg:"MISP ', arrow_text(rules["kind"]), " ", value_text,
        info_part, '"; ', options, f"classtype:{CLASSTYPE}; ", target,
        "sid:", _decimal(rules["sid"]), "; rev:", _decimal(rules["rev"]),
        "; metadata:misp_event_uuid ", pc.utf8_lower(arrow_text(rules["event_uuid"])),
        ", misp_attribute_uuid ", pc.utf8_lower(arrow_text(rules["attribute_uuid"])),
        tags, ";)")

    def block(start: int) -> pa.Array:
        return _concat(*(piece if isinstance(piece, str) else piece.slice(start, _TEXT_BLOCK_ROWS)
                         for piece in pieces))

    with ThreadPoolExecutor(max_workers=2) as pool:  # the join runs without the GIL
        blocks = list(pool.map(block, range(0, len(rules), _TEXT_BLOCK_ROWS)))
    return pa.chunked_array(blocks, pa.string())


# rows per block of rule text: even rules at Suricata's line limit stay far below 2 GiB
_TEXT_BLOCK_ROWS = 1 << 17


def _info_part(infos: pa.Array) -> pa.Array:
    """` - <event info>` for a msg, nothing when the info is empty."""
    info = msg_text(infos, MSG_EVENT_INFO_CHARS)
    return pc.if_else(pc.equal(info, ""), "", _concat(" - ", info)) if len(info) else info


def _decimal(numbers: pd.Series) -> pa.Array:
    return pc.cast(pa.array(numbers.astype("Int64").array), pa.string())


def _problems(rules: pd.DataFrame, reason: np.ndarray,
              report_order: np.ndarray) -> list[ParseProblem]:
    """One problem per (attribute, value, reason): a name refused in DNS is refused in TLS
    and HTTP too, and one line says so. Rows are reported by `report_order` (ascending)."""
    rows = np.flatnonzero(pd.notna(reason))
    if not len(rows):
        return []
    rows = rows[np.argsort(report_order[rows], kind="stable")]
    rejected = pd.DataFrame({
        "uuid": rules["attribute_uuid"].to_numpy()[rows],
        "value": rules["value"].to_numpy()[rows],
        "reason": reason[rows],
    }).drop_duplicates()
    return [ParseProblem.make(f"MISP attribute {uuid}", why, "" if pd.isna(value) else value)
            for uuid, value, why in rejected.itertuples(index=False)]


def _sid_order(rules: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """The rows by sid (missing sids last, ties in their order): the order of the rules
    file and the sid map, so rendering in it leaves nothing to reorder afterwards. And,
    per row in that order, its rank in the order problems are reported in (by kind, then
    as given), which does not depend on the sids."""
    sids = rules["sid"].astype("Int64")
    keys = sids.to_numpy(dtype=np.int64, na_value=np.iinfo(np.int64).max)
    if sids.hasnans:
        by_sid = np.lexsort((np.arange(len(rules)), sids.isna().to_numpy(), keys))
    else:
        by_sid = np.argsort(keys, kind="stable")
    kind_rank = pd.factorize(rules["kind"].astype("string"), sort=True,
                             use_na_sentinel=True)[0].astype(np.int64)
    kind_rank[kind_rank < 0] = np.iinfo(np.int64).max  # no kind: last, as sort_values puts NA
    by_kind = np.argsort(kind_rank, kind="stable")
    report_rank = np.empty(len(rules), dtype=np.int64)
    report_rank[by_kind] = np.arange(len(rules))
    return by_sid, report_rank[by_sid]


def render_rule_lines(
    rules: pd.DataFrame, settings: RulesSettings,
) -> tuple[pd.DataFrame, list[ParseProblem]]:
    """Rows of `expand_rule_variants` with `sid` and `rev` -> one Suricata rule each
    (RULE_LINE_COLUMNS, ordered by sid), and the rows that could not be rendered safely
    (by kind, then in the order given)."""
    if rules.empty:
        return empty_rule_lines(), []
    by_sid, report_order = _sid_order(rules)
    # event infos and tag sets repeat across an event's rules: as categories, reordering
    # and filtering move codes, not their text
    rules = rules.astype({"event_info": "category", "tags": "category"})
    rules = rules.take(by_sid).reset_index(drop=True)
    rejections = _common_rejections(rules, settings)
    header, options, target = _matching_parts(rules, rejections)
    problems = _problems(rules, rejections.reason, report_order)
    kept = rejections.open
    if not kept.all():
        rules, report_order = rules[kept].reset_index(drop=True), report_order[kept]
        header, options, target = (part.filter(pa.array(kept)) for part in (header, options,
                                                                            target))
    text = _rule_text(rules, header, options, target)
    too_long = true_where(pc.greater(pc.binary_length(text), MAX_RULE_BYTES))
    if too_long.any():
        problems += _problems(rules, np.where(too_long, f"rule would be longer than Suricata's "
                                              f"{MAX_RULE_BYTES}-byte line limit", None),
                              report_order)
        rules, text = rules[~too_long].reset_index(drop=True), text.filter(pa.array(~too_long))
    lines = rules[[column for column in RULE_LINE_COLUMNS if column != "rule"]].astype(
        {column: dtype for column, dtype in RULE_LINE_COLUMNS.items() if column != "rule"})
    return lines.assign(rule=pd.arrays.ArrowStringArray(text)), problems


# ---------------------------------------------------------------------------------------------
# List rules and their files


def _list_rule(settings: RulesSettings, kind: str, variant: str, value: str, header: str,
               msg: str, options: str) -> dict[str, object]:
    sid = settings.sid_range_end - LIST_RULE_SID_OFFSETS[(kind, variant)]
    rule = (f'{ACTION} {header} (msg:"MISP {msg}"; {options}classtype:{CLASSTYPE}; '
            f"sid:{sid}; rev:1; metadata:misp_list {value};)")
    return {"sid": sid, "rev": 1, "attribute_uuid": pd.NA, "event_uuid": pd.NA, "kind": kind,
            "variant": variant, "value": value, "rule": rule}


def _dropped(count: int, what: str) -> None:
    if count:
        log.warning("%d %s left out of the Suricata lists: not valid", count, what)


def _hash_list(hashes: pd.DataFrame, kind: str) -> pa.Array:
    _keyword, _file, digits = HASH_LISTS[kind]
    values = pc.utf8_lower(pc.utf8_trim_whitespace(arrow_text(hashes.loc[hashes["kind"] == kind,
                                                                        "value"])))
    valid = true_where(pc.match_substring_regex(values, f"^[0-9a-f]{{{digits}}}$"))
    _dropped(int((~valid).sum()), f"{kind} hashes")
    return values.filter(pa.array(valid))


def base64_lines(values: pa.Array) -> pa.Array:
    """Standard base64 (with padding) of each value's UTF-8 bytes, computed in numpy over
    fixed-width blocks of rows: dataset files hold up to millions of names."""
    encoded = [_base64_block(values.slice(start, _BASE64_CHUNK_ROWS))
               for start in range(0, len(values), _BASE64_CHUNK_ROWS)]
    return pa.concat_arrays(encoded) if encoded else pa.array([], type=pa.string())


def _base64_block(values: pa.Array) -> pa.Array:
    binary = pc.fill_null(arrow_text(values), "").cast(pa.large_binary())
    offsets = np.frombuffer(binary.buffers()[1], dtype=np.int64)[
        binary.offset: binary.offset + len(binary) + 1]
    data = np.frombuffer(binary.buffers()[2], dtype=np.uint8)[offsets[0]: offsets[-1]]
    offsets = offsets - offsets[0]
    lengths = np.diff(offsets)
    width = max(3, int(-(-lengths.max() // 3) * 3)) if len(lengths) else 3
    matrix = np.zeros((len(lengths), width), dtype=np.uint8)
    row_of_byte = np.repeat(np.arange(len(lengths)), lengths)
    matrix[row_of_byte, np.arange(len(data)) - offsets[row_of_byte]] = data
    triples = matrix.reshape(len(lengths), -1, 3).astype(np.uint16)
    sextets = np.stack([
        triples[..., 0] >> 2,
        ((triples[..., 0] & 3) << 4) | (triples[..., 1] >> 4),
        ((triples[..., 1] & 15) << 2) | (triples[..., 2] >> 6),
        triples[..., 2] & 63,
    ], axis=-1).reshape(len(lengths), -1)
    chars = _BASE64_ALPHABET[sextets]
    out_lengths = -(-lengths // 3) * 4
    column = np.arange(chars.shape[1])
    padding = (column >= (out_lengths - (-lengths % 3))[:, None]) & (column < out_lengths[:, None])
    chars[padding] = ord("=")
    out = chars[column < out_lengths[:, None]]
    out_offsets = np.concatenate(([0], np.cumsum(out_lengths))).astype(np.int64)
    return pa.LargeStringArray.from_buffers(
        len(lengths), pa.py_buffer(out_offsets), pa.py_buffer(out.tobytes())).cast(pa.string())


def _dataset_names(members: pd.DataFrame) -> pa.Array:
    values = arrow_text(members.loc[members["kind"].isin(_NAME_KINDS), "value"])
    names, reason = _checked_names(values)
    _dropped(int(pd.notna(reason).sum()), "dataset names")
    return names.filter(pa.array(pd.isna(reason)))


def _iprep_addresses(members: pd.DataFrame) -> pa.Array:
    parsed = parse_addresses(arrow_text(members.loc[members["kind"] == "ip", "value"]))
    _dropped(int((~parsed.valid).sum()), "reputation addresses")
    return arrow_text(parsed.canonical_text()[parsed.valid])


def render_list_rules(
    file_hashes: pd.DataFrame, dataset_members: pd.DataFrame, settings: RulesSettings,
) -> tuple[pd.DataFrame, dict[str, bytes]]:
    """Rules that load list files (file hashes, the names dataset, IP reputation) and the
    files themselves (name -> content). See the module docstring for the suricata.yaml lines
    these files need. Invalid values are logged and left out of the lists: the pull stage
    validated them already, so any seen here is a bug upstream, not MISP data."""
    rules: list[dict[str, object]] = []
    files: dict[str, bytes] = {}
    for kind, (keyword, file_name, _digits) in HASH_LISTS.items():
        files[file_name] = sorted_distinct_lines(_hash_list(file_hashes, kind))
        if files[file_name]:
            rules.append(_list_rule(
                settings, kind, keyword, file_name, "ip any any -> any any",
                f"{kind} list - file hash listed in MISP", f"{keyword}:{file_name}; "))

    names = _dataset_names(dataset_members)
    files[NAME_DATASET_FILE] = sorted_distinct_lines(base64_lines(pc.unique(names)))
    if files[NAME_DATASET_FILE]:
        for variant, (protocol, _before, _after) in _NAME_MATCHES.items():
            flow = "flow:established,to_server; " if variant != "dns" else ""
            rules.append(_list_rule(
                settings, "name", variant, NAME_DATASET_FILE, f"{protocol} any any -> any any",
                f"name list - {_NAME_BUFFERS[variant]} listed in MISP",
                f"{flow}{_NAME_BUFFERS[variant]}; dataset:isset,{NAME_DATASET},type string,"
                f"load {NAME_DATASET_FILE}; {_CLIENT_TARGET}"))

    addresses = _iprep_addresses(dataset_members)
    files[IPREP_FILE] = sorted_distinct_joined_lines(  # ',' sorts before any address's text
        addresses, pa.array([f",{IPREP_CATEGORY_ID},{IPREP_SCORE}\n"]),
        np.zeros(len(addresses), dtype=np.int64))
    files[IPREP_CATEGORIES_FILE] = (
        f"{IPREP_CATEGORY_ID},{IPREP_CATEGORY},Addresses listed in MISP (misp-ndr)\n".encode())
    if files[IPREP_FILE]:
        rules.append(_list_rule(
            settings, "ip", "iprep", IPREP_FILE, "ip any any -> any any",
            "ip list - address listed in MISP", f"iprep:any,{IPREP_CATEGORY},>,0; "))

    lines = pd.DataFrame(rules, columns=list(RULE_LINE_COLUMNS)) if rules else empty_rule_lines()
    return lines.astype(RULE_LINE_COLUMNS), files
