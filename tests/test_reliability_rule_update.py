"""The rule update under faults: a run either ends with every expected indicator in the
ruleset exactly once, or fails, says why, and leaves the previous ruleset byte for byte.

MISP is the stand-in (`tests.misp_stand_in`) served over real HTTP on 127.0.0.1, so every
fault goes through the same urllib3 retries, timeouts and socket errors as in production.
The faults are `tests.fault_injection`'s (HTTP 500/502/503, 429 with Retry-After, no answer
until the client times out, a connection reset, a body cut off mid-transfer, a well-framed
but truncated JSON body, an HTML page with status 200) plus two of paging (a page that
repeats the previous one, an empty page), played by page number: at the first, a middle
and the last of 4 restSearch pages.
The feed source gets the same treatment (missing manifest, broken or truncated event file,
HTTP failures of a URL feed).

What reached the ruleset is counted from the files sensors read, per attribute UUID: the
rules of `misp.rules` (by their metadata), the rows of `sid-map.csv`, the Flowmon lists,
the Suricata hash lists and the Zeek intel file. The oracle is written here, per MISP type
(`OUTPUTS`), not taken from the product.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
import shutil
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

import flows.update_rules as flow_module
from flows.update_rules import update_rules
from misp_ndr.errors import MispNdrError
from tests.fault_injection import RETRY_AFTER_SECONDS, Answer, Fault, play
from tests.loopback_http import LoopbackRouter, Request, serving
from tests.misp_stand_in import API_KEY, MispStandIn
from tests.reliability import Recorder

pytestmark = pytest.mark.usefixtures("prefect_harness")

SEARCH_PATH = "/attributes/restSearch"
PAGE_SIZE = 100  # the smallest the settings allow
CLIENT_TIMEOUT = 0.5  # seconds a client waits for an answer (a timeout fault gives none)
EVENTS = ("5e1f0c62-6c5a-4c55-9e4e-0a6f7d3b2a10", "6f2a1d73-7d6b-4d66-8f5f-1b7e8e4c3b21",
          "7a3b2e84-8e7c-4e77-9a6a-2c8f9f5d4c32")
PER_EVENT = 110  # today 330 attributes: pages of 100, 100, 100, 30, then the empty one
DELETED, NOT_IDS = 5, 7  # attributes of the first event that were IDS yesterday, not today
TYPES = ("ip-dst", "domain", "hostname", "url", "ip-dst|port", "ja3-fingerprint-md5", "md5",
         "sha256", "domain|ip", "ip-src", "sha1", "filename|md5")
NAME_OUTPUTS = (("rule", "dns"), ("sid map", "dns"), ("rule", "tls"), ("sid map", "tls"),
                ("rule", "http"), ("sid map", "http"), ("flowmon", "misp-domain.txt"),
                ("zeek", "Intel::DOMAIN"))
IP_OUTPUTS = (("rule", "ip"), ("sid map", "ip"), ("flowmon", "misp-ip.txt"),
              ("zeek", "Intel::ADDR"))
# MISP type -> what each attribute of it must give in the output files, once each.
OUTPUTS: dict[str, tuple[tuple[str, str], ...]] = {
    "ip-dst": IP_OUTPUTS, "ip-src": IP_OUTPUTS, "ip-dst|port": IP_OUTPUTS,
    "domain": NAME_OUTPUTS, "hostname": NAME_OUTPUTS, "domain|ip": NAME_OUTPUTS + IP_OUTPUTS,
    "url": (("rule", "http"), ("sid map", "http"), ("flowmon", "misp-url.txt"),
            ("zeek", "Intel::URL")),
    "ja3-fingerprint-md5": (("rule", "ja3"), ("sid map", "ja3")),
    "md5": (("list", "misp-md5.list"), ("zeek", "Intel::FILE_HASH")),
    "filename|md5": (("list", "misp-md5.list"), ("zeek", "Intel::FILE_HASH")),
    "sha1": (("list", "misp-sha1.list"), ("zeek", "Intel::FILE_HASH")),
    "sha256": (("list", "misp-sha256.list"), ("zeek", "Intel::FILE_HASH")),
}
BUFFER_VARIANTS = {"dns.query": "dns", "tls.sni": "tls", "http.host": "http", "ja3.hash": "ja3"}


# --- the indicators MISP holds ------------------------------------------------------------


def hexdigest(algorithm: str, text: str) -> str:
    return hashlib.new(algorithm, text.encode()).hexdigest()


def address(number: int) -> str:
    return f"45.{100 + number // 200}.{number % 200}.{1 + number % 7}"


def misp_value(number: int, misp_type: str) -> str:
    """A distinct, valid value per attribute: output lines map back to one attribute."""
    values = {
        "ip-dst": address(number), "ip-src": address(number),
        "ip-dst|port": f"{address(number)}|{4000 + number}",
        "domain": f"evil-{number}.example", "hostname": f"www{number}.evil-{number}.example",
        "domain|ip": f"pair-{number}.evil.example|{address(number)}",
        "url": f"http://dl-{number}.evil.example/payload/{number}.bin",
        "ja3-fingerprint-md5": hexdigest("md5", f"ja3-{number}"),
        "md5": hexdigest("md5", f"md5-{number}"), "sha1": hexdigest("sha1", f"sha1-{number}"),
        "sha256": hexdigest("sha256", f"sha256-{number}"),
        "filename|md5": f"dropper-{number}.exe|{hexdigest('md5', f'file-{number}')}",
    }
    return values[misp_type]


def attribute_uuid(number: int) -> str:
    return f"a0000000-0000-4000-8000-{number:012d}"


def attribute(number: int, **fields: Any) -> dict[str, Any]:
    misp_type = TYPES[number % len(TYPES)]
    return {"uuid": attribute_uuid(number), "type": misp_type,
            "value": misp_value(number, misp_type), **fields}


def event_attributes(event: int, today: bool) -> list[dict[str, Any]]:
    numbers = range(event * PER_EVENT, (event + 1) * PER_EVENT)
    if not today:
        return [attribute(number) for number in numbers]
    changed = {DELETED: {"deleted": True}, NOT_IDS: {"to_ids": False}}
    return [attribute(number, **changed.get(number, {})) for number in numbers]


def publish(misp: MispStandIn, today: bool) -> None:
    """Yesterday: two events, all IDS. Today: republished with one attribute deleted and
    one no longer IDS, and a third event."""
    moment = datetime.now(UTC) - (timedelta(0) if today else timedelta(days=1))
    for event in range(3 if today else 2):
        misp.publish_event(EVENTS[event], f"Loader wave {event}", f"{moment:%Y-%m-%d}",
                           int(moment.timestamp()), event_attributes(event, today))


def expected_items(today: bool) -> set[tuple[str, str, str]]:
    numbers = range(3 * PER_EVENT) if today else range(2 * PER_EVENT)
    return {(attribute_uuid(number), *output) for number in numbers
            if not (today and number in (DELETED, NOT_IDS))
            for output in OUTPUTS[TYPES[number % len(TYPES)]]}


def value_index() -> dict[str, str]:
    """Every text an output file may hold for an attribute -> its UUID."""
    index = {}
    for number in range(3 * PER_EVENT):
        item = attribute(number)
        for part in item["value"].split("|"):
            index[part] = item["uuid"]
        if item["type"] == "url":
            index[item["value"].removeprefix("http://")] = item["uuid"]  # Zeek: no scheme
    return index


# --- what reached the ruleset -------------------------------------------------------------


def lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines() if path.exists() else []


def reached_items(out: Path) -> list[tuple[str | None, str, str]]:
    """Every per-attribute entry of every output file, copies included; entries that belong
    to no attribute of MISP count with UUID None (injected)."""
    index = value_index()
    items: list[tuple[str | None, str, str]] = []
    for rule in lines(out / "misp.rules"):
        if rule.startswith("#") or not rule.strip():
            continue
        uuid = re.search(r"misp_attribute_uuid ([0-9a-f-]+)", rule)
        if uuid is None and "misp_list " in rule:
            continue  # a rule loading a list: its entries are counted in the list
        buffer = re.search(r"; (dns\.query|tls\.sni|http\.host|ja3\.hash);", rule)
        items.append((uuid.group(1) if uuid else None, "rule",
                      BUFFER_VARIANTS[buffer.group(1)] if buffer else "ip"))
    if (out / "sid-map.csv").exists():
        for row in csv.DictReader(io.StringIO((out / "sid-map.csv").read_text())):
            if row["attribute_uuid"]:
                items.append((row["attribute_uuid"], "sid map", row["variant"]))
    for name in ("misp-ip.txt", "misp-domain.txt", "misp-url.txt"):
        items += [(index.get(line), "flowmon", name) for line in lines(out / name)]
    for name in ("misp-md5.list", "misp-sha1.list", "misp-sha256.list"):
        items += [(index.get(line), "list", name) for line in lines(out / name)]
    for line in lines(out / "misp.intel")[1:]:
        indicator, indicator_type, *_ = line.split("\t")
        items.append((index.get(indicator), "zeek", indicator_type))
    return items


def tree(folder: Path) -> dict[str, bytes]:
    return {str(path.relative_to(folder)): path.read_bytes()
            for path in sorted(folder.rglob("*")) if path.is_file()}


# --- a MISP whose restSearch misbehaves on schedule -----------------------------------------

STATUS = (Fault.HTTP_500, Fault.HTTP_502, Fault.HTTP_503)
RATE_LIMITED = Fault.HTTP_429
TIMEOUT = Fault.TIMEOUT
RESET = Fault.RESET
CUT_TRANSFER = Fault.CUT_TRANSFER
CUT_JSON = Fault.TRUNCATED_JSON
HTML = Fault.NON_JSON
REPEAT = "page repeats the previous one"  # paging faults: what a page holds, not how
EMPTY = "empty page"
ALWAYS = -1


@dataclass
class Schedule:
    """Faults to play: restSearch page number, or file name of a feed, -> (fault, how many
    requests it hits; ALWAYS: every one). `tests.fault_injection` counts requests per
    endpoint; a pull's position is its page, whatever retries came before."""

    faults: dict[int | str, tuple[str, int]] = field(default_factory=dict)
    played: list[tuple[int | str, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def take(self, key: int | str) -> str | None:
        with self.lock:
            fault, left = self.faults.get(key, ("", 0))
            if not left:
                return None
            self.faults[key] = (fault, left - 1 if left > 0 else ALWAYS)
            self.played.append((key, fault))
            return fault


class FaultyServer(LoopbackRouter):
    """The stand-in's routes (or a feed's files) over real HTTP; a restSearch request, or
    a GET of a file, plays what `schedule` holds for its page or file name, through
    `tests.fault_injection.play` (the router turns its transport faults into a silent
    connection, a TCP RST or a body shorter than its Content-Length)."""

    def __init__(self) -> None:
        self.schedule = Schedule()
        super().__init__()

    def answer(self, request: Request) -> Answer:
        search = request.method == "POST" and request.url.endswith(SEARCH_PATH)
        body = json.loads(request.body) if search else {}
        key = body["page"] if search else request.url.rsplit("/", 1)[-1]
        fault = self.schedule.take(key) if search or request.method == "GET" else None
        if fault == REPEAT:
            request = Request(request.method, request.url,
                              json.dumps({**body, "page": body["page"] - 1}).encode())
        elif fault == EMPTY:
            return 200, {"Content-Type": "application/json"}, page_answer([])
        answer = super().answer(request)
        return answer if fault in (None, REPEAT) else play(Fault(fault), answer)


def page_answer(attributes: list[Any]) -> str:
    return json.dumps({"response": {"Attribute": attributes}})


def configure(patcher: pytest.MonkeyPatch, misp_url: str | None) -> None:
    """Quick retries: per request (2, no backoff) and Prefect's own retry of the pull or
    the feed read (once, at once; production: 3, backing off from 10 s)."""
    if misp_url:
        patcher.setenv("MISP_NDR_MISP__URL", misp_url)
        patcher.setenv("MISP_NDR_MISP__API_KEY", API_KEY)
    patcher.setenv("MISP_NDR_MISP__RETRIES", "2")
    patcher.setenv("MISP_NDR_MISP__RETRY_BACKOFF", "0")
    patcher.setenv("MISP_NDR_MISP__TIMEOUT", str(CLIENT_TIMEOUT))
    patcher.setenv("MISP_NDR_RULES__PAGE_SIZE", str(PAGE_SIZE))
    for name in ("pull_misp_attributes_task", "read_feed_attributes_task"):
        patcher.setattr(flow_module, name, getattr(flow_module, name).with_options(
            retries=1, retry_delay_seconds=0))


# --- a feed of the same indicators ----------------------------------------------------------


def feed_files(today: bool) -> dict[str, str]:
    """The MISP feed of what MISP holds (yesterday or today): manifest and event files."""
    moment = datetime.now(UTC) - (timedelta(0) if today else timedelta(days=1))
    stamp = int(moment.timestamp())
    files, manifest = {}, {}
    for event in range(3 if today else 2):
        body = {"uuid": EVENTS[event], "info": f"Loader wave {event}",
                "date": f"{moment:%Y-%m-%d}", "published": True, "timestamp": stamp,
                "publish_timestamp": stamp, "Tag": [],
                "Attribute": [{"category": "Network activity", "to_ids": True,
                               "deleted": False, "timestamp": stamp, **item}
                              for item in event_attributes(event, today)]}
        files[f"{EVENTS[event]}.json"] = json.dumps({"Event": body})
        manifest[EVENTS[event]] = {key: body[key] for key in ("info", "date", "Tag")}
    files["manifest.json"] = json.dumps(manifest)
    return files


def write_feed(folder: Path, files: dict[str, str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text, encoding="utf-8")
    return folder


def serve_feed(server: FaultyServer, files: dict[str, str]) -> str:
    for name, text in files.items():
        server.add_callback("GET", f"{server.url}/feed/{name}",
                            lambda _request, text=text: (
                                200, {"Content-Type": "application/json"}, text))
    return f"{server.url}/feed/"


# --- yesterday's good ruleset, and today's run --------------------------------------------


@dataclass
class Ruleset:
    out: Path
    state: Path
    files: dict[str, bytes] = field(default_factory=dict)
    states: dict[str, bytes] = field(default_factory=dict)

    def freeze(self) -> Ruleset:
        self.files, self.states = tree(self.out), tree(self.state)
        return self


def build_yesterday(root: Path, source: str) -> Ruleset:
    """One real update against yesterday's MISP (or feed), in an environment of its own:
    module-scoped, so it runs before the per-test isolation."""
    ruleset = Ruleset(root / "rules", root / "state")
    with pytest.MonkeyPatch.context() as patcher, serving(FaultyServer()) as server:
        patcher.chdir(root)
        for name in [name for name in os.environ if name.startswith("MISP_NDR_")]:
            patcher.delenv(name)
        if source == "misp":
            configure(patcher, server.url)
            publish(MispStandIn(server, url=server.url), today=False)
            update_rules(output_dir=str(ruleset.out), state_dir=str(ruleset.state))
        else:
            configure(patcher, None)
            feed = write_feed(root / "feed", feed_files(today=False))
            update_rules(feed=str(feed), output_dir=str(ruleset.out),
                         state_dir=str(ruleset.state))
    return ruleset.freeze()


@pytest.fixture(scope="module")
def misp_yesterday(tmp_path_factory: pytest.TempPathFactory, prefect_harness: None) -> Ruleset:
    ruleset = build_yesterday(tmp_path_factory.mktemp("misp-yesterday"), "misp")
    assert ruleset.files and Counter(reached_items(ruleset.out)) == \
        Counter(expected_items(today=False))
    return ruleset


@pytest.fixture(scope="module")
def feed_yesterday(tmp_path_factory: pytest.TempPathFactory, prefect_harness: None) -> Ruleset:
    ruleset = build_yesterday(tmp_path_factory.mktemp("feed-yesterday"), "feed")
    assert Counter(reached_items(ruleset.out)) == Counter(expected_items(today=False))
    return ruleset


@dataclass
class Today:
    server: FaultyServer
    ruleset: Ruleset
    feed: str | None = None

    def update(self) -> Any:
        return update_rules(feed=self.feed, output_dir=str(self.ruleset.out),
                            state_dir=str(self.ruleset.state))


def copy_of(ruleset: Ruleset, root: Path) -> Ruleset:
    shutil.copytree(ruleset.out, root / "rules")
    shutil.copytree(ruleset.state, root / "state")
    return Ruleset(root / "rules", root / "state")


@pytest.fixture
def today(misp_yesterday: Ruleset, tmp_path: Path,
          monkeypatch: pytest.MonkeyPatch) -> Iterator[Today]:
    """Yesterday's ruleset in place; MISP holds today's attributes; nothing failed yet."""
    with serving(FaultyServer()) as server:
        configure(monkeypatch, server.url)
        publish(MispStandIn(server, url=server.url), today=True)
        yield Today(server, copy_of(misp_yesterday, tmp_path))


@pytest.fixture
def feed_today(feed_yesterday: Ruleset, tmp_path: Path,
               monkeypatch: pytest.MonkeyPatch) -> Iterator[Today]:
    """Yesterday's ruleset from a feed in place; the feed holds today's events, served over
    HTTP (`feed` is its URL; `write_feed` gives a directory instead)."""
    with serving(FaultyServer()) as server:
        configure(monkeypatch, None)
        yield Today(server, copy_of(feed_yesterday, tmp_path),
                    serve_feed(server, feed_files(today=True)))


def assert_untouched(now: Ruleset, before: Ruleset, reliability: Recorder, fault: str) -> None:
    """The failed run left the ruleset and the state (indicator store, sids, watermark) as
    they were, byte for byte; counted like a successful run, against yesterday's set."""
    assert tree(now.out) == before.files
    assert tree(now.state) == before.states
    reliability.check("rule update", fault, expected_items(today=False), reached_items(now.out))


# --- restSearch: one fault, retried -------------------------------------------------------

RETRIED = (*STATUS, RATE_LIMITED, TIMEOUT, RESET, CUT_TRANSFER)  # per request, or by Prefect
NOT_JSON = (CUT_JSON, HTML)  # a 200 whose body is no JSON: transient, the task retries
PAGES = {"first": 1, "middle": 3, "last": 4}  # of 4 pages holding attributes
# every position for one fault of each way of failing; 500 and 502 take 503's path
ONCE = [(fault, where) for fault in RETRIED for where in PAGES
        if fault not in ("HTTP 500", "HTTP 502") or where == "middle"]


@pytest.mark.parametrize(("fault", "where"), ONCE)
def test_a_fault_once_is_retried_and_every_indicator_is_in_the_ruleset_once(
    today: Today, retry_sleeps: list[float], reliability: Recorder, fault: str, where: str,
) -> None:
    page = PAGES[where]
    today.server.schedule.faults[page] = (fault, 1)

    report = today.update()

    assert today.server.schedule.played == [(page, fault)]
    assert report.pages == 4 and "incremental" in report.plan
    if fault == RATE_LIMITED:
        assert RETRY_AFTER_SECONDS in retry_sleeps  # honoured: urllib3 waited that long
    reliability.check("rule update", f"{fault} once on the {where} of 4 restSearch pages",
                      expected_items(today=True), reached_items(today.ruleset.out))


@pytest.mark.parametrize("fault", NOT_JSON)
def test_a_body_that_is_not_json_once_is_retried_within_the_run(
    today: Today, reliability: Recorder, fault: str,
) -> None:
    """A proxy's page or a cut body with status 200 is transient: the pull task's retry
    asks again and the update completes."""
    today.server.schedule.faults[3] = (fault, 1)

    report = today.update()

    assert today.server.schedule.played == [(3, fault)]
    assert "incremental" in report.plan
    reliability.check("rule update", f"{fault} once on the middle of 4 restSearch pages",
                      expected_items(today=True), reached_items(today.ruleset.out))


# --- restSearch: a fault that does not go away ---------------------------------------------

REASONS = {
    **dict.fromkeys(STATUS, r"HTTP 5xx after retries"),
    RATE_LIMITED: r"HTTP 429\) after retries",
    TIMEOUT: "timed out after retries",
    RESET: r"connection failed \(refused, reset or unreachable\) after retries",
    CUT_TRANSFER: "ChunkedEncodingError after retries",
    **dict.fromkeys(NOT_JSON, r"\(page 3\) with a body that is not JSON"),
}


@pytest.mark.parametrize("fault", [f for f in (*RETRIED, *NOT_JSON) if f not in STATUS[:2]])
def test_a_fault_that_persists_fails_the_update_and_keeps_the_ruleset(
    today: Today, misp_yesterday: Ruleset, retry_sleeps: list[float], reliability: Recorder,
    fault: str,
) -> None:
    today.server.schedule.faults[3] = (fault, ALWAYS)

    with pytest.raises(MispNdrError, match=REASONS[fault]) as failure:
        today.update()

    assert "(page 3)" in str(failure.value)
    if fault in RETRIED:
        assert len(today.server.schedule.played) > 1  # retried before giving up
    assert_untouched(today.ruleset, misp_yesterday, reliability,
                     f"{fault} on every try of the middle of 4 restSearch pages: refused, "
                     "previous ruleset kept")


@pytest.mark.parametrize(("where", "page"), [("middle", 3), ("empty last", 5)])
def test_a_page_repeating_the_previous_one_fails_the_update_and_keeps_the_ruleset(
    today: Today, misp_yesterday: Ruleset, reliability: Recorder, where: str, page: int,
) -> None:
    today.server.schedule.faults[page] = (REPEAT, 1)

    with pytest.raises(MispNdrError, match="does not honour paging"):
        today.update()

    assert_untouched(today.ruleset, misp_yesterday, reliability,
                     f"the {where} restSearch page repeats the one before: refused, previous "
                     "ruleset kept")


def test_an_empty_page_in_the_middle_does_not_end_the_pull(
    today: Today, reliability: Recorder,
) -> None:
    """Warninglists filter each page after paging: page 3 can come back empty with pages
    after it. Its attributes new today are (rightly) missing, yesterday's stay (a pull not
    serving an attribute does not delete it); page 4's must all be there."""
    today.server.schedule.faults[3] = (EMPTY, 1)

    today.update()

    # the pull asks for deleted and non-IDS attributes too (they leave the ruleset)
    emptied = {attribute_uuid(n) for n in range(2 * PAGE_SIZE, 3 * PAGE_SIZE)
               if n >= 2 * PER_EVENT}
    expected = {item for item in expected_items(today=True) if item[0] not in emptied}
    reliability.check("rule update", "restSearch page 3 of 5 empty (warninglists), pages "
                      "after it still read", expected, reached_items(today.ruleset.out))


# --- a MISP feed instead of restSearch -----------------------------------------------------

SECOND_EVENT = f"{EVENTS[1]}.json"


def break_manifest(folder: Path) -> None:
    (folder / "manifest.json").unlink()


def truncate_event(folder: Path) -> None:
    data = (folder / SECOND_EVENT).read_bytes()
    (folder / SECOND_EVENT).write_bytes(data[: len(data) // 2])


def remove_event(folder: Path) -> None:
    (folder / SECOND_EVENT).unlink()


@pytest.mark.parametrize(("fault", "damage", "reason"), [
    ("missing manifest.json", break_manifest, "manifest.json is missing"),
    ("an event file truncated to half its bytes", truncate_event,
     f"{SECOND_EVENT} is not valid JSON"),
    ("an event file the manifest lists is missing", remove_event,
     f"cannot read {SECOND_EVENT}"),
])
def test_a_broken_feed_directory_fails_the_update_and_keeps_the_ruleset(
    feed_today: Today, feed_yesterday: Ruleset, tmp_path: Path, reliability: Recorder,
    fault: str, damage: Any, reason: str,
) -> None:
    folder = write_feed(tmp_path / "feed", feed_files(today=True))
    damage(folder)
    feed_today.feed = str(folder)

    with pytest.raises(MispNdrError, match=re.escape(reason)):
        feed_today.update()

    assert_untouched(feed_today.ruleset, feed_yesterday, reliability,
                     f"feed directory: {fault}: refused, previous ruleset kept")


@pytest.mark.parametrize("fault", ["HTTP 503", CUT_TRANSFER])
def test_a_feed_url_failing_once_is_retried_and_complete(
    feed_today: Today, reliability: Recorder, fault: str,
) -> None:
    feed_today.server.schedule.faults[SECOND_EVENT] = (fault, 1)

    report = feed_today.update()

    assert feed_today.server.schedule.played == [(SECOND_EVENT, fault)]
    assert report.pages == 3
    reliability.check("rule update", f"feed URL: {fault} once on an event file",
                      expected_items(today=True), reached_items(feed_today.ruleset.out))


@pytest.mark.parametrize(("fault", "reason"), [
    ("HTTP 503", r"HTTP 503\) after retries"),
    (CUT_TRANSFER, "ChunkedEncodingError after retries"),
])
def test_a_feed_url_failing_for_good_fails_the_update_and_keeps_the_ruleset(
    feed_today: Today, feed_yesterday: Ruleset, reliability: Recorder, fault: str,
    reason: str,
) -> None:
    feed_today.server.schedule.faults[SECOND_EVENT] = (fault, ALWAYS)

    with pytest.raises(MispNdrError, match=reason) as failure:
        feed_today.update()

    assert SECOND_EVENT in str(failure.value)
    assert_untouched(feed_today.ruleset, feed_yesterday, reliability,
                     f"feed URL: {fault} on every try of an event file: refused, previous "
                     "ruleset kept")
