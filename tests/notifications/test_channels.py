"""Channels and the send state machine on their own: SMTP against a real server on loopback, SSRF refusals, crash recovery."""

from __future__ import annotations

import socket
import uuid

import pytest
from aiosmtpd.controller import Controller

from core.errors import ValidationFailed
from core.settings import Settings
from notifications import channels, sender, service, templates
from notifications.channels import Message, SendFailed


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Mailbox:
    def __init__(self):
        self.messages: list = []
        self.rcpt_answer = "250 OK"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # noqa: N802
        if not self.rcpt_answer.startswith("250"):
            return self.rcpt_answer
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):  # noqa: N802
        self.messages.append(envelope)
        return "250 Message accepted"


@pytest.fixture
def smtp_server():
    box = Mailbox()
    controller = Controller(box, hostname="127.0.0.1", port=_free_port())
    controller.start()
    yield box, f"smtp://127.0.0.1:{controller.port}"
    controller.stop()


def test_smtp_channel_hands_the_message_to_a_real_server(smtp_server):
    box, url = smtp_server
    smtp = channels.SmtpEmail(url, sender="Serena <no-reply@serena.test>")
    receipt = smtp.send(Message(channel="email", recipient="eve@example.test", subject="Order 1 confirmed", text="hello",
                                html="<p>hello</p>", idempotency_key="abc"))
    assert receipt.status_code == 250
    [env] = box.messages
    assert env.rcpt_tos == ["eve@example.test"]
    assert b"Subject: Order 1 confirmed" in env.content and b"Message-ID: <abc@serena.test>" in env.content


def test_smtp_temporary_refusal_is_retried_and_a_permanent_one_is_not(smtp_server):
    box, url = smtp_server
    smtp = channels.SmtpEmail(url, sender="no-reply@serena.test")
    msg = Message(channel="email", recipient="eve@example.test", subject="s", text="t")
    box.rcpt_answer = "451 4.3.0 try again later"
    with pytest.raises(SendFailed) as temp:
        smtp.send(msg)
    box.rcpt_answer = "550 5.1.1 no such user"
    with pytest.raises(SendFailed) as perm:
        smtp.send(msg)
    assert (temp.value.retry, perm.value.retry) == (True, False)
    assert box.messages == []


def test_smtp_server_down_is_retryable():
    smtp = channels.SmtpEmail(f"smtp://127.0.0.1:{_free_port()}", sender="no-reply@serena.test", timeout_s=2)
    with pytest.raises(SendFailed) as exc:
        smtp.send(Message(channel="email", recipient="eve@example.test", subject="s", text="t"))
    assert exc.value.retry


@pytest.mark.parametrize("url", ["http://127.0.0.1/h", "http://10.1.2.3/h", "http://169.254.169.254/latest/meta-data",
                                 "http://[::1]:8080/h", "http://localhost/h", "https://db.internal/h", "http://192.168.0.10/"])
def test_private_and_loopback_webhook_targets_are_refused_unless_allowed(url):
    with pytest.raises(channels.UnsafeUrl, match="internal|private"):
        channels.check_url(url, allow_private=False)
    channels.check_url(url, allow_private=True)


def test_production_refuses_a_loopback_webhook_unless_the_setting_allows_it(settings):
    secrets = dict(env="production", jwt_secret="x" * 40, stripe_webhook_secret="whsec_real", stripe_api_key="sk_real",
                   mqtt_service_password="real-password")
    prod = Settings(**{**settings.model_dump(), **secrets})
    with pytest.raises(ValidationFailed, match="private, loopback or reserved"):
        service._check(prod, url="http://127.0.0.1:9000/hook", event_types=["order.paid"])
    allowed = Settings(**{**settings.model_dump(), **secrets, "notifications_webhook_allow_private": True})
    service._check(allowed, url="http://127.0.0.1:9000/hook", event_types=["order.paid"])
    service._check(prod, url="https://hooks.example.com/serena", event_types=["delivery.*"])


def test_a_name_resolving_to_loopback_is_refused_at_send_time():
    with pytest.raises(SendFailed, match="non-public address") as exc:
        channels.resolve_public("localhost", 80, allow_private=False)
    assert not exc.value.retry


