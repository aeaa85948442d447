"""The infrastructure Serena runs on, for development and CI: check it, start what is missing, stop what we started.

Four services: PostgreSQL (+ PostGIS and the configured database), Redis, our own Mosquitto
(serena.broker's config on its own port) and localstripe. For each, `up` uses what answers
at the configured URL; otherwise, for a loopback URL on Debian as root, it installs the
package with apt and starts the service without systemd (these machines have none);
otherwise it says exactly what to run. `down` stops only processes whose pid file we wrote
(under settings.data_dir/run, and settings.mosquitto_dir for the broker), never the
machine's own services.

These functions are synchronous: they run from the CLI, `make` and CI before any event
loop exists, and each step waits on a subprocess anyway.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from core.mqtt import parse_mqtt_url
from core.settings import Settings
from serena import broker

CONNECT_TIMEOUT_S = 5.0  # a busy machine (load 10+ on 2 cores) answered a fresh localstripe or broker in over 2 s
START_TIMEOUT_S = 20.0
DOCKER_HINT = "docker compose up -d db redis mosquitto localstripe"

Echo = Callable[[str], None]


@dataclass
class ServiceStatus:
    """One service as `status` sees it."""

    name: str
    url: str  # as configured, password removed
    up: bool
    version: str = ""
    detail: str = ""  # why it is down, or what we know about it
    ours: bool = False  # a process `serena services up` started (down will stop it)
    fix: list[str] = field(default_factory=list)  # commands that would bring it up

    def line(self) -> str:
        state = "up" if self.up else "DOWN"
        extra = "; ".join(x for x in (self.detail, "started by serena" if self.ours else "") if x)
        return f"{self.name:<11} {self.url:<45} {state:<5} {self.version or '-':<9} {extra}".rstrip()


class ServicesError(Exception):
    """A service could not be brought up; the message says what to run instead."""


# --- helpers ---------------------------------------------------------------------------


def redact(url: str) -> str:
    """The URL without its password (for printing)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit(parts._replace(netloc=netloc))


def is_loopback(host: str | None) -> bool:
    """True for localhost / 127.x / ::1: the only hosts `up` will start things on."""
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def can_install() -> bool:
    """Root on a Debian-family system with apt: `up` may install packages."""
    return os.geteuid() == 0 and shutil.which("apt-get") is not None and Path("/etc/debian_version").exists()


def _run_dir(settings: Settings) -> Path:
    d = Path(settings.data_dir).absolute() / "run"
    d.mkdir(parents=True, exist_ok=True)
    return d


def _log_dir(settings: Settings) -> Path:
    d = Path(settings.data_dir).absolute() / "log"
    d.mkdir(parents=True, exist_ok=True)
    return d


def _read_pid(path: Path, expect: str) -> int | None:
    """The pid in `path` if that process is alive and its command line contains `expect` (pid reuse guard)."""
    try:
        pid = int(path.read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except (FileNotFoundError, ValueError, ProcessLookupError):
        return None
    return pid if expect in cmdline else None


def _wait_until(predicate: Callable[[], bool], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return predicate()


def _stop_pid(pid: int, timeout_s: float = 10.0) -> None:
    os.kill(pid, signal.SIGTERM)
    if not _wait_until(lambda: not Path(f"/proc/{pid}").exists() or _zombie(pid), timeout_s):
        os.kill(pid, signal.SIGKILL)


def _zombie(pid: int) -> bool:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] == "Z"
    except FileNotFoundError:
        return True


def apt_install(packages: list[str], echo: Echo) -> None:
    """apt-get install the packages (refreshing the package lists once if apt cannot find them)."""
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    cmd = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *packages]
    echo(f"installing {' '.join(packages)} (apt)")
    if subprocess.run(cmd, env=env, capture_output=True).returncode == 0:
        return
    subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True)
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise ServicesError(f"apt-get install {' '.join(packages)} failed:\n{out.stderr.strip()[-2000:]}")


# --- PostgreSQL ------------------------------------------------------------------------


def _pg_connect(dsn: str):
    import psycopg2

    conn = psycopg2.connect(dsn, connect_timeout=int(CONNECT_TIMEOUT_S))
    conn.autocommit = True
    return conn


def _pg_admin_dsn(settings: Settings) -> tuple[str, str]:
    """(DSN of the `postgres` maintenance database on the same server, configured database name)."""
    parts = urlsplit(settings.asyncpg_dsn)
    dbname = parts.path.lstrip("/") or "postgres"
    return urlunsplit(parts._replace(path="/postgres")), dbname


