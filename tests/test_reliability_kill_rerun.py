"""Kill the real `misp-ndr` process with SIGKILL in the middle of a run, run the same command
again with the same state directory, and count what MISP and the sensors ended up with.

A crash is the fault no retry policy sees: the process is gone between MISP storing a write
and the process recording it (or between two files of a ruleset). What makes a re-run safe
is only the state each job keeps under `MISP_NDR_STATE_DIR` (export ledger, sighting ledger,
sid store, indicator store, watermarks) and how the outputs are replaced, so every test here
runs the real command line in a subprocess against MISP served over real HTTP on 127.0.0.1
(`MispStandIn` on a `LoopbackRouter`, a few ms of latency per request, 4 requests in
flight) and kills it at a moment chosen from the stand-in's own counters (or the output
directory), never after a fixed sleep.

The runs use one `prefect server start` shared by the module (`PREFECT_API_URL`): without
it each command would start an ephemeral Prefect server of its own, and a killed command
would leave that server behind.

A kill between the renames of a publish leaves a mix of two rulesets on disk for a moment;
its journal (tasks/ruleset_files.py) lets the next run put the previous one back first, and
`--rollback` after the rerun restores the previous good ruleset, not that mix.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tasks.misp_events import event_uuid
from tasks.ruleset_files import JOURNAL, MANIFEST, recover_interrupted
from tests.loopback_http import LoopbackRouter, Request, serving
from tests.misp_stand_in import API_KEY, MispStandIn
from tests.reliability import Recorder
from tests.test_deployments_on_prefect_server import Stack, free_port

REPO = Path(__file__).resolve().parent.parent
LATENCY = 0.003  # seconds per request: a MISP nearby
CONCURRENCY = "4"
RUN_SECONDS = 120  # a hung command fails the test instead of hanging the suite
EVENTS = 300  # detections in the export batch, one MISP event each
SIGHTINGS = 300  # indicators hit, one sighting each
SIGNATURE = 2024217
SENSOR = "proxy-1"
OLD_ATTRIBUTES = 300  # the previous good ruleset's indicators
NEW_ATTRIBUTES = 1200  # published since: the update pulls them in 12 pages of 100
PAGE_SIZE = "100"


# --- the machinery: a shared Prefect server, the command, the kill ----------------------


@pytest.fixture(scope="module")
def prefect_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """PREFECT_API_URL and PREFECT_HOME of a server every command of the module uses."""
    root = tmp_path_factory.mktemp("prefect-server")
    (root / "work").mkdir()
    prefect = {"PREFECT_HOME": str(root / "prefect-home"),
               "PREFECT_API_URL": f"http://127.0.0.1:{free_port()}/api"}
    server = Stack(root, {**base_env(), **prefect})
    try:
        server.start_server()
        yield prefect
    finally:
        server.stop()


def base_env() -> dict[str, str]:
    """The user's environment without their MISP_NDR_* and PREFECT_* settings, importing
    the code of this checkout whatever is installed."""
    env = {name: value for name, value in os.environ.items()
           if not name.startswith(("MISP_NDR_", "PREFECT_"))}
    env.update({
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        "PYTHONPATH": str(REPO),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    })
    return env


def cli_env(prefect: dict[str, str], misp: MispStandIn, state_dir: Path) -> dict[str, str]:
    """Quick retries (a kill, not a flaky MISP, is the fault here), 4 requests in flight."""
    return {**base_env(), **prefect,
            "MISP_NDR_MISP__URL": misp.url, "MISP_NDR_MISP__API_KEY": API_KEY,
            "MISP_NDR_MISP__RETRIES": "1", "MISP_NDR_MISP__RETRY_BACKOFF": "0",
            "MISP_NDR_MISP__CONCURRENCY": CONCURRENCY, "MISP_NDR_STATE_DIR": str(state_dir),
            "MISP_NDR_RULES__PAGE_SIZE": PAGE_SIZE}


@dataclass
class Command:
    """One `misp-ndr ...` invocation, run in `cwd` (where relative outputs land)."""

    args: list[str]
    env: dict[str, str]
    cwd: Path

    def start(self, log: Path) -> subprocess.Popen[bytes]:
        with log.open("wb") as output:
            return subprocess.Popen([sys.executable, "-m", "misp_ndr", *self.args],
                                    cwd=self.cwd, env=self.env, stdout=output,
                                    stderr=subprocess.STDOUT)

    def run(self, log: Path) -> None:
        """To completion: the re-run after a kill must succeed on its own."""
        code = finish(self.start(log))
        assert code == 0, log.read_text(errors="replace")[-4000:]


def finish(process: subprocess.Popen[bytes]) -> int:
    """Its exit code; a command hung past RUN_SECONDS is killed, not left running."""
    try:
        return process.wait(timeout=RUN_SECONDS)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        raise


class Killer:
    """SIGKILLs the process under test the moment `condition` first holds. The stand-in
    checks it right after each request it answered (the kill lands between MISP storing a
    write and the client reading the answer: the answer is lost); a watcher thread checks
    it for conditions on the output directory."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._process: subprocess.Popen[bytes] | None = None
        self._condition: Callable[[], bool] = lambda: False
        self.fired = False

    def arm(self, process: subprocess.Popen[bytes], condition: Callable[[], bool]) -> None:
        with self._lock:
            self._process, self._condition, self.fired = process, condition, False

    def disarm(self) -> None:
        with self._lock:
            self._process = None

    def check(self) -> None:
        with self._lock:
            if self._process is None or not self._condition():
                return
            self._process.kill()  # SIGKILL; Popen does not signal a process it reaped
            self._process, self.fired = None, True

    def watch(self, process: subprocess.Popen[bytes]) -> threading.Thread:
        """Check as fast as the GIL allows until the process has ended."""

        def poll() -> None:
            while process.poll() is None and not self.fired:
                self.check()
                time.sleep(0)

        thread = threading.Thread(target=poll, daemon=True)
        thread.start()
        return thread


