"""Our Mosquitto configuration against a real broker: each test starts its own mosquitto.

Every test renders our config (serena.broker) into its own tmp dir, starts mosquitto on a
free loopback port, and stops it at the end; the machine's brokers are never touched.
Driver clients use paho directly (MQTT v5, so a refused publish is visible as a PUBACK
reason code); the platform side uses core.mqtt.service_client (aiomqtt).
"""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import threading
import uuid
from collections.abc import Iterator

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from core import mqtt
from core.rbac import Role
from core.settings import Settings
from serena import broker

NOT_AUTHORIZED = 135  # MQTT v5 reason code 0x87
NO_MATCHING_SUBSCRIBERS = 16  # v5 PUBACK 0x10: accepted, nobody subscribed yet
END = b"end"  # end marker of a bulk run (see _slow_subscriber_loss)
WAIT_S = 20.0  # upper bound on any single wait; tests never assert on durations


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Conn:
    """A paho MQTT v5 client in its own network thread, recording what it receives."""

    def __init__(self, settings: Settings, username: str, password: str, *, client_id: str | None = None,
                 persistent: bool = False) -> None:
        self.settings = settings
        self.client_id = client_id or f"t-{uuid.uuid4().hex[:10]}"
        self.persistent = persistent
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=self.client_id, protocol=paho.MQTTv5)
        self.client.username_pw_set(username, password)
        self.client.max_inflight_messages_set(100)
        self.client.max_queued_messages_set(0)
        self.client.reconnect_delay_set(min_delay=0.1, max_delay=1)  # loop_stop waits out a pending delay
        self.messages: list[paho.MQTTMessage] = []
        self.acks: dict[int, int] = {}  # mid -> PUBACK reason code
        self.suback: dict[int, list[int]] = {}  # mid -> granted QoS / reason codes
        self.connack: int | None = None
        self.dropped = threading.Event()  # the broker closed a connection we had
        self._connected = threading.Event()
        self._cond = threading.Condition()
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_publish = self._on_publish
        self.client.on_subscribe = self._on_subscribe
        self.client.on_disconnect = lambda client, userdata, flags, rc, props: self.dropped.set()

    def _on_connect(self, client, userdata, flags, rc, props) -> None:
        self.connack = rc.value
        self._connected.set()

    def _on_message(self, client, userdata, msg) -> None:
        with self._cond:
            self.messages.append(msg)
            self._cond.notify_all()

    def _on_publish(self, client, userdata, mid, rc, props) -> None:
        with self._cond:
            self.acks[mid] = rc.value
            self._cond.notify_all()

    def _on_subscribe(self, client, userdata, mid, rcs, props) -> None:
        with self._cond:
            self.suback[mid] = [r.value for r in rcs]
            self._cond.notify_all()

    def connect(self) -> int:
        """Connect and return the CONNACK reason code (0 = accepted)."""
        ep = mqtt.parse_mqtt_url(self.settings.mqtt_url)
        props = None
        if self.persistent:
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = 3600
        self._connected.clear()
        self.client.connect(ep.host, ep.port, clean_start=not self.persistent, properties=props)
        self.client.loop_start()
        assert self._connected.wait(WAIT_S), "no CONNACK"
        if self.connack != 0:
            self.close()
        return self.connack

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def wait_for(self, predicate) -> None:
        with self._cond:
            assert self._cond.wait_for(predicate, timeout=WAIT_S), "condition not reached"

    def subscribe(self, topic: str, qos: int = 1) -> list[int]:
        _, mid = self.client.subscribe(topic, qos=qos)
        self.wait_for(lambda: mid in self.suback)
        return self.suback[mid]

    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> int:
        """Publish and return the broker's PUBACK reason code (0 = accepted, 135 = not authorised)."""
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        self.wait_for(lambda: info.mid in self.acks)
        rc = self.acks[info.mid]
        return 0 if rc == NO_MATCHING_SUBSCRIBERS else rc

    def payloads(self, topic: str | None = None) -> list[bytes]:
        with self._cond:
            return [m.payload for m in self.messages if topic is None or m.topic == topic]