def check_postgres(settings: Settings) -> ServiceStatus:
    """Server answers? Version, PostGIS availability, and whether the configured database exists."""
    import psycopg2

    st = ServiceStatus("postgresql", redact(settings.database_url), up=False)
    admin_dsn, dbname = _pg_admin_dsn(settings)
    try:
        conn = _pg_connect(admin_dsn)
    except psycopg2.OperationalError as exc:
        st.detail = str(exc).strip().splitlines()[0] if str(exc).strip() else "connection failed"
        return st
    try:
        cur = conn.cursor()
        cur.execute("SHOW server_version")
        st.version = cur.fetchone()[0].split()[0]
        cur.execute("SELECT default_version FROM pg_available_extensions WHERE name = 'postgis'")
        row = cur.fetchone()
        cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (dbname,))
        exists = cur.fetchone() is not None
    finally:
        conn.close()
    notes = [f"postgis {row[0]} available" if row else "PostGIS NOT available"]
    notes.append(f"database {dbname} exists" if exists else f"database {dbname} MISSING")
    st.up = bool(row) and exists
    st.detail = "; ".join(notes)
    return st


def _pg_major(settings: Settings) -> str:
    try:
        conn = _pg_connect(_pg_admin_dsn(settings)[0])
        try:
            cur = conn.cursor()
            cur.execute("SHOW server_version_num")
            return str(int(cur.fetchone()[0]) // 10000)
        finally:
            conn.close()
    except Exception:  # noqa: BLE001 - fall back to the version this project targets
        return "15"


def _pg_clusters() -> list[tuple[str, str, int, str]]:
    """(version, cluster, port, status) from pg_lsclusters, or [] if it is not installed."""
    if shutil.which("pg_lsclusters") is None:
        return []
    out = subprocess.run(["pg_lsclusters", "-h"], capture_output=True, text=True).stdout
    rows = []
    for line in out.splitlines():
        f = line.split()
        if len(f) >= 4:
            rows.append((f[0], f[1], int(f[2]), f[3]))
    return rows


def _auth_refused(detail: str) -> bool:
    """The server answered but refused the login (a fresh Debian cluster wants a password on TCP)."""
    d = detail.lower()
    return any(s in d for s in ("password", "authentication failed", "no pg_hba.conf entry"))


def _pg_answers(settings: Settings) -> bool:
    st = check_postgres(settings)
    return bool(st.version) or _auth_refused(st.detail)


def _fix_local_auth(settings: Settings, st: ServiceStatus, *, install: bool, echo: Echo) -> ServiceStatus:
    """Let the URL's password-less user in over loopback TCP (trust), on a local Debian cluster, as root.

    The default URL (postgresql://postgres@127.0.0.1:5432/serena) carries no password, which
    a freshly installed Debian cluster refuses (scram-sha-256 on 127.0.0.1). We add two
    `trust` lines for that user on 127.0.0.1/::1 only, at the top of pg_hba.conf, and reload.
    Anything else (a password in the URL, not root, not Debian) gets instructions instead.
    """
    parts = urlsplit(settings.asyncpg_dsn)
    user, port = parts.username or "postgres", parts.port or 5432
    clusters = [c for c in _pg_clusters() if c[2] == port]
    hba = Path(f"/etc/postgresql/{clusters[0][0]}/{clusters[0][1]}/pg_hba.conf") if clusters else None
    lines = [f"host all {user} 127.0.0.1/32 trust", f"host all {user} ::1/128 trust"]
    if parts.password or os.geteuid() != 0 or hba is None or not hba.exists():
        st.fix = [
            f"put the password in SERENA_DATABASE_URL, or add to the top of pg_hba.conf: {lines[0]}  /  {lines[1]}",
            DOCKER_HINT,
        ]
        return st
    version, name = clusters[0][0], clusters[0][1]
    echo(f"PostgreSQL refused {user} without a password; adding loopback trust for {user} to {hba}")
    text = hba.read_text()
    hba.write_text("# added by `serena services up`: the SERENA_DATABASE_URL user, loopback only\n"
                   + "\n".join(lines) + "\n" + text)
    subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", version, name, "reload"], capture_output=True)
    _wait_until(lambda: bool(check_postgres(settings).version), START_TIMEOUT_S)
    st = check_postgres(settings)
    return _finish_postgres(settings, st, install=install, echo=echo) if st.version else st


def ensure_postgres(settings: Settings, *, install: bool, echo: Echo) -> ServiceStatus:
    """Server up (start the local cluster, installing it if needed), PostGIS available, database created."""
    parts = urlsplit(settings.asyncpg_dsn)
    host, port = parts.hostname, parts.port or 5432
    st = check_postgres(settings)
    local = is_loopback(host)
    if not st.version and _auth_refused(st.detail):  # answers, but not to us
        return _fix_local_auth(settings, st, install=install, echo=echo) if local else st
    if not st.version:  # server not answering
        if not local:
            st.fix = [DOCKER_HINT, f"# or make the PostgreSQL at {host}:{port} reachable"]
            return st
        if not _pg_clusters():
            if not install:
                st.fix = ["sudo apt-get install -y postgresql-15 postgresql-15-postgis-3", DOCKER_HINT]
                return st
            apt_install(["postgresql-15", "postgresql-15-postgis-3"], echo)
        clusters = [c for c in _pg_clusters() if c[2] == port] or _pg_clusters()
        if not clusters:
            st.fix = [f"sudo pg_createcluster 15 main --port {port} --start", DOCKER_HINT]
            return st
        version, name, cport, _ = clusters[0]
        if cport != port:
            st.detail += f" (cluster {version}/{name} is on port {cport}, not {port})"
            st.fix = [f"set SERENA_DATABASE_URL to port {cport}, or move the cluster to port {port}"]
            return st
        cmd = ["pg_ctlcluster", "--skip-systemctl-redirect", version, name, "start"]
        echo(f"starting PostgreSQL: {' '.join(cmd)}")
        if os.geteuid() != 0:
            st.fix = ["sudo " + " ".join(cmd)]
            return st
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode != 0:
            st.detail = out.stderr.strip() or out.stdout.strip()
            st.fix = ["sudo " + " ".join(cmd), DOCKER_HINT]
            return st
        (_run_dir(settings) / "postgresql.cluster").write_text(f"{version} {name}\n")
        if not _wait_until(lambda: _pg_answers(settings), START_TIMEOUT_S):
            st.detail = f"started {version}/{name} but it does not answer at {host}:{port}"
            return st
        st = check_postgres(settings)
        if not st.version and _auth_refused(st.detail):
            return _fix_local_auth(settings, st, install=install, echo=echo)

    return _finish_postgres(settings, st, install=install, echo=echo)


def _finish_postgres(settings: Settings, st: ServiceStatus, *, install: bool, echo: Echo) -> ServiceStatus:
    """On an answering server: PostGIS available (apt-installed if local), the configured database created."""
    host = urlsplit(settings.asyncpg_dsn).hostname
    local = is_loopback(host)
    if "PostGIS NOT available" in st.detail:
        major = _pg_major(settings)
        pkg = f"postgresql-{major}-postgis-3"
        if local and install:
            apt_install([pkg], echo)
            st = check_postgres(settings)
        else:
            st.fix = [f"sudo apt-get install -y {pkg}" if local else f"install PostGIS 3 on the server at {host}"]
            return st

    admin_dsn, dbname = _pg_admin_dsn(settings)
    if "MISSING" in st.detail:
        echo(f"creating database {dbname}")
        conn = _pg_connect(admin_dsn)
        try:
            conn.cursor().execute(f'CREATE DATABASE "{dbname}"')
        finally:
            conn.close()
        st = check_postgres(settings)
    st.ours = (_run_dir(settings) / "postgresql.cluster").exists()
    return st


# --- Redis -----------------------------------------------------------------------------


def check_redis(settings: Settings) -> ServiceStatus:
    """PING and the server version."""
    import redis

    st = ServiceStatus("redis", redact(settings.redis_url), up=False)
    client = redis.Redis.from_url(settings.redis_url, socket_connect_timeout=CONNECT_TIMEOUT_S, socket_timeout=CONNECT_TIMEOUT_S)
    try:
        info = client.info("server")
        st.up, st.version = True, str(info.get("redis_version", ""))
    except redis.RedisError as exc:
        st.detail = str(exc).strip() or type(exc).__name__
    finally:
        client.close()
    st.ours = _read_pid(_run_dir(settings) / "redis.pid", "redis-server") is not None
    return st


def ensure_redis(settings: Settings, *, install: bool, echo: Echo) -> ServiceStatus:
    """Redis answers at the URL, or a local redis-server is started (installed first if needed)."""
    st = check_redis(settings)
    if st.up:
        return st
    parts = urlsplit(settings.redis_url)
    host, port = parts.hostname, parts.port or 6379
    if parts.scheme == "unix" or not is_loopback(host):
        st.fix = [DOCKER_HINT, f"# or make the Redis at {redact(settings.redis_url)} reachable"]
        return st
    if shutil.which("redis-server") is None:
        if not install:
            st.fix = ["sudo apt-get install -y redis-server", DOCKER_HINT]
            return st
        apt_install(["redis-server"], echo)
    # The Debian package's dirs when present (and writable), else our own under data_dir.
    data_dir, log_file = Path("/var/lib/redis"), Path("/var/log/redis/ci.log")
    if not (os.access(data_dir, os.W_OK) and os.access(log_file.parent, os.W_OK)):
        data_dir = Path(settings.data_dir).absolute() / "redis"
        data_dir.mkdir(parents=True, exist_ok=True)
        log_file = _log_dir(settings) / "redis.log"
    pid_file = _run_dir(settings) / "redis.pid"
    bind = "127.0.0.1 -::1" if host in ("127.0.0.1", "localhost") else host
    cmd = [
        "redis-server", "--daemonize", "yes", "--bind", *bind.split(), "--port", str(port),
        "--save", "", "--appendonly", "no", "--dir", str(data_dir), "--logfile", str(log_file),
        "--pidfile", str(pid_file),
    ]
    echo(f"starting Redis on {host}:{port}")
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0 or not _wait_until(lambda: check_redis(settings).up, START_TIMEOUT_S):
        st.detail = (out.stderr or out.stdout).strip() or f"redis-server did not answer; see {log_file}"
        st.fix = [" ".join(cmd), DOCKER_HINT]
        return st
    return check_redis(settings)


# --- Mosquitto (ours) ------------------------------------------------------------------


def _mqtt_probe(settings: Settings) -> tuple[int | None, str]:
    """Log in with the service account: (CONNACK reason code or None if no answer, broker version)."""
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion

    ep = parse_mqtt_url(settings.mqtt_url)
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"serena-status-{os.getpid()}", protocol=paho.MQTTv5)
    client.username_pw_set(settings.mqtt_service_username, settings.mqtt_service_password)
    if ep.tls:
        client.tls_set()
    connected, got_version = threading.Event(), threading.Event()
    result: dict[str, object] = {"version": ""}

    def on_connect(c, userdata, flags, rc, props):
        result["rc"] = rc.value
        connected.set()
        if rc.value == 0:
            c.subscribe("$SYS/broker/version")

    def on_message(c, userdata, msg):
        result["version"] = msg.payload.decode(errors="replace").removeprefix("mosquitto version ")
        got_version.set()

    client.on_connect, client.on_message = on_connect, on_message
    try:
        client.connect(ep.host, ep.port, keepalive=10)
    except OSError:
        return None, ""
    client.loop_start()
    try:
        if connected.wait(CONNECT_TIMEOUT_S) and result.get("rc") == 0:
            got_version.wait(CONNECT_TIMEOUT_S)  # retained $SYS topic: arrives at once on Mosquitto
        return result.get("rc"), str(result["version"])  # type: ignore[return-value]
    finally:
        client.disconnect()
        client.loop_stop()


