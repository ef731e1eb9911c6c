"""``python -m notify``: deliver recognitions to webhooks and MQTT (see notify.app)."""

from __future__ import annotations

from common.http import serve
from notify.app import create_app
from notify.settings import NotifySettings


def main() -> None:
    settings = NotifySettings()
    serve(create_app(settings), settings.notify_host, settings.notify_port, settings.log_level)


if __name__ == "__main__":
    main()