def test_webhook_redirects_are_not_followed():
    import http.server

    class Redirect(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            self.send_response(302)
            self.send_header("Location", "http://169.254.169.254/")
            self.end_headers()

        def log_message(self, *a):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Redirect)
    import threading

    threading.Thread(target=server.handle_request, daemon=True).start()
    hook = channels.Webhook(timeout_s=5, allow_private=True)
    with pytest.raises(SendFailed, match="HTTP 302") as exc:
        hook.send(Message(channel="webhook", recipient=f"http://127.0.0.1:{server.server_address[1]}/h", text="{}",
                          secret="s", idempotency_key="k"))
    assert not exc.value.retry
    server.server_close()


def test_templates_fall_back_to_english_and_escape_only_html():
    ctx = dict(name="<script>x</script>", order_number="9", tracking_url=None, window_start=None, window_end=None,
               eta_earliest=None, eta_latest=None, reason="")
    r = templates.render("delivered", "email", "sv-SE", ctx)
    assert r.locale == "en" and "<script>x</script>" in r.text and "&lt;script&gt;" in r.html
    assert templates.locale_chain("fi_FI") == ["fi-FI", "fi", "en"]


# --- the state machine --------------------------------------------------------------------


async def _queued(pool, channel: str = "email", endpoint_id: int | None = None) -> int:
    return await pool.fetchval(
        "INSERT INTO notifications (event_id, event_type, channel, recipient, kind, category, locale, subject, body_text, "
        "state, endpoint_id) VALUES ($1, 'order.paid', $2, $3, 'order_confirmed', 'transactional', 'en', 's', 't', 'queued', $4) "
        "RETURNING id", uuid.uuid4(), channel, f"{uuid.uuid4().hex[:8]}@example.test", endpoint_id)


class Crashing:
    """Sends, then dies before the outcome is recorded (a kill -9 right after the SMTP server said 250)."""

    def __init__(self):
        self.sent = 0

    def send(self, message):
        self.sent += 1
        raise SystemExit("killed after sending")


async def test_a_worker_dying_after_sending_never_sends_the_email_again(pool, settings):
    nid = await _queued(pool)
    crashing = Crashing()
    async with pool.acquire() as conn:
        with pytest.raises(SystemExit):
            await sender.deliver(conn, settings=settings, notification_id=nid, sender=crashing)
        assert await conn.fetchval("SELECT state FROM notifications WHERE id = $1", nid) == "sending"
        # The task is redelivered (acks_late) or re-enqueued: the claim finds nothing to do.
        assert (await sender.deliver(conn, settings=settings, notification_id=nid, sender=crashing)).state == "skipped"
        # The sweep settles it as failed with the reason, and does not hand it back for sending.
        stale = settings.model_copy(update={"notifications_stale_sending_s": 0})
        await conn.execute("UPDATE notifications SET sending_at = now() - interval '1 second' WHERE id = $1", nid)
        assert nid not in await sender.recover(conn, settings=stale)
        row = await conn.fetchrow("SELECT state, last_error FROM notifications WHERE id = $1", nid)
    assert crashing.sent == 1
    assert row["state"] == "failed" and "outcome unknown" in row["last_error"]


async def test_a_webhook_left_sending_is_queued_again_with_the_same_idempotency_key(pool, settings):
    ep = await pool.fetchval("INSERT INTO webhook_endpoints (subscriber, url, secret, event_types) "
                             "VALUES ('t', 'http://127.0.0.1:9/h', 'whsec_t', '{test.nothing}') RETURNING id")
    nid = await _queued(pool, "webhook", ep)
    async with pool.acquire() as conn:
        with pytest.raises(SystemExit):
            await sender.deliver(conn, settings=settings, notification_id=nid, sender=Crashing())
        await conn.execute("UPDATE notifications SET sending_at = now() - interval '1 hour' WHERE id = $1", nid)
        assert nid in await sender.recover(conn, settings=settings)
        row = await conn.fetchrow("SELECT state, attempts, last_error FROM notifications WHERE id = $1", nid)
    assert (row["state"], row["attempts"]) == ("queued", 1)
    assert "Idempotency-Key" in row["last_error"]
