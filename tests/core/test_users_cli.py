"""`serena users create-admin` makes a staff account that can sign in with its TOTP code."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

import pyotp


def test_create_admin_is_idempotent_and_prints_the_totp_secret(db_url):
    email = f"admin-{uuid.uuid4().hex[:8]}@example.test"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SERENA_")} | {"SERENA_DATABASE_URL": db_url}
    cmd = [sys.executable, "-m", "serena.cli", "users", "create-admin", "--email", email, "--password", "admin password 1"]
    first = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60)
    assert first.returncode == 0, first.stderr
    secret = next(line.split(": ")[1] for line in first.stdout.splitlines() if line.startswith("TOTP secret"))
    assert pyotp.TOTP(secret).now().isdigit()
    again = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60)
    assert again.returncode == 0 and "already exists" in again.stdout
    short = subprocess.run(cmd[:-3] + [f"x{email}", "--password", "short"], capture_output=True, text=True, env=env, timeout=60)
    assert short.returncode == 2 and "at least 10 characters" in short.stderr


async def test_created_admin_gets_staff_permissions_with_the_code(client, db_url):
    email = f"admin-{uuid.uuid4().hex[:8]}@example.test"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SERENA_")} | {"SERENA_DATABASE_URL": db_url}
    out = subprocess.run([sys.executable, "-m", "serena.cli", "users", "create-admin", "--email", email,
                          "--password", "admin password 1"], capture_output=True, text=True, env=env, timeout=60)
    secret = next(line.split(": ")[1] for line in out.stdout.splitlines() if line.startswith("TOTP secret"))
    r = await client.post("/v1/auth/login", json={"email": email, "password": "admin password 1", "totp_code": pyotp.TOTP(secret).now()})
    assert r.status_code == 200 and r.json()["mfa"] is True
    users = await client.get("/v1/admin/users", headers={"Authorization": f"Bearer {r.json()['access_token']}"})
    assert users.status_code == 200
