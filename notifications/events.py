"""What notifications consumes from the event bus (it publishes nothing).

Consumes, in consumer group `notifications` (one group: every message of an event is
written in one transaction with its `processed_events` row):
- `order.paid`, `order.exchange` (commerce) → remember the order's contact; "order confirmed".
- `delivery.out_for_delivery`, `delivery.completed`, `delivery.failed` (dispatch) → the
  customer's messages.
- `stop.arriving` (tracking) → "arriving soon", once per delivery attempt.
- `eta.changed` (tracking) → the ETA shown in later messages; no message of its own (an
  ETA that moves every minute must not become a text every minute).
- every type → webhook endpoints whose event-type patterns match.
"""

from __future__ import annotations

from core.consumer import Consumer
from core.settings import Settings
from notifications.rules import Enqueue, Handler

GROUP = "notifications"


def make_consumer(*, settings: Settings, sessions, redis, enqueue: Enqueue, **options) -> Consumer:
    """The notifications consumer over an `async_sessionmaker` and a redis.asyncio client."""
    return Consumer(group=GROUP, handler=Handler(settings=settings, enqueue=enqueue), db=sessions, redis=redis,
                    prefix=settings.redis_prefix, types=None, **options)
