"""Sign-up, sign-in, token refresh and sign-out, and the caller's own account (TOTP enrolment)."""

from __future__ import annotations

from fastapi import APIRouter, Request

from core import identity
from core.rbac import Permission
from core.schemas import LoginIn, RefreshIn, RegisterIn, TokenOut, TotpConfirmIn, TotpSetupOut, UserOut
from serena.deps import Db, Redis, SettingsDep, load_user, require

router = APIRouter(prefix="/v1", tags=["auth"])


def user_out(user) -> UserOut:
    return UserOut(id=user.id, email=user.email, full_name=user.full_name, is_active=user.is_active,
                   roles=sorted(user.role_names), totp_enrolled=user.totp_secret is not None, created_at=user.created_at)


def _tokens(pair: identity.TokenPair) -> TokenOut:
    return TokenOut(access_token=pair.access_token, refresh_token=pair.refresh_token, expires_in_s=pair.expires_in_s, mfa=pair.mfa)


@router.post("/auth/register", status_code=201, response_model=UserOut)
async def register(body: RegisterIn, db: Db, _=require(Permission.PUBLIC)):
    """Create a customer account."""
    user = await identity.create_user(db=db, email=body.email, password=body.password, full_name=body.full_name)
    await db.refresh(user)
    return user_out(user)


@router.post("/auth/login", response_model=TokenOut)
async def login(body: LoginIn, request: Request, db: Db, redis: Redis, settings: SettingsDep, _=require(Permission.PUBLIC)):
    """Exchange e-mail, password (and TOTP code when enrolled) for an access and a refresh token."""
    client_ip = request.client.host if request.client else ""
    pair = await identity.sign_in(db=db, redis=redis, settings=settings, email=body.email, password=body.password,
                                  totp_code=body.totp_code, client_ip=client_ip)
    return _tokens(pair)


@router.post("/auth/refresh", response_model=TokenOut)
async def refresh(body: RefreshIn, db: Db, settings: SettingsDep, _=require(Permission.PUBLIC)):
    """Rotate a refresh token; the old one stops working (reuse revokes the sign-in)."""
    return _tokens(await identity.refresh(db=db, settings=settings, refresh_token=body.refresh_token))


@router.post("/auth/logout", status_code=204)
async def logout(body: RefreshIn, db: Db, _=require(Permission.PUBLIC)):
    """Revoke this sign-in's refresh tokens."""
    await identity.sign_out(db=db, refresh_token=body.refresh_token)


@router.get("/me", response_model=UserOut)
async def me(db: Db, principal=require(Permission.AUTHENTICATED)):
    """The signed-in user."""
    return user_out(await load_user(db, principal))


@router.post("/me/totp/setup", response_model=TotpSetupOut)
async def totp_setup(db: Db, principal=require(Permission.AUTHENTICATED)):
    """Start TOTP enrolment; returns the otpauth:// URI for an authenticator app."""
    user = await load_user(db, principal)
    return TotpSetupOut(otpauth_uri=await identity.totp_begin(db=db, user=user))


@router.post("/me/totp/confirm", response_model=UserOut)
async def totp_confirm(body: TotpConfirmIn, db: Db, principal=require(Permission.AUTHENTICATED)):
    """Finish TOTP enrolment with a current code. Sign in again to get staff permissions."""
    user = await load_user(db, principal)
    await identity.totp_confirm(db=db, user=user, code=body.code)
    return user_out(user)
