"""Rendered catalog answers, cached per API process and keyed by the catalog's version.

Catalog reads (category tree, browse and search pages, product pages) are most of the
shop's traffic and change rarely. Each API process keeps the encoded JSON of answers it
has rendered, tagged with the catalog version they were rendered at; a request reads the
version (one Redis GET, ~0.1 ms) and serves the stored bytes when the tags match — no SQL,
no model or JSON encoding. Every catalog write bumps the version (`INCR`) once its
transaction has committed, so the next read in any process misses and renders afresh:
no answer rendered before a write is served after it.

Why after the commit and not inside the transaction: a reader that saw the new version
before the commit would render the old rows and store them under the new version, where
they would stay. A reader that rendered between the commit and the bump stored its
(already new) answer under the old version, which nobody asks for again.

What is left out of the cache, and why:
- units in stock on the product page: checkouts change them many times a second, so they
  are read live (one small query) and merged into the cached page;
- searches by signed-in customers: an early-access tier sees other products (not cached);
- time: an anonymous shopper stops seeing a product as "early access" when its
  `early_access_until` passes, which is no write; entries expire at the next such moment
  (and after `ttl_s` at the latest, a bound for writers that bypass the service).

Rejected: a Redis-side cache of the bodies — one more round trip and the bytes copied
per hit, for what each process can hold in a few MB. Rejected: pub/sub invalidation — a
process that misses a message would serve stale pages with nothing to correct it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import redis as syncredis
import redis.asyncio as aioredis
from sqlalchemy import event
from sqlalchemy.orm import Session

log = logging.getLogger("serena.commerce.catalog.cache")

VERSION_KEY = "catalog:version"  # under the deployment's Redis prefix
_CHANGED = "serena_catalog_changed"  # Session.info flag set by catalog writes


def version_key(prefix: str) -> str:
    return prefix + VERSION_KEY


# --- writes: bump after commit -------------------------------------------------------------------------------

# Where to bump: every (redis_url, prefix) an API process (or test app) serves the catalog from,
# registered by `CatalogCache`; the CLI's writers bump their own settings' explicitly.
_targets: set[tuple[str, str]] = set()
_targets_lock = threading.Lock()


def register_target(redis_url: str, prefix: str) -> None:
    with _targets_lock:
        _targets.add((redis_url, prefix))


def bump_sync(redis_url: str, prefix: str) -> int:
    """Make every cached answer of this deployment stale (blocking: catalog writes are rare)."""
    client = syncredis.Redis.from_url(redis_url)
    try:
        return int(client.incr(version_key(prefix)))
    finally:
        client.close()


async def bump(redis: aioredis.Redis, prefix: str) -> int:
    return int(await redis.incr(version_key(prefix)))


def mark_changed(db) -> None:  # noqa: ANN001 - an AsyncSession or a Session
    """Called by every catalog write: the version is bumped when this session's transaction commits."""
    session = getattr(db, "sync_session", db)
    session.info[_CHANGED] = True


@event.listens_for(Session, "after_commit")
def _after_commit(session: Session) -> None:
    if not session.info.pop(_CHANGED, False):
        return
    from core.settings import get_settings

    with _targets_lock:
        targets = set(_targets)
    if not targets:
        s = get_settings()
        targets = {(s.redis_url, s.redis_prefix)}
    for url, prefix in targets:
        try:
            bump_sync(url, prefix)
        except Exception:  # noqa: BLE001 - Redis down: every reader's GET of the version fails too, so nothing is served from cache
            log.exception("could not bump the catalog version in %s%s", url, prefix)


@event.listens_for(Session, "after_rollback")
def _after_rollback(session: Session) -> None:
    session.info.pop(_CHANGED, None)


# --- reads ---------------------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Entry:
    version: bytes
    expires: float  # time.monotonic()
    body: object  # encoded JSON (bytes), or a value the caller finishes per request


class CatalogCache:
    """One API process's rendered catalog answers (LRU, bounded)."""

    def __init__(self, *, redis: aioredis.Redis, prefix: str, redis_url: str | None = None, max_entries: int = 4096,
                 ttl_s: float = 300.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.redis, self.prefix, self.key = redis, prefix, version_key(prefix)
        self.max_entries, self.ttl_s, self.clock = max_entries, ttl_s, clock
        self.entries: OrderedDict[str, _Entry] = OrderedDict()
        self.hits = self.misses = 0
        if redis_url is not None:
            register_target(redis_url, prefix)

    async def version(self) -> bytes:
        return (await self.redis.get(self.key)) or b"0"

    async def get(self, key: str, render: Callable[[], Awaitable[tuple[object, float | None]]]) -> object:
        """The cached value for `key` at the current version, else `render()`'s (value, seconds it stays valid or None)."""
        version = await self.version()
        now = self.clock()
        e = self.entries.get(key)
        if e is not None and e.version == version and e.expires > now:
            self.entries.move_to_end(key)
            self.hits += 1
            return e.body
        self.misses += 1
        body, valid_s = await render()
        ttl = self.ttl_s if valid_s is None else max(0.0, min(self.ttl_s, valid_s))
        self.entries[key] = _Entry(version, now + ttl, body)
        self.entries.move_to_end(key)
        while len(self.entries) > self.max_entries:
            self.entries.popitem(last=False)
        return body


def cache_for(app) -> CatalogCache:  # noqa: ANN001 - a FastAPI app
    """The app's catalog cache (created on first use)."""
    cache = getattr(app.state, "catalog_cache", None)
    if cache is None:
        st = app.state
        cache = CatalogCache(redis=st.redis, prefix=st.settings.redis_prefix, redis_url=st.settings.redis_url)
        st.catalog_cache = cache
    return cache