@pytest.fixture
def start_broker(settings: Settings, tmp_path, topic_root: str) -> Iterator:
    """Factory: render our config (or one with overrides) into a tmp dir and start mosquitto on a free port."""
    started: list[Settings] = []

    def start(drivers=(), *, overrides=None, name: str = "mq") -> Settings:
        s = settings.model_copy(update={
            "mqtt_url": f"mqtt://127.0.0.1:{_free_port()}",
            "mosquitto_dir": tmp_path / name,
            "mqtt_topic_root": topic_root,
        })
        broker.write_broker_files(s, drivers, overrides=overrides)
        broker.start_broker(s)
        started.append(s)
        return s

    yield start
    for s in started:
        broker.stop_broker(s)


def _svc(s: Settings, **kw) -> Conn:
    return Conn(s, s.mqtt_service_username, s.mqtt_service_password, **kw)


PW_A, PW_B = "pw-driver-a", "pw-driver-b"
A, B = 101, 102


@pytest.fixture
def two_drivers(start_broker) -> Settings:
    return start_broker([(A, broker.hash_mqtt_password(PW_A)), (B, broker.hash_mqtt_password(PW_B))])


def test_our_hash_matches_mosquitto_passwd(tmp_path):
    pwfile = tmp_path / "pw"
    subprocess.run(["mosquitto_passwd", "-c", "-b", str(pwfile), "u", "s3cret"], check=True)
    theirs = pwfile.read_text().strip().split(":", 1)[1]
    assert theirs.startswith("$7$101$")
    assert broker.verify_mqtt_password("s3cret", theirs)
    assert not broker.verify_mqtt_password("wrong", theirs)
    # Same salt, same password: byte-identical to what mosquitto_passwd wrote.
    import base64

    salt = base64.b64decode(theirs.split("$")[3])
    assert broker.hash_mqtt_password("s3cret", salt=salt) == theirs


def test_wrong_password_and_unknown_user_are_refused(two_drivers):
    s = two_drivers
    assert Conn(s, mqtt.driver_username(A), PW_A).connect() == 0  # our $7$ hash accepted by mosquitto
    assert Conn(s, mqtt.driver_username(A), PW_B).connect() == NOT_AUTHORIZED
    assert Conn(s, mqtt.driver_username(999), PW_A).connect() == NOT_AUTHORIZED
    assert Conn(s, "", "").connect() != 0  # no anonymous access


async def test_driver_a_cannot_publish_as_driver_b(two_drivers):
    s = two_drivers
    b_location = mqtt.driver_topic(B, "location", root=s.mqtt_topic_root)
    async with mqtt.service_client(s, client_id="ingest-test", persistent=False) as svc:
        await svc.subscribe(mqtt.shared("ingest", mqtt.drivers_filter("location", root=s.mqtt_topic_root)), qos=1)
        a, b = Conn(s, mqtt.driver_username(A), PW_A), Conn(s, mqtt.driver_username(B), PW_B)
        assert a.connect() == 0 and b.connect() == 0
        try:
            # A's forged ping is refused at the broker (v5 PUBACK 0x87), and A may not write B's tasks either.
            assert a.publish(b_location, b"forged by A") == NOT_AUTHORIZED
            assert a.publish(mqtt.driver_topic(B, "scans", root=s.mqtt_topic_root), b"forged") == NOT_AUTHORIZED
            assert a.publish(mqtt.driver_topic(A, "tasks", root=s.mqtt_topic_root), b"own tasks", retain=True) == NOT_AUTHORIZED
            # B's own ping goes through. The broker delivers in order, so if A's had been accepted
            # it would have arrived first: the first message is B's.
            assert b.publish(b_location, b"from B") == 0
            async with asyncio.timeout(WAIT_S):
                async for message in svc.messages:
                    assert (message.topic.value, message.payload) == (b_location, b"from B")
                    break
        finally:
            a.close()
            b.close()


async def test_a_driver_reads_only_its_own_tasks(two_drivers):
    s = two_drivers
    root = s.mqtt_topic_root
    a_tasks, b_tasks = mqtt.driver_topic(A, "tasks", root=root), mqtt.driver_topic(B, "tasks", root=root)
    planner = _svc(s)
    assert planner.connect() == 0
    assert planner.publish(b_tasks, b"B's route", retain=True) == 0
    assert planner.publish(a_tasks, b"A's route", retain=True) == 0
    a = Conn(s, mqtt.driver_username(A), PW_A)
    assert a.connect() == 0
    try:
        # Mosquitto 2.0 grants the SUBSCRIBE (its ACL file is checked per delivered message,
        # not per filter), so what matters is that nothing of B's is ever delivered to A.
        a.subscribe(b_tasks)
        a.subscribe(mqtt.drivers_filter("tasks", root=root))
        assert a.subscribe(a_tasks) == [1]
        assert planner.publish(b_tasks, b"B's update") == 0
        assert planner.publish(a_tasks, b"A's update") == 0
        # Deliveries to one client are in order: once A's update is here, B's would have been too.
        a.wait_for(lambda: b"A's update" in [m.payload for m in a.messages])
        assert {m.topic for m in a.messages} == {a_tasks}
        assert {m.payload for m in a.messages} == {b"A's route", b"A's update"}
    finally:
        a.close()
        planner.close()


