"""Locust users for Serena: catalog readers and buyers (HTTP), trackers (customer WebSocket), drivers (MQTT fixes), dispatchers (fleet WebSocket).

Run through `serena load --profile smoke|peak` (headless, bounded, 127.0.0.1 only), or by
hand: `locust -f load/locustfile.py --host http://127.0.0.1:8000`.

The HTTP users offer a RATE, not just a number of users: each catalog reader makes
LOAD_CATALOG_RPS requests a second (constant throughput) and each buyer starts one
purchase (cart, line, quote, pay) every 1/LOAD_BUY_RATE seconds, so `peak` offers the
promised 500 catalog and 100 checkout requests a second; a platform that cannot keep up
shows as a rate below the offer (the runner counts that as a miss). The number of users
of each kind is fixed (LOAD_CATALOG_USERS, LOAD_BUYERS, LOAD_DRIVERS, LOAD_TRACKERS,
LOAD_DISPATCHERS). HTTP users are FastHttpUser (geventhttpclient): several times less
client CPU per request than `requests`, so the generator is not what limits the rate.

Setup happens once at test start through the public admin API (like the simulator): the
admin signs in with its TOTP code (SERENA_SIM_ADMIN_EMAIL / _PASSWORD / _TOTP_SECRET), creates
LOAD_DRIVERS drivers (each with its own broker credentials) and LOAD_LINKS tracking links.
Non-HTTP work is reported to Locust as request events: `MQTT publish location` is the time
from publish to the broker's PUBACK (QoS 1); `WS track` / `WS fleet` are the time from
connecting to the first snapshot, then each further message as `WS ... frame` with its gap.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import threading
import time
import uuid
from urllib.parse import urlsplit

import gevent
import pyotp
import requests  # setup only (once); users use geventhttpclient
from locust import User, constant, constant_throughput, events, task
from locust.contrib.fasthttp import FastHttpSession, FastHttpUser
from locust.runners import MasterRunner

ADMIN_EMAIL = os.environ.get("SERENA_SIM_ADMIN_EMAIL", "admin@serena.local")
ADMIN_PASSWORD = os.environ.get("SERENA_SIM_ADMIN_PASSWORD", "")
ADMIN_TOTP = os.environ.get("SERENA_SIM_ADMIN_TOTP_SECRET", "")
MQTT_URL = os.environ.get("SERENA_MQTT_URL", "mqtt://127.0.0.1:1884")
TOPIC_ROOT = os.environ.get("SERENA_MQTT_TOPIC_ROOT", "serena/v1")
STRIPE_BASE = os.environ.get("SERENA_STRIPE_API_BASE", "http://127.0.0.1:8420")
N_DRIVERS = int(os.environ.get("LOAD_DRIVERS", "10"))
N_LINKS = int(os.environ.get("LOAD_LINKS", "20"))
CATALOG_USERS = int(os.environ.get("LOAD_CATALOG_USERS", "6"))
CATALOG_RPS = float(os.environ.get("LOAD_CATALOG_RPS", "2"))  # requests a second per catalog reader
BUYERS = int(os.environ.get("LOAD_BUYERS", "2"))
BUY_RATE = float(os.environ.get("LOAD_BUY_RATE", "0.2"))  # purchases a second per buyer
TRACKERS = int(os.environ.get("LOAD_TRACKERS", "3"))
DISPATCHERS = int(os.environ.get("LOAD_DISPATCHERS", "1"))
CENTRE = (60.1699, 24.9384)  # Helsinki, the seeded shop's city
QUERIES = ("coffee", "cheese", "polo shirt", "cap", "oat drink", "phone case", "headlamp", "pies", "jacket", "tea")


class Shared:
    """What test_start prepared for all users (filled once, read by many greenlets)."""

    admin_token = ""
    drivers: list[dict] = []
    links: list[str] = []
    slugs: list[str] = []
    variants: list[int] = []
    _driver_iter = None
    lock = threading.Lock()

    @classmethod
    def next_driver(cls) -> dict | None:
        with cls.lock:
            if not cls.drivers:
                return None
            if cls._driver_iter is None:
                cls._driver_iter = itertools.cycle(cls.drivers)
            return next(cls._driver_iter)


def _admin_login(host: str) -> str:
    r = requests.post(f"{host}/v1/auth/login", json={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD,
                                                     "totp_code": pyotp.TOTP(ADMIN_TOTP).now()}, timeout=30)
    r.raise_for_status()
    return r.json()["access_token"]


@events.test_start.add_listener
def _setup(environment, **_kw) -> None:
    if isinstance(environment.runner, MasterRunner):
        return  # with --processes each worker process prepares its own users' data
    host = environment.host
    tag = uuid.uuid4().hex[:6]
    try:
        r = requests.get(f"{host}/v1/catalog/search", params={"page": 1}, timeout=30)
        Shared.slugs = [i["slug"] for i in r.json().get("items", ())]
        for slug in Shared.slugs[:10]:
            p = requests.get(f"{host}/v1/catalog/products/{slug}", timeout=30).json()
            Shared.variants += [v["id"] for v in p.get("variants", ()) if v.get("in_stock")]
    except Exception as exc:  # no shop seeded: shoppers only browse what there is
        print(f"load setup: catalog unavailable ({exc})")
    if not ADMIN_PASSWORD:
        print("load setup: no SERENA_SIM_ADMIN_PASSWORD: driver, tracker and dispatcher users are idle")
        return
    token = Shared.admin_token = _admin_login(host)
    h = {"Authorization": f"Bearer {token}"}
    for i in range(N_DRIVERS):
        email = f"load-{tag}-{i}@drivers.serena.local"
        r = requests.post(f"{host}/v1/admin/drivers", headers=h, timeout=60,
                          json={"email": email, "password": f"load driver {tag} {i}", "display_name": f"Load driver {i}"})
        if r.status_code == 201:
            Shared.drivers.append(r.json())
    for _ in range(N_LINKS):
        r = requests.post(f"{host}/v1/tracking/links", headers=h, json={"order_id": f"load-{tag}-{uuid.uuid4().hex[:8]}"}, timeout=30)
        if r.status_code == 201:
            Shared.links.append(r.json()["ws_path"])
    time.sleep(2.0)  # the API re-writes the broker's password file after each driver: let the last one land
    print(f"load setup: {len(Shared.drivers)} drivers, {len(Shared.links)} tracking links, {len(Shared.variants)} variants")


def _fire(environment, kind: str, name: str, t0: float, *, length: int = 0, exc: Exception | None = None) -> None:
    environment.events.request.fire(request_type=kind, name=name, response_time=(time.perf_counter() - t0) * 1000,
                                    response_length=length, exception=exc, context={})


class CatalogReader(FastHttpUser):
    """A shopper browsing: the category tree, catalog pages, word searches, product pages."""

    fixed_count = CATALOG_USERS
    wait_time = constant_throughput(CATALOG_RPS)

    @task(1)
    def categories(self) -> None:
        self.client.get("/v1/catalog/categories", name="GET /v1/catalog/categories")

    @task(3)
    def browse(self) -> None:
        self.client.get(f"/v1/catalog/search?page={random.randint(1, 5)}", name="GET /v1/catalog/search (browse)")

    @task(3)
    def search(self) -> None:
        self.client.get(f"/v1/catalog/search?q={random.choice(QUERIES).replace(' ', '+')}", name="GET /v1/catalog/search?q")

    @task(3)
    def product(self) -> None:
        if Shared.slugs:
            self.client.get(f"/v1/catalog/products/{random.choice(Shared.slugs)}", name="GET /v1/catalog/products/{slug}")


class Buyer(FastHttpUser):
    """A guest buying one item: cart, line, quote, a card on localstripe (the browser's part), checkout."""

    fixed_count = BUYERS
    wait_time = constant_throughput(BUY_RATE)

    def on_start(self) -> None:
        # Stripe.js's call from the browser: not the platform, reported under its own name (not held to a budget).
        self.stripe = FastHttpSession(base_url=STRIPE_BASE, request_event=self.environment.events.request, user=self)

    @task
    def buy(self) -> None:
        if not Shared.variants:
            gevent.sleep(5)
            return
        r = self.client.post("/v1/cart", json={}, name="POST /v1/cart")
        if r.status_code != 201:
            return
        token = r.json()["token"]
        self.client.put(f"/v1/cart/lines/{random.choice(Shared.variants)}", json={"quantity": 1},
                        headers={"X-Cart-Token": token}, name="PUT /v1/cart/lines/{id}")
        lat, lng = CENTRE[0] + random.uniform(-0.01, 0.01), CENTRE[1] + random.uniform(-0.02, 0.02)
        q = self.client.post("/v1/checkout/quote", json={"lat": lat, "lng": lng}, name="POST /v1/checkout/quote")
        if q.status_code != 200 or not q.json().get("windows"):
            return
        pm = self.stripe.post("/v1/payment_methods", name="localstripe payment_methods (browser side)",
                              headers={"Authorization": "Bearer sk_test_load",
                                       "Content-Type": "application/x-www-form-urlencoded"},
                              data="type=card&card[number]=4242424242424242&card[exp_month]=12&card[exp_year]=2030&card[cvc]=123")
        if pm.status_code != 200:
            return
        self.client.post("/v1/checkout", name="POST /v1/checkout", headers={"X-Cart-Token": token, "Idempotency-Key": uuid.uuid4().hex},
                         json={"email": f"load{random.randint(1, 10**9)}@example.test", "name": "Load Shopper", "address": "Load street 1",
                               "lat": lat, "lng": lng, "window_start": q.json()["windows"][0]["start"], "payment_method": "card",
                               "payment_method_id": pm.json()["id"]})


class _Socket(User):
    """A user that holds one WebSocket and reports its messages."""

    abstract = True
    wait_time = constant(1)
    hold_s = 30.0

    def _hold(self, url: str, name: str, first: str | None = None) -> None:
        import websocket  # websocket-client: blocking, gevent-friendly once monkey-patched

        t0 = time.perf_counter()
        try:
            ws = websocket.create_connection(url, timeout=10)
            if first:
                ws.send(first)
            msg = ws.recv()
            while '"type":"hello"' in msg.replace(" ", "")[:40]:  # the fleet socket's greeting: not the data yet
                msg = ws.recv()
            _fire(self.environment, "WS", name, t0, length=len(msg))
        except Exception as exc:
            _fire(self.environment, "WS", name, t0, exc=exc)
            gevent.sleep(2)
            return
        end = time.monotonic() + self.hold_s
        try:
            last = time.perf_counter()
            ws.settimeout(5)
            while time.monotonic() < end:
                try:
                    msg = ws.recv()
                except websocket.WebSocketTimeoutException:
                    continue
                _fire(self.environment, "WS", f"{name} frame", last, length=len(msg))
                last = time.perf_counter()
        except Exception as exc:
            _fire(self.environment, "WS", f"{name} frame", time.perf_counter(), exc=exc)
        finally:
            ws.close()


class Tracker(_Socket):
    """A customer with the tracking page open (the link's WebSocket)."""

    fixed_count = TRACKERS

    @task
    def track(self) -> None:
        if not Shared.links:
            gevent.sleep(5)
            return
        ws = self.host.replace("http://", "ws://") + random.choice(Shared.links)
        self._hold(ws, "WS /ws/track/{token}")


class Dispatcher(_Socket):
    """A dispatcher with the fleet board open."""

    fixed_count = DISPATCHERS

    @task
    def board(self) -> None:
        if not Shared.admin_token:
            gevent.sleep(5)
            return
        ws = self.host.replace("http://", "ws://") + "/ws/fleet"
        self._hold(ws, "WS /ws/fleet", first=json.dumps({"type": "auth", "access_token": Shared.admin_token}))


class Driver(User):
    """A driver's phone: MQTT v5 with the driver's own credentials, a QoS 1 fix every second."""

    fixed_count = N_DRIVERS
    wait_time = constant(1)

    def on_start(self) -> None:
        import paho.mqtt.client as mqtt

        self.driver = Shared.next_driver()
        self.client = None
        if self.driver is None:
            return
        u = urlsplit(MQTT_URL)
        t0 = time.perf_counter()
        deadline = time.monotonic() + 30.0
        while True:  # the broker learns a new driver's password when the API re-writes its files: retry until then
            connected = threading.Event()
            c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"load-{self.driver['id']}-{uuid.uuid4().hex[:6]}",
                            protocol=mqtt.MQTTv5)
            c.username_pw_set(self.driver["mqtt_username"], self.driver["mqtt_password"])
            c.on_connect = lambda client, userdata, flags, rc, props=None, ev=connected: ev.set() if not rc.is_failure else None
            try:
                c.connect(u.hostname or "127.0.0.1", u.port or 1883, keepalive=60)
                c.loop_start()
                for _ in range(50):
                    if connected.is_set():
                        break
                    gevent.sleep(0.1)
            except Exception:
                pass
            if connected.is_set():
                _fire(self.environment, "MQTT", "MQTT connect", t0)
                break
            c.loop_stop()
            if time.monotonic() > deadline:
                _fire(self.environment, "MQTT", "MQTT connect", t0, exc=ConnectionError("broker refused the driver for 30 s"))
                return
            gevent.sleep(1.0)
        self.client = c
        self.seq = int(time.time() * 10)
        self.lat, self.lng = CENTRE[0] + random.uniform(-0.01, 0.01), CENTRE[1] + random.uniform(-0.02, 0.02)

    def on_stop(self) -> None:
        if self.client is not None:
            self.client.loop_stop()
            self.client.disconnect()

    @task
    def fix(self) -> None:
        if self.client is None:
            gevent.sleep(5)
            return
        self.seq += 1
        self.lat += random.uniform(-0.00005, 0.00005)
        self.lng += random.uniform(-0.0001, 0.0001)
        body = json.dumps({"driver_id": self.driver["id"], "seq": self.seq, "ts": time.time(), "lat": self.lat, "lng": self.lng,
                           "accuracy_m": 8.0, "speed_mps": 8.0, "heading_deg": 90.0, "sent_at": time.time()})
        t0 = time.perf_counter()
        try:
            info = self.client.publish(f"{TOPIC_ROOT}/drivers/{self.driver['id']}/location", body, qos=1)
            info.wait_for_publish(timeout=10)
            _fire(self.environment, "MQTT", "MQTT publish location", t0, length=len(body),
                  exc=None if info.is_published() else TimeoutError("no PUBACK within 10 s"))
        except Exception as exc:
            _fire(self.environment, "MQTT", "MQTT publish location", t0, exc=exc)
