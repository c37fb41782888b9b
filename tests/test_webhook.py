"""The webhook receiver as a sensor meets it: who gets in, what is refused and why, and
that an accepted payload is on disk and becomes exactly one run, Prefect up or down."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from deployments.definitions import Job
from misp_ndr.cli import app
from misp_ndr.config import load_settings
from misp_ndr.webhook.app import create_app, drain_spool, spool_directory
from misp_ndr.webhook.auth import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign
from misp_ndr.webhook.submit import PrefectUnavailable, RunRefused
from tests.conftest import SAMPLES
from tests.reliability import Recorder

TOKEN = "w3bh00k-T0ken-that-must-not-leak"
BEARER = {"Authorization": f"Bearer {TOKEN}"}
BATCH = (SAMPLES / "flowmon-batch.jsonl").read_bytes()


class RecordingSubmitter:
    """Prefect as the receiver sees it: runs created, or an outage."""

    def __init__(self) -> None:
        self.runs: dict[str, tuple[Job, dict[str, Any]]] = {}
        self.failure: Exception | None = None

    def submit(self, job: Job, parameters: dict[str, Any], idempotency_key: str) -> str:
        if self.failure is not None:
            raise self.failure
        self.runs.setdefault(idempotency_key, (job, parameters))
        return f"run-{list(self.runs).index(idempotency_key) + 1}"


@pytest.fixture
def prefect() -> RecordingSubmitter:
    return RecordingSubmitter()


@pytest.fixture
def client(monkeypatch: pytest.MonkeyPatch, prefect: RecordingSubmitter,
           tmp_path: Path) -> Iterator[TestClient]:
    monkeypatch.setenv("MISP_NDR_WEBHOOK__TOKEN", TOKEN)
    monkeypatch.setenv("MISP_NDR_WEBHOOK__MAX_BODY_BYTES", "4096")
    monkeypatch.setenv("MISP_NDR_STATE_DIR", str(tmp_path / "state"))
    with TestClient(create_app(load_settings(), prefect)) as test_client:
        yield test_client


def signed_headers(at: int, body: bytes = BATCH) -> dict[str, str]:
    """HMAC headers of a POST of `body` to /hooks/export with no options or key."""
    return {TIMESTAMP_HEADER: str(at), SIGNATURE_HEADER: sign(TOKEN, at, "/hooks/export", body)}


def spooled(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "state" / "webhook-spool").glob("*.batch"))


def got_through(prefect: RecordingSubmitter, tmp_path: Path) -> int:
    """What a refused request must not leave: runs created, payloads kept."""
    return len(prefect.runs) + len(spooled(tmp_path))


def test_a_receiver_without_a_token_refuses_to_start(reliability: Recorder) -> None:
    started = 0
    try:
        create_app(load_settings(), RecordingSubmitter())
        started += 1
    except ValueError as exc:
        assert "MISP_NDR_WEBHOOK__TOKEN" in str(exc)
    command = CliRunner().invoke(app, ["webhook"])  # before any Prefect or port is touched
    if "MISP_NDR_WEBHOOK__TOKEN is not set" not in command.stderr or command.exit_code != 2:
        started += 1
    reliability.record("webhook", "no token configured: start attempts (app factory, "
                       "misp-ndr webhook)", checked=2, injected=started)


@pytest.mark.parametrize(("headers", "reason"), [
    ({}, "missing credentials"),
    ({"Authorization": "Bearer not-the-token"}, "wrong token"),
    ({"Authorization": f"Basic {TOKEN}"}, "Bearer <token>"),
    ({TIMESTAMP_HEADER: "1", SIGNATURE_HEADER: "sha256=00"}, "away from the receiver"),
])
def test_wrong_or_missing_credentials_get_401_and_nothing_is_kept_or_run(
    client: TestClient, prefect: RecordingSubmitter, tmp_path: Path,
    headers: dict[str, str], reason: str, reliability: Recorder,
) -> None:
    answer = client.post("/hooks/export", content=BATCH, headers=headers)
    assert answer.status_code == 401 and reason in answer.json()["detail"]
    assert answer.headers["WWW-Authenticate"] == "Bearer"
    reliability.record("webhook", f"credentials refused: {reason}", checked=1,
                       injected=got_through(prefect, tmp_path))


def test_credentials_are_checked_before_a_large_body_is_read(
    client: TestClient, prefect: RecordingSubmitter, tmp_path: Path, reliability: Recorder,
) -> None:
    big = BATCH * 20
    stale = {TIMESTAMP_HEADER: "1", SIGNATURE_HEADER: "sha256=00"}
    for headers in (stale, {"Authorization": "Bearer wrong"}):
        assert client.post("/hooks/export", content=big, headers=headers).status_code == 401
    reliability.record("webhook", "oversize body with bad credentials: 401 before reading",
                       checked=2, injected=got_through(prefect, tmp_path))


def test_an_hmac_signed_body_is_accepted_and_a_tampered_one_refused(
    client: TestClient, prefect: RecordingSubmitter, reliability: Recorder,
) -> None:
    now = int(time.time())
    signed = signed_headers(now)
    assert client.post("/hooks/export", content=BATCH, headers=signed).status_code == 202
    tampered = client.post("/hooks/export", content=BATCH + b"\n", headers=signed)
    assert tampered.status_code == 401 and tampered.json()["detail"] == "wrong signature"
    reliability.record("webhook", "HMAC signature of another body (tampered body)",
                       checked=1, injected=len(prefect.runs) - 1)


def test_a_signed_request_replayed_after_the_window_is_refused(
    client: TestClient, prefect: RecordingSubmitter, tmp_path: Path, reliability: Recorder,
) -> None:
    then = int(time.time()) - 3600
    replay = signed_headers(then)
    answer = client.post("/hooks/export", content=BATCH, headers=replay)
    assert answer.status_code == 401 and "replay" in answer.json()["detail"]
    reliability.record("webhook", "signed request replayed an hour later", checked=1,
                       injected=got_through(prefect, tmp_path))


def test_a_signed_request_replayed_within_the_window_is_the_same_run(
    client: TestClient, prefect: RecordingSubmitter, tmp_path: Path, reliability: Recorder,
) -> None:
    """The window cannot stop a replay of a fresh capture; the payload key does: the same
    hook, options and body are the run already made (auth.py, docs/operations.md)."""
    now = int(time.time())
    signed = signed_headers(now)
    answers = [client.post("/hooks/export", content=BATCH, headers=signed).json()
               for _ in range(3)]
    assert [a["duplicate"] for a in answers] == [False, True, True]
    assert len({a["flow_run_id"] for a in answers}) == 1
    reliability.record("webhook", "signed request replayed twice within the window",
                       checked=len(answers), duplicated=len(prefect.runs) - 1
                       + len(spooled(tmp_path)) - 1)


@pytest.mark.parametrize(("what", "hook", "params", "extra_headers"), [
    pytest.param("options changed to distribution=3", "export", {"distribution": "3"}, {},
                 id="other options"),
    pytest.param("a fresh Idempotency-Key header", "export", {},
                 {"Idempotency-Key": "replay-1"}, id="other idempotency key"),
    pytest.param("the sightings hook instead of export", "sightings", {}, {},
                 id="other hook"),
])
def test_a_signed_request_replayed_with_other_options_is_refused(
    client: TestClient, prefect: RecordingSubmitter, reliability: Recorder, what: str,
    hook: str, params: dict[str, str], extra_headers: dict[str, str],
) -> None:
    now = int(time.time())
    signed = signed_headers(now)
    assert client.post("/hooks/export", content=BATCH, headers=signed).status_code == 202
    replay = client.post(f"/hooks/{hook}", content=BATCH, params=params,
                         headers={**signed, **extra_headers})
    assert replay.status_code == 401 and replay.json()["detail"] == "wrong signature"
    reliability.record("webhook", f"signed request replayed within the window with {what}",
                       checked=1, injected=len(prefect.runs) - 1)


def test_a_signature_over_the_options_and_idempotency_key_is_accepted(
    client: TestClient, prefect: RecordingSubmitter,
) -> None:
    now = int(time.time())
    target = "/hooks/export?distribution=2&ip_filters=198.18.0.0%2F15"
    headers = {TIMESTAMP_HEADER: str(now), "Idempotency-Key": "batch-7",
               SIGNATURE_HEADER: sign(TOKEN, now, target, BATCH, "batch-7")}
    assert client.post(target, content=BATCH, headers=headers).status_code == 202
    ((_, parameters),) = prefect.runs.values()
    assert parameters["distribution"] == 2 and parameters["ip_filters"] == ["198.18.0.0/15"]


@pytest.mark.skipif(shutil.which("openssl") is None, reason="the documented client uses openssl")
def test_the_documented_openssl_command_computes_the_receivers_signature(tmp_path: Path) -> None:
    (tmp_path / "batch.jsonl").write_bytes(BATCH)
    script = ('ts=1700000000; target="/hooks/export?distribution=2"; key="ads-batch-42"\n'
              "printf '%s.%s.%s.' \"$ts\" \"$target\" \"$key\" | cat - batch.jsonl |\n"
              '  openssl dgst -sha256 -hmac "$TOKEN" -r | cut -d" " -f1\n')
    documented = (Path(__file__).parent.parent / "docs" / "operations.md").read_text()
    assert "printf '%s.%s.%s.' \"$ts\" \"$target\" \"$key\" | cat - batch.jsonl |" in documented
    hexdigest = subprocess.run(["bash", "-c", script], cwd=tmp_path, check=True, text=True,
                               capture_output=True, env={**os.environ, "TOKEN": TOKEN}).stdout
    assert "sha256=" + hexdigest.strip() == sign(
        TOKEN, 1700000000, "/hooks/export?distribution=2", BATCH, "ads-batch-42")


@pytest.mark.parametrize("declared", [True, False], ids=["Content-Length", "chunked"])
def test_an_oversize_body_gets_413_declared_or_streamed(
    client: TestClient, prefect: RecordingSubmitter, tmp_path: Path, declared: bool,
    reliability: Recorder,
) -> None:
    big = BATCH * 20
    assert len(big) > 4096
    body = big if declared else iter([big[:3000], big[3000:]])
    answer = client.post("/hooks/export", content=body, headers=BEARER)
    assert answer.status_code == 413 and "MAX_BODY_BYTES" in answer.json()["detail"]
    how = "declared in Content-Length" if declared else "streamed, chunked"
    reliability.record("webhook", f"oversize body ({how})", checked=1,
                       injected=got_through(prefect, tmp_path))


@pytest.mark.parametrize(("hook", "query", "body", "named"), [
    ("export", {}, b"", "empty flowmon-stdin batch"),
    ("export", {}, b"not\ta\tbatch\n", "line 1: 3 tab-separated fields"),
    ("export", {"source": "suricata"}, b'{"event_type": "alert"\n', "line 1: not JSON"),
    ("export", {}, b"\xff\xfe binary", "not UTF-8"),
    ("export", {"distribution": "7"}, BATCH, "distribution"),
    ("export", {"misp_api_key": "x"}, BATCH, "misp_api_key"),
    ("export", {"timezone": "Mars/Olympus"}, BATCH, "unknown time zone"),
    ("export", {"ip_filters": "10.0.0.0/33"}, BATCH, "ip_filters: invalid IP pattern"),
    ("export", {"tag": ""}, BATCH, "tag: String should have at least 1 character"),
    ("sightings", {"source_name": "a\nb"}, BATCH, "source_name: must be printable"),
    ("sightings", {"source": "zeek"}, BATCH, "source"),
    ("update-rules", {}, b'{"fast": "perhaps"}', "fast"),
    ("update-rules", {"fast": "1"}, b"", "JSON body, not as query parameters"),
])
def test_a_bad_payload_gets_422_naming_the_problem_and_is_not_kept(
    client: TestClient, prefect: RecordingSubmitter, tmp_path: Path,
    hook: str, query: dict[str, str], body: bytes, named: str,
) -> None:
    answer = client.post(f"/hooks/{hook}", content=body, params=query, headers=BEARER)
    assert answer.status_code == 422 and named in answer.json()["detail"]
    assert not prefect.runs and not spooled(tmp_path)


def test_an_accepted_batch_is_kept_byte_for_byte_and_becomes_a_run_with_typed_options(
    client: TestClient, prefect: RecordingSubmitter, tmp_path: Path,
) -> None:
    answer = client.post("/hooks/export", content=BATCH, headers=BEARER, params=[
        ("distribution", "2"), ("to_ids", "1"), ("ip_filters", "198.18.0.0/15,Servers"),
        ("ip_filters", "10.1.2.{1,5}")])
    assert answer.status_code == 202
    assert answer.json() | {"idempotency_key": None} == {
        "flow_run_id": "run-1", "job": "export", "duplicate": False, "idempotency_key": None,
        "records": 5, "problems": 0, "first_problems": []}
    ((job, parameters),) = prefect.runs.values()
    (kept,) = spooled(tmp_path)
    assert job is Job.EXPORT and kept.read_bytes() == BATCH
    assert parameters == {"source": "flowmon-stdin", "distribution": 2, "to_ids": True,
                          "ip_filters": ["198.18.0.0/15", "Servers", "10.1.2.{1,5}"],
                          "input_path": str(kept), "discard_input": True}


def test_a_batch_with_some_bad_lines_is_accepted_and_the_bad_ones_reported(
    client: TestClient,
) -> None:
    body = BATCH + b"garbage line\n"
    answer = client.post("/hooks/export", content=body, headers=BEARER).json()
    assert answer["records"] == 6 and answer["problems"] == 1
    assert answer["first_problems"] == [
        "posted flowmon-stdin batch line 6: 1 tab-separated fields; expected 14 (IDS event), "
        "15 (classic ADS event) or 16-17 (extended ADS event)"]


def test_a_sensor_retrying_the_same_batch_gets_the_same_run_not_a_second(
    client: TestClient, prefect: RecordingSubmitter, tmp_path: Path,
) -> None:
    first = client.post("/hooks/export", content=BATCH, headers=BEARER).json()
    second = client.post("/hooks/export", content=BATCH, headers=BEARER).json()
    assert second["duplicate"] and second["flow_run_id"] == first["flow_run_id"]
    assert len(prefect.runs) == 1 and len(spooled(tmp_path)) == 1
    other_options = client.post("/hooks/export", content=BATCH, headers=BEARER,
                                params={"tag": "other"}).json()
    assert not other_options["duplicate"] and len(prefect.runs) == 2


def test_update_rules_triggers_within_a_slot_are_one_run_unless_keyed_by_the_client(
    client: TestClient, prefect: RecordingSubmitter,
) -> None:
    for _ in range(2):
        assert client.post("/hooks/update-rules", headers=BEARER).status_code == 202
    assert len(prefect.runs) == 1
    for key in ("nightly-2026-12-01", "manual-1"):
        client.post("/hooks/update-rules", content=b'{"fast": true}',
                    headers={**BEARER, "Idempotency-Key": key})
    assert [parameters for _, parameters in prefect.runs.values()] == [
        {"fast": False}, {"fast": True}, {"fast": True}]


def test_with_prefect_down_the_answer_is_503_and_the_payload_waits_for_a_retry(
    client: TestClient, prefect: RecordingSubmitter, tmp_path: Path,
) -> None:
    prefect.failure = PrefectUnavailable("Prefect API unreachable (ConnectError)")
    answer = client.post("/hooks/export", content=BATCH, headers=BEARER)
    assert answer.status_code == 503 and answer.headers["Retry-After"] == "30"
    assert answer.json()["kept"] is True and "--drain" in answer.json()["detail"]
    assert [path.read_bytes() for path in spooled(tmp_path)] == [BATCH]
    assert client.get("/health").json() == {"status": "ok", "pending": 1}

    prefect.failure = None
    retried = client.post("/hooks/export", content=BATCH, headers=BEARER).json()
    assert retried["flow_run_id"] == "run-1" and not retried["duplicate"]
    assert len(prefect.runs) == 1 and client.get("/health").json()["pending"] == 0


def test_drain_submits_what_was_kept_while_prefect_was_down(
    client: TestClient, prefect: RecordingSubmitter,
) -> None:
    prefect.failure = PrefectUnavailable("down")
    client.post("/hooks/export", content=BATCH, headers=BEARER)
    client.post("/hooks/update-rules", content=b'{"since": "2026-11-01T00:00:00Z"}',
                headers=BEARER)
    spool = spool_directory(load_settings())
    assert drain_spool(spool, prefect) == (0, 2)
    prefect.failure = None
    assert drain_spool(spool, prefect) == (2, 0)
    assert sorted(job.value for job, _ in prefect.runs.values()) == ["export", "update-rules"]
    assert drain_spool(spool, prefect) == (0, 0)


def test_payloads_submitted_long_ago_are_forgotten_when_the_receiver_starts(
    client: TestClient, prefect: RecordingSubmitter,
) -> None:
    client.post("/hooks/export", content=BATCH, headers=BEARER)
    spool = spool_directory(load_settings())
    (entry_file,) = (spool.directory / "submitted").glob("*.json")
    fresh = spool.directory / "submitted" / "fresh.json"
    fresh.write_text(entry_file.read_text())
    long_ago = time.time() - 31 * 24 * 3600
    os.utime(entry_file, (long_ago, long_ago))
    create_app(load_settings(), prefect)
    assert fresh.exists()
    assert not entry_file.exists()
    again = client.post("/hooks/export", content=BATCH, headers=BEARER).json()
    assert not again["duplicate"] and len(prefect.runs) == 1  # Prefect's own key still holds


def test_a_run_prefect_refuses_for_good_is_a_422_and_not_kept(
    client: TestClient, prefect: RecordingSubmitter, tmp_path: Path,
) -> None:
    prefect.failure = RunRefused("Prefect refused the run (409): parameters")
    answer = client.post("/hooks/export", content=BATCH, headers=BEARER)
    assert answer.status_code == 422 and "409" in answer.json()["detail"]
    assert not spooled(tmp_path) and client.get("/health").json()["pending"] == 0


def test_the_token_never_appears_in_logs_answers_or_the_spool(
    client: TestClient, tmp_path: Path, caplog: pytest.LogCaptureFixture,
    reliability: Recorder,
) -> None:
    caplog.set_level(logging.DEBUG)
    now = int(time.time())
    answers = [client.post("/hooks/export", content=BATCH, headers=headers).text
               for headers in (BEARER, {"Authorization": f"Bearer {TOKEN}x"}, {},
                               {TIMESTAMP_HEADER: str(now),
                                SIGNATURE_HEADER: sign(TOKEN, now, "/hooks/export", b"other")})]
    kept = [path.read_text() for path in (tmp_path / "state").rglob("*") if path.is_file()]
    places = [caplog.text, *answers, *kept, repr(load_settings()), str(load_settings().webhook)]
    found = sum(place.count(TOKEN[:10]) for place in places)
    assert found == 0
    reliability.record("secrets", "webhook: right, wrong, missing token and bad signature "
                       "(logs at DEBUG, answers, spool, settings repr)", checked=len(places),
                       injected=found)
