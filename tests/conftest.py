"""Test fixtures on real services: PostgreSQL + PostGIS, Redis, Mosquitto.

The migrations run once into a template database named after a hash of the migration
files (so an unchanged schema is reused across runs and a changed one gets a new
template); each pytest-xdist worker clones it into a database of its own, dropped at the
end. Redis keys are prefixed per worker and test; MQTT topics get a unique root per test.
Nothing here assumes an empty server.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import uuid
from collections.abc import AsyncIterator, Iterator

import asyncpg
import psycopg2
import pytest
import pytest_asyncio
import redis.asyncio as aioredis

from core import migrate
from core.db import make_engine, make_sessionmaker
from core.settings import Settings, get_settings

ADMIN_DSN = os.environ.get("SERENA_TEST_ADMIN_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("SERENA_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def _dsn_for(dbname: str) -> str:
    base, _, _ = ADMIN_DSN.rpartition("/")
    return f"{base}/{dbname}"


def _schema_hash() -> str:
    h = hashlib.sha256()
    extra = [migrate.MIGRATIONS_DIR / "env.py", migrate.MIGRATIONS_DIR.parent / "core" / "rbac.py"]
    for path in sorted((migrate.MIGRATIONS_DIR / "versions").glob("*.py")) + extra:
        h.update(path.name.encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:12]


def _admin() -> psycopg2.extensions.connection:
    conn = psycopg2.connect(ADMIN_DSN)
    conn.autocommit = True
    return conn


def _ensure_template() -> str:
    """Create (once, under an advisory lock shared by all workers) the migrated template database."""
    name = f"serena_tpl_{_schema_hash()}"
    conn = _admin()
    try:
        cur = conn.cursor()
        cur.execute("SELECT pg_advisory_lock(726354)")
        try:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            if cur.fetchone() is None:
                building = name + "_building"
                cur.execute(f'DROP DATABASE IF EXISTS "{building}"')
                cur.execute(f'CREATE DATABASE "{building}"')
                migrate.upgrade(_dsn_for(building))
                cur.execute(f'ALTER DATABASE "{building}" RENAME TO "{name}"')
        finally:
            cur.execute("SELECT pg_advisory_unlock(726354)")
    finally:
        conn.close()
    return name


@pytest.fixture(scope="session")
def worker_id_str(request) -> str:
    return os.environ.get("PYTEST_XDIST_WORKER", "main")


@pytest.fixture(scope="session")
def db_url(worker_id_str: str) -> Iterator[str]:
    """A database of this worker's own, cloned from the migrated template."""
    template = _ensure_template()
    name = f"serena_test_{worker_id_str}_{os.getpid()}"
    conn = _admin()
    cur = conn.cursor()
    cur.execute(f'DROP DATABASE IF EXISTS "{name}"')
    cur.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    conn.close()
    yield _dsn_for(name)
    conn = _admin()
    conn.cursor().execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    conn.close()


@pytest.fixture(scope="session")
def settings(db_url: str, worker_id_str: str, tmp_path_factory) -> Settings:
    """Settings for tests: this worker's database, a Redis prefix and a data directory of its own."""
    data = tmp_path_factory.mktemp("serena-data")
    s = Settings(
        env="test",
        database_url=db_url,
        redis_url=REDIS_URL,
        redis_prefix=f"serena:test:{worker_id_str}:{uuid.uuid4().hex[:8]}:",
        data_dir=data,
        mosquitto_dir=data / "mosquitto",
    )
    get_settings.cache_clear()
    return s


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def pool(db_url: str) -> AsyncIterator[asyncpg.Pool]:
    p = await asyncpg.create_pool(db_url, min_size=1, max_size=8)
    yield p
    try:
        await asyncio.wait_for(p.close(), timeout=10)
    except TimeoutError:
        p.terminate()


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def sessions(db_url: str):
    engine = make_engine(db_url)
    yield make_sessionmaker(engine)
    await engine.dispose()


@pytest_asyncio.fixture(loop_scope="session")
async def redis(settings: Settings) -> AsyncIterator[aioredis.Redis]:
    """A Redis client; keys this test makes under settings.redis_prefix are deleted afterwards."""
    client = aioredis.from_url(settings.redis_url)
    yield client
    async for key in client.scan_iter(match=settings.redis_prefix + "*", count=1000):
        await client.delete(key)
    await client.aclose()


@pytest.fixture
def topic_root(worker_id_str: str) -> str:
    """A unique MQTT topic root for one test, so parallel tests never see each other's messages."""
    return f"test/{worker_id_str}/{uuid.uuid4().hex[:10]}"


# The API fixtures (app, client, make_account) serve every test package.
pytest_plugins = ["tests.fixtures_api"]
