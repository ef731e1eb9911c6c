"""docker-compose.yml, checked offline: no Docker engine, no network.

The file is validated against the Compose Specification's JSON schema, as vendored by
the pinned PyPI package check-jsonschema (``vendor.compose-spec``; the package is pinned
in pyproject.toml, so the schema changes only with it). The wiring checks cover what no
schema can: that every name, host and port refers to a service that exists and listens
there, that each facestream service gets the settings it reads (as in the Kubernetes
overlays, tests/deploy/test_k8s.py), and that Prometheus scrapes every service and
Grafana reads Prometheus.

Each check returns the problems it finds; ``test_check_catches`` breaks the file in one
place and expects the check to report it, so no check passes vacuously.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import pytest
import yaml  # type: ignore[import-untyped]

from stream.settings import StreamSettings
from tests.deploy.test_k8s import SERVICES

#: The recognizers' group whose lag the stream exports (StreamSettings.recognizer_group_id).
RECOGNIZER_GROUP: str = StreamSettings.model_fields["recognizer_group_id"].default

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
FACESTREAM_IMAGE = "facestream"
#: Services that check API keys, and so need the bootstrap admin key.
WITH_ADMIN_KEY = {"ingest", "api"}
#: Settings that are secrets: each must come from the environment, required, never a
#: committed value or a default (``${NAME:?message}``).
SECRETS = {
    "ingest": ["ADMIN_API_KEY"],
    "api": ["ADMIN_API_KEY"],
    "postgres": ["POSTGRES_PASSWORD"],
    "grafana": ["GF_SECURITY_ADMIN_PASSWORD"],
}
#: ``${NAME}``, ``${NAME:-default}``, ``${NAME:?message}`` and the like (compose interpolation).
VARIABLE = re.compile(r"\$\{(\w+)(?:(:?[-?+])([^}]*))?\}")
MIGRATE_COMMAND = ["python", "-m", "common.migrate"]

Compose = dict[str, Any]


def compose_schema() -> dict[str, Any]:
    text = (
        resources.files("check_jsonschema.builtin_schemas.vendor").joinpath("compose-spec.json").read_text()
    )
    schema: dict[str, Any] = json.loads(text)
    return schema


def load() -> Compose:
    # PyYAML resolves anchors and merge keys (<<) as Compose does.
    doc: Compose = yaml.safe_load(COMPOSE.read_text())
    return doc


@pytest.fixture
def doc() -> Compose:
    return load()


# ------------------------------------------------------------------------------- helpers


def env(service: Compose) -> dict[str, str]:
    raw = service.get("environment", {})
    if isinstance(raw, list):  # the list form: ["KEY=value", ...]
        raw = dict(item.split("=", 1) for item in raw)
    return {k: "" if v is None else str(v) for k, v in raw.items()}


def interpolated(value: str) -> str:
    """``value`` as compose would use it with each variable set to ``<NAME>`` (a stand-in
    without URL delimiters, so the result parses as a URL)."""
    return VARIABLE.sub(lambda m: m.group(1).lower(), value)


def required_secret(value: str) -> bool:
    """Whether ``value`` is exactly one required variable (``${NAME:?message}``): compose
    refuses to start without it, and no committed stand-in exists."""
    found = VARIABLE.fullmatch(value)
    return found is not None and found.group(2) in (":?", "?")


def env_url(values: dict[str, str], key: str) -> tuple[str, Any]:
    """A URL setting: as written, and parsed after interpolation."""
    raw = values.get(key, "")
    return raw, urlsplit(interpolated(raw))


def url_password(raw: str) -> str:
    """The password part of a URL as written (it may be a variable with a message)."""
    userinfo = raw.split("://", 1)[-1].rpartition("@")[0]
    return userinfo.partition(":")[2]


def depends_on(service: Compose) -> dict[str, Compose]:
    raw = service.get("depends_on", {})
    return {name: {} for name in raw} if isinstance(raw, list) else dict(raw)


def published(service: Compose) -> list[tuple[int, int]]:
    """(host port, container port) of the short ``"8000:8000"`` form and the long form."""
    out = []
    for port in service.get("ports", []):
        if isinstance(port, dict):
            target = int(port["target"])
            out.append((int(port.get("published") or target), target))
        else:
            parts = str(port).split(":")
            out.append((int(parts[-2]) if len(parts) > 1 else int(parts[-1]), int(parts[-1])))
    return out


def published_on(service: Compose) -> list[tuple[str, int, int]]:
    """(host address, host port, container port) of each published port; "" = every address."""
    out = []
    for port in service.get("ports", []):
        if isinstance(port, dict):
            target = int(port["target"])
            out.append((str(port.get("host_ip", "")), int(port.get("published") or target), target))
        else:
            parts = str(port).split(":")
            host_ip = parts[0] if len(parts) == 3 else ""
            out.append((host_ip, int(parts[-2]) if len(parts) > 1 else int(parts[-1]), int(parts[-1])))
    return out


def mounts(service: Compose) -> dict[str, str]:
    """Container path -> source (a host path or a named volume)."""
    out = {}
    for volume in service.get("volumes", []):
        if isinstance(volume, dict):
            out[volume["target"]] = volume.get("source", "")
        else:
            source, target = str(volume).split(":")[:2]
            out[target] = source
    return out


def host_file(service: Compose, container_path: str) -> Path | None:
    """The file of this checkout that is mounted at ``container_path`` (None: not mounted)."""
    for target, source in mounts(service).items():
        if source.startswith((".", "/")) and (
            container_path == target or container_path.startswith(target.rstrip("/") + "/")
        ):
            return (ROOT / source / Path(container_path).relative_to(target)).resolve()
    return None


def healthcheck_url(service: Compose) -> str | None:
    test = " ".join(str(part) for part in service.get("healthcheck", {}).get("test", []))
    found = re.search(r"https?://[^\s'\"]+", test)
    return found.group(0) if found else None


def kafka_port(doc: Compose) -> int:
    """The port Kafka advertises to clients (its PLAINTEXT listener)."""
    advertised = env(doc["services"]["kafka"])["KAFKA_ADVERTISED_LISTENERS"]
    [listener] = [x for x in advertised.split(",") if x.startswith("PLAINTEXT://")]
    return int(listener.rsplit(":", 1)[1])


def service_port(doc: Compose, name: str) -> int | None:
    """Where a service listens: a facestream service's port setting, else a known default."""
    if name in SERVICES:
        value = env(doc["services"][name]).get(SERVICES[name].port_env)
        return int(value) if value else None
    return {"kafka": kafka_port(doc), "postgres": 5432, "prometheus": 9090, "grafana": 3000}.get(name)


