"""docker-compose.yml, Dockerfile and .dockerignore stay in step with the code.

No Docker engine is needed: the files are parsed and checked against what the code accepts
(Settings, the notifier's settings, the platform-variable collector, the CLI's commands, the
sandbox's clients and routes, pyproject's console script), so renaming a setting, a command or
a platform without updating the deployment files fails here.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shlex
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import click
import pytest
import yaml
from pydantic import SecretStr
from pydantic_settings import BaseSettings
from sqlalchemy.engine import make_url

from stream_app.catalog import CREDENTIAL_KEYS, REVOCABLE_PLATFORMS, platform
from stream_app.cli import cli
from stream_app.crypto import generate_key
from stream_app.notify.channels import load_channels
from stream_app.notify.email.settings import EmailSettings
from stream_app.notify.settings import NotifySettings, load_notify_settings
from stream_app.notify.slack.settings import SlackSettings
from stream_app.notify.webhook.settings import WebhookSettings
from stream_app.sandbox.dialects import ROUTES, default_credentials
from stream_app.settings import Settings, collect_platform_variables, load_settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
SANDBOX_ENV_FILE = ROOT / "compose.sandbox.env"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
PYPROJECT = ROOT / "pyproject.toml"

SERVICES = ("kafka", "postgres", "sandbox", "migrate", "worker", "notify")
# Services that must keep a health check (others depend on it being healthy).
HEALTHCHECKED = ("kafka", "postgres", "sandbox")
PLATFORM_SUFFIXES = ("_CLIENT_ID", "_CLIENT_SECRET", "_TOKEN_URL")
# Secrets the operator must give; every other variable has a default in the file.
REQUIRED_OUTSIDE_SETTINGS = {"POSTGRES_PASSWORD", "WORKER_DB_PASSWORD"}
ALL_INTERFACES = "0.0.0.0"  # noqa: S104 - what the sandbox container must bind
# Settings wired to the other services of the file rather than left to the operator.
WIRING = {"DATABASE_URL", "KAFKA_BOOTSTRAP_SERVERS", "TOKEN_SPOOL_DIR"}
# The notifier's settings: its core's and each channel's (its environment is checked against these).
NOTIFIER_CHANNELS: tuple[type[BaseSettings], ...] = (EmailSettings, SlackSettings, WebhookSettings)
NOTIFIER_SETTINGS: tuple[type[BaseSettings], ...] = (NotifySettings, *NOTIFIER_CHANNELS)
# The notifier's settings the file wires (its probes' port is the container's, published below).
NOTIFIER_WIRING = {"DATABASE_URL", "KAFKA_BOOTSTRAP_SERVERS", "NOTIFY_HTTP_HOST", "NOTIFY_HTTP_PORT"}

_INTERPOLATION = re.compile(
    r"\$(?:(?P<escaped>\$)"
    r"|\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}"
    r"|(?P<bare>[A-Za-z_][A-Za-z0-9_]*))"
)


# --- helpers -----------------------------------------------------------------------------


def interpolate(value: str, environ: Mapping[str, str]) -> str:
    """Compose's variable interpolation, for the forms this project uses."""

    def replace(match: re.Match[str]) -> str:
        if match["escaped"]:
            return "$"
        name = match["name"] or match["bare"]
        op, arg = match["op"], match["arg"] or ""
        present = name in environ
        current = environ.get(name, "")
        if op == ":-":
            return current if current else arg
        if op == "-":
            return current if present else arg
        if op in (":?", "?"):
            if (op == ":?" and not current) or not present:
                raise LookupError(f"{name}: {arg}")
            return current
        if op in (":+", "+"):
            return arg if (current if op == ":+" else present) else ""
        return current

    return _INTERPOLATION.sub(replace, value)


def references(value: str) -> list[tuple[str, str | None, str]]:
    """(variable, operator, argument) for each interpolation in a value."""
    return [
        (m["name"] or m["bare"], m["op"], m["arg"] or "") for m in _INTERPOLATION.finditer(value) if not m["escaped"]
    ]


def all_strings(node: Any) -> list[str]:
    if isinstance(node, str):
        return [node]
    if isinstance(node, Mapping):
        return [s for key, value in node.items() for s in all_strings(key) + all_strings(value)]
    if isinstance(node, list):
        return [s for item in node for s in all_strings(item)]
    return []


