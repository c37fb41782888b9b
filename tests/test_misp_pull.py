"""Pulling attributes from a mocked MISP restSearch: exact requests, paging, errors, filters."""

from __future__ import annotations

import gc
import json
import logging
import weakref
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pandas as pd
import pytest
import responses

from misp_ndr.config import MispSettings
from misp_ndr.errors import AuthError, RejectedError, TransientError
from tasks.misp import MispClient, UnexpectedAnswerError
from tasks.misp_pull import (
    SKIP_EXCLUDED,
    SKIP_NOT_IDS,
    SKIP_NOT_TAGGED,
    SKIP_REPEATED,
    SKIP_TYPE,
    AttributeQuery,
    MalformedAttribute,
    attribute_table,
    pull_attributes,
    pull_misp_attributes,
    restsearch_filters,
)
from tasks.rule_indicators import HANDLED_TYPES, PULLED_ATTRIBUTE_COLUMNS, TAG_SEPARATOR
from tests.misp_stand_in import API_KEY, URL, mock_connection

SEARCH_URL = f"{URL}/attributes/restSearch"
NOW = datetime(2026, 11, 25, 10, 30, tzinfo=UTC)
EVENT = {"id": "7", "uuid": "7b8d7e2e-b97e-53d0-a162-1377e3a20daa", "info": "Loader C2",
         "date": "2026-11-18", "published": True, "publish_timestamp": "1795150000",
         "Tag": [{"id": "3", "name": "tlp:green"}, {"id": "9", "name": "apt:loader"}]}
Answer = tuple[int, dict[str, str], str]


def attribute(number: int, misp_type: str = "ip-dst", value: str = "91.198.174.192",
              event: dict[str, Any] | None = None, tags: tuple[str, ...] = (),
              **fields: Any) -> dict[str, Any]:
    """An attribute as MISP 2.5 sends it with includeContext and includeEventTags."""
    event = EVENT if event is None else event
    inherited = [{**tag, "inherited": 1} for tag in event["Tag"]]
    return {"id": str(number), "uuid": f"00000000-0000-4000-8000-{number:012d}",
            "event_id": event["id"], "type": misp_type, "category": "Network activity",
            "value": value, "to_ids": True, "deleted": False, "timestamp": "1795150000",
            "Event": event, "Tag": [*inherited, *({"name": tag} for tag in tags)], **fields}


def json_answer(body: Any, status: int = 200) -> Answer:
    return status, {"Content-Type": "application/json"}, json.dumps(body)


def page(*attributes: dict[str, Any]) -> Answer:
    return json_answer({"response": {"Attribute": list(attributes)}})


class RestSearch:
    """Answers restSearch pages from a list (page n -> answers[n-1]) and records requests."""

    def __init__(self, rsps: responses.RequestsMock, *answers: Answer) -> None:
        self.answers = list(answers)
        self.requests: list[Any] = []
        mock_connection(rsps)
        rsps.add_callback(responses.POST, SEARCH_URL, self._answer)

    def _answer(self, request: Any) -> Answer:
        self.requests.append(request)
        number = json.loads(request.body)["page"]
        return self.answers[number - 1] if number <= len(self.answers) else page()

    @property
    def pages_asked(self) -> list[int]:
        return [json.loads(request.body)["page"] for request in self.requests]


@pytest.fixture
def rsps() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


def client() -> MispClient:
    return MispClient(MispSettings(url=URL, api_key=API_KEY, retries=0, timeout=5))


def full_query(**overrides: Any) -> AttributeQuery:
    return AttributeQuery(**{"max_event_age_days": 30, **overrides})


def test_request_is_json_with_every_filter_in_the_body(rsps: responses.RequestsMock) -> None:
    search = RestSearch(rsps)
    pull_attributes(client(), full_query(event_tags=["tlp:green"], exclude_tags=["tlp:red"]),
                    page_size=5000, now=NOW)
    request = search.requests[0]
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["Accept"] == "application/json"
    assert request.headers["Authorization"] == API_KEY
    assert json.loads(request.body) == {
        "returnFormat": "json",
        "type": list(HANDLED_TYPES),
        "to_ids": 1,
        "deleted": 0,
        "published": 1,
        "from": "2026-10-27",  # 30 days before 2026-11-25 10:30, rounded up to a whole day
        "tags": ["tlp:green", "!tlp:red"],
        "enforceWarninglist": 1,
        "includeEventTags": 1,
        "includeContext": 1,
        "order": "Attribute.id asc",
        "page": 1,
        "limit": 5000,
    }


