"""The pipeline on the real database and Redis: history, dedupe, late fixes, refused fixes, live state."""

from __future__ import annotations

import datetime as dt
import json
import time

import orjson

from tests.tracking.conftest import inbound, ping
from tracking import history
from tracking.ingest import Inbound
from tracking.models import Source
from tracking.validate import Reason


async def _rows(pool, driver_id):
    return await pool.fetch("SELECT seq, source FROM tracking_positions WHERE driver_id = $1 ORDER BY seq", driver_id)


async def test_accepted_fixes_are_stored_and_become_live_state(pipeline, pool, new_driver_id):
    d = new_driver_id()
    t = time.time()
    res = await pipeline.process([inbound(ping(d, 1, ts=t - 2)), inbound(ping(d, 2, ts=t - 1, lat=60.1701))])
    assert [f.seq for f in res.accepted] == [1, 2] and not res.rejected
    assert [r["seq"] for r in await _rows(pool, d)] == [1, 2]
    live = await pipeline.live.get([d])
    assert live[d]["seq"] == 2 and live[d]["lat"] == 60.1701


async def test_a_redelivered_fix_is_stored_once_and_counted_as_duplicate(pipeline, pool, new_driver_id):
    d = new_driver_id()
    p = ping(d, 5)
    await pipeline.process([inbound(p)])
    res = await pipeline.process([inbound(p), inbound(p)])
    assert not res.accepted and [r.reason for r in res.rejected] == [Reason.DUPLICATE, Reason.DUPLICATE]
    assert len(await _rows(pool, d)) == 1
    assert (await history.rejection_counts(pool, driver_id=d)) == {"duplicate": 2}


async def test_late_gps_fix_goes_to_history_but_does_not_move_the_live_position(pipeline, pool, new_driver_id):
    d = new_driver_id()
    t = time.time()
    await pipeline.process([inbound(ping(d, 10, ts=t - 1, lat=60.1710))])
    res = await pipeline.process([inbound(ping(d, 9, ts=t - 5, lat=60.1705))])
    assert res.accepted[0].late
    assert [r["seq"] for r in await _rows(pool, d)] == [9, 10]
    assert (await pipeline.live.get([d]))[d]["seq"] == 10


async def test_refused_fixes_are_kept_with_their_reason_and_counted_per_driver(pipeline, pool, new_driver_id):
    d = new_driver_id()
    t = time.time()
    res = await pipeline.process([
        inbound(ping(d, 1, ts=t - 3)),
        inbound(ping(d, 2, ts=t - 2, lat=61.5)),  # 150 km in a second
        inbound(ping(d, 3, ts=t + 3600)),
        Inbound(d, json.dumps(ping(d, 4, lat=float("nan"))).encode()),  # NaN literal, as many encoders write it
        inbound(ping(d, 5, accuracy_m=900)),
        inbound(ping(d + 1, 6), driver_id=d),  # claims to be someone else
    ])
    assert [f.seq for f in res.accepted] == [1]
    counts = await history.rejection_counts(pool, driver_id=d)
    assert counts == {"teleport": 1, "future": 1, "nan": 1, "accuracy": 1, "driver_mismatch": 1}
    raw = await pool.fetchval("SELECT raw FROM tracking_rejects WHERE driver_id = $1 AND reason = 'accuracy'", d)
    assert orjson.loads(raw)["accuracy_m"] == 900


async def test_history_is_partitioned_by_day_and_retention_drops_old_days(pipeline, pool, tsettings, new_driver_id):
    d = new_driver_id()
    t = time.time()
    old = t - 5 * 86400
    p = pipeline.__class__(settings=tsettings.model_copy(update={"tracking_max_age_s": 30 * 86400}), pool=pool, redis=pipeline.redis)
    await p.process([inbound(ping(d, 1, ts=old)), inbound(ping(d, 2, ts=t))])
    old_day = dt.datetime.fromtimestamp(old, dt.UTC).date()
    part = f"tracking_positions_{old_day:%Y%m%d}"
    assert await pool.fetchval("SELECT count(*) FROM " + part + " WHERE driver_id = $1", d) == 1
    dropped = await history.apply_retention(pool, retention_days=3)
    assert dropped >= 1 and await pool.fetchval("SELECT to_regclass($1)", part) is None
    assert [r["seq"] for r in await _rows(pool, d)] == [2]


async def test_latest_positions_come_from_redis_and_from_history(pipeline, pool, new_driver_id, redis, tsettings):
    from tracking import live

    a, b = new_driver_id(), new_driver_id()
    t = time.time()
    await pipeline.process([inbound(ping(a, 1, ts=t - 2)), inbound(ping(a, 2, ts=t - 1)), inbound(ping(b, 7, ts=t - 1))])
    from_redis = {r["driver_id"]: r["seq"] for r in await live.latest_positions(redis=redis, prefix=tsettings.redis_prefix)}
    assert from_redis[a] == 2 and from_redis[b] == 7
    from_db = {r["driver_id"]: r["seq"] for r in await history.latest_positions(pool, driver_ids=[a, b])}
    assert from_db == {a: 2, b: 7}


async def test_http_and_websocket_sources_are_recorded(pipeline, pool, new_driver_id):
    d = new_driver_id()
    await pipeline.process([inbound(ping(d, 1), source=Source.HTTP_BATCH), inbound(ping(d, 2), source=Source.WEBSOCKET)])
    assert [(r["seq"], r["source"]) for r in await _rows(pool, d)] == [(1, Source.HTTP_BATCH), (2, Source.WEBSOCKET)]


async def test_a_replica_that_is_behind_does_not_push_an_older_position(tsettings, pool, redis, new_driver_id):
    from tracking import live

    d = new_driver_id()
    t = time.time()
    from tracking.ingest import Pipeline

    pushed: list[int] = []

    async def record(fixes, r):
        pushed.extend(f.seq for f in fixes)
        return []

    # Two replicas, each with its own memory of the driver.
    pipeline_a = Pipeline(settings=tsettings, pool=pool, redis=redis, push=record)
    pipeline_b = Pipeline(settings=tsettings, pool=pool, redis=redis, push=record)
    await pipeline_a.process([inbound(ping(d, 1, ts=t - 10))])
    await pipeline_b.process([inbound(ping(d, 3, ts=t - 2, lat=60.1702))])  # b stores the newest
    await pipeline_a.process([inbound(ping(d, 2, ts=t - 6, lat=60.1701))])  # a is behind: seq 2 is older than 3
    assert pushed == [1, 3]
    assert (await live.LiveState(redis, tsettings.redis_prefix).get([d]))[d]["seq"] == 3