def environment_of(service: Mapping[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):  # the ["NAME=value"] form
        env = dict(item.split("=", 1) for item in env)
    assert all(isinstance(v, str) for v in env.values()), "quote every environment value"
    return dict(env)


def command_of(service: Mapping[str, Any]) -> list[str]:
    command = service["command"]
    return shlex.split(command) if isinstance(command, str) else list(command)


def env_names(settings_class: type[BaseSettings]) -> dict[str, str]:
    """Environment variable name -> field name, as pydantic-settings reads them (prefix, aliases)."""
    prefix = str(settings_class.model_config.get("env_prefix", ""))
    names = {}
    for field_name, field in settings_class.model_fields.items():
        alias = field.validation_alias if isinstance(field.validation_alias, str) else field.alias
        names[(alias or prefix + field_name).upper()] = field_name
    return names


def notifier_env_names() -> dict[str, tuple[type[BaseSettings], str]]:
    """Every variable the notifier reads -> (its settings class, field name)."""
    return {
        variable: (settings_class, field_name)
        for settings_class in NOTIFIER_SETTINGS
        for variable, field_name in env_names(settings_class).items()
    }


def unknown_notifier_variables(variables: set[str]) -> set[str]:
    return variables - set(notifier_env_names())


def notifier_environment(service: Mapping[str, Any]) -> tuple[dict[str, str], set[str]]:
    """(variables with a value, variables passed through from the operator's environment only:
    `NAME:` with no value, unset in the container when the operator has not set them)."""
    env = service.get("environment") or {}
    assert isinstance(env, dict), "use the mapping form"
    valued = {name: value for name, value in env.items() if value is not None}
    assert all(isinstance(v, str) for v in valued.values()), "quote every environment value"
    return valued, {name for name, value in env.items() if value is None}


def resolved_notifier_env(service: Mapping[str, Any], operator: Mapping[str, str]) -> dict[str, str]:
    valued, passed = notifier_environment(service)
    resolved = {name: interpolate(value, operator) for name, value in valued.items()}
    return resolved | {name: operator[name] for name in passed if name in operator}


def settings_env_names() -> dict[str, str]:
    """Environment variable name -> Settings field name."""
    names = {}
    for field_name, field in Settings.model_fields.items():
        alias = field.validation_alias if isinstance(field.validation_alias, str) else field.alias
        names[(alias or field_name).upper()] = field_name
    return names


def required_settings() -> list[str]:
    return [name for name, field in Settings.model_fields.items() if field.is_required()]


def resolved_env(service: Mapping[str, Any], secrets: Mapping[str, str]) -> dict[str, str]:
    return {name: interpolate(value, secrets) for name, value in environment_of(service).items()}


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    instructions = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, rest = line.partition(" ")
        instructions.append((keyword.upper(), rest.strip()))
    return instructions


def exec_form(argument: str) -> list[str]:
    value = json.loads(argument)
    assert isinstance(value, list), f"use the exec (JSON) form: {argument}"
    return value


# --- fixtures ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text())
    return loaded


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = compose["services"]
    return found


@pytest.fixture(scope="module")
def app_services(services: dict[str, Any]) -> dict[str, Any]:
    """The services that run this project's image (built from the Dockerfile)."""
    image = services["worker"]["image"]
    return {name: service for name, service in services.items() if "build" in service or service.get("image") == image}


@pytest.fixture(scope="module")
def secrets() -> dict[str, str]:
    return {
        "POSTGRES_PASSWORD": "compose-test-password",
        "WORKER_DB_PASSWORD": "compose-worker-password",
        "ENCRYPTION_KEY": generate_key(),
    }


@pytest.fixture(scope="module")
def sandbox_env() -> dict[str, str]:
    """compose.sandbox.env, read as `docker compose --env-file` reads it (NAME=value lines)."""
    lines = [line for line in SANDBOX_ENV_FILE.read_text().splitlines() if line.strip() and not line.startswith("#")]
    return dict(line.split("=", 1) for line in lines)


@pytest.fixture(scope="module")
def worker_env(services: dict[str, Any], secrets: dict[str, str]) -> dict[str, str]:
    return resolved_env(services["worker"], secrets)


# --- compose: shape ----------------------------------------------------------------------


def test_compose_spec_has_no_version_key(compose: dict[str, Any]) -> None:
    assert "version" not in compose


def test_services_exist(services: dict[str, Any]) -> None:
    assert set(SERVICES) <= set(services)


def test_app_services_are_the_projects_image(app_services: dict[str, Any]) -> None:
    assert {"sandbox", "migrate", "worker", "notify"} <= set(app_services)
    for name, service in app_services.items():
        assert service.get("build"), f"{name}: must build the image from the Dockerfile"
        assert service.get("init") is True, f"{name}: needs an init so SIGTERM reaches Python"
    assert len({service["image"] for service in app_services.values()}) == 1


@pytest.mark.parametrize("name", HEALTHCHECKED)
def test_long_running_dependencies_have_healthchecks(services: dict[str, Any], name: str) -> None:
    healthcheck = services[name].get("healthcheck")
    assert healthcheck and healthcheck.get("test"), f"{name}: needs a healthcheck"
    assert not healthcheck.get("disable")


def test_migrate_is_one_shot_without_healthcheck(services: dict[str, Any]) -> None:
    migrate = services["migrate"]
    assert "healthcheck" not in migrate
    assert migrate.get("restart") == "no"  # a string: an unquoted `no` is YAML's false


def test_worker_restarts(services: dict[str, Any]) -> None:
    assert services["worker"].get("restart") == "unless-stopped"


def test_worker_dependencies(services: dict[str, Any]) -> None:
    depends_on = services["worker"]["depends_on"]
    assert isinstance(depends_on, dict), "use the long form with conditions"
    assert depends_on["kafka"]["condition"] == "service_healthy"
    assert depends_on["postgres"]["condition"] == "service_healthy"
    assert depends_on["migrate"]["condition"] == "service_completed_successfully"
    if "sandbox" in depends_on:
        assert depends_on["sandbox"]["condition"] == "service_healthy"


def test_migrate_waits_for_postgres(services: dict[str, Any]) -> None:
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_every_healthy_condition_has_a_healthcheck(services: dict[str, Any]) -> None:
    for name, service in services.items():
        for dependency, spec in (service.get("depends_on") or {}).items():
            assert dependency in services, f"{name} depends on unknown service {dependency}"
            if spec.get("condition") == "service_healthy":
                assert services[dependency].get("healthcheck"), f"{dependency}: no healthcheck"


def test_stateful_services_use_named_volumes(compose: dict[str, Any], services: dict[str, Any]) -> None:
    declared = set(compose.get("volumes") or {})
    for name, target in (("kafka", "/var/lib/kafka/data"), ("postgres", "/var/lib/postgresql/data")):
        mounts = dict(volume.split(":", 1) for volume in services[name]["volumes"])
        by_target = {mount.split(":")[0]: source for source, mount in mounts.items()}
        assert target in by_target, f"{name}: no volume at {target}"
        assert by_target[target] in declared, f"{name}: {by_target[target]} is not a named volume"
    assert services["kafka"]["environment"]["KAFKA_LOG_DIRS"] == "/var/lib/kafka/data"


def test_the_worker_keeps_its_token_spool_on_a_named_volume(
    compose: dict[str, Any], services: dict[str, Any], worker_env: dict[str, str]
) -> None:
    spool = worker_env["TOKEN_SPOOL_DIR"]
    mounts = {target: source for source, target in (volume.split(":", 1) for volume in services["worker"]["volumes"])}
    holding = [target for target in mounts if spool == target or spool.startswith(target.rstrip("/") + "/")]
    assert holding, f"no volume holds TOKEN_SPOOL_DIR={spool}"
    assert mounts[holding[0]] in set(compose.get("volumes") or {})
    dockerfile = DOCKERFILE.read_text()
    assert f"-o app -g app -m 0700 {spool}" in dockerfile  # writable by the unprivileged user


# --- compose: interpolation --------------------------------------------------------------


def test_only_the_secrets_are_required(compose: dict[str, Any]) -> None:
    """`docker compose up` needs exactly the secrets; everything else has a default."""
    required_names = {name.upper() for name in required_settings()} | REQUIRED_OUTSIDE_SETTINGS
    seen_required = set()
    for value in all_strings(compose):
        for name, op, arg in references(value):
            assert op is not None, f"${{{name}}} has neither a default nor a required message"
            if op in (":?", "?"):
                assert op == ":?" and arg.strip(), f"{name}: use ${{{name}:?message}}"
                seen_required.add(name)
    assert seen_required == required_names


def test_required_settings_use_the_required_form(services: dict[str, Any]) -> None:
    for name in ("migrate", "worker"):
        env = environment_of(services[name])
        for field_name in required_settings():
            variable = field_name.upper()
            assert variable in env, f"{name}: required setting {variable} missing"
            assert re.fullmatch(rf"\$\{{{variable}:\?[^}}]+\}}", env[variable]), (
                f"{name}: {variable} must be given as ${{{variable}:?message}}"
            )


def test_app_environment_names_are_known_to_the_code(app_services: dict[str, Any]) -> None:
    fields = settings_env_names()
    for name, service in app_services.items():
        if name == "notify":
            continue  # its own settings: the notifier's tests below
        env = environment_of(service)
        platform = {k: k for k in env if k.endswith(PLATFORM_SUFFIXES)}
        revocation = {
            k for k in env if k.endswith("_REVOCATION_URL") and k[: -len("_REVOCATION_URL")].lower() in CREDENTIAL_KEYS
        }
        unknown = set(env) - set(fields) - set(platform) - revocation
        assert not unknown, f"{name}: not settings of the service: {sorted(unknown)}"
        # Accepted (no ConfigurationError) and actually collected, not skipped as foreign.
        collected = collect_platform_variables(platform)
        for variable in platform:
            suffix = next(s for s in PLATFORM_SUFFIXES if variable.endswith(s))
            key = variable.removesuffix(suffix).lower()
            if suffix == "_TOKEN_URL":
                assert collected["token_urls"][key] == variable
            else:
                assert collected["credentials"][key][suffix[1:].lower()] == variable


def test_every_credential_key_has_its_three_variables(services: dict[str, Any]) -> None:
    for name in ("migrate", "worker"):
        env = environment_of(services[name])
        for key in CREDENTIAL_KEYS:
            for suffix in PLATFORM_SUFFIXES:
                assert f"{key.upper()}{suffix}" in env, f"{name}: {key.upper()}{suffix} missing"


def test_no_platform_falls_back_to_the_sandbox(services: dict[str, Any], secrets: dict[str, str]) -> None:
    """Unset, a platform has no client and the provider's own endpoint: a production deploy that
    forgets one never sends real tokens to the test double."""
    for name in ("migrate", "worker"):
        env = resolved_env(services[name], secrets)
        assert {variable: env[variable] for variable in env if variable.endswith(PLATFORM_SUFFIXES)} == {
            f"{key.upper()}{suffix}": "" for key in CREDENTIAL_KEYS for suffix in PLATFORM_SUFFIXES
        }
        assert env["ALLOW_INSECURE_TOKEN_URLS"] == "false"


def test_the_sandbox_and_the_notifier_run_only_in_their_profiles(services: dict[str, Any]) -> None:
    assert {name: service["profiles"] for name, service in services.items() if service.get("profiles")} == {
        "sandbox": ["sandbox"],
        "notify": ["notify"],
    }
    # The worker waits for the sandbox when its profile is on, and starts without it otherwise.
    assert services["worker"]["depends_on"]["sandbox"] == {"condition": "service_healthy", "required": False}


def test_the_sandbox_env_file_points_every_platform_at_the_sandbox(
    services: dict[str, Any], secrets: dict[str, str], sandbox_env: dict[str, str]
) -> None:
    assert sandbox_env["COMPOSE_PROFILES"] == "sandbox"
    assert sandbox_env["ALLOW_INSECURE_TOKEN_URLS"] == "true"  # the sandbox speaks plain http
    sandbox_command = command_of(services["sandbox"])
    port = int(sandbox_command[sandbox_command.index("--port") + 1])
    env = resolved_env(services["worker"], {**sandbox_env, **secrets})
    for key in CREDENTIAL_KEYS:
        upper = key.upper()
        assert (env[f"{upper}_CLIENT_ID"], env[f"{upper}_CLIENT_SECRET"]) == default_credentials(key)
        url = urlsplit(env[f"{upper}_TOKEN_URL"])
        assert (url.scheme, url.hostname, url.port) == ("http", "sandbox", port)
        route = url.path.removeprefix("/").removesuffix("/token")
        assert url.path == f"/{route}/token" and route in ROUTES, f"sandbox has no {url.path}"
        assert route == key
    for key in REVOCABLE_PLATFORMS:  # disconnects revoke at the sandbox, never at the real provider
        credential = platform(key).credential_key
        url = urlsplit(env[f"{credential.upper()}_REVOCATION_URL"])
        assert (url.scheme, url.hostname, url.port, url.path) == ("http", "sandbox", port, f"/{credential}/revoke")


def test_every_variable_is_overridable(services: dict[str, Any]) -> None:
    """Apart from fixed wiring, each app setting reads the operator's variable of the same name."""
    for variable, value in environment_of(services["worker"]).items():
        if variable in WIRING:
            continue
        refs = references(value)
        assert [name for name, _, _ in refs] == [variable], f"{variable}: {value}"


def test_contract_numbers_are_visible(worker_env: dict[str, str]) -> None:
    for variable in (
        "REFRESH_BUFFER_SECONDS",
        "SCAN_INTERVAL_SECONDS",
        "REFRESH_MAX_ATTEMPTS",
        "RETRY_BASE_DELAY_SECONDS",
        "RETRY_MAX_DELAY_SECONDS",
        "RETRY_JITTER_RATIO",
        "RATE_LIMIT_DEFAULT_WAIT_SECONDS",
        "LOG_LEVEL",
    ):
        assert variable in worker_env


@pytest.mark.parametrize("deployment", ["production", "sandbox"])
def test_settings_load_from_the_compose_environment(
    services: dict[str, Any],
    secrets: dict[str, str],
    sandbox_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    deployment: str,
) -> None:
    monkeypatch.chdir(tmp_path)  # no stray .env
    for name in list(os.environ):
        if name in settings_env_names() or name.endswith(PLATFORM_SUFFIXES):
            monkeypatch.delenv(name, raising=False)
    operator = {**sandbox_env, **secrets} if deployment == "sandbox" else secrets
    worker_env = resolved_env(services["worker"], operator)
    for name, value in worker_env.items():
        monkeypatch.setenv(name, value)
    settings = load_settings()  # what every command does at start
    assert settings.encryption_key.get_secret_value() == secrets["ENCRYPTION_KEY"]
    configured = set(CREDENTIAL_KEYS) if deployment == "sandbox" else set()
    assert set(settings.credentials) == configured
    assert set(settings.token_urls) == configured
    assert settings.kafka_bootstrap_servers == "kafka:9092"
    # Every default shown in the file is the code's own default.
    for variable, field_name in settings_env_names().items():
        field = Settings.model_fields[field_name]
        if variable in worker_env and variable not in WIRING and not field.is_required() and variable not in operator:
            assert getattr(settings, field_name) == field.default, f"{variable}: default drifted"


def test_database_url_points_at_the_postgres_service(
    services: dict[str, Any], worker_env: dict[str, str], secrets: dict[str, str]
) -> None:
    postgres = resolved_env(services["postgres"], secrets)
    migrate = make_url(resolved_env(services["migrate"], secrets)["DATABASE_URL"])
    worker = make_url(worker_env["DATABASE_URL"])
    for url in (migrate, worker):
        assert url.drivername == "postgresql+asyncpg"
        assert (url.host, url.port) == ("postgres", 5432)
        assert url.database == postgres["POSTGRES_DB"]
    # Migrations run as the owner; the worker as its least-privileged role.
    assert (migrate.username, migrate.password) == (postgres["POSTGRES_USER"], postgres["POSTGRES_PASSWORD"])
    assert (worker.username, worker.password) == (postgres["WORKER_DB_ROLE"], postgres["WORKER_DB_PASSWORD"])
    assert worker.username != migrate.username
    healthcheck = " ".join(all_strings(services["postgres"]["healthcheck"]["test"]))
    assert f"-U {postgres['POSTGRES_USER']}" in healthcheck
    assert f"-d {postgres['POSTGRES_DB']}" in healthcheck


def test_postgres_creates_the_worker_role_at_its_first_start(services: dict[str, Any]) -> None:
    mounts = dict(volume.removesuffix(":ro").rsplit(":", 1) for volume in services["postgres"]["volumes"])
    by_target = {target: source for source, target in mounts.items()}
    script = by_target["/docker-entrypoint-initdb.d/10-worker-role.sh"]
    assert (ROOT / script).is_file() and os.access(ROOT / script, os.X_OK)
    sql_target = next(target for target in by_target if target.endswith("worker-role.sql"))
    assert f"-f {sql_target}" in (ROOT / script).read_text()
    assert (ROOT / by_target[sql_target]).is_file()
    assert not sql_target.startswith("/docker-entrypoint-initdb.d/")  # run by the script, with its variables


def test_kafka_listeners_agree_with_the_app(services: dict[str, Any], worker_env: dict[str, str]) -> None:
    kafka = environment_of(services["kafka"])
    assert kafka["KAFKA_PROCESS_ROLES"] == "broker,controller"

    def endpoints(value: str) -> dict[str, tuple[str, int]]:
        found = {}
        for listener in value.split(","):
            name, _, address = listener.partition("://")
            host, _, port = address.rpartition(":")
            found[name] = (host, int(port))
        return found

    listeners = endpoints(kafka["KAFKA_LISTENERS"])
    advertised = endpoints(kafka["KAFKA_ADVERTISED_LISTENERS"])
    protocols = dict(item.split(":") for item in kafka["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    assert set(listeners) <= set(protocols)
    assert kafka["KAFKA_CONTROLLER_LISTENER_NAMES"] in listeners
    assert kafka["KAFKA_CONTROLLER_LISTENER_NAMES"] not in advertised

    bootstrap = worker_env["KAFKA_BOOTSTRAP_SERVERS"].split(",")
    advertised_addresses = {f"{host}:{port}" for host, port in advertised.values()}
    assert set(bootstrap) <= advertised_addresses
    for server in bootstrap:
        host, _, port = server.rpartition(":")
        assert host == "kafka"  # the service name
        assert any(p == int(port) for _, p in listeners.values())
        assert f"localhost:{port}" in " ".join(all_strings(services["kafka"]["healthcheck"]["test"]))

    voter_id, _, voter = kafka["KAFKA_CONTROLLER_QUORUM_VOTERS"].partition("@")
    assert voter_id == kafka["KAFKA_NODE_ID"]
    assert voter == f"kafka:{listeners[kafka['KAFKA_CONTROLLER_LISTENER_NAMES']][1]}"


def test_broker_partitions_match_the_workers(services: dict[str, Any], worker_env: dict[str, str]) -> None:
    kafka = resolved_env(services["kafka"], {})
    assert kafka["KAFKA_NUM_PARTITIONS"] == worker_env["KAFKA_TOPIC_PARTITIONS"]
    for name in (
        "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR",
        "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR",
        "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR",
    ):
        assert kafka[name] == "1"


def test_topic_replicas_fit_the_brokers_of_the_file(services: dict[str, Any], worker_env: dict[str, str]) -> None:
    """The worker's topics need as many brokers as replicas; this file runs one."""
    brokers = [service for service in services.values() if str(service.get("image", "")).startswith("apache/kafka")]
    voters = environment_of(services["kafka"])["KAFKA_CONTROLLER_QUORUM_VOTERS"].split(",")
    assert (len(brokers), len(voters)) == (1, 1)
    assert worker_env["KAFKA_REPLICATION_FACTOR"] == "1"
    assert int(worker_env.get("KAFKA_MIN_INSYNC_REPLICAS", "1")) <= 1


# --- compose: commands -------------------------------------------------------------------


def test_commands_are_real_cli_commands(app_services: dict[str, Any]) -> None:
    expected = {"sandbox": "sandbox", "migrate": "migrate", "worker": "worker", "notify": "notify"}
    for name, service in app_services.items():
        argv = command_of(service)
        assert argv[0] in cli.commands, f"{name}: `token-refresh {argv[0]}` does not exist"
        if name in expected:
            assert argv[0] == expected[name]
        command = cli.commands[argv[0]]
        options = {opt for param in command.params if isinstance(param, click.Option) for opt in param.opts}
        for arg in argv[1:]:
            if arg.startswith("-"):
                assert arg in options, f"{name}: `{argv[0]}` has no option {arg}"
        # The whole line parses as the command would parse it.
        command.make_context(argv[0], argv[1:], resilient_parsing=False)


def test_sandbox_listens_where_it_is_checked(services: dict[str, Any]) -> None:
    argv = command_of(services["sandbox"])
    assert argv[argv.index("--host") + 1] == ALL_INTERFACES  # reachable from the other containers
    port = argv[argv.index("--port") + 1]
    probe = " ".join(all_strings(services["sandbox"]["healthcheck"]["test"]))
    assert f"http://localhost:{port}/_admin/health" in probe
    assert "urllib" in probe  # the slim image has neither curl nor wget


# --- compose: the notifier --------------------------------------------------------------

# What the worker holds and the notifier must not: the token key and its companions, the
# admin tokens, every platform's client.
SERVICE_SECRETS = {
    env
    for env, field_name in settings_env_names().items()
    if "SecretStr" in str(Settings.model_fields[field_name].annotation)
} - set(env_names(NotifySettings))


@pytest.fixture(scope="module")
def notifier(services: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = services["notify"]
    return found


def _clean_notifier_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)  # no stray .env
    for name in list(os.environ):
        if name in notifier_env_names() or name.startswith("NOTIFY_"):
            monkeypatch.delenv(name, raising=False)


def test_a_misspelt_notify_variable_is_caught() -> None:
    assert unknown_notifier_variables({"NOTIFY_WEBHOOK_SECRETS", "NOTIFY_EMAIL_FROM", "LOG_LEVEL"}) == set()
    assert unknown_notifier_variables({"NOTIFY_WEBHOOK_SECRET", "NOTIFY_EMAIL_FROM_ADDRESS", "NOTIFY_QUIET_HOUR"}) == {
        "NOTIFY_WEBHOOK_SECRET",
        "NOTIFY_EMAIL_FROM_ADDRESS",  # the field's name; the variable is its alias NOTIFY_EMAIL_FROM
        "NOTIFY_QUIET_HOUR",
    }


def test_the_notifier_environment_names_are_its_settings(notifier: dict[str, Any]) -> None:
    valued, passed = notifier_environment(notifier)
    unknown = unknown_notifier_variables(set(valued) | passed)
    assert not unknown, f"notify: not settings of the notifier: {sorted(unknown)}"


def test_the_notifier_has_every_channel_and_policy_variable(notifier: dict[str, Any]) -> None:
    valued, passed = notifier_environment(notifier)
    given = set(valued) | passed
    for settings_class in NOTIFIER_CHANNELS:
        missing = set(env_names(settings_class)) - given
        assert not missing, f"notify: {settings_class.__name__} variables missing: {sorted(missing)}"
    core = {name for name in env_names(NotifySettings) if name.startswith("NOTIFY_")} - NOTIFIER_WIRING
    assert core <= given, f"notify: missing {sorted(core - given)}"
    assert not given & {"NOTIFY_HTTP_HOST", "NOTIFY_HTTP_PORT"}  # the container's: what is probed and published


def test_the_notifier_holds_no_service_secret(notifier: dict[str, Any], secrets: dict[str, str]) -> None:
    """Its own environment, not the worker's anchor: no token key, no client, no admin token."""
    assert {"ENCRYPTION_KEY", "LOG_HASH_KEY", "ADMIN_TOKENS"} <= SERVICE_SECRETS
    valued, passed = notifier_environment(notifier)
    names = set(valued) | passed
    assert "ENCRYPTION_KEY" not in names
    assert not {name for name in names if name.endswith(("_CLIENT_SECRET", "_CLIENT_ID", "_REVOCATION_URL"))}
    assert not names & SERVICE_SECRETS
    referenced = {name for value in valued.values() for name, _, _ in references(value)}
    assert not referenced & {"ENCRYPTION_KEY", "WORKER_DB_PASSWORD"}
    resolved = " ".join(resolved_notifier_env(notifier, secrets).values())
    assert secrets["ENCRYPTION_KEY"] not in resolved


def test_the_notifier_reads_the_operators_variables(notifier: dict[str, Any]) -> None:
    valued, _ = notifier_environment(notifier)
    for variable, value in valued.items():
        if variable in NOTIFIER_WIRING:
            continue
        assert [(name, op) for name, op, _ in references(value)] == [(variable, ":-")], f"{variable}: {value}"


def test_the_notifier_shares_the_brokers_and_topics_settings(
    notifier: dict[str, Any], worker_env: dict[str, str], secrets: dict[str, str]
) -> None:
    env = resolved_notifier_env(notifier, secrets)
    for variable in ("KAFKA_BOOTSTRAP_SERVERS", "KAFKA_TOPIC_PARTITIONS", "KAFKA_REPLICATION_FACTOR", "LOG_LEVEL"):
        assert env[variable] == worker_env[variable], variable
    for variable in ("KAFKA_APP_ID", *(name for name in env_names(NotifySettings) if name.startswith("TOPIC_"))):
        assert variable not in env and variable not in worker_env  # both on the defaults: the same names


@pytest.mark.parametrize("deployment", ["no channel", "every channel"])
async def test_the_notifier_settings_load_from_the_compose_environment(
    notifier: dict[str, Any],
    secrets: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    deployment: str,
) -> None:
    _clean_notifier_environment(monkeypatch, tmp_path)
    channels_on = {
        "NOTIFY_EMAIL_SMTP_HOST": "smtp.example.com",
        "NOTIFY_EMAIL_SMTP_USERNAME": "mailer",  # passed through
        "NOTIFY_EMAIL_SMTP_PASSWORD": "smtp-password",  # passed through
        "NOTIFY_EMAIL_FROM": "Example <noreply@example.com>",
        "NOTIFY_EMAIL_LOOKUP_SQL": "SELECT email, name FROM users WHERE id = :user_id",
        "NOTIFY_SLACK_WEBHOOK_URL": "https://hooks.slack.com/services/T0/B0/x",
        "NOTIFY_WEBHOOK_URL": "https://app.example.com/hooks/tokens",
        "NOTIFY_WEBHOOK_SECRETS": "whsec_" + "A" * 44,
    }
    operator = {**secrets, **(channels_on if deployment == "every channel" else {})}
    env = resolved_notifier_env(notifier, operator)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = load_notify_settings()  # what `token-refresh notify` does at start
    assert settings.kafka_bootstrap_servers == "kafka:9092"
    assert settings.notify_http_port == 9465 and settings.notify_http_host == ALL_INTERFACES
    channels = load_channels(database_url=settings.database_url.get_secret_value())
    expected = ["email", "slack", "webhook"] if deployment == "every channel" else []
    assert [channel.name for channel in channels] == expected
    for channel in channels:
        await channel.aclose()
    # Every default the file shows is the code's own.
    for settings_class in NOTIFIER_SETTINGS:
        loaded = settings_class() if settings_class is not NotifySettings else settings
        for variable, field_name in env_names(settings_class).items():
            if variable in NOTIFIER_WIRING or variable in operator or variable not in env:
                continue
            value, default = getattr(loaded, field_name), settings_class.model_fields[field_name].default
            if isinstance(default, SecretStr) and isinstance(value, SecretStr):
                value, default = value.get_secret_value(), default.get_secret_value()
            assert value == default, f"{variable}: the file gives {value!r}, the code's default is {default!r}"


def test_the_notifier_runs_as_the_database_owner(
    notifier: dict[str, Any], services: dict[str, Any], secrets: dict[str, str]
) -> None:
    """It creates its notify_* tables at start: CREATE on the schema, which the worker's role lacks."""
    url = make_url(resolved_notifier_env(notifier, secrets)["DATABASE_URL"])
    migrate = make_url(resolved_env(services["migrate"], secrets)["DATABASE_URL"])
    assert url.drivername == "postgresql+asyncpg"
    assert (url.username, url.password, url.host, url.port, url.database) == (
        migrate.username,
        migrate.password,
        migrate.host,
        migrate.port,
        migrate.database,
    )


def test_the_notifier_restarts_and_waits_for_its_dependencies(notifier: dict[str, Any]) -> None:
    assert notifier.get("restart") == "unless-stopped"
    assert notifier["depends_on"] == {
        "kafka": {"condition": "service_healthy"},
        "postgres": {"condition": "service_healthy"},
    }


def test_the_notifier_health_is_its_readiness_endpoint(notifier: dict[str, Any]) -> None:
    port = NotifySettings.model_fields["notify_http_port"].default
    healthcheck = notifier["healthcheck"]
    assert not healthcheck.get("disable")
    check = " ".join(all_strings(healthcheck["test"]))
    assert f"http://localhost:{port}/readyz" in check
    assert "urllib" in check  # the slim image has neither curl nor wget
    published = [str(mapping) for mapping in notifier["ports"]]
    assert published == [f"127.0.0.1:${{NOTIFY_HTTP_PORT:-{port}}}:{port}"]  # the host's loopback only


# --- Dockerfile, .dockerignore, pyproject ------------------------------------------------


def test_console_script_exists() -> None:
    pyproject = tomllib.loads(PYPROJECT.read_text())
    target = pyproject["project"]["scripts"]["token-refresh"]
    module, _, attribute = target.partition(":")
    imported = __import__(module, fromlist=[attribute])
    assert callable(getattr(imported, attribute))


def test_dockerfile_runs_token_refresh_worker_as_non_root() -> None:
    instructions = dockerfile_instructions()
    keywords = [keyword for keyword, _ in instructions]
    args = {keyword: rest for keyword, rest in instructions}  # the last of each wins, as in Docker

    assert [rest for keyword, rest in instructions if keyword == "FROM"] == ["python:3.11-slim"]
    assert exec_form(args["ENTRYPOINT"]) == ["token-refresh"]
    default_command = exec_form(args["CMD"])
    assert default_command == ["worker"] and default_command[0] in cli.commands

    user = args["USER"].split(":")[0]
    assert user not in ("root", "0"), "the image must not run as root"
    assert keywords.index("USER") > max(i for i, k in enumerate(keywords) if k == "RUN")

    runs = " ".join(rest for keyword, rest in instructions if keyword == "RUN")
    assert re.search(r"pip install (--\S+ \S+ )*\.(\s|$)", runs), "install the project itself: pip install ."
    # The versions CI tested, not whatever is newest on the day of the build.
    assert re.search(r"pip install (--\S+ \S+ )*--constraint constraints\.txt (--\S+ \S+ )*\.", runs)
    copied = " ".join(rest for keyword, rest in instructions if keyword == "COPY").split()
    assert "constraints.txt" in copied
    assert "[dev]" not in runs and "-e " not in runs


def test_dockerfile_copies_every_package_the_wheel_needs() -> None:
    pyproject = tomllib.loads(PYPROJECT.read_text())
    include = pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    copied = " ".join(rest for keyword, rest in dockerfile_instructions() if keyword == "COPY")
    sources = set(copied.split())
    assert "pyproject.toml" in sources
    for pattern in include:
        package = pattern.rstrip("*")
        assert package in sources, f"Dockerfile does not COPY the package {package}"


def test_dockerignore_keeps_local_state_out_and_the_sources_in() -> None:
    patterns = [
        line.strip() for line in DOCKERIGNORE.read_text().splitlines() if line.strip() and not line.startswith("#")
    ]
    for must in (".venv", ".local", ".git", "*.db", "**/__pycache__", ".pytest_cache", ".mypy_cache", ".env"):
        assert must in patterns, f".dockerignore should exclude {must}"

    def ignored(path: str) -> bool:
        return any(fnmatch.fnmatch(path, pattern.removeprefix("**/")) for pattern in patterns)

    pyproject = tomllib.loads(PYPROJECT.read_text())
    needed = ["pyproject.toml", "README.md"] + [
        p.rstrip("*") for p in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    ]
    for path in needed:
        assert not ignored(path), f".dockerignore excludes {path}, which the image build needs"
    assert not any(pattern.startswith("!") for pattern in patterns)


def test_worker_health_is_its_readiness_endpoint(services: dict[str, Any]) -> None:
    port = Settings.model_fields["http_port"].default
    check = " ".join(all_strings(services["worker"]["healthcheck"]["test"]))
    assert f"http://localhost:{port}/readyz" in check
    assert any(str(mapping).endswith(f":{port}") for mapping in services["worker"]["ports"])
