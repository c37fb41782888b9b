"""Secrets never leave the process: every job run with distinctive fake secrets, and all it
produced searched for them.

Each situation runs one `misp-ndr` command in-process, under Prefect's test server, with a
MISP API key, a Flowmon password and a webhook token set (the MISP key also through a
`prefect-secret:` block), against MISP and Flowmon stand-ins served over real HTTP(S) on
127.0.0.1, so PyMISP, requests and urllib3 log as they do in production. Every logger is
at DEBUG. Runs that fail (HTTP 401/403/500, connection refused, TLS failure, bad
configuration) are as important as those that succeed: errors are where a secret slips
into a message. Searched afterwards: standard output and error, every log record with its
traceback, the exceptions the command ended with and their whole chain (suppressed
contexts included), the settings' repr/str/model_dump/model_dump_json, the flow runs, task
runs, logs and artifacts read back from the Prefect API, the Prefect database files, the
result storage, and every file the run wrote (ledgers, state, feed, reports, spool); also
the deployments `misp-ndr deploy` registers. Each secret is looked for as is, base64, URL-
and form-encoded, JSON-escaped, and by its first 10 characters.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

import pytest
from prefect.blocks.system import Secret
from prefect.client.orchestration import get_client
from prefect.logging.handlers import APILogWorker
from prefect.settings import get_current_settings
from typer.testing import CliRunner

import flows.export
import flows.sightings
import flows.update_rules
import misp_ndr.cli
from misp_ndr.cli import app
from misp_ndr.config import Settings, load_settings, masked_settings
from tests.conftest import SAMPLES
from tests.loopback_http import LoopbackRouter, Request, serving
from tests.misp_stand_in import MispStandIn
from tests.reliability import Recorder
from tests.tls_certs import serve_over_tls, write_private_ca

pytestmark = [
    pytest.mark.prefect, pytest.mark.usefixtures("prefect_harness"),
    # MISP delivery threads run outside Prefect's run context; their records still reach
    # the Python handlers searched here.
    pytest.mark.filterwarnings("ignore:Logger .* attempted to send logs to the API without"),
]

MISP_KEY = "Mk7qSecretMispKey0w9E8r7T6y5U4i3O2p1A0sD"  # 40 alphanumerics, as MISP makes them
BLOCK_KEY = "Bk5zSecretBlockKey1x2C3v4B5n6M7a8S9d0FgH"
BLOCK_NAME = "misp-ndr-secrets-test-key"
FLOWMON_USER = "misp-sync"
FLOWMON_PASSWORD = "Fw9+Secret/Flowmon&pass=Z1x2?"  # characters URL-encoding changes
WEBHOOK_TOKEN = "Wh3+Secret/Webhook=token_7e6d5c4b"
SECRETS = {"MISP API key": MISP_KEY, "MISP API key (Secret block)": BLOCK_KEY,
           "Flowmon password": FLOWMON_PASSWORD, "webhook token": WEBHOOK_TOKEN}
PREFIX_CHARS = 10
JSON = {"Content-Type": "application/json"}
DATABASE = "Prefect database (new content)"


def encoded_forms(secret: str) -> dict[str, bytes]:
    """The shapes a secret takes on its way out: in a header, a form, a URL, a dump."""
    raw = secret.encode()
    forms = {
        "as is": raw,
        "base64": base64.b64encode(raw),
        "URL-safe base64": base64.urlsafe_b64encode(raw),
        "URL-encoded": quote(secret, safe="").encode(),
        "form-encoded": quote_plus(secret).encode(),
        "JSON-escaped": json.dumps(secret)[1:-1].encode(),
        f"first {PREFIX_CHARS} characters": raw[:PREFIX_CHARS],
    }
    if secret == FLOWMON_PASSWORD:
        forms["HTTP Basic credentials"] = base64.b64encode(f"{FLOWMON_USER}:{secret}".encode())
    return forms


# --- what a run leaves behind -----------------------------------------------------------


@dataclass
class Evidence:
    """Every place a run wrote to, as bytes, by a name a reader of a failure understands."""

    places: dict[str, bytes] = field(default_factory=dict)
    before: dict[str, bytes] = field(default_factory=dict)  # of places shared between runs

    def add(self, place: str, content: str | bytes) -> None:
        data = content.encode("utf-8", "backslashreplace") if isinstance(content, str) \
            else content
        self.places[place] = self.places.get(place, b"") + data

    def leaks(self) -> dict[str, int]:
        """Occurrences by '<secret> <form> in <place>', for those found at all."""
        found = {}
        for name, secret in SECRETS.items():
            for form, needle in encoded_forms(secret).items():
                for place, data in self.places.items():
                    count = data.count(needle) - self.before.get(place, b"").count(needle)
                    if count > 0:
                        found[f"{name} {form} in {place}"] = count
        return found


class Collecting(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


# What `misp-ndr` asks Prefect to send to the UI, plus the libraries an engineer chasing a
# problem would add to PREFECT_LOGGING_EXTRA_LOGGERS.
EXTRA_LOGGERS = ("tasks", "flows", "misp_ndr", "pymisp", "urllib3")


@contextmanager
def prefect_extra_loggers() -> Iterator[None]:
    """As PREFECT_LOGGING_EXTRA_LOGGERS does at Prefect's start-up (too early for a test to
    set it): these loggers get Prefect's handlers, so their records reach the run logs."""
    handlers = logging.getLogger("prefect.extra").handlers
    added = [(logging.getLogger(name), handler) for name in EXTRA_LOGGERS
             for handler in handlers if handler not in logging.getLogger(name).handlers]
    for logger, handler in added:
        logger.addHandler(handler)
    try:
        yield
    finally:
        for logger, handler in added:
            logger.removeHandler(handler)


