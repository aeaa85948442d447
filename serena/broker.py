"""The project's own Mosquitto: its configuration, credentials and ACL, generated from the drivers table.

Mosquitto 2.0 reads a password file and an ACL file; both are rendered here from the
drivers table (plus the service account from settings), written atomically (temp file +
rename, so the broker never reads half a file) and loaded by sending SIGHUP to our broker
process. The config itself comes from `serena/mosquitto/mosquitto.conf.tmpl`.

ACL model (docs/broker.md): a driver's broker username is its id ("42"), and four
`pattern` lines with `%u` give every driver write on its own location/scans/status topics
and read on its own tasks topic. Who may log in at all is decided by the password file
(active drivers with a hash only). The ACL file therefore has the same few lines for 10 or
100,000 drivers. We first wrote one `user driver-{id}` block per driver and measured
Mosquitto 2.0.11 parsing it in quadratic time (each `user` line searches a linked list):
1,000 drivers 0.03 s, 10,000 drivers 3 s, 20,000 drivers 12 s, during which the
single-threaded broker serves nobody, on every SIGHUP. The password file is a hash table:
20,000 lines load in about 0.1 s.

The drivers table stores only password *hashes* in Mosquitto's `$7$` PBKDF2-SHA512 format
(core.mqtt.hash_mqtt_password, re-exported here), so a database dump does not leak broker
passwords.
"""

from __future__ import annotations

import asyncio
import fcntl
import getpass
import ipaddress
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from string import Template

from core.mqtt import (  # noqa: F401 - the password helpers are part of this module's API too
    DRIVER_PUBLISH_KINDS,
    driver_username,
    hash_mqtt_password,
    new_mqtt_password,
    parse_mqtt_url,
    verify_mqtt_password,
)
from core.settings import Settings

TEMPLATE = Path(__file__).with_name("mosquitto") / "mosquitto.conf.tmpl"

# Our queue and persistence settings; docs/broker.md gives the reason for each number.
DEFAULT_LIMITS: dict[str, str] = {
    # A consumer (ingest replica) that is restarting or behind must not lose QoS 1 pings.
    # 1,000,000 messages per client is ~16 min of 1 ping/s from 1,000 drivers.
    "max_queued_messages": "1000000",
    # The memory bound: 512 MiB of queued payload per client (a ping is ~150 B, so the
    # message count above binds first; this only trips on unexpectedly large payloads).
    "max_queued_bytes": str(512 * 1024 * 1024),
    # Unacknowledged QoS 1/2 messages per client in flight (and the receive maximum we
    # advertise to v5 publishers). 20 (default) throttles a consumer on a LAN; 100 lets
    # a reconnecting driver flush its buffer quickly without letting one client hog memory.
    "max_inflight_messages": "100",
    # A packet bigger than this is refused (pings, scans and task lists are a few kB).
    "max_packet_size": str(256 * 1024),
    # Snapshot of sessions/queues to disk every 30 s and on clean shutdown.
    "autosave_interval": "30",
    # A persistent session whose client has not been back for a week is discarded.
    "persistent_client_expiration": "7d",
}

# Mosquitto 2.0's built-in limits, for tests that show why we change them.
MOSQUITTO_DEFAULT_LIMITS: dict[str, str] = {
    "max_queued_messages": "1000",
    "max_queued_bytes": "0",
    "max_inflight_messages": "20",
}


class BrokerError(Exception):
    """The broker could not be configured, started or reloaded; the message says why."""


@dataclass(frozen=True)
class BrokerFiles:
    """Where our broker's files live (all under settings.mosquitto_dir)."""

    dir: Path
    conf: Path
    passwords: Path
    acl: Path
    pid: Path
    log: Path
    persistence: Path

    @classmethod
    def of(cls, settings: Settings) -> BrokerFiles:
        d = Path(settings.mosquitto_dir).absolute()
        return cls(
            dir=d,
            conf=d / "mosquitto.conf",
            passwords=d / "passwd",
            acl=d / "acl",
            pid=d / "mosquitto.pid",
            log=d / "mosquitto.log",
            persistence=d / "data",
        )


@dataclass(frozen=True)
class SyncResult:
    """What sync_broker_credentials did."""

    drivers: int  # drivers written to the password file and ACL
    reloaded: bool  # a running broker of ours was sent SIGHUP


# --- rendering -------------------------------------------------------------------------


