"""The driver app in headless Chromium with a simulated GPS: sign in → shift → tasks → load → deliver with proof; offline buffer; PWA shell.

The phone's position comes from Playwright's geolocation emulation
(`context.grant_permissions(["geolocation"])` + `context.set_geolocation`), which feeds the
app's `watchPosition`. Plans are made by `dispatch.planner.replan` on a straight-line model,
with the job pinned to this test's driver (other tests' drivers are on duty in the same
database); positions are checked where tracking stores them (tracking_positions).
"""

from __future__ import annotations

import re
import time

import httpx
import pytest
from sqlalchemy import text

from tests.web.test_fleet import DEPOT, PASSWORD, make_depot, make_dispatcher, make_driver, make_job, replan, run

DROPOFF = (60.1745, 24.9500)
PHONE = {"width": 412, "height": 860}


@pytest.fixture
def phone(browser, live_server):
    """A phone-sized context with geolocation granted and the GPS at the depot; collects script errors."""
    context = browser.new_context(viewport=PHONE, locale="en-GB", timezone_id="UTC", has_touch=False,
                                  geolocation={"latitude": DEPOT[0], "longitude": DEPOT[1], "accuracy": 8})
    context.grant_permissions(["geolocation"], origin=live_server.url)
    context.set_default_timeout(15_000)
    page = context.new_page()
    errors: list[str] = []
    # Any script error fails the test (the app signs in on /ws/driver with its first message).
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" and not m.text.startswith("Failed to load resource")
            else None)
    page.on("pageerror", lambda exc: errors.append(f"uncaught: {exc}"))
    page.console_errors = errors  # type: ignore[attr-defined]
    yield context, page
    context.close()


@pytest.fixture
def shop(live_server, settings):
    staff = make_dispatcher(settings)
    return staff, make_depot(live_server.url, staff)


def sign_in_and_start_shift(page, base: str, email: str) -> None:
    page.goto(base + "/driver")
    page.get_by_label("E-mail").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("button", name="Start shift").click()
    page.wait_for_selector("[data-driver-app][data-view=tasks]")


def positions(settings, driver_id: int) -> list[tuple[int, int]]:
    """(seq, source) of the driver's stored fixes, by seq."""
    async def go(sessions, _redis):
        async with sessions() as db:
            rows = await db.execute(text("SELECT seq, source FROM tracking_positions WHERE driver_id = :d ORDER BY seq"),
                                    {"d": driver_id})
            return [(r[0], r[1]) for r in rows]

    return run(settings, go)


def move(context, page, lat: float, lng: float) -> None:
    context.set_geolocation({"latitude": lat, "longitude": lng, "accuracy": 8})
    page.wait_for_function("p => { const f = window.driverApp.fix(); return f && Math.abs(f.lat - p[0]) < 1e-7 && Math.abs(f.lng - p[1]) < 1e-7; }",
                           arg=[lat, lng])


def drive(context, page, points: list[tuple[float, float]]) -> list[int]:
    """Move the phone through `points` (a few hundred ms apart); the seqs of the fixes the app made meanwhile."""
    before = page.evaluate("window.driverApp.fixes.length")
    for lat, lng in points:
        time.sleep(0.3)
        move(context, page, lat, lng)
    page.wait_for_function("n => window.driverApp.fixes.length >= n", arg=before + len(points))
    return page.evaluate("n => window.driverApp.fixes.slice(n)", before)


def all_sent(page) -> None:
    page.wait_for_function("() => document.querySelector('[data-driver-app]').dataset.buffered === '0'", timeout=20_000)


