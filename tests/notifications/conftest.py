"""Notifications fixtures: a real `serena worker` (Celery + the event consumer) and a local webhook receiver.

The worker runs as a subprocess on this test worker's database, with a Redis prefix of its
own (the shared `redis` fixture wipes the test prefix after every test, which would delete
Celery's queue bindings under a running worker). Events reach it the way the relay
delivers them: XADD of the event's fields to `<prefix>events`.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import pytest_asyncio
import redis.asyncio as aioredis

from core.events import Event
from core.settings import Settings

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def worker_settings(settings: Settings, tmp_path_factory) -> Settings:
    data = tmp_path_factory.mktemp("notifications-data")
    return settings.model_copy(update={
        "redis_prefix": f"serena:test:notif:{uuid.uuid4().hex[:8]}:",
        "data_dir": data,
        "notifications_retry_backoff_s": 0.2,  # the back-off's shape is asserted, not its length
        "notifications_email_transport": "file",
    })


def _env(s: Settings) -> dict[str, str]:
    env = dict(os.environ)
    env.update({
        "SERENA_ENV": "test",
        "SERENA_DATABASE_URL": s.database_url,
        "SERENA_REDIS_URL": s.redis_url,
        "SERENA_REDIS_PREFIX": s.redis_prefix,
        "SERENA_DATA_DIR": str(s.data_dir),
        "SERENA_NOTIFICATIONS_RETRY_BACKOFF_S": str(s.notifications_retry_backoff_s),
        "SERENA_NOTIFICATIONS_EMAIL_TRANSPORT": s.notifications_email_transport,
        "SERENA_WORKER_CONCURRENCY": "1",
        "SERENA_LOG_LEVEL": "INFO",
    })
    return env


def start_worker(s: Settings, *, log_name: str = "worker.log", **env: str) -> subprocess.Popen:
    """`serena worker` as a subprocess in a session of its own (so its Celery child can be killed with it)."""
    log = open(Path(s.data_dir) / log_name, "ab")  # noqa: SIM115 - the child holds it
    try:
        return subprocess.Popen([sys.executable, "-m", "serena.cli", "worker"], cwd=REPO, env={**_env(s), **env},
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    finally:
        log.close()


def stop_worker(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def wipe_prefix(s: Settings) -> None:
    import redis as syncredis

    r = syncredis.from_url(s.redis_url)
    for key in r.scan_iter(match=s.redis_prefix + "*", count=1000):
        r.delete(key)
    r.close()


@pytest.fixture(scope="session")
def worker_process(worker_settings: Settings):
    """`serena worker` running until the end of the session."""
    proc = start_worker(worker_settings)
    yield proc
    stop_worker(proc)
    wipe_prefix(worker_settings)


@pytest_asyncio.fixture(loop_scope="session")
async def publish(worker_settings: Settings, worker_process):
    """`await publish(event)`: add the event to the stream as the relay does; returns it."""
    client = aioredis.from_url(worker_settings.redis_url)

    async def add(ev: Event) -> Event:
        await client.xadd(worker_settings.redis_prefix + "events", ev.to_fields())
        return ev

    yield add
    await client.aclose()


async def wait_for(check: Callable, *, what: str, proc: subprocess.Popen | None = None, limit_s: float = 60.0):
    """Poll `check()` (sync or async) until it returns something truthy. The limit is a hang guard, not a threshold."""
    deadline = time.monotonic() + limit_s
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the worker exited with {proc.returncode} while waiting for {what}")
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        await asyncio.sleep(0.1)


class Receiver:
    """An HTTP server on 127.0.0.1 that records POSTs and answers from a script of status codes (then 200)."""

    def __init__(self):
        self.requests: list[dict] = []
        self.scripts: dict[str, list[int]] = {}  # path → status codes to answer, in order
        self.hold: dict[str, threading.Event] = {}  # path → the first request waits for this before answering
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                gate = outer.hold.pop(self.path, None)
                if gate is not None:
                    with outer.lock:
                        outer.requests.append({"path": self.path, "headers": dict(self.headers), "body": body, "status": None})
                    gate.wait(60)
                    return  # the sender is gone by now: no answer
                with outer.lock:
                    script = outer.scripts.get(self.path) or []
                    status = script.pop(0) if script else 200
                    outer.requests.append({"path": self.path, "headers": dict(self.headers), "body": body, "status": status})
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(json.dumps({"status": status}).encode())

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"

    def for_path(self, path: str) -> list[dict]:
        with self.lock:
            return [r for r in self.requests if r["path"] == path]

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="session")
def receiver():
    r = Receiver()
    yield r
    r.close()
