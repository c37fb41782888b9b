"""The three jobs as operators run them: a real Prefect server on 127.0.0.1 (SQLite), the
deployments registered by `misp-ndr deploy`, a real process worker, the real webhook
receiver, and MISP as a stand-in over real HTTP on loopback. Each deployment is triggered
through the receiver, and the test counts what reached MISP and what the sensors got."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import SAMPLES
from tests.loopback_http import LoopbackRouter, serving
from tests.misp_stand_in import API_KEY, MispStandIn

TOKEN = "integration-webhook-token-5f1c9a"
SERVER_START_SECONDS = 120
RUN_SECONDS = 120
COMPOSITE_ATTRIBUTE = "3c41acd0-15fa-5a73-8d4c-a3efcb8feb06"  # the sample feed's domain|ip
FEED_EVENTS = sorted((SAMPLES / "misp-feed").glob("*-*.json"))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until_up(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + SERVER_START_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"{url} exited early:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    pytest.fail(f"{url} not up after {SERVER_START_SECONDS} s:\n{log.read_text()[-3000:]}")


class Stack:
    """Processes of one operator set-up, stopped together."""

    def __init__(self, root: Path, env: dict[str, str]) -> None:
        self.root, self.env, self.processes = root, env, []

    def start(self, name: str, *command: str, **env: str) -> subprocess.Popen[bytes]:
        log = self.root / f"{name}.log"
        process = subprocess.Popen(command, cwd=self.root / "work", env={**self.env, **env},
                                   stdout=log.open("wb"), stderr=subprocess.STDOUT)
        self.processes.append(process)
        return process

    def run(self, *command: str, **env: str) -> str:
        done = subprocess.run(command, cwd=self.root / "work", env={**self.env, **env},
                              timeout=120,
                              capture_output=True, text=True, check=False)
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    def start_server(self, name: str = "server") -> subprocess.Popen[bytes]:
        """`prefect server start` on PREFECT_API_URL's port; its SQLite lives in PREFECT_HOME,
        so a restarted server has the same deployments and runs."""
        api = self.env["PREFECT_API_URL"]
        port = api.rsplit(":", 1)[1].split("/")[0]
        self.server = self.start(name, "prefect", "server", "start", "--host", "127.0.0.1",
                                 "--port", port)
        wait_until_up(f"{api}/health", self.server, self.root / f"{name}.log")
        return self.server

    def log(self, name: str) -> str:
        return (self.root / f"{name}.log").read_text(errors="replace")

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()


@pytest.fixture(scope="module")
def misp() -> Iterator[MispStandIn]:
    router = LoopbackRouter()
    stand_in = MispStandIn(router, url=router.url)  # type: ignore[arg-type]
    for path in FEED_EVENTS:
        event = json.loads(path.read_text())["Event"]
        stand_in.publish_event(event["uuid"], event["info"], event["date"], 1795000000,
                               event["Attribute"],
                               tuple(tag["name"] for tag in event.get("Tag", [])))
    with serving(router):
        yield stand_in


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, misp: MispStandIn) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("operator")
    (root / "work").mkdir()
    api_port, hook_port = free_port(), free_port()
    bin_dir = Path(sys.executable).parent
    env = {name: value for name, value in os.environ.items()
           if not name.startswith(("MISP_NDR_", "PREFECT_"))}
    env.update({
        "PATH": f"{bin_dir}{os.pathsep}{env.get('PATH', '')}",
        "PREFECT_HOME": str(root / "prefect-home"),
        "PREFECT_API_URL": f"http://127.0.0.1:{api_port}/api",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_WORKER_QUERY_SECONDS": "1",
        "PREFECT_LOGGING_EXTRA_LOGGERS": "tasks,flows,misp_ndr",
        "MISP_NDR_MISP__URL": misp.url, "MISP_NDR_MISP__API_KEY": API_KEY,
        "MISP_NDR_MISP__RETRIES": "1", "MISP_NDR_MISP__RETRY_BACKOFF": "0",
        "MISP_NDR_STATE_DIR": str(root / "state"),
        "MISP_NDR_WEBHOOK__TOKEN": TOKEN, "MISP_NDR_WEBHOOK__PORT": str(hook_port),
    })
    stack = Stack(root, env)
    try:
        stack.start_server()
        stack.run("misp-ndr", "deploy")
        stack.start("worker", "prefect", "worker", "start", "--pool", "misp-ndr")
        receiver = stack.start("webhook", "misp-ndr", "webhook")
        wait_until_up(f"http://127.0.0.1:{hook_port}/health", receiver, root / "webhook.log")
        stack.hooks = f"http://127.0.0.1:{hook_port}/hooks"  # type: ignore[attr-defined]
        yield stack
    finally:
        stack.stop()


def post(stack: Stack, job: str, body: bytes, **query: Any) -> dict[str, Any]:
    answer = httpx.post(f"{stack.hooks}/{job}", content=body, params=query,  # type: ignore[attr-defined]
                        headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)
    assert answer.status_code == 202, answer.text
    return answer.json()


def wait_for_run(stack: Stack, run_id: str, log: str = "worker") -> dict[str, Any]:
    api = stack.env["PREFECT_API_URL"]
    deadline = time.monotonic() + RUN_SECONDS
    while time.monotonic() < deadline:
        run = httpx.get(f"{api}/flow_runs/{run_id}", timeout=10).json()
        if run["state"]["type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
            assert run["state"]["type"] == "COMPLETED", stack.log(log)[-4000:]
            return run
        time.sleep(1)
    pytest.fail(f"run {run_id} not finished after {RUN_SECONDS} s:\n{stack.log(log)[-4000:]}")


def create_run(stack: Stack, deployment_id: str, parameters: dict[str, Any]) -> str:
    """A run of the deployment, asked for again while the server answers 5xx (its SQLite
    database under a loaded machine): one idempotency key, so retries make one run. Any
    other refusal fails with the server's answer."""
    url = f"{stack.env['PREFECT_API_URL']}/deployments/{deployment_id}/create_flow_run"
    body = {"parameters": parameters, "idempotency_key": f"test-{deployment_id}"}
    deadline = time.monotonic() + SERVER_START_SECONDS
    while (answer := httpx.post(url, json=body, timeout=10)).status_code >= 500:
        assert time.monotonic() < deadline, f"{answer.status_code}: {answer.text[:2000]}"
        time.sleep(1)
    assert answer.status_code in (200, 201), f"{answer.status_code}: {answer.text[:2000]}"
    return str(answer.json()["id"])


