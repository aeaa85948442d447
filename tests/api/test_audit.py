"""Staff actions are audited in their own transaction; the chain detects tampering."""

from __future__ import annotations

import subprocess
import sys
import uuid

import asyncpg
import pytest

from core import audit
from core.rbac import Role


async def test_granting_a_role_writes_an_audit_entry_with_before_and_after(client, make_account, pool):
    admin = await make_account(Role.ADMIN)
    target = await make_account(Role.CUSTOMER)
    r = await client.post(f"/v1/admin/users/{target.user_id}/roles", headers=admin.headers, json={"role": "support"})
    assert r.status_code == 200 and r.json()["roles"] == ["customer", "support"]
    row = await pool.fetchrow("SELECT * FROM audit_log WHERE object_id=$1 AND action='role.granted'", str(target.user_id))
    assert row["actor_email"] == admin.email
    assert row["before"] == '{"roles": ["customer"]}' and row["after"] == '{"roles": ["customer", "support"]}'


async def test_a_failed_action_leaves_no_audit_entry(client, make_account, pool):
    admin = await make_account(Role.ADMIN)
    target = await make_account(Role.CUSTOMER)
    before = await pool.fetchval("SELECT count(*) FROM audit_log")
    r = await client.post(f"/v1/admin/users/{target.user_id}/roles", headers=admin.headers, json={"role": "customer"})
    assert r.status_code == 409
    assert await pool.fetchval("SELECT count(*) FROM audit_log") == before


async def test_the_database_refuses_to_update_or_delete_audit_rows(client, make_account, pool):
    admin = await make_account(Role.ADMIN)
    r = await client.post("/v1/admin/depots", headers=admin.headers, json={"name": f"D-{uuid.uuid4().hex[:6]}", "lat": 43.73, "lng": 7.42})
    assert r.status_code == 201
    with pytest.raises(asyncpg.RaiseError, match="append-only"):
        await pool.execute("UPDATE audit_log SET actor_email='someone-else' WHERE id=(SELECT max(id) FROM audit_log)")
    with pytest.raises(asyncpg.RaiseError, match="append-only"):
        await pool.execute("DELETE FROM audit_log")


async def test_chain_verifies_and_a_tampered_row_is_found(client, make_account, db_url):
    admin = await make_account(Role.ADMIN)
    for i in range(3):
        r = await client.post("/v1/admin/vehicles", headers=admin.headers, json={"plate": f"P-{uuid.uuid4().hex[:8]}"})
        assert r.status_code == 201
    # Verify through the CLI, as an operator would.
    ok = subprocess.run([sys.executable, "-m", "serena.cli", "audit", "verify", "--database-url", db_url],
                        capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stderr
    assert "audit chain ok" in ok.stdout

    # A superuser bypasses the trigger and edits history: the chain must notice.
    conn = await asyncpg.connect(db_url)
    try:
        target = await conn.fetchval("SELECT max(id) - 1 FROM audit_log")
        async with conn.transaction():
            await conn.execute("ALTER TABLE audit_log DISABLE TRIGGER audit_log_no_update")
            await conn.execute("UPDATE audit_log SET after = '{\"plate\": \"FORGED\"}' WHERE id=$1", target)
            await conn.execute("ALTER TABLE audit_log ENABLE TRIGGER audit_log_no_update")
        report = await audit.verify_chain(conn)
        assert not report.ok and report.first_bad_id == target and "altered" in report.reason
        bad = subprocess.run([sys.executable, "-m", "serena.cli", "audit", "verify", "--database-url", db_url],
                             capture_output=True, text=True, timeout=60)
        assert bad.returncode == 1 and f"BROKEN at entry {target}" in bad.stderr
    finally:
        # Restore the row so later tests see an intact chain.
        async with conn.transaction():
            await conn.execute("ALTER TABLE audit_log DISABLE TRIGGER audit_log_no_update")
            await conn.execute("DELETE FROM audit_log WHERE id >= $1", target)
            await conn.execute("ALTER TABLE audit_log ENABLE TRIGGER audit_log_no_update")
        await conn.close()


async def test_concurrent_staff_actions_keep_one_unbroken_chain(client, make_account, pool):
    import asyncio

    admin = await make_account(Role.ADMIN)
    results = await asyncio.gather(*[
        client.post("/v1/admin/vehicles", headers=admin.headers, json={"plate": f"C-{uuid.uuid4().hex[:8]}"}) for _ in range(20)
    ])
    assert all(r.status_code == 201 for r in results)
    async with pool.acquire() as conn:
        assert (await audit.verify_chain(conn)).ok
