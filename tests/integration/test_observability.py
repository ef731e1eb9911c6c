"""Metrics, dashboards and alert rules against the running platform.

A Prometheus server (Debian's ``prometheus`` package) runs on loopback, scraping the
five services every second and loading deploy/prometheus/alerts.yml. Real images go
through the platform (a known person, a stranger, a photo without a face, a file that is
no image, an unreadable event on the broker), and then:

- every query of every dashboard in deploy/grafana/dashboards returns data;
- ``promtool check metrics`` finds nothing to say about any service's /metrics;
- the consumer lag covers every partition of each group's topics, and drains to 0;
- every alert rule evaluates without error, and the dead letter fires its alert.

Nothing is skipped: without promtool or prometheus the tests fail and say what to install.
"""

from __future__ import annotations

import csv
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml  # type: ignore[import-untyped]
from confluent_kafka import Consumer, Producer, TopicPartition
from prometheus_client import REGISTRY

from schemas import topics
from stream import metrics as stream_metrics
from stream.app import create_app
from stream.settings import StreamSettings
from tests.deploy.test_prometheus_rules import (
    BUILTIN_INTERVALS,
    RULES,
    label_of,
    load_dashboards,
    queries,
    substitute,
    variable_query,
    variables,
)
from tests.e2e.test_lfw import enroll, submit, wait_final
from tests.platform import LOGS, Platform, wait_gallery_applied

#: The recognizers' group whose lag the stream exports (StreamSettings.recognizer_group_id).
RECOGNIZER_GROUP: str = StreamSettings.model_fields["recognizer_group_id"].default

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

INSTALL = "apt-get install --no-install-recommends prometheus (scripts/install.sh installs it)"
#: How long the metrics may take to show what happened: the lag is read every 15 s.
SETTLE_S = 120.0


def binary(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} not found: it comes with Debian's prometheus package; {INSTALL}")
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Prometheus:
    url: str

    def query(self, expr: str) -> list[dict[str, Any]]:
        r = httpx.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=30)
        assert r.status_code == 200, f"{expr}: {r.text}"
        data = r.json()["data"]
        if data["resultType"] in ("scalar", "string"):
            return [{"metric": {}, "value": data["result"]}]
        result: list[dict[str, Any]] = data["result"]
        return result

    def label_values(self, label: str, selector: str) -> list[str]:
        r = httpx.get(f"{self.url}/api/v1/label/{label}/values", params={"match[]": selector}, timeout=30)
        assert r.status_code == 200, r.text
        values: list[str] = r.json()["data"]
        return values

    def get(self, path: str) -> Any:
        r = httpx.get(f"{self.url}{path}", timeout=30)
        assert r.status_code == 200, r.text
        return r.json()["data"]


def metrics_urls(platform: Platform) -> dict[str, str]:
    return {
        "ingest": platform.ingest_url,
        "api": platform.api_url,
        "stream": platform.stream_url,
        "recognizer": platform.recognizer_url,
        "notify": platform.notify_url,
    }


