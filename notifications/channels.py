"""Channels: one interface (`send(message)`) over e-mail (SMTP or .eml files), SMS (files) and webhooks.

A channel either returns (the receiving side accepted the message) or raises `SendFailed`
saying whether trying again could help (`retry=True`: the server was unreachable or
answered "later"; `retry=False`: it refused, or we cannot know whether it took the message
— a retry could then deliver it twice). The send task (`notifications.sender`) turns that
into the row's state; channels know nothing of the database.

Web push is not implemented (no VAPID keys or subscriptions yet): the `Channel` enum and
the rules would take it like SMS.
"""

from __future__ import annotations

import dataclasses
import email.utils
import hashlib
import hmac
import ipaddress
import json
import os
import smtplib
import socket
import ssl
import time
import uuid
from email.message import EmailMessage
from pathlib import Path
from typing import Protocol
from urllib.parse import unquote, urlsplit, urlunsplit

import httpx

from core.settings import Env, Settings


class SendFailed(Exception):
    """The channel did not deliver; `retry` says whether another attempt may succeed (and cannot duplicate)."""

    def __init__(self, reason: str, *, retry: bool, status_code: int | None = None):
        super().__init__(reason)
        self.reason = reason
        self.retry = retry
        self.status_code = status_code


@dataclasses.dataclass(frozen=True)
class Message:
    """What a channel sends: rendered text, and for webhooks the endpoint's URL and secret."""

    channel: str
    recipient: str  # e-mail address, phone number, or webhook URL
    subject: str = ""
    text: str = ""  # e-mail text part, SMS body, or the webhook's JSON body
    html: str | None = None
    idempotency_key: str = ""  # sent as a header (webhook) / Message-ID seed (e-mail)
    secret: str = ""  # webhook signing key
    event_type: str = ""
    unsubscribe_url: str = ""  # e-mail: List-Unsubscribe (one-click, RFC 8058)


@dataclasses.dataclass(frozen=True)
class Receipt:
    """What the receiving side answered (kept in the delivery log)."""

    status_code: int | None = None
    detail: str = ""


class Sender(Protocol):
    def send(self, message: Message) -> Receipt: ...


# --- e-mail ------------------------------------------------------------------------------


