"""Scanning a parcel's QR code with the camera: Chromium's fake camera plays the label's QR code and the app's scanner (@zxing/browser) reads it.

The fake camera needs launch flags the shared `browser` fixture does not have, so this test
launches its own Chromium through the same Playwright driver.
"""

from __future__ import annotations

import io

import pytest
import qrcode
from PIL import Image

from tests.web.conftest import CHROMIUM, CHROMIUM_ARGS
from tests.web.test_driver import DROPOFF, PHONE, sign_in_and_start_shift
from tests.web.test_fleet import DEPOT, make_depot, make_dispatcher, make_driver, make_job, replan


def label_video(code: str, path, frames: int = 30) -> None:
    """An MJPEG 'camera' showing the QR code of `code` on white (what the label printer prints)."""
    qr = qrcode.make(code, box_size=8, border=4).convert("RGB")
    frame = Image.new("RGB", (640, 480), "white")
    frame.paste(qr, ((640 - qr.width) // 2, (480 - qr.height) // 2))
    buf = io.BytesIO()
    frame.save(buf, format="JPEG", quality=90)
    path.write_bytes(buf.getvalue() * frames)


@pytest.mark.browser
def test_a_parcel_is_loaded_by_scanning_its_qr_code_with_the_camera(browser, live_server, settings, tmp_path, screenshot):
    base = live_server.url
    staff = make_dispatcher(settings)
    depot = make_depot(base, staff)
    driver = make_driver(base, staff, on_duty=False)
    # The job is made first (pinned once the driver is on duty) so its code is known when the camera starts.
    video = tmp_path / "label.mjpeg"

    camera_browser = browser.browser_type.launch(
        executable_path=CHROMIUM, headless=True,
        args=CHROMIUM_ARGS + ["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
                              f"--use-file-for-fake-video-capture={video}"])
    try:
        context = camera_browser.new_context(viewport=PHONE, geolocation={"latitude": DEPOT[0], "longitude": DEPOT[1], "accuracy": 8})
        context.grant_permissions(["geolocation", "camera"], origin=base)
        context.set_default_timeout(20_000)
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))

        sign_in_and_start_shift(page, base, driver.email)
        job = make_job(base, staff, depot, *DROPOFF, driver=driver)
        label_video(job["package_code"], video)
        version = replan(settings).published[driver.id]["version"]
        page.wait_for_selector(f"[data-driver-app][data-task-version='{version}']", timeout=20_000)

        page.locator("[data-stops] > li[data-kind=depot]").get_by_role("button").click()
        page.get_by_role("button", name="Scan with camera").click()
        page.wait_for_selector(f"[data-load-list] li.is-loaded[data-code='{job['package_code']}']")
        screenshot(page, "driver-camera-scan")
        assert errors == []
        context.close()
    finally:
        camera_browser.close()
