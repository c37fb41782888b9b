"""`misp-ndr`: run every job ad hoc, check the connection, inspect the configuration.

Configuration is validated here, before Prefect or any network call starts, so a typo in
an env var costs a second, not a flow run.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from misp_ndr.config import Distribution, Settings, load_settings, masked_settings
from misp_ndr.errors import ConfigError, InputError, MispNdrError
from misp_ndr.moments import parse_age, parse_moment

app = typer.Typer(
    help="misp-ndr: MISP <-> network detection (Flowmon ADS, Suricata) as Prefect flows.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
config_app = typer.Typer(help="Inspect the configuration.", no_args_is_help=True)
app.add_typer(config_app, name="config")

EXIT_FAILED = 1
EXIT_CONFIG = 2


def fail(message: str, code: int) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def run_guarded(action: Callable[[], int]) -> None:
    """Map our errors to exit codes: 2 = fix the configuration or input, 1 = run failed."""
    try:
        code = action()
    except (ConfigError, InputError) as exc:
        raise fail(str(exc), EXIT_CONFIG) from None
    except MispNdrError as exc:
        raise fail(str(exc), EXIT_FAILED) from None
    raise typer.Exit(code)


def moment_option(text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        return parse_moment(text)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


def spool_stdin(state_dir: Path) -> Path:
    """Keep the sensor's batch on disk before touching it: if the run fails, it is not lost."""
    spool = state_dir / "spool"
    spool.mkdir(parents=True, exist_ok=True)
    path = spool / f"{datetime.now(UTC):%Y%m%dT%H%M%S%f}-stdin.batch"
    path.write_bytes(sys.stdin.buffer.read())
    return path


E = TypeVar("E", bound=StrEnum)


def source_choice(choices: type[E], source: str) -> E:
    try:
        return choices(source)
    except ValueError:
        raise typer.BadParameter(
            f"{source!r}; choose one of {', '.join(choice.value for choice in choices)}",
            param_hint="--source") from None


def require_flowmon(settings: Settings) -> None:
    """Checked before Prefect starts: a missing appliance costs a second, not a run."""
    if not settings.flowmon.configured:
        raise ConfigError("--source flowmon-api needs MISP_NDR_FLOWMON__URL, "
                          "MISP_NDR_FLOWMON__USER and MISP_NDR_FLOWMON__PASSWORD")


def report_run(call: Callable[[], Any], incomplete: type[Exception],
               spooled: Path | None) -> int:
    """Run a job, print its report; exit 1 when it could not deliver everything. The run
    deletes a spooled batch once handled; a failed run keeps it for a re-run."""
    try:
        report = call()
    except incomplete as exc:
        typer.echo(exc.report.render_text())  # type: ignore[attr-defined]
        if spooled:
            typer.echo(f"the input batch is kept at {spooled}; re-run with --input {spooled}")
        return EXIT_FAILED
    typer.echo(report.render_text())
    return 0


def input_file(input_path: str | None, state_dir: Path, *, stdin_default: bool,
               source: str) -> tuple[str, Path | None]:
    """The file to read and, when it is spooled standard input, its spool path."""
    if input_path not in (None, "-") and not Path(input_path).is_file():
        raise InputError(f"--input {input_path}: no such file")
    if input_path is None and not stdin_default:
        raise InputError(f"--source {source} needs --input FILE (or - for stdin)")
    if input_path in (None, "-"):
        spooled = spool_stdin(state_dir)
        return str(spooled), spooled
    return str(input_path), None


