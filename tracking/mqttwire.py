"""A minimal MQTT v5 subscriber on the asyncio event loop, with acknowledgement left to the caller.

Ingest needs exactly one thing from MQTT: QoS 1 PUBLISHes on one (shared) subscription, each
PUBACKed only when the caller says so (after the batch committed). paho does that with
`manual_ack`, but its reader is a thread per connection that reads every packet with three
`recv` calls (command byte, length bytes, body) and wakes its `select` through a socket pair
for every PUBACK queued from another thread: at 2,500 messages a second per process those
threads were 0.29 cores of ingest's 0.68 and competed with the event loop for the GIL. Here a
connection is an `asyncio.Protocol`: one `recv` hands over whatever arrived (often dozens of
PUBLISHes), they are parsed in the read callback, and a batch's PUBACKs go out in one write.

What is implemented is what a subscriber of ours needs, nothing more: CONNECT (user name,
password, clean start off, Session Expiry Interval, Receive Maximum), CONNACK, SUBSCRIBE /
SUBACK, PUBLISH at QoS 0/1 (QoS 2 is never granted: we subscribe at QoS 1), PUBACK, PINGREQ /
PINGRESP keep-alive, DISCONNECT both ways, reconnect with back-off. A protocol error closes the
connection; the broker keeps the session and re-delivers whatever was not acknowledged.

Acknowledgements are per connection *generation*: a PUBACK for a message received on a
connection that has since dropped is not sent on its successor (the broker re-delivers that
message on the new connection; the history key absorbs the duplicate), so an acknowledgement
can only ever name a message of the live connection.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Callable

log = logging.getLogger("serena.tracking.mqttwire")

CONNECT, CONNACK, PUBLISH, PUBACK, SUBSCRIBE, SUBACK = 1, 2, 3, 4, 8, 9
PINGREQ, PINGRESP, DISCONNECT, AUTH = 12, 13, 14, 15

PINGREQ_PACKET = b"\xc0\x00"
DISCONNECT_PACKET = b"\xe0\x00"  # v5: remaining length 0 = reason 0x00, normal disconnection (the session is kept)


class ProtocolError(Exception):
    pass


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | 0x80 if n else b)
        if not n:
            return bytes(out)


def _read_varint(buf, pos: int) -> tuple[int, int] | None:
    """(value, next position), or None if the buffer ends inside the number."""
    mult, value = 1, 0
    for k in range(4):
        if pos + k >= len(buf):
            return None
        b = buf[pos + k]
        value += (b & 0x7F) * mult
        if not b & 0x80:
            return value, pos + k + 1
        mult <<= 7
    raise ProtocolError("malformed variable byte integer")


def _s(b: bytes) -> bytes:
    return len(b).to_bytes(2, "big") + b


def connect_packet(client_id: str, *, username: str | None, password: str | None, keepalive: int,
                   clean_start: bool, session_expiry_s: int, receive_maximum: int) -> bytes:
    flags = 0x02 if clean_start else 0
    payload = _s(client_id.encode())
    if username is not None:
        flags |= 0x80
        payload += _s(username.encode())
    if password is not None:
        flags |= 0x40
        payload += _s(password.encode())
    props = b"\x11" + session_expiry_s.to_bytes(4, "big") + b"\x21" + receive_maximum.to_bytes(2, "big")
    body = _s(b"MQTT") + bytes([5, flags]) + keepalive.to_bytes(2, "big") + varint(len(props)) + props + payload
    return b"\x10" + varint(len(body)) + body


def subscribe_packet(packet_id: int, topic_filter: str, qos: int) -> bytes:
    body = packet_id.to_bytes(2, "big") + b"\x00" + _s(topic_filter.encode()) + bytes([qos])
    return b"\x82" + varint(len(body)) + body


def puback_packets(mids) -> bytes:
    """PUBACKs with reason 0 and no properties (v5 lets both be left out: remaining length 2)."""
    return b"".join([b"\x40\x02" + m.to_bytes(2, "big") for m in mids])


# on_publish(generation, mid, qos, topic, payload, received_at)
OnPublish = Callable[[int, int, int, str, bytes, float], None]


class SubscriberProtocol(asyncio.Protocol):
    """One MQTT v5 connection: CONNECT on connect, SUBSCRIBE after CONNACK, PUBLISHes to `on_publish`."""

    def __init__(self, *, connect: bytes, subscribe: bytes, generation: int, on_publish: OnPublish) -> None:
        self.connect = connect
        self.subscribe = subscribe
        self.generation = generation
        self.on_publish = on_publish
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None
        loop = asyncio.get_running_loop()
        self.connacked: asyncio.Future = loop.create_future()  # True = the broker resumed a session
        self.subacked: asyncio.Future = loop.create_future()
        self.lost: asyncio.Future = loop.create_future()  # result: the exception / reason, or None
        self.last_write = time.monotonic()
        self.last_read = time.monotonic()
        self.ping_sent_at = 0.0

    # --- asyncio.Protocol --------------------------------------------------------------------------

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.write(self.connect)

    def connection_lost(self, exc) -> None:
        self.transport = None
        for f in (self.connacked, self.subacked):
            if not f.done():
                f.set_exception(ConnectionError(f"MQTT connection closed: {exc}"))
                f.exception()  # whoever awaits it gets the error; nobody awaiting it is not worth a log line
        if not self.lost.done():
            self.lost.set_result(exc)

    def data_received(self, data: bytes) -> None:
        self.last_read = time.monotonic()
        buf = self.buf
        buf += data
        pos, n = 0, len(buf)
        try:
            while pos < n:
                head = buf[pos]
                rl = _read_varint(buf, pos + 1)
                if rl is None:
                    break
                length, start = rl
                end = start + length
                if end > n:
                    break
                kind = head >> 4
                if kind == PUBLISH:
                    self._publish(head, buf, start, end)
                else:
                    self._control(kind, bytes(buf[start:end]))
                pos = end
        except ProtocolError as exc:
            log.warning("MQTT protocol error, closing the connection: %s", exc)
            del buf[:]
            self.close()
            return
        if pos:
            del buf[:pos]

    # --- packets -----------------------------------------------------------------------------------

    def _publish(self, head: int, buf: bytearray, start: int, end: int) -> None:
        qos = (head >> 1) & 3
        tlen = int.from_bytes(buf[start:start + 2], "big")
        p = start + 2 + tlen
        topic = buf[start + 2:p].decode()
        mid = 0
        if qos:
            if qos > 1:
                raise ProtocolError("QoS 2 PUBLISH on a QoS 1 subscription")
            mid = int.from_bytes(buf[p:p + 2], "big")
            p += 2
        plen = buf[p]
        if plen < 0x80:  # the usual case: no or few properties
            p += 1 + plen
        else:
            rl = _read_varint(buf, p)
            if rl is None:
                raise ProtocolError("truncated PUBLISH properties")
            p = rl[1] + rl[0]
        if p > end:
            raise ProtocolError("malformed PUBLISH")
        self.on_publish(self.generation, mid, qos, topic, bytes(buf[p:end]), time.time())

    def _control(self, kind: int, body: bytes) -> None:
        if kind == CONNACK:
            if len(body) < 2:
                raise ProtocolError("short CONNACK")
            if body[1] != 0:
                self._refused(self.connacked, f"CONNACK reason code 0x{body[1]:02x}")
                return
            if not self.connacked.done():
                self.connacked.set_result(bool(body[0] & 1))
            self.write(self.subscribe)
        elif kind == SUBACK:
            rl = _read_varint(body, 2)
            codes = body[rl[1] + rl[0]:] if rl else b""
            if not codes or codes[0] >= 0x80:
                self._refused(self.subacked, f"SUBACK reason code 0x{codes[0] if codes else 0:02x}")
                return
            if not self.subacked.done():
                self.subacked.set_result(codes[0])
        elif kind == PINGRESP:
            self.ping_sent_at = 0.0
        elif kind == DISCONNECT:
            reason = body[0] if body else 0
            log.warning("the MQTT broker disconnected us (reason 0x%02x)", reason)
            self.close()
        elif kind not in (PUBACK, AUTH):  # those two are ignored: we publish nothing, no enhanced authentication
            raise ProtocolError(f"unexpected packet type {kind}")

    def _refused(self, waiter: asyncio.Future, reason: str) -> None:
        """The broker refused the connection or the subscription: fail whoever waits for it, then close."""
        if not waiter.done():
            waiter.set_exception(ConnectionRefusedError(reason))
        self.close()

    # --- writing -----------------------------------------------------------------------------------

    def write(self, data: bytes) -> bool:
        t = self.transport
        if t is None or t.is_closing():
            return False
        t.write(data)
        self.last_write = time.monotonic()
        return True

    def keepalive(self, keepalive_s: float) -> None:
        """Called about once a second: PINGREQ when we have been quiet; close if the broker went silent."""
        now = time.monotonic()
        if self.ping_sent_at and now - self.ping_sent_at > keepalive_s:
            log.warning("MQTT broker did not answer PINGREQ within %.0f s; reconnecting", keepalive_s)
            self.close()
        elif not self.ping_sent_at and now - self.last_write >= keepalive_s / 2:
            if self.write(PINGREQ_PACKET):
                self.ping_sent_at = now

    def close(self, *, disconnect: bool = False) -> None:
        t = self.transport
        if t is not None and not t.is_closing():
            if disconnect:
                t.write(DISCONNECT_PACKET)
            t.close()


class Subscriber:
    """One persistent-session subscription kept connected (reconnects with back-off) on the running loop.

    `on_publish(generation, mid, qos, topic, payload, received_at)` runs in the read callback;
    `ack(generation, mids)` PUBACKs messages of that generation if its connection is still the live one.
    """

    def __init__(self, *, host: str, port: int, tls: bool, client_id: str, username: str | None, password: str | None,
                 topic_filter: str, on_publish: OnPublish, keepalive_s: int = 30, session_expiry_s: int = 0,
                 receive_maximum: int = 65535, reconnect_min_s: float = 0.2, reconnect_max_s: float = 5.0) -> None:
        self.host, self.port, self.tls = host, port, tls
        self.client_id = client_id
        self.keepalive_s = keepalive_s
        self.on_publish = on_publish
        self._connect = connect_packet(client_id, username=username, password=password, keepalive=keepalive_s,
                                       clean_start=False, session_expiry_s=session_expiry_s,
                                       receive_maximum=receive_maximum)
        self._subscribe = subscribe_packet(1, topic_filter, 1)
        self.reconnect = (reconnect_min_s, reconnect_max_s)
        self.proto: SubscriberProtocol | None = None
        self.generation = 0
        self.connected = asyncio.Event()
        self.subscribed = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._closing = False

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _open(self) -> SubscriberProtocol:
        loop = asyncio.get_running_loop()
        self.generation += 1
        gen = self.generation
        proto = SubscriberProtocol(connect=self._connect, subscribe=self._subscribe, generation=gen,
                                   on_publish=self.on_publish)
        ctx = ssl.create_default_context() if self.tls else None
        await asyncio.wait_for(loop.create_connection(lambda: proto, self.host, self.port, ssl=ctx), 10)
        try:
            await asyncio.wait_for(proto.connacked, 10)
        except BaseException:
            proto.close()
            raise
        return proto

    async def _run(self) -> None:
        delay = self.reconnect[0]
        while not self._closing:
            try:
                proto = await self._open()
            except (OSError, ConnectionError, TimeoutError) as exc:
                log.warning("MQTT connection %s failed (%s); retrying in %.1f s", self.client_id, exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.reconnect[1])
                continue
            self.proto = proto
            self.connected.set()
            ok = False
            try:
                await proto.subacked
                self.subscribed.set()
                ok = True
                delay = self.reconnect[0]  # back-off restarts only once a connection fully worked
            except (ConnectionError, OSError) as exc:
                log.warning("MQTT subscription of %s failed: %s", self.client_id, exc)
            while not proto.lost.done():
                await asyncio.wait([proto.lost], timeout=1.0)
                proto.keepalive(self.keepalive_s)
            self.connected.clear()
            self.proto = None
            if not self._closing:
                log.warning("MQTT connection %s lost (%s); reconnecting in %.1f s", self.client_id, proto.lost.result(), delay)
                await asyncio.sleep(delay)
                if not ok:
                    delay = min(delay * 2, self.reconnect[1])

    def ack(self, generation: int, mids) -> bool:
        """PUBACK `mids` if they came on the live connection (else the broker re-delivers them)."""
        proto = self.proto
        if proto is None or proto.generation != generation:
            return False
        return proto.write(puback_packets(mids))

    def stop(self) -> None:
        """DISCONNECT (normal: the broker keeps the session and its unacknowledged messages) and stop reconnecting."""
        self._closing = True
        if self.proto is not None:
            self.proto.close(disconnect=True)
        if self._task is not None:
            self._task.cancel()