class KillingRoutes:
    """What `MispStandIn` registers its routes on: the real router, each answer followed by
    `Killer.check`. (A helper here: `LoopbackRouter` has no hook after a callback.)"""

    def __init__(self, router: LoopbackRouter, killer: Killer) -> None:
        self._router, self._killer = router, killer

    def add_callback(self, method: str, url: Any, callback: Callable[[Request], Any]) -> None:
        def then_check(request: Request) -> Any:
            answer = callback(request)
            self._killer.check()
            return answer

        self._router.add_callback(method, url, then_check)

    def __getattr__(self, name: str) -> Any:  # get(), and whatever else the stand-in uses
        return getattr(self._router, name)


@contextmanager
def served_stand_in(killer: Killer) -> Iterator[MispStandIn]:
    router = LoopbackRouter(latency=LATENCY)
    misp = MispStandIn(KillingRoutes(router, killer), url=router.url)
    with serving(router):
        yield misp


@pytest.fixture
def killer() -> Killer:
    return Killer()


@pytest.fixture
def misp(killer: Killer) -> Iterator[MispStandIn]:
    """An empty MISP of its own for each test: the counts are the test's alone."""
    with served_stand_in(killer) as stand_in:
        yield stand_in


def kill_when(command: Command, log: Path, killer: Killer, condition: Callable[[], bool],
              watch: bool = False) -> None:
    """Start the command, SIGKILL it once `condition` holds; fail if it ended otherwise (a
    run that finished before the moment came proves nothing)."""
    process = command.start(log)
    killer.arm(process, condition)
    if watch:
        killer.watch(process)
    try:
        code = finish(process)
    finally:
        killer.disarm()
    assert killer.fired and code == -signal.SIGKILL, (
        f"not killed mid-run (exit {code}):\n{log.read_text(errors='replace')[-4000:]}")


# --- export --------------------------------------------------------------------------


def write_eve_batch(path: Path) -> list[tuple[str, str]]:
    """EVENTS Suricata alerts, each its own flow and external address; returns the
    (event UUID, address) each must become in MISP (UUIDs as the README defines them)."""
    expected, lines = [], []
    for number in range(EVENTS):
        flow_id, address = 7_000_000 + number, f"62.171.{number // 200}.{number % 200 + 1}"
        lines.append(json.dumps({
            "timestamp": "2026-11-20T08:15:02.123456+0000", "flow_id": flow_id,
            "event_type": "alert", "src_ip": "10.20.8.15", "src_port": 40000 + number,
            "dest_ip": address, "dest_port": 443, "proto": "TCP",
            "alert": {"signature_id": SIGNATURE, "signature": "ET MALWARE CnC Checkin",
                      "severity": 1}}))
        expected.append((event_uuid("suricata", f"{flow_id}-{SIGNATURE}"), address))
    path.write_text("\n".join(lines) + "\n")
    return expected


