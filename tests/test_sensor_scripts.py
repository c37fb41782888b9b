"""The Flowmon ADS custom scripts of sensors/flowmon/, run as ADS runs them (parameters as
`--name value` pairs, the batch on standard input), against the real webhook receiver served
by uvicorn on 127.0.0.1, with a stand-in for Prefect that records the runs it is asked for."""

from __future__ import annotations

import os
import shutil
import socket
import stat
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from deployments.definitions import Job
from misp_ndr.config import load_settings
from misp_ndr.webhook.app import create_app, spool_directory
from misp_ndr.webhook.submit import PrefectUnavailable
from tests.tls_certs import write_private_ca

ROOT = Path(__file__).resolve().parent.parent
EXPORT_SCRIPT = ROOT / "sensors" / "flowmon" / "misp_integration_script.bash"
SIGHTING_SCRIPT = ROOT / "sensors" / "flowmon" / "misp_sighting_script.bash"
SAMPLES = ROOT / "misp_ndr" / "samples"
TSV_BATCH = SAMPLES / "flowmon-batch.tsv"
JSONL_BATCH = SAMPLES / "flowmon-batch.jsonl"
BLACKLIST_HITS = SAMPLES / "sightings" / "flowmon-blacklist.jsonl"
TOKEN = "sensor-scripts-test-token-5f1c0e"

pytestmark = pytest.mark.skipif(shutil.which("curl") is None, reason="the scripts need curl")


@dataclass
class Run:
    job: Job
    parameters: dict[str, Any]
    idempotency_key: str
    flow_run_id: str
    body: bytes  # the batch file the run would read, as the receiver kept it


@dataclass
class FakePrefect:
    """The submitter: creates 'runs', or fails as an unreachable Prefect API does."""

    down: bool = False
    runs: list[Run] = field(default_factory=list)
    refused_keys: list[str] = field(default_factory=list)

    def submit(self, job: Job, parameters: dict[str, Any], idempotency_key: str) -> str:
        if self.down:
            self.refused_keys.append(idempotency_key)
            raise PrefectUnavailable("Prefect API unreachable (ConnectError)")
        run_id = str(uuid.uuid4())
        body = Path(parameters["input_path"]).read_bytes() if "input_path" in parameters else b""
        self.runs.append(Run(job, dict(parameters), idempotency_key, run_id, body))
        return run_id


class WireRecorder:
    """ASGI wrapper keeping each request's path, query string and headers."""

    def __init__(self, app: Any) -> None:
        self.app, self.requests = app, []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            self.requests.append({
                "path": scope["path"], "query": scope["query_string"].decode(),
                "headers": {k.decode(): v.decode() for k, v in scope["headers"]}})
        await self.app(scope, receive, send)


@dataclass
class Site:
    url: str
    prefect: FakePrefect
    wire: WireRecorder
    spool: Path  # the receiver's own spool directory


@contextmanager
def serving(app: Any, **ssl: str) -> Iterator[str]:
    """uvicorn in a thread on a port of 127.0.0.1 the kernel picked; yields the base URL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off", **ssl))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "receiver did not start"
        time.sleep(0.01)
    try:
        yield f"{'https' if ssl else 'http'}://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def receiver_settings(state_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("MISP_NDR_WEBHOOK__TOKEN", TOKEN)
    monkeypatch.setenv("MISP_NDR_STATE_DIR", str(state_dir))
    return load_settings()


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """One receiver for the module (the per-test env reset of conftest does not reach it)."""
    state = tmp_path_factory.mktemp("receiver-state")
    with pytest.MonkeyPatch.context() as monkeypatch:
        for name in list(os.environ):
            if name.startswith("MISP_NDR_"):
                monkeypatch.delenv(name)
        monkeypatch.chdir(state)  # no developer's .env
        settings = receiver_settings(state, monkeypatch)
    prefect = FakePrefect()
    wire = WireRecorder(create_app(settings, prefect))
    with serving(wire) as url:
        yield Site(url, prefect, wire, spool_directory(settings).directory)


@pytest.fixture
def receiver(site: Site) -> Site:
    """The module's receiver with nothing received yet: each test sees only its own runs."""
    site.prefect.down = False
    site.prefect.runs.clear()
    site.prefect.refused_keys.clear()
    site.wire.requests.clear()
    if site.spool.exists():
        shutil.rmtree(site.spool)
    return site


@pytest.fixture
def sensor_spool(tmp_path: Path) -> Path:
    return tmp_path / "sensor-spool"  # the scripts create it


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "webhook.token"
    path.write_text(TOKEN + "\n")
    path.chmod(0o600)
    return path


