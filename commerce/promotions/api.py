"""Promotion routes: marketing creates coupons; the campaign report feeds ROI."""

from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy import select

from commerce import money
from commerce.promotions import service
from commerce.promotions.models import Promotion
from commerce.promotions.schemas import PromotionCreate
from core import audit
from core.models import User
from core.rbac import Permission
from serena.deps import Db, Principal, require

router = APIRouter(tags=["promotions"])


def _out(p: Promotion) -> dict:
    return money.plain({"id": p.id, "code": p.code, "name": p.name, "kind": p.kind, "value": p.value,
                        "currency": p.currency, "min_spend": p.min_spend, "global_cap": p.global_cap,
                        "per_customer_cap": p.per_customer_cap, "redemptions": p.redemptions,
                        "campaign_id": p.campaign_id, "active": p.active,
                        "starts_at": p.starts_at.isoformat() if p.starts_at else None,
                        "ends_at": p.ends_at.isoformat() if p.ends_at else None})


@router.post("/v1/promotions", status_code=201)
async def create(body: PromotionCreate, db: Db, principal: Principal = require(Permission.PROMOTIONS_WRITE)):
    promo = await service.create(db=db, **body.model_dump())
    user = await db.get(User, principal.user_id)
    await audit.record(db, actor_id=principal.user_id, actor_email=user.email if user else "", action="promotion.create",
                       object_type="promotion", object_id=promo.id, after=_out(promo))
    return _out(promo)


@router.get("/v1/promotions")
async def list_all(db: Db, _principal: Principal = require(Permission.PROMOTIONS_WRITE)):
    return [_out(p) for p in (await db.execute(select(Promotion).order_by(Promotion.id.desc()).limit(200))).scalars()]


@router.get("/v1/reports/campaigns")
async def campaigns(db: Db, _principal: Principal = require(Permission.REPORTS_READ)):
    """Paid orders, discount given and revenue per campaign id."""
    return money.plain(await service.campaign_report(db=db))