@contextmanager
def every_logger_at_debug() -> Iterator[Collecting]:
    """What a SOC engineer chasing a problem would turn on: everything, to a file."""
    collector = Collecting()
    loggers = [logging.getLogger(), *(item for item in logging.root.manager.loggerDict.values()
                                      if isinstance(item, logging.Logger))]
    levels = [(logger, logger.level) for logger in loggers]
    hooked = [logger for logger in loggers if logger is logging.getLogger()
              or not logger.propagate]
    for logger in loggers:
        logger.setLevel(logging.DEBUG)
    for logger in hooked:
        logger.addHandler(collector)
    try:
        yield collector
    finally:
        for logger in hooked:
            logger.removeHandler(collector)
        for logger, level in levels:
            logger.setLevel(level)


def exception_texts(exc: BaseException) -> str:
    """The traceback as printed, and str/repr of every exception in the chain, including
    contexts a `from None` hides from the printout but keeps on the object."""
    parts = ["".join(traceback.format_exception(exc))]
    pending, seen = [exc], set()
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        parts += [str(current), repr(current), repr(current.args)]
        report = getattr(current, "report", None)
        if report is not None:
            parts += [report.render_text(), repr(report)]
        pending += [linked for linked in (current.__cause__, current.__context__) if linked]
        pending += list(getattr(current, "exceptions", ()))
    return "\n".join(parts)


def settings_texts(settings: Settings) -> str:
    sections = [getattr(settings, name) for name in Settings.model_fields]
    return "\n".join([repr(settings), str(settings), str(settings.model_dump()),
                      settings.model_dump_json(), json.dumps(masked_settings(settings),
                                                             default=str),
                      *(repr(section) + str(section) for section in sections)])


