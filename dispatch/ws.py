"""WebSocket route of the fleet board: `/ws/fleet` streams the fleet feed (dispatch.feed) to signed-in staff.

Browsers cannot set an Authorization header on a WebSocket, and a token in the URL ends up
in proxy and access logs; so, as docs/web.md says, the client sends its access token in
the FIRST message: `{"type": "auth", "access_token": "..."}`. Until then the server sends
nothing. A missing, invalid or expired token closes the socket with code 4401, a token
without `fleet:read` (or a staff token without the TOTP second factor) with 4403, each with
a one-line reason. The client may send a fresh `auth` message at any time (after rotating
its refresh token); the server closes with 4401 when the token in use expires without one,
so a revoked dispatcher does not keep watching on a 15-minute token forever.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import orjson
from fastapi import APIRouter, Depends, WebSocket, WebSocketDisconnect
from fastapi.security import HTTPAuthorizationCredentials

from core.errors import AuthError
from core.rbac import Permission, allows
from dispatch import feed as feedmod

AUTH_TIMEOUT_S = 10.0
CLOSE_UNAUTHENTICATED = 4401  # 4000-4999: application codes; mirrors HTTP 401
CLOSE_FORBIDDEN = 4403  # mirrors HTTP 403


# serena/app.py adds these routes with `app.router.routes.extend(router.routes)`, not include_router:
# with FastAPI 0.165 a WebSocket route inside an included router shows up in
# `serena.deps.iter_routes` with an empty path and no dependant, which the RBAC test trips on.
# The feed loop needs no shutdown hook: it stops when its last watcher's handler ends.
router = APIRouter(tags=["fleet"])


def ws_require(permission: Permission):
    """Declares the permission a WebSocket route needs (read by the RBAC test like `serena.deps.require`).

    `require()` reads the Authorization header of an HTTP request; a browser WebSocket has
    neither the header nor a Request, so the check itself happens after the first message
    (`authenticate`). This dependency only carries the declaration.
    """

    async def dependency(websocket: WebSocket) -> Permission:
        return permission

    dependency.serena_permission = permission  # type: ignore[attr-defined]
    dependency.__name__ = f"ws_require_{permission.name.lower()}"
    return Depends(dependency)


class Refused(Exception):
    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code, self.reason = code, reason


def authenticate(websocket: WebSocket, text: str, permission: Permission) -> int:
    """Check an `auth` message; returns the token's expiry (unix s) or raises Refused with the close code."""
    from serena.deps import _principal  # the one place that knows the staff-needs-TOTP rule

    try:
        msg = orjson.loads(text)
    except orjson.JSONDecodeError:
        msg = None
    if not isinstance(msg, dict) or msg.get("type") != "auth" or not isinstance(msg.get("access_token"), str):
        raise Refused(CLOSE_UNAUTHENTICATED, 'sign-in required: send {"type": "auth", "access_token": "..."} first')
    settings = websocket.app.state.settings
    try:
        principal = _principal(settings, HTTPAuthorizationCredentials(scheme="Bearer", credentials=msg["access_token"]))
        from core import auth

        expires_at = auth.decode_access_token(msg["access_token"], secret=settings.jwt_secret).expires_at
    except AuthError as exc:
        raise Refused(CLOSE_UNAUTHENTICATED, str(exc)[:120]) from None
    if not allows(principal.roles, permission):
        raise Refused(CLOSE_FORBIDDEN, f"permission {permission.value!r} required"
                      + ("; staff need the TOTP second factor at sign-in" if not principal.mfa else ""))
    return expires_at


@router.websocket("/ws/fleet")
async def fleet_socket(websocket: WebSocket, _=ws_require(Permission.FLEET_READ)):
    """The fleet feed: a snapshot, then at most one positions frame per second and change notices (see dispatch.feed)."""
    await websocket.accept()
    try:
        try:
            first = await asyncio.wait_for(websocket.receive_text(), AUTH_TIMEOUT_S)
            expires_at = authenticate(websocket, first, Permission.FLEET_READ)
        except TimeoutError:
            raise Refused(CLOSE_UNAUTHENTICATED, f"sign-in required: no auth message within {AUTH_TIMEOUT_S:.0f} s") from None
    except Refused as r:
        await websocket.close(code=r.code, reason=r.reason)
        return
    except (WebSocketDisconnect, RuntimeError):
        return

    feed = feedmod.feed_for(websocket.app)
    try:
        # hello first: the client knows it is signed in while the feed (maybe just starting) reads the fleet.
        await websocket.send_text(orjson.dumps({"type": "hello", "interval_s": feed.interval_s}).decode())
        watcher = await feed.watch()
    except TimeoutError:
        await websocket.close(code=1013, reason="fleet feed not ready: try again")  # 1013: try again later
        return
    except (WebSocketDisconnect, RuntimeError):
        return
    receiver = asyncio.ensure_future(websocket.receive_text())
    sender: asyncio.Future | None = None
    try:
        while True:
            if sender is None:
                sender = asyncio.ensure_future(watcher.next(feed))
            timeout = max(expires_at - time.time(), 0.0)
            done, _pending = await asyncio.wait({sender, receiver}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            if not done:  # the token expired and no fresh one came
                await websocket.close(code=CLOSE_UNAUTHENTICATED, reason="access token expired: reconnect with a fresh one")
                return
            if sender in done:
                frame, sender = sender.result(), None
                await websocket.send_text(frame)
            if receiver in done:
                text = receiver.result()  # raises WebSocketDisconnect when the client left
                try:
                    expires_at = authenticate(websocket, text, Permission.FLEET_READ)
                except Refused as r:
                    await websocket.close(code=r.code, reason=r.reason)
                    return
                receiver = asyncio.ensure_future(websocket.receive_text())
    except (WebSocketDisconnect, RuntimeError):
        return
    finally:
        for task in (receiver, sender):
            if task is not None:
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
        await feed.unwatch(watcher)
