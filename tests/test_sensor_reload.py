"""The reload hook: its outcome is reported either way."""

from __future__ import annotations

import sys

from tasks.sensor_reload import run_reload_command


def test_successful_command_reports_its_output() -> None:
    outcome = run_reload_command(f"{sys.executable} -c \"print('reloaded 42 rules')\"")
    assert outcome.succeeded and "reloaded 42 rules" in outcome.detail


def test_failing_command_reports_exit_code_and_stderr() -> None:
    outcome = run_reload_command(
        f"{sys.executable} -c \"import sys; sys.exit('socket not found')\"")
    assert not outcome.succeeded
    assert "exit code 1" in outcome.detail and "socket not found" in outcome.detail


def test_missing_program_and_hang_are_reported_not_raised() -> None:
    assert "could not start" in run_reload_command("/nonexistent/suricatasc").detail
    slow = run_reload_command(f"{sys.executable} -c \"import time; time.sleep(5)\"",
                              timeout_seconds=0.5)
    assert not slow.succeeded and "still running" in slow.detail


def test_no_shell_interprets_the_command() -> None:
    outcome = run_reload_command(f"{sys.executable} -c \"import sys; print(sys.argv)\" ';' rm")
    assert outcome.succeeded and "';'" in outcome.detail