def prefect_api(flow_runs_before: set[str], evidence: Evidence) -> None:
    """The new flow runs, their task runs, logs and artifacts, as the API serves them."""
    APILogWorker.drain_all(timeout=10)
    with get_client(sync_client=True) as client:
        runs = [run for run in recent_flow_runs(client) if run["id"] not in flow_runs_before]
        ids = {"id": {"any_": [run["id"] for run in runs]}}
        evidence.add("Prefect flow runs (parameters, states)", json.dumps(runs))
        for path, body, place in (
            ("/task_runs/filter", {"flow_runs": ids}, "Prefect task runs"),
            ("/artifacts/filter", {"flow_runs": ids}, "Prefect artifacts"),
            ("/logs/filter", {"logs": {"flow_run_id": {"any_": ids["id"]["any_"]}}},
             "Prefect run logs"),
        ):
            for offset in range(0, 10_000, 200):
                page = client.request("POST", path, json={**body, "limit": 200,
                                                          "offset": offset})
                evidence.add(place, page.content)
                if len(page.json()) < 200:
                    break


def recent_flow_runs(client: Any) -> list[dict[str, Any]]:
    answer = client.request("POST", "/flow_runs/filter",
                            json={"sort": "EXPECTED_START_TIME_DESC", "limit": 50})
    return answer.json()


def prefect_database() -> bytes:
    """The server's database files (every table: runs, states, logs, artifacts, events).
    Shared by every test of the session, so a run is judged by what it added."""
    database = get_current_settings().server.database.connection_url
    url = database.get_secret_value() if database is not None else ""
    if not url.startswith("sqlite"):
        return b""
    path = Path(url.split(":///", 1)[1])
    files = (path, path.with_name(path.name + "-wal"))
    return b"".join(file.read_bytes() for file in files if file.is_file())


def prefect_results(since: float, evidence: Evidence) -> None:
    """Whatever the run persisted as task or flow results."""
    storage = Path(get_current_settings().results.local_storage_path)
    if storage.is_dir():
        for file in storage.rglob("*"):
            if file.is_file() and file.stat().st_mtime >= since:
                evidence.add(f"Prefect result storage {file.name}", file.read_bytes())


def written_files(root: Path, evidence: Evidence, skip: Path) -> None:
    """Every file under the working directory, but the stand-ins' own (`skip`)."""
    files = [path for path in sorted(root.rglob("*"))
             if path.is_file() and not path.is_relative_to(skip)]
    for path in files:
        evidence.add(f"file {path.relative_to(root)}", path.read_bytes())


# --- the remote systems ------------------------------------------------------------------


def answer_with(status: int, body: Any) -> Callable[[Request], tuple[int, dict, str]]:
    text = json.dumps(body)
    return lambda _request: (status, JSON, text)


def refuse_everything(router: LoopbackRouter, status: int) -> None:
    deny = answer_with(status, {"name": "Authentication failed. Please make sure you pass "
                                "the API key of an API enabled user along in the "
                                "Authorization header.", "message": "Authentication failed."})
    for method in ("GET", "POST"):
        router.add_callback(method, re.compile(".*"), deny)