def build_email(message: Message, *, sender: str) -> EmailMessage:
    """An RFC 5322 message with a text part and, if given, an HTML alternative."""
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = message.recipient
    msg["Subject"] = message.subject
    msg["Date"] = email.utils.formatdate(localtime=False, usegmt=True)
    domain = email.utils.parseaddr(sender)[1].rpartition("@")[2] or "serena.localhost"
    # A stable Message-ID per notification: a duplicate that still slipped through is
    # recognisable (and collapsed by many mail clients).
    msg["Message-ID"] = f"<{message.idempotency_key or uuid.uuid4()}@{domain}>"
    if message.unsubscribe_url:
        msg["List-Unsubscribe"] = f"<{message.unsubscribe_url}>"
        msg["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    msg.set_content(message.text)
    if message.html:
        msg.add_alternative(message.html, subtype="html")
    return msg


class FileEmail:
    """Development and tests: each e-mail is an .eml file under `<data_dir>/outbox`."""

    def __init__(self, directory: Path, *, sender: str):
        self.directory = directory
        self.sender = sender

    def send(self, message: Message) -> Receipt:
        self.directory.mkdir(parents=True, exist_ok=True)
        name = f"{time.strftime('%Y%m%dT%H%M%S')}-{message.idempotency_key or uuid.uuid4()}.eml"
        tmp = self.directory / (name + ".tmp")
        tmp.write_bytes(bytes(build_email(message, sender=self.sender)))
        os.replace(tmp, self.directory / name)  # readers never see half a file
        return Receipt(detail=name)


class SmtpEmail:
    """SMTP through smtplib: smtp://[user:pass@]host:port, smtp+starttls://..., smtps://..."""

    def __init__(self, url: str, *, sender: str, timeout_s: float = 30.0):
        parts = urlsplit(url)
        if parts.scheme not in ("smtp", "smtp+starttls", "smtps"):
            raise ValueError(f"SERENA_NOTIFICATIONS_SMTP_URL must be smtp://, smtp+starttls:// or smtps://, got {url!r}")
        self.scheme = parts.scheme
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or (465 if parts.scheme == "smtps" else 25)
        self.user = unquote(parts.username) if parts.username else None
        self.password = unquote(parts.password) if parts.password else None
        self.sender = sender
        self.timeout_s = timeout_s

    def send(self, message: Message) -> Receipt:
        msg = build_email(message, sender=self.sender)
        try:
            if self.scheme == "smtps":
                client: smtplib.SMTP = smtplib.SMTP_SSL(self.host, self.port, timeout=self.timeout_s,
                                                        context=ssl.create_default_context())
            else:
                client = smtplib.SMTP(self.host, self.port, timeout=self.timeout_s)
            with client:
                if self.scheme == "smtp+starttls":
                    client.starttls(context=ssl.create_default_context())
                if self.user:
                    client.login(self.user, self.password or "")
                handed_over = True
                try:
                    refused = client.send_message(msg)
                except smtplib.SMTPRecipientsRefused as exc:
                    code, text = next(iter(exc.recipients.values()))
                    raise SendFailed(f"recipient refused: {code} {text!r}", retry=400 <= code < 500, status_code=code) from exc
                except smtplib.SMTPResponseException as exc:
                    # The server answered: 4xx = try later, 5xx = never; either way it did not take the message.
                    raise SendFailed(f"SMTP {exc.smtp_code} {exc.smtp_error!r}", retry=400 <= exc.smtp_code < 500,
                                     status_code=exc.smtp_code) from exc
                except (smtplib.SMTPServerDisconnected, OSError) as exc:
                    # Cut off during the transaction: the server may or may not have queued it.
                    # Not retried: e-mail has no idempotency key on the receiving side.
                    raise SendFailed(f"connection lost during the SMTP transaction, outcome unknown: {exc!r}",
                                     retry=False) from exc
                if refused:
                    raise SendFailed(f"recipient refused: {refused}", retry=False)
                return Receipt(status_code=250, detail="accepted")
        except SendFailed:
            raise
        except (smtplib.SMTPException, OSError) as exc:
            # Before the message was handed over (connect, EHLO, TLS, login): safe to retry.
            raise SendFailed(f"SMTP server unavailable: {exc!r}", retry=True) from exc


# --- SMS ---------------------------------------------------------------------------------


class FileSms:
    """Development and tests: each SMS is a JSON file under `<data_dir>/outbox/sms`. No real provider yet."""

    def __init__(self, directory: Path):
        self.directory = directory

    def send(self, message: Message) -> Receipt:
        self.directory.mkdir(parents=True, exist_ok=True)
        name = f"{time.strftime('%Y%m%dT%H%M%S')}-{message.idempotency_key or uuid.uuid4()}.json"
        tmp = self.directory / (name + ".tmp")
        tmp.write_text(json.dumps({"to": message.recipient, "text": message.text}, ensure_ascii=False))
        os.replace(tmp, self.directory / name)
        return Receipt(detail=name)


# --- webhooks ----------------------------------------------------------------------------

SIGNATURE_HEADER = "Serena-Signature"  # t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>
TIMESTAMP_HEADER = "Serena-Timestamp"
IDEMPOTENCY_HEADER = "Idempotency-Key"  # the same for every attempt of one message: receivers drop repeats


class UnsafeUrl(ValueError):
    """A webhook URL we refuse to call."""


def sign(secret: str, body: bytes, timestamp: int) -> str:
    """The signature header's value for `body` sent at `timestamp` (Unix seconds)."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def verify(secret: str, body: bytes, header: str, *, now: float | None = None, tolerance_s: float = 300) -> bool:
    """Receiver side (our docs' reference, used by the tests): signature valid and timestamp fresh."""
    try:
        fields = dict(part.split("=", 1) for part in header.split(","))
        ts = int(fields["t"])
    except (ValueError, KeyError):
        return False
    if abs((time.time() if now is None else now) - ts) > tolerance_s:
        return False
    return hmac.compare_digest(sign(secret, body, ts), header)


def private_allowed(settings: Settings) -> bool:
    """Private and loopback webhook targets: fine on a laptop and in tests, refused in production unless allowed."""
    return settings.env is not Env.PRODUCTION or settings.notifications_webhook_allow_private


def check_url(url: str, *, allow_private: bool) -> None:
    """Refuse anything but http(s) URLs with a host, and (unless allowed) hosts that are IP literals in private ranges."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise UnsafeUrl(f"webhook URL must start with http:// or https://, got {url[:100]!r}")
    if not parts.hostname:
        raise UnsafeUrl(f"webhook URL has no host: {url[:100]!r}")
    if parts.username or parts.password:
        raise UnsafeUrl("webhook URL must not carry credentials; the signature authenticates us")
    try:
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError as exc:
        raise UnsafeUrl(f"webhook URL has a bad port: {url[:100]!r}") from exc
    if not allow_private:
        host = parts.hostname
        if host == "localhost" or host.endswith((".localhost", ".local", ".internal")):
            raise UnsafeUrl(f"webhook host {host!r} is internal; only public addresses are allowed")
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            return  # a name: checked again after resolution, at every send
        if not ip.is_global:
            raise UnsafeUrl(f"webhook address {ip} is private, loopback or reserved; only public addresses are allowed")


def resolve_public(host: str, port: int, *, allow_private: bool) -> str:
    """One address of `host` to connect to; every address must be public unless private ones are allowed."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise SendFailed(f"cannot resolve {host!r}: {exc}", retry=True) from exc
    addrs = [ipaddress.ip_address(info[4][0]) for info in infos]
    if not allow_private:
        bad = [a for a in addrs if not a.is_global]
        if bad:
            raise SendFailed(f"webhook host {host!r} resolves to non-public address {bad[0]}; refused (SSRF)", retry=False)
    return str(addrs[0])


class Webhook:
    """HTTP POST with a signature, a timestamp and an idempotency key; no redirects followed."""

    def __init__(self, *, timeout_s: float, allow_private: bool, client: httpx.Client | None = None):
        self.timeout_s = timeout_s
        self.allow_private = allow_private
        self.client = client

    def send(self, message: Message) -> Receipt:
        try:
            check_url(message.recipient, allow_private=self.allow_private)
        except UnsafeUrl as exc:
            raise SendFailed(str(exc), retry=False) from exc
        parts = urlsplit(message.recipient)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        # Connect to the address we checked, not to whatever a second DNS answer says (DNS
        # rebinding): the URL carries the IP, Host and TLS SNI carry the name.
        ip = resolve_public(parts.hostname or "", port, allow_private=self.allow_private)
        netloc_ip = f"[{ip}]" if ":" in ip else ip
        target = urlunsplit((parts.scheme, f"{netloc_ip}:{port}", parts.path or "/", parts.query, ""))
        body = message.text.encode()
        ts = int(time.time())
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "Serena-Webhooks/1",
            "Host": parts.netloc,
            SIGNATURE_HEADER: sign(message.secret, body, ts),
            TIMESTAMP_HEADER: str(ts),
            IDEMPOTENCY_HEADER: message.idempotency_key,
            "Serena-Event-Type": message.event_type,
        }
        client = self.client or httpx.Client(timeout=self.timeout_s, follow_redirects=False)
        try:
            resp = client.post(target, content=body, headers=headers, extensions={"sni_hostname": parts.hostname})
        except httpx.HTTPError as exc:
            # Timeouts included: the receiver may have processed it, but the idempotency key
            # makes a retry safe on this channel.
            raise SendFailed(f"{type(exc).__name__}: {exc}", retry=True) from exc
        finally:
            if self.client is None:
                client.close()
        if 200 <= resp.status_code < 300:
            return Receipt(status_code=resp.status_code, detail=resp.text[:200])
        retry = resp.status_code >= 500 or resp.status_code in (408, 429)
        raise SendFailed(f"HTTP {resp.status_code}: {resp.text[:200]!r}", retry=retry, status_code=resp.status_code)


def email_sender(settings: Settings) -> Sender:
    """The configured e-mail transport."""
    if settings.notifications_email_transport == "smtp":
        return SmtpEmail(settings.notifications_smtp_url, sender=settings.notifications_email_from)
    if settings.notifications_email_transport == "file":
        return FileEmail(Path(settings.data_dir) / "outbox", sender=settings.notifications_email_from)
    raise ValueError(f"SERENA_NOTIFICATIONS_EMAIL_TRANSPORT must be smtp or file, got {settings.notifications_email_transport!r}")


def sms_sender(settings: Settings) -> Sender:
    """The configured SMS transport (files only, for now)."""
    if settings.notifications_sms_transport == "file":
        return FileSms(Path(settings.data_dir) / "outbox" / "sms")
    raise ValueError(f"SERENA_NOTIFICATIONS_SMS_TRANSPORT must be file, got {settings.notifications_sms_transport!r}")


def webhook_sender(settings: Settings) -> Sender:
    return Webhook(timeout_s=settings.notifications_webhook_timeout_s, allow_private=private_allowed(settings))
