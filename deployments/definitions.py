"""The three jobs as Prefect deployments: typed parameters (forms in the UI), schedules from
the settings, and nothing secret stored with them.

A deploy script rather than a `prefect.yaml`: the rule update's schedule is computed from
four settings (start date, UTC time of day, every N days, maximum event age) and the polling
schedules exist only when enabled, which YAML templating cannot express; and the entrypoints
are module paths into the installed package, so workers need no source checkout.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
from prefect.deployments.runner import EntrypointType
from prefect.schedules import Schedule

from misp_ndr.config import Settings
from misp_ndr.errors import ConfigError
from misp_ndr.schedules import rule_update_rrule

if TYPE_CHECKING:
    from prefect import Flow
    from prefect.deployments.runner import RunnerDeployment


class Job(StrEnum):
    EXPORT = "export"
    SIGHTINGS = "sightings"
    UPDATE_RULES = "update-rules"


FLOW_NAMES = {Job.EXPORT: "export-detections", Job.SIGHTINGS: "submit-sightings",
              Job.UPDATE_RULES: "update-rules"}
DESCRIPTIONS = {
    Job.EXPORT: "Sensor detections become MISP events. Scheduled runs read the Flowmon ADS "
                "API; webhook runs read the batch a sensor posted (flowmon-stdin, suricata).",
    Job.SIGHTINGS: "Sensor hits on MISP indicators become MISP sightings. Scheduled runs read "
                   "ADS BLACKLIST events from the Flowmon API; webhook runs read a posted batch.",
    Job.UPDATE_RULES: "MISP IDS indicators become Suricata rules, Flowmon ADS blacklists and "
                      "Zeek intel. Manual runs: set since/until for a window, fast to rebuild "
                      "from scratch and drop local customizations.",
}
AUTOMATIC_UPDATE = "automatic-update"
FLOWMON_POLL = "flowmon-poll"
# One run of a job at a time: runs share a ledger, a watermark and an output directory;
# runs arriving meanwhile wait their turn rather than fail.
ONE_AT_A_TIME = ConcurrencyLimitConfig(limit=1,
                                       collision_strategy=ConcurrencyLimitStrategy.ENQUEUE)


def deployment_path(settings: Settings, job: Job) -> str:
    """`<flow>/<deployment>`, the name the Prefect API and CLI look a deployment up by."""
    return f"{FLOW_NAMES[job]}/{settings.deploy.name}"


def job_schedules(settings: Settings, now: datetime | None = None) -> dict[Job, list[Schedule]]:
    """The rule update from its four automatic-update settings; Flowmon polling for export
    and sightings only when enabled, as it needs the ADS API."""
    rules = settings.rules
    schedules: dict[Job, list[Schedule]] = {job: [] for job in Job}
    schedules[Job.UPDATE_RULES].append(Schedule(
        rrule=rule_update_rrule(rules.schedule_start_date, rules.schedule_time_utc,
                                rules.schedule_every_days, now),
        timezone="UTC", active=rules.schedule_active, slug=AUTOMATIC_UPDATE,
        parameters={"max_age_days": rules.max_event_age_days}))
    for job, minutes, variable in (
            (Job.EXPORT, settings.export.poll_minutes, "MISP_NDR_EXPORT__POLL_MINUTES"),
            (Job.SIGHTINGS, settings.sightings.poll_minutes, "MISP_NDR_SIGHTINGS__POLL_MINUTES")):
        if not minutes:
            continue
        if not settings.flowmon.configured:
            raise ConfigError(f"{variable}={minutes} polls the Flowmon ADS API: set "
                              "MISP_NDR_FLOWMON__URL, __USER and __PASSWORD, or set it to 0")
        schedules[job].append(Schedule(interval=timedelta(minutes=minutes), slug=FLOWMON_POLL,
                                       parameters={"source": "flowmon-api"}))
    return schedules


def job_flows() -> dict[Job, Flow[..., Any]]:
    from flows.export import export_detections
    from flows.sightings import submit_sightings
    from flows.update_rules import update_rules

    return {Job.EXPORT: export_detections, Job.SIGHTINGS: submit_sightings,
            Job.UPDATE_RULES: update_rules}


def build_deployments(settings: Settings, working_dir: Path | None = None,
                      now: datetime | None = None) -> list[RunnerDeployment]:
    """One deployment per job. `working_dir` is where a process worker starts each run;
    `serve` runs them in its own directory instead."""
    schedules = job_schedules(settings, now)
    variables = {"working_dir": str(working_dir)} if working_dir else None
    return [flow.to_deployment(
        name=settings.deploy.name, schedules=schedules[job], description=DESCRIPTIONS[job],
        tags=["misp-ndr", job.value], version=version("misp-ndr"), concurrency_limit=ONE_AT_A_TIME,
        entrypoint_type=EntrypointType.MODULE_PATH, job_variables=variables,
    ) for job, flow in job_flows().items()]