@dataclass
class Result:
    code: int
    out: str
    err: str


def run_script(script: Path, *args: str, batch: bytes | Path, spool: Path,
               env: dict[str, str] | None = None) -> Result:
    environment = {**os.environ, "MISP_NDR_SENSOR_SPOOL": str(spool),
                   "MISP_NDR_SENSOR_RETRY_DELAY": "0", "MISP_NDR_SENSOR_MAX_TIME": "10",
                   **(env or {})}
    command = ["bash", str(script), *args]
    if isinstance(batch, Path):
        with batch.open("rb") as stdin:
            done = subprocess.run(command, stdin=stdin, capture_output=True, env=environment,
                                  timeout=60, check=False)
    else:
        done = subprocess.run(command, input=batch, capture_output=True, env=environment,
                              timeout=60, check=False)
    return Result(done.returncode, done.stdout.decode(), done.stderr.decode())


def connection(url: str, token_file: Path) -> list[str]:
    return ["--webhook_url", url, "--webhook_token_file", str(token_file)]


def kept_batches(spool: Path) -> list[Path]:
    return sorted(spool.iterdir()) if spool.exists() else []


@pytest.mark.parametrize("batch", [TSV_BATCH, JSONL_BATCH], ids=["tsv", "jsonl"])
def test_export_script_hands_the_batch_to_the_export_flow_with_the_seed_parameters(
        receiver: Site, sensor_spool: Path, token_file: Path, batch: Path) -> None:
    tag = 'flowmon:ads="scan & más"'
    result = run_script(
        EXPORT_SCRIPT, *connection(receiver.url, token_file), "--misp_tag", tag,
        "--misp_ids", "1", "--misp_distribution", "2",
        "--flowmon_filters", "Servers,198.18.0.0/15,192.0.2.{1,5}", "--timezone", "Europe/Prague",
        batch=batch, spool=sensor_spool)

    assert result.code == 0, result.err
    [run] = receiver.prefect.runs
    assert run.job is Job.EXPORT
    assert run.parameters | {"input_path": "-"} == {
        "source": "flowmon-stdin", "tag": tag, "to_ids": True, "distribution": 2,
        "ip_filters": ["Servers", "198.18.0.0/15", "192.0.2.{1,5}"],
        "timezone": "Europe/Prague", "discard_input": True, "input_path": "-"}
    assert run.body == batch.read_bytes()
    assert result.out.startswith(f"flow_run_id={run.flow_run_id} duplicate=false records=")
    assert kept_batches(sensor_spool) == []  # delivered: nothing left on the sensor


def test_misp_and_flowmon_credentials_are_accepted_but_never_sent_nor_printed(
        receiver: Site, sensor_spool: Path, token_file: Path) -> None:
    secrets = {"--misp_server": "https://misp.internal-7f3a.example",
               "--misp_api_key": "k3y-0f-th3-s33d-M1SP-4p1",
               "--flowmon_user": "ads-admin-5c2e", "--flowmon_pass": "p4ss-0f-th3-s33d"}
    result = run_script(EXPORT_SCRIPT, *connection(receiver.url, token_file),
                        *(item for pair in secrets.items() for item in pair),
                        batch=TSV_BATCH, spool=sensor_spool)

    assert result.code == 0, result.err
    for name in secrets:
        assert f"ignoring {name}:" in result.err
    [run] = receiver.prefect.runs
    [request] = receiver.wire.requests
    what_left_the_sensor = repr([request, run.parameters]) + "".join(
        path.read_text(errors="replace") for path in receiver.spool.rglob("*") if path.is_file())
    for value in secrets.values():
        assert value not in result.out + result.err
        assert value not in what_left_the_sensor
    assert set(run.parameters) == {"source", "discard_input", "input_path"}


def test_the_token_never_appears_on_curls_command_line(
        receiver: Site, sensor_spool: Path, token_file: Path, tmp_path: Path) -> None:
    shim_dir, argv_log = tmp_path / "bin", tmp_path / "curl-argv.log"
    shim_dir.mkdir()
    shim = shim_dir / "curl"
    shim.write_text(f'#!/usr/bin/env bash\nprintf "%s\\n" "$@" >> {argv_log}\n'
                    f'exec {shutil.which("curl")} "$@"\n')
    shim.chmod(0o755)

    result = run_script(EXPORT_SCRIPT, *connection(receiver.url, token_file),
                        batch=TSV_BATCH, spool=sensor_spool,
                        env={"PATH": f"{shim_dir}{os.pathsep}{os.environ['PATH']}"})

    assert result.code == 0, result.err
    assert receiver.wire.requests[0]["headers"]["authorization"] == f"Bearer {TOKEN}"
    arguments = argv_log.read_text()
    assert receiver.url in arguments  # the shim did run curl
    assert TOKEN not in arguments


