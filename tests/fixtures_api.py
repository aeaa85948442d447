"""API fixtures shared by every test package: an in-process app on the worker database, signed-in accounts of each role."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pyotp
import pytest_asyncio

from core import auth, identity
from core.models import Driver
from core.rbac import STAFF_ROLES, Role
from serena.app import create_app


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def app(settings):
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        yield application


@pytest_asyncio.fixture(loop_scope="session")
async def client(app) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app, client=(f"10.9.{uuid.uuid4().int % 250}.{uuid.uuid4().int % 250}", 1234))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
        yield c


@dataclass
class Account:
    user_id: uuid.UUID
    email: str
    password: str
    role: Role | None
    token: str
    totp_secret: str | None = None

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def make_account(app, settings):
    """Create a user with one role (staff enrolled in TOTP) and a valid access token for it."""

    async def make(role: Role | None = Role.CUSTOMER, *, mfa: bool = True) -> Account:
        email = f"{(role.value if role else 'none')}-{uuid.uuid4().hex[:10]}@example.test"
        password = "correct horse battery"
        secret = None
        async with app.state.sessions() as db, db.begin():
            user = await identity.create_user(db=db, email=email, password=password, roles={role} if role else set())
            if role is Role.DRIVER:  # a driver account always comes with its drivers row
                db.add(Driver(user_id=user.id, display_name=email.split("@")[0]))
            if role in STAFF_ROLES:
                secret = pyotp.random_base32()
                user.totp_secret = secret
            uid = user.id
        token = auth.issue_access_token(secret=settings.jwt_secret, user_id=uid, roles={role} if role else set(),
                                        mfa=mfa and secret is not None, ttl_s=300)
        return Account(uid, email, password, role, token, secret)

    return make
