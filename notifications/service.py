"""Notification use cases for staff: webhook endpoints (with their audit trail), recent messages, preferences."""

from __future__ import annotations

import secrets
import uuid
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from core import audit
from core.errors import NotFound, ValidationFailed
from core.settings import Settings
from notifications import channels, preferences
from notifications.models import Notification, WebhookDelivery, WebhookEndpoint
from notifications.schemas import WebhookCreate, WebhookUpdate

_EVENT_PATTERN_CHARS = set("abcdefghijklmnopqrstuvwxyz0123456789._*?-")


def new_secret() -> str:
    """A 256-bit signing key, prefixed so it is recognisable in a secret scanner."""
    return "whsec_" + secrets.token_urlsafe(32)


def _check(settings: Settings, *, url: str | None, event_types: list[str] | None) -> None:
    if url is not None:
        try:
            channels.check_url(url, allow_private=channels.private_allowed(settings))
        except channels.UnsafeUrl as exc:
            raise ValidationFailed(str(exc)) from None
    for pattern in event_types or ():
        if not pattern or len(pattern) > 64 or set(pattern) - _EVENT_PATTERN_CHARS:
            raise ValidationFailed(f"event type pattern {pattern[:80]!r}: use lower-case names and * wildcards, e.g. 'delivery.*'")


def _snapshot(ep: WebhookEndpoint) -> dict:
    return {"subscriber": ep.subscriber, "url": ep.url, "event_types": list(ep.event_types), "active": ep.active,
            "description": ep.description}


async def create_webhook(*, db: AsyncSession, settings: Settings, body: WebhookCreate, actor_id: uuid.UUID | None,
                         actor_email: str) -> WebhookEndpoint:
    """Register an endpoint; its secret is returned once, with the row."""
    _check(settings, url=body.url, event_types=body.event_types)
    ep = WebhookEndpoint(subscriber=body.subscriber, url=body.url, secret=new_secret(), event_types=body.event_types,
                         description=body.description, active=True, created_by=actor_id)
    db.add(ep)
    await db.flush()
    await db.refresh(ep)
    await audit.record(db, actor_id=actor_id, actor_email=actor_email, action="notifications.webhook.create",
                       object_type="webhook_endpoint", object_id=ep.id, after=_snapshot(ep))
    return ep


async def get_webhook(*, db: AsyncSession, endpoint_id: int, lock: bool = False) -> WebhookEndpoint:
    """One endpoint that is not deleted."""
    stmt = select(WebhookEndpoint).where(WebhookEndpoint.id == endpoint_id, WebhookEndpoint.deleted_at.is_(None))
    ep = (await db.execute(stmt.with_for_update() if lock else stmt)).scalar_one_or_none()
    if ep is None:
        raise NotFound(f"webhook endpoint {endpoint_id} not found")
    return ep


async def list_webhooks(*, db: AsyncSession) -> list[WebhookEndpoint]:
    """Every endpoint that is not deleted, newest first."""
    return list((await db.execute(select(WebhookEndpoint).where(WebhookEndpoint.deleted_at.is_(None))
                                  .order_by(WebhookEndpoint.id.desc()))).scalars())


async def update_webhook(*, db: AsyncSession, settings: Settings, endpoint_id: int, body: WebhookUpdate,
                         actor_id: uuid.UUID | None, actor_email: str) -> WebhookEndpoint:
    """Change URL, patterns, description or active flag; optionally rotate the secret."""
    ep = await get_webhook(db=db, endpoint_id=endpoint_id, lock=True)
    _check(settings, url=body.url, event_types=body.event_types)
    before = _snapshot(ep)
    for field in ("url", "event_types", "description", "active"):
        value = getattr(body, field)
        if value is not None:
            setattr(ep, field, value)
    if body.rotate_secret:
        ep.secret = new_secret()
    ep.updated_at = datetime.now(UTC)
    await db.flush()
    await audit.record(db, actor_id=actor_id, actor_email=actor_email, action="notifications.webhook.update",
                       object_type="webhook_endpoint", object_id=ep.id, before=before,
                       after={**_snapshot(ep), "secret_rotated": body.rotate_secret})
    return ep


async def delete_webhook(*, db: AsyncSession, endpoint_id: int, actor_id: uuid.UUID | None, actor_email: str) -> None:
    """Soft-delete: no new messages; queued ones fail with a reason; the delivery log stays."""
    ep = await get_webhook(db=db, endpoint_id=endpoint_id, lock=True)
    before = _snapshot(ep)
    ep.deleted_at = datetime.now(UTC)
    ep.active = False
    await audit.record(db, actor_id=actor_id, actor_email=actor_email, action="notifications.webhook.delete",
                       object_type="webhook_endpoint", object_id=ep.id, before=before, after=None)


async def list_deliveries(*, db: AsyncSession, endpoint_id: int, limit: int = 100) -> list[WebhookDelivery]:
    """The endpoint's delivery log, newest first."""
    await get_webhook(db=db, endpoint_id=endpoint_id)
    stmt = (select(WebhookDelivery).join(Notification, Notification.id == WebhookDelivery.notification_id)
            .where(Notification.endpoint_id == endpoint_id).order_by(WebhookDelivery.id.desc()).limit(limit))
    return list((await db.execute(stmt)).scalars())


async def list_notifications(*, db: AsyncSession, state: str | None = None, channel: str | None = None,
                             order_id: str | None = None, recipient: str | None = None, limit: int = 100) -> list[Notification]:
    """Recent messages, newest first, optionally filtered."""
    stmt = select(Notification).order_by(Notification.id.desc()).limit(limit)
    if state:
        stmt = stmt.where(Notification.state == state)
    if channel:
        stmt = stmt.where(Notification.channel == channel)
    if order_id:
        stmt = stmt.where(Notification.order_id == order_id)
    if recipient:
        stmt = stmt.where(Notification.recipient == preferences.normalise(recipient))
    return list((await db.execute(stmt)).scalars())