def runs_of(stack: Stack, deployment: str) -> list[dict[str, Any]]:
    api = stack.env["PREFECT_API_URL"]
    flow, name = deployment.split("/")
    found = httpx.get(f"{api}/deployments/name/{flow}/{name}", timeout=10).json()
    return httpx.post(f"{api}/flow_runs/filter", timeout=10, json={
        "deployments": {"id": {"any_": [found["id"]]}}}).json()


def test_deploy_registers_three_deployments_with_the_automatic_update_schedule(
    stack: Stack,
) -> None:
    api = stack.env["PREFECT_API_URL"]
    rules = httpx.get(f"{api}/deployments/name/update-rules/misp-ndr", timeout=10).json()
    assert rules["work_pool_name"] == "misp-ndr"
    assert rules["entrypoint"] == "flows.update_rules.update_rules"
    (schedule,) = rules["schedules"]
    assert "FREQ=DAILY;INTERVAL=1" in schedule["schedule"]["rrule"]
    assert schedule["parameters"] == {"max_age_days": 30}
    for name in ("export-detections/misp-ndr", "submit-sightings/misp-ndr"):
        deployment = httpx.get(f"{api}/deployments/name/{name}", timeout=10).json()
        assert deployment["schedules"] == []  # Flowmon polling is off by default
        assert "source" in deployment["parameter_openapi_schema"]["required"]

    stack.run("misp-ndr", "deploy", MISP_NDR_RULES__SCHEDULE_TIME_UTC="05:30",
              MISP_NDR_RULES__MAX_EVENT_AGE_DAYS="14")
    redeployed = httpx.get(f"{api}/deployments/name/update-rules/misp-ndr", timeout=10).json()
    assert redeployed["id"] == rules["id"]
    (updated,) = redeployed["schedules"]  # updated in place, not a second schedule
    assert "T053000" in updated["schedule"]["rrule"]
    assert updated["parameters"] == {"max_age_days": 14}


