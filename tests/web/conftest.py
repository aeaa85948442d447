"""Browser test harness: the real app under uvicorn on a free 127.0.0.1 port, and headless Chromium.

`live_server` runs `serena.app.create_app(settings)` (this worker's test database, its own
Redis prefix) in a background thread for the whole session. `page` is a fresh browser
context and tab per test (so sessionStorage never leaks between tests); every request
it makes is recorded in `page_requests`. `screenshot(page, "name")` saves
screenshots/<name>.png at the repo root (git-ignored); a failing browser test leaves
screenshots/FAILED-<test>.png behind.

Chromium is Debian's (/usr/bin/chromium), never one Playwright downloads: there is no
internet at test time, and the flags below stop Chromium's own background traffic.
"""

from __future__ import annotations

import os
import re
import socket
import threading
import time
from contextlib import contextmanager
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import uvicorn

from core.settings import Settings
from tests.paths import REPO

CHROMIUM = os.environ.get("SERENA_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOTS = REPO / "screenshots"
STARTUP_TIMEOUT_S = 20.0


@dataclass(frozen=True)
class LiveServer:
    url: str  # http://127.0.0.1:<port>, no trailing slash
    app: object


@contextmanager
def serve_app(app, *, startup_timeout_s: float = STARTUP_TIMEOUT_S) -> Iterator[LiveServer]:
    """Run `app` under uvicorn in a thread on a port the OS picked; stop it afterwards."""
    # Bind first and hand uvicorn the socket: picking a port, closing it and letting uvicorn
    # bind again would race with other xdist workers doing the same.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", lifespan="on", access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name=f"uvicorn-{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + startup_timeout_s
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError("the app under test failed to start; see the log above")
        if time.monotonic() > deadline:
            server.should_exit = True
            raise RuntimeError(f"the app under test did not start within {startup_timeout_s} s")
        time.sleep(0.05)
    try:
        yield LiveServer(f"http://127.0.0.1:{port}", app)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


@pytest.fixture(scope="session")
def live_server(settings: Settings) -> Iterator[LiveServer]:
    """The real app (create_app with the test settings), served on 127.0.0.1 for the session."""
    from serena.app import create_app

    with serve_app(create_app(settings)) as server:
        yield server


@pytest.fixture(scope="session")
def browser():
    """Headless Debian Chromium, one per session (per xdist worker)."""
    if not Path(CHROMIUM).exists():
        pytest.fail(f"Chromium not found at {CHROMIUM}: `apt-get install chromium` (browser tests never download one)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page_requests() -> list[str]:
    """Every URL the test's page requested, in order (filled by the `page` fixture)."""
    return []


@pytest.fixture
def page(request, browser, page_requests: list[str]):
    """A fresh context and tab; records requests; saves a screenshot if the test fails."""
    context = browser.new_context(viewport={"width": 1280, "height": 860}, locale="en-GB", timezone_id="UTC")
    context.on("request", lambda req: page_requests.append(req.url))
    context.set_default_timeout(10_000)
    p = context.new_page()
    console_errors: list[str] = []
    # Script errors only: "Failed to load resource" is how Chromium logs any 4xx/5xx, and /health
    # answers 503 by design when a dependency (e.g. the MQTT broker in tests) is down.
    p.on("console", lambda msg: console_errors.append(msg.text)
         if msg.type == "error" and not msg.text.startswith("Failed to load resource") else None)
    p.on("pageerror", lambda exc: console_errors.append(f"uncaught: {exc}"))
    p.console_errors = console_errors  # type: ignore[attr-defined]
    yield p
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        try:
            save_screenshot(p, f"FAILED-{request.node.name}")
        except Exception:  # the test already failed; a missing screenshot must not hide why
            pass
    context.close()


def save_screenshot(page, name: str, *, full_page: bool = True) -> Path:
    """Save `page` as screenshots/<name>.png at the repo root and return the path."""
    SCREENSHOTS.mkdir(exist_ok=True)
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", name)
    path = SCREENSHOTS / f"{safe}.png"
    page.screenshot(path=str(path), full_page=full_page)
    return path


@pytest.fixture
def screenshot() -> Callable[..., Path]:
    """`screenshot(page, "home")` → screenshots/home.png."""
    return save_screenshot


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, f"rep_{rep.when}", rep)
