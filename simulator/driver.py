"""A simulated driver: signs in, starts a shift, follows the task list the platform sends, drives, scans, proves, fails.

The agent is a coroutine that does what a driver does with the app: go on duty, wait for
a task list (MQTT retained topic, or the HTTP endpoint in `poll` mode), drive to the next
stop, dwell, scan, record proof or a failed attempt, take a break now and then. Positions
are not sent from here: the simulation's one ticker asks every driver where it truly is
(`position`) once per fix interval and passes that through the driver's phone
(simulator.gps) to its sender — so 1,000 drivers cost one loop, not 1,000 timers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

import numpy as np

from simulator.city import Trajectory, haversine_m
from simulator.client import DriverAccount, Session
from simulator.gps import Fix, Phone

if TYPE_CHECKING:
    from simulator.run import Simulation

log = logging.getLogger("serena.simulator.driver")

SIGNATURE_SVG = ('<svg xmlns="http://www.w3.org/2000/svg" width="200" height="60"><path d="M5 40 C 40 5, 60 55, 95 25 '
                 'S 150 50, 195 20" stroke="black" fill="none"/></svg>')
FINAL_STATES = {"delivered", "returned", "cancelled"}
DONE_LOCALLY = {"delivered", "returned", "cancelled"}


def _epoch(iso: str | None) -> float | None:
    if not iso:
        return None
    try:
        return datetime.fromisoformat(iso).timestamp()
    except ValueError:
        return None


@dataclass
class Driver:
    sim: Simulation
    account: DriverAccount
    session: Session
    phone: Phone
    rng: np.random.Generator
    factor: float  # this driver's speed factor (some drive faster than others)
    state: str = "off"  # off | idle | driving | dwell | break
    lat: float = 0.0
    lng: float = 0.0
    traj: Trajectory | None = None
    traj_t0: float = 0.0  # sim s when the current drive started
    tasks: dict | None = None
    tasks_version: int = 0
    on_board: set[str] = field(default_factory=set)
    handled: dict[str, int] = field(default_factory=dict)  # job id -> task version when we last acted on it
    finished: set[str] = field(default_factory=set)  # job ids delivered or returned by us
    to_return: set[str] = field(default_factory=set)  # package codes of failed parcels marked for return
    refused: dict[str, int] = field(default_factory=dict)  # package code -> task version when a pickup scan was refused
    attempts: dict[str, int] = field(default_factory=dict)
    distance_m: float = 0.0
    last_break_t: float = 0.0
    mqtt: object | None = None
    ws: object | None = None
    queue: asyncio.Queue = field(default_factory=asyncio.Queue)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    backlog: list = field(default_factory=list)  # fixes waiting for the MQTT connection
    _signature: tuple = ()  # the stops of the last acknowledged task list

    @property
    def id(self) -> int:
        return self.account.driver_id

    # -- where am I (called by the ticker) ------------------------------------------------------------
    def position(self, t: float) -> tuple[float, float, float, float, bool]:
        """(lat, lng, speed_mps, heading_deg, moving) at sim time t."""
        if self.state == "driving" and self.traj is not None:
            lat, lng, v, h = self.traj.at(t - self.traj_t0)
            return lat, lng, v, h, True
        return self.lat, self.lng, 0.0, 0.0, False

    # -- life ------------------------------------------------------------------------------------------
    async def run(self) -> None:
        sim = self.sim
        self.lat, self.lng = sim.depot_latlng
        if not self.session.access:
            await self.session.login()
        r = await self.session.post("/v1/driver/shift/start", json={"vehicle_id": self.account.vehicle_id,
                                                                     "lat": self.lat, "lng": self.lng})
        if r.status_code != 200:
            raise RuntimeError(f"driver {self.id}: shift start failed: {r.status_code} {r.text[:200]}")
        self.state = "idle"
        self.last_break_t = sim.clock.now()
        listener = asyncio.ensure_future(self._listen())
        sender = asyncio.ensure_future(self._send_loop())
        try:
            while not sim.drivers_stop.is_set():
                if sim.cfg.no_orders:  # the scale run: nobody orders, vans patrol the city so fixes move
                    (lat, lng), = sim.city.sample_addresses(1, self.rng)
                    await self.drive_to(lat, lng)
                    await sim.clock.sleep(float(self.rng.uniform(10, 60)))
                    continue
                stop = self.next_stop()
                if stop is None:
                    if self.to_return and self._far_from_depot():
                        await self.drive_to(*sim.depot_latlng)
                        continue
                    if self.to_return:
                        await self._return_parcels()
                    self.state = "idle"
                    self.changed.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self.changed.wait(), timeout=sim.cfg.poll_s)
                    continue
                await self.maybe_break()
                await self.visit(stop)
        finally:
            self.state = "off"
            listener.cancel()
            with contextlib.suppress(BaseException):
                await asyncio.shield(self.session.post("/v1/driver/shift/end"))
            await self.queue.put(None)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(sender, timeout=10)

    def _far_from_depot(self) -> bool:
        return self._far_from(*self.sim.depot_latlng)

    def _far_from(self, lat: float, lng: float) -> bool:
        return float(haversine_m(self.lat, self.lng, lat, lng)) > 30

    async def maybe_break(self) -> None:
        sim = self.sim
        if sim.cfg.break_every_s <= 0 or sim.clock.now() - self.last_break_t < sim.cfg.break_every_s:
            return
        self.state = "break"
        dur = sim.cfg.break_s * self.rng.uniform(0.8, 1.2)
        sim.truth.write("break", sim.clock.now(), time.time(), d=self.id, s=round(dur))
        await sim.clock.sleep(dur)
        self.last_break_t = sim.clock.now()
        self.state = "idle"

    # -- the task list ---------------------------------------------------------------------------------
    def on_tasks(self, doc: dict) -> None:
        v = int(doc.get("version") or 0)
        if v < self.tasks_version:
            return  # an older list overtaken by a newer one
        self.tasks, self.tasks_version = doc, v
        sim = self.sim
        now_t, now_w = sim.clock.now(), time.time()
        gen = _epoch(doc.get("generated_at")) or now_w
        for s in doc.get("stops", ()):
            if s.get("kind") == "delivery" and s.get("job_id"):
                eta = _epoch(s.get("eta"))
                if eta is not None:
                    # Platform seconds ahead of the plan's own clock = simulated seconds (see docs/simulator.md, speedup).
                    pred = sim.clock.sim_of_wall(gen) + (eta - gen)
                    sim.metrics.eta_obs.setdefault(s["job_id"], []).append((now_t, pred))
        sim.metrics.task_lists += 1
        self.changed.set()
        # Acknowledge a list that changed for this driver only: the planner republishes every
        # on-duty driver's list on each plan, and 1,000 drivers acking each copy swamped the API.
        signature = tuple((st.get("job_id"), st.get("kind"), st.get("state")) for st in doc.get("stops", ()))
        if v and signature != self._signature:
            self._signature = signature
            asyncio.ensure_future(self._ack(v))

    async def _ack(self, v: int) -> None:
        with contextlib.suppress(Exception):
            await self.session.post("/v1/driver/tasks/ack", json={"version": v})

    async def _listen(self) -> None:
        if self.sim.cfg.tasks == "mqtt":
            await self._listen_mqtt()
        else:
            await self._poll_tasks()

    async def _poll_tasks(self) -> None:
        while True:
            try:
                r = await self.session.get("/v1/driver/tasks")
                if r.status_code == 200:
                    doc = r.json()
                    if int(doc.get("version") or 0) != self.tasks_version:
                        self.on_tasks(doc)
            except Exception as exc:  # a blip: the next poll tries again
                log.debug("driver %s: task poll failed: %s", self.id, exc)
            await asyncio.sleep(self.sim.cfg.poll_s)

    async def _listen_mqtt(self) -> None:
        import aiomqtt

        sim = self.sim
        topic = f"{sim.cfg.topic_root}/drivers/{self.id}/tasks"
        delay = 0.5
        while True:
            try:
                async with aiomqtt.Client(sim.mqtt_host, sim.mqtt_port, username=self.account.mqtt_username,
                                          password=self.account.mqtt_password, identifier=f"sim-{sim.tag}-{self.id}",
                                          protocol=aiomqtt.ProtocolVersion.V5, keepalive=60,
                                          max_inflight_messages=100) as client:
                    self.mqtt = client
                    delay = 0.5
                    await client.subscribe(topic, qos=1)
                    async for msg in client.messages:
                        with contextlib.suppress(ValueError, TypeError):
                            self.on_tasks(json.loads(msg.payload))
            except aiomqtt.MqttError as exc:
                self.mqtt = None
                sim.metrics.mqtt_reconnects += 1
                log.debug("driver %s: MQTT %s; reconnecting", self.id, exc)
                await asyncio.sleep(delay)  # the broker may not know this driver's password yet (sync after create)
                delay = min(delay * 2, 10.0)

    def next_stop(self) -> dict | None:
        """The first stop of the list we still have to do (a delivery whose parcel is not on board sends us to the depot)."""
        if not self.tasks:
            return None
        stops = self.tasks.get("stops", ())
        # dispatch.md: a van first finishes what is on board, then calls at the depot to load.
        on_board_first = any(s.get("kind") == "delivery" and s.get("package_code") in self.on_board and self._open(s)
                             for s in stops)
        for s in stops:
            if s.get("kind") == "depot":
                if on_board_first:
                    continue
                if any(self._to_load(code) for code in s.get("load", ())) and \
                        self.handled.get(f"depot:{s.get('seq')}") != self.tasks_version:
                    return s
                continue
            job = s.get("job_id")
            if not job or job in self.finished or s.get("state") in FINAL_STATES:
                continue
            if self.handled.get(job, -1) >= self.tasks_version:
                continue  # acted on it under this list already (a failed attempt waits for the next plan)
            if s.get("package_code") in self.to_return:
                continue
            if s.get("package_code") not in self.on_board and s.get("state") not in ("picked_up", "out_for_delivery",
                                                                                      "arriving", "failed"):
                return {"kind": "depot", "seq": f"fetch:{job}", "lat": self.sim.depot_latlng[0],
                        "lng": self.sim.depot_latlng[1], "load": [s.get("package_code")]}
            return s
        return None

    def _open(self, s: dict) -> bool:
        job = s.get("job_id")
        return bool(job) and job not in self.finished and s.get("state") not in FINAL_STATES and \
            self.handled.get(job, -1) < self.tasks_version and s.get("package_code") not in self.to_return

    def _to_load(self, code: str) -> bool:
        """A parcel of a depot stop still to pick up (not on board, and not refused under this very task list)."""
        return code not in self.on_board and self.refused.get(code, -1) < self.tasks_version

    # -- doing things ----------------------------------------------------------------------------------
    async def drive_to(self, lat: float, lng: float) -> None:
        sim = self.sim
        t0 = sim.clock.now()
        hour = sim.cfg.start_hour + t0 / 3600.0
        traj = sim.city.drive((self.lat, self.lng), (lat, lng), hour=hour, driver_factor=self.factor, rng=self.rng)
        self.traj, self.traj_t0, self.state = traj, t0, "driving"
        await sim.clock.sleep(traj.duration_s)
        self.lat, self.lng = float(traj.lat[-1]), float(traj.lng[-1])
        self.distance_m += traj.distance_m
        sim.truth.write("drive", t0, time.time(), d=self.id, m=round(traj.distance_m, 1), s=round(traj.duration_s, 1))
        self.traj, self.state = None, "dwell"

    def _phone_position(self) -> tuple[float, float, float]:
        """What the phone says right now (the scan carries it): a noisy fix of the true position."""
        f: Fix = self.phone.peek(self.lat, self.lng)
        return f.lat, f.lng, f.accuracy_m

    async def visit(self, stop: dict) -> None:
        sim = self.sim
        log.debug("driver %s v%s: to %s %s (%s) load=%s", self.id, self.tasks_version, stop.get("kind"), stop.get("job_id"),
                  stop.get("state"), stop.get("load"))
        if stop.get("kind") == "depot":
            if self._far_from(float(stop["lat"]), float(stop["lng"])):
                await self.drive_to(float(stop["lat"]), float(stop["lng"]))
            version = self.tasks_version
            sim.truth.write("arrive", sim.clock.now(), time.time(), d=self.id, stop="depot")
            await self._return_parcels()
            loaded = 0
            for code in [c for c in stop.get("load", ()) if self._to_load(c)]:
                lat, lng, _acc = self._phone_position()
                r = await self.session.post("/v1/driver/scans", json={"kind": "pickup", "code": code, "lat": lat, "lng": lng})
                sim.metrics.count(f"scan.pickup.{r.status_code}")
                if r.status_code == 200:
                    self.on_board.add(code)
                    loaded += 1
                else:  # moved to another van by a re-plan, or not ready: wait for the next task list
                    self.refused[code] = version
            if loaded:
                await sim.clock.sleep(sim.cfg.load_s + 5.0 * loaded)
            self.handled[f"depot:{stop.get('seq')}"] = version
            return
        await self.drive_to(float(stop["lat"]), float(stop["lng"]))
        t, w = sim.clock.now(), time.time()
        job, code = stop["job_id"], stop["package_code"]
        sim.truth.write("arrive", t, w, d=self.id, stop="delivery", job=job, lat=self.lat, lng=self.lng)
        sim.metrics.arrivals.setdefault(job, t)  # the first arrival at the door is what an ETA predicts
        dwell = float(self.rng.lognormal(math.log(sim.cfg.dwell_s), 0.35))
        attempt = self.attempts.get(job, 0)
        self.attempts[job] = attempt + 1
        order = sim.orders_by_job.get(job)
        absent = bool(order is not None and order.absent[min(attempt, 1)])
        await sim.clock.sleep(dwell * (0.5 if absent else 1.0))
        self.handled[job] = self.tasks_version
        # At the door: scan the parcel (the platform checks the phone's fix against the drop-off), then knock.
        lat, lng, acc = self._phone_position()
        r = await self.session.post("/v1/driver/scans", json={"kind": "delivery", "code": code, "lat": lat, "lng": lng,
                                                              "accuracy_m": acc})
        if r.status_code == 403 and "drop-off" in r.text:
            # The phone's fix is off (noise, multipath) while the driver stands at the door: the app asks why.
            sim.metrics.count("scan.delivery.outside_geofence_at_true_door")
            r = await self.session.post("/v1/driver/scans", json={"kind": "delivery", "code": code, "lat": lat, "lng": lng,
                                                                  "accuracy_m": acc, "override_reason": "GPS off; at the door"})
        sim.metrics.count(f"scan.delivery.{r.status_code}")
        if r.status_code != 200:
            log.warning("driver %s: delivery scan of %s refused: %s %s", self.id, code, r.status_code, r.text[:200])
            return
        if absent:
            r = await self.session.post(f"/v1/driver/deliveries/{job}/fail", json={"reason": "customer_absent", "lat": lat,
                                                                                  "lng": lng, "note": "nobody home"})
            sim.metrics.count(f"fail.{r.status_code}")
            if r.status_code == 200:
                body = r.json()
                sim.truth.write("failed", sim.clock.now(), time.time(), d=self.id, job=job, attempt=attempt + 1,
                                next=body.get("next", ""))
                log.debug("driver %s: failed attempt %d on %s: next %r", self.id, attempt + 1, job, body.get("next"))
                if str(body.get("next", "")).startswith("return"):
                    self.to_return.add(code)
            else:
                log.warning("driver %s: failed attempt on %s refused: %s %s", self.id, job, r.status_code, r.text[:200])
            return
        r = await self.session.post(f"/v1/driver/deliveries/{job}/proof", json={"kind": "signature", "signature_svg": SIGNATURE_SVG})
        sim.metrics.count(f"proof.{r.status_code}")
        if r.status_code == 200:
            self.finished.add(job)
            self.on_board.discard(code)
            sim.truth.write("delivered", sim.clock.now(), time.time(), d=self.id, job=job)

    async def _return_parcels(self) -> None:
        for code in sorted(self.to_return):
            r = await self.session.post(f"/v1/driver/returns/{code}")
            self.sim.metrics.count(f"return.{r.status_code}")
            if r.status_code in (200, 409):
                self.to_return.discard(code)
                self.on_board.discard(code)
                if r.status_code == 200:
                    self.finished.add(r.json()["job_id"])
                    self.sim.truth.write("returned", self.sim.clock.now(), time.time(), d=self.id, job=r.json()["job_id"])

    # -- sending fixes ---------------------------------------------------------------------------------
    async def _send_loop(self) -> None:
        """Drain this driver's queue of fix lists: MQTT QoS 1, or the driver WebSocket; bursts go over HTTP."""
        sim = self.sim
        while True:
            fixes = await self.queue.get()
            if fixes is None:
                return
            now = time.time()
            payloads = [f.payload(self.id, now) for f in fixes]
            if sim.cfg.transport == "mqtt" and self.mqtt is None:
                # Not connected (yet, or the broker has not learnt our password): the app buffers, like in a tunnel.
                self.backlog = (self.backlog + payloads)[-3600:]
                continue
            if self.backlog:
                payloads, self.backlog = self.backlog + payloads, []
            try:
                if len(payloads) > sim.cfg.burst_http_over:
                    r = await self.session.post("/v1/tracking/me/pings", json=payloads)
                    sim.metrics.on_batch(r)
                elif sim.cfg.transport == "ws":
                    await self._send_ws(payloads)
                else:
                    await self._send_mqtt(payloads)
                for p in payloads:
                    sim.metrics.on_sent(self.id, p)
            except Exception as exc:  # the phone keeps going; a lost send is counted
                sim.metrics.count("fixes.send_error")
                log.debug("driver %s: send failed: %s", self.id, exc)

    async def _send_mqtt(self, payloads: list[dict]) -> None:
        client = self.mqtt
        topic = f"{self.sim.cfg.topic_root}/drivers/{self.id}/location"
        for p in payloads:
            await client.publish(topic, json.dumps(p, separators=(",", ":")), qos=1)

    async def _send_ws(self, payloads: list[dict]) -> None:
        import websockets

        sim = self.sim
        if self.ws is None:
            self.ws = await websockets.connect(sim.ws_base + "/ws/driver",
                                               additional_headers={"Authorization": f"Bearer {self.session.access}"})
        try:
            await self.ws.send(json.dumps(payloads if len(payloads) > 1 else payloads[0]))
            reply = json.loads(await self.ws.recv())
        except Exception:
            with contextlib.suppress(Exception):
                await self.ws.close()
            self.ws = None
            raise
        sim.metrics.on_ws_reply(reply)