def prometheus_config(doc: Compose) -> tuple[Path | None, dict[str, Any]]:
    service = doc["services"]["prometheus"]
    flags = dict(
        str(arg).removeprefix("--").split("=", 1) for arg in service.get("command", []) if "=" in str(arg)
    )
    path = host_file(service, flags.get("config.file", "/etc/prometheus/prometheus.yml"))
    if path is None or not path.is_file():
        return path, {}
    config: dict[str, Any] = yaml.safe_load(path.read_text())
    return path, config


def scrape_targets(config: dict[str, Any]) -> list[tuple[str, str, int]]:
    """(job, host, port) of every static and DNS target."""
    out = []
    for job in config.get("scrape_configs", []):
        for static in job.get("static_configs", []):
            for target in static.get("targets", []):
                host, port = str(target).rsplit(":", 1)
                out.append((job["job_name"], host, int(port)))
        for dns in job.get("dns_sd_configs", []):
            for name in dns.get("names", []):
                out.append((job["job_name"], name, int(dns["port"])))
    return out


# -------------------------------------------------------------------------------- checks


#: The schema's $schema names its draft without the "#" that jsonschema looks up by.
DRAFTS: dict[str, type[jsonschema.protocols.Validator]] = {
    "draft-07": jsonschema.Draft7Validator,
    "2019-09": jsonschema.Draft201909Validator,
    "2020-12": jsonschema.Draft202012Validator,
}


