"""The payment-provider interface, and Stripe behind it through the official SDK.

Checkout talks to a `PaymentProvider`; nothing outside this module imports `stripe`.
`StripeProvider` uses a `StripeClient` whose API base is `settings.stripe_api_base`
(localstripe on loopback in development and tests, https://api.stripe.com in production)
and the SDK's async httpx client, so a payment call does not block the event loop.

Amounts cross this interface in minor units (int), as every provider wants them; the
conversion from Decimal happens in `commerce.money` with its explicit rounding.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import stripe

from core.settings import Settings


@dataclass(frozen=True)
class Intent:
    """A provider's view of one payment."""

    ref: str  # provider reference (PaymentIntent id)
    status: str  # succeeded | requires_action | processing | requires_capture | failed | canceled | requires_payment_method
    amount_minor: int
    currency: str
    client_secret: str | None = None
    amount_received_minor: int = 0
    error: str = ""
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class RefundResult:
    ref: str
    status: str  # succeeded | pending | failed
    amount_minor: int


@dataclass(frozen=True)
class WebhookEvent:
    id: str  # evt_...
    type: str  # payment_intent.succeeded, ...
    created: int  # unix seconds
    object: dict[str, Any]  # data.object as a plain dict


class PaymentDeclined(Exception):
    """The provider refused the payment (card declined); the message is safe to show."""

    def __init__(self, message: str, *, code: str = "card_declined", ref: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.ref = ref


class ProviderUnavailable(Exception):
    """The provider could not be reached or failed; nothing is known to have been charged. Retry with the same key."""


class BadSignature(Exception):
    """A webhook whose signature or timestamp does not verify."""


class PaymentProvider(Protocol):
    name: str

    async def create_intent(self, *, amount_minor: int, currency: str, payment_method: str, idempotency_key: str,
                            metadata: dict[str, str]) -> Intent: ...
    async def retrieve_intent(self, *, ref: str) -> Intent: ...
    async def cancel_intent(self, *, ref: str) -> Intent: ...
    async def refund(self, *, ref: str, amount_minor: int, idempotency_key: str) -> RefundResult: ...
    def parse_webhook(self, *, payload: bytes, signature: str | None) -> WebhookEvent: ...


def _plain(obj: Any) -> Any:
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    return obj


class StripeProvider:
    """Stripe PaymentIntents (confirm on create, 3-D Secure as `requires_action`), refunds, signed webhooks."""

    name = "stripe"

    def __init__(self, settings: Settings) -> None:
        self.client = stripe.StripeClient(
            settings.stripe_api_key,
            base_addresses={"api": settings.stripe_api_base},
            http_client=stripe.HTTPXClient(),
            max_network_retries=2,  # the SDK re-sends with the same idempotency key
        )
        self.api_base = settings.stripe_api_base
        self.webhook_secret = settings.stripe_webhook_secret
        self.tolerance_s = settings.commerce_webhook_tolerance_s

    @staticmethod
    def _intent(pi: Any) -> Intent:
        return intent_from_object(pi.to_dict())

    async def create_intent(self, *, amount_minor: int, currency: str, payment_method: str, idempotency_key: str,
                            metadata: dict[str, str]) -> Intent:
        try:
            pi = await self.client.v1.payment_intents.create_async(
                {"amount": amount_minor, "currency": currency.lower(), "payment_method": payment_method,
                 "confirm": True, "metadata": metadata},
                {"idempotency_key": idempotency_key},
            )
        except stripe.CardError as exc:
            raise PaymentDeclined(exc.user_message or "Your card was declined.", code=exc.code or "card_declined") from None
        except stripe.InvalidRequestError as exc:
            raise PaymentDeclined(exc.user_message or "The payment method was refused.", code="invalid_payment_method") from None
        except stripe.StripeError as exc:  # connection, rate limit, 5xx: the SDK already retried
            raise ProviderUnavailable(f"payment provider unavailable: {exc.__class__.__name__}") from None
        return self._intent(pi)

    async def retrieve_intent(self, *, ref: str) -> Intent:
        return self._intent(await self.client.v1.payment_intents.retrieve_async(ref))

    async def cancel_intent(self, *, ref: str) -> Intent:
        return self._intent(await self.client.v1.payment_intents.cancel_async(ref))

    async def refund(self, *, ref: str, amount_minor: int, idempotency_key: str) -> RefundResult:
        r = await self.client.v1.refunds.create_async({"payment_intent": ref, "amount": amount_minor},
                                                      {"idempotency_key": idempotency_key})
        return RefundResult(ref=r.id, status=r.status or "succeeded", amount_minor=int(r.amount))

    def parse_webhook(self, *, payload: bytes, signature: str | None) -> WebhookEvent:
        """Verify the Stripe-Signature header (HMAC-SHA256 over timestamp.payload, timestamp within tolerance)."""
        if not signature:
            raise BadSignature("missing Stripe-Signature header")
        try:
            event = stripe.Webhook.construct_event(payload, signature, self.webhook_secret, tolerance=self.tolerance_s)
        except (stripe.SignatureVerificationError, ValueError) as exc:
            raise BadSignature(str(exc) or "bad signature") from None
        obj = _plain(event.data.object)
        return WebhookEvent(id=event.id, type=event.type, created=int(event.created), object=obj)


def intent_from_object(obj: dict[str, Any]) -> Intent:
    """An Intent from a webhook's PaymentIntent object (a plain dict)."""
    err_obj = obj.get("last_payment_error") or {}
    err = err_obj.get("message", "") if isinstance(err_obj, dict) else ""
    status = obj.get("status", "")
    if status == "requires_payment_method" and err:
        status = "failed"
    amount = int(obj.get("amount") or 0)
    received = obj.get("amount_received")
    return Intent(ref=obj["id"], status=status, amount_minor=amount, currency=str(obj.get("currency", "")).upper(),
                  client_secret=obj.get("client_secret"),
                  amount_received_minor=int(received if received is not None else (amount if status == "succeeded" else 0)),
                  error=err, metadata=dict(obj.get("metadata") or {}))
