"""The customer tracking page in headless Chromium: roads from our graph, the driver moving, ETA window, status timeline."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import pytest

from tests.paths import OSM
from tests.web.conftest import CHROMIUM, CHROMIUM_ARGS, save_screenshot, serve_app

pytestmark = pytest.mark.browser
GRAPH = OSM / "heidelberg.osm.pbf"


class Loop:
    """An event loop in a thread, for the async setup of a sync (Playwright) test."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro, timeout_s: float = 60):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout_s)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


def test_customer_tracking_page_shows_the_driver_moving_with_an_eta_window(settings, tmp_path):
    if not Path(CHROMIUM).exists() or not GRAPH.exists():
        pytest.skip("needs Debian Chromium and the shared OSM data")
    import asyncpg
    import numpy as np
    import redis.asyncio as aioredis
    from playwright.sync_api import sync_playwright

    from routing import graph, paths
    from serena.app import create_app
    from tracking import eta, links
    from tracking.ingest import Inbound, Pipeline, default_stages

    s = settings.model_copy(update={"tracking_graph": str(GRAPH), "tracking_exact_within_stops": 2})
    g = graph.load(GRAPH, progress=False)
    # The delivery: a node near the middle of the graph; the driver starts ~1 km away and drives there.
    mid = int(np.argmin((g.lat - np.median(g.lat)) ** 2 + (g.lng - np.median(g.lng)) ** 2))
    far = int(np.argmin(np.abs(np.hypot((g.lat - g.lat[mid]) * 111e3, (g.lng - g.lng[mid]) * 72e3) - 1000)))
    route = paths.route(g, (g.lat[far], g.lng[far]), (g.lat[mid], g.lng[mid]))
    driver_id = 900_000 + int(time.time()) % 100_000
    order = f"order-page-{driver_id}"
    loop = Loop()

    async def setup():
        pool = await asyncpg.create_pool(s.asyncpg_dsn, min_size=1, max_size=2)
        r = aioredis.from_url(s.redis_url)
        await eta.write_plan(r, prefix=s.redis_prefix, driver_id=driver_id, stops=[
            {"stop_id": f"a-{driver_id}", "order_id": f"other-{driver_id}", "lat": float(route.lat[len(route.lat) // 2]),
             "lng": float(route.lng[len(route.lng) // 2]), "service_s": 180},
            {"stop_id": f"b-{driver_id}", "order_id": order, "lat": float(g.lat[mid]), "lng": float(g.lng[mid])},
        ])
        token = await links.issue(pool, order_id=order, ttl_s=3600)
        pipe = Pipeline(settings=s, pool=pool, redis=r, stages=default_stages(settings=s, pool=pool, redis=r))
        from tracking import eta as eta_mod

        pipe.push = eta_mod.make_push(s, next(x for x in pipe.stages if isinstance(x, eta_mod.EtaStage)))
        return pool, r, token, pipe

    pool, r, token, pipe = loop.run(setup())
    step = max(1, len(route.lat) // 12)
    points = list(zip(route.lat[::step], route.lng[::step], strict=True))
    t0 = time.time() - 15 * len(points)  # 15 s apart: the points are ~100 m apart along the route

    def fix(k: int):
        lat, lng = points[k]
        return Inbound(driver_id, {"seq": k, "ts": t0 + 15 * k, "lat": float(lat), "lng": float(lng), "accuracy_m": 5.0,
                                   "speed_mps": 9.0, "heading_deg": 0.0}, 0, time.time())

    try:
        with serve_app(create_app(s)) as server, sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1280, "height": 860}, locale="en-GB", timezone_id="UTC")
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(f"{server.url}/track/{token}")
            page.wait_for_selector("body[data-track-live]", timeout=15_000)
            page.wait_for_selector("#track-map path.leaflet-interactive, #track-map svg path", timeout=15_000)
            for k in range(len(points) // 2):
                loop.run(pipe.process([fix(k)]))
                time.sleep(0.4)
            page.wait_for_function("() => +(document.body.dataset.trackUpdates || 0) >= 3", timeout=15_000)
            page.wait_for_timeout(1200)  # let the marker finish its glide
            assert "Arriving between" in page.inner_text("[data-eta]")
            assert page.get_attribute("[data-timeline] li.current", "data-step") in ("on_the_way", "arriving")
            roads = page.locator("#track-map svg path").count()
            assert roads > 50  # the offline base: streets from our own graph
            assert "stop(s) before yours" in page.inner_text("[data-position-note]")  # exact: within 2 stops
            save_screenshot(page, "tracking-customer-page")
            assert not errors, errors
            browser.close()
    finally:
        async def teardown():
            await pool.close()
            await r.aclose()

        loop.run(teardown())
        loop.close()
