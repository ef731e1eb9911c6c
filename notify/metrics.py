"""Prometheus metrics of notify (served on /metrics by notify.app)."""

from prometheus_client import Counter, Gauge, Histogram

from notify.mqtt import KINDS

#: Final outcomes: delivered (a 2xx), failed (given up after the retry bound), refused
#: (the URL resolved to an address facestream never calls: never sent).
DELIVERIES = Counter(
    "facestream_webhook_deliveries_total", "Webhook deliveries finished, by outcome.", ["outcome"]
)
#: Every attempt: ok, http_error (a non-2xx answer), timeout, connection_error, refused.
ATTEMPTS = Counter("facestream_webhook_attempts_total", "Webhook delivery attempts, by result.", ["result"])
ATTEMPT_SECONDS = Histogram(
    "facestream_webhook_attempt_seconds",
    "Time per delivery attempt.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
CREATED = Counter("facestream_webhook_deliveries_made_total", "Deliveries made from results.", ["event"])
RESULTS = Counter(
    "facestream_webhook_results_total", "Messages read from images.results, by what was done.", ["kind"]
)

#: MQTT (notify.mqtt_link): messages the broker acknowledged (PUBACK), by kind (notify.mqtt.KINDS).
MQTT_PUBLISHED = Counter(
    "facestream_mqtt_messages_published_total", "MQTT messages acknowledged by the broker, by kind.", ["kind"]
)
MQTT_RESULTS = Counter(
    "facestream_mqtt_results_total",
    "Messages read from images.results by the MQTT consumer, by what was done.",
    ["kind"],
)
MQTT_CONNECTED = Gauge("facestream_mqtt_connected", "1 while notify is connected to the MQTT broker.")
#: ``connect``: a connection failed or was lost (reconnected with backoff); ``publish``: a
#: result's messages were not all acknowledged, or there was no connection to publish on
#: (published again).
MQTT_ERRORS = Counter("facestream_mqtt_errors_total", "MQTT failures, by stage.", ["stage"])

# Known label values start at 0 (alerts cannot tell "none yet" from "not scraped").
for _outcome in ("delivered", "failed", "refused"):
    DELIVERIES.labels(_outcome)
for _result in ("ok", "http_error", "timeout", "connection_error", "refused"):
    ATTEMPTS.labels(_result)
for _event in ("face.identified", "face.unknown", "image.failed"):
    CREATED.labels(_event)
for _kind in ("planned", "skipped"):
    RESULTS.labels(_kind)
for _kind in KINDS:
    MQTT_PUBLISHED.labels(_kind)
for _kind in ("published", "skipped"):
    MQTT_RESULTS.labels(_kind)
for _stage in ("connect", "publish"):
    MQTT_ERRORS.labels(_stage)