def _bulk_publish(s: Settings, topic: str, n: int) -> None:
    """Driver A publishes seqs 0..n-1 at QoS 1 with mosquitto_pub -l (one message per line; ~20x paho's rate)."""
    ep = mqtt.parse_mqtt_url(s.mqtt_url)
    out = subprocess.run(
        ["mosquitto_pub", "-h", ep.host, "-p", str(ep.port), "-V", "5", "-q", "1", "-l", "-t", topic,
         "-u", mqtt.driver_username(A), "-P", PW_A, "-i", f"driver-{A}-bulk"],
        input="".join(f"{seq}\n" for seq in range(n)), text=True, capture_output=True, timeout=WAIT_S,
    )
    # mosquitto_pub prints "Warning: Publish N failed: <reason>" for each refused PUBACK.
    assert out.returncode == 0 and out.stderr == "", out.stderr[:500]


def _ingest_sub(s: Settings, topic: str, *extra: str) -> list[str]:
    """mosquitto_sub as a persistent QoS 1 consumer `ingest-0` (v5, clean start off, 1 h session expiry).

    The C client does the protocol work; Python only reads lines. A paho subscriber spends
    most of its time on 20,000 callbacks and PUBACKs, which made this test CPU-bound.
    """
    ep = mqtt.parse_mqtt_url(s.mqtt_url)
    return ["mosquitto_sub", "-h", ep.host, "-p", str(ep.port), "-V", "5", "-q", "1", "-c", "-x", "3600",
            "-i", "ingest-0", "-u", s.mqtt_service_username, "-P", s.mqtt_service_password, "-t", topic, *extra]


def _slow_subscriber_loss(s: Settings, n: int) -> list[int]:
    """A persistent QoS 1 subscriber is away while `n` pings are published; which seqs does it get back?"""
    topic = mqtt.driver_topic(A, "location", root=s.mqtt_topic_root)
    # Subscribe (-E: exit once the SUBACK is in); the ingest process is down from here on.
    subprocess.run(_ingest_sub(s, topic, "-E"), check=True, timeout=WAIT_S)

    _bulk_publish(s, topic, n)  # every one PUBACKed as accepted by the broker

    sub = subprocess.Popen(_ingest_sub(s, topic), stdout=subprocess.PIPE, text=True)
    driver = Conn(s, mqtt.driver_username(A), PW_A)
    assert driver.connect() == 0
    # End marker, re-sent until seen: one client's queue is FIFO, so once a marker published
    # after the reconnect arrives, everything the broker still held for us has been delivered.
    seen_end = threading.Event()

    def send_end_markers() -> None:
        while not seen_end.is_set():
            driver.client.publish(topic, END, qos=1)
            seen_end.wait(0.05)

    marker_thread = threading.Thread(target=send_end_markers, daemon=True)
    marker_thread.start()
    got: list[int] = []
    try:
        for line in sub.stdout:
            if line == END.decode() + "\n":
                break
            got.append(int(line))
    finally:
        seen_end.set()
        marker_thread.join()
        sub.terminate()
        sub.wait(WAIT_S)
        driver.close()
    return got


def test_slow_subscriber_loses_nothing_with_our_limits_and_loses_with_mosquitto_defaults(start_broker):
    n = 20_000
    creds = [(A, broker.hash_mqtt_password(PW_A))]

    ours = start_broker(creds, name="ours")
    assert _slow_subscriber_loss(ours, n) == list(range(n))  # every seq, in order, once

    defaults = start_broker(creds, overrides=broker.MOSQUITTO_DEFAULT_LIMITS, name="defaults")
    got = _slow_subscriber_loss(defaults, n)
    assert len(got) < n  # Mosquitto's max_queued_messages 1000 dropped the rest, silently to both ends
    assert got == list(range(len(got)))  # what it kept is the oldest prefix
    assert "Outgoing messages are being dropped for client ingest-0" in (defaults.mosquitto_dir / "mosquitto.log").read_text()


