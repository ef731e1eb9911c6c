"""The project image, run for real: ingest, the stream worker, the recognizer pool and the
results API each run from it the way docker-compose.yml and the Kustomize manifests run
them, against this session's broker and database, and an end-to-end run goes through them.

How each container is run, and where that comes from:
- command, environment and hardening (read-only root, tmpfs /tmp, no capabilities, no new
  privileges): the compose service, as ``podman-compose config`` resolves it;
- user and group: the manifest's securityContext (checked against compose's hardening);
- probes: the compose healthcheck and the manifest's startup, liveness and readiness
  probes (dev overlay) are executed, and its preStop hook before the container is stopped.
The containers share the host's network to reach the test broker and database, so the
addresses they listen on and connect to are the test ones: KAFKA_BOOTSTRAP_SERVERS,
DATABASE_URL (each service's own login user), the port settings, and the port in the
healthcheck and probes are the only values that differ from compose's.
"""

from __future__ import annotations

import json
import shutil
import tomllib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.containers.podman import (
    IMAGE,
    PORTS,
    ROOT,
    SECRETS,
    compose_config,
    compose_run_options,
    exec_ok,
    logs,
    podman,
    service_env,
    until,
)
from tests.deploy.test_k8s import K8S, _leave_out_real_secrets, containers, pod_spec, render
from tests.e2e.test_lfw import enroll, submit, wait_final
from tests.platform import role_urls, wait_recognizers_applied

# The first test builds the images (about 4 minutes on a machine that has none yet).
pytestmark = [pytest.mark.containers, pytest.mark.timeout(1200)]