def test_incremental_pull_asks_for_non_ids_and_deleted_attributes_too() -> None:
    filters = restsearch_filters(full_query(to_ids_only=False, published_only=False,
                                            enforce_warninglists=False), now=NOW)
    assert (filters["to_ids"], filters["deleted"], filters["published"]) == ([0, 1], [0, 1],
                                                                             [0, 1])
    assert filters["enforceWarninglist"] == 0
    assert "tags" not in filters  # no tag filter at all, not an empty one


def test_published_only_window_follows_publication_and_otherwise_attribute_changes() -> None:
    since, until = datetime(2026, 11, 24, 3, 0, tzinfo=UTC), datetime(2026, 11, 25, tzinfo=UTC)
    published = restsearch_filters(full_query(window_from=since, window_to=until), now=NOW)
    assert published["publish_timestamp"] == [1795489200, 1795564800]
    assert "timestamp" not in published
    changed = restsearch_filters(full_query(window_from=since, published_only=False), now=NOW)
    assert changed["timestamp"] == 1795489200
    assert "publish_timestamp" not in changed
    assert changed["from"] == published["from"] == "2026-10-27"  # age: the event date, always


def test_a_window_without_a_zone_is_utc() -> None:
    naive = restsearch_filters(full_query(window_from=datetime(2026, 11, 24, 3, 0)), now=NOW)
    assert naive["publish_timestamp"] == 1795489200


def test_age_window_starting_at_midnight_keeps_that_day() -> None:
    filters = restsearch_filters(full_query(max_event_age_days=7),
                                 now=datetime(2026, 11, 25, tzinfo=UTC))
    assert filters["from"] == "2026-11-18"


def test_paging_stops_only_at_an_empty_page(rsps: responses.RequestsMock) -> None:
    search = RestSearch(rsps, page(attribute(1), attribute(2), attribute(3)),
                        page(attribute(4)),  # short: warninglists dropped two
                        page(attribute(5), attribute(6), attribute(7)), page())
    progress: list[tuple[int, int]] = []
    result = pull_attributes(client(), full_query(), page_size=3,
                             on_page=lambda number, count: progress.append((number, count)),
                             now=NOW)
    assert search.pages_asked == [1, 2, 3, 4, 5]
    assert progress == [(1, 3), (2, 1), (3, 3), (4, 0), (5, 0)]
    assert result.pages == 3
    assert len(result.attributes) == 7
    assert result.by_type == {"ip-dst": 7}


def test_pulled_table_has_the_attribute_its_event_and_all_tags(
    rsps: responses.RequestsMock,
) -> None:
    RestSearch(rsps, page(attribute(1, "ip-dst|port", "91.198.174.192|443", tags=("c2",),
                                    to_ids="1", deleted="0", timestamp="1795150001")))
    result = pull_attributes(client(), full_query(), page_size=10, now=NOW)
    frame = result.attributes
    assert list(frame.columns) == list(PULLED_ATTRIBUTE_COLUMNS)
    row = frame.iloc[0]
    assert row.attribute_uuid == "00000000-0000-4000-8000-000000000001"
    assert (row.event_uuid, row.event_info) == (EVENT["uuid"], "Loader C2")
    assert row.event_date == pd.Timestamp("2026-11-18", tz="UTC")
    assert row.attribute_timestamp == pd.Timestamp(1795150001, unit="s", tz="UTC")
    assert (row.type, row.value, row.to_ids, row.deleted) == (
        "ip-dst|port", "91.198.174.192|443", True, False)
    assert row.tags.split(TAG_SEPARATOR) == ["tlp:green", "apt:loader", "c2"]


def test_empty_result_in_either_misp_shape_is_empty(rsps: responses.RequestsMock) -> None:
    RestSearch(rsps, json_answer({"response": []}))
    result = pull_attributes(client(), full_query(), page_size=10, now=NOW)
    assert result.attributes.empty and result.pages == 0 and result.by_type == {}


@pytest.mark.parametrize(("answer", "error"), [
    (json_answer({"message": "Forbidden"}, 403), AuthError),
    (json_answer({"name": "Invalid filter", "message": "Invalid filter"}, 400), RejectedError),
    ((503, {}, "Service Unavailable"), TransientError),
    ((200, {"Content-Type": "text/html"}, "<html>login</html>"), TransientError),
    (json_answer({"response": {"Event": []}}), UnexpectedAnswerError),
    (json_answer({"response": {"Attribute": [{"value": "x"}]}}), UnexpectedAnswerError),
])
def test_an_error_mid_pull_raises_instead_of_returning_part(
    rsps: responses.RequestsMock, answer: Answer, error: type[Exception]
) -> None:
    search = RestSearch(rsps, page(attribute(1), attribute(2)), answer,
                        page(attribute(3)))
    with pytest.raises(error):
        pull_attributes(client(), full_query(), page_size=2, now=NOW)
    assert search.pages_asked == [1, 2]