@dataclass
class Site:
    """The systems of one situation, and what `misp-ndr` is told about them."""

    stack: ExitStack
    tmp_path: Path
    env: dict[str, str] = field(default_factory=dict)

    def serve(self, router: LoopbackRouter, fault: str) -> None:
        """Served, or for "refused" closed: its URL then names a port nobody listens on."""
        if fault == "refused":
            router.server.server_close()
        else:
            self.stack.enter_context(serving(router))

    def https_router(self) -> LoopbackRouter:
        _ca, cert, key = write_private_ca(self.tmp_path / "tls")
        return serve_over_tls(LoopbackRouter(), cert, key)

    def misp(self, fault: str = "") -> None:
        router = self.https_router() if fault == "tls" else LoopbackRouter()
        url = router.url
        if fault in ("401", "403"):
            refuse_everything(router, int(fault))
        if fault == "echo":
            router.add_callback("POST", f"{url}/events/add", answer_with(403, {
                "name": f"Authentication failed for key {MISP_KEY}", "message": "Forbidden",
                "url": "/events/add"}))
        if fault == "500":
            for path in ("events/add", "sightings/add", "attributes/restSearch"):
                router.add_callback("POST", f"{url}/{path}", lambda _r: (
                    500, {}, "<html>Internal Server Error</html>"))
        stand_in = MispStandIn(router, url=url)
        published = int((datetime.now(UTC) - timedelta(hours=1)).timestamp())
        for path in sorted((SAMPLES / "misp-feed").glob("*-*.json")):
            event = json.loads(path.read_text())["Event"]
            stand_in.publish_event(event["uuid"], event["info"], event["date"], published,
                                   event["Attribute"],
                                   tuple(tag["name"] for tag in event.get("Tag", [])))
        self.serve(router, fault)
        self.env["MISP_NDR_MISP__URL"] = url

    def flowmon(self, fault: str = "") -> None:
        router = self.https_router() if fault == "tls" else LoopbackRouter()
        url = router.url
        token = f"{url}/resources/oauth/token"
        if fault == "401":
            router.add_callback("POST", token, answer_with(
                401, {"error": "invalid_grant", "error_description": "Bad credentials"}))
        if fault == "echo":  # a proxy's or debug page's error quoting the request it got
            router.add_callback("POST", token, lambda request: (
                500, {}, f"upstream failed for request body {request.body.decode()}"))
        router.add_callback("POST", token, answer_with(
            200, {"access_token": "ads-session-token-1", "expires_in": 300}))
        if fault == "500":
            router.add_callback("GET", f"{url}/rest/ads/events", lambda _r: (
                500, {}, "Internal Server Error"))
        router.get(f"{url}/rest/ads/events", [
            {"id": 501, "type": "SCANS", "time": "2026-11-20 08:15:00", "detail": "SYN scan",
             "priority": 4, "source": {"ip": "45.155.205.233"}, "targets": [{"ip": "10.0.0.1"}]}])
        router.get(f"{url}/rest/ads/filters", [{"name": "Servers", "patterns": ["10.0.0.0/8"]}])
        self.serve(router, fault)
        self.env["MISP_NDR_FLOWMON__URL"] = url


# --- the situations ------------------------------------------------------------------------

Setup = Callable[[Site], list[str]]


def export_to_misp(fault: str = "") -> Setup:
    def setup(site: Site) -> list[str]:
        site.misp(fault)
        return ["export", "--source", "flowmon-stdin",
                "--input", str(SAMPLES / "flowmon-batch.tsv")]
    return setup


def export_from_flowmon_api(fault: str = "") -> Setup:
    def setup(site: Site) -> list[str]:
        site.flowmon(fault)
        return ["export", "--source", "flowmon-api", "--since", "2026-11-20T08:00:00Z",
                "--until", "2026-11-20T09:00:00Z"]
    return setup


def sightings(fault: str = "") -> Setup:
    def setup(site: Site) -> list[str]:
        site.misp(fault)
        return ["sightings", "--source", "csv", "--input", str(SAMPLES / "sightings/hits.csv")]
    return setup


def rule_update(fault: str = "") -> Setup:
    def setup(site: Site) -> list[str]:
        site.misp(fault)
        return ["update-rules"]
    return setup


def check(fault: str = "") -> Setup:
    def setup(site: Site) -> list[str]:
        site.misp(fault)
        site.flowmon()
        return ["check"]
    return setup


def key_from_secret_block(site: Site) -> list[str]:
    Secret(value=BLOCK_KEY).save(BLOCK_NAME, overwrite=True)
    site.env["MISP_NDR_MISP__API_KEY"] = f"prefect-secret:{BLOCK_NAME}"
    return export_to_misp()(site)


def misspelt_key_variable(site: Site) -> list[str]:
    site.env.update({"MISP_NDR_MISP__URL": "https://misp.example.org",
                     "MISP_NDR_MISP__APIKEY": MISP_KEY})
    return ["export", "--source", "suricata", "--input", str(SAMPLES / "eve.json")]


def broken_json_section(site: Site) -> list[str]:
    site.env["MISP_NDR_MISP"] = f'{{"url": "https://misp.example.org", "api_key": "{MISP_KEY}"'
    return ["export", "--source", "suricata", "--input", str(SAMPLES / "eve.json")]


