"""``python -m stream``: run the Faust worker (dispatch, retries, projector).

Topics are created first (explicit partitions, retention, compaction), then the worker
starts; extra arguments go to Faust (default ``worker -l info``).
"""

from __future__ import annotations

import faulthandler
import sys
from typing import Any

from common.kafka import ensure_topics
from stream.app import create_app
from stream.settings import StreamSettings


def main() -> None:
    settings = StreamSettings()
    ensure_topics(settings.librdkafka())
    app = create_app(settings)

    @app.on_before_shutdown.connect
    async def exit_soon(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        # Sent once the consumer has stopped and committed. Should anything after that
        # hang (a library thread), dump every thread's stack and exit within the pod's
        # grace period rather than wait for SIGKILL.
        faulthandler.dump_traceback_later(10.0, exit=True, file=2)  # fd 2: mode wraps sys.stderr

    argv = sys.argv[1:] or ["worker", "-l", settings.log_level.lower()]
    sys.argv = [sys.argv[0], *argv]
    app.main()


if __name__ == "__main__":
    main()
