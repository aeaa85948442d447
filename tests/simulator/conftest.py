"""A whole platform for the simulator's tests: its own database (cloned from the migrated template), its own Redis prefix,
the API under uvicorn on a free port, and the relay and planner as processes — the simulator reaches it only over HTTP/WS.

A database of its own, not the worker's: the worker's database has other tests' drivers on
duty, and the planner would hand our parcels to vans that never move.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass

import psycopg2
import pytest

from core.settings import Settings, get_settings
from simulator.run import SMOKE_SPEEDUP
from tests.conftest import REDIS_URL, _admin, _dsn_for, _ensure_template
from tests.web.conftest import serve_app

ADMIN_EMAIL = "admin@sim.test"
ADMIN_PASSWORD = "simulator admin pw 1"
ADMIN_TOTP = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"


@dataclass
class Platform:
    url: str
    settings: Settings
    admin_email: str = ADMIN_EMAIL
    admin_password: str = ADMIN_PASSWORD
    admin_totp: str = ADMIN_TOTP


def _env(settings: Settings, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SERENA_")}
    return env | {"SERENA_ENV": "test", "SERENA_DATABASE_URL": settings.database_url, "SERENA_REDIS_URL": settings.redis_url,
                  "SERENA_REDIS_PREFIX": settings.redis_prefix, "SERENA_DISPATCH_REGION": settings.dispatch_region,
                  "SERENA_DISPATCH_GRAPH": "", "SERENA_DISPATCH_TIME_LIMIT_S": "0.5",
                  "SERENA_DISPATCH_REPLAN_INTERVAL_S": "10", "SERENA_DATA_DIR": str(settings.data_dir),
                  "SERENA_LOG_LEVEL": "WARNING", **extra}


@pytest.fixture(scope="module")
def platform(tmp_path_factory, worker_id_str):
    template = _ensure_template()
    name = f"serena_sim_{worker_id_str}_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    conn = _admin()
    conn.cursor().execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    conn.close()
    data = tmp_path_factory.mktemp("sim-data")
    settings = Settings(env="test", database_url=_dsn_for(name), redis_url=REDIS_URL,
                        redis_prefix=f"serena:simtest:{uuid.uuid4().hex[:8]}:", data_dir=data,
                        mosquitto_dir=data / "mosquitto", dispatch_graph="", dispatch_region=f"sim{uuid.uuid4().hex[:6]}",
                        # The smoke clock runs SMOKE_SPEEDUP times faster than the wall: so do the vans' implied speeds.
                        tracking_max_speed_mps=70.0 * SMOKE_SPEEDUP)
    get_settings.cache_clear()
    env = _env(settings)
    subprocess.run([sys.executable, "-m", "serena.cli", "users", "create-admin", "--email", ADMIN_EMAIL, "--password",
                    ADMIN_PASSWORD, "--totp-secret", ADMIN_TOTP], env=env, check=True, capture_output=True, timeout=60)
    procs = [subprocess.Popen([sys.executable, "-m", "serena.cli", "events", "relay"], env=env),
             subprocess.Popen([sys.executable, "-m", "serena.cli", "planner", "--no-mqtt"], env=env)]
    from serena.app import create_app

    try:
        with serve_app(create_app(settings)) as server:
            yield Platform(server.url, settings)
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
        time.sleep(0.2)
        conn = psycopg2.connect(_dsn_for("postgres"))
        conn.autocommit = True
        conn.cursor().execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.close()