def schema_problems(doc: Compose) -> list[str]:
    schema = compose_schema()
    [draft] = [v for k, v in DRAFTS.items() if k in schema.get("$schema", "")]
    return [f"{e.json_path}: {e.message}" for e in draft(schema).iter_errors(doc)]


def reference_problems(doc: Compose) -> list[str]:
    """depends_on names services (with a healthcheck where it waits for health); named
    volumes are declared."""
    problems = []
    services = doc["services"]
    for name, service in services.items():
        for host_ip, *_ in published_on(service):
            if host_ip != "127.0.0.1":
                problems.append(f"{name}: publishes a port on {host_ip or 'every interface'}, not 127.0.0.1")
        for key in SECRETS.get(name, []):
            if not required_secret(env(service).get(key, "")):
                problems.append(f"{name}: {key} is not a required variable (${{{key}:?...}})")
        for other, condition in depends_on(service).items():
            if other not in services:
                problems.append(f"{name}: depends on {other}, which is no service")
            elif condition.get("condition") == "service_healthy" and "healthcheck" not in services[other]:
                problems.append(f"{name}: waits for {other} to be healthy, but it has no healthcheck")
        for source in mounts(service).values():
            if not source.startswith((".", "/")) and source not in (doc.get("volumes") or {}):
                problems.append(f"{name}: volume {source} is not declared")
            if source.startswith(".") and not (ROOT / source).exists():
                problems.append(f"{name}: mounts {source}, which does not exist")
    return problems


def settings_problems(doc: Compose) -> list[str]:
    """What each facestream service reads: its command, where it listens, where Kafka and
    PostgreSQL are, the admin key; and that each waits for what it needs."""
    problems = []
    services = doc["services"]
    postgres = env(services["postgres"])
    migrate = services.get("migrate", {})
    if migrate.get("command") != MIGRATE_COMMAND or migrate.get("restart") != "no":
        problems.append("migrate: no one-shot service runs python -m common.migrate")
    if depends_on(migrate).get("postgres", {}).get("condition") != "service_healthy":
        problems.append("migrate: does not wait for PostgreSQL")
    owner_raw, owner = env_url(env(migrate), "DATABASE_URL")
    if (owner.hostname, owner.port, owner.username, owner.path.lstrip("/")) != (
        "postgres",
        5432,
        postgres.get("POSTGRES_USER"),
        postgres.get("POSTGRES_DB"),
    ) or url_password(owner_raw) != postgres.get("POSTGRES_PASSWORD"):
        problems.append("migrate: DATABASE_URL is not the postgres service's owner")
    users: dict[str, str] = {}
    for name, spec in SERVICES.items():
        if name not in services:
            problems.append(f"{name}: missing")
            continue
        service, values = services[name], env(services[name])
        if service.get("command") != ["python", "-m", name]:
            problems.append(f"{name}: command is {service.get('command')}, not python -m {name}")
        if str(service.get("image", "")).split(":")[0] != FACESTREAM_IMAGE or service.get("build") != ".":
            problems.append(f"{name}: not the facestream image built from the Dockerfile")
        if values.get(spec.host_env) != "0.0.0.0":
            problems.append(
                f"{name}: {spec.host_env} is {values.get(spec.host_env)}, unreachable from outside"
            )
        port = service_port(doc, name)
        if port is None:
            problems.append(f"{name}: {spec.port_env} is not set")
        for host_port, container_port in published(service):
            if container_port != port:
                problems.append(f"{name}: publishes {host_port}:{container_port}, but listens on {port}")
        url = healthcheck_url(service)
        if url is None or urlsplit(url).port != port or urlsplit(url).path != "/readyz":
            problems.append(f"{name}: the healthcheck does not ask /readyz on port {port}: {url}")
        for broker in values.get("KAFKA_BOOTSTRAP_SERVERS", "").split(","):
            host, _, broker_port = broker.partition(":")
            if host not in services or broker_port != str(kafka_port(doc)):
                problems.append(f"{name}: KAFKA_BOOTSTRAP_SERVERS {broker!r} is not Kafka's listener")
        waits = depends_on(service)
        if "kafka" not in waits:
            problems.append(f"{name}: starts without waiting for Kafka")
        if ("DATABASE_URL" in values) != spec.needs_db:
            problems.append(f"{name}: DATABASE_URL {'missing' if spec.needs_db else 'given needlessly'}")
        if "DATABASE_URL" in values:
            raw, db = env_url(values, "DATABASE_URL")
            if (db.hostname, db.port, db.path.lstrip("/")) != ("postgres", 5432, postgres.get("POSTGRES_DB")):
                problems.append(f"{name}: DATABASE_URL does not match the postgres service")
            if db.username in (None, postgres.get("POSTGRES_USER")) or db.username in users.values():
                problems.append(f"{name}: does not log in as a database user of its own ({db.username})")
            users[name] = db.username or ""
            if not required_secret(url_password(raw)):
                problems.append(f"{name}: its database password is not a required variable")
            if env(migrate).get(f"{name.upper()}_DATABASE_URL") != raw:
                problems.append(
                    f"{name}: migrate does not create its login user ({name.upper()}_DATABASE_URL)"
                )
            if "postgres" not in waits:
                problems.append(f"{name}: starts without waiting for PostgreSQL")
            if waits.get("migrate", {}).get("condition") != "service_completed_successfully":
                problems.append(f"{name}: may start before the migrations are applied")
        if ("ADMIN_API_KEY" in values) != (name in WITH_ADMIN_KEY):
            problems.append(f"{name}: ADMIN_API_KEY {'missing' if name in WITH_ADMIN_KEY else 'needless'}")
    recognizer = env(services.get("recognizer", {}))
    if recognizer.get("RECOGNIZER_GROUP_ID", RECOGNIZER_GROUP) != RECOGNIZER_GROUP:
        problems.append(
            f"recognizer: group {recognizer['RECOGNIZER_GROUP_ID']} is not the one whose lag the stream"
            f" exports ({RECOGNIZER_GROUP}, stream/app.py)"
        )
    stream = env(services.get("stream", {}))
    if not stream.get("F_DATADIR", "").startswith("/tmp/"):
        problems.append("stream: F_DATADIR is not under the writable /tmp (the root filesystem is read-only)")
    return problems


