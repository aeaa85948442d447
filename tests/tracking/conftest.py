"""Fixtures for tracking tests: a pipeline on the worker's database and Redis, our broker on a free port, driver ids."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import socket
import time

import pytest
import pytest_asyncio
import uvicorn

from core.settings import Settings
from serena import broker
from tracking.ingest import Inbound, Pipeline
from tracking.models import Source

_ids = itertools.count(int(time.time() * 10) % 1_000_000 * 100 + os.getpid() % 97 * 10_000_000)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.asynccontextmanager
async def serving(app, *, ws: str = "websockets"):
    """`app` on a real loopback port (WebSockets need a server), with uvicorn's WebSocket implementation `ws`; yields host:port."""
    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="off", log_level="warning", ws=ws))
    task = asyncio.create_task(srv.serve())
    while not srv.started:
        await asyncio.sleep(0.02)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        srv.should_exit = True
        await task


@pytest.fixture
def new_driver_id():
    """Fresh driver ids: tests of one worker share its database, so each test uses drivers of its own."""
    return lambda: next(_ids)


@pytest.fixture
def tsettings(settings: Settings, topic_root: str) -> Settings:
    """Settings with a topic root of this test and small batches (tests are about behaviour, not speed)."""
    return settings.model_copy(update={"mqtt_topic_root": topic_root, "tracking_batch_wait_ms": 5})


@pytest_asyncio.fixture(loop_scope="session")
async def pipeline(tsettings, pool, redis):
    return Pipeline(settings=tsettings, pool=pool, redis=redis)


def ping(driver_id: int, seq: int, *, ts: float | None = None, lat: float = 60.1699, lng: float = 24.9384, **extra) -> dict:
    return {"driver_id": driver_id, "seq": seq, "ts": time.time() if ts is None else ts, "lat": lat, "lng": lng,
            "accuracy_m": 8.0, "speed_mps": 10.0, "heading_deg": 90.0, **extra}


def inbound(p: dict, *, driver_id: int | None = None, source: int = Source.MQTT) -> Inbound:
    import orjson

    return Inbound(driver_id if driver_id is not None else p["driver_id"], orjson.dumps(p), source)


@pytest.fixture
def start_broker(tsettings: Settings, tmp_path):
    """Factory: our Mosquitto config with the given drivers, on a free port; stopped afterwards."""
    started: list[Settings] = []

    def start(drivers=(), *, name: str = "mq") -> Settings:
        s = tsettings.model_copy(update={"mqtt_url": f"mqtt://127.0.0.1:{free_port()}", "mosquitto_dir": tmp_path / name})
        broker.write_broker_files(s, drivers)
        broker.start_broker(s)
        started.append(s)
        return s

    yield start
    for s in started:
        broker.stop_broker(s)
