"""notify's one settings object (environment variables, prefix-free)."""

from __future__ import annotations

from typing import Self

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from common.settings import DatabaseSettings, ServiceSettings
from notify.deliveries import RetryPolicy
from notify.mqtt import BrokerAddress, MqttUrlError, Topics, check_prefix, parse_url


class NotifySettings(ServiceSettings, DatabaseSettings):
    # A refused value is not echoed: MQTT_URL and DATABASE_URL carry passwords.
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", frozen=True, hide_input_in_errors=True)

    notify_group_id: str = Field(
        default="facestream-notify",
        description="notify's own consumer group on images.results (a prefix of schemas/access.py).",
    )
    notify_host: str = "127.0.0.1"
    notify_port: int = Field(default=6070, description="/metrics, /healthz, /readyz of notify.")
    webhook_allow_private: bool = Field(
        default=True,
        description="Deliver to private and loopback addresses (self-hosted receivers). Link-local and "
        "cloud metadata addresses are refused whatever this says.",
    )
    webhook_timeout_s: float = Field(default=10.0, gt=0, le=300, description="Per-request timeout.")
    webhook_max_attempts: int = Field(default=8, ge=1, le=100, description="Attempts, then given up.")
    webhook_retry_base_s: float = Field(
        default=5.0, gt=0, description="Backoff: attempt n is retried after base * 2^(n-1) seconds."
    )
    webhook_retry_max_s: float = Field(default=900.0, gt=0, description="Longest wait between attempts.")
    webhook_max_age_s: float = Field(
        default=3600.0, gt=0, description="A delivery not delivered this long after it was made is given up."
    )
    webhook_concurrency: int = Field(
        default=64, ge=1, description="Requests in flight, all webhooks together."
    )
    webhook_per_hook_concurrency: int = Field(
        default=4,
        ge=1,
        description="Requests in flight to one webhook: a slow receiver holds at most this many,"
        " never the others' slots.",
    )
    webhook_poll_s: float = Field(default=0.25, gt=0, description="How often due deliveries are looked for.")
    notify_drain_s: float = Field(
        default=10.0, ge=0, description="At shutdown, how long requests in flight may take to finish."
    )

    mqtt_url: SecretStr | None = Field(
        default=None,
        description="Publish recognitions to this MQTT broker (and Home Assistant's discovery): "
        "mqtt://[user:password@]host[:port] (1883), or mqtts:// for TLS (8883). Unset: no MQTT.",
    )
    mqtt_topic_prefix: str = Field(default="facestream", description="The first level of every topic.")
    mqtt_discovery_prefix: str = Field(
        default="homeassistant", description="Home Assistant's MQTT discovery prefix."
    )
    mqtt_group_id: str = Field(
        default="facestream-notify-mqtt",
        description="MQTT's own consumer group on images.results (webhooks and MQTT never wait for "
        "each other); a prefix of schemas/access.py.",
    )
    mqtt_client_id: str | None = Field(
        default=None, description="The MQTT client id; unset: a random one (each replica its own)."
    )
    mqtt_ca_file: str | None = Field(
        default=None,
        description="mqtts:// only: the CA bundle to check the broker with (default: the system's).",
    )
    mqtt_timeout_s: float = Field(
        default=10.0, gt=0, le=300, description="How long to wait for the broker (connect, PUBACK)."
    )
    mqtt_reconnect_max_s: float = Field(
        default=30.0, gt=0, description="Reconnecting backs off from 0.5 s up to this."
    )
    mqtt_max_cameras: int = Field(
        default=1000,
        ge=0,
        description="Cameras of stored images announced to Home Assistant at start (others are "
        "announced when next seen).",
    )

    @field_validator("mqtt_url")
    @classmethod
    def _mqtt_url(cls, v: SecretStr | None) -> SecretStr | None:
        if v is None or not v.get_secret_value().strip():
            return None
        try:
            parse_url(v.get_secret_value())
        except MqttUrlError as exc:
            raise ValueError(f"MQTT_URL: {exc}") from None
        return v

    @field_validator("mqtt_topic_prefix", "mqtt_discovery_prefix")
    @classmethod
    def _prefix(cls, v: str) -> str:
        return check_prefix(v)

    @model_validator(mode="after")
    def _backoff_fits(self) -> Self:
        if self.webhook_retry_max_s < self.webhook_retry_base_s:
            raise ValueError("WEBHOOK_RETRY_MAX_S must be at least WEBHOOK_RETRY_BASE_S")
        return self

    def retry_policy(self) -> RetryPolicy:
        return RetryPolicy(
            max_attempts=self.webhook_max_attempts,
            base_delay_s=self.webhook_retry_base_s,
            max_delay_s=self.webhook_retry_max_s,
            max_age_s=self.webhook_max_age_s,
        )

    def mqtt_broker(self) -> BrokerAddress | None:
        """Where to publish, or None: MQTT is off."""
        return parse_url(self.mqtt_url.get_secret_value()) if self.mqtt_url else None

    def mqtt_topics(self) -> Topics:
        return Topics(self.mqtt_topic_prefix, self.mqtt_discovery_prefix)