@app.command()
def export(
    source: Annotated[str, typer.Option(
        help="where detections come from: flowmon-api (ADS REST API), flowmon-stdin (the "
        "batch ADS hands a custom script), suricata (eve.json alerts)")],
    input_path: Annotated[str | None, typer.Option(
        "--input", "-i", help="file to read, or - for standard input (the default for "
        "flowmon-stdin); standard input is spooled under the state dir first")] = None,
    feed_dir: Annotated[Path, typer.Option(
        help="MISP feed directory written when no MISP URL is configured")] = Path("out/misp-feed"),
    feed_only: Annotated[bool, typer.Option(
        help="write the MISP feed even when a MISP URL is configured")] = False,
    dry_run: Annotated[bool, typer.Option(
        help="build the events and print what would be sent; send and record nothing")] = False,
    since: Annotated[str | None, typer.Option(
        help="flowmon-api window start: ISO time or age (12h, 7d); default: last successful "
        "run, minus MISP_NDR_FLOWMON__WINDOW_OVERLAP_MINUTES")] = None,
    until: Annotated[str | None, typer.Option(
        help="flowmon-api window end: ISO time or age; default: now")] = None,
    timezone: Annotated[str | None, typer.Option(
        help="IANA time zone of the appliance's clock, for flowmon-stdin times without "
        "offset (overrides MISP_NDR_FLOWMON__TIMEZONE, default UTC)")] = None,
    tag: Annotated[str | None, typer.Option(
        help="tag on every event (overrides MISP_NDR_EXPORT__TAG)")] = None,
    to_ids: Annotated[bool | None, typer.Option(
        "--to-ids/--no-to-ids", help="IDS flag on attributes (overrides MISP_NDR_EXPORT__TO_IDS)",
        show_default=False)] = None,
    distribution: Annotated[int | None, typer.Option(
        min=0, max=3, help="0 own org, 1 community, 2 connected, 3 all "
        "(overrides MISP_NDR_EXPORT__DISTRIBUTION)")] = None,
    ip_filter: Annotated[list[str] | None, typer.Option(
        help="IP/CIDR/pattern or ADS filter name to drop; repeatable (replaces "
        "MISP_NDR_EXPORT__IP_FILTERS)")] = None,
    publish: Annotated[bool | None, typer.Option(
        "--publish/--no-publish", help="publish events (overrides MISP_NDR_EXPORT__PUBLISH)",
        show_default=False)] = None,
) -> None:
    """Export sensor detections as MISP events (or a MISP feed when no MISP is configured)."""
    from flows.export import ExportSource, export_detections
    from tasks.export_report import ExportIncomplete

    chosen = source_choice(ExportSource, source)

    def run() -> int:
        settings = load_settings({"export": {
            "tag": tag, "to_ids": to_ids, "distribution": distribution,
            "ip_filters": ip_filter, "publish": publish}})
        if chosen is ExportSource.FLOWMON_API:
            require_flowmon(settings)
        path, spooled = None, None
        if chosen is not ExportSource.FLOWMON_API:
            path, spooled = input_file(input_path, settings.state_dir, source=source,
                                       stdin_default=chosen is ExportSource.FLOWMON_STDIN)
        return report_run(lambda: export_detections(
                source=chosen, input_path=path, since=moment_option(since),
                until=moment_option(until), feed_dir=str(feed_dir), feed_only=feed_only,
                dry_run=dry_run, timezone=timezone, tag=tag, to_ids=to_ids,
                distribution=Distribution(distribution) if distribution is not None else None,
                ip_filters=ip_filter, publish=publish, discard_input=spooled is not None),
            ExportIncomplete, spooled)

    run_guarded(run)


@app.command()
def sightings(
    source: Annotated[str, typer.Option(
        help="where hits come from: flowmon-api (ADS BLACKLIST events), flowmon-stdin (the "
        "batch ADS hands a custom script), suricata (eve.json alerts of our rules), csv "
        "(value,time[,sensor] as CSV or JSON)")],
    input_path: Annotated[str | None, typer.Option(
        "--input", "-i", help="file to read, or - for standard input (the default for "
        "flowmon-stdin); standard input is spooled under the state dir first")] = None,
    sid_map: Annotated[Path | None, typer.Option(
        help="suricata: the sid map update-rules wrote (default: sid-map.csv in "
        "MISP_NDR_RULES__OUTPUT_DIR, if there)")] = None,
    source_name: Annotated[str | None, typer.Option(
        help="the sightings' source in MISP; {sensor} is replaced by the sensor name "
        "(overrides MISP_NDR_SIGHTINGS__SOURCE)")] = None,
    out: Annotated[Path | None, typer.Option(
        help="JSON lines file written when no MISP is configured (overrides "
        "MISP_NDR_SIGHTINGS__OUT_FILE)")] = None,
    file_only: Annotated[bool, typer.Option(
        help="write the JSON lines file even when a MISP URL is configured")] = False,
    window_minutes: Annotated[int | None, typer.Option(
        min=0, help="at most one sighting per indicator per sensor per this many minutes "
        "(overrides MISP_NDR_SIGHTINGS__WINDOW_MINUTES)")] = None,
    since: Annotated[str | None, typer.Option(
        help="flowmon-api window start: ISO time or age (12h); default: last successful run")
    ] = None,
    until: Annotated[str | None, typer.Option(
        help="flowmon-api window end: ISO time or age; default: now")] = None,
    timezone: Annotated[str | None, typer.Option(
        help="IANA zone of the appliance's clock, for flowmon-stdin times without offset")
    ] = None,
) -> None:
    """Add a MISP sighting for each sensor hit on a MISP indicator (or write them as JSON
    lines, ready for /sightings/add, when no MISP is configured)."""
    from flows.sightings import SightingSource, submit_sightings
    from tasks.sightings_report import SightingsIncomplete

    chosen = source_choice(SightingSource, source)

    def run() -> int:
        settings = load_settings({"sightings": {
            "source": source_name, "window_minutes": window_minutes, "out_file": out}})
        if chosen is SightingSource.FLOWMON_API:
            require_flowmon(settings)
        if sid_map is not None and not sid_map.is_file():
            raise InputError(f"--sid-map {sid_map}: no such file")
        path, spooled = None, None
        if chosen is not SightingSource.FLOWMON_API:
            path, spooled = input_file(input_path, settings.state_dir, source=source,
                                       stdin_default=chosen is SightingSource.FLOWMON_STDIN)
        return report_run(lambda: submit_sightings(
                source=chosen, input_path=path, sid_map=str(sid_map) if sid_map else None,
                source_name=source_name, out_file=str(out) if out else None,
                file_only=file_only, since=moment_option(since), until=moment_option(until),
                window_minutes=window_minutes, timezone=timezone,
                discard_input=spooled is not None), SightingsIncomplete, spooled)

    run_guarded(run)


