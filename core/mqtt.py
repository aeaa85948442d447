"""MQTT for the platform's own processes: the broker URL, service-account clients and topic names.

Drivers talk to the broker with credentials of their own (username = the driver id, see docs/broker.md);
the platform's processes (ingest, planner, simulator harness) connect with the service
account from settings. Topic names are built here and nowhere else, so the ACL generated
by `serena.broker` and the code that publishes always agree on the layout:

    {root}/drivers/{driver_id}/location   driver -> server, QoS 1
    {root}/drivers/{driver_id}/scans      driver -> server, QoS 1
    {root}/drivers/{driver_id}/status     driver -> server
    {root}/drivers/{driver_id}/tasks      server -> driver, retained

We speak MQTT v5: a refused publish comes back as a PUBACK reason code instead of being
dropped silently (v3.1.1), and a persistent session needs an explicit session-expiry
interval, which `service_client` sets.

Driver broker passwords are hashed here (`hash_mqtt_password`, Mosquitto's own `$7$`
format) rather than in serena.broker, so identity/dispatch code can issue credentials
without importing the composition root.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Literal
from urllib.parse import unquote, urlsplit

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from core.settings import Settings, get_settings

DriverTopicKind = Literal["location", "scans", "status", "tasks"]
DRIVER_TOPIC_KINDS: tuple[str, ...] = ("location", "scans", "status", "tasks")
# What a driver may publish; `tasks` is written by the planner only (a driver that could
# publish its own retained task list could overwrite what dispatch assigned).
DRIVER_PUBLISH_KINDS: tuple[str, ...] = ("location", "scans", "status")

# A persistent session outlives a disconnect by this long (MQTT v5 Session Expiry Interval).
# 0 would mean "discard on disconnect" — the v5 default, and the opposite of what QoS 1
# consumers need. One week matches the broker's persistent_client_expiration.
SESSION_EXPIRY_S = 7 * 24 * 3600


# Mosquitto 2.0's mosquitto_passwd defaults: PBKDF2-HMAC-SHA512, 101 iterations, 12-byte salt.
# We keep the same numbers so hashes made here and by mosquitto_passwd are interchangeable.
PBKDF2_ITERATIONS = 101
SALT_BYTES = 12


def hash_mqtt_password(password: str, *, salt: bytes | None = None, iterations: int = PBKDF2_ITERATIONS) -> str:
    """Mosquitto 2.0's password-file hash: `$7$<iterations>$<b64 salt>$<b64 PBKDF2-SHA512>`."""
    if not password:
        raise ValueError("empty MQTT password")
    salt = secrets.token_bytes(SALT_BYTES) if salt is None else salt
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations)
    return f"$7${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def verify_mqtt_password(password: str, hashed: str) -> bool:
    """True if `password` matches a `$7$` hash (as the broker would decide)."""
    try:
        _, seven, iterations, salt_b64, digest_b64 = hashed.split("$")
        if seven != "7":
            return False
        salt, digest = base64.b64decode(salt_b64), base64.b64decode(digest_b64)
        mine = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, int(iterations))
    except ValueError:
        return False
    return hmac.compare_digest(mine, digest)


def new_mqtt_password() -> tuple[str, str]:
    """A fresh random driver password and its hash: (clear, hash). Show the clear one once."""
    clear = secrets.token_urlsafe(24)
    return clear, hash_mqtt_password(clear)


@dataclass(frozen=True)
class MqttEndpoint:
    """Where the broker listens, parsed from settings.mqtt_url."""

    host: str
    port: int
    tls: bool
    username: str | None = None  # only when the URL carries user info
    password: str | None = None


def parse_mqtt_url(url: str) -> MqttEndpoint:
    """Split `mqtt://host:port` (or `mqtts://`, `tcp://`) into host, port and TLS flag."""
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "mqtts", "tcp"):
        raise ValueError(f"not an MQTT URL: {url!r}")
    tls = parts.scheme == "mqtts"
    return MqttEndpoint(
        host=parts.hostname or "127.0.0.1",
        port=parts.port or (8883 if tls else 1883),
        tls=tls,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
    )


def driver_username(driver_id: int) -> str:
    """The broker username of a driver: its id in decimal (password hash in drivers.mqtt_password_hash).

    The username must equal the id segment of the driver's topics: the broker's ACL is four
    `pattern ... %u` lines, and `%u` is replaced by the username (see serena.broker).
    """
    return str(int(driver_id))


def driver_topic(driver_id: int, kind: str, *, root: str | None = None) -> str:
    """`{root}/drivers/{driver_id}/{kind}`; root defaults to settings.mqtt_topic_root."""
    if kind not in DRIVER_TOPIC_KINDS:
        raise ValueError(f"kind must be one of {', '.join(DRIVER_TOPIC_KINDS)}, got {kind!r}")
    root = get_settings().mqtt_topic_root if root is None else root
    return f"{root}/drivers/{int(driver_id)}/{kind}"


def drivers_filter(kind: str, *, root: str | None = None) -> str:
    """The subscription filter for one kind across all drivers: `{root}/drivers/+/{kind}`."""
    if kind not in DRIVER_TOPIC_KINDS:
        raise ValueError(f"kind must be one of {', '.join(DRIVER_TOPIC_KINDS)}, got {kind!r}")
    root = get_settings().mqtt_topic_root if root is None else root
    return f"{root}/drivers/+/{kind}"


def shared(group: str, topic_filter: str) -> str:
    """A shared subscription: each message goes to one member of `group` (ingest replicas)."""
    if not group or any(c in group for c in "/+#"):
        raise ValueError(f"bad share group name: {group!r}")
    return f"$share/{group}/{topic_filter}"


def parse_driver_topic(topic: str, *, root: str | None = None) -> tuple[int, str]:
    """The inverse of driver_topic: (driver_id, kind); ValueError if the topic is not one of ours."""
    root = get_settings().mqtt_topic_root if root is None else root
    prefix = f"{root}/drivers/"
    if not topic.startswith(prefix):
        raise ValueError(f"not a driver topic under {root!r}: {topic!r}")
    rest = topic[len(prefix) :].split("/")
    if len(rest) != 2 or rest[1] not in DRIVER_TOPIC_KINDS or not rest[0].isdigit():
        raise ValueError(f"not a driver topic: {topic!r}")
    return int(rest[0]), rest[1]


def service_client(
    settings: Settings | None = None,
    *,
    client_id: str,
    persistent: bool = True,
    session_expiry_s: int = SESSION_EXPIRY_S,
    **kwargs,
) -> aiomqtt.Client:
    """An aiomqtt client (use as `async with`) logged in with the service account.

    `client_id` must be stable across restarts of the same process role (e.g.
    `ingest-{replica}`) when `persistent` is true: the broker keeps the session (its
    subscriptions and the QoS 1 messages queued while the process was away) under that id,
    so a random id would orphan the queue and lose those messages for this consumer.
    Pass `persistent=False` for publishers and throw-away subscribers.
    """
    settings = settings or get_settings()
    ep = parse_mqtt_url(settings.mqtt_url)
    props = None
    if persistent:
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = session_expiry_s
    kwargs.setdefault("keepalive", 30)
    return aiomqtt.Client(
        ep.host,
        ep.port,
        username=ep.username or settings.mqtt_service_username,
        password=ep.password or settings.mqtt_service_password,
        identifier=client_id,
        protocol=aiomqtt.ProtocolVersion.V5,
        clean_start=not persistent,
        properties=props,
        tls_params=aiomqtt.TLSParameters() if ep.tls else None,
        **kwargs,
    )