def test_a_wrong_token_exits_3_and_keeps_the_batch_private_on_the_sensor(
        receiver: Site, sensor_spool: Path, tmp_path: Path) -> None:
    wrong = tmp_path / "wrong.token"
    wrong.write_text("not-the-receivers-token-at-all\n")
    wrong.chmod(0o600)

    result = run_script(EXPORT_SCRIPT, "--webhook_url", receiver.url,
                        "--webhook_token_file", str(wrong), batch=TSV_BATCH, spool=sensor_spool)

    assert result.code == 3
    assert "HTTP 401" in result.err
    assert receiver.prefect.runs == []
    [kept] = kept_batches(sensor_spool)
    assert kept.read_bytes() == TSV_BATCH.read_bytes()
    assert str(kept) in result.err
    assert stat.S_IMODE(sensor_spool.stat().st_mode) == 0o700
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600


def test_with_prefect_down_the_batch_is_kept_and_resending_it_later_makes_one_run(
        receiver: Site, sensor_spool: Path, token_file: Path) -> None:
    receiver.prefect.down = True
    args = [*connection(receiver.url, token_file), "--misp_tag", "flowmon-ads"]

    failed = run_script(EXPORT_SCRIPT, *args, batch=TSV_BATCH, spool=sensor_spool,
                        env={"MISP_NDR_SENSOR_RETRIES": "2"})

    assert failed.code == 1
    assert "HTTP 503" in failed.err and "Prefect API unreachable" in failed.err
    assert len(receiver.prefect.refused_keys) == 3  # first try and two retries
    assert len(set(receiver.prefect.refused_keys)) == 1  # every try: the same payload
    [kept] = kept_batches(sensor_spool)
    assert str(kept) in failed.err

    receiver.prefect.down = False
    resent = run_script(EXPORT_SCRIPT, *args, batch=kept, spool=sensor_spool)

    assert resent.code == 0, resent.err
    [run] = receiver.prefect.runs
    assert run.body == TSV_BATCH.read_bytes()
    assert run.idempotency_key == receiver.prefect.refused_keys[0]
    assert kept_batches(sensor_spool) == []  # the resent file is removed once accepted


def test_the_same_batch_sent_twice_makes_one_run(
        receiver: Site, sensor_spool: Path, token_file: Path) -> None:
    args = [*connection(receiver.url, token_file), "--misp_tag", "flowmon-ads"]

    first = run_script(EXPORT_SCRIPT, *args, batch=JSONL_BATCH, spool=sensor_spool)
    second = run_script(EXPORT_SCRIPT, *args, batch=JSONL_BATCH, spool=sensor_spool)

    assert (first.code, second.code) == (0, 0)
    [run] = receiver.prefect.runs
    assert first.out.startswith(f"flow_run_id={run.flow_run_id} duplicate=false ")
    assert second.out.startswith(f"flow_run_id={run.flow_run_id} duplicate=true ")


def test_sighting_script_sends_its_source_as_the_sighting_source_name(
        receiver: Site, sensor_spool: Path) -> None:
    result = run_script(
        SIGHTING_SCRIPT, "--webhook_url", receiver.url + "/", "--webhook_token", TOKEN,
        "--misp_server", "https://misp.internal-7f3a.example",
        "--misp_api_key", "k3y-0f-th3-s33d-M1SP-4p1", "--source", "flowmon/edge-probe-1",
        batch=BLACKLIST_HITS, spool=sensor_spool)

    assert result.code == 0, result.err
    [run] = receiver.prefect.runs
    assert run.job is Job.SIGHTINGS
    assert {k: v for k, v in run.parameters.items() if k != "input_path"} == {
        "source": "flowmon-stdin", "source_name": "flowmon/edge-probe-1",
        "discard_input": True}
    assert run.body == BLACKLIST_HITS.read_bytes()
    assert "k3y-0f-th3-s33d-M1SP-4p1" not in result.out + result.err
    assert kept_batches(sensor_spool) == []


