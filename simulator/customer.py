"""Customers: place orders through the public delivery API or the shop's guest checkout, and watch them.

A commerce customer does what the storefront does: a guest cart, a search, lines, a quote
for the address, a PaymentMethod for a Stripe test card made against localstripe (as
Stripe.js would in the browser), and `POST /v1/checkout` with an Idempotency-Key. A
delivery-API customer is a business posting `POST /v1/deliveries`. A watcher opens the
tracking link's WebSocket and keeps it until the parcel is delivered or the run ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from simulator.city import haversine_m
from simulator.demand import Order

if TYPE_CHECKING:
    from simulator.run import Simulation

log = logging.getLogger("serena.simulator.customer")

TEST_CARD = "4242424242424242"  # Stripe's published "succeeds" test card


@dataclass
class Placed:
    order: Order
    channel: str
    job_id: str | None = None  # delivery API: the job; commerce: unknown until dispatch made it
    commerce_order_id: str | None = None
    tracking_token: str | None = None  # commerce's guest tracking token
    order_number: str | None = None  # commerce: dispatch's job carries it as its reference
    error: str | None = None
    final_state: str | None = None
    window_start_wall: float | None = None  # the promised window's start (epoch s) as the platform has it


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat()


def _epoch_of(text) -> float | None:
    try:
        return datetime.fromisoformat(str(text).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


async def place_api(sim: Simulation, o: Order) -> Placed:
    # The window's length goes to the platform in its own seconds, unscaled: the planner measures
    # drives in road seconds, which are simulated seconds (see run.py). Scaling it by the speedup
    # (2 h → 6 min of wall time at x20) made the planner drop jobs it could not reach in time.
    w0 = sim.clock.wall_of_sim(o.window_start_s)
    w1 = w0 + (o.window_end_s - o.window_start_s)
    body = {"reference": f"sim-{sim.tag}-{o.index}", "depot_id": sim.depot["id"],
            "dropoff": {"lat": round(o.lat, 7), "lng": round(o.lng, 7), "address": f"Simulated street {o.index}"},
            "recipient_name": o.name, "recipient_phone": "+358401234567", "window_start": iso(w0), "window_end": iso(w1),
            "service_s": sim.cfg.dwell_s}
    for attempt in range(3):
        try:
            r = await sim.admin.post("/v1/deliveries", json=body, headers={"Idempotency-Key": f"sim-{sim.tag}-{o.index}"})
        except Exception as exc:  # retried with the same key: at most one job
            await asyncio.sleep(0.5 * (attempt + 1))
            err = str(exc)
            continue
        if r.status_code in (200, 201):
            return Placed(o, "api", job_id=r.json()["id"], window_start_wall=w0)
        err = f"{r.status_code} {r.text[:200]}"
        if r.status_code < 500:
            break
    return Placed(o, "api", error=err)


async def place_commerce(sim: Simulation, o: Order) -> Placed:
    http = sim.http
    try:
        r = await http.post("/v1/cart", json={})
        r.raise_for_status()
        token = r.json()["token"]
        products = await sim.catalog()
        if not products:
            return Placed(o, "commerce", error="catalog is empty (run `serena commerce seed`)")
        for k in o.basket:
            variant = products[k % len(products)]
            r = await http.put(f"/v1/cart/lines/{variant}", json={"quantity": 1}, headers={"X-Cart-Token": token})
            if r.status_code >= 400:
                log.debug("cart line %s refused: %s", variant, r.text[:200])
        r = await http.post("/v1/checkout/quote", json={"lat": o.lat, "lng": o.lng})
        if r.status_code != 200:
            return Placed(o, "commerce", error=f"quote {r.status_code} {r.text[:200]}")
        windows = r.json().get("windows") or []
        if not windows:
            return Placed(o, "commerce", error="no delivery window offered")
        first = windows[0]
        window_start = first.get("start") if isinstance(first, dict) else first
        pm = await sim.stripe_payment_method(TEST_CARD)
        body = {"email": f"customer{o.index}@sim.serena.local", "name": o.name, "phone": "+358401234567",
                "address": f"Simulated street {o.index}", "lat": o.lat, "lng": o.lng, "window_start": window_start,
                "payment_method": "card", "payment_method_id": pm}
        r = await http.post("/v1/checkout", json=body, headers={"X-Cart-Token": token,
                                                                "Idempotency-Key": f"sim-{sim.tag}-{o.index}"})
        if r.status_code not in (200, 201):
            return Placed(o, "commerce", error=f"checkout {r.status_code} {r.text[:200]}")
        view = r.json()
        return Placed(o, "commerce", window_start_wall=_epoch_of(window_start),
                      commerce_order_id=str(view.get("id")), tracking_token=view.get("tracking_token"),
                      order_number=str(view.get("number")))
    except Exception as exc:
        return Placed(o, "commerce", error=f"{type(exc).__name__}: {exc}")


async def final_state(sim: Simulation, p: Placed) -> str | None:
    """The platform's answer for one order: the job's state (delivery API) or the order's delivery status (shop)."""
    if p.job_id:
        r = await sim.admin.get(f"/v1/deliveries/{p.job_id}")
        return r.json()["state"] if r.status_code == 200 else None
    if p.order_number and p.order_number in sim.jobs_by_reference:
        return sim.jobs_by_reference[p.order_number]
    if p.tracking_token:
        r = await sim.http.get(f"/v1/track/{p.tracking_token}")
        if r.status_code == 200:
            ds = r.json().get("delivery_status") or (r.json().get("order") or {}).get("delivery_status")
            return {"delivered": "delivered", "failed": "returned", "cancelled": "cancelled"}.get(ds, ds)
    return None


