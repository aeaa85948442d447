"""HTTP routes of notifications (staff only): webhook endpoints, recent messages, recipients' preferences.

Webhook endpoints are integrations that receive delivery data: `fleet:write` (dispatchers,
admins). Messages and preferences carry customers' addresses: `orders:read` to look,
`orders:write` (support) to change a customer's choice on their behalf.
"""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Query, Response

from core import audit
from core.errors import ValidationFailed
from core.rbac import Permission
from notifications import preferences, service
from notifications.schemas import (
    DeliveryRead,
    NotificationRead,
    PreferenceRead,
    PreferenceSet,
    WebhookCreate,
    WebhookRead,
    WebhookUpdate,
    WebhookUpdated,
    WebhookWithSecret,
)
from serena.deps import Db, SettingsDep, load_user, require

router = APIRouter(tags=["notifications"])


@router.post("/v1/notifications/webhooks", response_model=WebhookWithSecret, status_code=201)
async def create_webhook(body: WebhookCreate, db: Db, settings: SettingsDep, principal=require(Permission.FLEET_WRITE)):
    """Register a webhook endpoint; the signing secret is in this answer only."""
    user = await load_user(db, principal)
    return await service.create_webhook(db=db, settings=settings, body=body, actor_id=user.id, actor_email=user.email)


@router.get("/v1/notifications/webhooks", response_model=list[WebhookRead])
async def list_webhooks(db: Db, _=require(Permission.FLEET_WRITE)):
    """Every webhook endpoint (secrets are never listed)."""
    return await service.list_webhooks(db=db)


@router.get("/v1/notifications/webhooks/{endpoint_id}", response_model=WebhookRead)
async def get_webhook(endpoint_id: int, db: Db, _=require(Permission.FLEET_WRITE)):
    """One webhook endpoint."""
    return await service.get_webhook(db=db, endpoint_id=endpoint_id)


@router.patch("/v1/notifications/webhooks/{endpoint_id}", response_model=WebhookUpdated)
async def update_webhook(endpoint_id: int, body: WebhookUpdate, db: Db, settings: SettingsDep,
                         principal=require(Permission.FLEET_WRITE)):
    """Change an endpoint; with `rotate_secret` the answer carries the new secret."""
    user = await load_user(db, principal)
    ep = await service.update_webhook(db=db, settings=settings, endpoint_id=endpoint_id, body=body, actor_id=user.id,
                                      actor_email=user.email)
    # Built from WebhookRead: the row has a `secret` attribute, which must not leak into every answer.
    return WebhookUpdated(**WebhookRead.model_validate(ep).model_dump(), secret=ep.secret if body.rotate_secret else None)


@router.delete("/v1/notifications/webhooks/{endpoint_id}", status_code=204)
async def delete_webhook(endpoint_id: int, db: Db, principal=require(Permission.FLEET_WRITE)):
    """Remove an endpoint (its delivery log stays)."""
    user = await load_user(db, principal)
    await service.delete_webhook(db=db, endpoint_id=endpoint_id, actor_id=user.id, actor_email=user.email)
    return Response(status_code=204)


@router.get("/v1/notifications/webhooks/{endpoint_id}/deliveries", response_model=list[DeliveryRead])
async def webhook_deliveries(endpoint_id: int, db: Db, limit: int = Query(100, ge=1, le=1000),
                             _=require(Permission.FLEET_WRITE)):
    """Every POST to the endpoint: attempt, HTTP status, error, the back-off chosen after it."""
    return await service.list_deliveries(db=db, endpoint_id=endpoint_id, limit=limit)


@router.get("/v1/notifications", response_model=list[NotificationRead])
async def list_notifications(db: Db, state: Literal["queued", "sending", "sent", "failed", "suppressed"] | None = None,
                             channel: Literal["email", "sms", "webhook"] | None = None, order_id: str | None = None,
                             recipient: str | None = None, limit: int = Query(100, ge=1, le=1000),
                             _=require(Permission.ORDERS_READ)):
    """Recent messages with their status, newest first."""
    return await service.list_notifications(db=db, state=state, channel=channel, order_id=order_id, recipient=recipient,
                                            limit=limit)


@router.get("/v1/notifications/preferences", response_model=list[PreferenceRead])
async def get_preferences(db: Db, recipient: str = Query(min_length=3, max_length=320), _=require(Permission.ORDERS_READ)):
    """A recipient's recorded choices (none = transactional on every channel, no marketing)."""
    return await preferences.list_for(db, recipient=recipient)


@router.put("/v1/notifications/preferences", response_model=list[PreferenceRead])
async def set_preference(body: PreferenceSet, db: Db, principal=require(Permission.ORDERS_WRITE)):
    """Record a recipient's opt-out (or marketing opt-in) on a channel, on their behalf."""
    user = await load_user(db, principal)
    await preferences.set_preference(db, recipient=body.recipient, channel=body.channel, category=body.category,
                                     opted_out=body.opted_out)
    await audit.record(db, actor_id=user.id, actor_email=user.email, action="notifications.preference.set",
                       object_type="notification_recipient", object_id=preferences.normalise(body.recipient)[:64],
                       after=body.model_dump())
    return await preferences.list_for(db, recipient=body.recipient)


@router.post("/v1/notifications/unsubscribe/{token}", response_model=PreferenceRead)
async def unsubscribe(token: str, db: Db, settings: SettingsDep, _=require(Permission.PUBLIC)):
    """One-click unsubscribe (RFC 8058) from the link in an e-mail: the signed token is the authorisation."""
    try:
        recipient, channel, category = preferences.read_unsubscribe_token(settings.jwt_secret, token)
    except ValueError:
        raise ValidationFailed("invalid unsubscribe link") from None
    await preferences.set_preference(db, recipient=recipient, channel=channel, category=category, opted_out=True)
    [pref] = [p for p in await preferences.list_for(db, recipient=recipient) if (p.channel, p.category) == (channel, category)]
    return pref
