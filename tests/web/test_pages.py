"""The web foundation in a real browser: home with live status, signing in, the offline map, set-up errors."""

from __future__ import annotations

import logging
import sys
import types
import uuid
from urllib.parse import urlsplit

import httpx
import pytest
from fastapi import APIRouter, Request

from core.rbac import Permission
from serena.deps import declared_permissions, iter_routes, require
from serena.web import assets as web_assets
from tests.web.conftest import serve_app

LOCAL_HOSTS = {"127.0.0.1", "localhost"}
PAGES = ("/", "/login", "/map-demo", "/docs", "/redoc")


def _local(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme in ("data", "blob", "about") or parts.hostname in LOCAL_HOSTS


# --- without a browser --------------------------------------------------------------------------------------


def test_every_page_route_declares_public_permission(settings):
    from serena.app import create_app

    app = create_app(settings)
    found = {path: declared_permissions(dep) for path, _methods, dep in iter_routes(app) if path in PAGES}
    assert found == {path: {Permission.PUBLIC} for path in PAGES}


def test_pages_send_a_content_security_policy_that_allows_only_this_origin(live_server):
    r = httpx.get(live_server.url + "/map-demo")
    assert r.status_code == 200
    csp = r.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "connect-src 'self'" in csp and "script-src 'self'" in csp
    assert "http" not in csp  # no external origin at all while no tile server is configured


def test_vendor_files_are_served_from_node_modules(live_server):
    r = httpx.get(live_server.url + "/static/vendor/leaflet/leaflet.js")
    assert r.status_code == 200, "run `cd serena/web && npm ci` before the web tests"
    assert "Leaflet" in r.text[:500]
    assert httpx.get(live_server.url + "/static/vendor/leaflet/package.json").status_code == 404  # only dist/
    assert httpx.get(live_server.url + "/static/vendor/swagger-ui-dist/swagger-ui-bundle.js").status_code == 200
    assert httpx.get(live_server.url + "/static/vendor/swagger-ui-dist/package.json").status_code == 404


def test_redoc_which_needs_a_cdn_redirects_to_the_local_api_docs(live_server):
    r = httpx.get(live_server.url + "/redoc")
    assert r.status_code == 307 and r.headers["location"] == "/docs"


@pytest.fixture
def app_without_vendor_files(settings, tmp_path, monkeypatch, caplog):
    """The real app started as if `npm ci` had never run: node_modules points at an empty directory."""
    from serena.app import create_app

    monkeypatch.setattr(web_assets, "DEFAULT_NODE_MODULES", tmp_path / "node_modules")
    with caplog.at_level(logging.ERROR, logger="serena.web"):
        app = create_app(settings)
    with serve_app(app) as server:
        yield server


def test_missing_vendor_files_are_named_with_the_setup_command(app_without_vendor_files, caplog):
    logged = [r.getMessage() for r in caplog.get_records("setup") if r.name == "serena.web"]
    assert any("leaflet" in m and "make setup" in m for m in logged), logged

    page = httpx.get(app_without_vendor_files.url + "/map-demo")
    assert page.status_code == 503
    assert "make setup" in page.text and "npm ci" in page.text and "leaflet.js" in page.text

    asset = httpx.get(app_without_vendor_files.url + "/static/vendor/leaflet/leaflet.js")
    assert asset.status_code == 503
    assert "make setup" in asset.text

    home = httpx.get(app_without_vendor_files.url + "/")
    assert home.status_code == 200  # pages without a map still work, with a warning banner
    assert "data-asset-problems" in home.text


# --- in the browser -----------------------------------------------------------------------------------------


@pytest.mark.browser
def test_home_shows_each_dependency_status_from_health(live_server, page, screenshot):
    page.goto(live_server.url + "/")
    page.wait_for_selector("[data-check=postgres]")
    assert page.locator("[data-check=postgres]").get_attribute("class").split()[-1] == "check-ok"
    assert page.locator("[data-check=redis]").get_attribute("class").split()[-1] == "check-ok"
    assert page.locator("[data-check=mqtt]").count() == 1  # up or down: the broker may not run in tests
    overall = page.locator("[data-status-overall]").inner_text()
    assert overall in ("all systems up", "degraded")
    assert page.get_by_role("link", name="API docs").first.is_visible()
    screenshot(page, "home")
    assert page.console_errors == []


@pytest.mark.browser
def test_login_page_signs_a_registered_user_in(live_server, page, screenshot):
    email = f"web-{uuid.uuid4().hex[:10]}@example.com"
    password = "correct horse battery"
    r = httpx.post(live_server.url + "/v1/auth/register", json={"email": email, "password": password, "full_name": "Web Test"})
    assert r.status_code == 201, r.text

    page.goto(live_server.url + "/login")
    page.get_by_label("E-mail").fill(email)
    page.get_by_label("Password").fill("wrong password!")
    page.get_by_role("button", name="Sign in").click()
    error = page.locator("[data-login-error]")
    error.wait_for(state="visible")
    assert error.inner_text().strip()
    screenshot(page, "login-error")

    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    page.locator("[data-login-done]").wait_for(state="visible")
    assert page.locator("[data-login-email]").inner_text() == email
    assert "customer" in page.locator("[data-login-roles]").inner_text()
    assert page.locator("[data-session-email]").inner_text() == email  # the header shows it too
    stored = page.evaluate("JSON.parse(sessionStorage.getItem('serena.session'))")
    assert stored["access_token"] and stored["user"]["email"] == email
    screenshot(page, "login-signed-in")

    # The token works for API calls from any page, and the session survives navigation.
    page.goto(live_server.url + "/")
    assert page.locator("[data-session-email]").inner_text() == email
    me = page.evaluate("Serena.api('/v1/me').then(r => r.data)")
    assert me["email"] == email

    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url("**/login")
    assert page.evaluate("sessionStorage.getItem('serena.session')") is None
    assert page.locator("[data-session-signin]").is_visible()
    assert page.console_errors == []  # includes CSP violations, which Chromium logs as errors


@pytest.mark.browser
def test_offline_map_draws_server_geojson_without_leaving_localhost(live_server, page, page_requests, screenshot):
    page.goto(live_server.url + "/map-demo")
    page.wait_for_selector("[data-map][data-ready=true]")
    paths = page.locator(".leaflet-overlay-pane svg path")
    assert paths.count() >= 8  # zone, four roads, route, depot, stop from the demo layer
    assert page.locator(".leaflet-overlay-pane path.map-road").count() == 4
    assert page.locator(".leaflet-overlay-pane path.map-zone").count() == 1
    assert page.locator(".leaflet-tile").count() == 0  # no tile layer by default
    page.wait_for_load_state("networkidle")
    screenshot(page, "map-demo")

    assert page_requests, "no requests recorded"
    leaving = [u for u in page_requests if not _local(u)]
    assert leaving == []
    assert any("/static/vendor/leaflet/leaflet.js" in u for u in page_requests)
    assert page.console_errors == []


@pytest.mark.browser
def test_api_docs_render_from_local_swagger_ui(live_server, page, page_requests, screenshot):
    page.goto(live_server.url + "/docs")
    page.wait_for_selector(".swagger-ui .opblock")
    assert page.locator(".swagger-ui .opblock-summary-path", has_text="/v1/auth/login").count() >= 1
    page.wait_for_load_state("networkidle")
    screenshot(page, "api-docs", full_page=False)
    assert [u for u in page_requests if not _local(u)] == []


@pytest.mark.browser
def test_map_page_without_vendor_files_tells_how_to_install_them(app_without_vendor_files, page, screenshot):
    page.goto(app_without_vendor_files.url + "/map-demo")
    panel = page.locator("[data-setup-missing]")
    assert panel.is_visible()
    assert "make setup" in panel.inner_text()
    screenshot(page, "map-demo-missing-vendor")


def test_a_configured_tile_server_is_the_only_origin_the_csp_adds():
    from types import SimpleNamespace

    from serena.web.pages import security_headers

    def csp(tile_url):
        request = SimpleNamespace(app=SimpleNamespace(state=SimpleNamespace(settings=SimpleNamespace(map_tile_url=tile_url))))
        return security_headers(request)["Content-Security-Policy"]

    assert "img-src 'self' data: blob:;" in csp(None)
    assert "img-src 'self' data: blob: https://*.tile.example.org;" in csp("https://{s}.tile.example.org/{z}/{x}/{y}.png")
    assert "connect-src 'self';" in csp("https://tiles.example.org/{z}/{x}/{y}.png")


@pytest.mark.browser
@pytest.mark.parametrize("path", ["/", "/login", "/map-demo"])
def test_pages_fit_a_phone_screen_without_sideways_scrolling(live_server, browser, screenshot, path):
    context = browser.new_context(viewport={"width": 390, "height": 844}, device_scale_factor=1, is_mobile=True)
    try:
        page = context.new_page()
        page.goto(live_server.url + path)
        page.wait_for_load_state("networkidle")
        overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        screenshot(page, "phone" + (path.replace("/", "-") if path != "/" else "-home"))
        assert overflow <= 0
    finally:
        context.close()


def test_a_page_module_listed_in_page_modules_is_mounted_with_its_nav_link(settings, monkeypatch):
    from serena.web import pages

    module = types.ModuleType("serena_test_fleet_pages")
    module.router = APIRouter(include_in_schema=False)

    @module.router.get("/fleet")
    async def board(request: Request, _=require(Permission.PUBLIC)):
        return pages.render(request, "home.html", title="Fleet board", cards=[])

    module.setup = lambda app: pages.add_nav_link(app, "Fleet", "/fleet")
    monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setattr(pages, "PAGE_MODULES", (module.__name__,))

    from serena.app import create_app

    app = create_app(settings)
    assert [link.label for link in app.state.web_nav][-1] == "Fleet"
    with serve_app(app) as server:
        home = httpx.get(server.url + "/")
        assert 'href="/fleet"' in home.text and "coming soon" in home.text  # the back office still is
        assert httpx.get(server.url + "/fleet").status_code == 200


@pytest.mark.browser
@pytest.mark.parametrize(("next_param", "continue_to"), [
    ("/fleet?driver=7", "/fleet?driver=7"),
    ("//evil.example/phish", "/"),
    ("/\t/evil.example/phish", "/"),
    ("https://evil.example/", "/"),
    ("javascript:alert(1)", "/"),
])
def test_login_continues_only_to_paths_on_this_site(live_server, page, next_param, continue_to):
    page.goto(live_server.url + "/login?" + httpx.QueryParams({"next": next_param}).__str__())
    page.wait_for_load_state("domcontentloaded")
    assert page.locator("[data-login-continue]").get_attribute("href") == continue_to
