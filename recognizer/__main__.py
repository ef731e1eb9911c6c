"""``python -m recognizer [--workers N]``: run N recognizer processes (see recognizer.pool)."""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import signal
import tempfile

from common.kafka import ensure_topics
from recognizer.pool import Supervisor, serve_ops
from recognizer.settings import RecognizerSettings


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m recognizer", description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, help="processes to run (default: WORKERS or the core count)")
    parser.add_argument("--metrics-port", type=int, help="port of /metrics, /healthz, /readyz")
    args = parser.parse_args()
    overrides = {k: v for k, v in {"workers": args.workers, "metrics_port": args.metrics_port}.items() if v}
    settings = RecognizerSettings(**overrides)
    logging.basicConfig(level=settings.log_level, format="%(asctime)s recognizer %(levelname)s %(message)s")
    # Each worker writes its metrics to files here; the supervisor's /metrics sums them.
    own_dir = "PROMETHEUS_MULTIPROC_DIR" not in os.environ
    if own_dir:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="facestream-recognizer-metrics-")
    ensure_topics(settings.librdkafka())
    sup = Supervisor(settings)

    def on_signal(*_: object) -> None:
        sup.stopping = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    server = serve_ops(sup, settings.metrics_host, settings.metrics_port)
    logging.info(
        "starting %d recognizer processes; ops on %s:%d",
        settings.workers,
        settings.metrics_host,
        settings.metrics_port,
    )
    try:
        return sup.run()
    finally:
        server.shutdown()
        if own_dir:
            shutil.rmtree(os.environ["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
