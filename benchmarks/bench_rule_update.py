"""Rule update end to end (issue #6, benchmark 3), without Prefect.

A MISP stand-in (a ThreadingHTTPServer on 127.0.0.1, keep-alive, in a process of its own
so it takes neither the GIL nor the memory measured here) serves pre-generated restSearch
pages shaped like MISP 2.5's with includeContext and includeEventTags, each after
LATENCY_SECONDS. The product path runs as the flow runs it: pull_misp_attributes ->
normalize_rule_indicators -> merge_indicators -> build_ruleset -> publish_ruleset, as a
first update (no indicator store, no sids yet).

Times are medians of several runs. Peak memory is the peak RSS growth of one more run in a
fresh process (Linux: VmHWM, reset before the run), not harness.peak_bytes: tracemalloc
slows the pull, Arrow's pool keeps one high-water mark per process (earlier, larger work
hides a later peak), and freeing a pulled table measured that way as a new process's first
work crashed libarrow here. 1M attributes are also pulled in pages of 1000 and 20000: the
pull's peak must not grow with the number of pages (bigger pages may cost more: the JSON
of each page in flight, `misp.concurrency` of them, is held at a time). Last, the pull
against a stand-in as slow per page as a real MISP, one page at a time and with the default
pages in flight.

    python benchmarks/run.py --only rule_update [--quick]
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from itertools import pairwise
from multiprocessing.connection import Connection
from pathlib import Path

import numpy as np
from pymisp import __version__ as pymisp_version
from pymisp.api import describe_types

from benchmarks.harness import SEED, Figure, median_seconds, size_label
from misp_ndr.config import MispSettings, RulesSettings
from tasks.indicator_store import merge_indicators
from tasks.misp_pull import AttributeQuery, PullResult, pull_misp_attributes
from tasks.rule_indicators import HANDLED_TYPES, normalize_rule_indicators
from tasks.ruleset_build import build_ruleset
from tasks.ruleset_files import publish_ruleset

NAME = "rule_update"
LATENCY_SECONDS = 0.005  # per restSearch request, before the answer
# A MISP 2.5.1 built paged JSON of IDS attributes in about 0.23 s per 10k (measured on one
# with 50k): what a page of 5000 costs there before its first byte
MISP_PAGE_SECONDS = 0.115
WORKER_TIMEOUT = 900  # seconds for one measured run in a fresh process
ATTRIBUTES_PER_EVENT = 100
PAGE_SIZE = RulesSettings().page_size  # the default, 5000
STAGES = ("pull", "normalize", "merge", "build", "write")
LINEAR = 1.25  # 1M may cost this much more per attribute than 100k and still count as linear
FLAT = 1.1  # twenty times the pages may cost this much more memory (they should cost less)
API_KEY = "bench-key-0123456789abcdef0123456789abcdef"
# A mix like a CSIRT's MISP: mostly addresses and names, some URLs, hashes and pairs.
TYPES = ("ip-dst", "ip-dst", "ip-dst", "ip-dst", "ip-src", "ip-dst|port", "domain", "domain",
         "domain|ip", "hostname", "url", "md5", "sha256")
_CATEGORIES = {"md5": "Payload delivery", "sha256": "Payload delivery"}

# One attribute as MISP 2.5 answers restSearch with includeContext and includeEventTags:
# the event's tags come back on the attribute as well, marked inherited.
_ATTRIBUTE = (
    '{"id":"%(id)d","event_id":"%(event)d","object_id":"0","object_relation":null,'
    '"category":"%(category)s","type":"%(type)s","to_ids":true,"uuid":"%(uuid)s",'
    '"timestamp":"%(timestamp)d","distribution":"5","sharing_group_id":"0","comment":"",'
    '"deleted":false,"disable_correlation":false,"first_seen":null,"last_seen":null,'
    '"value":"%(value)s","Event":%(event_json)s,"Tag":%(tags)s}'
)
_EVENT = (
    '{"org_id":"1","distribution":"1","id":"%(id)d","info":"Campaign %(id)d: loader C2",'
    '"orgc_id":"1","uuid":"e0000000-0000-4000-8000-%(id)012d","date":"%(date)s",'
    '"published":true,"analysis":"2","threat_level_id":"2",'
    '"publish_timestamp":"%(published)d","Tag":%(tags)s}'
)
_TAG = ('{"id":"%d","name":"%s","colour":"#33FF00","numerical_value":null,'
        '"is_galaxy":false,"local":false%s}')


def generate_pages(attributes: int, page_size: int, today: date) -> list[bytes]:
    """restSearch answers for pages 1.. (deterministic for SEED and `today`), built from
    templates: a million attributes take seconds, not minutes."""
    rng = np.random.default_rng(SEED)
    octets = rng.integers(1, 255, size=(attributes, 4)).tolist()
    first = rng.integers(1, 224, size=attributes).tolist()
    ports = rng.integers(1, 65536, size=attributes).tolist()
    stamp = int(datetime.combine(today, datetime.min.time(), UTC).timestamp())
    events = [_event(number, today, stamp)
              for number in range((attributes + ATTRIBUTES_PER_EVENT - 1)
                                  // ATTRIBUTES_PER_EVENT)]
    def record(n: int) -> str:
        kind = TYPES[n % len(TYPES)]
        address = f"{first[n]}.{octets[n][1]}.{octets[n][2]}.{octets[n][3]}"
        event_json, inherited = events[n // ATTRIBUTES_PER_EVENT]
        own = f',{_TAG % (900, "kill-chain:c2", "")}' if n % 7 == 0 else ""
        return _ATTRIBUTE % {
            "id": n + 1, "event": n // ATTRIBUTES_PER_EVENT + 1, "type": kind,
            "category": _CATEGORIES.get(kind, "Network activity"),
            "uuid": f"a0000000-0000-4000-8000-{n:012d}", "timestamp": stamp - n % 86400,
            "value": _VALUES[kind](n, address, ports[n]), "event_json": event_json,
            "tags": f"[{inherited}{own}]",
        }

    # page by page: at 5M attributes, the records of every page at once would be 6 GB more
    pages = (",".join(map(record, range(start, min(start + page_size, attributes))))
             for start in range(0, attributes, page_size))
    return [f'{{"response":{{"Attribute":[{page}]}}}}'.encode() for page in pages]


def _event(number: int, today: date, stamp: int) -> tuple[str, str]:
    """(the event's JSON, its tags as inherited attribute tags)."""
    names = ["tlp:green", f"misp-galaxy:threat-actor=\"Actor {number % 40}\""]
    names = [name.replace('"', '\\"') for name in names]
    own = ",".join(_TAG % (i + 1, name, "") for i, name in enumerate(names))
    inherited = ",".join(_TAG % (i + 1, name, ',"inherited":1') for i, name in enumerate(names))
    day = (today - timedelta(days=number % 14)).isoformat()
    event = _EVENT % {"id": number + 1, "date": day, "published": stamp - number,
                      "tags": f"[{own}]"}
    return event, inherited


_VALUES: dict[str, Callable[[int, str, int], str]] = {
    "ip-dst": lambda n, address, port: address,
    "ip-src": lambda n, address, port: address,
    "ip-dst|port": lambda n, address, port: f"{address}|{port}",
    "domain": lambda n, address, port: f"bad{n}.example.com",
    "hostname": lambda n, address, port: f"cdn{n}.bad.example.net",
    "domain|ip": lambda n, address, port: f"c2-{n}.example.org|{address}",
    "url": lambda n, address, port: f"http://bad{n}.example.com/p/{n}?q={n}",
    "md5": lambda n, address, port: f"{n:032x}",
    "sha256": lambda n, address, port: f"{n:064x}",
}


def _serve(attributes: int, page_size: int, latency: float, today: date,
           ready: Connection) -> None:
    """The stand-in process: generate, then answer until killed."""
    pages = generate_pages(attributes, page_size, today)
    fixed = {"/servers/getVersion": {"version": "2.5.1",
                                     "pymisp_recommended_version": pymisp_version},
             "/users/view/me": {"User": {"id": "1", "email": "bench@example.org"},
                                "Role": {"perm_add": True}, "UserSetting": {}},
             "/attributes/describeTypes.json": {"result": describe_types}}
    empty = b'{"response":{"Attribute":[]}}'

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as a MISP behind Apache or nginx

        def _send(self, status: int, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            self._send(200, json.dumps(fixed.get(self.path.split("?")[0], {})).encode())

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            time.sleep(latency)
            if self.path != "/attributes/restSearch" or body.get("limit") != page_size:
                self._send(400, b'{"message":"not what the stand-in serves"}')
                return
            number = body["page"]
            self._send(200, pages[number - 1] if number <= len(pages) else empty)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    ready.send((server.server_port, len(pages), sum(map(len, pages))))
    server.serve_forever()


class MispStandIn:
    """The stand-in process, for `with`: generation happens before `url` is known."""

    def __init__(self, attributes: int, page_size: int,
                 latency: float = LATENCY_SECONDS) -> None:
        context = multiprocessing.get_context("spawn")
        receiving, sending = context.Pipe(duplex=False)
        self._process = context.Process(
            target=_serve, args=(attributes, page_size, latency,
                                 datetime.now(UTC).date(), sending), daemon=True)
        self._process.start()
        port, self.pages, self.page_bytes = receiving.recv()
        self.url = f"http://127.0.0.1:{port}"

    def __enter__(self) -> MispStandIn:
        return self

    def __exit__(self, *exc: object) -> None:
        self._process.terminate()
        self._process.join()


def pull(url: str, page_size: int, in_flight: int = MispSettings().concurrency) -> PullResult:
    settings = MispSettings(url=url, api_key=API_KEY, timeout=60, concurrency=in_flight)
    return pull_misp_attributes(settings, AttributeQuery(types=list(HANDLED_TYPES)), page_size)


def rule_update(url: str, page_size: int) -> tuple[int, list[float]]:
    """The flow's path in a scratch directory. Returns the rules written and the clock
    before the first stage and after each."""
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        rules = RulesSettings(output_dir=work / "rules")
        marks = [time.perf_counter()]
        pulled = pull(url, page_size)
        marks.append(time.perf_counter())
        fresh, _, _ = normalize_rule_indicators(pulled.attributes)
        marks.append(time.perf_counter())
        merged = merge_indicators(None, pulled.attributes, fresh, full=True,
                                  max_event_age_days=rules.max_event_age_days,
                                  now=datetime.now(UTC))
        marks.append(time.perf_counter())
        build = build_ruleset(merged.indicators, rules, work / "sids.sqlite", None, url)
        marks.append(time.perf_counter())
        publish_ruleset(rules.output_dir, build.files, keep=rules.history_keep)
        marks.append(time.perf_counter())
        return len(build.lines), marks


def fresh_peak(what: str, url: str, page_size: int) -> int:
    """Peak RSS growth of the pull (`what` "pull") or of the whole update ("update"), in a
    new process, so that nothing earlier in this one (freed but kept by the allocator)
    can hide any."""
    return _in_fresh_process(what, url, page_size)[0]


def _in_fresh_process(what: str, url: str, page_size: int,
                      ) -> tuple[int, tuple[int, list[float]] | None]:
    with multiprocessing.get_context("spawn").Pool(1) as worker:
        # a worker that dies loses its task: wait a bounded time, not forever
        return worker.apply_async(_peak_growth, (what, url, page_size)).get(WORKER_TIMEOUT)


def _peak_growth(what: str, url: str, page_size: int,
                 ) -> tuple[int, tuple[int, list[float]] | None]:
    """The peak, and for an update what `rule_update` returns."""
    _quiet_pages()
    Path("/proc/self/clear_refs").write_text("5")  # Linux: high-water mark := current RSS
    before = _status_bytes("VmHWM")
    outcome = None
    if what == "pull":
        pull(url, page_size)
    else:
        outcome = rule_update(url, page_size)
    return _status_bytes("VmHWM") - before, outcome


def _status_bytes(field: str) -> int:
    """A memory figure of this process from /proc/self/status (given there in kB)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    raise LookupError(field)


def _quiet_pages() -> None:
    """The pull logs one line per page: a thousand lines would bury the table."""
    logging.getLogger("tasks.misp_pull").setLevel(logging.WARNING)


def measure_update(attributes: int, page_size: int, runs: int) -> list[Figure]:
    """Stage medians, rates, and the peaks of the pull and of the whole update."""
    case = f"{size_label(attributes)} attributes, pages of {page_size}"
    stage_times: dict[str, list[float]] = {stage: [] for stage in STAGES}

    def timed(url: str) -> int:
        rules, marks = rule_update(url, page_size)
        for stage, (start, end) in zip(STAGES, pairwise(marks), strict=True):
            stage_times[stage].append(end - start)
        return rules

    with MispStandIn(attributes, page_size) as misp:
        total, rules = median_seconds(lambda: timed(misp.url), runs)
        pull_peak = fresh_peak("pull", misp.url, page_size)
        update_peak = fresh_peak("update", misp.url, page_size)
    seconds = {stage: statistics.median(times) for stage, times in stage_times.items()}
    return [
        *(Figure(NAME, f"{case}: {stage}", seconds[stage], "s") for stage in STAGES),
        Figure(NAME, f"{case}: total, {rules} rules", total, "s"),
        Figure(NAME, f"{case}: total per million attributes", total * 1e6 / attributes, "s/M"),
        *_pull_figures(case, attributes, misp.pages, seconds["pull"], pull_peak),
        Figure(NAME, f"{case}: peak memory, whole update", update_peak / 2**20, "MiB"),
        Figure(NAME, f"{case}: peak memory per attribute, whole update",
               update_peak / attributes, "bytes"),
    ]


def measure_large_update(attributes: int, page_size: int) -> list[Figure]:
    """One update in a fresh process, its stage times and its peak from that same run: at
    5M attributes a run takes minutes and about 12 GB, so it is run once (no median) and
    the pull's own peak is not measured apart."""
    case = f"{size_label(attributes)} attributes, pages of {page_size}"
    with MispStandIn(attributes, page_size) as misp:
        peak, outcome = _in_fresh_process("update", misp.url, page_size)
    assert outcome is not None
    rules, marks = outcome
    seconds = dict(zip(STAGES, (end - start for start, end in pairwise(marks)), strict=True))
    total = marks[-1] - marks[0]
    return [
        *(Figure(NAME, f"{case}: {stage}", seconds[stage], "s") for stage in STAGES),
        Figure(NAME, f"{case}: total, {rules} rules", total, "s"),
        Figure(NAME, f"{case}: total per million attributes", total * 1e6 / attributes, "s/M"),
        Figure(NAME, f"{case}: pull, {misp.pages} pages", misp.pages / seconds["pull"],
               "pages/s"),
        Figure(NAME, f"{case}: pull", attributes / seconds["pull"], "attributes/s"),
        Figure(NAME, f"{case}: peak memory, whole update", peak / 2**20, "MiB"),
        Figure(NAME, f"{case}: peak memory per attribute, whole update", peak / attributes,
               "bytes"),
    ]


def measure_pull(attributes: int, page_size: int, runs: int) -> list[Figure]:
    """The pull alone: its median time, rates and peak."""
    case = f"{size_label(attributes)} attributes, pages of {page_size}"
    with MispStandIn(attributes, page_size) as misp:
        seconds, _ = median_seconds(lambda: pull(misp.url, page_size), runs)
        peak = fresh_peak("pull", misp.url, page_size)
    return [Figure(NAME, f"{case}: pull", seconds, "s"),
            *_pull_figures(case, attributes, misp.pages, seconds, peak)]


def measure_pages_in_flight(attributes: int, page_size: int, runs: int) -> list[Figure]:
    """The pull against a stand-in that takes as long as a real MISP to build each page,
    one page at a time and with the default pages in flight: what `misp.concurrency`
    gains where MISP's time per page, not ours, is the larger part."""
    case = (f"{size_label(attributes)} attributes, pages of {page_size}, "
            f"{MISP_PAGE_SECONDS:.3f} s per page in MISP")
    default = MispSettings().concurrency
    with MispStandIn(attributes, page_size, MISP_PAGE_SECONDS) as misp:
        seconds = {in_flight: median_seconds(lambda n=in_flight: pull(misp.url, page_size, n),
                                             runs)[0] for in_flight in (1, default)}
    return [*(Figure(NAME, f"{case}: pull, {in_flight} in flight", time, "s")
              for in_flight, time in seconds.items()),
            Figure(NAME, f"{case}: pull speed-up, {default} in flight / 1",
                   seconds[1] / seconds[default], "x")]


def _pull_figures(case: str, attributes: int, pages: int, seconds: float,
                  peak: int) -> list[Figure]:
    return [
        Figure(NAME, f"{case}: pull per million attributes", seconds * 1e6 / attributes,
               "s/M"),
        Figure(NAME, f"{case}: pull, {pages} pages", pages / seconds, "pages/s"),
        Figure(NAME, f"{case}: pull", attributes / seconds, "attributes/s"),
        Figure(NAME, f"{case}: peak memory, pull", peak / 2**20, "MiB"),
        Figure(NAME, f"{case}: peak memory per attribute, pull", peak / attributes, "bytes"),
    ]


def verdicts(figures: list[Figure]) -> list[Figure]:
    """The issue's two requirements, from the figures measured: cost linear in the input
    (per-million time and per-attribute memory of 1M and 5M over 100k) and a pull whose
    peak does not grow with the number of pages (1000 pages over 50)."""
    value = {figure.case: figure.value for figure in figures}
    small, large = "100k attributes, pages of 5000", "1M attributes, pages of 5000"
    ratios = [
        (f"{figure} per attribute, {label} / 100k",
         value[f"{case}: {measured}"] / value[f"{small}: {measured}"], LINEAR)
        for label, case in (("1M", large), ("5M", "5M attributes, pages of 5000"))
        for figure, measured in (("total time", "total per million attributes"),
                                 ("peak memory", "peak memory per attribute, whole update"))
        if f"{case}: {measured}" in value
    ] + [
        ("pull peak memory, 1000 pages / 50 pages",
         value["1M attributes, pages of 1000: peak memory, pull"]
         / value["1M attributes, pages of 20000: peak memory, pull"], FLAT),
    ]
    return [Figure(NAME, case, ratio, "x", f"<= {limit}", ratio <= limit)
            for case, ratio, limit in ratios]


def run(quick: bool) -> list[Figure]:
    _quiet_pages()
    if quick:
        return [*measure_update(10_000, 2_000, runs=1),
                *measure_pages_in_flight(10_000, 2_000, runs=1)]
    figures = [*measure_update(100_000, PAGE_SIZE, runs=3),
               *measure_update(1_000_000, PAGE_SIZE, runs=3),
               *measure_large_update(5_000_000, PAGE_SIZE),
               *measure_pull(1_000_000, 1_000, runs=3),
               *measure_pull(1_000_000, 20_000, runs=3),
               *measure_pages_in_flight(1_000_000, PAGE_SIZE, runs=3)]
    return [*figures, *verdicts(figures)]
