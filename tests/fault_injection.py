"""Faults for the MISP stand-in: which request to an endpoint fails, and how.

A `FaultSchedule` maps (endpoint, n-th request to it) to a `Fault`; `MispStandIn(...,
faults=schedule)` plays it (endpoints are MISP paths without the leading slash:
"events/add", "events/edit", "tags/search", "tags/add", "sightings/add",
"sightings/restSearch", "attributes/restSearch", and the GETs of PyMISP's constructor,
"servers/getVersion", "users/view/me", "attributes/describeTypes.json"). Requests are
counted per endpoint from 1, every request that reached the stand-in, retries included,
so "events/add #3" is the third POST to /events/add whatever event it carried.

    schedule = FaultSchedule().at("events/add", 3, fault=Fault.ACCEPTED_TIMEOUT)
    misp = MispStandIn(rsps, faults=schedule)
    ...
    assert schedule.unfired() == []  # a fault that never happened proves nothing

The same faults play on two transports, and they do not reach the same retry paths:

- behind `responses` (`MispStandIn(rsps)`): a status answer (5xx, 429) goes through the
  adapter's own urllib3 `Retry` (`responses` calls its `is_retry`/`increment`, without
  sleeping), so the product's per-request retry policy decides. A timeout, a reset or a
  transfer cut short is raised as the `requests` exception the client would see, but
  `responses` never retries an exception: these go straight to the task-level retry
  (Prefect's, or the next run).
- on `tests.loopback_http.LoopbackRouter` (real HTTP on 127.0.0.1): the router turns those
  exceptions into what causes them on a wire (silence until the client gives up, a TCP
  RST, a body shorter than its Content-Length), so urllib3's read retries run for real.

"Storing" faults (`Fault.stores`) let the stand-in handle the request first, then spoil
its answer: MISP did the write, the client does not learn it. They fire only on a request
the stand-in accepted (a 2xx; for /sightings/add, a sighting actually added): a spoilt
"already exists" or "no such attribute" answer is not a lost write, and a fault that did
not fire stays in `unfired()`.

At a glance:

- `Fault`: the kinds; `READ_FAULTS` those that differ on an endpoint that stores nothing.
- `FaultSchedule.at(endpoint, *numbers, fault=...)`, `.down(endpoint, fault)` / `.up()`
  (every request until further notice), `.fired`, `.unfired()`, `.seen` (request counts).
- `tests.misp_stand_in.served_stand_in(schedule)`: the stand-in over loopback HTTP.
- `absorbed_by_request_retry(...)`: which faults the per-request retry should get past,
  so a test can assert the layer that did (one run) or did not (a second run).
- `rerun_until_success(run, succeeded, after_each=...)`: the job rerun after failures, as
  a schedule would, with a check of its claims after every run.

On loopback, urllib3 really sleeps for Retry-After (`RETRY_AFTER_SECONDS`): replace
`urllib3.util.retry.time` to record the sleeps instead (see the reliability tests).
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Generic, TypeVar

import requests

Answer = tuple[int, dict[str, str], str]
Handler = Callable[[Any], Answer]
R = TypeVar("R")

RETRY_AFTER_SECONDS = 1
JSON = {"Content-Type": "application/json"}
HTML = {"Content-Type": "text/html; charset=utf-8"}
PROXY_PAGE = ("<!DOCTYPE html><html><head><title>{title}</title></head><body><h1>{title}"
              "</h1><p>The upstream server did not answer in time.</p><hr>nginx</body></html>")


class Fault(StrEnum):
    """What goes wrong with one request; the value names it in reliability rows."""

    HTTP_500 = "HTTP 500"
    HTTP_502 = "HTTP 502"
    HTTP_503 = "HTTP 503"
    HTTP_429 = "HTTP 429 + Retry-After"
    TIMEOUT = "timeout"
    RESET = "connection reset"
    NON_JSON = "HTML page with 200"
    TRUNCATED_JSON = "truncated JSON body"  # a whole HTTP message, its JSON cut in half
    CUT_TRANSFER = "body cut mid-transfer"  # fewer bytes than Content-Length, then closed
    ACCEPTED_502 = "stored, then HTTP 502"
    ACCEPTED_TIMEOUT = "stored, then timeout"
    ACCEPTED_RESET = "stored, then connection reset"

    @property
    def stores(self) -> bool:
        """The stand-in handles the request (a write happens), then the answer is spoilt."""
        return self in _STORING

    @property
    def transport(self) -> bool:
        """Played by raising a `requests` exception: only a loopback server produces it
        as a network does, where urllib3 retries the timeouts and resets (a body cut
        short is read after urllib3 is done: never retried per request)."""
        return self in _TRANSPORT


_STORING = frozenset({Fault.TRUNCATED_JSON, Fault.CUT_TRANSFER, Fault.ACCEPTED_502,
                      Fault.ACCEPTED_TIMEOUT, Fault.ACCEPTED_RESET})
_TRANSPORT = frozenset({Fault.TIMEOUT, Fault.RESET, Fault.CUT_TRANSFER,
                        Fault.ACCEPTED_TIMEOUT, Fault.ACCEPTED_RESET})
READ_FAULTS = tuple(fault for fault in Fault if fault not in
                    (Fault.ACCEPTED_502, Fault.ACCEPTED_TIMEOUT, Fault.ACCEPTED_RESET))
"""The faults that differ on an endpoint that writes nothing (there, "stored, then 502"
is just a 502)."""


# --- what a transport does instead of answering ---------------------------------------------


class NoAnswer(requests.exceptions.ReadTimeout):
    """The server keeps the connection silent. Behind `responses` the client gets this
    exception; a `LoopbackRouter` holds the connection open until the client gives up."""

    def __init__(self) -> None:
        super().__init__("Read timed out. (injected: the server never answered)")


class ConnectionReset(requests.exceptions.ConnectionError):
    """The server resets the connection (TCP RST) instead of answering."""

    def __init__(self) -> None:
        super().__init__("('Connection aborted.', ConnectionResetError(104, 'Connection reset "
                         "by peer')) (injected)")


class CutTransfer(requests.exceptions.ChunkedEncodingError):
    """The answer's headers and part of its body arrive, then the connection closes:
    what `requests` raises while reading a body shorter than its Content-Length.
    `answer` is the whole answer a `LoopbackRouter` starts to send."""

    def __init__(self, answer: Answer) -> None:
        super().__init__("('Connection broken: IncompleteRead', IncompleteRead) (injected)")
        self.answer = answer


# --- the schedule --------------------------------------------------------------------------


@dataclass(frozen=True)
class Fired:
    endpoint: str
    number: int  # the n-th request to the endpoint
    fault: Fault


def accepted(answer: Answer) -> bool:
    """The default test of a storing fault's request: the stand-in answered 2xx."""
    return 200 <= answer[0] < 300


