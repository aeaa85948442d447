"""A handler's transaction is committed before its response is sent: a 2xx means the row is stored.

With FastAPI's default request scope a dependency's exit (our COMMIT) runs after the response
has gone out, so a client could be told 201 for a row that a failing commit never stored, or
that its next request could not see yet. `serena.deps.Db` uses `scope="function"`.
"""

from __future__ import annotations

import uuid

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select

from core.models import ProcessedEvent
from serena.deps import Db


def _app(sessions) -> FastAPI:
    app = FastAPI()
    app.state.sessions = sessions

    @app.post("/rows/{consumer}/{event_id}", status_code=201)
    async def add(consumer: str, event_id: uuid.UUID, db: Db) -> dict:
        db.add(ProcessedEvent(consumer=consumer, event_id=event_id))  # no flush: the INSERT happens at COMMIT
        return {"ok": True}

    return app


@pytest.mark.asyncio(loop_scope="session")
async def test_a_commit_that_fails_is_not_answered_with_success(sessions):
    consumer, event_id = f"commit-test-{uuid.uuid4().hex[:8]}", uuid.uuid4()
    transport = httpx.ASGITransport(app=_app(sessions), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        first = await client.post(f"/rows/{consumer}/{event_id}")
        assert first.status_code == 201
        # the row is visible to another session as soon as the response has arrived
        async with sessions() as other:
            n = await other.scalar(select(func.count()).select_from(ProcessedEvent).where(ProcessedEvent.consumer == consumer))
        assert n == 1
        # the same primary key again: the COMMIT fails, and the client must not hear 201
        second = await client.post(f"/rows/{consumer}/{event_id}")
        assert second.status_code == 500
    async with sessions() as db:
        await db.execute(ProcessedEvent.__table__.delete().where(ProcessedEvent.consumer == consumer))
        await db.commit()
