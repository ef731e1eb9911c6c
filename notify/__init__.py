"""notify: delivers recognitions to webhooks, signed and at least once (see notify.app)."""
