"""`serena planner`: the dispatch planner process (leader per region) and dispatch's event consumers."""

from __future__ import annotations

import asyncio
import logging
import signal
import time

import typer

app = typer.Typer(help="Dispatch planner.")


def insert_pause_s(*, pending: set[str], due: bool, last_plan_at: float, now: float, interval_s: float) -> float:
    """How long to wait before an insertion re-plan: new jobs only (and no interval re-plan due) are
    inserted at most once per `interval_s`, so a burst of orders goes in together — each re-plan
    re-reads every open job, and at 8 purchases/s one re-plan per order cost the planner ~47 ms of
    CPU per order. Anything else (a failure, a duty change, a new leader) plans at once."""
    if due or not pending or not pending <= {"delivery.created"}:
        return 0.0
    return max(0.0, last_plan_at + interval_s - now)


async def run_planner(settings, *, stop: asyncio.Event | None = None, mqtt: bool = True) -> None:
    """Consume order.paid into jobs; while leader, re-plan on triggers and every replan interval."""
    import redis.asyncio as aioredis

    from core import db as dbmod
    from core import mqtt as coremqtt
    from core.consumer import Consumer
    from dispatch import events as devents
    from dispatch import planner, travel, watch

    log = logging.getLogger("serena.planner")
    stop = stop or asyncio.Event()
    engine = dbmod.make_engine(settings.database_url)
    sessions = dbmod.make_sessionmaker(engine)
    redis = aioredis.from_url(settings.redis_url)
    dirty = asyncio.Event()
    dirty.set()  # a new leader always plans once: it cannot know what its predecessor finished

    pending: set[str] = set()
    # A consumer group hands each trigger to ONE replica, which may be a standby: so triggers
    # go into a Redis set of the region that whoever leads drains (and a pub/sub ping wakes it).
    pending_key = f"{settings.redis_prefix}planner:pending:{settings.dispatch_region}"
    wake_channel = f"{settings.redis_prefix}planner:wake:{settings.dispatch_region}"

    async def mark_dirty(db, event) -> None:
        await redis.sadd(pending_key, event.type)
        await redis.publish(wake_channel, event.type)

    async def drain_pending() -> None:
        async with redis.pipeline(transaction=True) as pipe:
            pipe.smembers(pending_key)
            pipe.delete(pending_key)
            members, _ = await pipe.execute()
        if members:
            pending.update(m.decode() for m in members)
            dirty.set()

    async def wake_listener() -> None:
        pubsub = redis.pubsub()
        await pubsub.subscribe(wake_channel)
        try:
            while not stop.is_set():
                msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                if msg is not None:
                    dirty.set()
        finally:
            await pubsub.aclose()

    jobs_consumer = Consumer(group=devents.JOBS_GROUP, handler=devents.on_order_paid, db=sessions, redis=redis,
                             prefix=settings.redis_prefix, types=["order.paid"])
    trigger_consumer = Consumer(group=devents.PLANNER_GROUP, handler=mark_dirty, db=sessions, redis=redis,
                                prefix=settings.redis_prefix, types=list(devents.PLANNER_TRIGGERS), batch_size=500)
    stops_consumer = Consumer(group=devents.STOPS_GROUP, handler=devents.on_stop_event, db=sessions, redis=redis,
                              prefix=settings.redis_prefix, types=["stop.arriving"])
    lease = planner.Lease(redis, planner.lease_key(settings))
    tasks = [asyncio.create_task(jobs_consumer.run(stop)), asyncio.create_task(trigger_consumer.run(stop)),
             asyncio.create_task(stops_consumer.run(stop)), asyncio.create_task(wake_listener())]

    async def leader_loop(mqtt_client) -> None:
        last_plan = 0.0
        last_any_plan = 0.0  # any re-plan, insertions included (paces insertions under a burst of orders)
        last_route_check = 0.0
        was_leader = False
        published_inputs: str | None = None  # inputs of the last plan whose lists all went out
        republish_all = True  # a new leader sends every list once: the broker may have lost retained ones
        while not stop.is_set():
            leader = await lease.acquire_or_renew()
            if leader and not was_leader:
                log.info("planner %s leads region %s", lease.owner, settings.dispatch_region)
                dirty.set()
                published_inputs, republish_all = None, True
            was_leader = leader
            if leader:
                await drain_pending()
                await watch.silent_drivers(sessions=sessions, redis=redis, settings=settings, on_release=dirty.set)
                if time.monotonic() - last_route_check >= 10:
                    last_route_check = time.monotonic()
                    try:
                        drifted = await watch.eta_watch(sessions=sessions, redis=redis, settings=settings)
                        if drifted and time.monotonic() - last_plan >= 30:
                            pending.add("eta.drift")  # a full re-plan: the plan no longer matches the road
                            dirty.set()
                    except Exception:
                        log.exception("ETA watch failed")
                    try:
                        await watch.off_route_drivers(sessions=sessions, redis=redis, settings=settings,
                                                      model=travel.model_for(settings.dispatch_graph))
                    except Exception:
                        log.exception("off-route check failed")
                due = time.monotonic() - last_plan >= settings.dispatch_replan_interval_s
                if dirty.is_set():
                    wait_s = insert_pause_s(pending=pending, due=due, last_plan_at=last_any_plan, now=time.monotonic(),
                                            interval_s=settings.dispatch_insert_interval_s)
                    if wait_s > 0:
                        try:
                            await asyncio.wait_for(stop.wait(), timeout=wait_s)
                        except TimeoutError:
                            pass
                        await drain_pending()
                if dirty.is_set() or due:
                    dirty.clear()
                    # Only new jobs since the last full plan: insert them cheaply now (the promise
                    # is an answer in ≤ 200 ms); the next interval re-optimises everything.
                    mode = "insert" if pending and pending <= {"delivery.created"} and last_plan and not due else "full"
                    reason = ",".join(sorted(pending)) or "interval"
                    pending.clear()
                    try:
                        # Interval ticks with nothing new skip the solve and the writes (planner.needs_solve);
                        # a trigger always plans.
                        result = await planner.replan(sessions=sessions, redis=redis, settings=settings, lease=lease,
                                                      reason=reason, mode=mode,
                                                      unchanged_since=published_inputs if reason == "interval" else None)
                        if result is not None and not result.skipped:
                            await planner.publish_tasks(result, redis=redis, settings=settings, mqtt_client=mqtt_client,
                                                        force=republish_all)
                            republish_all = False
                        published_inputs = result.inputs if result is not None else None
                    except Exception:
                        log.exception("re-plan failed; will retry")
                        published_inputs = None
                        dirty.set()
                    last_any_plan = time.monotonic()
                    if mode == "full":
                        last_plan = time.monotonic()
            if not leader:
                dirty.clear()  # a standby has nothing to do with triggers; it plans afresh when it takes over
            try:
                await asyncio.wait_for(dirty.wait(), timeout=1.0 if leader else 3.0)
            except TimeoutError:
                pass
        await lease.release()

    try:
        if mqtt:
            async with coremqtt.service_client(settings, client_id=f"planner-{lease.owner}", persistent=False) as client:
                await leader_loop(client)
        else:
            await leader_loop(None)
    finally:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        await redis.aclose()
        await engine.dispose()


@app.callback(invoke_without_command=True)
def planner_cmd(mqtt: bool = typer.Option(True, help="publish task lists to MQTT too (they always go to Redis for WebSockets)")) -> None:
    """Run the planner until Ctrl-C (one leader per region; more replicas stand by)."""
    from core import logging as slog
    from serena.commands.platform import settings_or_exit

    settings = settings_or_exit()
    slog.configure(level=settings.log_level, as_json=settings.log_json)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await run_planner(settings, stop=stop, mqtt=mqtt)

    asyncio.run(main())
