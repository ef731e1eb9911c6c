"""The recognizer pool: N worker processes under one supervisor, plus its ops endpoints.

The supervisor owns the pool's one Kafka consumer and producer (:mod:`recognizer.dispatch`)
and hands each image to the next free worker process (:func:`recognizer.worker.serve`).
It restarts a worker that dies (its image goes to another worker), stops on SIGTERM once
the images in the workers' hands are delivered and committed, and serves the pool's
``/metrics`` (all workers, Prometheus multiprocess mode), ``/healthz`` and ``/readyz``
(every worker alive with its gallery loaded, and the consumer running).
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing as mp
import os
import threading
import time
from dataclasses import dataclass
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from multiprocessing.synchronize import Event

from recognizer.dispatch import Dispatcher
from recognizer.settings import RecognizerSettings


def _worker_main(index: int, conn: Connection, ready: Event, overrides: dict[str, object]) -> None:
    from recognizer.worker import serve  # imported in the child: dlib loads per process

    settings = RecognizerSettings(**overrides)  # type: ignore[arg-type]
    logging.basicConfig(
        level=settings.log_level, format=f"%(asctime)s worker-{index} %(levelname)s %(message)s"
    )
    serve(conn, ready.set, settings, name=f"{os.uname().nodename}:w{index}:{os.getpid()}")


@dataclass
class Slot:
    """One worker process of the pool and the parent's end of its pipe."""

    proc: BaseProcess
    conn: Connection
    ready: Event
    started_at: float


class Supervisor:
    """Runs ``settings.workers`` processes, feeds them through one :class:`Dispatcher`, and
    restarts a process that dies (with a growing delay when they die young)."""

    def __init__(self, settings: RecognizerSettings) -> None:
        self.settings = settings
        self.ctx = mp.get_context("spawn")
        self.slots: dict[int, Slot] = {}
        self.changed = threading.Condition()
        self.quick_deaths: dict[int, int] = {}
        self.stopping = False
        self.dispatcher: Dispatcher | None = None

    def start(self, index: int) -> None:
        ready = self.ctx.Event()
        parent, child = self.ctx.Pipe()
        overrides = self.settings.model_dump(exclude_unset=True)
        proc = self.ctx.Process(
            target=_worker_main, args=(index, child, ready, overrides), name=f"recognizer-{index}"
        )
        proc.start()
        child.close()
        with self.changed:
            self.slots[index] = Slot(proc, parent, ready, time.monotonic())
            self.changed.notify_all()

    def ready(self) -> bool:
        return (
            not self.stopping
            and self.dispatcher is not None
            and all(s.proc.is_alive() and s.ready.is_set() for s in self.slots.values())
        )

    def _feed(self, index: int, dispatcher: Dispatcher) -> None:
        """Hand images to worker ``index`` (and to its successors) until the pool stops."""
        while not dispatcher.stopping.is_set():
            with self.changed:
                slot = self.slots[index]
            if not slot.ready.wait(0.5):
                continue
            if dispatcher.serve_worker(slot.conn):
                return
            with self.changed:  # it died: wait for its successor
                self.changed.wait_for(partial(self._replaced, index, slot, dispatcher))

    def _replaced(self, index: int, dead: Slot, dispatcher: Dispatcher) -> bool:
        return self.slots[index] is not dead or dispatcher.stopping.is_set()

    def run(self) -> int:
        """Start the workers and feed them until SIGTERM; a session whose delivery failed
        (the broker gone for longer than the delivery timeout) is ended without committing
        what failed, and a fresh one starts after a growing delay."""
        # One core per worker: the processes already use every core, so BLAS threads in
        # each (numpy's matching) would only oversubscribe them. Read by the children,
        # which load numpy after they are spawned.
        for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ.setdefault(var, "1")
        for i in range(self.settings.workers):
            self.start(i)
        failures = 0
        restart_at: dict[int, float] = {}
        while not self.stopping:
            fatal = self._session(restart_at)
            if fatal is None:
                break
            failures += 1
            delay = min(30.0, 0.5 * 2**failures)
            logging.error("%s; the pool's consumer starts again in %.1fs", fatal, delay)
            resume_at = time.monotonic() + delay
            while not self.stopping and time.monotonic() < resume_at:
                time.sleep(0.1)
        self._stop_workers()
        return 0

    def _session(self, restart_at: dict[int, float]) -> str | None:
        """One consumer session: feed the workers until stopping (None) or a failed
        delivery (its reason)."""
        workers = self.settings.workers
        dispatcher = Dispatcher(self.settings, f"{os.uname().nodename}:{os.getpid()}", prefetch=workers + 1)
        threads = [threading.Thread(target=dispatcher.fetch, name="fetch", daemon=True)]
        threads += [
            threading.Thread(target=self._feed, args=(i, dispatcher), name=f"feed-{i}", daemon=True)
            for i in range(workers)
        ]
        for t in threads:
            t.start()
        self.dispatcher = dispatcher
        next_check = 0.0
        while not self.stopping and not dispatcher.fatal:
            dispatcher.poll(0.1)
            now = time.monotonic()
            if now >= next_check:
                self._restart_dead(now, restart_at)
                next_check = now + 0.5
        self.dispatcher = None
        self._end_session(dispatcher, threads)
        return dispatcher.fatal

    def _restart_dead(self, now: float, restart_at: dict[int, float]) -> None:
        for i, slot in list(self.slots.items()):
            if slot.proc.is_alive() or i in restart_at:
                continue
            _mark_dead(slot.proc.pid)
            # A worker that dies soon after starting (broker unreachable, bad settings) is
            # restarted with a growing delay, not in a tight loop.
            lived = now - slot.started_at
            self.quick_deaths[i] = self.quick_deaths.get(i, 0) + 1 if lived < 30 else 0
            delay = min(30.0, 0.5 * 2 ** self.quick_deaths[i]) if self.quick_deaths[i] else 0.0
            logging.warning("worker %d exited with %s; restarting it in %.1fs", i, slot.proc.exitcode, delay)
            restart_at[i] = now + delay
        for i, when in list(restart_at.items()):
            if now >= when:
                del restart_at[i]
                self.start(i)

    def _end_session(self, dispatcher: Dispatcher, threads: list[threading.Thread]) -> None:
        """Finish the images in the workers' hands, deliver and commit them, leave the group.
        Images still queued are left to the group (their offsets are not committed)."""
        dispatcher.stop()
        with self.changed:
            self.changed.notify_all()
        for t in threads:
            t.join(timeout=60)
        dispatcher.close()

    def _stop_workers(self) -> None:
        for slot in self.slots.values():
            with contextlib.suppress(OSError):
                slot.conn.send(None)
        deadline = time.monotonic() + 30
        for slot in self.slots.values():
            slot.proc.join(max(0.1, deadline - time.monotonic()))
            if slot.proc.is_alive():
                slot.proc.kill()


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
