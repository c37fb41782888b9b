"""Register the deployments with a Prefect server: on a work pool for workers, or served by
this process (`misp-ndr deploy --serve`)."""

from __future__ import annotations

from pathlib import Path
from uuid import UUID

from prefect import deploy, serve
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.exceptions import ObjectNotFound
from prefect.workers.process import ProcessWorker

from deployments.definitions import build_deployments
from misp_ndr.config import Settings


def ensure_process_work_pool(name: str) -> bool:
    """Create the work pool when missing; True when it was created."""
    with get_client(sync_client=True) as client:
        try:
            client.read_work_pool(name)
            return False
        except ObjectNotFound:
            client.create_work_pool(WorkPoolCreate(
                name=name, type=ProcessWorker.type,
                base_job_template=ProcessWorker.get_default_base_job_template()))
            return True


def deploy_to_work_pool(settings: Settings) -> list[UUID]:
    """Create or update the three deployments; workers polling the pool run them."""
    working_dir = (settings.deploy.working_dir or Path.cwd()).resolve()
    ensure_process_work_pool(settings.deploy.work_pool)
    return deploy(*build_deployments(settings, working_dir),
                  work_pool_name=settings.deploy.work_pool, build=False, push=False,
                  print_next_steps_message=False, ignore_warnings=True)


def serve_deployments(settings: Settings) -> None:
    """Register the deployments and run their flow runs in this process until stopped."""
    serve(*build_deployments(settings))
