"""One SQL text (named `:params`) run on either an ORM session or straight on the app's asyncpg pool.

The buyer's small requests (a new guest cart, a cart line, a delivery quote) are one to three
statements that need no transaction around them: each statement is atomic on its own. Through
the request's session each paid a pool ping, BEGIN and COMMIT on top (three round trips) and
SQLAlchemy's per-statement work; on the asyncpg pool (`app.state.pg_pool`, as the catalog's live
stock query and tracking use it) a statement is one round trip. Service functions take either,
so the same SQL serves the web pages' and the tests' sessions and the API's fast path.
"""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

_NAMED = re.compile(r"(?<![:\w]):(\w+)")  # :name, not a ::cast


def _positional(sql: str, params: dict[str, Any]) -> tuple[str, list[Any]]:
    """`sql` with :name turned into $n (asyncpg's style), and the values in that order (a repeated name, one $n)."""
    order: list[str] = []

    def repl(m: re.Match) -> str:
        name = m.group(1)
        if name not in order:
            order.append(name)
        return f"${order.index(name) + 1}"

    out = _NAMED.sub(repl, sql)
    return out, [params[n] for n in order]


async def fetch(db: Any, sql: str, params: dict[str, Any]) -> list[Any]:
    """All rows (each readable as row["column"]) of `sql` on an AsyncSession, or an asyncpg pool/connection."""
    if isinstance(db, AsyncSession):
        return list((await db.execute(text(sql), params)).mappings().all())
    query, args = _positional(sql, params)
    return list(await db.fetch(query, *args))


async def fetchrow(db: Any, sql: str, params: dict[str, Any]) -> Any | None:
    """The first row of `sql` (or None), as `fetch`."""
    rows = await fetch(db, sql, params)
    return rows[0] if rows else None
