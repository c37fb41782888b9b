"""Pulling with several restSearch pages in flight: the same pull as one page at a time,
never more requests at once than configured, and nothing left running after a failure."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import pandas as pd
import pytest
import responses

from misp_ndr.config import MispSettings
from misp_ndr.errors import TransientError
from tasks.misp_pull import (
    SKIP_NOT_IDS,
    SKIP_REPEATED,
    SKIP_TYPE,
    PullResult,
    pull_attributes,
    pull_misp_attributes,
)
from tests.misp_stand_in import API_KEY, URL, mock_connection
from tests.test_misp_pull import NOW, SEARCH_URL, attribute, full_query, page

BARRIER_SECONDS = 10  # the requests that must be in flight together wait this long at most


class PagedMisp:
    """restSearch pages from lists, safe to call from several threads. It records the pages
    asked for and the most requests it had at once; the first `together` requests wait for
    each other (so they must be in flight at the same time), and a page in `failing` raises."""

    def __init__(self, *pages: list[dict[str, Any]], together: int = 0,
                 failing: dict[int, Exception] | None = None) -> None:
        self.pages = pages
        self.failing = failing or {}
        self.asked: list[int] = []
        self.active = self.most = 0
        self._lock = threading.Lock()
        self._barrier = threading.Barrier(together) if together > 1 else None

    def search_attributes(self, filters: dict[str, Any], page: int,
                          limit: int) -> list[dict[str, Any]]:
        with self._lock:
            self.asked.append(page)
            self.active += 1
            self.most = max(self.most, self.active)
            first = len(self.asked) <= (self._barrier.parties if self._barrier else 0)
        try:
            if first and self._barrier is not None:
                self._barrier.wait(BARRIER_SECONDS)
            if page in self.failing:
                raise self.failing[page]
            return list(self.pages[page - 1]) if page <= len(self.pages) else []
        finally:
            with self._lock:
                self.active -= 1


def misp_pages() -> list[list[dict[str, Any]]]:
    """Nine pages with what a pull must get right: a short page, an empty one in the
    middle, a malformed record, rows the query drops, an attribute seen twice."""
    pages = [[attribute(n), attribute(n + 1), attribute(n + 2)] for n in range(1, 25, 3)]
    pages[1] = pages[1][:1]  # warninglists at work
    pages[3] = []  # the same, a whole page
    pages[4][1] = {"type": "ip-dst", "value": "91.198.174.1"}  # no uuid
    pages[5][0] = attribute(16, to_ids=False)
    pages[6][2] = attribute(1, value="91.198.174.193")  # page 1's first, changed since
    return [*pages, [attribute(40, "email-src", "a@evil.example")]]


def pulled(source: PagedMisp, in_flight: int) -> tuple[PullResult, list[tuple[int, int]]]:
    progress: list[tuple[int, int]] = []
    result = pull_attributes(source, full_query(), page_size=3, now=NOW, in_flight=in_flight,
                             on_page=lambda number, count: progress.append((number, count)))
    return result, progress


@pytest.mark.parametrize("in_flight", [2, 4, 7])
def test_pages_in_flight_give_the_same_pull_as_one_at_a_time(in_flight: int) -> None:
    alone, alone_progress = pulled(PagedMisp(*misp_pages()), 1)
    result, progress = pulled(PagedMisp(*misp_pages()), in_flight)
    pd.testing.assert_frame_equal(result.attributes, alone.attributes)
    assert (result.pages, result.by_type, result.skipped) == (
        alone.pages, alone.by_type, alone.skipped)
    assert [(p.source, p.reason) for p in result.problems] == [
        (p.source, p.reason) for p in alone.problems]
    assert progress == alone_progress  # read and logged in page order
    # the case is not trivial: 24 records, 16 kept, each way of being left out once
    assert len(alone.attributes) == 16 and len(alone.problems) == 1
    assert alone.skipped == {SKIP_TYPE: 1, SKIP_NOT_IDS: 1, SKIP_REPEATED: 1}


@pytest.mark.parametrize("in_flight", [2, 4])
def test_in_flight_pages_are_asked_for_at_once_and_never_more(in_flight: int) -> None:
    source = PagedMisp(*misp_pages(), together=in_flight)
    pulled(source, in_flight)  # a barrier left waiting would raise here
    assert source.most == in_flight
    last_data_page = len(misp_pages())
    asked = sorted(source.asked)
    assert asked == list(range(1, len(asked) + 1))  # each page once, none skipped
    # past the two empty pages that end it, at most in_flight - 1 asked for in vain
    assert last_data_page + 2 <= len(asked) <= last_data_page + 2 + in_flight - 1


def test_one_page_at_a_time_asks_for_nothing_ahead() -> None:
    source = PagedMisp(*misp_pages())
    pulled(source, 1)
    assert source.asked == list(range(1, len(misp_pages()) + 3)) and source.most == 1


def test_a_failing_page_fails_the_pull_and_no_request_outlives_it() -> None:
    source = PagedMisp(*misp_pages(), failing={3: TransientError("MISP answered 503")})
    with pytest.raises(TransientError, match="503"):
        pulled(source, 4)
    assert source.active == 0
    assert max(source.asked) <= 3 + 3  # nothing asked for past the failure's window


def test_a_failure_past_the_end_is_no_failure_since_one_at_a_time_never_asks() -> None:
    pages = misp_pages()
    past_end = len(pages) + 3  # after the two empty pages that end the pull
    result, _ = pulled(PagedMisp(*pages, failing={past_end: TransientError("late")}), 4)
    assert result.pages == len(pages) and len(result.attributes) == 16


@pytest.fixture
def rsps() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


def test_the_flow_pull_sends_concurrency_pages_at_once_each_on_its_own_client(
    rsps: responses.RequestsMock,
) -> None:
    """Through PyMISP and requests: `misp.concurrency` requests in flight together, from
    as many threads (a requests session is not safe to share), with the same result."""
    pages = misp_pages()
    barrier = threading.Barrier(3)
    threads: set[int] = set()

    def answer(request: Any) -> tuple[int, dict[str, str], str]:
        number = json.loads(request.body)["page"]
        if number <= 3:
            barrier.wait(BARRIER_SECONDS)
            threads.add(threading.get_ident())
        records = pages[number - 1] if number <= len(pages) else []
        return page(*records)

    mock_connection(rsps)
    rsps.add_callback(responses.POST, SEARCH_URL, answer)
    settings = MispSettings(url=URL, api_key=API_KEY, retries=0, timeout=5, concurrency=3)
    result = pull_misp_attributes(settings, full_query(), 3)
    alone, _ = pulled(PagedMisp(*pages), 1)
    pd.testing.assert_frame_equal(result.attributes, alone.attributes)
    assert len(threads) == 3
