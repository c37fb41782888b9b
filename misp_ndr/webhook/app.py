"""The receiver's HTTP API: `POST /hooks/{export,sightings,update-rules}` and `GET /health`.

Order of checks: size, secret, payload; then the payload is kept on disk and only then is
the run created. 202 carries the flow run id; a retried payload gets the same run back; with
the Prefect API down the answer is 503 and the payload waits for a retry or `--drain`.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import SecretStr
from starlette.concurrency import run_in_threadpool

from deployments.definitions import Job
from misp_ndr.config import Settings, WebhookSettings
from misp_ndr.webhook.auth import (
    IDEMPOTENCY_HEADER,
    AuthFailure,
    check_bearer,
    check_signature,
    check_signature_headers,
    has_bearer,
)
from misp_ndr.webhook.payloads import CheckedPayload, PayloadError, check_payload
from misp_ndr.webhook.spool import SpoolEntry, WebhookSpool, payload_key
from misp_ndr.webhook.submit import PrefectUnavailable, RunRefused, Submitter

logger = logging.getLogger(__name__)
RETRY_AFTER_SECONDS = 30
# Without an Idempotency-Key header, update-rules requests with the same body in the same
# slot of this many minutes are one trigger (its body alone would dedupe forever).
UPDATE_RULES_SLOT_MINUTES = 10
# How long a submitted payload is remembered, so that a sensor's late retry finds its run.
SUBMITTED_ENTRIES_KEPT = timedelta(days=30)


class TooLarge(Exception):
    pass


def spool_directory(settings: Settings) -> WebhookSpool:
    return WebhookSpool(settings.webhook.spool_dir or settings.state_dir / "webhook-spool")


def create_app(settings: Settings, submitter: Submitter) -> FastAPI:
    """The receiver; `settings.webhook.token` must be set (the CLI refuses to start without)."""
    token = settings.webhook.token
    if token is None:
        raise ValueError("the webhook receiver needs MISP_NDR_WEBHOOK__TOKEN")
    spool = spool_directory(settings)
    pruned = spool.prune_submitted(SUBMITTED_ENTRIES_KEPT)
    if pruned:
        logger.info("forgot %d payload(s) submitted over %d days ago", pruned,
                    SUBMITTED_ENTRIES_KEPT.days)
    app = FastAPI(title="misp-ndr webhook receiver", docs_url=None, redoc_url=None)

    @app.get("/health")
    def health() -> dict[str, Any]:
        return {"status": "ok", "pending": len(spool.pending())}

    def route(job: Job) -> None:
        async def hook(request: Request) -> JSONResponse:
            return await receive(job, request, settings.webhook, token, spool, submitter)

        app.post(f"/hooks/{job.value}", status_code=202, name=f"hook-{job.value}")(hook)

    for job in Job:
        route(job)
    return app


async def receive(job: Job, request: Request, options: WebhookSettings, secret: SecretStr,
                  spool: WebhookSpool, submitter: Submitter) -> JSONResponse:
    bearer = has_bearer(request.headers)
    try:
        if bearer:
            check_bearer(request.headers, secret)
        else:
            check_signature_headers(request.headers, options.signature_max_age_seconds)
        body = await bounded_body(request, options.max_body_bytes)
        if not bearer:
            check_signature(request.headers, request_target(request), body, secret)
    except TooLarge:
        return answer(413, detail=f"body larger than {options.max_body_bytes} bytes "
                                  "(MISP_NDR_WEBHOOK__MAX_BODY_BYTES); split the batch")
    except AuthFailure as exc:
        logger.warning("refused %s hook from %s: %s", job.value, _client(request), exc)
        return answer(401, {"WWW-Authenticate": "Bearer"}, detail=str(exc))
    query = list(request.query_params.multi_items())
    return await run_in_threadpool(accept, job, query, body,
                                   request.headers.get(IDEMPOTENCY_HEADER), spool, submitter)


def request_target(request: Request) -> str:
    """Path and query string as the client sent them, before any decoding: what it signed."""
    target = request.scope.get("raw_path", request.url.path.encode()).decode("latin-1")
    query = request.scope.get("query_string", b"").decode("latin-1")
    return f"{target}?{query}" if query else target


def accept(job: Job, query: list[tuple[str, str]], body: bytes, client_key: str | None,
           spool: WebhookSpool, submitter: Submitter) -> JSONResponse:
    """Validate, keep, submit: the part that reads files and calls Prefect."""
    try:
        checked = check_payload(job, query, body)
    except PayloadError as exc:
        return answer(422, detail=str(exc))
    key = payload_key(job.value, checked.parameters, body, client_key or _slot(job))
    entry = spool.entry(key)
    if entry is not None and not entry.pending:
        return answer(202, **_accepted(entry, checked, duplicate=True))
    if entry is None:
        body_kept = None if job is Job.UPDATE_RULES else body
        parameters = {**checked.parameters,
                      **({"discard_input": True} if body_kept is not None else {})}
        entry = spool.keep(key, job.value, parameters, body_kept, checked.summary())
    return submit_entry(entry, spool, submitter, checked)


def submit_entry(entry: SpoolEntry, spool: WebhookSpool, submitter: Submitter,
                 checked: CheckedPayload | None = None) -> JSONResponse:
    try:
        run_id = submitter.submit(Job(entry.job), entry.parameters, entry.key)
    except PrefectUnavailable as exc:
        logger.warning("%s payload %s kept, not submitted: %s", entry.job, entry.key[:12], exc)
        return answer(503, {"Retry-After": str(RETRY_AFTER_SECONDS)}, kept=True,
                      idempotency_key=entry.key, detail=f"{exc}; the payload is kept: retry, "
                      "or run misp-ndr webhook --drain once Prefect is back")
    except RunRefused as exc:
        spool.forget(entry)
        return answer(422, detail=str(exc))
    spool.mark_submitted(entry, run_id)
    logger.info("%s payload %s submitted as flow run %s", entry.job, entry.key[:12], run_id)
    return answer(202, **_accepted(entry, checked, duplicate=False))


def drain_spool(spool: WebhookSpool, submitter: Submitter) -> tuple[int, int]:
    """Submit every kept payload; (submitted, still pending)."""
    pending = spool.pending()
    done = sum(submit_entry(entry, spool, submitter).status_code == 202 for entry in pending)
    return done, len(spool.pending())


def answer(status: int, headers: dict[str, str] | None = None, **body: Any) -> JSONResponse:
    return JSONResponse(body, status_code=status, headers=headers)


async def bounded_body(request: Request, limit: int) -> bytes:
    """Refuse early on Content-Length, and stop reading a chunked body past the limit."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise TooLarge
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise TooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def _accepted(entry: SpoolEntry, checked: CheckedPayload | None,
              duplicate: bool) -> dict[str, Any]:
    return {"flow_run_id": entry.flow_run_id, "job": entry.job, "duplicate": duplicate,
            "idempotency_key": entry.key, **(checked.summary() if checked else entry.summary)}


def _slot(job: Job) -> str | None:
    if job is not Job.UPDATE_RULES:
        return None
    now = datetime.now(UTC)
    return f"{now:%Y%m%d%H}-{now.minute // UPDATE_RULES_SLOT_MINUTES}"


def _client(request: Request) -> str:
    return request.client.host if request.client else "unknown client"
