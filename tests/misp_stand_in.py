"""A stateful MISP behind `responses`: stores what it is sent and answers like MISP 2.5.

Canned answers cannot show that a re-run or a retry duplicates nothing; this can: tests
count what MISP ended up holding.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable
from typing import Any

import responses
from pymisp import __version__ as pymisp_version
from pymisp.api import describe_types

URL = "https://misp.test"
API_KEY = "Xk3vQ9pL7rT2mN8bW4cY6dF1gH5jK0sA9eR3tU7i"
ROLE_ALL = {"name": "Org Admin", "perm_add": True, "perm_tag_editor": True, "perm_tagger": True,
            "perm_sighting": True, "perm_publish": True, "perm_site_admin": False}
ALREADY_EXISTS = {"name": "Event already exists, if you would like to edit it, use the url in "
                  "the location header.", "message": "Event already exists", "url": "/events/add"}
NO_MATCH = {"message": "Could not add the Sighting. Reason: No valid attributes found that "
                       "match the criteria."}
# /sightings/add body keys: the OpenAPI spec's AddSightingsRequest (values, timestamp,
# filters) plus those MISP's SightingsController reads (uuid, id, value, source, type).
SIGHTING_KEYS = {"values", "timestamp", "filters", "uuid", "source", "type"}
Answer = tuple[int, dict[str, str], str]


def mock_connection(rsps: responses.RequestsMock, url: str = URL,
                    role: dict[str, Any] | None = None) -> None:
    """The GETs PyMISP's constructor makes, answered by a healthy MISP 2.5."""
    rsps.get(f"{url}/servers/getVersion",
             json={"version": "2.5.1", "pymisp_recommended_version": pymisp_version})
    rsps.get(f"{url}/users/view/me", json={
        "User": {"id": "3", "email": "soc@example.org", "org_id": "1"},
        "Role": role or ROLE_ALL,
        "UserSetting": {},
        "Organisation": {"id": "1", "name": "ACME CSIRT"},
    })
    rsps.get(f"{url}/attributes/describeTypes.json", json={"result": describe_types})


def point_settings_at_stand_in(monkeypatch: Any, retries: int = 1) -> None:
    """MISP_NDR_MISP__* for the stand-in, with quick per-request retries."""
    monkeypatch.setenv("MISP_NDR_MISP__URL", URL)
    monkeypatch.setenv("MISP_NDR_MISP__API_KEY", API_KEY)
    monkeypatch.setenv("MISP_NDR_MISP__RETRIES", str(retries))
    monkeypatch.setenv("MISP_NDR_MISP__RETRY_BACKOFF", "0")


def _json(status: int, body: Any) -> Answer:
    return status, {"Content-Type": "application/json"}, json.dumps(body)