def test_webhook_runs_of_each_deployment_reach_misp_and_the_sensors_exactly_once(
    stack: Stack, misp: MispStandIn,
) -> None:
    rules = post(stack, "update-rules", json.dumps({"max_age_days": 3650}).encode())
    wait_for_run(stack, rules["flow_run_id"])
    assert misp.searches, "the rule update pulled from MISP"
    rules_file = stack.root / "work" / "out" / "rules" / "misp.rules"
    assert rules_file.read_text().count("alert ") >= 10

    batch = (SAMPLES / "flowmon-batch.jsonl").read_bytes()
    export = post(stack, "export", batch, distribution="1", tag="from-webhook")
    hits = (SAMPLES / "sightings" / "hits.csv").read_bytes()
    sightings = post(stack, "sightings", hits, source="csv", source_name="proxy/{sensor}")
    wait_for_run(stack, export["flow_run_id"])
    wait_for_run(stack, sightings["flow_run_id"])

    assert len(misp.events) == 5
    assert all(int(event["distribution"]) == 1 for event in misp.events.values())
    assert all("from-webhook" in {tag["name"] for tag in event["Tag"]}
               for event in misp.events.values())
    # hits.csv: 81.2.69.160 twice in one window, the look-alike domain once (both halves of
    # one domain|ip attribute), 93.184.216.34 unknown to MISP, one unreadable time
    assert sorted((s["attribute_uuid"], s["date_sighting"], s["source"])
                  for s in misp.sightings) == [
        (COMPOSITE_ATTRIBUTE, "1795161600", "proxy/proxy-1"),
        (COMPOSITE_ATTRIBUTE, "1795168800", "proxy/proxy-1")]
    spool = stack.root / "state" / "webhook-spool"
    assert not list(spool.glob("*.batch")), "a handled payload is deleted by its run"

    sightings_before = len(misp.sightings)
    again = post(stack, "export", batch, distribution="1", tag="from-webhook")
    assert again["duplicate"] and again["flow_run_id"] == export["flow_run_id"]
    assert len(runs_of(stack, "export-detections/misp-ndr")) == 1
    assert len(misp.events) == 5 and len(misp.sightings) == sightings_before


def test_a_batch_posted_while_prefect_is_down_is_kept_and_drained_once_it_is_back(
    stack: Stack, misp: MispStandIn,
) -> None:
    stack.server.terminate()
    stack.server.wait(timeout=30)
    eve = (SAMPLES / "eve.json").read_bytes()
    refused = httpx.post(f"{stack.hooks}/export", content=eve,  # type: ignore[attr-defined]
                         params={"source": "suricata", "tag": "after-outage"},
                         headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60)
    assert refused.status_code == 503 and refused.json()["kept"] is True
    assert refused.headers["Retry-After"] == "30"
    kept = stack.root / "state" / "webhook-spool" / f"{refused.json()['idempotency_key']}.batch"
    assert kept.read_bytes() == eve

    stack.start_server("server-restarted")
    assert "submitted 1 kept payload(s); 0 still pending" in stack.run(
        "misp-ndr", "webhook", "--drain")
    (run,) = [r for r in runs_of(stack, "export-detections/misp-ndr")
              if r["parameters"].get("tag") == "after-outage"]
    wait_for_run(stack, run["id"])  # the worker outlived the outage
    tagged = [event for event in misp.events.values()
              if "after-outage" in {tag["name"] for tag in event["Tag"]}]
    assert tagged and not kept.exists()
    assert "submitted 0 kept payload(s)" in stack.run("misp-ndr", "webhook", "--drain")


def test_deploy_serve_runs_its_deployments_without_a_worker(stack: Stack) -> None:
    stack.start("serve", "misp-ndr", "deploy", "--serve", MISP_NDR_DEPLOY__NAME="served")
    api = stack.env["PREFECT_API_URL"]
    deadline = time.monotonic() + SERVER_START_SECONDS
    while (found := httpx.get(f"{api}/deployments/name/update-rules/served", timeout=10)
           ).status_code != 200:
        assert time.monotonic() < deadline, stack.log("serve")[-3000:]
        time.sleep(1)
    assert found.json()["work_pool_name"] is None  # nothing for the pool's worker
    run_id = create_run(stack, found.json()["id"], {
        "feed": str(SAMPLES / "misp-feed"), "max_age_days": 3650, "output_dir": "served-rules"})
    wait_for_run(stack, run_id, log="serve")
    assert (stack.root / "work" / "served-rules" / "misp.rules").is_file()
