"""The audit log: staff actions recorded in the caller's transaction, hash-chained and append-only.

Each row's hash covers its content and the previous row's hash, so editing, deleting or
reordering any row breaks the chain from that point on; `verify_chain` finds the first
broken link. Appends take a transaction-scoped advisory lock so two concurrent actions
cannot both chain onto the same predecessor (the unique constraint on prev_hash would
otherwise reject one of them at commit; the lock makes them queue instead). The database
refuses UPDATE/DELETE/TRUNCATE on the table (trigger in migration 0001).
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession

from core.models import AuditEntry

GENESIS = "0" * 64
_LOCK_KEY = 0x5E4E_A0D1  # advisory lock id reserved for audit appends


def _canonical(value: Any) -> Any:
    """Make a before/after snapshot JSON-stable (UUIDs, datetimes, decimals to strings)."""
    return json.loads(json.dumps(value, default=str, sort_keys=True))


def entry_hash(*, prev_hash: str, at: datetime, actor_id: uuid.UUID | None, actor_email: str, action: str,
               object_type: str, object_id: str, before: Any, after: Any) -> str:
    """SHA-256 over the canonical JSON of one entry and its predecessor's hash."""
    body = json.dumps(
        {
            "prev": prev_hash,
            "at": at.astimezone(UTC).isoformat(timespec="microseconds"),
            "actor_id": str(actor_id) if actor_id else None,
            "actor_email": actor_email,
            "action": action,
            "object_type": object_type,
            "object_id": object_id,
            "before": before,
            "after": after,
        },
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256(body.encode()).hexdigest()


async def record(session: AsyncSession, *, actor_id: uuid.UUID | None, actor_email: str, action: str,
                 object_type: str, object_id: str | int | uuid.UUID, before: Any = None, after: Any = None) -> AuditEntry:
    """Append one entry in the caller's transaction (it commits or rolls back with the change)."""
    await session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _LOCK_KEY})
    prev = (await session.execute(select(AuditEntry.hash).order_by(AuditEntry.id.desc()).limit(1))).scalar()
    prev_hash = prev or GENESIS
    at = datetime.now(UTC)
    before, after = _canonical(before), _canonical(after)
    digest = entry_hash(prev_hash=prev_hash, at=at, actor_id=actor_id, actor_email=actor_email, action=action,
                        object_type=object_type, object_id=str(object_id), before=before, after=after)
    entry = AuditEntry(at=at, actor_id=actor_id, actor_email=actor_email, action=action, object_type=object_type,
                       object_id=str(object_id), before=before, after=after, prev_hash=prev_hash, hash=digest)
    session.add(entry)
    await session.flush()
    return entry


@dataclass(frozen=True)
class ChainReport:
    entries: int
    ok: bool
    first_bad_id: int | None = None
    reason: str = ""


async def verify_chain(conn, *, batch: int = 5000) -> ChainReport:
    """Walk the whole log in id order, recomputing every hash; report the first broken link.

    `conn` is an asyncpg connection or pool (verification reads only).
    """
    prev_hash = GENESIS
    last_id = 0
    count = 0
    while True:
        rows = await conn.fetch(
            "SELECT id, at, actor_id, actor_email, action, object_type, object_id, before::text AS before,"
            " after::text AS after, prev_hash, hash FROM audit_log WHERE id > $1 ORDER BY id LIMIT $2",
            last_id, batch,
        )
        if not rows:
            return ChainReport(count, True)
        for r in rows:
            if r["prev_hash"] != prev_hash:
                return ChainReport(count, False, r["id"], "prev_hash does not match the previous entry (row removed or reordered)")
            expected = entry_hash(
                prev_hash=prev_hash, at=r["at"], actor_id=r["actor_id"], actor_email=r["actor_email"],
                action=r["action"], object_type=r["object_type"], object_id=r["object_id"],
                before=json.loads(r["before"]) if r["before"] is not None else None,
                after=json.loads(r["after"]) if r["after"] is not None else None,
            )
            if expected != r["hash"]:
                return ChainReport(count, False, r["id"], "content does not match its hash (row altered)")
            prev_hash = r["hash"]
            last_id = r["id"]
            count += 1