class MispStandIn:
    def __init__(self, rsps: responses.RequestsMock, url: str = URL) -> None:
        self.url = url
        self._lock = threading.Lock()  # exports send from several threads at once
        self.events: dict[str, dict[str, Any]] = {}
        self.tags: set[str] = set()
        self.writes: list[tuple[str, str]] = []  # (endpoint, event uuid), in order
        self.unavailable_on_writes: set[int] = set()  # 1-based write numbers answering 503
        mock_connection(rsps, url)
        self._route(rsps, f"{url}/tags/search", self._search_tag)
        self._route(rsps, f"{url}/tags/add", self._add_tag)
        self._route(rsps, f"{url}/events/add", self._add_event)
        self._route(rsps, re.compile(rf"{re.escape(url)}/events/edit/.+"),
                          self._edit_event)
        self.attributes: list[dict[str, Any]] = []  # what restSearch serves, MISP-shaped
        self._by_uuid: dict[str, list[dict[str, Any]]] = {}
        self.searches: list[dict[str, Any]] = []
        self._route(rsps, f"{url}/attributes/restSearch", self._rest_search)
        self.sightings: list[dict[str, Any]] = []  # what MISP holds
        self.sighting_requests: list[dict[str, Any]] = []  # every /sightings/add body
        self.lost_sighting_answers: set[int] = set()  # 1-based adds stored, then 502
        self.sightings_down = False  # every add answers 503, storing nothing
        self._route(rsps, f"{url}/sightings/add", self._add_sighting)
        self._route(rsps, f"{url}/sightings/restSearch",
                          self._search_sightings)

    def _route(self, rsps: responses.RequestsMock, url: str | re.Pattern[str],
               callback: Callable[[Any], Answer]) -> None:
        def locked(request: Any) -> Answer:
            with self._lock:
                return callback(request)

        rsps.add_callback(responses.POST, url, locked)

    def publish_event(self, uuid: str, info: str, date: str, published_at: int,
                      attributes: list[dict[str, Any]], tags: tuple[str, ...] = ()) -> None:
        """(Re)publish an event: its attributes replace the ones it had."""
        event = {"id": str(len(self.attributes) + 1), "uuid": uuid, "info": info, "date": date,
                 "published": True, "publish_timestamp": str(published_at),
                 "Tag": [{"name": tag} for tag in tags]}
        self.attributes = [a for a in self.attributes if a["Event"]["uuid"] != uuid]
        self.attributes += [{"id": str(n), "event_id": event["id"], "category":
                             "Network activity", "to_ids": True, "deleted": False,
                             "timestamp": str(published_at), "Tag": [], **attribute,
                             "Event": event} for n, attribute in enumerate(attributes)]
        self._by_uuid = {}  # sightings by UUID: a lookup, not a scan, for benchmarks
        for attribute in self.attributes:
            self._by_uuid.setdefault(attribute["uuid"], []).append(attribute)

    def _rest_search(self, request: Any) -> Answer:
        """Honours what the rule update relies on: to_ids, deleted, the publication window,
        and limit/page paging."""
        body = json.loads(request.body)
        self.searches.append(body)

        def allowed(value: bool, wanted: int | list[int]) -> bool:
            return int(value) in (wanted if isinstance(wanted, list) else [wanted])

        window = body.get("publish_timestamp", 0)
        low, high = window if isinstance(window, list) else (window, 2**62)
        rows = [a for a in self.attributes
                if allowed(a["to_ids"], body["to_ids"]) and allowed(a["deleted"], body["deleted"])
                and low <= int(a["Event"]["publish_timestamp"]) <= high]
        start = (body["page"] - 1) * body["limit"]
        return _json(200, {"response": {"Attribute": rows[start:start + body["limit"]]}})

    def _add_sighting(self, request: Any) -> Answer:
        """Like MISP 2.5: by attribute UUID, or by values narrowed by restSearch filters
        (to_ids, tags); one sighting per matching attribute."""
        body = json.loads(request.body)
        assert set(body) <= SIGHTING_KEYS, body
        assert re.fullmatch(r"\d+", body["timestamp"]) and body["type"] == "0", body
        self.sighting_requests.append(body)
        if self.sightings_down:
            return 503, {}, "Service Unavailable"
        if "uuid" in body:
            matches = self._by_uuid.get(body["uuid"], [])
        else:
            filters = body.get("filters", {})
            matches = [a for a in self.attributes  # value1 or value2 of composites
                       if set(a["value"].split("|")) & set(body["values"])
                       and self._passes(a, filters)]
        if not matches:
            return _json(200, NO_MATCH)
        for attribute in matches:
            self.sightings.append({
                "id": str(len(self.sightings) + 1), "attribute_uuid": attribute["uuid"],
                "attribute_value": attribute["value"], "source": body.get("source", ""),
                "date_sighting": body["timestamp"], "type": body["type"]})
        if len(self.sighting_requests) in self.lost_sighting_answers:
            return 502, {}, "Bad Gateway"
        return _json(200, {"Sighting": self.sightings[-1]})

    @staticmethod
    def _passes(attribute: dict[str, Any], filters: dict[str, Any]) -> bool:
        if "to_ids" in filters and int(attribute["to_ids"]) != int(filters["to_ids"]):
            return False
        tags = {tag["name"] for tag in attribute["Event"]["Tag"]}
        return "tags" not in filters or bool(tags & set(filters["tags"]))

    def _search_sightings(self, request: Any) -> Answer:
        body = json.loads(request.body)
        rows = [s for s in self.sightings if s["source"] == body["source"]
                and int(body["from"]) <= int(s["date_sighting"]) <= int(body["to"])]
        return _json(200, [{"Sighting": row} for row in rows])

    def _search_tag(self, request: Any) -> Answer:
        name = json.loads(request.body)["tagname"]
        return _json(200, [{"Tag": {"id": "1", "name": name}}] if name in self.tags else [])

    def _add_tag(self, request: Any) -> Answer:
        name = json.loads(request.body)["name"]
        self.tags.add(name)
        return _json(200, {"Tag": {"id": str(len(self.tags)), "name": name}})

    def _unavailable(self) -> bool:
        return len(self.writes) in self.unavailable_on_writes

    def _add_event(self, request: Any) -> Answer:
        event = self._body(request)
        self.writes.append(("add", event["uuid"]))
        if self._unavailable():
            return 503, {}, "Service Unavailable"
        if event["uuid"] in self.events:
            return _json(404, ALREADY_EXISTS)
        return _json(200, {"Event": self._store(event)})

    def _edit_event(self, request: Any) -> Answer:
        uuid = request.url.rsplit("/", 1)[1]
        self.writes.append(("edit", uuid))
        if self._unavailable():
            return 503, {}, "Service Unavailable"
        return _json(200, {"Event": self._store({**self._body(request), "uuid": uuid})})

    @staticmethod
    def _body(request: Any) -> dict[str, Any]:
        body = json.loads(request.body)
        return body.get("Event", body)

    def _store(self, event: dict[str, Any]) -> dict[str, Any]:
        """Keep the event as MISP would: tags only if they exist, attributes by UUID."""
        stored = self.events.setdefault(event["uuid"], {"id": str(len(self.events) + 1),
                                                        "Attribute": []})
        stored.update({k: v for k, v in event.items() if k not in ("Attribute", "Tag")})
        stored["Tag"] = [tag for tag in event.get("Tag", []) if tag["name"] in self.tags]
        known = {attribute["uuid"] for attribute in stored["Attribute"]}
        stored["Attribute"] += [a for a in event.get("Attribute", []) if a["uuid"] not in known]
        return stored
