"""Password hashing runs off the event loop: an argon2 verification must not stall other requests."""

from __future__ import annotations

import asyncio

from core import auth


async def _order_of(work) -> list[str]:
    order: list[str] = []

    async def slow() -> None:
        await work()
        order.append("argon2")

    async def other() -> None:
        order.append("other request")

    # `slow` is scheduled first: if its argon2 call held the loop, it would finish first.
    await asyncio.gather(slow(), other())
    return order


async def test_verification_lets_other_coroutines_run_while_it_works():
    hashed = auth.hash_password("correct horse battery")

    async def verify() -> None:
        assert await auth.verify_password_async(hashed, "correct horse battery")
        assert not await auth.verify_password_async(hashed, "wrong horse battery")

    assert await _order_of(verify) == ["other request", "argon2"]


async def test_hashing_lets_other_coroutines_run_and_yields_a_verifiable_hash():
    out: list[str] = []

    async def make() -> None:
        out.append(await auth.hash_password_async("correct horse battery"))

    assert await _order_of(make) == ["other request", "argon2"]
    assert auth.verify_password(out[0], "correct horse battery")


async def test_a_malformed_hash_is_a_mismatch_off_the_loop_too():
    assert await auth.verify_password_async("not-a-hash", "whatever password") is False