EXPORT_KILLS = {
    "first-write": ("SIGKILL just after the first event write, then rerun", 1),
    "mid-way": (f"SIGKILL mid-way (event write {EVENTS // 2} of {EVENTS}), then rerun",
                EVENTS // 2),
    "last-writes": (f"SIGKILL during the last writes (event write {EVENTS - 5} of {EVENTS}), "
                    "then rerun", EVENTS - 5),
}


@pytest.mark.parametrize("point", list(EXPORT_KILLS), ids=list(EXPORT_KILLS))
def test_export_killed_mid_run_then_rerun_leaves_every_event_and_attribute_once(
    point: str, tmp_path: Path, prefect_env: dict[str, str], misp: MispStandIn, killer: Killer,
    reliability: Recorder,
) -> None:
    fault, writes = EXPORT_KILLS[point]
    wanted = write_eve_batch(tmp_path / "eve.json")
    command = Command(["export", "--source", "suricata", "--input", str(tmp_path / "eve.json")],
                      cli_env(prefect_env, misp, tmp_path / "state"), tmp_path)
    kill_when(command, tmp_path / "killed.log", killer, lambda: len(misp.writes) >= writes)
    assert len(misp.events) < EVENTS, "the kill left events for the rerun"

    command.run(tmp_path / "rerun.log")
    expected = [*(("event", uuid) for uuid, _ in wanted),
                *(("attribute", uuid, "ip-dst", address) for uuid, address in wanted)]
    reached = [*(("event", uuid) for uuid in misp.events),
               *(("attribute", uuid, attribute["type"], attribute["value"])
                 for uuid, event in misp.events.items() for attribute in event["Attribute"])]
    reliability.check("export", fault, expected, reached)


# --- sightings -----------------------------------------------------------------------

SIGHTING_SOURCE = "kill-test/{sensor}"
HIT_DAY = datetime(2026, 11, 20, tzinfo=UTC)


def first_hit(number: int) -> datetime:
    """Indicator `number` is hit at this time and 20 minutes later: one sighting, at this
    time. Twelve hours of hits, so several sightings share a time (as in a real batch)."""
    return HIT_DAY + timedelta(hours=number % 12, minutes=5)


def sighted_indicators(misp: MispStandIn) -> list[dict[str, str]]:
    """SIGHTINGS IDS attributes of one published event in MISP."""
    attributes = [{"uuid": str(uuid.uuid5(uuid.NAMESPACE_URL, f"kill-test/sighted/{n}")),
                   "type": "ip-dst", "value": f"81.2.{n // 200}.{n % 200 + 1}"}
                  for n in range(SIGHTINGS)]
    misp.publish_event(str(uuid.uuid5(uuid.NAMESPACE_URL, "kill-test/sighted")),
                       "C2 addresses", "2026-11-19", 1795000000, attributes)
    return attributes


def write_hits(path: Path, attributes: list[dict[str, str]]) -> list[tuple[str, str, str]]:
    """The sensor's CSV: each indicator hit twice within one window. Returns the
    (attribute UUID, source, time) of the one sighting each must get."""
    rows, expected = ["value,time,sensor"], []
    source = SIGHTING_SOURCE.replace("{sensor}", SENSOR)
    for number, attribute in enumerate(attributes):
        first = first_hit(number)
        for moment in (first, first + timedelta(minutes=20)):
            rows.append(f"{attribute['value']},{moment:%Y-%m-%dT%H:%M:%SZ},{SENSOR}")
        expected.append((attribute["uuid"], source, str(int(first.timestamp()))))
    path.write_text("\n".join(rows) + "\n")
    return expected


SIGHTING_KILLS = {
    "first-write": ("SIGKILL just after the first sighting write, then rerun", 1),
    "mid-way": (f"SIGKILL mid-way (sighting write {SIGHTINGS // 2} of {SIGHTINGS}), then "
                "rerun", SIGHTINGS // 2),
    "last-writes": (f"SIGKILL during the last writes (sighting write {SIGHTINGS - 5} of "
                    f"{SIGHTINGS}), then rerun", SIGHTINGS - 5),
}


@pytest.mark.parametrize("point", list(SIGHTING_KILLS), ids=list(SIGHTING_KILLS))
def test_sightings_killed_mid_run_then_rerun_leave_every_sighting_once(
    point: str, tmp_path: Path, prefect_env: dict[str, str], misp: MispStandIn, killer: Killer,
    reliability: Recorder,
) -> None:
    fault, writes = SIGHTING_KILLS[point]
    expected = write_hits(tmp_path / "hits.csv", sighted_indicators(misp))
    command = Command(["sightings", "--source", "csv", "--input", str(tmp_path / "hits.csv"),
                       "--source-name", SIGHTING_SOURCE],
                      cli_env(prefect_env, misp, tmp_path / "state"), tmp_path)
    kill_when(command, tmp_path / "killed.log", killer,
              lambda: len(misp.sighting_requests) >= writes)
    assert len(misp.sightings) < SIGHTINGS, "the kill left sightings for the rerun"

    command.run(tmp_path / "rerun.log")
    reached = [(s["attribute_uuid"], s["source"], s["date_sighting"]) for s in misp.sightings]
    reliability.check("sightings", fault, expected, reached)


# --- rule update ---------------------------------------------------------------------

RULES_HEADER = b"# misp-ndr ruleset, "  # carries the minute it was built: not compared


def rule_events(label: str, count: int) -> Iterator[tuple[str, list[dict[str, str]]]]:
    """Events of 100 IDS attributes, half addresses, half domains."""
    prefix = "81.172" if label == "old" else "62.172"
    for start in range(0, count, 100):
        attributes = []
        for number in range(start, start + 100):
            value = (f"{label}-{number}.payload-cdn.net" if number % 2 else
                     f"{prefix}.{number // 250}.{number % 250 + 1}")
            attributes.append({
                "uuid": str(uuid.uuid5(uuid.NAMESPACE_URL, f"kill-test/{label}/{number}")),
                "type": "domain" if number % 2 else "ip-dst", "value": value})
        yield str(uuid.uuid5(uuid.NAMESPACE_URL, f"kill-test/{label}-event/{start}")), attributes


def publish_rule_events(misp: MispStandIn, label: str, count: int, published_at: int) -> None:
    day = datetime.fromtimestamp(published_at, UTC).date().isoformat()
    for event, attributes in rule_events(label, count):
        misp.publish_event(event, f"{label} C2 infrastructure", day, published_at, attributes,
                           ("tlp:green",))


def ruleset_view(output_dir: Path) -> dict[str, Any]:
    """What the sensors read, comparable across runs: each file's bytes (the rules header's
    build time left out), and for the manifest each entry's size and whether its sha256 is
    that of the file next to it (a manifest of another ruleset is a mix)."""
    files = {path.name: path.read_bytes() for path in sorted(output_dir.iterdir())
             if path.is_file() and not path.name.startswith(".")}
    manifest = json.loads(files.pop(MANIFEST, b'{"files": {}}'))["files"]
    view: dict[str, Any] = {
        name: b"\n".join(line for line in data.split(b"\n")
                         if not line.startswith(RULES_HEADER))
        for name, data in files.items()}
    view[MANIFEST] = {name: (entry["bytes"], entry["sha256"] == hashlib.sha256(
        files.get(name, b"")).hexdigest()) for name, entry in manifest.items()}
    return view


def ruleset_lines(view: dict[str, Any]) -> list[tuple[str, bytes]]:
    """Each rule, list entry, intel line and sid map row, keyed by its file."""
    return [(name, line) for name, data in view.items() if name != MANIFEST
            for line in data.split(b"\n") if line and not line.startswith(b"#")]


@dataclass
class RulesWorld:
    """One MISP holding an old and a newer set of indicators; a site (state dir and output
    dir) whose last update saw only the old ones; what an uninterrupted update of that site
    writes: the previous good ruleset and the complete new one."""

    misp: MispStandIn
    killer: Killer
    prefect: dict[str, str]
    site: Path
    old: dict[str, Any]
    new: dict[str, Any]
    pages: int  # restSearch requests of the uninterrupted update (pages in flight ask
    # for a few past the end: how many depends on timing)

    def copy_site(self, target: Path) -> Command:
        shutil.copytree(self.site, target)
        return update_command(self.misp, self.prefect, target)

    def output_dir(self, site: Path) -> Path:
        return site / "work" / "out" / "rules"


def update_command(misp: MispStandIn, prefect: dict[str, str], site: Path,
                   *options: str) -> Command:
    """`misp-ndr update-rules` of a site: state in site/state, cwd (and ./out/rules,
    the default output directory) in site/work."""
    return Command(["update-rules", *options], cli_env(prefect, misp, site / "state"),
                   site / "work")


@pytest.fixture(scope="module")
def rules_world(tmp_path_factory: pytest.TempPathFactory,
                prefect_env: dict[str, str]) -> Iterator[RulesWorld]:
    root = tmp_path_factory.mktemp("rules")
    killer = Killer()
    with served_stand_in(killer) as misp:
        publish_rule_events(misp, "old", OLD_ATTRIBUTES, int(time.time()) - 2 * 86400)
        site, reference = root / "site", root / "reference"
        (site / "work").mkdir(parents=True)
        # The last update ran an hour ago; the new events were published half an hour ago,
        # outside the incremental pull's overlap if a killed run moved the watermark.
        update_command(misp, prefect_env, site, "--to", "1h").run(root / "old.log")
        shutil.copytree(site, reference)
        publish_rule_events(misp, "new", NEW_ATTRIBUTES, int(time.time()) - 1800)
        searched = len(misp.searches)
        update_command(misp, prefect_env, reference).run(root / "new.log")
        world = RulesWorld(misp, killer, prefect_env, site,
                           ruleset_view(site / "work" / "out" / "rules"),
                           ruleset_view(reference / "work" / "out" / "rules"),
                           len(misp.searches) - searched)
        assert world.pages >= 4 and world.old != world.new
        yield world


def searches_from_now(misp: MispStandIn) -> Callable[[], int]:
    start = len(misp.searches)
    return lambda: len(misp.searches) - start


def first_change_renamed(world: RulesWorld, output_dir: Path) -> Callable[[], bool]:
    """True once the first file the update changes (it writes lists before rules, by name)
    is a new inode: renamed into place, the rest of the ruleset still to come."""
    changed = [name for name in world.new if name != MANIFEST
               and world.new[name] != world.old.get(name)]
    path = output_dir / min(changed, key=lambda name: (name.endswith(".rules"), name))
    before = path.stat().st_ino if path.exists() else None

    def renamed() -> bool:
        try:
            return path.stat().st_ino != before
        except FileNotFoundError:
            return False

    return renamed


def test_update_killed_during_the_pull_keeps_the_good_ruleset_and_rerun_completes_it(
    tmp_path: Path, rules_world: RulesWorld, reliability: Recorder,
) -> None:
    command = rules_world.copy_site(tmp_path / "site")
    pages = searches_from_now(rules_world.misp)
    kill_when(command, tmp_path / "killed.log", rules_world.killer, lambda: pages() >= 3)
    output_dir = rules_world.output_dir(tmp_path / "site")
    assert ruleset_view(output_dir) == rules_world.old, "a killed pull replaced nothing"

    command.run(tmp_path / "rerun.log")
    reliability.check("rule update", "SIGKILL during the pull (after restSearch request 3, "
                      f"{NEW_ATTRIBUTES // int(PAGE_SIZE)} pages of data), then rerun",
                      ruleset_lines(rules_world.new), ruleset_lines(ruleset_view(output_dir)))
    assert ruleset_view(output_dir) == rules_world.new


def sid_store_committed(site: Path) -> Callable[[], bool]:
    """True once the sid store's file changed and its rollback journal is gone: the
    update committed the new sids (a kill mid-commit would only test SQLite)."""
    path = site / "state" / "sids.sqlite"
    journal = path.with_name(path.name + "-journal")

    def signature() -> tuple[int, int]:
        found = path.stat()
        return found.st_size, found.st_mtime_ns

    before = signature()
    return lambda: signature() != before and not journal.exists()


def test_update_killed_once_the_new_sids_are_stored_keeps_the_good_ruleset_and_the_sids(
    tmp_path: Path, rules_world: RulesWorld, reliability: Recorder,
) -> None:
    """Killed while the rules are rendered: the sid store holds sids no ruleset uses yet."""
    command = rules_world.copy_site(tmp_path / "site")
    kill_when(command, tmp_path / "killed.log", rules_world.killer,
              sid_store_committed(tmp_path / "site"), watch=True)
    output_dir = rules_world.output_dir(tmp_path / "site")
    assert ruleset_view(output_dir) == rules_world.old

    command.run(tmp_path / "rerun.log")
    reliability.check("rule update", "SIGKILL once the new sids are stored (before "
                      "publish), then rerun: same files, same sids",
                      ruleset_lines(rules_world.new), ruleset_lines(ruleset_view(output_dir)))
    assert ruleset_view(output_dir) == rules_world.new


@dataclass
class PublishKill:
    """A site whose update was killed during publish, then run again to completion."""

    after_kill: dict[str, Any]  # what the output directory held between the two runs
    journal_left: bool  # the cut-short publish says so on disk
    recovered: dict[str, Any]  # what the next run's first step (recovery) leaves there
    site: Path


@pytest.fixture(scope="module")
def killed_in_publish(tmp_path_factory: pytest.TempPathFactory,
                      rules_world: RulesWorld) -> PublishKill:
    """The renames of a publish take microseconds, and the SIGKILL comes from a thread
    polling the directory: on a loaded machine it can land after the last rename (a clean
    CI clone saw it), and such a run proves nothing. The kill is then tried again on a
    fresh copy of the site, up to PUBLISH_KILL_ATTEMPTS times; the tests that need a
    cut-short publish still fail if none was."""
    root = tmp_path_factory.mktemp("publish-kill")
    for attempt in range(PUBLISH_KILL_ATTEMPTS):
        site = root / f"site-{attempt}"
        command = rules_world.copy_site(site)
        output_dir = rules_world.output_dir(site)
        kill_when(command, root / f"killed-{attempt}.log", rules_world.killer,
                  first_change_renamed(rules_world, output_dir), watch=True)
        journal_left = (output_dir / JOURNAL).exists()
        if journal_left:
            break
    after_kill = ruleset_view(output_dir)
    shutil.copytree(site, root / "recovered")
    recover_interrupted(rules_world.output_dir(root / "recovered"))
    recovered = ruleset_view(rules_world.output_dir(root / "recovered"))
    command.run(root / "rerun.log")
    return PublishKill(after_kill, journal_left, recovered, site)


PUBLISH_KILL_ATTEMPTS = 5


def test_update_killed_during_publish_then_rerun_writes_the_complete_new_ruleset(
    rules_world: RulesWorld, killed_in_publish: PublishKill, reliability: Recorder,
) -> None:
    rerun = ruleset_view(rules_world.output_dir(killed_in_publish.site))
    reliability.check("rule update", "SIGKILL during publish (first changed file renamed "
                      "into place), then rerun: same files, same sids",
                      ruleset_lines(rules_world.new), ruleset_lines(rerun))
    assert rerun == rules_world.new


def mixed_files(view: dict[str, Any], world: RulesWorld) -> dict[str, list[str]]:
    """The files of `view` by the ruleset they hold: "previous", "new" or "neither"
    (files the update does not change are left out)."""
    found: dict[str, list[str]] = {}
    for name, data in view.items():
        if world.old.get(name) != world.new.get(name):
            kind = ("previous" if world.old.get(name) == data else
                    "new" if world.new.get(name) == data else "neither")
            found.setdefault(kind, []).append(name)
    return found


def test_a_publish_killed_between_renames_is_undone_before_the_next_run_does_anything(
    rules_world: RulesWorld, killed_in_publish: PublishKill, reliability: Recorder,
) -> None:
    """Renames of several files cannot be one atomic step: after the kill the directory
    holds some new files, and its journal. The next update's first task (here called
    alone, as it is) puts the previous ruleset back, whole, before the pull starts."""
    assert killed_in_publish.after_kill != rules_world.old, "the kill came before publish"
    assert killed_in_publish.journal_left
    reliability.check("rule update", "SIGKILL between the renames of publish: the next run "
                      "first puts the previous ruleset back", ruleset_lines(rules_world.old),
                      ruleset_lines(killed_in_publish.recovered))
    assert killed_in_publish.recovered == rules_world.old


def test_rollback_after_a_publish_kill_and_rerun_restores_the_previous_good_ruleset(
    tmp_path: Path, rules_world: RulesWorld, killed_in_publish: PublishKill,
    reliability: Recorder,
) -> None:
    shutil.copytree(killed_in_publish.site, tmp_path / "site")
    update_command(rules_world.misp, rules_world.prefect, tmp_path / "site",
                   "--rollback").run(tmp_path / "rollback.log")
    restored = ruleset_view(rules_world.output_dir(tmp_path / "site"))
    reliability.check("rule update", "SIGKILL during publish, rerun, then --rollback: the "
                      "previous good ruleset", ruleset_lines(rules_world.old),
                      ruleset_lines(restored))
    assert restored == rules_world.old, mixed_files(restored, rules_world)
