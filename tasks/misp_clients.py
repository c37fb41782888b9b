"""MISP clients for worker threads: requests' sessions (and so PyMISP) are not safe to share
between threads, so each thread that sends to MISP gets its own client, made on first use."""

from __future__ import annotations

import threading
from typing import Any

from misp_ndr.config import MispSettings
from tasks.misp import MispClient


class PerThreadClients:
    def __init__(self, settings: MispSettings) -> None:
        self._settings = settings
        self._local = threading.local()

    def get(self) -> MispClient:
        client: MispClient | None = getattr(self._local, "client", None)
        if client is None:
            client = self._local.client = MispClient(self._settings)
        return client

    def search_attributes(self, filters: dict[str, Any], page: int,
                          limit: int) -> list[dict[str, Any]]:
        """`MispClient.search_attributes` on this thread's client: a pull's pages in
        flight each go through their own connection."""
        return self.get().search_attributes(filters, page, limit)
