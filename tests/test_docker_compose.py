"""Offline checks of the container set-up in docker/ (no Docker engine, no network).

Each check compares compose.yaml, .env.example, the Dockerfile and .dockerignore with what
the code really accepts (settings fields, CLI commands and options, Prefect settings and
defaults), so a renamed setting, command or port fails here rather than as a container that
never becomes healthy on an operator's machine.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import io
import json
import os
import re
import shlex
import tomllib
import typing
import urllib.request
from functools import cache
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import pytest
import typer
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from pydantic import BaseModel, SecretStr

from misp_ndr.config import (
    ENV_PREFIX,
    DeploySettings,
    Settings,
    WebhookSettings,
    load_settings,
)
from misp_ndr.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
DOCKER = ROOT / "docker"
COMPOSE = DOCKER / "compose.yaml"
ENV_EXAMPLE = DOCKER / ".env.example"
DOCKERFILE = DOCKER / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
README = DOCKER / "README.md"

# ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?message}, ${NAME?message}, $NAME
BRACED = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")
BARE = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)")
SETTING_NAME = re.compile(r"\bMISP_NDR_[A-Z0-9_]*[A-Z0-9]")
PREFECT_NAME = re.compile(r"\bPREFECT_[A-Z0-9_]*[A-Z0-9]")
ASSIGNMENT = re.compile(r"^(#\s*)?([A-Z][A-Z0-9_]*)=(.*)$")
DEPENDS_CONDITIONS = {"service_started", "service_healthy", "service_completed_successfully"}
FILLED_SECRET = "a-real-secret-of-forty-characters-0123456"


# --- reading the files --------------------------------------------------------------------


def compose_text() -> str:
    return COMPOSE.read_text(encoding="utf-8")


def raw_compose() -> dict[str, Any]:
    """compose.yaml as written: `${...}` not replaced (YAML anchors and merges resolved)."""
    return yaml.safe_load(compose_text())


def interpolation_uses(text: str) -> list[tuple[str, str | None, str]]:
    """(name, operator, argument) of every interpolation; `$$` is a literal dollar."""
    text = text.replace("$$", "")
    uses = [(name, op or None, arg) for name, op, arg in BRACED.findall(text)]
    bare = BARE.findall(BRACED.sub("", text))
    return uses + [(name, None, "") for name in bare]


def interpolate(text: str, env: dict[str, str]) -> str:
    """What compose makes of the file with `env` as its variables (the compose spec rules)."""

    def braced(match: re.Match[str]) -> str:
        name, op, arg = match.group(1), match.group(2), match.group(3) or ""
        value = env.get(name)
        unset_or_empty = not value if op and op.startswith(":") else value is None
        if op in (":-", "-"):
            return arg if unset_or_empty else str(value)
        if op in (":?", "?"):
            if unset_or_empty:
                raise KeyError(f"required variable {name}: {arg}")
            return str(value)
        return value or ""

    parts = text.split("$$")
    parts = [BARE.sub(lambda m: env.get(m.group(1), ""), BRACED.sub(braced, part))
             for part in parts]
    return "$".join(parts)


def env_example() -> tuple[dict[str, str], dict[str, str]]:
    """(active, commented-out) assignments of .env.example."""
    active: dict[str, str] = {}
    commented: dict[str, str] = {}
    for line in ENV_EXAMPLE.read_text(encoding="utf-8").splitlines():
        match = ASSIGNMENT.match(line.strip())
        if match:
            (commented if match.group(1) else active)[match.group(2)] = match.group(3)
    return active, commented


def filled_example() -> dict[str, str]:
    """.env.example as an operator leaves it: every placeholder replaced."""
    active, _ = env_example()
    secrets = secret_setting_names() | {"POSTGRES_PASSWORD"}
    return {name: FILLED_SECRET if name in secrets else value for name, value in active.items()}


def compose(env: dict[str, str] | None = None) -> dict[str, Any]:
    """compose.yaml as compose resolves it with the filled-in example (or `env`)."""
    return yaml.safe_load(interpolate(compose_text(), filled_example() if env is None else env))


def services(env: dict[str, str] | None = None) -> dict[str, dict[str, Any]]:
    return compose(env)["services"]


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {str(key): "" if value is None else str(value) for key, value in env.items()}


def argv(service: dict[str, Any]) -> list[str]:
    command = service.get("command") or []
    return shlex.split(command) if isinstance(command, str) else [str(part) for part in command]


def option_value(args: list[str], option: str) -> str | None:
    for index, token in enumerate(args):
        if token == option and index + 1 < len(args):
            return args[index + 1]
        if token.startswith(option + "="):
            return token.split("=", 1)[1]
    return None


def ours(all_services: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The services that run our image (they have a build section)."""
    return {name: service for name, service in all_services.items() if "build" in service}