def token_too_short(site: Site) -> list[str]:
    site.env["MISP_NDR_WEBHOOK__TOKEN"] = WEBHOOK_TOKEN[:12]
    return ["config", "show"]


def password_without_user(site: Site) -> list[str]:
    site.env.update({"MISP_NDR_FLOWMON__URL": "https://flowmon.example.org",
                     "MISP_NDR_FLOWMON__USER": ""})
    return ["export", "--source", "flowmon-api"]


def config_show(site: Site) -> list[str]:
    site.misp()
    site.flowmon()
    return ["config", "show"]


@dataclass(frozen=True)
class Situation:
    job: str
    what: str
    setup: Setup
    exit_code: int

    @property
    def fault(self) -> str:
        return f"{self.job}: {self.what}"


SITUATIONS = [
    Situation("export", "MISP accepts the events", export_to_misp(), 0),
    Situation("export", "MISP refuses the key (HTTP 401)", export_to_misp("401"), 1),
    Situation("export", "MISP answers HTTP 500 to every write", export_to_misp("500"), 1),
    Situation("export", "MISP connection refused", export_to_misp("refused"), 1),
    Situation("export", "MISP certificate not trusted (TLS failure)", export_to_misp("tls"), 1),
    Situation("export", "MISP key from a prefect-secret: block, accepted",
              key_from_secret_block, 0),
    Situation("export", "bad config: the MISP key in a misspelt variable",
              misspelt_key_variable, 2),
    Situation("export", "bad config: the MISP section as broken JSON holding the key",
              broken_json_section, 2),
    Situation("Flowmon API export", "appliance serves its events", export_from_flowmon_api(), 0),
    Situation("Flowmon API export", "login refused (HTTP 401)",
              export_from_flowmon_api("401"), 1),
    Situation("Flowmon API export", "event list answers HTTP 500",
              export_from_flowmon_api("500"), 1),
    Situation("Flowmon API export", "appliance connection refused",
              export_from_flowmon_api("refused"), 1),
    Situation("Flowmon API export", "appliance certificate not trusted (TLS failure)",
              export_from_flowmon_api("tls"), 2),
    Situation("Flowmon API export", "bad config: password without user",
              password_without_user, 2),
    Situation("sightings", "MISP adds the sightings", sightings(), 0),
    Situation("sightings", "MISP refuses the key (HTTP 403)", sightings("403"), 1),
    Situation("rule update", "MISP serves the attributes", rule_update(), 0),
    Situation("rule update", "restSearch answers HTTP 500", rule_update("500"), 1),
    Situation("check", "MISP and Flowmon reachable", check(), 0),
    Situation("check", "MISP refuses the key (HTTP 403)", check("403"), 1),
    Situation("config show", "every secret set", config_show, 0),
    Situation("webhook", "bad config: token too short", token_too_short, 2),
    Situation("export", "MISP error answer quotes the key", export_to_misp("echo"), 1),
    Situation("Flowmon API export", "login error answer quotes the form sent",
              export_from_flowmon_api("echo"), 1),
]


@pytest.fixture
def quick_task_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """Prefect's task retries still happen (their logs are searched too), without waiting."""
    for module, name in ((flows.export, "deliver_to_misp_task"),
                         (flows.export, "fetch_flowmon_detections_task"),
                         (flows.sightings, "deliver_sightings_to_misp_task"),
                         (flows.update_rules, "pull_misp_attributes_task")):
        monkeypatch.setattr(module, name,
                            getattr(module, name).with_options(retry_delay_seconds=0))


