"""Authentication primitives: password hashing, JWT access tokens, refresh-token secrets, TOTP.

Pure functions over settings; persistence of users and refresh tokens lives in
`core.identity`. Argon2id is the password hash (memory-hard, the OWASP first choice);
bcrypt was the alternative but truncates at 72 bytes. Access tokens are short-lived JWTs
(HS256) carrying roles and whether the second factor was satisfied; refresh tokens are
opaque random strings stored only as SHA-256 hashes, so a database leak yields no usable
token.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import secrets
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import jwt
import pyotp
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from core.errors import AuthError
from core.rbac import Role

_hasher = PasswordHasher()  # argon2id, library defaults (t=3, m=64 MiB, p=4)
_ALGORITHM = "HS256"
MIN_PASSWORD_LENGTH = 10


def hash_password(password: str) -> str:
    """Argon2id hash of `password` (salted, self-describing)."""
    return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    """Whether `password` matches; never raises on a malformed hash."""
    try:
        return _hasher.verify(password_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


# Argon2 costs ~0.15 s of CPU per hash or verification here (64 MiB, 3 passes). Run inline in
# an async handler it stalls the whole event loop for that long: every other request and
# socket of the API process waits (measured: ~1 driver sign-in per second with 1,000 drivers
# signing in). argon2-cffi releases the GIL, so threads run hashes in parallel with the loop.
# A pool of its own, sized to the cores, rather than the loop's default executor: a burst of
# sign-ins then queues here (64 MiB each, at most one per core) instead of occupying every
# default-executor thread (DNS lookups and other to_thread work share those).
_HASH_POOL = ThreadPoolExecutor(max_workers=max(1, os.cpu_count() or 1), thread_name_prefix="argon2")


async def hash_password_async(password: str) -> str:
    """hash_password on the argon2 thread pool, so the event loop keeps serving while it runs."""
    return await asyncio.get_running_loop().run_in_executor(_HASH_POOL, hash_password, password)


async def verify_password_async(password_hash: str, password: str) -> bool:
    """verify_password on the argon2 thread pool (same result, same cost; the caller's loop is not blocked)."""
    return await asyncio.get_running_loop().run_in_executor(_HASH_POOL, verify_password, password_hash, password)


def check_password_policy(password: str) -> None:
    """Refuse passwords too short to resist guessing (length beats composition rules, per NIST 800-63B)."""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise AuthError(f"password must be at least {MIN_PASSWORD_LENGTH} characters")


@dataclass(frozen=True)
class AccessClaims:
    """What an access token says about its bearer."""

    user_id: uuid.UUID
    roles: frozenset[Role]
    mfa: bool  # second factor satisfied in this session
    expires_at: int  # unix seconds


def issue_access_token(*, secret: str, user_id: uuid.UUID, roles: set[Role] | frozenset[Role], mfa: bool, ttl_s: int) -> str:
    """A signed JWT for `user_id` that expires after `ttl_s` seconds."""
    now = int(time.time())
    payload = {
        "sub": str(user_id),
        "roles": sorted(r.value for r in roles),
        "mfa": mfa,
        "iat": now,
        "exp": now + ttl_s,
        "jti": uuid.uuid4().hex,
        "typ": "access",
    }
    return jwt.encode(payload, secret, algorithm=_ALGORITHM)


def decode_access_token(token: str, *, secret: str) -> AccessClaims:
    """Verify signature and expiry; raise AuthError with the reason otherwise."""
    try:
        payload = jwt.decode(token, secret, algorithms=[_ALGORITHM], options={"require": ["exp", "sub", "iat"]})
    except jwt.ExpiredSignatureError:
        raise AuthError("access token expired") from None
    except jwt.InvalidTokenError as exc:
        raise AuthError(f"invalid access token: {exc}") from None
    if payload.get("typ") != "access":
        raise AuthError("invalid access token: not an access token")
    try:
        roles = frozenset(Role(r) for r in payload.get("roles", []))
        return AccessClaims(uuid.UUID(payload["sub"]), roles, bool(payload.get("mfa")), int(payload["exp"]))
    except ValueError as exc:
        raise AuthError(f"invalid access token: {exc}") from None


def new_refresh_secret() -> tuple[str, bytes]:
    """A fresh opaque refresh token and the SHA-256 digest we store instead of it."""
    token = secrets.token_urlsafe(32)
    return token, refresh_digest(token)


def refresh_digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def new_totp_secret() -> str:
    """A base32 TOTP secret (160 bits, RFC 4226's recommendation)."""
    return pyotp.random_base32(32)


def totp_uri(secret: str, *, email: str, issuer: str = "Serena") -> str:
    """otpauth:// URI for authenticator apps (shown as a QR code by the client)."""
    return pyotp.TOTP(secret).provisioning_uri(name=email, issuer_name=issuer)


def verify_totp(secret: str, code: str, *, last_step: int | None, now: float | None = None) -> int | None:
    """The accepted time step if `code` is valid (±1 step of drift) and newer than `last_step`, else None.

    Returning the step lets the caller store it, so a code seen once cannot be replayed
    within its 30-second window.
    """
    if not code.isdigit() or len(code) != 6:
        return None
    totp = pyotp.TOTP(secret)
    now = time.time() if now is None else now
    current = int(now // totp.interval)
    for step in (current, current - 1, current + 1):
        if secrets.compare_digest(totp.generate_otp(step), code):
            if last_step is not None and step <= last_step:
                return None
            return step
    return None
