"""Loyalty routes: a customer's tier, balance and ledger."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter

from commerce import money
from commerce.deps import AppSettings
from commerce.loyalty import service
from core.rbac import Permission
from serena.deps import Db, Principal, require

router = APIRouter(prefix="/v1/loyalty", tags=["loyalty"])


@router.get("")
async def mine(db: Db, settings: AppSettings, principal: Principal = require(Permission.ORDERS_OWN)):
    st = await service.status(db=db, settings=settings, user_id=principal.user_id, now=datetime.now(UTC))
    st["entries"] = [{"kind": e.kind, "points": e.points, "note": e.note, "order_id": str(e.order_id) if e.order_id else None,
                      "at": e.created_at.isoformat()} for e in await service.history(db=db, user_id=principal.user_id)]
    return money.plain(st)