def kafka_problems(doc: Compose) -> list[str]:
    kafka = doc["services"]["kafka"]
    log_dirs = env(kafka).get("KAFKA_LOG_DIRS", "/tmp/kraft-combined-logs")  # the image's default
    volumes = [t for t, s in mounts(kafka).items() if not s.startswith((".", "/"))]
    if not any(log_dirs == v or log_dirs.startswith(v.rstrip("/") + "/") for v in volumes):
        return [f"kafka: KAFKA_LOG_DIRS {log_dirs} is on no volume: the data dies with the container"]
    if not env(kafka).get("CLUSTER_ID"):
        return ["kafka: no fixed CLUSTER_ID: a restarted container would not reuse its volume"]
    return []


def monitoring_problems(doc: Compose) -> list[str]:
    """Prometheus scrapes every facestream service where it listens and loads the alert
    rules; Grafana is provisioned with Prometheus and the dashboards."""
    problems = []
    services = doc["services"]
    path, config = prometheus_config(doc)
    if not config:
        return [f"prometheus: its config file is not mounted from this checkout ({path})"]
    scraped = set()
    for job, host, port in scrape_targets(config):
        if host == "localhost":
            continue
        if host not in services:
            problems.append(f"prometheus job {job}: target {host} is no service")
        elif port != service_port(doc, host):
            problems.append(
                f"prometheus job {job}: scrapes {host}:{port}, which listens on {service_port(doc, host)}"
            )
        scraped.add(host)
    for name in SERVICES:
        if name not in scraped:
            problems.append(f"prometheus: {name} is not scraped")
    assert path is not None
    for rule_file in config.get("rule_files", []):
        if not (path.parent / rule_file).is_file():
            problems.append(f"prometheus: rule file {rule_file} is not beside its config")
    if not config.get("rule_files"):
        problems.append("prometheus: no alert rules loaded")

    grafana = services.get("grafana", {})
    datasources = host_file(grafana, "/etc/grafana/provisioning/datasources")
    providers = host_file(grafana, "/etc/grafana/provisioning/dashboards")
    if datasources is None or providers is None or not datasources.is_dir() or not providers.is_dir():
        return [*problems, "grafana: provisioning is not mounted at /etc/grafana/provisioning"]
    sources = [
        s for f in sorted(datasources.glob("*.yml")) for s in yaml.safe_load(f.read_text())["datasources"]
    ]
    for source in sources:
        url = urlsplit(source.get("url", ""))
        if url.hostname not in services or url.port != service_port(doc, str(url.hostname)):
            problems.append(f"grafana datasource {source.get('name')}: {source.get('url')} is no service")
        interval = source.get("jsonData", {}).get("timeInterval")
        if interval != config.get("global", {}).get("scrape_interval"):
            problems.append(
                f"grafana datasource {source.get('name')}: timeInterval is not the scrape interval"
            )
    if not any(s.get("type") == "prometheus" for s in sources):
        problems.append("grafana: no Prometheus datasource")
    for f in sorted(providers.glob("*.yml")):
        for provider in yaml.safe_load(f.read_text())["providers"]:
            folder = host_file(grafana, provider["options"]["path"])
            if folder is None or not any(folder.glob("*.json")):
                problems.append(
                    f"grafana provider {provider['name']}: no dashboards at {provider['options']['path']}"
                )
    return problems


