"""Task-level retry policy for every Prefect task that talks to MISP or a sensor.

Per-request retries live in `misp_ndr.http`; this is the outer loop for a whole batch
task (e.g. MISP down for minutes). Only `TransientError` is retried: an auth or
validation failure fails at once, with its clear message.
"""

from __future__ import annotations

from typing import Any

from prefect.tasks import exponential_backoff

from misp_ndr.errors import TransientError


def retry_on_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect `retry_condition_fn`: retry only when the failure was transient."""
    try:
        state.result()
    except TransientError:
        return True
    except Exception:
        return False
    return False


REMOTE_TASK_RETRIES: dict[str, Any] = {
    "retries": 3,
    "retry_delay_seconds": exponential_backoff(backoff_factor=10),
    "retry_jitter_factor": 0.5,
    "retry_condition_fn": retry_on_transient,
}