@app.command("update-rules")
def update_rules_command(
    since: Annotated[str | None, typer.Option(
        help="window start, ISO time or age (7d); a window means a full rebuild of it; "
        "default: changes since the last successful update")] = None,
    from_: Annotated[str | None, typer.Option("--from", help="same as --since")] = None,
    to: Annotated[str | None, typer.Option(help="window end, ISO time or age")] = None,
    max_age: Annotated[str | None, typer.Option(
        help="leave out events older than this (30d); overrides "
        "MISP_NDR_RULES__MAX_EVENT_AGE_DAYS")] = None,
    tag: Annotated[list[str] | None, typer.Option(
        help="pull only events with this tag; repeatable")] = None,
    exclude_tag: Annotated[list[str] | None, typer.Option(
        help="never pull events with this tag; repeatable")] = None,
    fast: Annotated[bool, typer.Option(
        help="rebuild from scratch and drop local customizations (backed up first)")] = False,
    feed: Annotated[str | None, typer.Option(
        help="read a MISP feed directory or URL instead of the MISP API")] = None,
    output_dir: Annotated[Path | None, typer.Option(
        help="where the rule files go (default ./out/rules, MISP_NDR_RULES__OUTPUT_DIR)")] = None,
    allow_empty: Annotated[bool, typer.Option(
        help="accept an update that leaves no indicators at all")] = False,
    rollback: Annotated[bool, typer.Option(
        help="restore the previous ruleset (or --snapshot) instead of updating")] = False,
    snapshot: Annotated[str | None, typer.Option(
        help="with --rollback: which kept ruleset to restore (see --list-snapshots)")] = None,
    list_snapshots: Annotated[bool, typer.Option(
        help="list the kept rulesets and exit")] = False,
) -> None:
    """Pull IDS indicators from MISP and write Suricata rules, Flowmon ADS blacklists and a
    Zeek intel file; the previous ruleset is kept for --rollback."""
    from tasks.ruleset_files import rollback as restore
    from tasks.ruleset_files import snapshots

    def run() -> int:
        settings = load_settings({"rules": {"output_dir": output_dir}})
        out = settings.rules.output_dir
        if list_snapshots:
            typer.echo("\n".join(snapshots(out)) or f"no kept rulesets under {out}")
            return 0
        if rollback:
            typer.echo(f"restored ruleset {restore(out, snapshot)} in {out}")
            return 0
        if not settings.misp.configured and not feed:
            raise ConfigError("no MISP configured (MISP_NDR_MISP__URL) and no --feed given")
        from flows.update_rules import update_rules

        try:
            age = parse_age(max_age).days if max_age else None
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--max-age") from None
        report = update_rules(
            since=moment_option(since or from_), until=moment_option(to), max_age_days=age,
            tags=tag, exclude_tags=exclude_tag, fast=fast, feed=feed,
            output_dir=str(output_dir) if output_dir else None, allow_empty=allow_empty)
        typer.echo(report.render_text())
        return 0

    run_guarded(run)


@app.command()
def check() -> None:
    """Check MISP (reachable, version, what the API key may do) and Flowmon (login)."""
    from tasks.flowmon import FlowmonClient
    from tasks.misp import MispClient

    def run() -> int:
        settings = load_settings()
        healthy = True
        if not settings.misp.configured:
            typer.echo("MISP: not configured (MISP_NDR_MISP__URL); exports write a MISP feed")
        else:
            result = MispClient(settings.misp).server_check()
            typer.echo(result.render_text())
            healthy = result.healthy
        if settings.flowmon.configured:
            FlowmonClient(settings.flowmon).filters()
            typer.echo(f"Flowmon: logged in to {settings.flowmon.url}, ADS filters readable")
        return 0 if healthy else EXIT_FAILED

    run_guarded(run)