def render_config(settings: Settings, *, overrides: Mapping[str, str] | None = None) -> str:
    """The mosquitto.conf text for `settings` (overrides replace DEFAULT_LIMITS entries)."""
    ep = parse_mqtt_url(settings.mqtt_url)
    if ep.tls:
        raise BrokerError("serena.broker renders a plain loopback listener; put TLS in front (docs/broker.md)")
    files = BrokerFiles.of(settings)
    if any(c.isspace() for c in str(files.dir)):
        raise BrokerError(f"SERENA_MOSQUITTO_DIR must not contain whitespace (mosquitto.conf has no quoting): {files.dir}")
    limits = {**DEFAULT_LIMITS, **(overrides or {})}
    # As root, Mosquitto drops privileges to the user named here; we name the owner of our
    # files (the invoking user) so it can read the ACL and write its persistence file.
    user = getpass.getuser()
    values = {
        **limits,
        "listener": f"listener {ep.port} {_listen_address(ep.host)}".rstrip(),
        "run_as_user": f"user {user}" if os.geteuid() == 0 else "",
        "password_file": str(files.passwords),
        "acl_file": str(files.acl),
        "persistence_dir": str(files.persistence),
        "log_file": str(files.log),
    }
    return Template(TEMPLATE.read_text()).substitute(values)


def _listen_address(host: str) -> str:
    """The address to bind: the URL's host when it is an address, every interface for a DNS
    name (in docker compose the URL says `mosquitto`, the container's own name)."""
    if host == "localhost":
        return "127.0.0.1"
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return ""  # `listener PORT` with no address: all interfaces
    return host


def render_passwords(settings: Settings, drivers: Iterable[tuple[int, str]]) -> str:
    """Password-file text: the service account, then `{driver id}:{hash}` per driver."""
    if settings.mqtt_service_username.isdigit():
        # A numeric service username would also be some driver's id, and match its patterns.
        raise BrokerError("SERENA_MQTT_SERVICE_USERNAME must not be a number (driver usernames are their ids)")
    lines = [f"{settings.mqtt_service_username}:{hash_mqtt_password(settings.mqtt_service_password)}"]
    for driver_id, pw_hash in drivers:
        if not pw_hash.startswith("$7$") or ":" in pw_hash or "\n" in pw_hash:
            raise BrokerError(f"driver {driver_id}: mqtt_password_hash is not a Mosquitto $7$ hash")
        lines.append(f"{driver_username(driver_id)}:{pw_hash}")
    return "\n".join(lines) + "\n"


def render_acl(settings: Settings) -> str:
    """ACL-file text: the service account's grants, then the driver patterns.

    No driver is named: each driver's rights follow from its username by pattern, so the
    file is the same size for any fleet (who may log in is the password file's business).
    """
    root = settings.mqtt_topic_root
    out = [
        "# Generated by serena.broker; edits are overwritten. See docs/broker.md.",
        "# Who may connect is the password file (active drivers only); what each may do is below.",
        "",
        f"user {settings.mqtt_service_username}",
        # Also covers shared subscriptions ($share/ingest/{root}/...): Mosquitto 2.0 checks
        # the topic of each delivered message, not the $share filter (tested).
        f"topic readwrite {root}/#",
        # Broker statistics, for `serena services status` and monitoring.
        "topic read $SYS/#",
    ]
    out += [
        "",
        "# Every driver (username = driver id; %u is replaced by the username): publish its own",
        "# location, scans and status; read its own tasks. Nothing else, including other drivers' topics.",
    ]
    for kind in DRIVER_PUBLISH_KINDS:
        out.append(f"pattern write {root}/drivers/%u/{kind}")
    out.append(f"pattern read {root}/drivers/%u/tasks")
    return "\n".join(out) + "\n"


