"""notify: delivers recognitions to webhooks (signed) and, with MQTT_URL, to an MQTT broker
with Home Assistant discovery; at least once (see notify.app)."""
