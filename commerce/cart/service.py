"""Cart use cases: a persistent cart for a signed-in user or a guest (found by its token), merged at sign-in.

A cart stores variant ids and quantities only, never prices: every view and the checkout
price the lines from the current price list, so a price change can never be sold at the
old price by accident (checkout also compares with the total the client last saw).
"""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from commerce import money, sql
from commerce.cart.models import Cart, CartLine
from core.errors import NotFound, ValidationFailed

MAX_LINE_QUANTITY = 99


def new_token() -> str:
    return secrets.token_urlsafe(24)


@dataclass(frozen=True)
class CartRef:
    """What a cart's lines and view need, read as a plain row (the asyncpg fast path has no ORM objects)."""

    id: uuid.UUID
    token: str
    currency: str
    user_id: uuid.UUID | None = None


async def create_guest(*, db: Any, currency: str) -> CartRef:
    """A new open guest cart in one INSERT (`db`: an AsyncSession or the asyncpg pool, see commerce.sql)."""
    cart = CartRef(id=uuid.uuid4(), token=new_token(), currency=money.check_currency(currency))
    await sql.fetch(db, "INSERT INTO carts (id, token, status, currency) VALUES (CAST(:id AS uuid), :token, 'open', :cur)",
                    {"id": cart.id, "token": cart.token, "cur": cart.currency})
    return cart


async def guest_by_token(*, db: Any, token: str) -> CartRef:
    """The open cart with this token as a CartRef (as by_token, without an ORM session), or NotFound."""
    row = await sql.fetchrow(db, "SELECT id, token, currency, user_id FROM carts WHERE token = :token AND status = 'open'",
                             {"token": token})
    if row is None:
        raise NotFound("cart not found (unknown token, or it became an order)")
    return CartRef(id=row["id"], token=row["token"], currency=row["currency"], user_id=row["user_id"])


async def create(*, db: AsyncSession, currency: str, user_id: uuid.UUID | None = None) -> Cart:
    """A new open cart (for a guest when `user_id` is None)."""
    cart = Cart(id=uuid.uuid4(), token=new_token(), user_id=user_id, currency=money.check_currency(currency))
    db.add(cart)
    await db.flush()
    return cart


async def by_token(*, db: AsyncSession, token: str, lock: bool = False) -> Cart:
    """The open cart with this token, or NotFound."""
    stmt = select(Cart).where(Cart.token == token, Cart.status == "open")
    if lock:
        stmt = stmt.with_for_update()
    cart = (await db.execute(stmt)).scalar_one_or_none()
    if cart is None:
        raise NotFound("cart not found (unknown token, or it became an order)")
    return cart


async def for_user(*, db: AsyncSession, user_id: uuid.UUID, currency: str) -> Cart:
    """The user's open cart, created on first use."""
    cart = (await db.execute(select(Cart).where(Cart.user_id == user_id, Cart.status == "open"))).scalar_one_or_none()
    if cart is not None:
        return cart
    # Two first requests at once: the partial unique index lets one insert win; the other reads it.
    stmt = insert(Cart).values(id=uuid.uuid4(), token=new_token(), user_id=user_id, status="open",
                               currency=money.check_currency(currency)).on_conflict_do_nothing()
    await db.execute(stmt)
    return (await db.execute(select(Cart).where(Cart.user_id == user_id, Cart.status == "open"))).scalar_one()


async def resolve(*, db: AsyncSession, user_id: uuid.UUID | None, token: str | None, currency: str,
                  create_missing: bool = True) -> Cart:
    """The cart a request means: the signed-in user's, else the guest token's, else a new guest cart."""
    if user_id is not None:
        return await for_user(db=db, user_id=user_id, currency=currency)
    if token:
        return await by_token(db=db, token=token)
    if not create_missing:
        raise NotFound("no cart: send X-Cart-Token")
    return await create(db=db, currency=currency)


# Set a line in ONE statement: the variant must be on sale in the cart's currency (no row from
# `on_sale`: nothing is inserted and the caller answers 404), the line is upserted and the cart
# touched. It was three statements and a flush (check, upsert, UPDATE carts) on the buyer's hot path;
# data-modifying WITH parts run once and to completion whether or not the outer SELECT reads them.
_SET_LINE = """
    WITH on_sale AS (
        SELECT v.id FROM product_variants v
        JOIN products p ON p.id = v.product_id
        JOIN variant_prices vp ON vp.variant_id = v.id AND vp.currency = :cur
        WHERE v.id = CAST(:variant AS integer) AND v.active AND p.published
    ), line AS (
        INSERT INTO cart_lines (cart_id, variant_id, quantity) SELECT CAST(:cart AS uuid), id, CAST(:qty AS integer) FROM on_sale
        ON CONFLICT (cart_id, variant_id) DO UPDATE SET quantity = EXCLUDED.quantity
        RETURNING variant_id
    ), touched AS (
        UPDATE carts SET updated_at = now() WHERE id = CAST(:cart AS uuid) AND EXISTS (SELECT 1 FROM line) RETURNING id
    )
    SELECT variant_id FROM line
"""
_REMOVE_LINE = """
    WITH gone AS (DELETE FROM cart_lines WHERE cart_id = CAST(:cart AS uuid) AND variant_id = CAST(:variant AS integer))
    UPDATE carts SET updated_at = now() WHERE id = CAST(:cart AS uuid)
"""