@pytest.mark.browser
def test_driver_signs_in_starts_shift_loads_scans_by_typed_code_and_delivers_with_a_signature(
        live_server, phone, shop, settings, screenshot):
    context, page = phone
    staff, depot = shop
    base = live_server.url
    driver = make_driver(base, staff, on_duty=False, name="Pia Driver")

    page.goto(base + "/driver")
    page.wait_for_selector("[data-driver-app][data-view=signin]")
    screenshot(page, "driver-signin")
    sign_in_and_start_shift(page, base, driver.email)

    # Dispatch plans a delivery for this driver; the app picks the new task list up and acknowledges its version.
    job = make_job(base, staff, depot, *DROPOFF, driver=driver)
    result = replan(settings)
    version = result.published[driver.id]["version"]
    page.wait_for_selector(f"[data-driver-app][data-task-version='{version}']", timeout=20_000)
    def acked() -> list[int]:
        async def go(sessions, _redis):
            async with sessions() as db:
                rows = await db.execute(text("SELECT version FROM task_list_acks WHERE driver_id = :d"), {"d": driver.id})
                return [r[0] for r in rows]

        return run(settings, go)

    deadline = time.monotonic() + 10
    while version not in acked() and time.monotonic() < deadline:
        time.sleep(0.3)
    assert version in acked()  # the app acknowledged the version it shows

    # The wave starts at the depot; our drop-off follows. (The planner may also give this driver
    # unpinned jobs that earlier tests left in the shared database, so only ours are asserted.)
    stops = page.locator("[data-stops] > li")
    assert stops.nth(0).get_attribute("data-kind") == "depot"
    assert page.locator(f"[data-stops] > li[data-kind=delivery][data-job-id='{job['id']}']").count() == 1
    screenshot(page, "driver-tasks")

    # At the depot: load the parcel by typing its code.
    stops.nth(0).get_by_role("button").click()
    assert job["package_code"] in page.locator("[data-load-list] li").all_inner_texts()
    page.get_by_label("Or type the code").fill(job["package_code"].lower())
    page.get_by_role("button", name="Confirm scan").click()
    page.wait_for_selector(f"[data-load-list] li.is-loaded[data-code='{job['package_code']}']")
    page.get_by_role("button", name="← All stops").click()

    # At the door: the navigation link is just coordinates; the delivery scan, then the signature.
    move(context, page, DROPOFF[0] + 0.00002, DROPOFF[1] + 0.00002)
    page.locator(f"[data-stops] > li[data-kind=delivery][data-job-id='{job['id']}']").get_by_role("button").click()
    nav = page.locator("[data-stop-nav]").get_attribute("href")
    assert nav.startswith(f"geo:{DROPOFF[0]},{DROPOFF[1]}")
    page.get_by_label("Or type the code").fill(job["package_code"])
    page.get_by_role("button", name="Confirm scan").click()
    page.wait_for_selector("[data-step-proof]:not([hidden])")
    box = page.locator("[data-signature]").bounding_box()
    page.mouse.move(box["x"] + 30, box["y"] + 60)
    page.mouse.down()
    for i in range(1, 12):
        page.mouse.move(box["x"] + 30 + i * 25, box["y"] + 60 + (i % 3) * 18)
    page.mouse.up()
    screenshot(page, "driver-signature")
    page.get_by_role("button", name="Complete with signature").click()
    page.wait_for_selector("[data-driver-app][data-stop-state=delivered]")
    assert "Delivered" in page.locator("[data-stop-done]").inner_text()
    screenshot(page, "driver-delivered")

    r = httpx.get(f"{base}/v1/deliveries/{job['id']}/history", headers=staff.headers)
    states = [h["to_state"] for h in r.json()]
    assert states[-1] == "delivered" and states.index("picked_up") < states.index("arriving")
    page.get_by_role("button", name="← All stops").click()
    assert page.locator(f"[data-stops] > li.is-done[data-job-id='{job['id']}']").count() == 1

    # The phone's positions reached tracking while on duty (over the socket or the batch endpoint).
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and not positions(settings, driver.id):
        time.sleep(0.5)
    assert positions(settings, driver.id)
    page.get_by_role("button", name="End shift").click()
    page.wait_for_selector("[data-driver-app][data-view=shift]")
    assert page.console_errors == []