async def test_new_driver_credentials_take_effect_on_sighup_without_restart(start_broker, settings, pool):
    s = start_broker([])
    pid = broker.broker_pid(s)
    email = f"driver-{uuid.uuid4().hex[:8]}@test.serena"
    user_id = await pool.fetchval(
        "INSERT INTO users (id, email, password_hash, full_name, is_active)"
        " VALUES (gen_random_uuid(), $1, 'x', 'New Driver', true) RETURNING id",
        email,
    )
    clear, hashed = broker.new_mqtt_password()
    driver_id = await pool.fetchval(
        "INSERT INTO drivers (user_id, display_name, phone, mqtt_password_hash, active)"
        " VALUES ($1, 'New Driver', '', $2, true) RETURNING id",
        user_id, hashed,
    )
    try:
        username = mqtt.driver_username(driver_id)
        assert Conn(s, username, clear).connect() == NOT_AUTHORIZED  # not in the broker's files yet

        result = await broker.sync_broker_credentials(pool_or_session=pool, settings=s)
        assert result.reloaded and result.drivers >= 1
        assert broker.broker_pid(s) == pid  # same process: reloaded, not restarted

        # SIGHUP is handled asynchronously by the broker's loop: retry until it has reloaded.
        async with asyncio.timeout(WAIT_S):
            while (rc := Conn(s, username, clear).connect()) != 0:
                assert rc == NOT_AUTHORIZED
                await asyncio.sleep(0.05)
        driver = Conn(s, username, clear)
        assert driver.connect() == 0
        assert driver.publish(mqtt.driver_topic(driver_id, "location", root=s.mqtt_topic_root), b"{}") == 0
        assert driver.publish(mqtt.driver_topic(driver_id + 1, "location", root=s.mqtt_topic_root), b"{}") == NOT_AUTHORIZED

        # Deactivating the driver and syncing again drops its live connection and locks it out.
        await pool.execute("UPDATE drivers SET active = false WHERE id = $1", driver_id)
        await broker.sync_broker_credentials(pool_or_session=pool, settings=s)
        assert await asyncio.to_thread(driver.dropped.wait, WAIT_S)
        driver.close()
        assert Conn(s, username, clear).connect() == NOT_AUTHORIZED
    finally:
        await pool.execute("DELETE FROM users WHERE id = $1", user_id)


async def test_a_burst_of_syncs_shares_one_reload_and_every_new_driver_can_connect(start_broker, settings, pool):
    s = start_broker([])
    log = s.mosquitto_dir / "mosquitto.log"
    reloads_before = log.read_text().count("Reloading config")
    created: list[tuple[uuid.UUID, int, str]] = []
    try:
        for i in range(5):
            user_id = await pool.fetchval(
                "INSERT INTO users (id, email, password_hash, full_name, is_active)"
                " VALUES (gen_random_uuid(), $1, 'x', 'Burst Driver', true) RETURNING id",
                f"burst-{i}-{uuid.uuid4().hex[:8]}@test.serena",
            )
            clear, hashed = broker.new_mqtt_password()
            driver_id = await pool.fetchval(
                "INSERT INTO drivers (user_id, display_name, phone, mqtt_password_hash, active)"
                " VALUES ($1, 'Burst Driver', '', $2, true) RETURNING id",
                user_id, hashed,
            )
            created.append((user_id, driver_id, clear))
        # Five creations' syncs at once (as five admin requests would): one read, one write, one SIGHUP.
        results = await asyncio.gather(*(broker.sync_broker_credentials(pool_or_session=pool, settings=s)
                                         for _ in created))
        assert len({id(r) for r in results}) == 1 and results[0].reloaded
        async with asyncio.timeout(WAIT_S):
            for _, driver_id, clear in created:
                while (rc := Conn(s, mqtt.driver_username(driver_id), clear).connect()) != 0:
                    assert rc == NOT_AUTHORIZED
                    await asyncio.sleep(0.05)
        assert log.read_text().count("Reloading config") - reloads_before == 1
        # A call after that sync has read the table starts a new one (it must see later changes).
        again = await broker.sync_broker_credentials(pool_or_session=pool, settings=s)
        assert again is not results[0] and again.drivers == results[0].drivers
    finally:
        for user_id, _, _ in created:
            await pool.execute("DELETE FROM users WHERE id = $1", user_id)


