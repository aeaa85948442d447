"""Sign-up, sign-in, refresh rotation, TOTP for staff, throttling — through the real API and database."""

from __future__ import annotations

import time
import uuid

import pyotp

from core import auth
from core.rbac import Role


def _email() -> str:
    return f"u-{uuid.uuid4().hex[:10]}@example.test"


async def _register_and_login(client, email=None, password="correct horse battery"):
    email = email or _email()
    r = await client.post("/v1/auth/register", json={"email": email, "password": password})
    assert r.status_code == 201, r.text
    r = await client.post("/v1/auth/login", json={"email": email, "password": password})
    assert r.status_code == 200, r.text
    return email, r.json()


async def test_customer_registers_signs_in_and_reads_own_account(client):
    email, tokens = await _register_and_login(client)
    me = await client.get("/v1/me", headers={"Authorization": f"Bearer {tokens['access_token']}"})
    assert me.status_code == 200
    assert me.json()["email"] == email and me.json()["roles"] == ["customer"]


async def test_password_is_stored_as_argon2id_hash(app, client):
    email, _ = await _register_and_login(client)
    async with app.state.pg_pool.acquire() as conn:
        stored = await conn.fetchval("SELECT password_hash FROM users WHERE email=$1", email)
    assert stored.startswith("$argon2id$") and "correct horse" not in stored


async def test_registering_a_taken_email_or_a_short_password_is_refused(client):
    email, _ = await _register_and_login(client)
    r = await client.post("/v1/auth/register", json={"email": email, "password": "another long password"})
    assert r.status_code == 409 and "already registered" in r.json()["detail"]
    r = await client.post("/v1/auth/register", json={"email": _email(), "password": "short"})
    assert r.status_code == 422 and r.json()["detail"].startswith("password:")


async def test_refresh_rotates_and_reuse_revokes_the_whole_sign_in(client):
    _, tokens = await _register_and_login(client)
    first = tokens["refresh_token"]
    r = await client.post("/v1/auth/refresh", json={"refresh_token": first})
    assert r.status_code == 200
    second = r.json()["refresh_token"]
    assert second != first
    # The old token used again: theft is assumed, the family dies.
    r = await client.post("/v1/auth/refresh", json={"refresh_token": first})
    assert r.status_code == 401 and "reuse" in r.json()["detail"]
    r = await client.post("/v1/auth/refresh", json={"refresh_token": second})
    assert r.status_code == 401 and "revoked" in r.json()["detail"]


async def test_logout_revokes_the_refresh_token(client):
    _, tokens = await _register_and_login(client)
    assert (await client.post("/v1/auth/logout", json={"refresh_token": tokens["refresh_token"]})).status_code == 204
    r = await client.post("/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
    assert r.status_code == 401


async def test_expired_access_token_is_refused(client, settings, make_account):
    account = await make_account(Role.CUSTOMER)
    token = auth.issue_access_token(secret=settings.jwt_secret, user_id=account.user_id, roles={Role.CUSTOMER}, mfa=False, ttl_s=-1)
    r = await client.get("/v1/me", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 401 and r.json()["detail"] == "access token expired"


async def test_token_signed_with_another_key_is_refused(client, make_account):
    account = await make_account(Role.CUSTOMER)
    token = auth.issue_access_token(secret="x" * 40, user_id=account.user_id, roles={Role.ADMIN}, mfa=True, ttl_s=60)
    r = await client.get("/v1/admin/users", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 401


async def test_repeated_wrong_passwords_lock_the_account_for_a_while(client, settings):
    email, _ = await _register_and_login(client)
    for _ in range(settings.login_max_failures):
        r = await client.post("/v1/auth/login", json={"email": email, "password": "wrong password!"})
        assert r.status_code == 401
    r = await client.post("/v1/auth/login", json={"email": email, "password": "correct horse battery"})
    assert r.status_code == 429
    assert int(r.headers["Retry-After"]) > 0


async def test_staff_enrols_totp_and_then_needs_the_code_to_get_staff_permissions(client, make_account):
    admin = await make_account(Role.ADMIN)
    email = _email()
    r = await client.post("/v1/admin/users", headers=admin.headers,
                          json={"email": email, "password": "dispatcher password", "roles": ["dispatcher"]})
    assert r.status_code == 201, r.text
    # Before enrolment: signed in, but no staff permission.
    tokens = (await client.post("/v1/auth/login", json={"email": email, "password": "dispatcher password"})).json()
    assert tokens["mfa"] is False
    h = {"Authorization": f"Bearer {tokens['access_token']}"}
    assert (await client.get("/v1/admin/drivers", headers=h)).status_code == 403
    uri = (await client.post("/v1/me/totp/setup", headers=h)).json()["otpauth_uri"]
    secret = pyotp.parse_uri(uri).secret
    r = await client.post("/v1/me/totp/confirm", headers=h, json={"code": pyotp.TOTP(secret).now()})
    assert r.status_code == 200 and r.json()["totp_enrolled"] is True
    # Now the password alone is not enough.
    r = await client.post("/v1/auth/login", json={"email": email, "password": "dispatcher password"})
    assert r.status_code == 401 and "second factor" in r.json()["detail"]
    # The confirming code cannot be replayed; the next time step's code works.
    next_code = pyotp.TOTP(secret).at(time.time() + 30)
    r = await client.post("/v1/auth/login", json={"email": email, "password": "dispatcher password", "totp_code": next_code})
    assert r.status_code == 200 and r.json()["mfa"] is True
    h = {"Authorization": f"Bearer {r.json()['access_token']}"}
    assert (await client.get("/v1/admin/drivers", headers=h)).status_code == 200
    # Same code again: refused as a replay.
    r = await client.post("/v1/auth/login", json={"email": email, "password": "dispatcher password", "totp_code": next_code})
    assert r.status_code == 401 and "already used" in r.json()["detail"]


async def test_deactivated_user_cannot_use_a_still_valid_token(client, make_account):
    admin = await make_account(Role.ADMIN)
    customer = await make_account(Role.CUSTOMER)
    assert (await client.post(f"/v1/admin/users/{customer.user_id}/deactivate", headers=admin.headers)).status_code == 200
    r = await client.get("/v1/me", headers=customer.headers)
    assert r.status_code == 401 and "disabled" in r.json()["detail"]