@pytest.mark.browser
def test_fixes_made_offline_are_kept_in_indexeddb_and_uploaded_in_order_on_reconnect(live_server, phone, shop, settings, screenshot):
    context, page = phone
    staff, _depot = shop
    driver = make_driver(live_server.url, staff, on_duty=False)
    sign_in_and_start_shift(page, live_server.url, driver.email)
    page.wait_for_function("() => document.querySelector('[data-driver-app]').dataset.buffered === '0'", timeout=20_000)
    before = positions(settings, driver.id)

    context.set_offline(True)
    page.wait_for_selector("[data-driver-app][data-link=offline]")
    lat, lng = DEPOT
    for i in range(1, 9):  # about 11 m apart, a few hundred ms apart: a van in town
        time.sleep(0.3)
        move(context, page, lat + i * 0.0001, lng)
    buffered = page.evaluate("window.driverApp.buffer.oldest(1000).then(ps => ps.map(p => p.seq))")
    assert len(buffered) >= 8 and buffered == sorted(buffered)
    screenshot(page, "driver-offline-buffer")

    context.set_offline(False)
    page.wait_for_function("() => document.querySelector('[data-driver-app]').dataset.buffered === '0'", timeout=20_000)
    stored = positions(settings, driver.id)
    new = [p for p in stored if p not in before]
    assert [seq for seq, _ in new if seq in set(buffered)] == buffered  # all of them, none lost
    uploads = page.evaluate("window.driverApp.uploads")
    sent = [seq for chunk in uploads for seq in chunk if seq in set(buffered)]
    assert sent == buffered  # uploaded oldest first
    by_seq = dict(stored)
    assert all(by_seq[s] == 2 for s in buffered)  # tracking.models.Source.HTTP_BATCH

    # The backlog went first; then the socket reopened and new fixes stream over it again.
    page.wait_for_selector("[data-driver-app][data-link=live]", timeout=20_000)
    live = drive(context, page, [(lat + i * 0.0001, lng) for i in range(9, 12)])
    all_sent(page)
    by_seq = dict(positions(settings, driver.id))
    assert [by_seq.get(s) for s in live] == [1] * len(live)  # Source.WEBSOCKET
    assert not set(live) & {seq for chunk in page.evaluate("window.driverApp.uploads") for seq in chunk}
    assert page.console_errors == []


@pytest.mark.browser
def test_the_app_shell_is_installable_and_opens_offline_from_the_service_worker(live_server, phone, screenshot):
    context, page = phone
    base = live_server.url
    manifest = httpx.get(base + "/driver/manifest.webmanifest").json()
    assert manifest["start_url"] == "/driver" and manifest["display"] == "standalone" and manifest["icons"]
    sw = httpx.get(base + "/driver/sw.js")
    assert sw.headers["service-worker-allowed"] == "/driver" and "__SHELL__" not in sw.text

    page.goto(base + "/driver")
    page.wait_for_selector("[data-driver-app][data-sw=registered]")
    page.evaluate("navigator.serviceWorker.ready.then(() => true)")
    page.wait_for_function("() => navigator.serviceWorker.controller !== null")
    cached = page.evaluate("caches.keys().then(ks => Promise.all(ks.map(k => caches.open(k).then(c => c.keys()))))"
                           ".then(lists => lists.flat().map(r => new URL(r.url).pathname))")
    assert "/driver" in cached and "/static/driver/app.js" in cached and "/static/vendor/@zxing/browser/zxing-browser.min.js" in cached
    # Chromium's own verdict on installability; a test context is incognito, which is the one thing it may say.
    cdp = context.new_cdp_session(page)
    errors = {e["errorId"] for e in cdp.send("Page.getInstallabilityErrors")["installabilityErrors"]}
    assert errors <= {"in-incognito"}
    assert cdp.send("Page.getAppManifest")["errors"] == []

    context.set_offline(True)
    page.reload()
    page.wait_for_selector("[data-driver-app][data-view=signin]")
    assert page.evaluate("typeof ZXingBrowser.BrowserMultiFormatReader") == "function"  # the scanner came from the cache too
    screenshot(page, "driver-offline-shell")
    context.set_offline(False)
    assert page.console_errors == []