def check_mosquitto(settings: Settings) -> ServiceStatus:
    """Our broker answers and accepts the service account?"""
    st = ServiceStatus("mosquitto", redact(settings.mqtt_url), up=False)
    st.ours = broker.broker_pid(settings) is not None
    rc, version = _mqtt_probe(settings)
    st.version = version
    if rc is None:
        st.detail = "connection refused" if not st.ours else "our broker runs but does not answer"
    elif rc == 0:
        st.up = True
        st.detail = "service login ok"
    else:
        st.detail = f"answers, but refuses the service account (CONNACK {rc}): not our config? run `serena services up`"
    return st


def load_driver_credentials_sync(settings: Settings) -> list[tuple[int, str]]:
    """(id, hash) of active drivers via psycopg2; [] if the database or the drivers table is not there yet."""
    import psycopg2

    try:
        conn = _pg_connect(settings.asyncpg_dsn)
    except psycopg2.OperationalError:
        return []
    try:
        cur = conn.cursor()
        cur.execute("SELECT to_regclass('public.drivers') IS NOT NULL")
        if not cur.fetchone()[0]:
            return []
        cur.execute(broker.DRIVERS_SQL)
        return [(r[0], r[1]) for r in cur.fetchall()]
    finally:
        conn.close()


def write_broker_config(settings: Settings, *, reload: bool = False, echo: Echo = print) -> broker.BrokerFiles:
    """Render our broker's config, password file and ACL (drivers from the database when reachable).

    With `reload`, a running broker of ours is sent SIGHUP afterwards (the CLI's way of
    doing what sync_broker_credentials does, e.g. after seeding drivers from a script).
    """
    drivers = load_driver_credentials_sync(settings)
    files = broker.write_broker_files(settings, drivers)
    reloaded = broker.reload_broker(settings) if reload else False
    echo(f"broker config: {files.conf} ({len(drivers)} drivers){'; broker reloaded' if reloaded else ''}")
    return files


