"""Rule rendering (issue #6, benchmark 2): mixed MISP indicators to every sensor output.

Times `build_ruleset` + `publish_ruleset`: Suricata rules with stable sids (SQLite), hash
lists, the sid map, Flowmon blacklists and the Zeek intel file, rendered, validated and
written atomically (fsync, snapshot of the previous ruleset, manifest with sha256), with a
small customization file applied, as a normal update does.

- first build: empty sid store and output directory, every sid is new;
- steady state: the same indicators again over the filled store and the previous ruleset
  (the daily update): revs compared, the old ruleset snapshotted, everything rewritten.
- steady state, fresh process (100k and 1M): the same update, timed inside a new
  interpreter, as a scheduled run is (Prefect runs every flow run in a process of its own):
  nothing is warm, every buffer is memory the process touches for the first time. The
  in-process steady state reuses the memory earlier updates left to the allocators.

"one rule each" sets `dataset_threshold` above the input size, so every IP and name is a
rule of its own (the issue's "1M rules"); "default settings" keeps the default threshold,
which moves big IP and name sets into iprep / dataset list files and renders far fewer
rules. The floor is the same bytes written to a new file by one `write()` + fsync.

Each case also prints the process's CPU seconds in user and in kernel mode (all threads) and
what they allow at best on this machine's cores: wall can go no lower than CPU / cores, so
that figure tells whether a wall target is within reach of the work done at all.

The input is the honest one: a pulled-attributes table (generated column-wise with numpy,
no dict per attribute) through `normalize_rule_indicators`, outside the timing. Values that
need escaping are mixed in: URL paths with `;` `"` `|`, %-escapes and UTF-8, event infos
with quotes, semicolons, tabs, non-ASCII and over-long text, tags with spaces and quotes.
The sid range is widened to 1-50M: the default 1M range cannot hold 1M indicators' rules.
"""

from __future__ import annotations

import functools
import multiprocessing
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from benchmarks.harness import (
    SEED,
    Figure,
    Timing,
    median_seconds,
    median_timed,
    median_timing,
    size_label,
    timed,
)
from misp_ndr.config import RulesSettings
from tasks.rule_customizations import Customizations, parse_customizations
from tasks.rule_indicators import PULLED_ATTRIBUTE_COLUMNS, TAG_SEPARATOR, normalize_rule_indicators
from tasks.ruleset_build import RulesetBuild, build_ruleset
from tasks.ruleset_files import publish_ruleset

NAME = "rule_rendering"
TARGET_SIZE = 1_000_000
TARGET_SECONDS = 2.0
SID_RANGE = (1_000_000, 50_999_999)
MISP_URL = "https://misp.example.org"

# MISP type -> share of the attributes: IPs and names dominate real IDS sets, then URLs and
# file hashes; a few composite types and JA3.
TYPE_SHARES: dict[str, float] = {
    "ip-dst": 0.30, "ip-src": 0.05, "ip-dst|port": 0.03, "domain": 0.12, "hostname": 0.06,
    "domain|ip": 0.01, "url": 0.13, "md5": 0.09, "sha1": 0.04, "sha256": 0.13,
    "filename|sha256": 0.02, "ja3-fingerprint-md5": 0.02,
}
# Public first octets: every generated IPv4 address is globally routable, so none is refused.
_FIRST_OCTETS = np.array([5, 23, 31, 37, 45, 46, 62, 77, 78, 80, 81, 82, 85, 87, 88, 89, 91,
                          93, 94, 95, 104, 109, 128, 138, 141, 145, 151, 176, 178, 185, 188,
                          193, 194, 195, 212, 213, 217])
_TLDS = ["com", "net", "org", "ru", "info", "xyz", "top", "io"]
_WORDS = ["update", "cdn", "secure", "login", "mail", "static", "api", "files", "xn--caf-dma"]
# URL paths: plain, with `;` `"` `|` (escaped in content), %-escapes (http.uri.raw), UTF-8
_PATHS = ["", "/", "/gate.php?id={n}", "/a/x;jsessionid={n}", '/dl?f="{n}".exe',
          "/p%20{n}/load", "/caf\u00e9/{n}", "/x|{n}|y", "/wp-content/plugins/{n}/shell.php"]