@dataclass
class FaultSchedule:
    """(endpoint, n-th request) -> fault, plus endpoints that are down until `up()`.

    Thread-safe: exports and sightings send from several threads at once."""

    _at: dict[tuple[str, int], Fault] = field(default_factory=dict)
    _down: dict[str, Fault] = field(default_factory=dict)
    seen: Counter[str] = field(default_factory=Counter)  # requests per endpoint, so far
    fired: list[Fired] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def at(self, endpoint: str, *numbers: int, fault: Fault) -> FaultSchedule:
        """`fault` on these (1-based) requests to `endpoint`; chainable."""
        with self._lock:
            for number in numbers:
                self._at[endpoint, number] = fault
        return self

    def down(self, endpoint: str, fault: Fault = Fault.HTTP_503) -> FaultSchedule:
        """`fault` on every request to `endpoint` from now on, until `up(endpoint)`."""
        with self._lock:
            self._down[endpoint] = fault
        return self

    def up(self, endpoint: str) -> None:
        with self._lock:
            self._down.pop(endpoint, None)

    def down_endpoints(self) -> set[str]:
        with self._lock:
            return set(self._down)

    def numbers(self, endpoint: str, fault: Fault) -> set[int]:
        """The request numbers of `endpoint` scheduled for `fault`."""
        with self._lock:
            return {n for (name, n), kind in self._at.items() if name == endpoint
                    and kind is fault}

    def forget(self, endpoint: str, fault: Fault) -> None:
        """Drop the numbered `fault`s of `endpoint` (those fired stay in `fired`)."""
        with self._lock:
            for key in [k for k, kind in self._at.items() if k[0] == endpoint
                        and kind is fault]:
                del self._at[key]

    def unfired(self) -> list[tuple[str, int, Fault]]:
        """Numbered faults that have not happened (their request never came, or the
        stand-in did not accept it)."""
        with self._lock:
            done = {(f.endpoint, f.number) for f in self.fired}
            return sorted((name, n, kind) for (name, n), kind in self._at.items()
                          if (name, n) not in done)

    def wrap(self, endpoint: str, handler: Handler,
             accepts: Callable[[Answer], bool] = accepted) -> Handler:
        """`handler` (a stand-in route) with this schedule's faults played in front of
        it. `accepts` tells whether the handler's answer means it did the write."""

        def faulty(request: Any) -> Answer:
            number, fault = self._next(endpoint)
            if fault is None:
                return handler(request)
            if not fault.stores:
                self._fire(endpoint, number, fault)
                return play(fault)
            answer = handler(request)
            if not accepts(answer):
                return answer
            self._fire(endpoint, number, fault)
            return play(fault, answer)

        return faulty

    def _next(self, endpoint: str) -> tuple[int, Fault | None]:
        with self._lock:
            self.seen[endpoint] += 1
            number = self.seen[endpoint]
            return number, self._at.get((endpoint, number)) or self._down.get(endpoint)

    def _fire(self, endpoint: str, number: int, fault: Fault) -> None:
        with self._lock:
            self.fired.append(Fired(endpoint, number, fault))