def ensure_mosquitto(settings: Settings, *, install: bool, echo: Echo) -> ServiceStatus:
    """Our Mosquitto runs with our generated config (started, or reloaded if already ours)."""
    ep = parse_mqtt_url(settings.mqtt_url)
    if not is_loopback(ep.host):
        st = check_mosquitto(settings)
        if not st.up:
            st.fix = [DOCKER_HINT]
        return st
    if broker.mosquitto_binary() is None:
        if not install:
            st = check_mosquitto(settings)
            st.fix = ["sudo apt-get install -y mosquitto mosquitto-clients", DOCKER_HINT]
            return st
        apt_install(["mosquitto", "mosquitto-clients"], echo)
    if broker.broker_pid(settings) is not None:
        # SIGHUP: credentials and ACL re-read (a changed listener needs `down` + `up`).
        write_broker_config(settings, reload=True, echo=echo)
        return check_mosquitto(settings)
    if broker.port_open(ep.host, ep.port):
        st = check_mosquitto(settings)  # somebody else's broker on our port: use it, never touch it
        if not st.up:
            st.fix = [f"free port {ep.port} or set SERENA_MQTT_URL to a free port, then `serena services up`"]
        return st
    write_broker_config(settings, echo=echo)
    echo(f"starting our Mosquitto on {ep.host}:{ep.port}")
    try:
        broker.start_broker(settings, timeout_s=START_TIMEOUT_S)
    except broker.BrokerError as exc:
        st = check_mosquitto(settings)
        st.detail = str(exc)
        return st
    return check_mosquitto(settings)