# Event infos that need the msg cleaning: quotes, semicolons, tabs, non-ASCII, too long
_INFOS = ["Campaign {n}: phishing wave", 'Loader "SmokeLoader" C2 {n}; stage 2',
          "Op\u00e9ration caf\u00e9 {n}\tIOCs", "OSINT {n} - " + "very long description " * 8,
          "Emotet epoch {n} \\ distribution"]
_TAG_SETS = ["tlp:green", 'tlp:amber\x1fmisp-galaxy:threat-actor="APT 28"',
             'tlp:white\x1fosint:source-type="blog-post"\x1fcircl:incident="malware"', "",
             "tlp:red\x1fPAP:GREEN\x1fworkflow:state=\"complete\"\x1fcaf\u00e9; with spaces"]
_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)


def _fixed_width(matrix: np.ndarray) -> pa.Array:
    """Rows of an (n, width) uint8 matrix as an arrow string array, without a Python loop."""
    rows, width = matrix.shape
    offsets = np.arange(rows + 1, dtype=np.int32) * width
    return pa.StringArray.from_buffers(rows, pa.py_buffer(offsets),
                                       pa.py_buffer(np.ascontiguousarray(matrix).tobytes()))


def _hex(rng: np.random.Generator, count: int, digits: int) -> pa.Array:
    return _fixed_width(_HEX[rng.integers(0, 16, (count, digits))])


def _uuids(rng: np.random.Generator, count: int) -> pa.Array:
    digits = _HEX[rng.integers(0, 16, (count, 32))]
    digits[:, 12] = ord("4")
    parts = [digits[:, 0:8], digits[:, 8:12], digits[:, 12:16], digits[:, 16:20], digits[:, 20:]]
    dash = np.full((count, 1), ord("-"), dtype=np.uint8)
    return _fixed_width(np.hstack([parts[0], dash, parts[1], dash, parts[2], dash, parts[3],
                                   dash, parts[4]]))


def _text(numbers: np.ndarray) -> pa.Array:
    return pc.cast(pa.array(numbers), pa.string())


def _join(*pieces: str | pa.Array) -> pa.Array:
    count = max(len(piece) for piece in pieces if isinstance(piece, pa.Array))
    arrays = [piece if isinstance(piece, pa.Array) else pa.repeat(pa.scalar(piece), count)
              for piece in pieces]
    return pc.binary_join_element_wise(*arrays, "")


def _pick(rng: np.random.Generator, choices: list[str], count: int) -> pa.Array:
    return pa.array(choices).take(pa.array(rng.integers(0, len(choices), count)))


def _templated(rng: np.random.Generator, templates: list[str], numbers: pa.Array) -> pa.Array:
    """Each row one of `templates`, its `{n}` (at most one) replaced by the row's number."""
    chosen = rng.integers(0, len(templates), len(numbers))
    split = [template.split("{n}") for template in templates]
    before = pa.array([parts[0] for parts in split]).take(pa.array(chosen))
    after = pa.array([parts[-1] for parts in split]).take(pa.array(chosen))
    has_number = pa.array(np.array(["{n}" in template for template in templates])[chosen])
    return _join(before, pc.if_else(has_number, numbers, ""), after)


def _ipv4(rng: np.random.Generator, count: int) -> pa.Array:
    octets = [_FIRST_OCTETS[rng.integers(0, len(_FIRST_OCTETS), count)],
              rng.integers(0, 256, count), rng.integers(0, 256, count),
              rng.integers(1, 255, count)]
    return _join(_text(octets[0]), ".", _text(octets[1]), ".", _text(octets[2]), ".",
                 _text(octets[3]))


def _ips(rng: np.random.Generator, count: int) -> pa.Array:
    """IPv4 and, one in twenty, global IPv6 in 2a0X::/16 (groups of four decimal digits
    are valid hex groups, and keep the generation free of per-row formatting)."""
    v6 = _join("2a0", _text(rng.integers(1, 10, count)), ":",
               _text(rng.integers(1000, 10000, count)), ":",
               _text(rng.integers(1000, 10000, count)), "::",
               _text(rng.integers(1000, 10000, count)))
    return pc.if_else(pa.array(rng.random(count) < 0.05), v6, _ipv4(rng, count))


