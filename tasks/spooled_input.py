"""A batch spooled to disk (standard input, a webhook payload) lives until its run succeeds.

Deleted by the run that handled it, not by whoever spooled it: a run that fails, or a worker
that dies, leaves the batch where the run's `input_path` points, ready for a retry.
"""

from __future__ import annotations

import logging
from pathlib import Path

from misp_ndr.task_policy import batch_task

logger = logging.getLogger(__name__)


def discard_spooled_input(path: str | Path) -> None:
    Path(path).unlink(missing_ok=True)
    logger.info("handled batch %s deleted", Path(path).name)


discard_spooled_input_task = batch_task(discard_spooled_input, "discard-spooled-input")
