"""`serena services`: status lists every service, up starts only what is missing, down stops only that.

PostgreSQL and Redis are the machine's (already running); our Mosquitto and localstripe are
started on free loopback ports with pid files in a tmp data dir, so the test never touches
the ports or processes of a developer's `serena services up`.
"""

from __future__ import annotations

import socket
import uuid

import psycopg2
from typer.testing import CliRunner

from core.settings import Settings
from serena import broker, services
from serena.cli import app
from tests.conftest import ADMIN_DSN


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_status_lists_each_service_and_says_which_url_does_not_answer(settings: Settings, tmp_path):
    redis_port, mqtt_port, stripe_port = _free_port(), _free_port(), _free_port()
    env = {
        "SERENA_ENV": "test",
        "SERENA_DATABASE_URL": settings.database_url,
        "SERENA_REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
        "SERENA_MQTT_URL": f"mqtt://127.0.0.1:{mqtt_port}",
        "SERENA_STRIPE_API_BASE": f"http://127.0.0.1:{stripe_port}",
        "SERENA_DATA_DIR": str(tmp_path / "var"),
        "SERENA_MOSQUITTO_DIR": str(tmp_path / "var" / "mosquitto"),
    }
    result = CliRunner().invoke(app, ["services", "status"], env=env)
    assert result.exit_code == 1, result.output  # something is down
    lines = {line.split()[0]: line for line in result.output.splitlines() if line.strip()}
    assert set(lines) >= {"postgresql", "redis", "mosquitto", "localstripe"}
    assert " up " in lines["postgresql"] and "postgis 3." in lines["postgresql"]
    assert f"redis://127.0.0.1:{redis_port}/0" in lines["redis"]
    assert " DOWN " in lines["redis"] and "refused" in lines["redis"].lower()
    assert " DOWN " in lines["mosquitto"] and "connection refused" in lines["mosquitto"]
    assert " DOWN " in lines["localstripe"] and "connection refused" in lines["localstripe"]


def test_up_starts_only_what_is_missing_and_down_stops_only_what_it_started(settings: Settings, tmp_path):
    dbname = f"serena_svc_{uuid.uuid4().hex[:8]}"
    s = settings.model_copy(update={
        "database_url": ADMIN_DSN.rpartition("/")[0] + f"/{dbname}",  # does not exist yet
        "mqtt_url": f"mqtt://127.0.0.1:{_free_port()}",
        "stripe_api_base": f"http://127.0.0.1:{_free_port()}",
        "data_dir": tmp_path / "var",
        "mosquitto_dir": tmp_path / "var" / "mosquitto",
    })
    said: list[str] = []
    try:
        result = {st.name: st for st in services.up(settings=s, install=False, echo=said.append)}
        assert all(st.up for st in result.values()), [st.line() for st in result.values()]
        assert f"creating database {dbname}" in said
        # The machine's PostgreSQL and Redis were used as they were; ours were started.
        assert not result["postgresql"].ours and not result["redis"].ours
        assert result["mosquitto"].ours and result["mosquitto"].version.startswith("2.")
        assert result["localstripe"].ours
        # A fresh (unmigrated) database has no drivers table: the broker starts with the service account only.
        assert broker.BrokerFiles.of(s).passwords.read_text().count("\n") == 1  # the service account

        again = services.up(settings=s, install=False, echo=said.append)  # idempotent: nothing new started
        assert all(st.up for st in again) and said.count(f"creating database {dbname}") == 1

        assert sorted(services.down(settings=s, echo=said.append)) == ["localstripe", "mosquitto"]
        after = {st.name: st for st in services.status(settings=s)}
        assert after["postgresql"].up and after["redis"].up  # the machine's, left running
        assert not after["mosquitto"].up and not after["localstripe"].up
        assert services.down(settings=s, echo=said.append) == []
    finally:
        services.down(settings=s, echo=said.append)
        conn = psycopg2.connect(ADMIN_DSN)
        conn.autocommit = True
        conn.cursor().execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
        conn.close()


def test_broker_config_command_renders_drivers_from_the_database(settings: Settings, tmp_path):
    clear, hashed = broker.new_mqtt_password()
    conn = psycopg2.connect(settings.database_url)
    conn.autocommit = True
    cur = conn.cursor()
    cur.execute(
        "INSERT INTO users (id, email, password_hash, full_name, is_active)"
        " VALUES (gen_random_uuid(), %s, 'x', 'Config Driver', true) RETURNING id",
        (f"cfg-{uuid.uuid4().hex[:8]}@test.serena",),
    )
    user_id = cur.fetchone()[0]
    cur.execute(
        "INSERT INTO drivers (user_id, display_name, phone, mqtt_password_hash, active)"
        " VALUES (%s, 'Config Driver', '', %s, true) RETURNING id",
        (user_id, hashed),
    )
    driver_id = cur.fetchone()[0]
    out = tmp_path / "mq"
    env = {"SERENA_ENV": "test", "SERENA_DATABASE_URL": settings.database_url, "SERENA_MQTT_URL": "mqtt://mosquitto:1884"}
    try:
        result = CliRunner().invoke(app, ["services", "broker-config", "--out", str(out)], env=env)
    finally:
        cur.execute("DELETE FROM users WHERE id = %s", (user_id,))
        conn.close()
    assert result.exit_code == 0, result.output
    conf = (out / "mosquitto.conf").read_text()
    assert "listener 1884\n" in conf  # a DNS name (compose service) binds every interface
    assert f"password_file {out / 'passwd'}" in conf
    passwd, acl = (out / "passwd").read_text(), (out / "acl").read_text()
    assert passwd.startswith(f"{settings.mqtt_service_username}:$7$101$")
    assert f"\n{driver_id}:{hashed}\n" in passwd
    assert f"user {settings.mqtt_service_username}" in acl
    assert "pattern write serena/v1/drivers/%u/location\n" in acl


def test_up_prints_what_to_run_for_a_service_it_cannot_start_here(settings: Settings, tmp_path):
    # A remote host is never installed or started by `up`: it says what to run instead.
    s = settings.model_copy(update={
        "redis_url": "redis://serena-nowhere.invalid:6379/0",
        "data_dir": tmp_path / "var",
    })
    said: list[str] = []
    st = services.ensure_redis(s, install=False, echo=said.append)
    assert not st.up and said == []  # nothing attempted
    assert services.DOCKER_HINT in st.fix
    assert "redis://serena-nowhere.invalid:6379/0" in st.line() and " DOWN " in st.line()
