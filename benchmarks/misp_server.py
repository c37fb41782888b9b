"""The tests' stateful MISP stand-in, served over real HTTP on loopback from its own process
(a real MISP runs elsewhere too: its work must not share the benchmark's GIL), with a
per-request latency as a MISP across a network has."""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from multiprocessing.connection import Connection
from typing import Any

from tests.loopback_http import LoopbackRouter, serving
from tests.misp_stand_in import MispStandIn

LATENCY_SECONDS = 0.005
Events = list[tuple[str, list[dict[str, Any]]]]  # (event uuid, attributes) to publish first


@contextmanager
def misp_in_subprocess(events: Events | None = None, latency: float = LATENCY_SECONDS,
                       ) -> Iterator[tuple[str, Callable[[], dict[str, int]]]]:
    """The URL, and `stats()`: requests served, events and sightings held, so far."""
    context = multiprocessing.get_context("spawn")
    ours, theirs = context.Pipe()
    process = context.Process(target=_serve, args=(theirs, latency, events or []),
                              daemon=True)
    process.start()
    url = ours.recv()

    def stats() -> dict[str, int]:
        ours.send("stats")
        return ours.recv()

    try:
        yield url, stats
    finally:
        ours.send("stop")
        process.join(timeout=10)


def _serve(pipe: Connection, latency: float, events: Events) -> None:
    router = LoopbackRouter(latency=latency)
    stand_in = MispStandIn(router, url=router.url)  # type: ignore[arg-type]
    for uuid, attributes in events:
        stand_in.publish_event(uuid, "benchmark", "2026-11-30", 1795000000, attributes)
    with serving(router):
        pipe.send(router.url)
        while pipe.recv() == "stats":
            pipe.send({"requests": router.requests, "events": len(stand_in.events),
                       "sightings": len(stand_in.sightings)})
