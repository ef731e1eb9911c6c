"""``python -m stream``: run the Faust worker (dispatch, retries, projector).

Topics are created first (explicit partitions, retention, compaction), then the worker
starts; extra arguments go to Faust (default ``worker -l info``).
"""

from __future__ import annotations

import sys

from common.kafka import ensure_topics
from stream.app import create_app
from stream.settings import StreamSettings


def main() -> None:
    settings = StreamSettings()
    ensure_topics(settings.librdkafka())
    app = create_app(settings)
    argv = sys.argv[1:] or ["worker", "-l", settings.log_level.lower()]
    sys.argv = [sys.argv[0], *argv]
    app.main()


if __name__ == "__main__":
    main()
