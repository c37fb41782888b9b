"""The one HTTP client policy for MISP and Flowmon: timeouts, TLS, per-request retries.

Each request is retried on connection errors, timeouts, 429 (honouring Retry-After) and
5xx with exponential backoff and jitter, *including POSTs*: every write we make is
idempotent (deterministic UUIDs), so a repeat is safe. What still fails afterwards is
turned into a `TransientError`, `AuthError` or `RejectedError` by `raise_for_answer`, so
Prefect's task-level retry (see `misp_ndr.retry`) can tell them apart.
"""

from __future__ import annotations

import logging
import warnings
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import InsecureRequestWarning, NewConnectionError
from urllib3.exceptions import TimeoutError as Urllib3Timeout
from urllib3.util.retry import Retry

from misp_ndr.config import TlsClientSettings
from misp_ndr.errors import AuthError, RejectedError, TransientError

log = logging.getLogger(__name__)

TRANSIENT_STATUSES = frozenset({429, 500, 502, 503, 504})
# A server asking for a longer pause than this (urllib3 would wait up to 6 h) is waited for
# this long: a run that sleeps for hours holds its concurrency slot; the schedule retries.
RETRY_AFTER_MAX_SECONDS = 120
_warned_insecure: set[str] = set()


def retry_policy(tls: TlsClientSettings) -> Retry:
    return Retry(
        total=tls.retries,
        connect=tls.retries,
        read=tls.retries,
        status=tls.retries,
        backoff_factor=tls.retry_backoff,
        backoff_jitter=tls.retry_backoff / 2,
        backoff_max=60,
        status_forcelist=TRANSIENT_STATUSES,
        allowed_methods=None,  # every method: writes mounted here are idempotent
        respect_retry_after_header=True,
        retry_after_max=RETRY_AFTER_MAX_SECONDS,
        raise_on_status=False,
    )


def retrying_adapter(tls: TlsClientSettings) -> HTTPAdapter:
    return HTTPAdapter(max_retries=retry_policy(tls))


def write_once_adapter(tls: TlsClientSettings) -> HTTPAdapter:
    """For writes that are not idempotent (a sighting): retry only what the server surely
    did not process, a failed connection or a 429. After a 5xx or a lost answer the write
    may have happened; the caller must find out before writing again."""
    policy = retry_policy(tls).new(read=0, other=0, status_forcelist={429})
    return HTTPAdapter(max_retries=policy)


def warn_if_insecure(tls: TlsClientSettings, system: str) -> None:
    """Turning TLS verification off is the user's explicit choice: say so once, loudly."""
    if tls.requests_verify is False and system not in _warned_insecure:
        _warned_insecure.add(system)
        log.warning("TLS certificate verification is OFF for %s (verify_tls=false)", system)
        warnings.filterwarnings("ignore", category=InsecureRequestWarning)


class SettingsFirstSession(requests.Session):
    """requests lets REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE override `session.verify`: on a
    host exporting them, our ca_bundle and verify_tls=false would be silently ignored. An
    explicit choice in our settings wins; the default (True) still takes the host's bundle."""

    def merge_environment_settings(self, url: Any, proxies: Any, stream: Any, verify: Any,
                                   cert: Any) -> dict[str, Any]:
        merged = super().merge_environment_settings(url, proxies, stream, verify, cert)
        if verify is None and self.verify is not True:
            merged["verify"] = self.verify
        return merged


def build_session(tls: TlsClientSettings, system: str) -> requests.Session:
    """A session with our retry adapter on http and https, and the TLS choice applied."""
    warn_if_insecure(tls, system)
    session = SettingsFirstSession()
    adapter = retrying_adapter(tls)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    session.verify = tls.requests_verify
    return session


def describe_failure(exc: BaseException) -> str:
    """A short reason for a transport failure, without URLs' query strings or headers."""
    if isinstance(exc, requests.Timeout) or _retries_timed_out(exc):
        return "timed out"
    if isinstance(exc, requests.exceptions.SSLError):
        return "TLS verification failed (set a CA bundle, or verify_tls=false explicitly)"
    if isinstance(exc, requests.ConnectionError):
        return "connection failed (refused, reset or unreachable)"
    return type(exc).__name__


def _retries_timed_out(exc: BaseException) -> bool:
    """A read timeout that outlasted our `Retry` reaches requests as MaxRetryError, which
    it raises as a plain ConnectionError: only the reason tells it was a timeout."""
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    return isinstance(reason, Urllib3Timeout) and not isinstance(reason, NewConnectionError)


def raise_for_answer(status: int, system: str, what: str, detail: str = "") -> None:
    """Classify a final HTTP status (after per-request retries) into our error types."""
    suffix = f": {detail[:300]}" if detail else ""
    if status in (401, 403):
        raise AuthError(f"{system} refused {what} (HTTP {status}): check the credentials "
                        f"and the account's permissions{suffix}")
    if status in TRANSIENT_STATUSES:
        raise TransientError(f"{system} failed {what} (HTTP {status}) after retries{suffix}")
    if status >= 400:
        raise RejectedError(f"{system} rejected {what} (HTTP {status}){suffix}")
