"""Preferences: may this recipient get this category of message on this channel?

Transactional messages (about an order the customer placed) go out unless the recipient
opted out of the channel (or of all channels, "*"). Marketing goes out only after an
explicit opt-in and never after an opt-out: silence is not consent. Recipients are the
address itself (e-mail in lower case, phone as given), so a preference follows the
person across orders and guest checkouts.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from notifications.models import Category, Preference


def normalise(recipient: str) -> str:
    """E-mail addresses compare in lower case; phone numbers without spaces."""
    r = recipient.strip()
    return r.lower() if "@" in r else r.replace(" ", "")


async def allowed(db: AsyncSession, *, recipient: str, channel: str, category: str) -> tuple[bool, str]:
    """(may send, reason when not)."""
    rows = (await db.execute(select(Preference.channel, Preference.opted_out).where(
        Preference.recipient == normalise(recipient), Preference.channel.in_((channel, "*")),
        Preference.category == category))).all()
    if any(opted_out for _, opted_out in rows):
        which = "all channels" if any(c == "*" and o for c, o in rows) else channel
        return False, f"recipient opted out of {category} messages on {which}"
    if category == Category.MARKETING and not any(not o for _, o in rows):
        return False, "marketing needs an explicit opt-in"
    return True, ""


async def set_preference(db: AsyncSession, *, recipient: str, channel: str, category: str, opted_out: bool) -> None:
    """Record a choice (insert or replace)."""
    stmt = insert(Preference).values(recipient=normalise(recipient), channel=channel, category=category, opted_out=opted_out)
    await db.execute(stmt.on_conflict_do_update(index_elements=["recipient", "channel", "category"],
                                                set_={"opted_out": opted_out, "updated_at": func.now()}))


async def list_for(db: AsyncSession, *, recipient: str) -> list[Preference]:
    return list((await db.execute(select(Preference).where(Preference.recipient == normalise(recipient))
                                  .order_by(Preference.channel, Preference.category))).scalars())


# --- one-click unsubscribe (RFC 8058) -----------------------------------------------------

_TOKEN_CONTEXT = b"serena.notifications.unsubscribe:"  # domain separation: the key is the JWT secret


def unsubscribe_token(secret: str, *, recipient: str, channel: str, category: str) -> str:
    """A link token that opts `recipient` out of `category` on `channel`; needs no sign-in and never expires."""
    data = base64.urlsafe_b64encode(json.dumps([normalise(recipient), channel, category]).encode()).rstrip(b"=")
    mac = hmac.new(secret.encode(), _TOKEN_CONTEXT + data, hashlib.sha256).hexdigest()[:32]
    return f"{data.decode()}.{mac}"


def read_unsubscribe_token(secret: str, token: str) -> tuple[str, str, str]:
    """(recipient, channel, category) of a valid token; ValueError otherwise."""
    data, _, mac = token.partition(".")
    good = hmac.new(secret.encode(), _TOKEN_CONTEXT + data.encode(), hashlib.sha256).hexdigest()[:32]
    if not mac or not hmac.compare_digest(mac, good):
        raise ValueError("invalid unsubscribe link")
    recipient, channel, category = json.loads(base64.urlsafe_b64decode(data + "=" * (-len(data) % 4)))
    return recipient, channel, category


def unsubscribe_url(settings, *, recipient: str, channel: str, category: str) -> str:
    """The one-click link (POST) for a message's List-Unsubscribe header and footer."""
    token = unsubscribe_token(settings.jwt_secret, recipient=recipient, channel=channel, category=category)
    return f"{settings.notifications_public_url.rstrip('/')}/v1/notifications/unsubscribe/{token}"