@pytest.mark.browser
def test_deliveries_are_completed_with_a_photo_or_the_customers_code_or_reported_failed(live_server, phone, shop, settings, screenshot):
    import io
    import uuid as uuidmod

    from PIL import Image

    from dispatch import service

    context, page = phone
    staff, depot = shop
    base = live_server.url
    driver = make_driver(base, staff, on_duty=False)
    sign_in_and_start_shift(page, base, driver.email)
    spots = {"photo": (60.1745, 24.9500), "otp": (60.1760, 24.9520), "fail": (60.1775, 24.9540)}
    jobs = {kind: make_job(base, staff, depot, *at, driver=driver) for kind, at in spots.items()}
    version = replan(settings).published[driver.id]["version"]
    page.wait_for_selector(f"[data-driver-app][data-task-version='{version}']", timeout=20_000)

    page.locator("[data-stops] > li[data-kind=depot]").get_by_role("button").click()
    for job in jobs.values():
        page.get_by_label("Or type the code").fill(job["package_code"])
        page.get_by_role("button", name="Confirm scan").click()
        page.wait_for_selector(f"[data-load-list] li.is-loaded[data-code='{job['package_code']}']")
    page.get_by_role("button", name="← All stops").click()

    def at_the_door(kind: str) -> None:
        lat, lng = spots[kind]
        move(context, page, lat + 0.00001, lng)
        page.locator(f"[data-stops] > li[data-job-id='{jobs[kind]['id']}']").get_by_role("button").click()
        page.get_by_label("Or type the code").fill(jobs[kind]["package_code"])
        page.get_by_role("button", name="Confirm scan").click()
        page.wait_for_selector("[data-step-proof]:not([hidden])")

    # A photo of the parcel at the door.
    at_the_door("photo")
    page.get_by_role("tab", name="Photo").click()
    png = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 120, 40)).save(png, format="PNG")
    page.locator("#proof-photo").set_input_files({"name": "door.png", "mimeType": "image/png", "buffer": png.getvalue()})
    page.wait_for_selector("[data-driver-app][data-stop-state=delivered]")
    page.get_by_role("button", name="← All stops").click()

    # The code the customer reads from their tracking page; the scan is made 200 m off (the
    # customer came down the street): refused for distance until the driver gives a reason.
    lat, lng = spots["otp"]
    move(context, page, lat + 0.0018, lng)
    page.locator(f"[data-stops] > li[data-job-id='{jobs['otp']['id']}']").get_by_role("button").click()
    page.get_by_label("Or type the code").fill(jobs["otp"]["package_code"])
    page.get_by_role("button", name="Confirm scan").click()
    page.locator("[data-override]").wait_for(state="visible")
    assert "drop-off" in page.locator("[data-app-error]").inner_text()
    page.get_by_label("Why are you scanning away from the address?").fill("customer met me at the corner")
    page.get_by_role("button", name="Confirm scan").click()
    page.wait_for_selector("[data-step-proof]:not([hidden])")
    page.get_by_role("tab", name="Code").click()
    page.get_by_label("Code the customer tells you").fill(service.delivery_otp(settings.jwt_secret, uuidmod.UUID(jobs["otp"]["id"])))
    page.get_by_role("button", name="Complete with code").click()
    page.wait_for_selector("[data-driver-app][data-stop-state=delivered]")
    page.get_by_role("button", name="← All stops").click()

    # Nobody home.
    move(context, page, spots["fail"][0], spots["fail"][1] + 0.00001)
    page.locator(f"[data-stops] > li[data-job-id='{jobs['fail']['id']}']").get_by_role("button").click()
    page.get_by_text("Could not deliver").click()
    page.get_by_label("Reason").select_option("customer_absent")
    page.get_by_label("Note").fill("rang twice")
    page.get_by_role("button", name="Report failed attempt").click()
    page.wait_for_selector("[data-driver-app][data-stop-state=failed]")
    page.get_by_role("button", name="← All stops").click()
    screenshot(page, "driver-after-three-stops")

    def history(kind: str) -> list[dict]:
        return httpx.get(f"{base}/v1/deliveries/{jobs[kind]['id']}/history", headers=staff.headers).json()

    assert history("photo")[-1]["to_state"] == "delivered" and history("otp")[-1]["to_state"] == "delivered"
    assert history("fail")[-1]["to_state"] == "failed" and "rang twice" in history("fail")[-1]["reason"]
    for job in jobs.values():
        assert page.locator(f"[data-stops] > li.is-done[data-job-id='{job['id']}']").count() == 1

    # Reopened with no network: the service worker serves the app, and the day's stops are still there.
    page.wait_for_function("() => navigator.serviceWorker.controller !== null")
    context.set_offline(True)
    page.reload()
    page.wait_for_selector("[data-driver-app][data-view=tasks]")
    for job in jobs.values():
        assert page.locator(f"[data-stops] > li.is-done[data-job-id='{job['id']}']").count() == 1
    screenshot(page, "driver-reopened-offline")
    context.set_offline(False)
    assert page.console_errors == []


