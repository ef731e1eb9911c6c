"""Production refuses a weak bootstrap admin key at start-up (common/auth.py AuthSettings)."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest
import yaml  # type: ignore[import-untyped]
from pydantic import SecretStr, ValidationError

from api.settings import ApiSettings
from common.auth import ADMIN_KEY_MIN_LENGTH, AuthSettings, admin_key_problem
from ingest.settings import IngestSettings

ROOT = Path(__file__).resolve().parents[2]
STRONG = secrets.token_urlsafe(32)


@pytest.mark.parametrize(
    ("key", "why"),
    [
        ("short-but-random-Xy7", "shorter than"),
        ("dev-admin-key-not-secret", "shorter than"),  # the old committed compose/dev key
        ("dev-admin-key-not-secret-padded-to-be-long-enough", "placeholder"),
        ("fsk-test-admin-key-not-secret-and-then-some-more", "placeholder"),
        ("CHANGE-ME-" + "q" * 40, "placeholder"),
        ("ChangeMe" + STRONG, "placeholder"),
        ("an-example-key-" + STRONG, "placeholder"),
        ("placeholder" + STRONG, "placeholder"),
        ("a" * 64, "not random"),
        ("12341234" * 5, "not random"),
    ],
)
def test_weak_keys_are_named_as_such(key: str, why: str) -> None:
    problem = admin_key_problem(key)
    assert problem is not None
    assert why in problem
    assert key not in problem  # the answer goes to logs: never the key itself


@pytest.mark.parametrize("key", [STRONG, secrets.token_hex(16), "fsk-admin-" + secrets.token_urlsafe(32)])
def test_random_keys_pass(key: str) -> None:
    assert len(key) >= ADMIN_KEY_MIN_LENGTH
    assert admin_key_problem(key) is None


@pytest.mark.parametrize("settings_class", [AuthSettings, IngestSettings, ApiSettings])
def test_production_refuses_a_placeholder_at_start_up(settings_class: type[AuthSettings]) -> None:
    weak = "dev-admin-key-not-secret"
    with pytest.raises(ValidationError) as refused:
        settings_class(environment="production", admin_api_key=SecretStr(weak))
    message = str(refused.value)
    assert "ADMIN_API_KEY" in message
    assert "ENVIRONMENT=production" in message
    assert weak not in message  # a refused key is not printed


def test_production_reads_its_mode_and_key_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENVIRONMENT", "production")
    monkeypatch.setenv("ADMIN_API_KEY", "short")
    with pytest.raises(ValidationError, match="shorter than 32"):
        IngestSettings()
    monkeypatch.setenv("ADMIN_API_KEY", STRONG)
    settings = IngestSettings()
    assert settings.environment == "production"
    assert settings.admin_api_key is not None
    assert settings.admin_api_key.get_secret_value() == STRONG


def test_production_accepts_a_strong_key_or_none() -> None:
    assert AuthSettings(environment="production", admin_api_key=SecretStr(STRONG)).admin_api_key is not None
    # Only stored keys then. (_env_file=None: a compose .env in the checkout must not count.)
    assert AuthSettings(_env_file=None, environment="production").admin_api_key is None  # type: ignore[call-arg]


def test_development_keeps_the_short_test_and_dev_keys() -> None:
    assert AuthSettings(admin_api_key=SecretStr("boot")).environment == "development"
    assert AuthSettings(environment="development", admin_api_key=SecretStr("dev-admin-key-not-secret"))


def test_an_unknown_mode_is_refused() -> None:
    with pytest.raises(ValidationError):
        AuthSettings(environment="prod")  # type: ignore[arg-type]


def test_the_prod_overlay_runs_in_production_mode() -> None:
    kustomization = yaml.safe_load((ROOT / "deploy/k8s/overlays/prod/kustomization.yaml").read_text())
    [config] = [g for g in kustomization["configMapGenerator"] if g["name"] == "facestream-config"]
    assert "ENVIRONMENT=production" in config["literals"]
    dev = yaml.safe_load((ROOT / "deploy/k8s/overlays/dev/kustomization.yaml").read_text())
    dev_literals = [lit for g in dev["configMapGenerator"] for lit in g.get("literals", [])]
    assert "ENVIRONMENT=production" not in dev_literals