@pytest.mark.asyncio(loop_scope="session")
async def test_a_driver_created_through_the_admin_api_can_connect_without_any_later_creation(
        start_broker, app, client, make_account, pool):
    """The sync scheduled by the create request must see the new driver: no later sync is coming to fix it."""
    s = start_broker([])
    admin = await make_account(Role.DISPATCHER)
    saved = app.state.settings
    app.state.settings = s  # this app's broker sync writes into the test broker's dir
    try:
        r = await client.post("/v1/admin/drivers", headers=admin.headers, json={
            "email": f"api-{uuid.uuid4().hex[:8]}@test.serena", "password": "correct horse battery",
            "display_name": "API Driver"})
        assert r.status_code == 201, r.text
        body = r.json()
        async with asyncio.timeout(WAIT_S):
            while (rc := Conn(s, body["mqtt_username"], body["mqtt_password"]).connect()) != 0:
                assert rc == NOT_AUTHORIZED
                await asyncio.sleep(0.05)
    finally:
        app.state.settings = saved
        await pool.execute("DELETE FROM users WHERE id = (SELECT user_id FROM drivers WHERE id = $1)", body["id"])


def test_queued_qos1_messages_survive_a_broker_restart(start_broker):
    s = start_broker([(A, broker.hash_mqtt_password(PW_A))])
    topic = mqtt.driver_topic(A, "location", root=s.mqtt_topic_root)
    sub = _svc(s, client_id="ingest-0", persistent=True)
    assert sub.connect() == 0
    assert sub.subscribe(topic) == [1]
    sub.close()
    n = 500
    _bulk_publish(s, topic, n)

    pid = broker.broker_pid(s)
    assert broker.stop_broker(s, sig=signal.SIGTERM)  # kill: Mosquitto writes its store on the way out
    assert broker.broker_pid(s) is None
    broker.start_broker(s)
    assert broker.broker_pid(s) not in (None, pid)

    sub = _svc(s, client_id="ingest-0", persistent=True)
    assert sub.connect() == 0  # no re-subscribe: the session and its subscription were persisted
    sub.wait_for(lambda: len(sub.messages) >= n)
    sub.close()
    assert [int(p) for p in sub.payloads()] == list(range(n))


def test_topic_helpers_round_trip_and_refuse_what_is_not_a_driver_topic():
    assert mqtt.driver_topic(7, "location", root="serena/v1") == "serena/v1/drivers/7/location"
    assert mqtt.parse_driver_topic("serena/v1/drivers/7/scans", root="serena/v1") == (7, "scans")
    assert mqtt.shared("ingest", mqtt.drivers_filter("location", root="r")) == "$share/ingest/r/drivers/+/location"
    assert mqtt.driver_username(7) == "7"  # must equal the topic's id segment: the ACL is %u patterns
    for bad in ("serena/v1/drivers/x/location", "serena/v1/drivers/7/photos", "other/drivers/7/location"):
        with pytest.raises(ValueError):
            mqtt.parse_driver_topic(bad, root="serena/v1")
    with pytest.raises(ValueError):
        mqtt.driver_topic(7, "photos", root="serena/v1")
    ep = mqtt.parse_mqtt_url("mqtt://127.0.0.1:1884")
    assert (ep.host, ep.port, ep.tls) == ("127.0.0.1", 1884, False)
    assert mqtt.parse_mqtt_url("mqtts://broker.example").port == 8883


async def test_service_client_session_keeps_qos1_messages_while_the_process_is_away(start_broker):
    s = start_broker([(A, broker.hash_mqtt_password(PW_A))])
    topic = mqtt.driver_topic(A, "status", root=s.mqtt_topic_root)
    async with mqtt.service_client(s, client_id="planner-0") as client:
        await client.subscribe(topic, qos=1)
    _bulk_publish(s, topic, 3)  # while planner-0 is away
    async with mqtt.service_client(s, client_id="planner-0") as client:  # no re-subscribe
        got = []
        async with asyncio.timeout(WAIT_S):
            async for message in client.messages:
                got.append(message.payload)
                if len(got) == 3:
                    break
    assert got == [b"0", b"1", b"2"]