def _write_atomic(path: Path, text: str, mode: int = 0o600) -> None:
    """Write `text` to a temp file in the same directory, fsync, then rename over `path`."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_broker_files(
    settings: Settings,
    drivers: Iterable[tuple[int, str]] = (),
    *,
    overrides: Mapping[str, str] | None = None,
) -> BrokerFiles:
    """Render config, password file and ACL into settings.mosquitto_dir (atomically, each file)."""
    files = BrokerFiles.of(settings)
    files.dir.mkdir(parents=True, exist_ok=True)
    files.persistence.mkdir(exist_ok=True)
    conf = render_config(settings, overrides=overrides)  # first: it validates the paths
    apply_credentials(settings, drivers, reload=False)
    _write_atomic(files.conf, conf, mode=0o644)
    return files


# --- the drivers table -----------------------------------------------------------------

DRIVERS_SQL = (
    "SELECT id, mqtt_password_hash FROM drivers "
    "WHERE active AND mqtt_password_hash IS NOT NULL ORDER BY id"
)


async def load_driver_credentials(pool_or_session) -> list[tuple[int, str]]:
    """(driver id, $7$ hash) of every active driver with broker credentials.

    Accepts an asyncpg pool or connection, or a SQLAlchemy AsyncSession.
    """
    if hasattr(pool_or_session, "fetch"):  # asyncpg Pool / Connection
        rows = await pool_or_session.fetch(DRIVERS_SQL)
        return [(r["id"], r["mqtt_password_hash"]) for r in rows]
    from sqlalchemy import text  # only when given a session

    result = await pool_or_session.execute(text(DRIVERS_SQL))
    return [(r[0], r[1]) for r in result.all()]


# How long a sync waits before reading the drivers table, so that a burst of driver
# creations (the simulator's 1,000, an import script) shares one rewrite and one SIGHUP
# instead of one each: before, every create re-read the whole table and reloaded the broker
# (1,000 reloads for 1,000 drivers). The cost is latency: a new driver can connect about
# this long (plus the read, the write and the broker's reload, a few ms) after its create
# response. 0.25 s keeps that below a phone's first reconnect back-off (0.5 s in the
# simulator) while a burst at tens of creations per second coalesces into a few syncs a second.
SYNC_DEBOUNCE_S = 0.25


@dataclass
class _PendingSync:
    task: asyncio.Task
    started: bool = False  # it has begun reading the table: a later caller's change may be missed


# (event loop, broker dir) -> the sync that has not read the table yet, if any
_pending: dict[tuple[int, str], _PendingSync] = {}


async def sync_broker_credentials(*, pool_or_session, settings: Settings,
                                  debounce_s: float = SYNC_DEBOUNCE_S) -> SyncResult:
    """Rewrite our broker's password file and ACL from the drivers table and SIGHUP it to reload.

    Call after creating, deactivating or re-keying a driver (after the commit). When it
    returns, the broker's files reflect the table as it was at the call or later. With an
    asyncpg pool, calls coalesce: a call joins the sync that is waiting out its
    `debounce_s` and has not read the table yet, so a burst of calls costs one read, one
    write and one reload. Each sync holds the file lock from its read to its reload, so
    two syncs (in this process or another API process) cannot write an older table over a
    newer one. Safe to call when no broker runs (the files are then ready for its start).
    A SQLAlchemy session is read at once, without coalescing (its transaction is the caller's).
    """
    if not hasattr(pool_or_session, "acquire"):  # a session or a single connection: the caller's own view
        return await _sync_locked(pool_or_session, settings)
    loop = asyncio.get_running_loop()
    key = (id(loop), str(BrokerFiles.of(settings).dir))
    pending = _pending.get(key)
    if pending is None or pending.started or pending.task.done():
        pending = _PendingSync(task=None)  # type: ignore[arg-type]
        pending.task = loop.create_task(_debounced_sync(key, pending, pool_or_session, settings, debounce_s))
        _pending[key] = pending
    # shield: one caller giving up (its request cancelled) must not cancel the sync the others wait for
    return await asyncio.shield(pending.task)


async def _debounced_sync(key, pending: _PendingSync, pool, settings: Settings, debounce_s: float) -> SyncResult:
    try:
        await asyncio.sleep(debounce_s)
    finally:
        pending.started = True  # from here on, new callers start the next sync
        if _pending.get(key) is pending:
            del _pending[key]
    return await _sync_locked(pool, settings)


async def _sync_locked(pool_or_session, settings: Settings) -> SyncResult:
    """Under the sync lock: read the table, write both files, SIGHUP (blocking parts in a thread)."""
    files = BrokerFiles.of(settings)
    files.dir.mkdir(parents=True, exist_ok=True)
    with open(files.dir / ".sync.lock", "w") as lock:
        await asyncio.to_thread(fcntl.flock, lock, fcntl.LOCK_EX)
        drivers = await load_driver_credentials(pool_or_session)
        return await asyncio.to_thread(_write_and_reload, settings, drivers, True)


def apply_credentials(settings: Settings, drivers: Iterable[tuple[int, str]], *, reload: bool = True) -> SyncResult:
    """Write password file and ACL for `drivers` under the sync lock, then SIGHUP our broker (if `reload`)."""
    files = BrokerFiles.of(settings)
    files.dir.mkdir(parents=True, exist_ok=True)
    # The lock is held while the broker is signalled too, so a reload never sees a file
    # from one writer and the other file from another.
    with open(files.dir / ".sync.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _write_and_reload(settings, drivers, reload)


def _write_and_reload(settings: Settings, drivers: Iterable[tuple[int, str]], reload: bool) -> SyncResult:
    drivers = list(drivers)
    write_credentials(settings, drivers)
    reloaded = reload_broker(settings) if reload else False
    return SyncResult(drivers=len(drivers), reloaded=reloaded)


def write_credentials(settings: Settings, drivers: Iterable[tuple[int, str]]) -> None:
    """Rewrite only the password file and ACL (not the config), atomically."""
    files = BrokerFiles.of(settings)
    drivers = sorted(drivers)
    _write_atomic(files.passwords, render_passwords(settings, drivers))
    _write_atomic(files.acl, render_acl(settings))


# --- the process -----------------------------------------------------------------------


def mosquitto_binary() -> str | None:
    """Path of the mosquitto executable (Debian puts it in /usr/sbin, often not on PATH)."""
    return shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin:/usr/local/sbin")


def broker_pid(settings: Settings) -> int | None:
    """Pid of the mosquitto WE started for these settings, if it is still running."""
    files = BrokerFiles.of(settings)
    try:
        pid = int(files.pid.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmdline = f.read().split(b"\0")
    except FileNotFoundError:
        return None
    # Guard against pid reuse: it must be a mosquitto running our config file.
    if not cmdline or not cmdline[0].endswith(b"mosquitto") or str(files.conf).encode() not in cmdline:
        return None
    return pid


def reload_broker(settings: Settings) -> bool:
    """SIGHUP our broker so it re-reads password file and ACL; False if none of ours runs."""
    pid = broker_pid(settings)
    if pid is None:
        return False
    os.kill(pid, signal.SIGHUP)
    return True


def port_open(host: str, port: int, timeout_s: float = 0.5) -> bool:
    """True if something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def start_broker(settings: Settings, *, timeout_s: float = 10.0) -> int:
    """Start mosquitto on the rendered config in the background; returns its pid once it listens.

    The config files must exist (write_broker_files). The pid goes to mosquitto_dir/mosquitto.pid,
    which is how `stop_broker`, `reload_broker` and `serena services down` find it.
    """
    binary = mosquitto_binary()
    if binary is None:
        raise BrokerError("mosquitto is not installed (apt-get install mosquitto)")
    files = BrokerFiles.of(settings)
    if not files.conf.exists():
        raise BrokerError(f"{files.conf} does not exist; render it with write_broker_files first")
    ep = parse_mqtt_url(settings.mqtt_url)
    if port_open(ep.host, ep.port):
        raise BrokerError(f"something already listens on {ep.host}:{ep.port}")
    with open(files.dir / "mosquitto.stderr", "ab") as stderr:  # the child keeps its own copy
        proc = subprocess.Popen(
            [binary, "-c", str(files.conf)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            start_new_session=True,  # not killed with the terminal that ran `serena services up`
            close_fds=True,
        )
    files.pid.write_text(f"{proc.pid}\n")
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            files.pid.unlink(missing_ok=True)
            raise BrokerError(f"mosquitto exited with {proc.returncode}; see {files.log} and {files.dir}/mosquitto.stderr")
        if port_open(ep.host, ep.port, timeout_s=0.2):
            return proc.pid
        time.sleep(0.02)
    proc.kill()
    raise BrokerError(f"mosquitto did not listen on {ep.host}:{ep.port} within {timeout_s} s")


def stop_broker(settings: Settings, *, timeout_s: float = 10.0, sig: int = signal.SIGTERM) -> bool:
    """Stop our broker (SIGTERM: it saves its persistence file first); False if none of ours ran."""
    pid = broker_pid(settings)
    if pid is None:
        return False
    os.kill(pid, sig)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not _alive(pid):
            break
        time.sleep(0.02)
    else:
        os.kill(pid, signal.SIGKILL)
    BrokerFiles.of(settings).pid.unlink(missing_ok=True)
    return True


def _alive(pid: int) -> bool:
    try:
        os.waitpid(pid, os.WNOHANG)  # reap it if it is our child (tests), so it is not a zombie
    except ChildProcessError:
        pass
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except FileNotFoundError:
        return False
