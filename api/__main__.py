"""``python -m api``: serve the results API with uvicorn on the settings' host and port."""

from __future__ import annotations

import logging

import uvicorn

from api.app import create_app
from api.settings import ApiSettings


def main() -> None:
    settings = ApiSettings()
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Uvicorn handles SIGTERM: it stops accepting, finishes in-flight requests, then runs
    # the lifespan's shutdown (producer flush, pool close).
    uvicorn.run(
        create_app(settings),
        host=settings.api_host,
        port=settings.api_port,
        log_level=settings.log_level.lower(),
        timeout_graceful_shutdown=20,
    )


# The guard matters: the enrollment pool's "spawn" workers import this module again.
if __name__ == "__main__":
    main()
