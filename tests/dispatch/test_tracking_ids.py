"""What a customer's tracking link names: the shop order for shop deliveries, the job for delivery-API ones.

Links issued for delivery-API jobs never found their driver (plans carried no order id for
them): in the hour-long simulation every tracking update its watchers received was `scheduled`.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from dispatch import planner
from tracking import eta


def test_a_stop_names_the_shop_order_else_the_job_and_a_depot_call_nothing():
    order, job = str(uuid.uuid4()), str(uuid.uuid4())
    assert planner.order_id_of({"job_id": job, "idempotency_key": f"order:{order}"}) == order
    assert planner.order_id_of({"job_id": job, "idempotency_key": "api:sim-1"}) == job
    assert planner.order_id_of({"job_id": job, "idempotency_key": ""}) == job
    assert planner.order_id_of({"job_id": None, "kind": "depot"}) is None


async def test_a_published_plan_lets_tracking_find_the_driver_of_an_api_delivery(redis, settings):
    job, shop_job, order = str(uuid.uuid4()), str(uuid.uuid4()), str(uuid.uuid4())
    now = datetime.now(UTC).isoformat()

    def stop(job_id, key, seq):
        return {"seq": seq, "job_id": job_id, "kind": "delivery", "package_code": f"P{seq}", "lat": 60.17, "lng": 24.94,
                "address": "x", "recipient_name": "y", "window_start": now, "window_end": now, "eta": now,
                "state": "assigned", "service_s": 120.0, "idempotency_key": key}

    stops = [{"seq": 0, "job_id": None, "kind": "depot", "lat": 60.17, "lng": 24.94, "eta": now, "state": "planned",
              "package_code": "", "address": "depot", "load": ["P1", "P2"]},
             stop(job, "api:ref-1", 1), stop(shop_job, f"order:{order}", 2)]
    result = planner.PlanResult(7, None, {"42": stops}, {}, 0.0, 1.0,
                                {42: {"version": 7, "driver_id": 42, "generated_at": now, "stops": stops}})
    await planner.publish_tasks(result, redis=redis, settings=settings)
    assert await eta.driver_of_order(redis, prefix=settings.redis_prefix, order_id=job) == 42
    assert await eta.driver_of_order(redis, prefix=settings.redis_prefix, order_id=order) == 42
    assert await eta.driver_of_order(redis, prefix=settings.redis_prefix, order_id=shop_job) is None
