"""Users, roles, sessions: sign-up, sign-in with throttling and TOTP, refresh-token rotation, role grants.

Service functions take keyword-only arguments and know nothing of HTTP. Refresh tokens
rotate on every use; presenting a token that was already rotated is treated as theft and
revokes its whole family (the legitimate holder must sign in again), as recommended by
the OAuth 2.0 Security BCP.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import redis.asyncio as aioredis
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from core import audit, auth
from core.errors import AuthError, Conflict, NotFound, Throttled, ValidationFailed
from core.models import Driver, RefreshToken, Staff, User, UserRole
from core.rbac import STAFF_ROLES, Role
from core.settings import Settings


@dataclass(frozen=True)
class TokenPair:
    access_token: str
    refresh_token: str
    expires_in_s: int
    mfa: bool


def roles_of(user: User) -> frozenset[Role]:
    return frozenset(Role(r.role) for r in user.roles)


def needs_mfa(user: User) -> bool:
    """Staff roles require a confirmed TOTP second factor."""
    return bool(roles_of(user) & STAFF_ROLES)


def _normalise_email(email: str) -> str:
    email = email.strip().lower()
    if "@" not in email or email.startswith("@") or email.endswith("@") or len(email) > 320:
        raise ValidationFailed(f"not an e-mail address: {email!r}")
    return email


async def create_user(*, db: AsyncSession, email: str, password: str, full_name: str = "",
                      roles: set[Role] | None = None) -> User:
    """A new active user with a hashed password; refuses a taken e-mail address."""
    email = _normalise_email(email)
    auth.check_password_policy(password)
    if (await db.execute(select(User.id).where(User.email == email))).first():
        raise Conflict(f"e-mail already registered: {email}")
    user = User(email=email, password_hash=await auth.hash_password_async(password), full_name=full_name)
    user.roles = [UserRole(role=r.value) for r in sorted(roles or {Role.CUSTOMER})]
    db.add(user)
    await db.flush()
    if (roles or set()) & STAFF_ROLES:
        db.add(Staff(user_id=user.id))
    return user


async def get_user(*, db: AsyncSession, user_id: uuid.UUID) -> User:
    user = await db.get(User, user_id)
    if user is None:
        raise NotFound(f"no user {user_id}")
    return user


async def _throttle_check(*, redis: aioredis.Redis, settings: Settings, keys: list[str]) -> None:
    for key in keys:
        failures = int(await redis.get(key) or 0)
        if failures >= settings.login_max_failures:
            ttl = await redis.ttl(key)
            raise Throttled("too many failed sign-in attempts; try again later", retry_after_s=max(int(ttl), 1))


async def _throttle_fail(*, redis: aioredis.Redis, settings: Settings, keys: list[str]) -> None:
    async with redis.pipeline(transaction=True) as pipe:
        for key in keys:
            pipe.incr(key)
            pipe.expire(key, settings.login_lockout_s, nx=True)
        await pipe.execute()


async def issue_tokens(*, db: AsyncSession, settings: Settings, user: User, mfa: bool,
                       family_id: uuid.UUID | None = None) -> TokenPair:
    """An access token and a new refresh token (in `family_id`, or a new family)."""
    access = auth.issue_access_token(secret=settings.jwt_secret, user_id=user.id, roles=roles_of(user), mfa=mfa,
                                     ttl_s=settings.jwt_access_ttl_s)
    token, digest = auth.new_refresh_secret()
    db.add(RefreshToken(user_id=user.id, family_id=family_id or uuid.uuid4(), token_hash=digest, mfa=mfa,
                        expires_at=datetime.now(UTC) + timedelta(seconds=settings.jwt_refresh_ttl_s)))
    await db.flush()
    return TokenPair(access, token, settings.jwt_access_ttl_s, mfa)


async def sign_in(*, db: AsyncSession, redis: aioredis.Redis, settings: Settings, email: str, password: str,
                  totp_code: str | None = None, client_ip: str = "") -> TokenPair:
    """Check credentials (and TOTP when enrolled); throttle by account and by client address."""
    email = email.strip().lower()
    keys = [f"{settings.redis_prefix}login:fail:user:{email}"]
    if client_ip:
        keys.append(f"{settings.redis_prefix}login:fail:ip:{client_ip}")
    await _throttle_check(redis=redis, settings=settings, keys=keys)
    user = (await db.execute(select(User).where(User.email == email))).scalar_one_or_none()
    # Verify a hash even for unknown users so timing does not reveal which e-mails exist (the
    # dummy hash has the same parameters, so it costs the same). Off the event loop: see auth.
    ok = await auth.verify_password_async(user.password_hash if user else _DUMMY_HASH, password) and user is not None
    if not ok or not user.is_active:
        await _throttle_fail(redis=redis, settings=settings, keys=keys)
        raise AuthError("wrong e-mail or password")
    mfa = False
    if user.totp_secret:
        if not totp_code:
            raise AuthError("second factor required: send totp_code")
        step = auth.verify_totp(user.totp_secret, totp_code, last_step=user.totp_last_step)
        if step is None:
            await _throttle_fail(redis=redis, settings=settings, keys=keys)
            raise AuthError("wrong or already used TOTP code")
        user.totp_last_step = step
        mfa = True
    await redis.delete(*keys)
    return await issue_tokens(db=db, settings=settings, user=user, mfa=mfa)


_DUMMY_HASH = auth.hash_password("dummy-password-for-timing")


async def refresh(*, db: AsyncSession, settings: Settings, refresh_token: str) -> TokenPair:
    """Rotate a refresh token. Reuse of a rotated token revokes the whole family."""
    digest = auth.refresh_digest(refresh_token)
    row = (await db.execute(select(RefreshToken).where(RefreshToken.token_hash == digest).with_for_update())).scalar_one_or_none()
    now = datetime.now(UTC)
    if row is None:
        raise AuthError("unknown refresh token")
    if row.revoked_at is not None:
        raise AuthError("refresh token revoked")
    if row.rotated_at is not None:
        await db.execute(update(RefreshToken).where(RefreshToken.family_id == row.family_id, RefreshToken.revoked_at.is_(None))
                         .values(revoked_at=now))
        await db.commit()  # the revocation must stick even though we refuse this request
        raise AuthError("refresh token reuse detected; all sessions of this sign-in revoked")
    if row.expires_at <= now:
        raise AuthError("refresh token expired")
    row.rotated_at = now
    user = await get_user(db=db, user_id=row.user_id)
    if not user.is_active:
        raise AuthError("account disabled")
    # The second factor, once given at sign-in, carries over to rotated tokens of that sign-in only.
    return await issue_tokens(db=db, settings=settings, user=user, mfa=row.mfa, family_id=row.family_id)


async def sign_out(*, db: AsyncSession, refresh_token: str) -> None:
    """Revoke the family of `refresh_token` (this sign-in on every device that shares it)."""
    row = (await db.execute(select(RefreshToken).where(RefreshToken.token_hash == auth.refresh_digest(refresh_token)))).scalar_one_or_none()
    if row is None:
        raise AuthError("unknown refresh token")
    await db.execute(update(RefreshToken).where(RefreshToken.family_id == row.family_id, RefreshToken.revoked_at.is_(None))
                     .values(revoked_at=datetime.now(UTC)))


async def totp_begin(*, db: AsyncSession, user: User) -> str:
    """Start TOTP enrolment: store a pending secret and return its otpauth:// URI."""
    if user.totp_secret:
        raise Conflict("TOTP already enrolled")
    user.totp_pending = auth.new_totp_secret()
    await db.flush()
    return auth.totp_uri(user.totp_pending, email=user.email)


