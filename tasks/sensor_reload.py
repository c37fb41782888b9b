"""Tell the sensor to load the new ruleset (e.g. `suricatasc -c reload-rules`).

Runs after the files are in place: a failed reload is reported, and the new files stay
(the sensor keeps its running rules until a reload succeeds).
"""

from __future__ import annotations

import shlex
import subprocess
from dataclasses import dataclass

from misp_ndr.task_policy import batch_task


@dataclass(frozen=True)
class ReloadOutcome:
    command: str
    succeeded: bool
    detail: str


def run_reload_command(command: str, timeout_seconds: float = 120) -> ReloadOutcome:
    """No shell: the command line is split like a shell would, then run directly."""
    try:
        done = subprocess.run(shlex.split(command), capture_output=True, text=True,
                              timeout=timeout_seconds, check=False)
    except (OSError, ValueError) as exc:
        return ReloadOutcome(command, False, f"could not start: {exc}")
    except subprocess.TimeoutExpired:
        return ReloadOutcome(command, False, f"still running after {timeout_seconds:g} s")
    output = (done.stderr or done.stdout).strip()[-300:]
    if done.returncode != 0:
        return ReloadOutcome(command, False, f"exit code {done.returncode}: {output}")
    return ReloadOutcome(command, True, output)


run_reload_command_task = batch_task(run_reload_command, "reload-sensor")