async def watch(sim: Simulation, p: Placed) -> None:
    """Open the tracking link (staff issue it; the customer gets it by SMS) and hold its WebSocket."""
    import websockets

    order_key = p.job_id or p.commerce_order_id
    if not order_key:
        return
    r = await sim.admin.post("/v1/tracking/links", json={"order_id": order_key})
    if r.status_code != 201:
        sim.metrics.count(f"watch.link.{r.status_code}")
        return
    ws_path = r.json()["ws_path"]
    sim.metrics.count("watch.opened")
    if sim.metrics.counters["watch.opened"] <= sim.cfg.show_links:
        from tqdm import tqdm

        tqdm.write(f"customer tracking page: {sim.cfg.base_url}{r.json()['path']}   (fleet board: {sim.cfg.base_url}/fleet)")
    try:
        async with websockets.connect(sim.ws_base + ws_path) as ws:
            while not sim.watchers_stop.is_set():
                try:
                    msg = json.loads(await asyncio.wait_for(ws.recv(), timeout=2.0))
                except TimeoutError:
                    continue
                sim.metrics.watch_msgs += 1
                status = msg.get("status")
                sim.metrics.watch_status[status] += 1
                if status in ("arrived",) and p.job_id:
                    _check_geofence(sim, p)
                if status == "delivered":
                    return
    except Exception as exc:
        sim.metrics.count("watch.error")
        log.debug("watcher %s: %s", order_key, exc)


def _check_geofence(sim: Simulation, p: Placed) -> None:
    """The platform says 'arrived': is the van truly at this door? (more than 150 m away = a false trigger)."""
    sim.metrics.geofence_checks += 1
    for d in sim.drivers:
        stops = (d.tasks or {}).get("stops", ())
        if any(s.get("job_id") == p.job_id for s in stops):
            lat, lng, *_ = d.position(sim.clock.now())
            if float(haversine_m(lat, lng, p.order.lat, p.order.lng)) > 150:
                sim.metrics.geofence_false += 1
            return


__all__ = ["Placed", "place_api", "place_commerce", "final_state", "watch", "uuid", "contextlib", "time"]
