"""The recognizer pool: N worker processes under one supervisor, plus its ops endpoints.

The supervisor restarts a worker that dies (its unacknowledged image is redone by the
group), forwards SIGTERM so each worker finishes its current image and commits, and
serves the pool's ``/metrics`` (all workers, Prometheus multiprocess mode), ``/healthz``
and ``/readyz`` (every worker alive and its gallery loaded).
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import signal
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from multiprocessing.process import BaseProcess
from multiprocessing.synchronize import Event

from recognizer.settings import RecognizerSettings


def _worker_main(index: int, ready: Event, overrides: dict[str, object]) -> None:
    from recognizer.worker import Worker  # imported in the child: dlib loads per process

    settings = RecognizerSettings(**overrides)  # type: ignore[arg-type]
    logging.basicConfig(
        level=settings.log_level, format=f"%(asctime)s worker-{index} %(levelname)s %(message)s"
    )
    worker = Worker(settings, name=f"{os.uname().nodename}:w{index}:{os.getpid()}")
    worker.run(on_ready=ready.set)


class Supervisor:
    def __init__(self, settings: RecognizerSettings) -> None:
        self.settings = settings
        self.ctx = mp.get_context("spawn")
        self.procs: dict[int, tuple[BaseProcess, Event]] = {}
        self.started_at: dict[int, float] = {}
        self.quick_deaths: dict[int, int] = {}
        self.stopping = False

    def start(self, index: int) -> None:
        ready = self.ctx.Event()
        overrides = self.settings.model_dump(exclude_unset=True)
        proc = self.ctx.Process(
            target=_worker_main, args=(index, ready, overrides), name=f"recognizer-{index}"
        )
        proc.start()
        self.procs[index] = (proc, ready)
        self.started_at[index] = time.monotonic()

    def ready(self) -> bool:
        return not self.stopping and all(p.is_alive() and r.is_set() for p, r in self.procs.values())

    def run(self) -> int:
        # One core per worker: the processes already use every core, so BLAS threads in
        # each (numpy's matching) would only oversubscribe them. Read by the children,
        # which load numpy after they are spawned.
        for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ.setdefault(var, "1")
        for i in range(self.settings.workers):
            self.start(i)
        restart_at: dict[int, float] = {}
        while not self.stopping:
            now = time.monotonic()
            for i, (proc, _) in list(self.procs.items()):
                if proc.is_alive() or i in restart_at:
                    continue
                _mark_dead(proc.pid)
                # A worker that dies soon after starting (broker unreachable, bad
                # settings) is restarted with a growing delay, not in a tight loop.
                lived = now - self.started_at[i]
                self.quick_deaths[i] = self.quick_deaths.get(i, 0) + 1 if lived < 30 else 0
                delay = min(30.0, 0.5 * 2 ** self.quick_deaths[i]) if self.quick_deaths[i] else 0.0
                logging.warning("worker %d exited with %s; restarting it in %.1fs", i, proc.exitcode, delay)
                restart_at[i] = now + delay
            for i, when in list(restart_at.items()):
                if now >= when:
                    del restart_at[i]
                    self.start(i)
            time.sleep(0.5)
        for proc, _ in self.procs.values():
            if proc.is_alive() and proc.pid:
                os.kill(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 60
        for proc, _ in self.procs.values():
            proc.join(max(0.1, deadline - time.monotonic()))
            if proc.is_alive():
                proc.kill()
        return 0


def _mark_dead(pid: int | None) -> None:
    if pid is not None and os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]


def serve_ops(sup: Supervisor, host: str, port: int) -> ThreadingHTTPServer:
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest, multiprocess

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/metrics":
                registry = CollectorRegistry()
                multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
                body, ctype, code = generate_latest(registry), CONTENT_TYPE_LATEST, 200
            elif self.path == "/healthz":
                body, ctype, code = b'{"status":"ok"}', "application/json", 200
            elif self.path == "/readyz":
                ok = sup.ready()
                body = b'{"ready":true}' if ok else b'{"ready":false}'
                ctype, code = "application/json", 200 if ok else 503
            else:
                body, ctype, code = b'{"detail":"not found"}', "application/json", 404
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer((host, port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True, name="ops-http").start()
    return server