async def totp_confirm(*, db: AsyncSession, user: User, code: str) -> None:
    """Finish enrolment with a valid code from the authenticator app."""
    if not user.totp_pending:
        raise Conflict("no TOTP enrolment in progress")
    step = auth.verify_totp(user.totp_pending, code, last_step=None)
    if step is None:
        raise AuthError("wrong TOTP code")
    user.totp_secret, user.totp_pending, user.totp_last_step = user.totp_pending, None, step
    await db.flush()


async def grant_role(*, db: AsyncSession, actor: User, user_id: uuid.UUID, role: Role) -> User:
    """Give `role` to a user; audited with the role set before and after."""
    user = await get_user(db=db, user_id=user_id)
    before = sorted(user.role_names)
    if role.value in user.role_names:
        raise Conflict(f"user already has role {role.value}")
    user.roles.append(UserRole(role=role.value))
    if role in STAFF_ROLES and await db.get(Staff, user.id) is None:
        db.add(Staff(user_id=user.id))
    await db.flush()
    await audit.record(db, actor_id=actor.id, actor_email=actor.email, action="role.granted", object_type="user",
                       object_id=user.id, before={"roles": before}, after={"roles": sorted(user.role_names)})
    return user


async def revoke_role(*, db: AsyncSession, actor: User, user_id: uuid.UUID, role: Role) -> User:
    """Take `role` away from a user; audited."""
    user = await get_user(db=db, user_id=user_id)
    before = sorted(user.role_names)
    if role.value not in user.role_names:
        raise NotFound(f"user has no role {role.value}")
    user.roles = [r for r in user.roles if r.role != role.value]
    await db.flush()
    await audit.record(db, actor_id=actor.id, actor_email=actor.email, action="role.revoked", object_type="user",
                       object_id=user.id, before={"roles": before}, after={"roles": sorted(user.role_names)})
    return user


async def set_active(*, db: AsyncSession, actor: User, user_id: uuid.UUID, active: bool) -> User:
    """Enable or disable an account (disabling also revokes its refresh tokens); audited."""
    user = await get_user(db=db, user_id=user_id)
    before = {"is_active": user.is_active}
    user.is_active = active
    if not active:
        await db.execute(update(RefreshToken).where(RefreshToken.user_id == user.id, RefreshToken.revoked_at.is_(None))
                         .values(revoked_at=datetime.now(UTC)))
    await audit.record(db, actor_id=actor.id, actor_email=actor.email, action="user.activated" if active else "user.deactivated",
                       object_type="user", object_id=user.id, before=before, after={"is_active": active})
    return user


async def create_driver(*, db: AsyncSession, actor: User, email: str, password: str, display_name: str,
                        phone: str = "", mqtt_password_hash: str | None = None) -> Driver:
    """A driver account: user with the driver role plus a drivers row; audited."""
    user = await create_user(db=db, email=email, password=password, full_name=display_name, roles={Role.DRIVER})
    driver = Driver(user_id=user.id, display_name=display_name, phone=phone, mqtt_password_hash=mqtt_password_hash)
    db.add(driver)
    await db.flush()
    await audit.record(db, actor_id=actor.id, actor_email=actor.email, action="driver.created", object_type="driver",
                       object_id=driver.id, after={"user_id": str(user.id), "display_name": display_name, "email": user.email})
    return driver
