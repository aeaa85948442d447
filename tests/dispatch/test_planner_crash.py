"""Kill -9 the planner in the middle of a re-plan: the standby takes over; no job is lost or assigned twice."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid

import pytest

from dispatch import planner
from tests.dispatch.conftest import delivery_body

pytestmark = pytest.mark.slow


def _start_planner(settings, region: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SERENA_")} | {
        "SERENA_ENV": "test", "SERENA_DATABASE_URL": settings.database_url, "SERENA_REDIS_URL": settings.redis_url,
        "SERENA_REDIS_PREFIX": settings.redis_prefix, "SERENA_DISPATCH_REGION": region, "SERENA_DISPATCH_GRAPH": "",
        # A slow re-plan, so the kill lands inside one.
        "SERENA_DISPATCH_TIME_LIMIT_S": "4", "SERENA_DISPATCH_REPLAN_INTERVAL_S": "3600", "SERENA_LOG_LEVEL": "INFO",
    }
    return subprocess.Popen([sys.executable, "-m", "serena.cli", "planner", "--no-mqtt"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


async def _wait_for(predicate, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = await predicate()
        if value:
            return value
        await asyncio.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


async def test_planner_killed_mid_replan_hands_over_without_losing_or_doubling_jobs(
        app, client, redis, settings, dispatcher, depot, make_driver, pool):
    region = f"crash{uuid.uuid4().hex[:6]}"
    drivers = [await make_driver() for _ in range(3)]
    lease_key = f"{settings.redis_prefix}planner:lease:{region}"
    ids = []
    for i in range(40):
        r = await client.post("/v1/deliveries", headers={**dispatcher.headers, "Idempotency-Key": f"c-{uuid.uuid4().hex}"},
                              json=delivery_body(60.165 + (i % 8) * 0.003, 24.93 + (i // 8) * 0.004))
        assert r.status_code == 201
        ids.append(uuid.UUID(r.json()["id"]))
    first = _start_planner(settings, region)
    second = None
    try:
        await _wait_for(lambda: redis.get(lease_key), 60, "the first planner to take the lease")
        leader = (await redis.get(lease_key)).decode()
        second = _start_planner(settings, region)  # stands by
        # A new leader plans at once; its solve has a 4 s budget: kill it in the middle.
        await asyncio.sleep(1.5)
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        plans_by_first = await pool.fetchval("SELECT count(*) FROM dispatch_plans WHERE region=$1 AND planner_id=$2", region, leader)
        assert plans_by_first == 0, "the kill should land inside the first leader's first re-plan"
        # The lease lapses (10 s TTL), the standby takes over and plans.
        new_leader = await _wait_for(lambda: _other_leader(redis, lease_key, leader), 40, "the standby to take over")
        assert new_leader != leader

        async def planned_by_new_leader():
            return await pool.fetchval("SELECT count(*) FROM dispatch_plans WHERE region=$1 AND planner_id=$2", region, new_leader)
        await _wait_for(planned_by_new_leader, 60, "a plan by the new leader")
        rows = await pool.fetch("SELECT id, state, driver_id FROM delivery_jobs WHERE id = ANY($1)", ids)
        assert len(rows) == len(ids)  # nothing lost
        assert all(r["state"] in ("created", "planned", "assigned") for r in rows)
        # No job on two drivers' task lists.
        seen: dict[str, int] = {}
        for d in drivers:
            raw = await redis.get(f"{settings.redis_prefix}tasks:last:{d.driver_id}")
            if raw is None:
                continue
            for stop in json.loads(raw)["stops"]:
                if stop["job_id"]:
                    assert stop["job_id"] not in seen, f"job {stop['job_id']} on two task lists"
                    seen[stop["job_id"]] = d.driver_id
        for r in rows:
            if r["state"] == "assigned":
                assert seen.get(str(r["id"]), r["driver_id"]) == r["driver_id"]
    finally:
        for p in (first, second):
            if p is not None and p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(15)
                except subprocess.TimeoutExpired:
                    p.kill()


async def _other_leader(redis, key, old):
    value = await redis.get(key)
    return value.decode() if value is not None and value.decode() != old else None