@pytest.fixture(scope="module")
def prometheus(platform: Platform, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus]:
    """Prometheus on a free loopback port, scraping the platform every second."""
    server, _ = binary("prometheus"), binary("promtool")
    folder = tmp_path_factory.mktemp("prometheus")
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(RULES)],
        "scrape_configs": [
            {"job_name": name, "static_configs": [{"targets": [url.removeprefix("http://")]}]}
            for name, url in metrics_urls(platform).items()
        ],
    }
    (folder / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    LOGS.mkdir(parents=True, exist_ok=True)
    with (LOGS / "prometheus.log").open("ab") as log:
        proc = subprocess.Popen(
            [
                server,
                f"--config.file={folder / 'prometheus.yml'}",
                f"--storage.tsdb.path={folder / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--log.level=warn",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, (
                f"prometheus exited with {proc.returncode}; see {LOGS / 'prometheus.log'}"
            )
            try:
                if httpx.get(f"{url}/-/ready", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, f"prometheus not ready; see {LOGS / 'prometheus.log'}"
            time.sleep(0.5)
        yield Prometheus(url)
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclass(frozen=True)
class Traffic:
    image_ids: list[str]


@pytest.fixture(scope="module")
def traffic(platform: Platform, prometheus: Prometheus, faces_dir: Path) -> Iterator[Traffic]:
    """Drive real work through the platform once Prometheus watches it."""
    lfw = faces_dir / "lfw-dev"
    by_person: dict[str, list[Path]] = {}
    strangers: list[Path] = []
    with (lfw / "manifest.csv").open() as fh:
        for row in csv.DictReader(fh):
            if row["set"] == "known":
                by_person.setdefault(row["name"], []).append(lfw / row["path"])
            else:
                strangers.append(lfw / row["path"])
    person = sorted(n for n, photos in by_person.items() if len(photos) >= 3)[0]
    photos = sorted(by_person[person])
    no_face = faces_dir / "extras" / "no_face" / "dlib_horses.jpg"
    with (
        httpx.Client(headers=platform.headers, base_url=platform.api_url, timeout=60) as api,
        httpx.Client(headers=platform.headers, base_url=platform.ingest_url, timeout=60) as ingest,
    ):
        person_id = enroll(api, person, photos[0])
        wait_gallery_applied(platform)
        ids = submit(ingest, [*photos[1:3], sorted(strangers)[0], no_face])
        refused = ingest.post("/v1/images", files=[("files", ("notes.jpg", b"not an image at all"))])
        assert refused.status_code == 415, refused.text
        # A method outside the known set must count as "other", not as a new label value.
        ingest.request("BREW", "/v1/images")
        # An unreadable event on the broker: the stream dead-letters it (invalid_event).
        # First make sure Prometheus holds the counter's value from before, or the
        # increase the alert looks for could fall before its first sample.
        _wait_for(prometheus, DEAD_INVALID, "the stream's dead-letter counter is not scraped")
        producer = Producer({"bootstrap.servers": platform.env["KAFKA_BOOTSTRAP_SERVERS"]})
        producer.produce(topics.SUBMITTED, key=b"observability-poison", value=b"this is no event")
        assert producer.flush(30) == 0, "the poison message was not delivered"
        wait_final(api, list(ids), timeout=300)
    yield Traffic(list(ids))
    with httpx.Client(headers=platform.headers, base_url=platform.api_url, timeout=60) as api:
        # later tests enroll the same person: two of them would make each other ambiguous
        assert api.delete(f"/v1/people/{person_id}").status_code == 200


def live_values(prometheus: Prometheus, dashboard: dict[str, Any]) -> tuple[dict[str, str], list[str]]:
    """What Grafana would put in place of each variable (the "All" of a query variable),
    and the variables whose query found nothing."""
    values = dict(BUILTIN_INTERVALS)
    empty = []
    for name, variable in variables(dashboard).items():
        selector = variable_query(variable)
        if selector is None:
            values[name] = name
            continue
        found = prometheus.label_values(label_of(variable), selector)
        if not found:
            empty.append(f"{dashboard['uid']}: variable {name} ({selector}) has no values")
        values[name] = variable.get("allValue") or "|".join(found)
    return values, empty


def test_every_dashboard_query_returns_data(prometheus: Prometheus, traffic: Traffic) -> None:
    deadline = time.monotonic() + SETTLE_S
    while True:
        no_data = []
        for dashboard in load_dashboards().values():
            values, empty = live_values(prometheus, dashboard)
            no_data += empty
            for q in queries(dashboard):
                if q.where.startswith("variable "):
                    continue  # checked through label_values above
                expr = substitute(q.expr, values)
                if not prometheus.query(expr):
                    no_data.append(f"{q.dashboard}: {q.where}: {expr}")
        if not no_data or time.monotonic() > deadline:
            break
        time.sleep(5)
    assert no_data == [], "queries without data:\n" + "\n".join(no_data)


def test_every_target_is_scraped(prometheus: Prometheus, traffic: Traffic) -> None:
    targets = prometheus.get("/api/v1/targets")["activeTargets"]
    assert {t["labels"]["job"]: t["health"] for t in targets} == {
        "ingest": "up",
        "api": "up",
        "stream": "up",
        "recognizer": "up",
        "notify": "up",
    }, [(t["labels"]["job"], t.get("lastError")) for t in targets]


@pytest.mark.parametrize("service", ["ingest", "api", "stream", "recognizer", "notify"])
def test_promtool_accepts_the_live_metrics(platform: Platform, traffic: Traffic, service: str) -> None:
    scrape = httpx.get(f"{metrics_urls(platform)[service]}/metrics", timeout=30)
    assert scrape.status_code == 200
    done = subprocess.run(
        [binary("promtool"), "check", "metrics"],
        input=scrape.text,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (done.returncode, done.stdout + done.stderr) == (0, ""), done.stdout + done.stderr
    if service == "ingest":
        assert 'method="BREW"' not in scrape.text, "a client's method became a label value"
        assert 'method="other"' in scrape.text


def test_consumer_lag_covers_every_partition_and_drains(prometheus: Prometheus, traffic: Traffic) -> None:
    stream_group = StreamSettings().stream_app_id
    expected = {(RECOGNIZER_GROUP, t): topics.BY_NAME[t].partitions for t in topics.RECOGNIZER_INPUTS} | {
        (stream_group, t): topics.BY_NAME[t].partitions for t in stream_metrics.STREAM_INPUTS
    }
    # The lag is read every 15 s: wait until a read after the traffic (the end offsets
    # count it) shows every group caught up, lest a read from before it pass for one.
    at_least = len(traffic.image_ids) + 1  # the images submitted here and the poison message
    deadline = time.monotonic() + SETTLE_S
    while True:
        counts = {
            (r["metric"]["group"], r["metric"]["topic"]): int(float(r["value"][1]))
            for r in prometheus.query("count by (group, topic) (facestream_consumer_lag_messages)")
        }
        lag = {
            r["metric"]["group"]: float(r["value"][1])
            for r in prometheus.query("sum by (group) (facestream_consumer_lag_messages)")
        }
        ends = prometheus.query(f'sum(facestream_kafka_partition_end_offset{{topic="{topics.SUBMITTED}"}})')
        submitted = float(ends[0]["value"][1]) if ends else 0.0
        caught_up = lag == {RECOGNIZER_GROUP: 0.0, stream_group: 0.0}
        if (counts == expected and submitted >= at_least and caught_up) or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert counts == expected, "one series per partition of each group's topics"
    assert submitted >= at_least, f"end offsets of {topics.SUBMITTED}: {submitted}, not the traffic's"
    assert caught_up, f"every image is done, yet the lag is {lag}"


def test_lag_is_end_offset_minus_committed(kafka_bootstrap: str, traffic: Traffic) -> None:
    """The exporter against the real broker, with a group of its own that has consumed
    nothing, then one partition of it committed to its end."""
    group = f"observability-{uuid.uuid4().hex[:8]}"
    conf = {"bootstrap.servers": kafka_bootstrap}
    exporter = stream_metrics.ConsumerLagExporter(conf, {group: (topics.SUBMITTED,)})
    lag, ends = exporter.read()
    partitions = topics.BY_NAME[topics.SUBMITTED].partitions
    assert len(lag) == partitions
    # Nothing committed: everything retained is to be read (the topic keeps 7 days).
    assert {p: n for (_, _, p), n in lag.items()} == {
        p: n for (t, p), n in ends.items() if t == topics.SUBMITTED
    }
    busy = next(p for (t, p), n in ends.items() if t == topics.SUBMITTED and n > 0)
    consumer = Consumer({**conf, "group.id": group, "enable.auto.commit": False})
    try:
        consumer.commit(
            offsets=[TopicPartition(topics.SUBMITTED, int(busy), ends[(topics.SUBMITTED, busy)])],
            asynchronous=False,
        )
    finally:
        consumer.close()
    exporter.update()
    sample = {"group": group, "topic": topics.SUBMITTED, "partition": busy}
    assert REGISTRY.get_sample_value("facestream_consumer_lag_messages", sample) == 0
    assert (
        sum(
            REGISTRY.get_sample_value("facestream_consumer_lag_messages", {**sample, "partition": str(p)})
            or 0
            for p in range(partitions)
        )
        == sum(lag.values()) - lag[(group, topics.SUBMITTED, busy)]
    )
    # A group no longer watched loses its series (they would otherwise stay at their last value).
    exporter.groups = {}
    exporter.update()
    assert REGISTRY.get_sample_value("facestream_consumer_lag_messages", sample) is None


def test_lag_read_failure_is_counted_not_raised() -> None:
    before = REGISTRY.get_sample_value("facestream_consumer_lag_errors_total") or 0
    exporter = stream_metrics.ConsumerLagExporter(
        {"bootstrap.servers": f"127.0.0.1:{free_port()}"}, {"nobody": (topics.SUBMITTED,)}, timeout=1
    )
    exporter.update()  # nothing listens there
    assert REGISTRY.get_sample_value("facestream_consumer_lag_errors_total") == before + 1


DEAD_INVALID = 'facestream_stream_dead_letters_total{reason="invalid_event"}'


def _wait_for(prometheus: Prometheus, expr: str, failure: str) -> None:
    deadline = time.monotonic() + SETTLE_S
    while not prometheus.query(expr):
        assert time.monotonic() < deadline, f"{failure} ({expr} empty after {SETTLE_S:.0f} s)"
        time.sleep(1)


def test_alert_rules_evaluate_and_the_dead_letter_fires(prometheus: Prometheus, traffic: Traffic) -> None:
    _wait_for(prometheus, f"increase({DEAD_INVALID}[10m]) > 0", "the poison event was not dead-lettered")
    deadline = time.monotonic() + SETTLE_S
    while True:
        firing = {
            (a["labels"]["alertname"], a["labels"].get("reason"))
            for a in prometheus.get("/api/v1/alerts")["alerts"]
            if a["state"] == "firing"
        }
        if ("FacestreamDeadLetters", "invalid_event") in firing or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert ("FacestreamDeadLetters", "invalid_event") in firing
    assert ("FacestreamNoRecognizer", None) not in firing
    rules = [r for g in prometheus.get("/api/v1/rules")["groups"] for r in g["rules"]]
    assert rules, "no rules loaded"
    assert [(r["name"], r.get("lastError")) for r in rules if r["health"] != "ok"] == []


def test_lag_exporter_follows_the_services() -> None:
    """The exported groups and topics are those the services really use."""
    from recognizer.settings import RecognizerSettings  # loads dlib: only here

    assert RecognizerSettings.model_fields["recognizer_group_id"].default == RECOGNIZER_GROUP
    app = create_app(StreamSettings())
    consumed = {t for agent in app.agents.values() for t in agent.channel.topics}
    assert consumed == set(stream_metrics.STREAM_INPUTS)
