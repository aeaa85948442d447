"""The payment-provider interface, and Stripe behind it through the official SDK.

Checkout talks to a `PaymentProvider`; nothing outside this module imports `stripe`.
`StripeProvider` uses a `StripeClient` whose API base is `settings.stripe_api_base`
(localstripe on loopback in development and tests, https://api.stripe.com in production)
and the SDK's async httpx client, so a payment call does not block the event loop.

Amounts cross this interface in minor units (int), as every provider wants them; the
conversion from Decimal happens in `commerce.money` with its explicit rounding.
"""

from __future__ import annotations

import json
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
            # raw_request_async: the same request, retries and error mapping as payment_intents.create_async
            # (CardError etc. are raised from the response the same way), without turning the answer into
            # StripeObjects that _intent would turn straight back into a dict (~3 % of the API's CPU
            # in a checkout profile).
            resp = await self.client.raw_request_async(
                "post", "/v1/payment_intents", amount=amount_minor, currency=currency.lower(),
                payment_method=payment_method, confirm=True, metadata=metadata, idempotency_key=idempotency_key)
        except stripe.CardError as exc:
            raise PaymentDeclined(exc.user_message or "Your card was declined.", code=exc.code or "card_declined") from None
        except stripe.InvalidRequestError as exc:
            raise PaymentDeclined(exc.user_message or "The payment method was refused.", code="invalid_payment_method") from None
        except stripe.StripeError as exc:  # connection, rate limit, 5xx: the SDK already retried
            raise ProviderUnavailable(f"payment provider unavailable: {exc.__class__.__name__}") from None
        return intent_from_object(resp.data)

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
            # The SDK's check (what Webhook.construct_event does first); the body is then read as plain
            # JSON rather than built into StripeObjects and converted back to a dict.
            stripe.WebhookSignature.verify_header(payload.decode("utf-8") if isinstance(payload, bytes) else payload,
                                                  signature, self.webhook_secret, tolerance=self.tolerance_s)
            event = json.loads(payload)
            obj = event["data"]["object"]
            return WebhookEvent(id=str(event["id"]), type=str(event["type"]), created=int(event["created"]),
                                object=dict(obj))
        except (stripe.SignatureVerificationError, ValueError, KeyError, TypeError) as exc:
            raise BadSignature(str(exc) or "bad signature") from None


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