def service_running(all_services: dict[str, dict[str, Any]], *command: str) -> str:
    """The one service whose command starts with `command`."""
    names = [name for name, service in all_services.items()
             if argv(service)[:len(command)] == list(command)]
    assert len(names) == 1, f"expected one service running {' '.join(command)}, got {names}"
    return names[0]


def long_running(all_services: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {name: service for name, service in all_services.items()
            if str(service.get("restart", "no")) != "no"}


def mounts(service: dict[str, Any]) -> dict[str, str]:
    """Container path -> source (volume name or host path), short or long volume syntax."""
    found = {}
    for volume in service.get("volumes") or []:
        if isinstance(volume, str):
            source, target = volume.split(":")[:2]
        else:
            source, target = volume.get("source", ""), volume["target"]
        found[target.rstrip("/")] = source
    return found


@cache
def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments), continuation lines joined, comments dropped."""
    instructions, pending = [], ""
    for line in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        keyword, _, rest = (pending + stripped).partition(" ")
        instructions.append((keyword.upper(), rest.strip()))
        pending = ""
    return instructions


def image_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for keyword, rest in dockerfile():
        if keyword == "ENV":
            for token in shlex.split(rest):
                name, _, value = token.partition("=")
                env[name] = value
    return env


def image_workdir() -> str:
    return [rest for keyword, rest in dockerfile() if keyword == "WORKDIR"][-1]


def copies() -> list[tuple[list[str], str]]:
    """(sources, destination) of each COPY; `--from` copies are between stages."""
    found = []
    for keyword, rest in dockerfile():
        if keyword != "COPY":
            continue
        tokens = json.loads(rest) if rest.startswith("[") else shlex.split(rest)
        if any(token.startswith("--from") for token in tokens):
            continue
        tokens = [token for token in tokens if not token.startswith("--")]
        found.append((tokens[:-1], tokens[-1]))
    return found


@cache
def pyproject() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


@cache
def setting_fields() -> dict[str, Any]:
    """Every real settings env var -> its pydantic field, walked from `Settings`."""
    fields: dict[str, Any] = {}

    def walk(model: type[BaseModel], path: tuple[str, ...]) -> None:
        for name, info in model.model_fields.items():
            annotation = info.annotation
            if isinstance(annotation, type) and issubclass(annotation, BaseModel):
                walk(annotation, (*path, name))
            else:
                fields[ENV_PREFIX + "__".join((*path, name)).upper()] = info

    walk(Settings, ())
    return fields


def secret_setting_names() -> set[str]:
    return {name for name, info in setting_fields().items()
            if info.annotation is SecretStr or SecretStr in typing.get_args(info.annotation)}


@cache
def prefect_setting_names() -> frozenset[str]:
    from prefect.settings import Settings as PrefectSettings
    from prefect.settings.legacy import _get_valid_setting_names

    return frozenset(_get_valid_setting_names(PrefectSettings))


def cli_command(args: list[str]) -> Any:
    """The click command `misp-ndr <args>` runs; fails on an unknown command or option.
    (Typer 0.29 vendors its own click: groups are told by their `commands`.)"""
    from misp_ndr.cli import app

    command = typer.main.get_command(app)
    rest = list(args)
    while hasattr(command, "commands") and rest and not rest[0].startswith("-"):
        name = rest.pop(0)
        assert name in command.commands, f"misp-ndr has no command {name!r}"
        command = command.commands[name]
    known = {opt for param in command.params for opt in (*param.opts, *param.secondary_opts)}
    known |= {"--help"}
    unknown = [token.split("=")[0] for token in rest
               if token.startswith("-") and token.split("=")[0] not in known]
    assert unknown == [], f"misp-ndr {' '.join(args)}: no option {unknown}"
    return command


def prefect_options(group: str, command: str) -> set[str]:
    """The options of `prefect <group> <command>` (Prefect 3.8's CLI is cyclopts)."""
    import cyclopts

    module = importlib.import_module(f"prefect.cli.{group}")
    function = getattr(module, command, None)
    assert callable(function), f"prefect has no command {group} {command}"
    names: set[str] = set()
    for hint in typing.get_type_hints(function, include_extras=True).values():
        for meta in getattr(hint, "__metadata__", ()):
            if isinstance(meta, cyclopts.Parameter):
                for attribute in ("name", "alias", "negative"):
                    value = getattr(meta, attribute, None) or ()
                    names.update([value] if isinstance(value, str) else value)
    return names


def healthcheck_url(service: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> str:
    """Run the service's python health check here, with its environment, and return the URL
    it would fetch (so a typo in the code or a wrong port fails here, not in the container)."""
    test = service["healthcheck"]["test"]
    assert test[:3] == ["CMD", "python", "-c"], f"not a python health check: {test}"
    monkeypatch.delenv("PREFECT_WORKER_WEBSERVER_PORT", raising=False)  # the developer's own
    for name, value in environment(service).items():
        monkeypatch.setenv(name, value)
    fetched: list[str] = []

    def fake_urlopen(url: str, *args: Any, **kwargs: Any) -> io.BytesIO:
        fetched.append(url)
        return io.BytesIO(b"ok")

    monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen)
    exec(compile(test[3], "<healthcheck>", "exec"), {})
    assert len(fetched) == 1, f"the health check fetched {fetched}"
    return fetched[0]


def set_container_environment(monkeypatch: pytest.MonkeyPatch, service: dict[str, Any],
                              env_file: dict[str, str]) -> None:
    """os.environ as in the container: image ENV, then env_file, then `environment:`."""
    for name, value in {**image_env(), **env_file, **environment(service)}.items():
        monkeypatch.setenv(name, value)


def dockerignored(path: str) -> bool:
    """Whether .dockerignore keeps `path` (or a parent of it) out of the build context."""
    patterns = [line.strip() for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
                if line.strip() and not line.strip().startswith("#")]
    parts = PurePosixPath(path).parts
    candidates = ["/".join(parts[:end]) for end in range(1, len(parts) + 1)]
    excluded = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        regex = pattern.lstrip("!").strip("/")
        regex = re.escape(regex).replace(r"\*\*/", "(.*/)?").replace(r"\*\*", ".*")
        regex = regex.replace(r"\*", "[^/]*").replace(r"\?", "[^/]")
        if any(re.fullmatch(regex, candidate) for candidate in candidates):
            excluded = not negate
    return excluded


# --- variables ----------------------------------------------------------------------------


def test_every_variable_compose_interpolates_is_in_the_env_example() -> None:
    active, _ = env_example()
    used = {name for name, _, _ in interpolation_uses(compose_text())}
    assert used - set(active) == set()


def test_every_env_example_variable_is_used_by_compose_or_is_a_setting() -> None:
    active, commented = env_example()
    used = {name for name, _, _ in interpolation_uses(compose_text())}
    compose_own = {name for name in active if name.startswith("COMPOSE_")}  # e.g. project name
    unknown = {name for name in {**active, **commented}
               if name not in used | compose_own and name not in setting_fields()}
    assert unknown == set()


def test_every_misp_ndr_name_in_the_docker_files_is_a_real_setting() -> None:
    unknown = {}
    for path in (COMPOSE, ENV_EXAMPLE, DOCKERFILE, README):
        names = set(SETTING_NAME.findall(path.read_text(encoding="utf-8")))
        if names - set(setting_fields()):
            unknown[path.name] = sorted(names - set(setting_fields()))
    assert unknown == {}


def test_every_prefect_setting_the_stack_sets_is_one_prefect_knows() -> None:
    text = compose_text() + ENV_EXAMPLE.read_text(encoding="utf-8")
    text += "".join(rest for keyword, rest in dockerfile() if keyword == "ENV")
    names = set(PREFECT_NAME.findall(text))
    assert names, "the stack sets no PREFECT_* variable at all?"
    assert names - prefect_setting_names() == set()


def test_compose_defaults_of_settings_match_the_settings_defaults() -> None:
    """With a line deleted from docker/.env, compose and misp-ndr still agree."""
    fields = setting_fields()
    wrong = {}
    for name, op, default in interpolation_uses(compose_text()):
        if op in (":-", "-") and name in fields and str(fields[name].default) != default:
            wrong[name] = (default, fields[name].default)
    assert wrong == {}


def test_required_variables_fail_with_a_message_saying_what_to_set() -> None:
    required = {name: message for name, op, message in interpolation_uses(compose_text())
                if op in (":?", "?")}
    assert "POSTGRES_PASSWORD" in required
    assert "MISP_NDR_WEBHOOK__TOKEN" in required
    assert all(name in message and ".env" in message for name, message in required.items())
    env = filled_example()
    for name in required:
        with pytest.raises(KeyError, match=name):
            compose({**env, name: ""})


def test_secrets_are_interpolated_never_written_in() -> None:
    secrets = secret_setting_names() | {"POSTGRES_PASSWORD"}
    literal = {}
    for name, service in raw_compose()["services"].items():
        for key, value in environment(service).items():
            if key in secrets and not re.fullmatch(rf"\$\{{{key}:?\?[^}}]+\}}", value):
                literal[f"{name}.{key}"] = value
    database_url = environment(raw_compose()["services"]["prefect-server"])[
        "PREFECT_API_DATABASE_CONNECTION_URL"]
    assert "${POSTGRES_PASSWORD:?" in database_url
    assert literal == {}
    assert secrets & set(image_env()) == set()


def test_the_unedited_example_is_refused_by_misp_ndr(monkeypatch: pytest.MonkeyPatch) -> None:
    """An operator who forgets a placeholder gets an error naming it, not a running stack."""
    active, _ = env_example()
    placeholders = {name for name in secret_setting_names() if active.get(name)}
    assert placeholders, "the example sets no secret placeholder"
    for name, value in active.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as refused:
        load_settings()
    assert all(name in str(refused.value) for name in placeholders)
    assert not active.get("POSTGRES_PASSWORD"), "compose only refuses an empty password"


@pytest.mark.parametrize("name", ["deploy", "worker", "webhook"])
def test_each_misp_ndr_container_gets_a_valid_configuration(
        monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    """Image ENV, docker/.env (placeholders replaced) and compose's environment, combined as
    in the container, pass misp-ndr's validation."""
    service = services()[name]
    assert service.get("env_file") in (".env", [".env"]), "misp-ndr settings come from .env"
    set_container_environment(monkeypatch, service, filled_example())
    settings = load_settings()
    assert str(settings.state_dir) == image_env()["MISP_NDR_STATE_DIR"]


# --- commands -----------------------------------------------------------------------------


def test_every_misp_ndr_command_used_exists_with_its_options() -> None:
    used = [argv(service)[1:] for service in services().values()
            if argv(service)[:1] == ["misp-ndr"]]
    cmd = [json.loads(rest) for keyword, rest in dockerfile() if keyword == "CMD"]
    used += [args[1:] for args in cmd if args[:1] == ["misp-ndr"]]
    readme = re.findall(r"run --rm (\S+) misp-ndr ([^\n`]*)", README.read_text(encoding="utf-8"))
    assert {service for service, _ in readme} <= set(services())
    used += [shlex.split(args) for _, args in readme]
    assert {"deploy", "webhook"} <= {args[0] for args in used if args}
    for args in used:
        cli_command(args)


def test_every_prefect_command_used_exists_with_its_options() -> None:
    used = [argv(service)[1:] for service in services().values()
            if argv(service)[:1] == ["prefect"]]
    assert {tuple(args[:2]) for args in used} == {("server", "start"), ("worker", "start")}
    for args in used:
        options = {token.split("=")[0] for token in args[2:] if token.startswith("-")}
        assert options - prefect_options(args[0], args[1]) == set(), args


def test_the_worker_polls_the_pool_deploy_registers_with_its_type() -> None:
    from prefect.workers.process import ProcessWorker

    all_services = services()
    worker = argv(all_services[service_running(all_services, "prefect", "worker", "start")])
    deploy = all_services[service_running(all_services, "misp-ndr", "deploy")]
    pool = environment(deploy).get("MISP_NDR_DEPLOY__WORK_POOL",
                                   DeploySettings.model_fields["work_pool"].default)
    assert option_value(worker, "--pool") == pool
    assert option_value(worker, "--type") == ProcessWorker.type
    assert "--with-healthcheck" in worker


def test_flow_runs_start_in_the_image_working_directory() -> None:
    all_services = services()
    deploy = all_services[service_running(all_services, "misp-ndr", "deploy")]
    working_dir = environment(deploy).get("MISP_NDR_DEPLOY__WORKING_DIR")
    # unset, deploy registers its own working directory: the image's too
    assert working_dir in (None, image_workdir())
    assert str(deploy.get("working_dir", image_workdir())) == image_workdir()


# --- services, health, wiring -------------------------------------------------------------


def test_every_long_running_service_has_a_healthcheck() -> None:
    running = long_running(services())
    assert {"postgres", "prefect-server", "worker", "webhook"} <= set(running)
    missing = [name for name, service in running.items()
               if not (service.get("healthcheck") or {}).get("test")]
    assert missing == []


def test_depends_on_names_services_that_can_meet_the_condition() -> None:
    all_services = services()
    problems = []
    for name, service in all_services.items():
        depends = service.get("depends_on") or {}
        if isinstance(depends, list):
            depends = {target: {"condition": "service_started"} for target in depends}
        for target, spec in depends.items():
            condition = (spec or {}).get("condition", "service_started")
            if target not in all_services or target == name:
                problems.append(f"{name} -> {target}: no such service")
            elif condition not in DEPENDS_CONDITIONS:
                problems.append(f"{name} -> {target}: unknown condition {condition}")
            elif condition == "service_healthy" and "healthcheck" not in all_services[target]:
                problems.append(f"{name} -> {target}: waits for health it never reports")
            elif (condition == "service_completed_successfully"
                  and str(all_services[target].get("restart", "no")) != "no"):
                problems.append(f"{name} -> {target}: waits for a service that restarts")
    assert problems == []


def test_the_prefect_server_health_check_asks_its_own_port(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from prefect.server.api.server import create_api_app

    all_services = services()
    server = all_services[service_running(all_services, "prefect", "server", "start")]
    url = urlsplit(healthcheck_url(server, monkeypatch))
    api_health = inspect.signature(create_api_app).parameters["health_check_path"].default
    assert str(url.port) == option_value(argv(server), "--port")
    assert url.path == "/api" + api_health


def test_the_worker_health_check_asks_prefects_worker_webserver(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from prefect.settings.models.worker import WorkerWebserverSettings
    from prefect.workers.server import _build_healthcheck_server

    all_services = services()
    worker = all_services[service_running(all_services, "prefect", "worker", "start")]
    port = environment(worker).get("PREFECT_WORKER_WEBSERVER_PORT",
                                   str(WorkerWebserverSettings.model_fields["port"].default))
    url = urlsplit(healthcheck_url(worker, monkeypatch))
    served = _build_healthcheck_server(lambda: True).config.app.openapi()["paths"]
    assert str(url.port) == port
    assert url.path in served


def test_the_webhook_listens_publishes_and_is_checked_on_one_port(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from misp_ndr.webhook.app import create_app

    all_services = services()
    webhook = all_services[service_running(all_services, "misp-ndr", "webhook")]
    args, env = argv(webhook), environment(webhook)
    port = option_value(args, "--port") or env.get(
        "MISP_NDR_WEBHOOK__PORT", str(WebhookSettings.model_fields["port"].default))
    host = option_value(args, "--host") or env.get("MISP_NDR_WEBHOOK__HOST")
    assert host == "0.0.0.0", "listening on the default 127.0.0.1 is unreachable from outside"
    published = [str(entry).rsplit(":", 1)[-1] for entry in webhook.get("ports", [])]
    assert port in published
    url = urlsplit(healthcheck_url(webhook, monkeypatch))
    app = create_app(Settings(state_dir=tmp_path, webhook={"token": FILLED_SECRET}),
                     submitter=None)  # type: ignore[arg-type]
    assert str(url.port) == port
    assert url.path in app.openapi()["paths"]


def test_the_defaults_publish_the_webhook_on_the_settings_default_port() -> None:
    webhook = services({"POSTGRES_PASSWORD": "x", "MISP_NDR_WEBHOOK__TOKEN": "x"})["webhook"]
    default = str(WebhookSettings.model_fields["port"].default)
    assert [str(entry).rsplit(":", 1)[-1] for entry in webhook["ports"]] == [default]


def test_the_prefect_ui_is_published_on_localhost_by_default() -> None:
    all_services = services({"POSTGRES_PASSWORD": "x", "MISP_NDR_WEBHOOK__TOKEN": "x"})
    server = all_services[service_running(all_services, "prefect", "server", "start")]
    for entry in server["ports"]:
        host_ip, _, container_port = str(entry).split(":")
        assert host_ip == "127.0.0.1"
        assert container_port == option_value(argv(server), "--port")
    assert option_value(argv(server), "--host") == "0.0.0.0"


def test_clients_reach_the_prefect_server_by_its_service_name_and_port() -> None:
    all_services = services()
    server_name = service_running(all_services, "prefect", "server", "start")
    port = option_value(argv(all_services[server_name]), "--port")
    clients = [name for name, service in all_services.items()
               if argv(service)[:2] in (["misp-ndr", "deploy"], ["misp-ndr", "webhook"],
                                        ["prefect", "worker"])]
    assert len(clients) == 3
    for name in clients:
        url = urlsplit(environment(all_services[name]).get("PREFECT_API_URL", ""))
        assert (url.scheme, url.hostname, str(url.port), url.path) == (
            "http", server_name, port, "/api"), name


def test_the_prefect_server_uses_the_postgres_service() -> None:
    all_services = services()
    server = all_services[service_running(all_services, "prefect", "server", "start")]
    url = urlsplit(environment(server)["PREFECT_API_DATABASE_CONNECTION_URL"])
    database = all_services[str(url.hostname)]
    db_env = environment(database)
    assert str(database["image"]).startswith("postgres:")
    assert url.scheme == "postgresql+asyncpg"
    assert importlib.util.find_spec("asyncpg") is not None, "asyncpg ships with Prefect"
    assert (url.port, url.username, url.password, url.path) == (
        5432, db_env["POSTGRES_USER"], db_env["POSTGRES_PASSWORD"],
        "/" + db_env["POSTGRES_DB"])
    assert server["depends_on"][url.hostname]["condition"] == "service_healthy"


def test_worker_and_webhook_share_the_state_volume_at_the_image_state_dir() -> None:
    all_services = services()
    state_dir = image_env()["MISP_NDR_STATE_DIR"]
    worker = all_services[service_running(all_services, "prefect", "worker", "start")]
    webhook = all_services[service_running(all_services, "misp-ndr", "webhook")]
    for service in (worker, webhook):
        assert environment(service).get("MISP_NDR_STATE_DIR", state_dir) == state_dir
    assert env_example()[0].get("MISP_NDR_STATE_DIR", state_dir) == state_dir
    assert mounts(worker).get(state_dir) is not None
    assert mounts(worker)[state_dir] == mounts(webhook).get(state_dir)
    assert mounts(worker)[state_dir] in (compose().get("volumes") or {})


def test_rules_and_customizations_land_on_a_worker_volume() -> None:
    """Not in the container's own layer, which a recreate throws away."""
    all_services = services()
    worker = all_services[service_running(all_services, "prefect", "worker", "start")]
    env = {**image_env(), **environment(worker)}
    on_volume = []
    for name in ("MISP_NDR_STATE_DIR", "MISP_NDR_RULES__OUTPUT_DIR",
                 "MISP_NDR_RULES__CUSTOMIZATIONS_FILE"):
        path = PurePosixPath(env[name])
        on_volume.append(path.is_absolute() and any(
            path == PurePosixPath(target) or PurePosixPath(target) in path.parents
            for target in mounts(worker)))
    assert on_volume == [True, True, True]


def test_every_named_volume_is_declared() -> None:
    declared = set(compose().get("volumes") or {})
    used = {source for service in services().values() for source in mounts(service).values()
            if source and not source.startswith((".", "/", "~"))}
    assert used <= declared


def test_the_worker_can_be_scaled() -> None:
    worker = services()[service_running(services(), "prefect", "worker", "start")]
    assert "container_name" not in worker
    assert "hostname" not in worker
    assert [entry for entry in worker.get("ports", []) if ":" in str(entry)] == []


# --- images -------------------------------------------------------------------------------


def test_our_services_build_the_dockerfile_from_the_repository_root() -> None:
    all_services = services()
    built = ours(all_services)
    assert {"prefect-server", "deploy", "worker", "webhook"} <= set(built)
    for name, service in built.items():
        build = service["build"]
        context = (DOCKER / build["context"]).resolve()
        assert context == ROOT, name
        assert (context / build.get("dockerfile", "Dockerfile")).resolve() == DOCKERFILE, name
    assert len({service.get("image") for service in built.values()}) == 1


def test_third_party_images_are_pinned_to_a_tag() -> None:
    unpinned = []
    for name, service in services().items():
        if "build" in service:
            continue
        image = str(service.get("image", ""))
        tag = image.rsplit("/", 1)[-1].partition(":")[2]
        if not tag or tag == "latest" or "$" in image:
            unpinned.append(f"{name}: {image!r}")
    assert unpinned == []


def test_the_base_image_is_pinned_and_meets_requires_python() -> None:
    base = [rest.split()[0] for keyword, rest in dockerfile() if keyword == "FROM"][-1]
    repository, _, tag = base.partition(":")
    assert repository == "python"
    version = re.match(r"\d+\.\d+", tag)
    assert version is not None, f"base image {base} is not pinned to a Python version"
    assert version.group() in SpecifierSet(pyproject()["project"]["requires-python"])


def test_the_image_runs_as_an_unprivileged_user_who_owns_state_and_outputs() -> None:
    """Named volumes start as a copy of the image's directories: their owner must be the
    user the services run as, or nothing can be written to them."""
    users = [rest for keyword, rest in dockerfile() if keyword == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    setup = " ".join(rest for keyword, rest in dockerfile() if keyword == "RUN")
    uid = re.search(r"useradd\b[^&]*--uid (\d+)[^&]* (\S+)\s*(?:&&|$)", setup)
    assert uid is not None, "the image user is created with a fixed uid"
    assert users[-1].split(":")[0] in (uid.group(1), uid.group(2))
    chown = re.search(r"chown (?:-R )?(\S+) ([^&]+)", setup)
    assert chown is not None and chown.group(1).split(":")[0] in (uid.group(1), uid.group(2))
    owned = [PurePosixPath(path) for path in chown.group(2).split()]
    for path in (image_env()["MISP_NDR_STATE_DIR"], image_workdir()):
        assert any(PurePosixPath(path) == top or top in PurePosixPath(path).parents
                   for top in owned), path


def test_the_image_sets_python_and_misp_ndr_paths() -> None:
    env = image_env()
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert env["PYTHONUNBUFFERED"] == "1"
    assert env["MISP_NDR_STATE_DIR"] == "/var/lib/misp-ndr"
    assert env["MISP_NDR_RULES__OUTPUT_DIR"] == f"{image_workdir()}/out/rules"
    assert image_workdir() == "/srv/misp-ndr"


# --- Dockerfile and build context ---------------------------------------------------------


def test_every_copy_source_exists_and_is_in_the_build_context() -> None:
    sources = [source for sources, _ in copies() for source in sources]
    assert sources
    missing = [source for source in sources if not (ROOT / source).exists()]
    ignored = [source for source in sources if dockerignored(source)]
    assert (missing, ignored) == ([], [])


def test_every_package_of_pyproject_is_copied_before_the_install() -> None:
    includes = pyproject()["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = {pattern.rstrip("*").rstrip(".") for pattern in includes}
    assert all((ROOT / package / "__init__.py").is_file() for package in packages)
    copied = {PurePosixPath(source).parts[0] for sources, _ in copies() for source in sources}
    readme = pyproject()["project"]["readme"]
    assert packages | {"pyproject.toml", readme} <= copied
    order = [keyword + " " + rest for keyword, rest in dockerfile()]
    install = max(index for index, line in enumerate(order)
                  if line.startswith("RUN") and re.search(r"pip install (--no-deps )?\.", line))
    last_copy = max(index for index, line in enumerate(order) if line.startswith("COPY"))
    assert last_copy < install, "code copied after `pip install .` is not installed"


def test_dependencies_come_from_pyproject_not_a_second_list() -> None:
    """Runs the Dockerfile's own one-liner against the real pyproject.toml."""
    assert not [s for sources, _ in copies() for s in sources if "requirements" in s]
    runs = [rest for keyword, rest in dockerfile() if keyword == "RUN" and "tomllib" in rest]
    assert len(runs) == 1
    tokens = shlex.split(runs[0])
    code = tokens[tokens.index("-c") + 1]
    output = io.StringIO()
    cwd = Path.cwd()
    os.chdir(ROOT)
    try:
        with contextlib.redirect_stdout(output):
            exec(compile(code, "<Dockerfile RUN>", "exec"), {})
    finally:
        os.chdir(cwd)
    listed = [Requirement(line) for line in output.getvalue().splitlines() if line.strip()]
    assert [str(req) for req in listed] == [
        str(Requirement(dep)) for dep in pyproject()["project"]["dependencies"]]


def test_secrets_and_local_state_stay_out_of_the_build_context() -> None:
    assert all(dockerignored(path) for path in (
        ".env", "docker/.env", ".misp-ndr/watermarks.json", "out/rules/misp.rules", ".git"))
    assert not dockerignored("misp_ndr/samples/eve.json")
