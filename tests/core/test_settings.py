"""Bad settings stop start-up with one line naming the variable and a non-zero exit code."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from core.settings import SettingsError, load_settings


def _serena(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("SERENA_")} | env
    return subprocess.run([sys.executable, "-m", "serena.cli", *args], capture_output=True, text=True, env=full_env, timeout=60)


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"SERENA_DATABASE_URL": "mysql://root@127.0.0.1/x"}, "SERENA_DATABASE_URL must start with one of postgresql://"),
        ({"SERENA_DATABASE_URL": "postgresql://postgres@127.0.0.1:1/serena"}, "SERENA_DATABASE_URL: cannot connect to"),
        ({"SERENA_DATABASE_URL": "postgresql://postgres@127.0.0.1:5432/serena_no_such_db_xyz"}, "SERENA_DATABASE_URL: database 'serena_no_such_db_xyz' does not exist"),
        ({"SERENA_REDIS_URL": "redis://127.0.0.1:1/0"}, "SERENA_REDIS_URL: cannot reach"),
        ({"SERENA_REDIS_URL": "redis://127.0.0.1:notaport/0"}, "SERENA_REDIS_URL has a bad port"),
        ({"SERENA_API_PORT": "70000"}, "SERENA_API_PORT:"),
        ({"SERENA_ENV": "staging"}, "SERENA_ENV:"),
        ({"SERENA_ENV": "production"}, "SERENA_JWT_SECRET is a development default"),
    ],
)
def test_bad_setting_stops_start_up_with_one_line_naming_it(env, expected, db_url):
    # Every other setting is good (the worker's own database), so the line is about this one.
    result = _serena("check", env={"SERENA_DATABASE_URL": db_url} | env)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert expected in lines[0]


def test_production_with_real_secrets_is_accepted():
    s = load_settings(env="production", jwt_secret="p" * 48, stripe_api_key="sk_live_x", stripe_webhook_secret="whsec_real",
                      mqtt_service_password="a-real-broker-password")
    assert s.env == "production"


def test_production_refuses_each_default_secret():
    base = dict(env="production", jwt_secret="p" * 48, stripe_api_key="sk_live_x", stripe_webhook_secret="whsec_real",
                mqtt_service_password="a-real-broker-password")
    for field, default in [("stripe_api_key", "sk_test_dev_only"), ("stripe_webhook_secret", "whsec_dev_only_change_me"),
                           ("mqtt_service_password", "dev-only-mqtt-service-password"), ("jwt_secret", "short")]:
        with pytest.raises(SettingsError, match=f"SERENA_{field.upper()}"):
            load_settings(**(base | {field: default}))


def test_env_example_documents_every_setting():
    from pathlib import Path

    from core.settings import Settings

    text = (Path(__file__).resolve().parents[2] / ".env.example").read_text()
    documented = {line.split("=", 1)[0] for line in text.splitlines() if line.startswith("SERENA_")}
    expected = {f"SERENA_{name.upper()}" for name in Settings.model_fields}
    assert expected - documented == set(), "settings missing from .env.example"
    assert documented - expected == set(), ".env.example names settings that do not exist"