# --- localstripe -----------------------------------------------------------------------


def check_localstripe(settings: Settings) -> ServiceStatus:
    """The Stripe API base answers an authenticated list call."""
    import httpx

    st = ServiceStatus("localstripe", settings.stripe_api_base, up=False)
    pid = _read_pid(_run_dir(settings) / "localstripe.pid", "localstripe")
    st.ours = pid is not None
    try:
        r = httpx.get(f"{settings.stripe_api_base.rstrip('/')}/v1/customers", params={"limit": 1},
                      auth=(settings.stripe_api_key, ""), timeout=CONNECT_TIMEOUT_S)
        st.up = r.status_code == 200
        st.detail = "" if st.up else f"HTTP {r.status_code}"
    except httpx.HTTPError as exc:
        st.detail = "connection refused" if isinstance(exc, httpx.ConnectError) else (str(exc) or type(exc).__name__)
    if st.ours:
        try:
            st.version = metadata.version("localstripe")
        except metadata.PackageNotFoundError:
            pass
    return st


def ensure_localstripe(settings: Settings, *, install: bool, echo: Echo) -> ServiceStatus:
    """localstripe answers at SERENA_STRIPE_API_BASE, or we start it there in the background."""
    st = check_localstripe(settings)
    if st.up:
        register_localstripe_webhook(settings, echo)  # a localstripe restarted by hand forgets it
        return st
    parts = urlsplit(settings.stripe_api_base)
    host, port = parts.hostname or "127.0.0.1", parts.port or (443 if parts.scheme == "https" else 80)
    if not is_loopback(host) or parts.scheme != "http":
        st.fix = [f"make the Stripe API at {settings.stripe_api_base} reachable (or unset SERENA_STRIPE_API_BASE)"]
        return st
    try:
        metadata.version("localstripe")
    except metadata.PackageNotFoundError:
        st.fix = [f"{sys.executable} -m pip install localstripe"]
        return st
    log = _log_dir(settings) / "localstripe.log"
    pid_file = _run_dir(settings) / "localstripe.pid"
    cmd = [sys.executable, "-m", "serena.services", "localstripe", host, str(port)]
    echo(f"starting localstripe on {host}:{port} (log {log})")
    with open(log, "ab") as out:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True, close_fds=True)
    pid_file.write_text(f"{proc.pid}\n")
    if not _wait_until(lambda: proc.poll() is not None or check_localstripe(settings).up, START_TIMEOUT_S) or proc.poll() is not None:
        st.detail = f"localstripe did not start; see {log}"
        st.fix = [" ".join(cmd)]
        return st
    register_localstripe_webhook(settings, echo)
    return check_localstripe(settings)