@pytest.mark.parametrize(("script", "unknown"), [
    (EXPORT_SCRIPT, "--misp_tags"),
    (SIGHTING_SCRIPT, "--misp_tag"),  # an export parameter: not the sighting script's
], ids=["export", "sightings"])
def test_an_unknown_parameter_exits_2_naming_it_and_sends_nothing(
        receiver: Site, sensor_spool: Path, token_file: Path, script: Path,
        unknown: str) -> None:
    result = run_script(script, *connection(receiver.url, token_file), unknown, "x",
                        "--bogus=1", batch=TSV_BATCH, spool=sensor_spool)

    assert result.code == 2
    assert f"unknown parameter {unknown}\n" in result.err
    assert "unknown parameter --bogus\n" in result.err
    assert receiver.wire.requests == []
    [kept] = kept_batches(sensor_spool)  # not lost while the parameters get fixed
    assert kept.read_bytes() == TSV_BATCH.read_bytes()


def test_without_webhook_url_the_script_exits_2(sensor_spool: Path, token_file: Path) -> None:
    result = run_script(EXPORT_SCRIPT, "--webhook_token_file", str(token_file),
                        batch=TSV_BATCH, spool=sensor_spool)

    assert result.code == 2
    assert "--webhook_url is required" in result.err


@pytest.mark.parametrize("batch", [b"", b"\n  \n"], ids=["nothing", "blank-lines"])
def test_an_empty_batch_exits_0_without_sending(
        receiver: Site, sensor_spool: Path, token_file: Path, batch: bytes) -> None:
    result = run_script(EXPORT_SCRIPT, *connection(receiver.url, token_file), batch=batch,
                        spool=sensor_spool)

    assert result.code == 0, result.err
    assert receiver.wire.requests == []
    assert kept_batches(sensor_spool) == []


def test_a_batch_the_receiver_cannot_read_exits_2_with_its_reason(
        receiver: Site, sensor_spool: Path, token_file: Path) -> None:
    result = run_script(EXPORT_SCRIPT, *connection(receiver.url, token_file),
                        batch=b"this is no ADS event\n", spool=sensor_spool)

    assert result.code == 2
    assert "HTTP 422" in result.err and "no readable record" in result.err
    assert receiver.prefect.runs == []
    assert len(kept_batches(sensor_spool)) == 1


def test_an_unreachable_receiver_exits_1_and_keeps_the_batch(
        sensor_spool: Path, token_file: Path) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]

    result = run_script(EXPORT_SCRIPT, *connection(f"http://127.0.0.1:{closed_port}", token_file),
                        batch=TSV_BATCH, spool=sensor_spool, env={"MISP_NDR_SENSOR_RETRIES": "1"})

    assert result.code == 1
    [kept] = kept_batches(sensor_spool)
    assert str(kept) in result.err


def test_https_receiver_with_a_private_ca_is_refused_until_ca_file_names_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sensor_spool: Path,
        token_file: Path) -> None:
    ca, cert, key = write_private_ca(tmp_path)
    prefect = FakePrefect()
    app = create_app(receiver_settings(tmp_path / "tls-receiver", monkeypatch), prefect)

    with serving(app, ssl_certfile=str(cert), ssl_keyfile=str(key)) as url:
        refused = run_script(EXPORT_SCRIPT, *connection(url, token_file),
                             batch=TSV_BATCH, spool=sensor_spool)
        [kept] = kept_batches(sensor_spool)
        accepted = run_script(EXPORT_SCRIPT, *connection(url, token_file), "--ca_file", str(ca),
                              batch=kept, spool=sensor_spool)
        unverified = run_script(EXPORT_SCRIPT, *connection(url, token_file), "--insecure",
                                batch=TSV_BATCH, spool=sensor_spool)

    assert refused.code == 1
    assert "--ca_file" in refused.err and str(kept) in refused.err
    assert accepted.code == 0, accepted.err
    assert [run.body for run in prefect.runs] == [TSV_BATCH.read_bytes()]
    assert kept_batches(sensor_spool) == []
    assert unverified.code == 0, unverified.err
    assert "warning: --insecure" in unverified.err
    assert "duplicate=true" in unverified.out


def test_both_scripts_share_one_body_so_a_fix_reaches_both() -> None:
    """ADS uploads each custom script as one file, so the body is in both: it must not drift."""
    marker = "# ---- end of the script-specific part"
    bodies = [path.read_text().split(marker, 1)[1]
              for path in sorted((ROOT / "sensors" / "flowmon").glob("misp_*_script.bash"))]
    assert len(bodies) == 2 and bodies[0] == bodies[1]