def play(fault: Fault, answer: Answer | None = None) -> Answer:
    """The answer `fault` gives instead of (or spoiling) the stand-in's `answer`; raises
    for the faults that are no answer at all."""
    if fault in (Fault.HTTP_502, Fault.HTTP_503, Fault.ACCEPTED_502):
        title = "502 Bad Gateway" if fault is not Fault.HTTP_503 else "503 Service Unavailable"
        return int(title[:3]), HTML, PROXY_PAGE.format(title=title)
    if fault is Fault.HTTP_500:  # MISP's own error page, as JSON
        return 500, JSON, json.dumps({"name": "An Internal Error Has Occurred.",
                                      "message": "An Internal Error Has Occurred.",
                                      "url": "/"})
    if fault is Fault.HTTP_429:
        return 429, {**JSON, "Retry-After": str(RETRY_AFTER_SECONDS)}, json.dumps(
            {"name": "Too many requests", "message": "Rate limit exceeded", "url": "/"})
    if fault is Fault.NON_JSON:
        return 200, HTML, PROXY_PAGE.format(title="Gateway Timeout")
    if fault in (Fault.TIMEOUT, Fault.ACCEPTED_TIMEOUT):
        raise NoAnswer()
    if fault in (Fault.RESET, Fault.ACCEPTED_RESET):
        raise ConnectionReset()
    status, headers, body = answer or (200, JSON, "{}")
    if fault is Fault.CUT_TRANSFER:
        raise CutTransfer((status, headers, body))
    return status, headers, body[: len(body) // 2]  # TRUNCATED_JSON


STATUS_FAULTS = frozenset({Fault.HTTP_500, Fault.HTTP_502, Fault.HTTP_503, Fault.HTTP_429,
                           Fault.ACCEPTED_502})


def absorbed_by_request_retry(fault: Fault, *, write_once: bool, loopback: bool) -> bool:
    """Whether `misp_ndr.http`'s per-request retry (retries >= 1) gets past one `fault`
    within the request, so the run never sees it. `write_once`: the non-idempotent write
    adapter (/sightings/add) that retries only a 429. `loopback`: played over real HTTP,
    where urllib3 retries timeouts and resets too; behind `responses` only statuses."""
    if write_once:
        return fault is Fault.HTTP_429
    if fault in STATUS_FAULTS:
        return True
    return loopback and fault.transport and fault is not Fault.CUT_TRANSFER


# --- rerunning a job as a scheduler does ----------------------------------------------------


@dataclass
class Runs(Generic[R]):
    """Every outcome of a job run again after each failure: results and exceptions."""

    outcomes: list[R | Exception]

    @property
    def last(self) -> R:
        outcome = self.outcomes[-1]
        assert not isinstance(outcome, Exception), outcome
        return outcome

    @property
    def failed(self) -> list[R | Exception]:
        return self.outcomes[:-1]


def rerun_until_success(run: Callable[[], R], succeeded: Callable[[R], bool] = lambda _: True,
                        *, after_each: Callable[[R | Exception], None] | None = None,
                        attempts: int = 6) -> Runs[R]:
    """Run the job again after every failure (an exception, or a result `succeeded`
    rejects), like a schedule would, up to `attempts` times; `after_each` checks what
    the job claims after every run. Fails the test if no run succeeded."""
    outcomes: list[R | Exception] = []
    for _ in range(attempts):
        try:
            outcome: R | Exception = run()
        except Exception as exc:  # whatever the job raises: the schedule runs it again
            outcome = exc
        outcomes.append(outcome)
        if after_each is not None:
            after_each(outcome)
        if not isinstance(outcome, Exception) and succeeded(outcome):
            return Runs(outcomes)
    raise AssertionError(f"no success in {attempts} runs: {outcomes!r}")