def register_localstripe_webhook(settings: Settings, echo: Echo = print) -> bool:
    """Point localstripe's webhooks at our API (signed with SERENA_STRIPE_WEBHOOK_SECRET); idempotent.

    Real Stripe is configured in its dashboard; localstripe takes the same through its
    `_config/webhooks` endpoint. Only done for a localstripe on loopback.
    """
    import urllib.parse
    import urllib.request

    parts = urlsplit(settings.stripe_api_base)
    if not is_loopback(parts.hostname) or parts.scheme != "http":
        return False
    target = f"http://{settings.api_host}:{settings.api_port}/v1/payments/stripe/webhook"
    body = urllib.parse.urlencode({"url": target, "secret": settings.stripe_webhook_secret}).encode()
    try:
        with urllib.request.urlopen(f"{settings.stripe_api_base}/_config/webhooks/serena", data=body, timeout=5):
            pass
    except OSError as exc:
        echo(f"localstripe webhook not registered: {exc}")
        return False
    echo(f"localstripe webhooks → {target}")
    return True


def _serve_localstripe(host: str, port: int) -> None:
    """Run localstripe bound to `host` only (its own CLI binds every interface), in memory.

    localstripe pickles its whole store to /tmp/localstripe.pickle on every write (20-85 ms a
    call, growing with every payment ever made) and reloads it at start. It is a test double:
    nothing in it has to survive a restart (the webhook registration is re-made by `up`), so the
    store lives in memory only and a restart starts empty.
    """
    import logging

    from aiohttp import web
    from localstripe import server

    server.store.dump_to_disk = lambda: None  # the instance attribute shadows Store.dump_to_disk
    logging.basicConfig(level=logging.INFO)
    web.run_app(server.app, host=host, port=port, access_log=logging.getLogger("aiohttp.access"))


# --- the three verbs -------------------------------------------------------------------

CHECKS = (check_postgres, check_redis, check_mosquitto, check_localstripe)


def status(*, settings: Settings) -> list[ServiceStatus]:
    """One ServiceStatus per service (never starts anything)."""
    return [check(settings) for check in CHECKS]


def up(*, settings: Settings, install: bool | None = None, echo: Echo = print) -> list[ServiceStatus]:
    """Bring every service up (see the module doc); returns their status, each with `fix` commands if still down.

    PostgreSQL comes first: the broker's credentials are read from its drivers table.
    `install=None` means "if root on Debian".
    """
    install = can_install() if install is None else install
    steps = (ensure_postgres, ensure_redis, ensure_mosquitto, ensure_localstripe)
    results = []
    for step in steps:
        try:
            results.append(step(settings, install=install, echo=echo))
        except ServicesError as exc:
            name = step.__name__.removeprefix("ensure_")
            results.append(ServiceStatus(name, "", up=False, detail=str(exc), fix=[DOCKER_HINT]))
    return results


def down(*, settings: Settings, echo: Echo = print) -> list[str]:
    """Stop what `up` started (pid files), and nothing else; returns the names stopped."""
    stopped = []
    if broker.stop_broker(settings):
        stopped.append("mosquitto")
    run = _run_dir(settings)
    for name, expect in (("localstripe", "localstripe"), ("redis", "redis-server")):
        pid_file = run / f"{name}.pid"
        pid = _read_pid(pid_file, expect)
        if pid is not None:
            _stop_pid(pid)
            stopped.append(name)
        pid_file.unlink(missing_ok=True)
    marker = run / "postgresql.cluster"
    if marker.exists():
        version, name = marker.read_text().split()
        subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", version, name, "stop"], capture_output=True)
        marker.unlink()
        stopped.append("postgresql")
    for name in stopped:
        echo(f"stopped {name}")
    if not stopped:
        echo("nothing to stop: no service was started by serena")
    return stopped


if __name__ == "__main__":  # `python -m serena.services localstripe HOST PORT` (used by ensure_localstripe)
    if len(sys.argv) == 4 and sys.argv[1] == "localstripe":
        _serve_localstripe(sys.argv[2], int(sys.argv[3]))
    else:
        sys.exit("usage: python -m serena.services localstripe HOST PORT")
