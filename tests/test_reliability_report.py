"""The report's own arithmetic: a wrong tally would print zeros over real losses."""

from __future__ import annotations

import pytest

from tests.reliability import Outcome, Recorder, render, tally


def test_tally_counts_lost_duplicated_and_injected_items() -> None:
    assert tally(["a", "b", "c"], ["a", "a", "a", "c", "x"]) == (1, 2, 1)
    assert tally(["a", "b"], ["b", "a"]) == (0, 0, 0)


def test_expected_items_must_be_unique() -> None:
    with pytest.raises(ValueError, match="unique"):
        tally(["a", "a"], ["a"])


def test_a_check_with_a_loss_fails_the_test_and_still_records_the_row() -> None:
    rows: list[Outcome] = []
    with pytest.raises(AssertionError, match="1 lost, 0 duplicated, 0 injected of 2"):
        Recorder(rows, "t::x").check("export", "HTTP 503", ["e1", "e2"], ["e1"])
    assert rows[0].lost == 1


def test_a_check_needs_expectations_and_a_known_job() -> None:
    recorder = Recorder([], "t::x")
    with pytest.raises(ValueError, match="at least one"):
        recorder.check("export", "HTTP 503", [], [])
    with pytest.raises(ValueError, match="unknown job"):
        recorder.record("exports", "HTTP 503", checked=1)


def test_the_table_sums_each_job_then_lists_rows_by_job_with_pipes_escaped() -> None:
    rows = [Outcome("sightings", "b", 1, 0, 0, 0, "t::b"),
            Outcome("export", "a | b", 2, 0, 0, 0, "t::a"),
            Outcome("export", "c", 3, 0, 0, 1, "t::c")]
    table = render(rows).splitlines()
    body = [line for line in table if line.startswith(("| export", "| sightings"))]
    assert body == ["| export | 2 | 5 | 0 | 0 | 1 |",
                    "| sightings | 1 | 1 | 0 | 0 | 0 |",
                    "| export | a \\| b | 2 | 0 | 0 | 0 | `t::a` |",
                    "| export | c | 3 | 0 | 0 | 1 | `t::c` |",
                    "| sightings | b | 1 | 0 | 0 | 0 | `t::b` |"]
