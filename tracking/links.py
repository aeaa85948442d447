"""Customer tracking links: an unguessable token scoped to one order, expiring after delivery plus a grace period.

The token is 32 random bytes (URL-safe base64, 43 characters); only its SHA-256 is stored,
so neither a database dump nor a log of the table can be replayed as a link. A link is
valid while `now < expires_at` and it is not revoked; `expires_at` starts at issue time +
`tracking_link_ttl_s` and is pulled in to delivery + `tracking_link_grace_s` when the
delivery completes (`mark_delivered`, called from the `delivery.completed` consumer in
`tracking.events`). Rejected: a signed JWT as the token — it could not be revoked or cut
short at delivery without a lookup anyway, and it would be three times longer in an SMS.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets

import asyncpg

TOKEN_BYTES = 32


def _hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


async def issue(db: asyncpg.Pool | asyncpg.Connection, *, order_id: str, ttl_s: int, now: dt.datetime | None = None) -> str:
    """A new tracking token for `order_id` (returned once, in clear)."""
    token = secrets.token_urlsafe(TOKEN_BYTES)
    now = now or _now()
    await db.execute("INSERT INTO tracking_links (token_hash, order_id, created_at, expires_at) VALUES ($1, $2, $3, $4)",
                     _hash(token), order_id, now, now + dt.timedelta(seconds=ttl_s))
    return token


async def resolve(db: asyncpg.Pool | asyncpg.Connection, *, token: str, now: dt.datetime | None = None) -> dict | None:
    """The link's order and state if the token is valid now, else None (unknown, expired and revoked look the same)."""
    if not token or len(token) > 128:
        return None
    row = await db.fetchrow("SELECT order_id, expires_at, delivered_at FROM tracking_links"
                            " WHERE token_hash = $1 AND revoked_at IS NULL AND expires_at > $2", _hash(token), now or _now())
    return dict(row) if row else None


async def mark_delivered(db: asyncpg.Pool | asyncpg.Connection, *, order_id: str, at: dt.datetime, grace_s: int) -> int:
    """Record delivery: every link of the order now expires at most `grace_s` after `at`; returns links updated."""
    status = await db.execute("UPDATE tracking_links SET delivered_at = $2, expires_at = least(expires_at, $3)"
                              " WHERE order_id = $1 AND delivered_at IS NULL", order_id, at, at + dt.timedelta(seconds=grace_s))
    return int(status.split()[-1])


async def revoke(db: asyncpg.Pool | asyncpg.Connection, *, order_id: str) -> int:
    """Revoke every link of an order (e.g. the customer shared it by mistake); returns links revoked."""
    status = await db.execute("UPDATE tracking_links SET revoked_at = now() WHERE order_id = $1 AND revoked_at IS NULL", order_id)
    return int(status.split()[-1])
