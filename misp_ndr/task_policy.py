"""How every misp-ndr Prefect task behaves: batch-level, never cached, remote ones retried.

Per-request retries live in `misp_ndr.http`; the task-level retry here is the outer loop
for a whole batch (e.g. MISP down for minutes). Only `TransientError` is retried: an auth
or validation failure fails at once, with its clear message. Results are never cached:
every task reads or writes live systems, and inputs (settings, DataFrames) hold secrets
that must not be hashed into cache keys.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

from prefect import Task, task
from prefect.cache_policies import NO_CACHE
from prefect.tasks import exponential_backoff

from misp_ndr.errors import TransientError

# Long steps report progress (restSearch pages, events sent) through our own loggers;
# INFO, so Prefect's handlers (see PREFECT_LOGGING_EXTRA_LOGGERS) show it in runs.
for _package in ("tasks", "flows", "misp_ndr"):
    logging.getLogger(_package).setLevel(logging.INFO)

P = ParamSpec("P")
R = TypeVar("R")


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


def batch_task(fn: Callable[P, R], name: str, *, remote: bool = False) -> Task[P, R]:
    """Wrap a plain function as a Prefect task; `remote=True` adds the transient retries."""
    options = REMOTE_TASK_RETRIES if remote else {}
    return task(fn, name=name, cache_policy=NO_CACHE, **options)