async def set_line(*, db: Any, cart: Cart | CartRef, variant_id: int, quantity: int) -> None:
    """Set a line's quantity (0 removes it); the variant must be on sale in the cart's currency.

    `db`: an AsyncSession, or the app's asyncpg pool (commerce.sql): one statement, atomic on its own.
    """
    if quantity < 0 or quantity > MAX_LINE_QUANTITY:
        raise ValidationFailed(f"quantity must be between 0 and {MAX_LINE_QUANTITY}")
    if quantity == 0:
        await sql.fetch(db, _REMOVE_LINE, {"cart": cart.id, "variant": variant_id})
        return
    row = await sql.fetchrow(db, _SET_LINE, {"cart": cart.id, "variant": variant_id, "qty": quantity, "cur": cart.currency})
    if row is None:
        raise NotFound(f"variant {variant_id} is not on sale in {cart.currency}")


async def add(*, db: AsyncSession, cart: Cart, variant_id: int, quantity: int = 1) -> None:
    """Add units to a line."""
    current = (await db.execute(select(CartLine.quantity).where(CartLine.cart_id == cart.id,
                                                                CartLine.variant_id == variant_id))).scalar() or 0
    await set_line(db=db, cart=cart, variant_id=variant_id, quantity=min(current + quantity, MAX_LINE_QUANTITY))


def empty_view(cart: Cart | CartRef) -> dict[str, Any]:
    """`view` of a cart known to have no lines (one just created): the same answer without the query."""
    return {"token": cart.token, "currency": cart.currency, "lines": [], "goods_total": Decimal("0"), "items": 0}


async def view(*, db: Any, cart: Cart | CartRef) -> dict[str, Any]:
    """The cart priced now: lines with unit price, line amount, availability; the goods total (`db` as in set_line)."""
    rows = await sql.fetch(db, """
        SELECT l.variant_id, l.quantity, v.sku, v.name AS variant_name, p.name, p.slug, vp.amount, vp.includes_tax,
               v.weight_kg, v.volume_l,
               coalesce((SELECT sum(s.quantity) FROM stock s WHERE s.variant_id = v.id), 0) AS available
        FROM cart_lines l
        JOIN product_variants v ON v.id = l.variant_id
        JOIN products p ON p.id = v.product_id
        LEFT JOIN variant_prices vp ON vp.variant_id = v.id AND vp.currency = CAST(:cur AS varchar)
        WHERE l.cart_id = CAST(:cart AS uuid) ORDER BY l.variant_id
    """, {"cart": cart.id, "cur": cart.currency})
    lines = []
    total = Decimal("0")
    for r in rows:
        amount = money.round_money(r["amount"] * r["quantity"], cart.currency) if r["amount"] is not None else None
        total += amount or 0
        lines.append({"variant_id": r["variant_id"], "sku": r["sku"], "name": r["name"], "variant_name": r["variant_name"],
                      "slug": r["slug"], "quantity": r["quantity"], "unit_price": r["amount"],
                      "includes_tax": r["includes_tax"], "line_total": amount, "available": int(r["available"]),
                      "in_stock": int(r["available"]) >= r["quantity"]})
    return {"token": cart.token, "currency": cart.currency, "lines": lines, "goods_total": total,
            "items": sum(ln["quantity"] for ln in lines)}


async def merge(*, db: AsyncSession, user_id: uuid.UUID, guest_token: str) -> Cart:
    """Fold a guest cart into the user's cart at sign-in (quantities add up); the guest cart is closed."""
    guest = await by_token(db=db, token=guest_token, lock=True)
    target = await for_user(db=db, user_id=user_id, currency=guest.currency)
    if guest.id == target.id:
        return target
    if guest.user_id is not None and guest.user_id != user_id:
        raise NotFound("cart not found")
    await db.execute(text("""
        INSERT INTO cart_lines (cart_id, variant_id, quantity)
        SELECT :target, variant_id, quantity FROM cart_lines WHERE cart_id = :guest
        ON CONFLICT (cart_id, variant_id) DO UPDATE SET quantity = LEAST(cart_lines.quantity + EXCLUDED.quantity, :maxq)
    """), {"target": target.id, "guest": guest.id, "maxq": MAX_LINE_QUANTITY})
    guest.status = "merged"
    target.updated_at = datetime.now(UTC)
    await db.flush()
    return target


async def line_count(*, db: AsyncSession, cart: Cart) -> int:
    return int((await db.execute(select(func.coalesce(func.sum(CartLine.quantity), 0))
                                 .where(CartLine.cart_id == cart.id))).scalar_one())


