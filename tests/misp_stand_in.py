"""A stateful MISP behind `responses`: stores what it is sent and answers like MISP 2.5.

Canned answers cannot show that a re-run or a retry duplicates nothing; this can: tests
count what MISP ended up holding. Faults are injected through a
`tests.fault_injection.FaultSchedule`; `served_stand_in` serves it over real HTTP on
127.0.0.1 instead, where timeouts and resets happen on the wire.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import responses
from pymisp import __version__ as pymisp_version
from pymisp.api import describe_types

from tests.fault_injection import Answer, Fault, FaultSchedule, accepted
from tests.loopback_http import LoopbackRouter, serving

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


def connection_answers(role: dict[str, Any] | None = None) -> dict[str, Any]:
    """Path -> JSON answer of the GETs PyMISP's constructor makes, as a healthy MISP 2.5."""
    return {
        "servers/getVersion": {"version": "2.5.1",
                               "pymisp_recommended_version": pymisp_version},
        "users/view/me": {
            "User": {"id": "3", "email": "soc@example.org", "org_id": "1"},
            "Role": role or ROLE_ALL,
            "UserSetting": {},
            "Organisation": {"id": "1", "name": "ACME CSIRT"},
        },
        "attributes/describeTypes.json": {"result": describe_types},
    }


def mock_connection(rsps: responses.RequestsMock, url: str = URL,
                    role: dict[str, Any] | None = None) -> None:
    """The GETs PyMISP's constructor makes, answered by a healthy MISP 2.5."""
    for path, body in connection_answers(role).items():
        rsps.get(f"{url}/{path}", json=body)


def point_settings_at_stand_in(monkeypatch: Any, retries: int = 1, url: str = URL) -> None:
    """MISP_NDR_MISP__* for the stand-in, with quick per-request retries."""
    monkeypatch.setenv("MISP_NDR_MISP__URL", url)
    monkeypatch.setenv("MISP_NDR_MISP__API_KEY", API_KEY)
    monkeypatch.setenv("MISP_NDR_MISP__RETRIES", str(retries))
    monkeypatch.setenv("MISP_NDR_MISP__RETRY_BACKOFF", "0")


def _json(status: int, body: Any) -> Answer:
    return status, {"Content-Type": "application/json"}, json.dumps(body)


