"""``python -m api``: serve the results API on the settings' host and port."""

from __future__ import annotations

from api.app import create_app
from api.settings import ApiSettings
from common.http import serve


def main() -> None:
    settings = ApiSettings()
    serve(create_app(settings), settings.api_host, settings.api_port, settings.log_level)


if __name__ == "__main__":
    main()
