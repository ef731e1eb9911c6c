"""The door's rules that need no server: which requests look cross-site, which body limit
applies, and that the limits fit the volumes that spool uploads. (The door itself, in
front of the running services: tests/integration/test_door.py.)"""

from __future__ import annotations

import base64
import re
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]
from pydantic import ValidationError
from starlette.datastructures import Headers

from api.settings import ApiSettings
from common.auth import credentials_from
from common.door import BodyLimits, cross_site
from ingest.settings import IngestSettings

ROOT = Path(__file__).resolve().parents[2]
BASIC = {"authorization": "Basic " + base64.b64encode(b"anyone:fsk_x").decode()}


def _check(method: str, **headers: str) -> str | None:
    h = Headers(headers={"host": "results.example:8001", **headers})
    return cross_site(method, h, credentials_from(h))


def test_basic_credentials_are_for_safe_methods_only() -> None:
    for method in ("GET", "HEAD", "OPTIONS"):
        assert _check(method, **BASIC) is None
    for method in ("POST", "PUT", "PATCH", "DELETE"):
        reason = _check(method, **BASIC)
        assert reason is not None
        assert "Basic" in reason
        assert "X-API-Key" in reason
    assert _check("POST", **{"x-api-key": "fsk_x"}) is None
    assert _check("DELETE", authorization="Bearer fsk_x") is None


def test_the_pages_buttons_may_change_state_with_the_browsers_login() -> None:
    """A page's script sends X-Requested-With, which no form and no other origin's page can
    (a custom header needs the CORS permission never given)."""
    same = {**BASIC, "x-requested-with": "facestream", "sec-fetch-site": "same-origin"}
    for method in ("POST", "PATCH", "DELETE"):
        assert _check(method, **same) is None
    assert _check("POST", **{**same, "sec-fetch-site": "cross-site"}) is not None
    assert _check("POST", **{**same, "origin": "https://evil.example"}) is not None


@pytest.mark.parametrize(
    "signals",
    [
        {"origin": "https://evil.example"},
        {"origin": "null"},
        {"origin": "http://[::1"},
        {"origin": "http://results.example:8002"},
        {"sec-fetch-site": "cross-site"},
        {"sec-fetch-site": "same-site"},
        {"origin": "http://results.example:8001", "sec-fetch-site": "cross-site"},
    ],
)
def test_state_changing_requests_with_signs_of_another_origin_are_refused(signals: dict[str, str]) -> None:
    assert _check("POST", **{"x-api-key": "fsk_x", **signals}) is not None
    assert _check("GET", **{"x-api-key": "fsk_x", **signals}) is None  # a link from elsewhere is fine


@pytest.mark.parametrize(
    "signals",
    [
        {"origin": "http://results.example:8001"},
        {"origin": "HTTP://Results.Example:8001"},
        {"sec-fetch-site": "same-origin"},
        {"sec-fetch-site": "none"},
        {},
    ],
)
def test_same_origin_and_non_browser_requests_pass(signals: dict[str, str]) -> None:
    assert _check("POST", **{"x-api-key": "fsk_x", **signals}) is None


def test_default_ports_match_a_host_without_one() -> None:
    h = Headers(headers={"host": "results.example", "origin": "https://results.example:443"})
    assert cross_site("POST", h, None) is None


def test_only_multipart_bodies_get_the_upload_limit() -> None:
    limits = BodyLimits(upload=1000, other=10)
    assert limits.of(Headers(headers={"content-type": "multipart/form-data; boundary=x"}))[0] == 1000
    assert limits.of(Headers(headers={"content-type": "application/json"})) == (10, "JSON body")
    for other in ("application/x-www-form-urlencoded", "text/plain", ""):
        assert limits.of(Headers(headers={"content-type": other}))[0] == 10


def _tmp_size_limit(manifest: str) -> int:
    """The sizeLimit of the /tmp emptyDir in deploy/k8s/base/<manifest>, in bytes."""
    docs = list(yaml.safe_load_all((ROOT / "deploy" / "k8s" / "base" / manifest).read_text()))
    [deployment] = [d for d in docs if d and d["kind"] == "Deployment"]
    pod: dict[str, Any] = deployment["spec"]["template"]["spec"]
    [mount] = [m for c in pod["containers"] for m in c.get("volumeMounts", []) if m["mountPath"] == "/tmp"]
    [volume] = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    match = re.fullmatch(r"(\d+)(Mi|Gi)", volume["emptyDir"]["sizeLimit"])
    assert match, volume
    return int(match[1]) * {"Mi": 1024 * 1024, "Gi": 1024 * 1024 * 1024}[match[2]]


@pytest.mark.parametrize(
    ("settings", "manifest"), [(IngestSettings, "ingest.yaml"), (ApiSettings, "api.yaml")]
)
def test_the_body_limits_fit_the_volume_that_spools_uploads(settings: Any, manifest: str) -> None:
    fields = settings.model_fields
    spool = _tmp_size_limit(manifest)
    assert fields["max_request_bytes"].default * 4 <= spool  # four requests at the limit at once
    assert fields["max_json_bytes"].default < fields["max_request_bytes"].default


def test_a_request_limit_below_one_image_fails_at_start_up() -> None:
    with pytest.raises(ValidationError, match="MAX_REQUEST_BYTES"):
        IngestSettings(max_image_bytes=10, max_request_bytes=10)
    with pytest.raises(ValidationError, match="MAX_REQUEST_BYTES"):
        ApiSettings(enroll_max_bytes=10, max_request_bytes=5)
