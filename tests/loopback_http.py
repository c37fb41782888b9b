"""The MISP stand-in's routes served by a real HTTP server on 127.0.0.1.

Flow runs started by a Prefect worker live in other processes, where `responses` cannot
reach; this router takes the same registrations as `responses.RequestsMock` (`add_callback`,
`get`), so `MispStandIn` answers them over real HTTP with the same state and logic.

A callback may raise one of `tests.fault_injection`'s transport faults instead of answering;
the server then does on the wire what makes a client raise it (so urllib3's retries see
it as on a network): `NoAnswer` holds the connection silent until the client gives up,
`ConnectionReset` resets it (TCP RST), `CutTransfer` sends headers and half the body, then
closes.
"""

from __future__ import annotations

import json
import re
import select
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.fault_injection import ConnectionReset, CutTransfer, NoAnswer

Answer = tuple[int, dict[str, str], str]
STALL_LIMIT_SECONDS = 30  # a `NoAnswer` connection is closed by then, client gone or not


@dataclass
class Request:
    """What the stand-in's callbacks read of a request (as `responses` hands them)."""

    method: str
    url: str
    body: bytes


class LoopbackRouter:
    """`latency` seconds are spent per request outside the state lock, as a remote MISP's
    would: concurrent clients overlap their waits (benchmarks measure that)."""

    def __init__(self, latency: float = 0.0) -> None:
        self._routes: list[tuple[str, re.Pattern[str], Callable[[Request], Answer]]] = []
        self._lock = threading.Lock()  # the stand-in's state is not thread-safe
        self.latency = latency
        self.requests = 0
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def add_callback(self, method: str, url: str | re.Pattern[str],
                     callback: Callable[[Request], Answer]) -> None:
        pattern = url if isinstance(url, re.Pattern) else re.compile(re.escape(url))
        self._routes.append((method, pattern, callback))

    def get(self, url: str, json: Any) -> None:
        body = _dumps(json)
        self.add_callback("GET", url, lambda _: (200, {"Content-Type": "application/json"},
                                                 body))

    def answer(self, request: Request) -> Answer:
        if self.latency:
            time.sleep(self.latency)
        for method, pattern, callback in self._routes:
            if method == request.method and pattern.fullmatch(request.url.split("?")[0]):
                with self._lock:
                    self.requests += 1
                    return callback(request)
        return 404, {}, f"no stand-in route for {request.method} {request.url}"

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        router = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as clients of a real MISP get

            def setup(self) -> None:
                super().setup()  # headers and body leave in two writes: no Nagle delay
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def _dispatch(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                request = Request(self.command, router.url + self.path, self.rfile.read(length))
                try:
                    status, headers, body = router.answer(request)
                except NoAnswer:
                    return self._stall()
                except ConnectionReset:
                    return self._reset()
                except CutTransfer as cut:
                    return self._cut(*cut.answer)
                except Exception as exc:  # an assertion of the stand-in: visible as a 500
                    status, headers, body = 500, {}, f"stand-in error: {exc!r}"
                self._send(status, headers, body.encode())

            do_GET = do_POST = _dispatch

            def _send(self, status: int, headers: dict[str, str], data: bytes,
                      length: int | None = None) -> None:
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(data) if length is None else length))
                self.end_headers()
                self.wfile.write(data)

            def _stall(self) -> None:
                """Silent until the client closes the connection (it gave up waiting)."""
                select.select([self.connection], [], [], STALL_LIMIT_SECONDS)
                self._reset()

            def _reset(self) -> None:
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                           struct.pack("ii", 1, 0))
                self.connection.close()  # with linger 0: a RST, not a FIN
                self.close_connection = True

            def _cut(self, status: int, headers: dict[str, str], body: str) -> None:
                data = body.encode()
                self._send(status, headers, data[: len(data) // 2], length=len(data))
                self.close_connection = True

            def log_message(self, *args: object) -> None:
                pass

        return Handler


def _dumps(value: Any) -> str:
    return json.dumps(value)


@contextmanager
def serving(router: LoopbackRouter) -> Iterator[LoopbackRouter]:
    # shutdown() waits for the loop's next poll: 0.5 s by default, per test
    thread = threading.Thread(target=router.server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield router
    finally:
        router.server.shutdown()
        router.server.server_close()
