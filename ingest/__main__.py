"""``python -m ingest``: serve the ingest API on the settings' host and port."""

from common.http import serve
from ingest.app import create_app
from ingest.settings import IngestSettings


def main() -> None:
    settings = IngestSettings()
    serve(create_app(settings), settings.ingest_host, settings.ingest_port, settings.log_level)


if __name__ == "__main__":
    main()
