"""Create a run of a job's deployment on the Prefect server, idempotently."""

from __future__ import annotations

from typing import Any, Protocol

import httpx
from prefect.client.orchestration import get_client
from prefect.exceptions import ObjectNotFound, PrefectHTTPStatusError

from deployments.definitions import Job, deployment_path
from misp_ndr.config import Settings


class PrefectUnavailable(Exception):
    """The run could not be created now (API down, deployment missing): keep and retry."""


class RunRefused(Exception):
    """Prefect refused the run's parameters: retrying the same payload cannot help."""


class Submitter(Protocol):
    def submit(self, job: Job, parameters: dict[str, Any], idempotency_key: str) -> str: ...


class DeploymentSubmitter:
    """Runs go to the deployments `misp-ndr deploy` registered (`<flow>/<deploy.name>`)."""

    def __init__(self, settings: Settings) -> None:
        self._names = {job: deployment_path(settings, job) for job in Job}

    def submit(self, job: Job, parameters: dict[str, Any], idempotency_key: str) -> str:
        name = self._names[job]
        try:
            with get_client(sync_client=True) as client:
                deployment = client.read_deployment_by_name(name)
                run = client.create_flow_run_from_deployment(
                    deployment.id, parameters=parameters, idempotency_key=idempotency_key,
                    tags=["webhook"])
        except ObjectNotFound:
            raise PrefectUnavailable(f"no deployment {name} on the Prefect server: run "
                                     "misp-ndr deploy") from None
        except PrefectHTTPStatusError as exc:
            status = exc.response.status_code
            if 400 <= status < 500 and status not in (408, 429):
                raise RunRefused(f"Prefect refused the run ({status}): "
                                 f"{exc.response.text[:300]}") from None
            raise PrefectUnavailable(f"Prefect API answered {status}") from None
        except (httpx.HTTPError, OSError) as exc:
            raise PrefectUnavailable(f"Prefect API unreachable ({type(exc).__name__})") from None
        return str(run.id)
