"""Payment routes: the Stripe webhook endpoint (public; authenticated by its signature)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Request

from commerce.deps import Provider
from commerce.payments import service
from commerce.payments.provider import BadSignature
from core.errors import SerenaError
from core.rbac import Permission
from serena.deps import Db, require

router = APIRouter(prefix="/v1/payments", tags=["payments"])


class BadWebhook(SerenaError):
    status_code = 400
    code = "bad_signature"


@router.post("/stripe/webhook")
async def stripe_webhook(request: Request, db: Db, provider: Provider,
                         stripe_signature: Annotated[str | None, Header(alias="Stripe-Signature")] = None,
                         _=require(Permission.PUBLIC)):
    """Stripe events, verified by signature; a repeated delivery is acknowledged and ignored."""
    payload = await request.body()
    try:
        outcome = await service.handle_webhook(db=db, provider=provider, payload=payload, signature=stripe_signature)
    except BadSignature as exc:
        raise BadWebhook(f"webhook refused: {exc}") from None
    return {"received": outcome.event_id, "type": outcome.type, "applied": outcome.applied, "reason": outcome.reason}