@pytest.mark.browser
def test_live_fixes_stream_over_the_driver_socket_and_a_dropped_socket_falls_back_to_http_and_reconnects(
        live_server, phone, shop, settings, screenshot):
    """The app signs in on /ws/driver with its first message and streams fixes there (stored with
    source WEBSOCKET); the socket is dropped and refused for a while (Playwright stands between the
    page and the server, as a load balancer restarting would); the network is still up, so fixes
    made meanwhile go from the IndexedDB buffer over the batch endpoint, oldest first; the app
    reconnects by itself (back-off) and streams over the socket again."""
    context, page = phone
    staff, _depot = shop
    base = live_server.url
    driver = make_driver(base, staff, on_duty=False)
    links: dict = {"down": False, "open": []}

    def through(ws) -> None:
        if links["down"]:
            ws.close(code=1013, reason="try again later")
            return
        links["open"].append((ws, ws.connect_to_server()))  # forwards both ways untouched

    page.route_web_socket(re.compile(r"/ws/driver$"), through)
    sign_in_and_start_shift(page, base, driver.email)
    page.wait_for_selector("[data-driver-app][data-link=live]")
    all_sent(page)
    lat, lng = DEPOT
    path = [(lat + i * 0.0001, lng + i * 0.00005) for i in range(1, 12)]  # ~12 m apart: a van in town

    live1 = drive(context, page, path[:5])
    all_sent(page)

    links["down"] = True  # the socket drops and reconnects are refused
    for ws, server in links["open"]:
        ws.close(code=1012, reason="service restart")
        server.close()
    page.wait_for_selector("[data-driver-app][data-link=online]")
    gap = drive(context, page, path[5:8])
    screenshot(page, "driver-socket-down")

    links["down"] = False
    page.wait_for_selector("[data-driver-app][data-link=live]", timeout=40_000)  # back-off: 1, 2, 4, ... s
    all_sent(page)
    live2 = drive(context, page, path[8:])
    all_sent(page)
    screenshot(page, "driver-live-socket")

    stored = dict(positions(settings, driver.id))
    assert [stored.get(s) for s in live1 + live2] == [1] * len(live1 + live2)  # tracking.models.Source.WEBSOCKET
    assert [stored.get(s) for s in gap] == [2] * len(gap)  # Source.HTTP_BATCH
    frames = [seq for frame in page.evaluate("window.driverApp.frames") for seq in frame]
    uploads = [seq for chunk in page.evaluate("window.driverApp.uploads") for seq in chunk]
    assert set(live1 + live2) <= set(frames) and not set(live1 + live2) & set(uploads)
    assert [s for s in uploads if s in set(gap)] == gap and not set(gap) & set(frames)  # oldest first, none over the socket
    assert len(links["open"]) >= 2 and page.evaluate("window.driverApp.sockets") >= 2  # it reconnected by itself

    # The live state the fleet board reads is the last fix, which came over the socket.
    latest = {p["driver_id"]: p for p in httpx.get(base + "/v1/tracking/positions", headers=staff.headers).json()}
    assert latest[driver.id]["seq"] == live2[-1]
    assert abs(latest[driver.id]["lat"] - path[-1][0]) < 1e-6 and abs(latest[driver.id]["lng"] - path[-1][1]) < 1e-6
    assert page.console_errors == []