def require_prefect_server() -> None:
    """Deployments and webhook runs belong on a lasting server, not an ephemeral one."""
    from prefect.settings import PREFECT_API_URL

    if not PREFECT_API_URL.value():
        raise ConfigError("PREFECT_API_URL is not set: point it at your Prefect server, e.g. "
                          "PREFECT_API_URL=http://127.0.0.1:4200/api")


@app.command()
def deploy(
    serve: Annotated[bool, typer.Option(
        help="run the deployments' flow runs in this process instead of on a work pool's "
        "workers (stops with Ctrl-C)")] = False,
) -> None:
    """Register the three jobs as deployments on the Prefect server (PREFECT_API_URL), with
    their schedules (MISP_NDR_RULES__SCHEDULE_*, MISP_NDR_EXPORT__POLL_MINUTES,
    MISP_NDR_SIGHTINGS__POLL_MINUTES) on the work pool MISP_NDR_DEPLOY__WORK_POOL."""
    from deployments.definitions import Job, deployment_path
    from deployments.register import deploy_to_work_pool, serve_deployments

    def run() -> int:
        settings = load_settings()
        require_prefect_server()
        if serve:
            serve_deployments(settings)
            return 0
        deploy_to_work_pool(settings)
        for job in Job:
            typer.echo(f"deployed {deployment_path(settings, job)}")
        typer.echo(f"run them with: prefect worker start --pool {settings.deploy.work_pool}")
        return 0

    run_guarded(run)


@app.command()
def webhook(
    drain: Annotated[bool, typer.Option(
        help="submit the payloads kept while Prefect was unreachable, then exit")] = False,
    host: Annotated[str | None, typer.Option(help="overrides MISP_NDR_WEBHOOK__HOST")] = None,
    port: Annotated[int | None, typer.Option(help="overrides MISP_NDR_WEBHOOK__PORT")] = None,
) -> None:
    """Serve POST /hooks/export, /hooks/sightings, /hooks/update-rules: each accepted
    payload becomes a run of the job's deployment. Needs MISP_NDR_WEBHOOK__TOKEN."""
    from misp_ndr.webhook.app import create_app, drain_spool, spool_directory
    from misp_ndr.webhook.submit import DeploymentSubmitter

    def run() -> int:
        settings = load_settings({"webhook": {"host": host, "port": port}})
        options = settings.webhook
        if options.token is None:
            raise ConfigError("MISP_NDR_WEBHOOK__TOKEN is not set, and the receiver never runs "
                              "open: set a secret of 16+ characters (openssl rand -hex 32) or "
                              "prefect-secret:<Secret block name>")
        require_prefect_server()
        submitter = DeploymentSubmitter(settings)
        if drain:
            submitted, left = drain_spool(spool_directory(settings), submitter)
            typer.echo(f"submitted {submitted} kept payload(s); {left} still pending")
            return 0 if left == 0 else EXIT_FAILED
        import uvicorn

        uvicorn.run(create_app(settings, submitter), host=options.host, port=options.port,
                    ssl_certfile=options.tls_cert, ssl_keyfile=options.tls_key,
                    log_level="info")
        return 0

    run_guarded(run)


@config_app.command("show")
def config_show() -> None:
    """Print the effective configuration (env, .env, defaults) with secrets masked."""

    def run() -> int:
        typer.echo(json.dumps(masked_settings(load_settings()), indent=2, default=str))
        return 0

    run_guarded(run)


@app.command()
def demo(
    output_dir: Annotated[Path, typer.Option(
        help="where the demo writes its MISP feed and state")] = Path("out/demo"),
) -> None:
    """Run the export job on the bundled sample data; no MISP or sensor needed."""
    from misp_ndr.demo import run_demo

    run_guarded(lambda: run_demo(output_dir, typer.echo))


def main(argv: list[str] | None = None) -> Any:
    # Our loggers also log outside flow runs (the webhook receiver, deploy): not to the API.
    os.environ.setdefault("PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW", "ignore")
    # The ephemeral Prefect server's telemetry heartbeat cannot reach out from a SOC
    # network and races its own SQLite start-up ("database is locked"); opt in explicitly.
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # A first run on a fresh machine creates the ephemeral server's database: measured at
    # over 20 s (Prefect's default wait) on a 2-core machine, which then failed the run.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    # Progress of long steps (restSearch pages, events delivered) is logged by our modules:
    # show it with Prefect's run logs, in the terminal and in the UI.
    os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "tasks,flows,misp_ndr")
    return app(args=argv)