def test_a_misp_ignoring_paging_is_an_error_not_an_endless_pull(
    rsps: responses.RequestsMock,
) -> None:
    same = page(attribute(1), attribute(2))
    RestSearch(rsps, same, same, same)
    with pytest.raises(UnexpectedAnswerError, match="answered page 2 with the attributes of "
                       "page 1 again: it does not honour paging"):
        pull_attributes(client(), full_query(), page_size=2, now=NOW)


def test_errors_never_show_the_api_key(rsps: responses.RequestsMock) -> None:
    RestSearch(rsps, json_answer({"response": {"echo": API_KEY}}))
    with pytest.raises(UnexpectedAnswerError) as caught:
        pull_attributes(client(), full_query(), page_size=2, now=NOW)
    assert API_KEY not in str(caught.value)


def test_event_tags_are_required_on_the_event_and_exclusions_apply_to_any_tag(
    rsps: responses.RequestsMock,
) -> None:
    untagged = {**EVENT, "uuid": "8e71235d-f3a2-5196-9ce0-c93dd8fecc53", "Tag": []}
    RestSearch(rsps, page(
        attribute(1),  # event tagged tlp:green
        attribute(2, event=untagged, tags=("TLP:GREEN",)),  # only the attribute has it
        attribute(3, tags=("false-positive",)),  # excluded on the attribute itself
        attribute(4, event={**EVENT, "Tag": [*EVENT["Tag"], {"name": "Internal:Test"}]}),
    ))
    query = full_query(event_tags=["tlp:%", "nope"], exclude_tags=["false-positive",
                                                                   "internal:test"])
    result = pull_attributes(client(), query, page_size=10, now=NOW)
    assert list(result.attributes["attribute_uuid"].str[-1]) == ["1"]
    assert result.skipped == {SKIP_NOT_TAGGED: 1, SKIP_EXCLUDED: 2}


def test_rows_a_misp_should_have_filtered_are_dropped_and_counted(
    rsps: responses.RequestsMock,
) -> None:
    old_event = {**EVENT, "uuid": "6a319dd2-21dc-53cb-be86-91dd278dc9f2", "date": "2026-09-01"}
    unpublished = {**EVENT, "uuid": "9a319dd2-21dc-53cb-be86-91dd278dc9f2", "published": False}
    RestSearch(rsps, page(attribute(1), attribute(2, "email-src", "a@evil.example"),
                          attribute(3, to_ids=False), attribute(4, event=old_event),
                          attribute(5, event=unpublished)))
    result = pull_attributes(client(), full_query(), page_size=10, now=NOW)
    assert len(result.attributes) == 1
    assert result.skipped == {SKIP_TYPE: 1, "not IDS-flagged or deleted": 1,
                              "event older than the age window": 1, "event not published": 1}


def test_an_attribute_seen_on_two_pages_is_kept_once(rsps: responses.RequestsMock) -> None:
    RestSearch(rsps, page(attribute(1), attribute(2)),
               page(attribute(2, value="91.198.174.193"), attribute(3)))
    result = pull_attributes(client(), full_query(), page_size=2, now=NOW)
    assert list(result.attributes["value"]) == ["91.198.174.192", "91.198.174.193",
                                                "91.198.174.192"]
    assert result.skipped == {SKIP_REPEATED: 1}


def test_pull_from_settings_logs_each_page(rsps: responses.RequestsMock,
                                           caplog: pytest.LogCaptureFixture) -> None:
    RestSearch(rsps, page(attribute(1), attribute(2)))
    settings = MispSettings(url=URL, api_key=API_KEY, retries=0, timeout=5)
    with caplog.at_level(logging.INFO, logger="tasks.misp_pull"):
        result = pull_misp_attributes(settings, full_query(max_event_age_days=3650), 2)
    assert len(result.attributes) == 2
    assert [record.getMessage() for record in caplog.records] == [
        "MISP attribute search page 1: 2 attributes", "MISP attribute search page 2: 0 attributes",
        "MISP attribute search page 3: 0 attributes"]


class HandedPages:
    """A client answering restSearch from lists; it sees, at each request, whether the
    pages it handed out are still alive and whether the collector runs."""

    def __init__(self, *pages: list[dict[str, Any]]) -> None:
        self.pages = pages
        self.handed: list[weakref.ref[Any]] = []
        self.alive_at_request: list[list[bool]] = []
        self.collector_on: list[bool] = []

    def search_attributes(self, filters: dict[str, Any], page: int,
                          limit: int) -> list[dict[str, Any]]:
        self.alive_at_request.append([ref() is not None for ref in self.handed])
        self.collector_on.append(gc.isenabled())
        answer = Answered(self.pages[page - 1] if page <= len(self.pages) else [])
        self.handed.append(weakref.ref(answer))
        return answer