def _names(rng: np.random.Generator, count: int, universe: int) -> pa.Array:
    numbers = _text(rng.integers(0, universe, count))
    name = _join(_pick(rng, _WORDS, count), numbers, ".", _pick(rng, _TLDS, count))
    upper = pa.array(rng.random(count) < 0.05)
    return pc.if_else(upper, pc.ascii_upper(name), name)


def _values(rng: np.random.Generator, misp_type: str, count: int, universe: int) -> pa.Array:
    numbers = _text(rng.integers(0, universe, count))
    if misp_type in ("ip-dst", "ip-src"):
        return _ips(rng, count)
    if misp_type == "ip-dst|port":
        return _join(_ipv4(rng, count), "|", _text(rng.integers(1, 65536, count)))
    if misp_type == "domain":
        return _names(rng, count, universe)
    if misp_type == "hostname":
        return _join(_pick(rng, ["www", "cdn", "mx1", "dl"], count), ".",
                     _names(rng, count, universe))
    if misp_type == "domain|ip":
        return _join(_names(rng, count, universe), "|", _ipv4(rng, count))
    if misp_type == "url":
        host = pc.if_else(pa.array(rng.random(count) < 0.1), _ipv4(rng, count),
                          pc.ascii_lower(_names(rng, count, universe)))
        scheme = _pick(rng, ["http://"] * 7 + ["https://"] * 2 + [""], count)
        return _join(scheme, host, _templated(rng, _PATHS, numbers))
    if misp_type == "filename|sha256":
        return _join("invoice_", numbers, ".exe|", _hex(rng, count, 64))
    digits = {"md5": 32, "sha1": 40, "sha256": 64, "ja3-fingerprint-md5": 32}[misp_type]
    return _hex(rng, count, digits)