@pytest.fixture
def every_secret_set(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each run holds all the secrets, whichever system it talks to."""
    for name, value in {
        "MISP_NDR_MISP__API_KEY": MISP_KEY, "MISP_NDR_MISP__RETRIES": "1",
        "MISP_NDR_MISP__RETRY_BACKOFF": "0", "MISP_NDR_MISP__TIMEOUT": "10",
        "MISP_NDR_FLOWMON__USER": FLOWMON_USER, "MISP_NDR_FLOWMON__PASSWORD": FLOWMON_PASSWORD,
        "MISP_NDR_FLOWMON__RETRIES": "1", "MISP_NDR_FLOWMON__RETRY_BACKOFF": "0",
        "MISP_NDR_WEBHOOK__TOKEN": WEBHOOK_TOKEN,
        "MISP_NDR_RULES__MAX_EVENT_AGE_DAYS": "3650",
        "PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW": "ignore",  # as `misp-ndr` sets it
    }.items():
        monkeypatch.setenv(name, value)


def run_and_collect(situation: Situation, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                    evidence: Evidence) -> None:
    """Run the command with everything watched, then gather what it left everywhere."""
    started = time.time()
    raised: list[BaseException] = []
    guarded = misp_ndr.cli.run_guarded

    def recording(action: Callable[[], int]) -> None:
        def watched() -> int:
            try:
                return action()
            except BaseException as exc:
                raised.append(exc)
                raise
        guarded(watched)

    monkeypatch.setattr(misp_ndr.cli, "run_guarded", recording)
    with get_client(sync_client=True) as client:
        before = {run["id"] for run in recent_flow_runs(client)}
    evidence.before[DATABASE] = prefect_database()
    with ExitStack() as stack:
        site = Site(stack, tmp_path / "systems")
        args = situation.setup(site)
        for name, value in site.env.items():
            monkeypatch.setenv(name, value)
        with prefect_extra_loggers(), every_logger_at_debug() as logs:
            result = CliRunner().invoke(app, args, catch_exceptions=True)
        evidence.add("standard output", result.stdout)
        evidence.add("standard error", result.stderr)
        evidence.add("Python logs (every logger at DEBUG)", "\n".join(logs.lines))
    for exc in [*raised, *([result.exception] if result.exception else [])]:
        if not isinstance(exc, SystemExit):
            evidence.add("exceptions and their chains", exception_texts(exc))
    try:
        evidence.add("settings repr/str/model_dump/model_dump_json",
                     settings_texts(load_settings()))
    except Exception as exc:  # the bad-configuration situations: the error is the evidence
        evidence.add("exceptions and their chains", exception_texts(exc))
    prefect_api(before, evidence)
    evidence.add(DATABASE, prefect_database())
    prefect_results(started, evidence)
    written_files(tmp_path, evidence, skip=tmp_path / "systems")
    assert result.exit_code == situation.exit_code, result.output + "\n".join(
        line[:300] for line in logs.lines[-20:])


@pytest.mark.usefixtures("quick_task_retries", "every_secret_set")
@pytest.mark.parametrize("situation", SITUATIONS, ids=[s.fault for s in SITUATIONS])
def test_no_secret_appears_in_anything_a_run_leaves_behind(
    situation: Situation, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    reliability: Recorder,
) -> None:
    evidence = Evidence()
    run_and_collect(situation, tmp_path, monkeypatch, evidence)
    leaks = evidence.leaks()
    assert leaks == {}, "\n".join(f"{where}: {count}x" for where, count in leaks.items())
    reliability.record("secrets", situation.fault, checked=len(evidence.places),
                       injected=sum(leaks.values()))


@pytest.mark.usefixtures("every_secret_set")
def test_deployments_carry_no_secret(reliability: Recorder) -> None:
    """Deployment parameters, job variables and schedules are stored in clear on the
    Prefect server: what `misp-ndr deploy` registers must hold no secret."""
    from deployments.definitions import build_deployments

    evidence = Evidence()
    for deployment in build_deployments(load_settings(), working_dir=Path("/srv/misp-ndr")):
        evidence.add(f"deployment {deployment.name} of {deployment.flow_name}",
                     deployment.model_dump_json() + repr(deployment))
    leaks = evidence.leaks()
    assert leaks == {}, "\n".join(f"{where}: {count}x" for where, count in leaks.items())
    reliability.record("secrets", "deploy: the three deployments built with every secret set",
                       checked=len(evidence.places), injected=sum(leaks.values()))
