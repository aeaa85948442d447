"""tracking.mqttwire: the asyncio MQTT v5 subscriber ingest reads with (parsing, acks per connection generation, a real broker)."""

from __future__ import annotations

import asyncio

import orjson
import paho.mqtt.client as paho

from core import mqtt
from serena import broker
from tracking import mqttwire

PW = "driver-secret"


class _Transport:
    def __init__(self) -> None:
        self.out = bytearray()
        self.closed = False

    def write(self, data: bytes) -> None:
        self.out += data

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True


def _publish(topic: str, payload: bytes, *, qos: int, mid: int = 0, props: bytes = b"", dup: bool = False) -> bytes:
    var = len(topic).to_bytes(2, "big") + topic.encode() + (mid.to_bytes(2, "big") if qos else b"")
    var += mqttwire.varint(len(props)) + props
    head = 0x30 | (qos << 1) | (0x08 if dup else 0)
    return bytes([head]) + mqttwire.varint(len(var) + len(payload)) + var + payload


def _proto(got: list, generation: int = 1) -> tuple[mqttwire.SubscriberProtocol, _Transport]:
    p = mqttwire.SubscriberProtocol(connect=b"CONNECT", subscribe=b"SUBSCRIBE", generation=generation,
                                    on_publish=lambda *a: got.append(a[:5]))
    t = _Transport()
    p.connection_made(t)
    return p, t


async def test_packets_split_anywhere_across_reads_are_parsed_whole_and_in_order():
    big = b"x" * 300  # a remaining length of two bytes
    user_props = b"\x26" + (1).to_bytes(2, "big") + b"k" + (1).to_bytes(2, "big") + b"v"  # a user property
    long_props = b"\x26" + (100).to_bytes(2, "big") + b"k" * 100 + (30).to_bytes(2, "big") + b"v" * 30  # > 127 bytes
    stream = (b"\x20\x03\x01\x00\x00"  # CONNACK, session present, reason 0, no properties
              + b"\x90\x04\x00\x01\x00\x01"  # SUBACK, packet id 1, granted QoS 1
              + _publish("a/drivers/7/location", b'{"seq":1}', qos=1, mid=11)
              + _publish("a/drivers/8/location", big, qos=1, mid=12, props=user_props, dup=True)
              + b"\xd0\x00"  # PINGRESP
              + _publish("a/drivers/9/location", b"{}", qos=0)
              + _publish("a/drivers/10/location", b"[]", qos=1, mid=65535, props=long_props))
    want = [(1, 11, 1, "a/drivers/7/location", b'{"seq":1}'), (1, 12, 1, "a/drivers/8/location", big),
            (1, 0, 0, "a/drivers/9/location", b"{}"), (1, 65535, 1, "a/drivers/10/location", b"[]")]
    for step in (1, 2, 3, 7, 64, len(stream)):
        got: list = []
        p, t = _proto(got)
        for i in range(0, len(stream), step):
            p.data_received(stream[i:i + step])
        assert got == want, step
        assert p.connacked.result() is True and p.subacked.result() == 1
        assert bytes(t.out) == b"CONNECTSUBSCRIBE" and not p.buf and not t.closed


async def test_a_refused_connect_or_subscription_closes_the_connection():
    p, t = _proto([])
    p.data_received(b"\x20\x03\x00\x87\x00")  # CONNACK 0x87 not authorized
    assert t.closed and isinstance(p.connacked.exception(), ConnectionRefusedError)
    p, t = _proto([])
    p.data_received(b"\x20\x03\x00\x00\x00\x90\x04\x00\x01\x00\x87")  # SUBACK 0x87
    assert t.closed and isinstance(p.subacked.exception(), ConnectionRefusedError)
    p, t = _proto([])
    p.data_received(b"\x20\x03\x00\x00\x00" + _publish("t", b"x", qos=2, mid=3))  # QoS 2 is never granted
    assert t.closed


async def test_acks_go_out_in_one_write_and_never_to_a_later_connection():
    sub = mqttwire.Subscriber(host="127.0.0.1", port=1, tls=False, client_id="c", username=None, password=None,
                              topic_filter="t", on_publish=lambda *a: None)
    p, t = _proto([], generation=4)
    sub.proto, sub.generation = p, 4
    assert sub.ack(4, [1, 2, 300])
    assert bytes(t.out).endswith(b"\x40\x02\x00\x01\x40\x02\x00\x02\x40\x02\x01\x2c")
    before = bytes(t.out)
    assert not sub.ack(3, [5])  # received on the connection before this one: the broker re-delivers it
    sub.proto = None
    assert not sub.ack(4, [6])  # no connection at all
    assert bytes(t.out) == before


async def test_an_unacknowledged_message_comes_back_after_a_reconnect_and_an_acknowledged_one_does_not(
        start_broker, tsettings, new_driver_id):
    d = new_driver_id()
    s = start_broker([(d, broker.hash_mqtt_password(PW))])
    ep = mqtt.parse_mqtt_url(s.mqtt_url)
    got: list = []
    arrived = asyncio.Event()

    def on_publish(gen, mid, qos, topic, payload, received_at):
        got.append((gen, mid, qos, topic, orjson.loads(payload)["seq"]))
        arrived.set()

    sub = mqttwire.Subscriber(host=ep.host, port=ep.port, tls=False, client_id=f"wire-{d}",
                              username=s.mqtt_service_username, password=s.mqtt_service_password,
                              topic_filter=mqtt.shared("wiretest", mqtt.drivers_filter("location", root=s.mqtt_topic_root)),
                              on_publish=on_publish, session_expiry_s=600, reconnect_min_s=0.05)
    sub.start()
    drv = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=f"drv-{d}", protocol=paho.MQTTv5)
    drv.username_pw_set(mqtt.driver_username(d), PW)
    drv.connect(ep.host, ep.port)
    drv.loop_start()

    async def wait_for(n: int) -> None:
        async with asyncio.timeout(10):
            while len(got) < n:
                arrived.clear()
                await arrived.wait()

    async def reconnect() -> None:
        old = sub.generation
        sub.proto.transport.abort()  # the connection drops without DISCONNECT, as in a crash
        async with asyncio.timeout(10):
            while sub.generation == old or not sub.subscribed.is_set() or sub.proto is None:
                await asyncio.sleep(0.02)
            await sub.proto.subacked

    try:
        await asyncio.wait_for(sub.subscribed.wait(), 10)
        topic = mqtt.driver_topic(d, "location", root=s.mqtt_topic_root)
        for seq in (1, 2):
            drv.publish(topic, orjson.dumps({"seq": seq}), qos=1).wait_for_publish(5)
        await wait_for(2)
        (g1, mid1, *_), (_, mid2, *_) = got
        assert [x[2:] for x in got] == [(1, topic, 1), (1, topic, 2)]
        assert sub.ack(g1, [mid1])  # seq 1 acknowledged, seq 2 not
        await asyncio.sleep(0.2)
        await reconnect()
        await wait_for(3)
        await asyncio.sleep(0.3)
        assert [x[4] for x in got[2:]] == [2]  # only the unacknowledged one came back
        g2, mid2b = got[2][0], got[2][1]
        assert g2 > g1
        assert not sub.ack(g1, [mid2])  # an ack for the dropped connection is not sent on the new one
        assert sub.ack(g2, [mid2b])
        await asyncio.sleep(0.2)
        await reconnect()
        await asyncio.sleep(0.5)
        assert len(got) == 3  # nothing left in the session
    finally:
        drv.disconnect()
        drv.loop_stop()
        sub.stop()
