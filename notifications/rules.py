"""Rules: which events become which messages, written as `notifications` rows in the event's transaction.

The consumer (group `notifications`) calls `handle(db, event)` inside the transaction that
also records the event id in `processed_events`; every row is inserted with
`ON CONFLICT (event_id, channel, recipient) DO NOTHING`, so a redelivered event writes
nothing twice even if `processed_events` were bypassed. The ids of new `queued` rows are
handed to `enqueue` **after** the commit (a send task must never see a row that may yet
roll back); if the process dies in between, `sender.recover` finds the queued rows.

Customer messages need a contact: `order.paid` carries it (name, phone, e-mail, locale,
tracking token) and we keep our own copy (`notification_contacts`), because delivery
events carry only the order id and this room may not ask commerce.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import logging
from datetime import UTC, datetime
from collections.abc import Callable
from typing import Any

from sqlalchemy import event as sa_event
from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from core.events import Event, dumps
from core.settings import Settings
from notifications import preferences, templates
from notifications.models import Category, Channel, Contact, Notification, State, WebhookEndpoint

log = logging.getLogger(__name__)

Enqueue = Callable[[list[int]], None]


@dataclasses.dataclass(frozen=True)
class Rule:
    kind: str  # template name
    channels: tuple[str, ...]  # in order of preference
    all_channels: bool  # True: every channel the contact has; False: the first one they have
    category: str = Category.TRANSACTIONAL.value
    max_age_s: float | None = None  # older events (a backlog after an outage) are recorded as suppressed, not sent


RULES: dict[str, Rule] = {
    "order.paid": Rule("order_confirmed", (Channel.EMAIL, Channel.SMS), all_channels=False),
    "delivery.out_for_delivery": Rule("out_for_delivery", (Channel.EMAIL, Channel.SMS), all_channels=True,
                                      max_age_s=6 * 3600),
    # Tracking's geofence (or ETA ≤ 5 min) says the driver is close. dispatch turns the same
    # fact into delivery.arriving; we take tracking's event (it is first) and not both.
    "stop.arriving": Rule("arriving_soon", (Channel.SMS, Channel.EMAIL), all_channels=True, max_age_s=30 * 60),
    "delivery.completed": Rule("delivered", (Channel.EMAIL, Channel.SMS), all_channels=False),
    "delivery.failed": Rule("delivery_failed", (Channel.EMAIL, Channel.SMS), all_channels=True),
}


def age_s(event: Event, now: datetime | None = None) -> float | None:
    """Seconds since the event was emitted (None if the entry carries no time)."""
    try:
        created = datetime.fromisoformat(event.created_at)
    except ValueError:
        return None
    if created.tzinfo is None:
        created = created.replace(tzinfo=UTC)
    return ((now or datetime.now(UTC)) - created).total_seconds()


def order_id_of(payload: dict[str, Any]) -> str | None:
    """The commerce order an event is about: `order_id`, or dispatch's `order:{id}` idempotency key."""
    if payload.get("order_id"):
        return str(payload["order_id"])
    key = str(payload.get("idempotency_key") or "")
    return key.split(":", 1)[1] if key.startswith("order:") else None


def _contact_fields(payload: dict[str, Any]) -> dict[str, Any]:
    contact = payload.get("contact") or {}
    email = contact.get("email") or payload.get("email")
    phone = contact.get("phone") or payload.get("phone")
    return {
        "order_number": str(payload.get("order_number") or "")[:64],
        "name": str(contact.get("name") or payload.get("name") or "")[:200],
        "email": str(email).strip().lower()[:320] if email else None,
        "phone": str(phone).replace(" ", "")[:32] if phone else None,
        "locale": str(contact.get("locale") or payload.get("locale") or "en")[:16],
        "tracking_token": payload.get("tracking_token"),
    }


async def _upsert_contact(db: AsyncSession, order_id: str, payload: dict[str, Any]) -> Contact:
    fields = _contact_fields(payload)
    stmt = insert(Contact).values(order_id=order_id, **fields)
    await db.execute(stmt.on_conflict_do_update(index_elements=["order_id"], set_={**fields, "updated_at": func.now()}))
    return (await db.execute(select(Contact).where(Contact.order_id == order_id).with_for_update())).scalar_one()


def _context(settings: Settings, contact: Contact, payload: dict[str, Any]) -> dict[str, Any]:
    window = payload.get("window") or {}
    base = settings.notifications_public_url.rstrip("/")
    return {
        "name": contact.name,
        "order_number": contact.order_number or contact.order_id[:8],
        "tracking_url": f"{base}/track/{contact.tracking_token}" if contact.tracking_token else None,
        "window_start": window.get("start"),
        "window_end": window.get("end"),
        "eta_earliest": payload.get("earliest") or contact.eta_earliest,
        "eta_latest": payload.get("latest") or contact.eta_latest,
        "reason": payload.get("reason") or "",
        "unsubscribe_url": None,
    }


