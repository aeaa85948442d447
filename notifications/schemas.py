"""Request and response shapes of the notifications API."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

EventPattern = str  # fnmatch pattern over event types: "delivery.*", "order.paid"


class WebhookCreate(BaseModel):
    subscriber: str = Field(min_length=1, max_length=128)
    url: str = Field(min_length=8, max_length=2000)
    event_types: list[EventPattern] = Field(min_length=1, max_length=50)
    description: str = Field(default="", max_length=1000)


class WebhookUpdate(BaseModel):
    url: str | None = Field(default=None, min_length=8, max_length=2000)
    event_types: list[EventPattern] | None = Field(default=None, min_length=1, max_length=50)
    description: str | None = Field(default=None, max_length=1000)
    active: bool | None = None
    rotate_secret: bool = False  # a new secret is returned once, like at creation


class WebhookRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    subscriber: str
    url: str
    event_types: list[str]
    description: str
    active: bool
    created_at: datetime
    updated_at: datetime


class WebhookWithSecret(WebhookRead):
    secret: str  # shown only at creation and rotation: store it on the receiving side


class WebhookUpdated(WebhookRead):
    secret: str | None = None  # only when the update rotated it


class DeliveryRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    notification_id: int
    attempt: int
    status_code: int | None
    error: str | None
    duration_ms: float
    retry_in_s: float | None
    created_at: datetime


class NotificationRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    event_id: uuid.UUID
    event_type: str
    channel: str
    recipient: str
    kind: str
    category: str
    order_id: str | None
    locale: str
    subject: str
    state: str
    attempts: int
    last_error: str | None
    next_attempt_at: datetime
    sent_at: datetime | None
    created_at: datetime


class PreferenceSet(BaseModel):
    recipient: str = Field(min_length=3, max_length=320)
    channel: Literal["email", "sms", "webhook", "*"]
    category: Literal["transactional", "marketing"]
    opted_out: bool


class PreferenceRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    recipient: str
    channel: str
    category: str
    opted_out: bool
    updated_at: datetime