@pytest.fixture(scope="module")
def workloads(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """The dev overlay's Deployments by name (rendered from a copy with the example secrets)."""
    tree = tmp_path_factory.mktemp("deploy") / "k8s"
    shutil.copytree(K8S, tree, ignore=_leave_out_real_secrets)
    for example in tree.glob("overlays/*/secrets/*.example"):
        shutil.copy(example, example.with_suffix(""))
    return {d["metadata"]["name"]: d for d in render(tree, "dev") if d["kind"] == "Deployment"}


@dataclass
class Running:
    """One service's container and where its definitions came from."""

    service: str
    name: str
    compose: dict[str, Any]
    manifest: dict[str, Any]  # the Deployment's container
    grace_s: int  # terminationGracePeriodSeconds

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{PORTS[self.service][2]}"

    def test_port(self, command: str) -> str:
        _, port, test_port = PORTS[self.service]
        return command.replace(f":{port}/", f":{test_port}/")

    def healthcheck(self) -> list[str]:
        """The compose healthcheck as an exec command, on the test port."""
        kind, *rest = self.compose["healthcheck"]["test"]
        command = rest if kind == "CMD" else ["/bin/sh", "-c", rest[0]]
        assert kind in ("CMD", "CMD-SHELL"), kind
        return [self.test_port(part) for part in command]

    def probe_ok(self, probe: dict[str, Any]) -> bool:
        """Execute a Kubernetes probe (httpGet or exec) once."""
        if "exec" in probe:
            return exec_ok(self.name, [self.test_port(p) for p in probe["exec"]["command"]])
        get = probe["httpGet"]
        named = {p["name"]: p["containerPort"] for p in self.manifest.get("ports", [])}
        port = named.get(get["port"], get["port"])
        assert port == PORTS[self.service][1], f"{self.service}: probe on port {port}"
        try:
            r = httpx.get(f"{self.url}{get['path']}", timeout=probe.get("timeoutSeconds", 1))
        except httpx.HTTPError:
            return False
        return 200 <= r.status_code < 400


def run_args(service: str, compose: dict[str, Any], workload: dict[str, Any]) -> list[str]:
    """``podman run`` options that run ``service`` as compose and the manifest do."""
    container = next(c for c in containers(workload) if c["name"] == service)
    pod = pod_spec(workload).get("securityContext", {})
    security = {**pod, **container.get("securityContext", {})}
    # The two definitions agree on the hardening; the container gets it from both.
    assert compose["read_only"] is True
    assert security["readOnlyRootFilesystem"] is True
    assert compose["cap_drop"] == security["capabilities"]["drop"] == ["ALL"]
    assert "no-new-privileges:true" in compose["security_opt"]
    assert security["allowPrivilegeEscalation"] is False
    assert container["command"] == compose["command"]
    # Compose's writable places are the manifest's too (the manifest may have more: the
    # stream's Faust data on a volume of its own, where compose uses /tmp).
    writable = {m["mountPath"] for m in container.get("volumeMounts", [])}
    assert set(compose["tmpfs"]) <= writable, f"{service}: compose {compose['tmpfs']}, manifest {writable}"
    return ["--user", f"{security['runAsUser']}:{security['runAsGroup']}", *compose_run_options(compose)]


@pytest.fixture(scope="module")
def services(
    images: None,
    kafka_bootstrap: str,
    database_url: str,
    workloads: dict[str, dict[str, Any]],
) -> Iterator[dict[str, Running]]:
    """ingest, stream, recognizer and api, each in a container of the project image."""
    compose = compose_config()["services"]
    own_urls = role_urls(database_url)
    run_id = uuid.uuid4().hex[:6]
    running: dict[str, Running] = {}
    try:
        for service in PORTS:
            definition = compose[service]
            env = service_env(service, definition, kafka_bootstrap, own_urls)
            workload = workloads[service]
            name = f"facestream-test-{service}-{run_id}"
            options = ["--name", name, "--network", "host", *run_args(service, definition, workload)]
            options += [a for k, v in env.items() for a in ("-e", f"{k}={v}")]
            podman("run", "-d", *options, IMAGE, *definition["command"])
            manifest = next(c for c in containers(workload) if c["name"] == service)
            grace = int(pod_spec(workload).get("terminationGracePeriodSeconds", 30))
            running[service] = Running(service, name, definition, manifest, grace)
        yield running
    finally:
        for r in running.values():
            podman("rm", "-f", "-t", "0", r.name, check=False)


@pytest.fixture(scope="module")
def ready(services: dict[str, Running]) -> dict[str, Running]:
    """Every container past its startup probe (within the manifest's own budget), then
    ready by its readiness probe and its compose healthcheck, and alive by its liveness."""
    names = [r.name for r in services.values()]
    for r in services.values():
        startup = r.manifest["startupProbe"]
        budget = startup.get("periodSeconds", 10) * startup.get("failureThreshold", 3)
        until(f"{r.service}: the startup probe", partial(r.probe_ok, startup), budget, logs_of=names)
    for r in services.values():
        # The recognizer loads dlib and the gallery after its startup probe: compose's
        # start_period is the budget for the readiness probe and the healthcheck.
        budget = int(r.compose["healthcheck"]["start_period"].rstrip("s"))
        readiness = r.manifest["readinessProbe"]
        until(f"{r.service}: readiness", partial(r.probe_ok, readiness), budget, logs_of=names)
        healthy = r.healthcheck()
        until(f"{r.service}: the healthcheck", partial(exec_ok, r.name, healthy), 60, logs_of=names)
        assert r.probe_ok(r.manifest["livenessProbe"]), logs(r.name)
    return services


def test_the_image_holds_the_services_and_none_of_the_test_tools(images: None) -> None:
    dev = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["dev"]
    dev_names = {d.split("==")[0].split("[")[0].lower().replace("_", "-") for d in dev}
    listed = podman("run", "--rm", IMAGE, "pip", "list", "--format", "json").stdout
    installed = {p["name"].lower().replace("_", "-") for p in json.loads(listed)}
    assert installed & dev_names == set(), "test, lint or benchmark tools in the image"
    assert {"dlib-bin", "face-recognition", "face-recognition-models", "faust-streaming"} <= installed
    assert podman("run", "--rm", IMAGE, "id", "-u").stdout.strip() == "10001"
    top = set(podman("run", "--rm", IMAGE, "ls", "/app").stdout.split())
    assert top == {"api", "cli", "common", "ingest", "notify", "recognizer", "schemas", "stream"}


def test_the_services_run_from_the_image_as_compose_and_kubernetes_run_them(
    ready: dict[str, Running], kafka_bootstrap: str, faces_dir: Path
) -> None:
    """Enroll, submit, result, erase: through the four containers only."""
    for r in ready.values():  # non-root, and the root file system is read-only
        assert podman("exec", r.name, "id", "-u").stdout.strip() == "10001"
        assert not exec_ok(r.name, ["touch", "/app/written"])
        assert exec_ok(r.name, ["touch", "/tmp/written"])
    headers = {"X-API-Key": SECRETS["ADMIN_API_KEY"]}
    known = faces_dir / "lfw-dev" / "known" / "Tony_Blair"
    photos = sorted(known.iterdir())[:2]
    with (
        httpx.Client(base_url=ready["api"].url, headers=headers, timeout=60) as api,
        httpx.Client(base_url=ready["ingest"].url, headers=headers, timeout=60) as ingest,
    ):
        person_id = enroll(api, f"Tony Blair {uuid.uuid4().hex[:6]}", photos[0])
        workers = int(ready["recognizer"].compose["environment"]["WORKERS"])
        wait_recognizers_applied(kafka_bootstrap, ready["recognizer"].url, workers)
        [image_id] = submit(ingest, [photos[1]])
        result = wait_final(api, [image_id], timeout=180)[image_id]
        assert result["status"] == "processed", result
        assert [f["person_id"] for f in result["faces"]] == [person_id]

        erased = api.delete(f"/v1/people/{person_id}")
        assert erased.status_code == 200, erased.text
        assert api.get(f"/v1/people/{person_id}").status_code == 404
        until(
            "the erased person is gone from the result",
            lambda: api.get(f"/v1/images/{image_id}").json()["faces"][0]["person_id"] is None,
            60,
        )


def test_each_service_stops_cleanly_after_its_pre_stop_hook(ready: dict[str, Running]) -> None:
    """The preStop hook runs in the image, and SIGTERM ends each service with status 0
    within the manifest's grace period."""
    for r in ready.values():
        pre_stop = r.manifest.get("lifecycle", {}).get("preStop", {}).get("exec")
        if pre_stop:
            assert exec_ok(r.name, pre_stop["command"], timeout=r.grace_s), f"{r.service}: preStop failed"
        podman("stop", "-t", str(r.grace_s), r.name, timeout=r.grace_s + 30)
        code = podman("inspect", "--format", "{{.State.ExitCode}}", r.name).stdout.strip()
        assert code == "0", f"{r.service} exited {code} on SIGTERM\n{logs(r.name)}"