class Handler:
    """`await handler(db, event)`: the consumer's handler; new rows are enqueued after the commit."""

    def __init__(self, *, settings: Settings, enqueue: Enqueue):
        self.settings = settings
        self.enqueue = enqueue

    async def __call__(self, db: AsyncSession, event: Event) -> None:
        new_ids: list[int] = []
        new_ids += await self._customer_messages(db, event)
        new_ids += await self._webhooks(db, event)
        if new_ids:
            self._after_commit(db, new_ids)

    # --- customers ---------------------------------------------------------------------

    async def _customer_messages(self, db: AsyncSession, event: Event) -> list[int]:
        payload = event.payload
        order_id = order_id_of(payload)
        if order_id is None:
            return []  # a delivery from the public API, a depot stop: no customer of ours to tell
        if event.type in ("order.paid", "order.exchange"):
            contact = await _upsert_contact(db, order_id, payload)
        else:
            contact = (await db.execute(select(Contact).where(Contact.order_id == order_id).with_for_update())).scalar_one_or_none()
            if contact is None:
                return []  # we never saw its order.paid (an order from before notifications existed)
        if event.type == "eta.changed":
            contact.eta_earliest = payload.get("earliest") or contact.eta_earliest
            contact.eta_latest = payload.get("latest") or contact.eta_latest
            return []
        rule = RULES.get(event.type)
        if rule is None:
            return []
        if rule.kind == "arriving_soon":
            if contact.arriving_attempt == contact.attempt:
                return []  # already told for this attempt (stop.arriving repeats on geofence re-entry)
            contact.arriving_attempt = contact.attempt
        context = _context(self.settings, contact, payload)
        if event.type == "delivery.failed":
            contact.attempt += 1  # a re-attempt may say "arriving soon" again
        ids: list[int] = []
        for channel in rule.channels:
            address = contact.email if channel == Channel.EMAIL else contact.phone
            if not address:
                continue
            sent, new = await self._write(db, event, channel=channel, recipient=address, rule=rule, contact=contact,
                                          context=context)
            ids += new
            if sent and not rule.all_channels:
                break  # one channel is enough; an opted-out channel falls through to the next
        return ids

    async def _write(self, db: AsyncSession, event: Event, *, channel: str, recipient: str, rule: Rule, contact: Contact,
                     context: dict[str, Any]) -> tuple[bool, list[int]]:
        """Write one message row (suppressed if the recipient opted out); (allowed, ids of new queued rows)."""
        ok, why = await preferences.allowed(db, recipient=recipient, channel=channel, category=rule.category)
        age = age_s(event)
        if ok and rule.max_age_s is not None and age is not None and age > rule.max_age_s:
            # "Arriving in a few minutes" an hour late is worse than nothing.
            ok, why = False, f"event is {age / 60:.0f} min old; {rule.kind} is only useful within {rule.max_age_s / 60:.0f} min"
        if channel == Channel.EMAIL:
            context = {**context, "unsubscribe_url": preferences.unsubscribe_url(
                self.settings, recipient=recipient, channel=channel, category=rule.category)}
        rendered = templates.render(rule.kind, channel, contact.locale, context)
        values = dict(event_id=event.event_id, event_type=event.type, channel=str(channel), recipient=recipient,
                      kind=rule.kind, category=rule.category, order_id=contact.order_id, locale=rendered.locale,
                      subject=rendered.subject, body_text=rendered.text, body_html=rendered.html,
                      state=(State.QUEUED if ok else State.SUPPRESSED).value, last_error=None if ok else why)
        return ok, await _insert(db, values, queued=ok)

    # --- webhooks ----------------------------------------------------------------------

    async def _webhooks(self, db: AsyncSession, event: Event) -> list[int]:
        endpoints = (await db.execute(select(WebhookEndpoint).where(
            WebhookEndpoint.active.is_(True), WebhookEndpoint.deleted_at.is_(None)))).scalars().all()
        body = None
        ids: list[int] = []
        for ep in endpoints:
            if not any(fnmatch.fnmatchcase(event.type, p) for p in ep.event_types):
                continue
            if body is None:
                body = dumps({"id": str(event.event_id), "type": event.type, "created_at": event.created_at,
                              "aggregate": event.aggregate, "aggregate_id": event.aggregate_id, "data": event.payload})
            values = dict(event_id=event.event_id, event_type=event.type, channel=Channel.WEBHOOK.value,
                          recipient=f"endpoint:{ep.id}", kind="webhook", category=Category.TRANSACTIONAL.value,
                          order_id=order_id_of(event.payload), endpoint_id=ep.id, locale="en", subject=event.type,
                          body_text=body, body_html=None, state=State.QUEUED.value)
            ids += await _insert(db, values, queued=True)
        return ids

    # --- after commit ------------------------------------------------------------------

    def _after_commit(self, db: AsyncSession, ids: list[int]) -> None:
        sync = db.sync_session
        pending: list[int] | None = sync.info.get("notifications_pending")
        if pending is None:
            pending = sync.info["notifications_pending"] = []
            enqueue = self.enqueue

            def after_commit(session) -> None:
                todo = list(session.info.pop("notifications_pending", []))
                try:
                    enqueue(todo)
                except Exception:  # noqa: BLE001 - the rows are committed; recover() re-enqueues them
                    log.exception("could not enqueue %d notifications; the recovery sweep will", len(todo))

            def after_rollback(session, previous_transaction) -> None:
                session.info.pop("notifications_pending", None)

            sa_event.listen(sync, "after_commit", after_commit, once=True)
            sa_event.listen(sync, "after_soft_rollback", after_rollback, once=True)
        pending.extend(ids)


async def _insert(db: AsyncSession, values: dict[str, Any], *, queued: bool) -> list[int]:
    stmt = insert(Notification).values(**values).on_conflict_do_nothing(
        index_elements=["event_id", "channel", "recipient"]).returning(Notification.id)
    new_id = (await db.execute(stmt)).scalar_one_or_none()
    return [new_id] if new_id is not None and queued else []