# --------------------------------------------------------------------------------- tests

CHECKS: dict[str, Callable[[Compose], list[str]]] = {
    "schema": schema_problems,
    "references": reference_problems,
    "settings": settings_problems,
    "kafka": kafka_problems,
    "monitoring": monitoring_problems,
}


@pytest.mark.parametrize("check", CHECKS)
def test_compose(doc: Compose, check: str) -> None:
    assert CHECKS[check](doc) == []


def test_the_schema_is_the_compose_specification() -> None:
    schema = compose_schema()
    assert schema.get("title") == "Compose Specification"
    assert "services" in schema["properties"]


def _set_env(name: str, key: str, value: str | None) -> Callable[[Compose], None]:
    def breakage(doc: Compose) -> None:
        values = doc["services"][name].setdefault("environment", {})
        if value is None:
            values.pop(key, None)
        else:
            values[key] = value

    return breakage


def _unknown_key(doc: Compose) -> None:
    doc["services"]["ingest"]["helthcheck"] = doc["services"]["ingest"].pop("healthcheck")


def _unknown_condition(doc: Compose) -> None:
    doc["services"]["api"]["depends_on"]["kafka"] = {"condition": "service_ready"}


def _depends_on_typo(doc: Compose) -> None:
    doc["services"]["api"]["depends_on"]["postgress"] = {"condition": "service_healthy"}


def _undeclared_volume(doc: Compose) -> None:
    doc["volumes"].pop("grafana-data")


def _published_wrong_port(doc: Compose) -> None:
    doc["services"]["ingest"]["ports"] = ["8000:8080"]


def _healthcheck_on_healthz(doc: Compose) -> None:
    test = doc["services"]["stream"]["healthcheck"]["test"]
    doc["services"]["stream"]["healthcheck"]["test"] = [t.replace("/readyz", "/healthz") for t in test]


def _no_kafka_wait(doc: Compose) -> None:
    doc["services"]["recognizer"]["depends_on"].pop("kafka")


def _scrape_wrong_port(doc: Compose) -> None:
    doc["services"]["recognizer"]["environment"]["METRICS_PORT"] = 9102


def _prometheus_unmounted(doc: Compose) -> None:
    doc["services"]["prometheus"]["volumes"] = ["prometheus-data:/prometheus"]


