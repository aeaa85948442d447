"""/metrics counts each request under its route template and status (plain ASGI middleware)."""

from __future__ import annotations

import httpx

from serena.app import REQUESTS, create_app


async def test_requests_are_counted_by_route_template_and_status(settings):
    app = create_app(settings)
    counter = REQUESTS.labels("GET", "/v1/catalog/products/{slug}", "404")
    before = counter._value.get()
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
            for _ in range(3):
                assert (await c.get("/v1/catalog/products/no-such-product-anywhere")).status_code == 404
            unmatched = REQUESTS.labels("GET", "unmatched", "404")._value.get()
            assert (await c.get("/no/such/route")).status_code == 404
    assert counter._value.get() - before == 3
    assert REQUESTS.labels("GET", "unmatched", "404")._value.get() - unmatched == 1
