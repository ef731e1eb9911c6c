"""``python -m ingest``: serve the ingest API with uvicorn."""

import uvicorn

from ingest.app import create_app
from ingest.settings import IngestSettings


def main() -> None:
    settings = IngestSettings()
    uvicorn.run(
        create_app(settings),
        host=settings.ingest_host,
        port=settings.ingest_port,
        log_level=settings.log_level.lower(),
        timeout_graceful_shutdown=20,
    )


if __name__ == "__main__":
    main()