def _grafana_unprovisioned(doc: Compose) -> None:
    doc["services"]["grafana"]["volumes"] = ["grafana-data:/var/lib/grafana"]


def _published_everywhere(doc: Compose) -> None:
    doc["services"]["grafana"]["ports"] = ["3000:3000"]


def _no_migrate_wait(doc: Compose) -> None:
    doc["services"]["stream"]["depends_on"].pop("migrate")


def _migrate_restarts(doc: Compose) -> None:
    doc["services"]["migrate"].pop("restart")


def _kafka_log_dirs_in_tmp(doc: Compose) -> None:
    doc["services"]["kafka"]["environment"].pop("KAFKA_LOG_DIRS")


BREAKAGES: list[tuple[str, Callable[[Compose], None], str]] = [
    ("unknown-key", _unknown_key, "schema"),
    ("unknown-condition", _unknown_condition, "schema"),
    ("depends-on-typo", _depends_on_typo, "references"),
    ("undeclared-volume", _undeclared_volume, "references"),
    ("loopback-host", _set_env("ingest", "INGEST_HOST", "127.0.0.1"), "settings"),
    ("wrong-broker", _set_env("stream", "KAFKA_BOOTSTRAP_SERVERS", "broker:9092"), "settings"),
    (
        "wrong-database",
        _set_env("api", "DATABASE_URL", "postgresql://x:y@postgres:5432/facestream"),
        "settings",
    ),
    (
        "database-for-recognizer",
        _set_env("recognizer", "DATABASE_URL", "postgresql://x@postgres/x"),
        "settings",
    ),
    ("no-admin-key", _set_env("api", "ADMIN_API_KEY", None), "settings"),
    ("literal-admin-key", _set_env("ingest", "ADMIN_API_KEY", "dev-admin-key-not-secret"), "references"),
    ("defaulted-admin-key", _set_env("api", "ADMIN_API_KEY", "${ADMIN_API_KEY:-dev-key}"), "references"),
    ("literal-db-password", _set_env("postgres", "POSTGRES_PASSWORD", "facestream"), "references"),
    ("literal-grafana-password", _set_env("grafana", "GF_SECURITY_ADMIN_PASSWORD", "admin"), "references"),
    ("published-everywhere", _published_everywhere, "references"),
    (
        "service-as-owner",
        _set_env(
            "stream",
            "DATABASE_URL",
            "postgresql://facestream:${POSTGRES_PASSWORD:?x}@postgres:5432/facestream",
        ),
        "settings",
    ),
    (
        "shared-login",
        _set_env(
            "api",
            "DATABASE_URL",
            "postgresql://ingest_service:${INGEST_DB_PASSWORD:?x}@postgres:5432/facestream",
        ),
        "settings",
    ),
    ("no-migrate-wait", _no_migrate_wait, "settings"),
    ("migrate-restarts", _migrate_restarts, "settings"),
    ("other-group", _set_env("recognizer", "RECOGNIZER_GROUP_ID", "another-group"), "settings"),
    ("faust-datadir-in-app", _set_env("stream", "F_DATADIR", None), "settings"),
    ("published-wrong-port", _published_wrong_port, "settings"),
    ("healthcheck-on-healthz", _healthcheck_on_healthz, "settings"),
    ("no-kafka-wait", _no_kafka_wait, "settings"),
    ("kafka-log-dirs-in-tmp", _kafka_log_dirs_in_tmp, "kafka"),
    ("scrape-wrong-port", _scrape_wrong_port, "monitoring"),
    ("prometheus-unmounted", _prometheus_unmounted, "monitoring"),
    ("grafana-unprovisioned", _grafana_unprovisioned, "monitoring"),
]


@pytest.mark.parametrize(("breakage", "check"), [b[1:] for b in BREAKAGES], ids=[b[0] for b in BREAKAGES])
def test_check_catches(doc: Compose, breakage: Callable[[Compose], None], check: str) -> None:
    assert CHECKS[check](doc) == [], "the check must pass before the breakage"
    broken = copy.deepcopy(doc)
    breakage(broken)
    assert CHECKS[check](broken) != []
