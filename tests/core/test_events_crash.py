"""Kill -9 the relay, and separately a consumer, in the middle of 10,000 events: each is applied exactly once.

The relay and the consumers run as OS processes of their own (tests/core/events_proc.py).
Each process is told to stop dead at the worst moment (a relay: batch sent to Redis, not
yet marked in the outbox; a consumer: batch committed, not yet acknowledged) and the test
kills it there, so the test exercises that window every run instead of hoping a timed
kill lands in it. The effect table has no unique constraint: a double effect would show
up as a second row, not be hidden by an error.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.core.events_support import bus  # noqa: F401 - fixture

pytestmark = pytest.mark.slow

N = 10_000
REPO = Path(__file__).resolve().parents[2]
GIVE_UP_S = 240  # a hung test fails instead of blocking CI; never a performance assertion


class Proc:
    """One events_proc process with its stderr in a file (shown when the test fails)."""

    def __init__(self, role: str, tmp_path: Path, db_url: str, redis_url: str, *args: str) -> None:
        self.name = args[args.index("--name") + 1]
        self.log = tmp_path / f"{role}-{self.name}-{time.monotonic_ns()}.log"
        env = {**os.environ, "SERENA_DATABASE_URL": db_url, "SERENA_REDIS_URL": redis_url, "PYTHONPATH": str(REPO)}
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "tests.core.events_proc", role, *args],
            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=self.log.open("w"), text=True,
        )

    def check_alive(self) -> None:
        if self.popen.poll() is not None:
            raise AssertionError(f"{self.name} exited with {self.popen.returncode}:\n{self.log.read_text()[-3000:]}")

    def kill9(self) -> None:
        self.popen.send_signal(signal.SIGKILL)
        assert self.popen.wait(30) == -signal.SIGKILL

    def stop(self) -> dict:
        """SIGTERM, wait, and return the counts it printed."""
        self.popen.send_signal(signal.SIGTERM)
        out, _ = self.popen.communicate(timeout=60)
        assert self.popen.returncode == 0, self.log.read_text()[-3000:]
        return json.loads(out.strip().splitlines()[-1])


async def until(cond, *procs: Proc) -> None:
    """Poll `cond` until true; fail if a process died or GIVE_UP_S passed."""
    deadline = time.monotonic() + GIVE_UP_S
    while not await cond():
        for p in procs:
            p.check_alive()
        assert time.monotonic() < deadline, "gave up waiting (see the process logs)"
        await asyncio.sleep(0.05)


async def caught_up(bus, group: str) -> bool:
    """Every entry in the stream has been delivered to `group` and acknowledged."""
    info = await bus.redis.xinfo_stream(bus.stream)
    groups = {g["name"]: g for g in await bus.redis.xinfo_groups(bus.stream)}
    g = groups.get(group)
    return g is not None and g["pending"] == 0 and g["last-delivered-id"] == info["last-generated-id"]


async def assert_applied_exactly_once(bus, ids) -> None:
    rows = await bus.pool.fetchrow(f"SELECT count(*) AS n, count(DISTINCT event_id) AS d FROM {bus.table}")
    assert (rows["n"], rows["d"]) == (N, N)  # no double effect, nothing missing
    assert set(await bus.effects()) == set(ids)


async def test_relay_killed_mid_batch_of_10000_hands_over_and_every_event_is_applied_exactly_once(bus, db_url, settings, tmp_path):
    ids = await bus.emit_n(N)
    consumer = Proc("consume", tmp_path, db_url, settings.redis_url, "--prefix", bus.prefix, "--name", "c1", "--group", "g",
                    "--table", bus.table, "--batch", "500")
    batch = 500
    r1 = Proc("relay", tmp_path, db_url, settings.redis_url, "--prefix", bus.prefix, "--name", "r1",
              "--batch", str(batch), "--hang-after", "3000", "--lease-ttl-s", "1")
    r2 = None
    try:
        # r1 sends 3,000 events, then XADDs one more batch and stops dead before marking it relayed.
        await until(lambda: bus.redis.exists(f"{bus.prefix}proc:r1:hung"), r1, consumer)
        assert await bus.pool.fetchval("SELECT count(*) FROM outbox WHERE relayed_at IS NOT NULL") == 3000
        assert await bus.redis.xlen(bus.stream) == 3000 + batch
        # A standby replica: it takes the lease once r1 stops renewing it. r1 still holds its
        # batch's row locks (a paused leader), so r2 skips those rows and relays the rest.
        r2 = Proc("relay", tmp_path, db_url, settings.redis_url, "--prefix", bus.prefix, "--name", "r2", "--batch", str(batch), "--lease-ttl-s", "1")

        async def only_locked_rows_left() -> bool:
            return await bus.pool.fetchval("SELECT count(*) FROM outbox WHERE relayed_at IS NULL") == batch

        await until(only_locked_rows_left, r1, r2, consumer)
        r1.kill9()  # its transaction rolls back: the hung batch is unrelayed again, and r2 re-sends it

        async def all_relayed_and_consumed() -> bool:
            unrelayed = await bus.pool.fetchval("SELECT count(*) FROM outbox WHERE relayed_at IS NULL")
            return unrelayed == 0 and await caught_up(bus, "g")

        await until(all_relayed_and_consumed, r2, consumer)
        assert (await bus.redis.get(f"{bus.prefix}events:relay:leader")).startswith("r2-")
        r2_counts, c_counts = r2.stop(), consumer.stop()
    finally:
        for p in (r1, r2, consumer):
            if p is not None and p.popen.poll() is None:
                p.popen.kill()
    assert r2_counts["relayed"] == N - 3000  # including the re-sent batch
    assert await bus.redis.xlen(bus.stream) == N + batch  # exactly one batch was sent twice...
    assert c_counts["duplicates"] == batch  # ...and its second copy was skipped
    assert c_counts["processed"] == N
    await assert_applied_exactly_once(bus, ids)


async def test_consumer_killed_between_commit_and_ack_mid_10000_is_redelivered_but_never_reapplied(bus, db_url, settings, tmp_path):
    ids = await bus.emit_n(N)
    await bus.relay(batch_size=1000).drain()
    batch = 500
    common = ("--prefix", bus.prefix, "--group", "g", "--table", bus.table, "--batch", str(batch))
    c1 = Proc("consume", tmp_path, db_url, settings.redis_url, *common, "--name", "c1", "--hang-after", "3000")
    c1b = c2 = None
    try:
        # c1 commits batches until 3,000 events are applied and stops dead before acknowledging the last one.
        await until(lambda: bus.redis.exists(f"{bus.prefix}proc:c1:hung"), c1)
        applied = len(await bus.effects())
        assert applied == 3000
        assert (await bus.redis.xpending(bus.stream, "g"))["pending"] == batch
        c1.kill9()
        # The same consumer restarts (re-reads its own pending entries) next to a new one
        # (which may claim them once idle): whoever gets the batch finds it already applied.
        c1b = Proc("consume", tmp_path, db_url, settings.redis_url, *common, "--name", "c1", "--claim-idle-ms", "500")
        c2 = Proc("consume", tmp_path, db_url, settings.redis_url, *common, "--name", "c2", "--claim-idle-ms", "500")
        await until(lambda: caught_up(bus, "g"), c1b, c2)
        counts = [c1b.stop(), c2.stop()]
    finally:
        for p in (c1, c1b, c2):
            if p is not None and p.popen.poll() is None:
                p.popen.kill()
    assert sum(c["processed"] for c in counts) == N - applied
    assert sum(c["duplicates"] for c in counts) >= batch  # the unacknowledged batch came back
    assert sum(c["dead_lettered"] for c in counts) == 0
    assert await bus.pool.fetchval("SELECT count(*) FROM processed_events WHERE consumer = 'g'") == N
    await assert_applied_exactly_once(bus, ids)