class MispStandIn:
    """Routes registered on `rsps`: a `responses.RequestsMock`, or anything with its
    `add_callback(method, url, callback)` (a `tests.loopback_http.LoopbackRouter`).

    Every request is logged (`writes`, `searches`, `sighting_requests`) as it arrives,
    then `faults` (a `tests.fault_injection.FaultSchedule`) may spoil it. The attributes
    `unavailable_on_writes`, `lost_sighting_answers` and `sightings_down` are shorthands
    for entries of that schedule."""

    def __init__(self, rsps: Any, url: str = URL, faults: FaultSchedule | None = None) -> None:
        self.url = url
        self.faults = faults if faults is not None else FaultSchedule()
        self._rsps = rsps
        self._lock = threading.Lock()  # exports send from several threads at once
        self.events: dict[str, dict[str, Any]] = {}
        self.tags: set[str] = set()
        self.writes: list[tuple[str, str]] = []  # (endpoint, event uuid), in order
        self.attributes: list[dict[str, Any]] = []  # what restSearch serves, MISP-shaped
        self._by_uuid: dict[str, list[dict[str, Any]]] = {}
        self.searches: list[dict[str, Any]] = []
        self.sightings: list[dict[str, Any]] = []  # what MISP holds
        self.sighting_requests: list[dict[str, Any]] = []  # every /sightings/add body
        for path, body in connection_answers().items():
            self._route("GET", path, _constant(_json(200, body)))
        self._route("POST", "tags/search", self._search_tag)
        self._route("POST", "tags/add", self._add_tag)
        self._route("POST", "events/add", self._add_event, log=self._log_add)
        self._route("POST", "events/edit", self._edit_event, log=self._log_edit,
                    url=re.compile(rf"{re.escape(url)}/events/edit/.+"))
        self._route("POST", "attributes/restSearch", self._rest_search,
                    log=lambda request: self.searches.append(json.loads(request.body)))
        self._route("POST", "sightings/add", self._add_sighting, log=self._log_sighting,
                    accepts=_sighting_added)
        self._route("POST", "sightings/restSearch", self._search_sightings)

    def _route(self, method: str, endpoint: str, handler: Callable[[Any], Answer], *,
               log: Callable[[Any], None] | None = None,
               accepts: Callable[[Answer], bool] = accepted,
               url: str | re.Pattern[str] | None = None) -> None:
        faulty = self.faults.wrap(endpoint, handler, accepts)

        def locked(request: Any) -> Answer:
            with self._lock:
                if log is not None:
                    log(request)
                return faulty(request)

        self._rsps.add_callback(method, url or f"{self.url}/{endpoint}", locked)

    # --- the fault knobs of earlier tests, as schedule entries ------------------------------

    @property
    def unavailable_on_writes(self) -> set[int]:
        """1-based numbers of /events/add requests answering 503, storing nothing."""
        return self.faults.numbers("events/add", Fault.HTTP_503)

    @unavailable_on_writes.setter
    def unavailable_on_writes(self, numbers: set[int]) -> None:
        self.faults.forget("events/add", Fault.HTTP_503)
        self.faults.at("events/add", *numbers, fault=Fault.HTTP_503)

    @property
    def lost_sighting_answers(self) -> set[int]:
        """1-based numbers of /sightings/add requests stored, then answered 502."""
        return self.faults.numbers("sightings/add", Fault.ACCEPTED_502)

    @lost_sighting_answers.setter
    def lost_sighting_answers(self, numbers: set[int]) -> None:
        self.faults.forget("sightings/add", Fault.ACCEPTED_502)
        self.faults.at("sightings/add", *numbers, fault=Fault.ACCEPTED_502)

    @property
    def sightings_down(self) -> bool:
        """Every /sightings/add answers 503, storing nothing."""
        return "sightings/add" in self.faults.down_endpoints()

    @sightings_down.setter
    def sightings_down(self, down: bool) -> None:
        if down:
            self.faults.down("sightings/add", Fault.HTTP_503)
        else:
            self.faults.up("sightings/add")

    # --- what MISP holds -------------------------------------------------------------------

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

    def _log_add(self, request: Any) -> None:
        self.writes.append(("add", _event_body(request.body)["uuid"]))

    def _log_edit(self, request: Any) -> None:
        self.writes.append(("edit", request.url.rsplit("/", 1)[1]))

    def _log_sighting(self, request: Any) -> None:
        sighting = json.loads(request.body)
        assert set(sighting) <= SIGHTING_KEYS, sighting
        assert re.fullmatch(r"\d+", sighting["timestamp"]) and sighting["type"] == "0", sighting
        self.sighting_requests.append(sighting)

    def _add_event(self, request: Any) -> Answer:
        event = _event_body(request.body)
        if event["uuid"] in self.events:
            return _json(404, ALREADY_EXISTS)
        return _json(200, {"Event": self._store(event)})

    def _edit_event(self, request: Any) -> Answer:
        uuid = request.url.rsplit("/", 1)[1]
        return _json(200, {"Event": self._store({**_event_body(request.body), "uuid": uuid})})

    def _store(self, event: dict[str, Any]) -> dict[str, Any]:
        """Keep the event as MISP would: tags only if they exist, attributes by UUID."""
        stored = self.events.setdefault(event["uuid"], {"id": str(len(self.events) + 1),
                                                        "Attribute": []})
        stored.update({k: v for k, v in event.items() if k not in ("Attribute", "Tag")})
        stored["Tag"] = [tag for tag in event.get("Tag", []) if tag["name"] in self.tags]
        known = {attribute["uuid"] for attribute in stored["Attribute"]}
        stored["Attribute"] += [a for a in event.get("Attribute", []) if a["uuid"] not in known]
        return stored


def _event_body(body: bytes) -> dict[str, Any]:
    event = json.loads(body)
    return event.get("Event", event)


def _sighting_added(answer: Answer) -> bool:
    """MISP added a sighting (not "no valid attributes found"): a write to lose."""
    return answer[0] == 200 and '"Sighting"' in answer[2]


def _constant(answer: Answer) -> Callable[[Any], Answer]:
    return lambda _request: answer


@contextmanager
def served_stand_in(faults: FaultSchedule | None = None) -> Iterator[MispStandIn]:
    """A stand-in over real HTTP on 127.0.0.1 (its `url`), for as long as the block runs."""
    router = LoopbackRouter()
    stand_in = MispStandIn(router, url=router.url, faults=faults)
    with serving(router):
        yield stand_in