class Answered(list[Any]):
    """A page's parsed JSON; unlike a plain list, it can be weakly referenced."""


def test_each_page_is_let_go_before_the_next_is_asked_for() -> None:
    client = HandedPages([attribute(1), attribute(2)], [attribute(3)])
    result = pull_attributes(client, full_query(), page_size=2, now=NOW)  # type: ignore[arg-type]
    assert len(result.attributes) == 3
    assert client.alive_at_request == [[], [False], [False, False], [False, False, False]]


def test_the_collector_pauses_while_a_page_is_read_and_is_left_as_it_was() -> None:
    assert gc.isenabled()
    client = HandedPages([attribute(1)])
    pull_attributes(client, full_query(), page_size=1, now=NOW)  # type: ignore[arg-type]
    assert client.collector_on == [False, False, False]
    assert gc.isenabled()
    gc.disable()
    try:
        pull_attributes(HandedPages([attribute(1)]), full_query(), page_size=1,
                        now=NOW)  # type: ignore[arg-type]
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_rows_left_out_are_counted_over_all_pages_in_the_order_of_the_checks(
    rsps: responses.RequestsMock,
) -> None:
    RestSearch(rsps, page(attribute(1, to_ids=False), attribute(2)),
               page(attribute(3, "email-src", "a@evil.example"), attribute(4, deleted=True)))
    result = pull_attributes(client(), full_query(), page_size=2, now=NOW)
    assert list(result.attributes["attribute_uuid"].str[-1]) == ["2"]
    assert list(result.skipped.items()) == [(SKIP_TYPE, 1), (SKIP_NOT_IDS, 2)]


def test_times_in_any_form_misp_sends_them_and_nat_for_anything_else(
    rsps: responses.RequestsMock,
) -> None:
    digits = page(attribute(1, timestamp="1795150001"), attribute(2, timestamp=1795150002))
    mixed = page(attribute(3, timestamp="1795150003.5"), attribute(4, timestamp="soon"),
                 attribute(5, timestamp=None))
    RestSearch(rsps, digits, mixed)
    result = pull_attributes(client(), full_query(), page_size=3, now=NOW)
    assert list(result.attributes["attribute_timestamp"]) == [
        pd.Timestamp(1795150001, unit="s", tz="UTC"), pd.Timestamp(1795150002, unit="s", tz="UTC"),
        pd.Timestamp(1795150003.5, unit="s", tz="UTC"), pd.NaT, pd.NaT]


def test_copies_of_one_event_on_a_page_are_each_read_for_their_own_tags(
    rsps: responses.RequestsMock,
) -> None:
    retagged = {**EVENT, "Tag": [{"name": "tlp:amber"}]}  # same uuid, other tags
    RestSearch(rsps, page(attribute(1), attribute(2, event=retagged), attribute(3)))
    result = pull_attributes(client(), full_query(), page_size=3, now=NOW)
    assert [tags.split(TAG_SEPARATOR) for tags in result.attributes["tags"]] == [
        ["tlp:green", "apt:loader"], ["tlp:amber"], ["tlp:green", "apt:loader"]]


def test_a_long_stream_of_records_is_converted_in_chunks_with_the_same_rows(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    records = [attribute(number, value=f"91.198.174.{number}") for number in range(1, 6)]
    whole = attribute_table((record, record["Event"]) for record in records)
    monkeypatch.setattr("tasks.misp_pull.CHUNK_ROWS", 2)
    chunked = attribute_table((record, record["Event"]) for record in records)
    pd.testing.assert_frame_equal(chunked, whole)
    broken = [*records[:3], {"type": "ip-dst"}, records[4]]
    with pytest.raises(MalformedAttribute, match="record 4 has no uuid"):
        attribute_table((record, EVENT) for record in broken)


def test_pages_joined_into_blocks_as_the_pull_goes_give_the_same_table(
    rsps: responses.RequestsMock, monkeypatch: pytest.MonkeyPatch,
) -> None:
    pages = [page(attribute(n), attribute(n + 1, to_ids=False), attribute(n + 2))
             for n in range(1, 16, 3)]
    RestSearch(rsps, *pages)
    whole = pull_attributes(client(), full_query(), page_size=3, now=NOW)
    monkeypatch.setattr("tasks.misp_pull.BLOCK_ROWS", 3)  # a block every second page
    blocked = pull_attributes(client(), full_query(), page_size=3, now=NOW)
    pd.testing.assert_frame_equal(blocked.attributes, whole.attributes)
    assert (blocked.pages, blocked.skipped) == (whole.pages, whole.skipped) == (
        5, {SKIP_NOT_IDS: 5})