def pulled_attributes(count: int, seed: int = SEED) -> pd.DataFrame:
    """`count` IDS-flagged attributes in PULLED_ATTRIBUTE_COLUMNS, in events of ~400."""
    rng = np.random.default_rng(seed)
    names = list(TYPE_SHARES)
    shares = np.array(list(TYPE_SHARES.values()))
    types = np.sort(rng.choice(len(names), count, p=shares / shares.sum()))
    values = pa.concat_arrays([
        _values(rng, name, int((types == code).sum()), 10 * count)
        for code, name in enumerate(names)])
    order = rng.permutation(count)  # types mixed, not in blocks
    events = max(1, count // 400)
    event_of = np.sort(rng.integers(0, events, count))
    event_uuids = _uuids(rng, events)
    infos = _templated(rng, _INFOS, _text(np.arange(events)))
    event_tags = _pick(rng, _TAG_SETS, events)
    extra_tag = rng.random(count) < 0.05
    tags = pc.if_else(pa.array(extra_tag),
                      _join(event_tags.take(pa.array(event_of)),
                            f"{TAG_SEPARATOR}kill-chain:Command and Control"),
                      event_tags.take(pa.array(event_of)))
    moment = pd.Timestamp("2026-11-30T03:00:00Z")
    frame = pd.DataFrame({
        "attribute_uuid": pd.arrays.ArrowStringArray(_uuids(rng, count)),
        "event_uuid": pd.arrays.ArrowStringArray(event_uuids.take(pa.array(event_of))),
        "event_info": pd.arrays.ArrowStringArray(infos.take(pa.array(event_of))),
        "event_date": moment, "attribute_timestamp": moment,
        "type": np.array(names, dtype=object)[types[order]],
        "category": "Network activity",
        "value": pd.arrays.ArrowStringArray(values.take(pa.array(order))),
        "to_ids": True, "deleted": False,
        "tags": pd.arrays.ArrowStringArray(tags),
    })
    return frame.astype(PULLED_ATTRIBUTE_COLUMNS)


def synthetic_indicators(count: int) -> pd.DataFrame:
    indicators, problems, _ = normalize_rule_indicators(pulled_attributes(count))
    assert not problems, problems[:3]  # every generated value is a valid indicator
    return indicators


def customizations(indicators: pd.DataFrame) -> Customizations:
    """What an analyst's file holds: a few disables, a threshold, a drop and a modify."""
    uuids = indicators["attribute_uuid"].iloc[:: max(1, len(indicators) // 12)].tolist()
    lines = [f"disable {uuid}" for uuid in uuids[:6]]
    lines += [f"threshold {uuids[6]} type limit, track by_src, count 1, seconds 3600",
              f"drop {uuids[7]}", f'modify {uuids[8]} "classtype:trojan-activity" '
                                  '"classtype:policy-violation"']
    return parse_customizations("\n".join(lines), "bench.conf")


def _settings(output_dir: Path, threshold: int) -> RulesSettings:
    return RulesSettings(output_dir=output_dir, sid_range_start=SID_RANGE[0],
                         sid_range_end=SID_RANGE[1], dataset_threshold=threshold)


def _update(indicators: pd.DataFrame, settings: RulesSettings, sid_db: Path,
            custom: Customizations, publish_times: list[float]) -> RulesetBuild:
    """One update; the seconds its publish took are appended to `publish_times`."""
    build = build_ruleset(indicators, settings, sid_db, custom, misp_url=MISP_URL)
    start = time.perf_counter()
    publish_ruleset(settings.output_dir, build.files, keep=settings.history_keep)
    publish_times.append(time.perf_counter() - start)
    return build


def _first_builds(indicators: pd.DataFrame, threshold: int, custom: Customizations,
                  runs: int, scratch: Path) -> tuple[Timing, float, dict[str, bytes]]:
    """Medians of `runs` first builds, each into a fresh directory and sid store (removed
    after its run, outside the timing): whole update, its publish; the last files."""
    timings: list[Timing] = []
    publish_times: list[float] = []
    files: dict[str, bytes] = {}
    for attempt in range(runs):
        work = scratch / f"first-{threshold}-{attempt}"
        settings = _settings(work / "rules", threshold)
        timing, build = timed(functools.partial(
            _update, indicators, settings, work / "sids.sqlite", custom, publish_times))
        files = build.files
        timings.append(timing)
        shutil.rmtree(work)
    return median_timing(timings), statistics.median(publish_times), files


def _steady_builds(size: int, indicators: pd.DataFrame, threshold: int,
                   custom: Customizations, runs: int, scratch: Path,
                   ) -> tuple[Timing, float, tuple[Timing, float] | None]:
    """Medians of `runs` daily updates over the store and ruleset a first build left:
    whole update, its publish, and both in fresh processes (None past
    FRESH_PROCESS_MAX_SIZE). `indicators` are `synthetic_indicators(size)`, which a fresh
    process generates again."""
    work = scratch / f"steady-{threshold}"
    settings = _settings(work / "rules", threshold)
    _update(indicators, settings, work / "sids.sqlite", custom, [])
    fresh = None
    if size <= FRESH_PROCESS_MAX_SIZE:
        # one process per run (maxtasksperchild), as Prefect starts one per flow run
        with multiprocessing.get_context("spawn").Pool(1, maxtasksperchild=1) as worker:
            timings, publishes = zip(*(worker.apply(_fresh_process_update, (
                size, threshold, work)) for _ in range(runs)), strict=True)
            fresh = median_timing(list(timings)), statistics.median(publishes)
    publish_times: list[float] = []
    timing, _ = median_timed(
        lambda: _update(indicators, settings, work / "sids.sqlite", custom, publish_times),
        runs)
    shutil.rmtree(work)
    return timing, statistics.median(publish_times), fresh


# a fresh process regenerates its indicators: at 5M that alone is minutes per run
FRESH_PROCESS_MAX_SIZE = 1_000_000


def _fresh_process_update(size: int, threshold: int, work: Path) -> tuple[Timing, float]:
    """One steady update over `work`, timed in this (new) process, and its publish; its
    indicators are generated again from the seed, outside the timing."""
    indicators = synthetic_indicators(size)
    custom = customizations(indicators)
    settings = _settings(work / "rules", threshold)
    publish_times: list[float] = []
    timing, build = timed(functools.partial(_update, indicators, settings,
                                            work / "sids.sqlite", custom, publish_times))
    if build.rule_changes != {"added": 0, "removed": 0, "changed": 0}:
        raise RuntimeError(f"not the update of the same indicators: {build.rule_changes}")
    return timing, publish_times[0]


def write_floor(data: bytes, directory: Path, runs: int) -> float:
    """The same bytes as one plain write and fsync into a new file, as `publish_ruleset`
    writes new files: what the disk and page cache cost, the least any writer pays."""
    times = []
    for attempt in range(runs):
        path = directory / f"floor-{attempt}.bin"

        def write(path: Path = path) -> None:
            with open(path, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())

        seconds, _ = median_seconds(write, 1)
        times.append(seconds)
        path.unlink()
    return statistics.median(times)


def _case_figures(label: str, timing: Timing, publish: float, size: int, written: int,
                  floor: float, is_target: bool) -> list[Figure]:
    seconds = timing.wall
    target, met = ("< 2 s", seconds < TARGET_SECONDS) if is_target else ("", None)
    cores = os.cpu_count() or 1
    return [Figure(NAME, f"{label}: rendered+written", seconds, "s", target, met),
            Figure(NAME, f"{label}: of which publish (write, fsync, switch)", publish, "s"),
            Figure(NAME, f"{label}: per M indicators", seconds / size * 1e6, "s/M"),
            Figure(NAME, f"{label}: CPU in user mode, all threads", timing.user, "s"),
            Figure(NAME, f"{label}: CPU in kernel mode (page faults, writes)", timing.system,
                   "s"),
            Figure(NAME, f"{label}: least wall on {cores} cores (CPU / cores)",
                   timing.cpu / cores, "s"),
            Figure(NAME, f"{label}: output rate", written / seconds / 1e6, "MB/s"),
            Figure(NAME, f"{label}: time / write floor", seconds / floor, "x")]


def _size_figures(size: int, runs: int, thresholds: dict[str, int]) -> list[Figure]:
    indicators = synthetic_indicators(size)
    custom = customizations(indicators)
    figures: list[Figure] = []
    with tempfile.TemporaryDirectory(prefix="bench-rules-") as scratch_name:
        scratch = Path(scratch_name)
        for name, threshold in thresholds.items():
            label = f"{size_label(size)} {name}"
            first, first_publish, files = _first_builds(indicators, threshold, custom, runs,
                                                        scratch)
            written = sum(len(data) for data in files.values())
            rules = files["misp.rules"].count(b"\n") - 1  # the header is one comment line
            floor = write_floor(b"".join(files.values()), scratch, runs)
            del files
            steady, steady_publish, fresh = _steady_builds(size, indicators, threshold,
                                                           custom, runs, scratch)
            is_target = size == TARGET_SIZE and threshold > size
            figures += [Figure(NAME, f"{label}: Suricata rules", rules, "rules"),
                        Figure(NAME, f"{label}: output, all files", written / 1e6, "MB"),
                        Figure(NAME, f"{label}: plain write floor", written / floor / 1e6,
                               "MB/s")]
            figures += _case_figures(f"{label}, first build", first, first_publish, size,
                                     written, floor, is_target)
            figures += _case_figures(f"{label}, steady state", steady, steady_publish, size,
                                     written, floor, is_target)
            if fresh is not None:
                figures += _case_figures(f"{label}, steady state, fresh process", *fresh,
                                         size, written, floor, is_target)
    return figures


def _thresholds(size: int) -> dict[str, int]:
    """One rule per indicator (the threshold above the size) and the default settings. At
    5M, one rule each is 5.5M rules and 4 GB of output: rule text is rendered in blocks
    (one arrow string array stops at 2 GiB); the process peaks at about 13 GB."""
    return {"one rule each": size + 1, "default settings": RulesSettings().dataset_threshold}


def run(quick: bool) -> list[Figure]:
    sizes = {5_000: 2} if quick else {100_000: 5, 1_000_000: 3, 5_000_000: 3}
    figures: list[Figure] = []
    for size, runs in sizes.items():
        figures += _size_figures(size, runs, _thresholds(size))
    return figures
