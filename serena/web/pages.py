"""Server-rendered web pages: the base layout, home, sign-in and an offline map, plus their static files.

`serena.app.create_app` calls `mount(app)` when this module exists. Pages are thin: a route
renders a Jinja template and the page's own script talks to the JSON API with the bearer
token kept in sessionStorage (see static/js/serena.js). Everything a page loads comes from
this app: our files under /static/, npm packages' dist files under /static/vendor/<pkg>/,
and a Content-Security-Policy that only allows 'self' keeps it that way (a map tile server,
when configured, is the one origin added).

Another room adds a page with `render(request, "fleet/board.html", title=..., needs=("leaflet",))`
in its own router (declaring its permission with `require()` like any route), and may
register a nav link with `add_nav_link` and a map layer with `add_map_layer`. docs/web.md
walks through it.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import inspect
import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from fastapi import APIRouter, FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, PlainTextResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.types import Receive, Scope, Send

from core.rbac import Permission
from serena.deps import require
from serena.web import assets as assets_mod
from serena.web.assets import SETUP_HINT, STATIC_DIR, VENDOR, Assets

logger = logging.getLogger("serena.web")

templates = Jinja2Templates(directory=assets_mod.TEMPLATES_DIR)


# --- navigation and map layers: the extension points other rooms use ---------------------------------------


@dataclass(frozen=True)
class NavLink:
    label: str
    path: str
    description: str = ""  # shown on the home page's cards


# The home page's cards. A card whose path the app does not route yet is shown as "coming soon"
# rather than left out, so the home page doubles as a map of what the platform will offer.
HOME_CARDS: tuple[NavLink, ...] = (
    NavLink("Fleet board", "/fleet", "Live positions, routes and exceptions of every driver."),
    NavLink("Back office", "/admin", "Orders, users, roles, zones, depots and the audit log."),
    NavLink("API docs", "/docs", "Every endpoint of the JSON API, with the permission it needs."),
)

MapLayerProvider = Callable[[Request], "dict[str, Any] | Awaitable[dict[str, Any]]"]


@dataclass(frozen=True)
class MapLayer:
    """A GeoJSON FeatureCollection the map pages draw; features are styled by `properties.kind`."""

    name: str
    title: str
    provider: MapLayerProvider


def add_nav_link(app: FastAPI, label: str, path: str) -> None:
    """Show `label` → `path` in the header of every page (e.g. the fleet board, once it exists)."""
    app.state.web_nav.append(NavLink(label, path))


def add_map_layer(app: FastAPI, name: str, provider: MapLayerProvider, *, title: str | None = None) -> None:
    """Draw the GeoJSON `provider(request)` returns on the map pages; replaces a layer of the same name.

    This is the hook for the routing engine's road network: register a provider that returns
    the graph's edges as LineStrings with `properties.kind = "road"` (and remove the "demo" layer).
    """
    app.state.web_map_layers[name] = MapLayer(name, title or name, provider)


def remove_map_layer(app: FastAPI, name: str) -> None:
    app.state.web_map_layers.pop(name, None)


# Page areas of other rooms (the fleet board, customer tracking, the back office): a module under
# serena/web/ with a `router` of page routes and, optionally, `setup(app)` that adds nav links or
# map layers. One line here per area; docs/web.md shows a whole example.
PAGE_MODULES: tuple[str, ...] = ("serena.web.fleet", "serena.web.driver")


# --- rendering ----------------------------------------------------------------------------------------------


def _path(request: Request, path: str) -> str:
    """An absolute path under the app's root_path (so pages work behind a path-prefix proxy)."""
    return request.scope.get("root_path", "").rstrip("/") + path


@functools.lru_cache(maxsize=256)
def static_version(path: str) -> str:
    """Cache-busting token of one of our static files: a hash of its bytes (read once per process).

    The app's version alone is not enough: a deploy that changes `driver/app.js` without a
    version bump would leave a cache-first service worker on the old file.
    """
    try:
        return hashlib.sha256((STATIC_DIR / path).read_bytes()).hexdigest()[:12]
    except OSError:
        return "missing"


def _static_url(request: Request, path: str) -> str:
    return _path(request, f"/static/{path}?v={static_version(path)}")


def _vendor_url(request: Request, package: str, path: str) -> str:
    web_assets: Assets = request.app.state.web_assets
    return _path(request, f"/static/vendor/{package}/{path}?v={web_assets.url_version(package)}")


def _routed(app: FastAPI, path: str) -> bool:
    return any(getattr(route, "path", None) == path for route in app.routes)


def tile_url(request: Request) -> str | None:
    """The configured raster tile URL template, if any; None means the offline base (no tiles)."""
    return getattr(request.app.state.settings, "map_tile_url", None) or None


def security_headers(request: Request) -> dict[str, str]:
    """Headers for HTML pages: a CSP that lets the page reach this app only (plus a tile server if configured)."""
    img = "'self' data: blob:"
    tiles = tile_url(request)
    if tiles:
        parts = urlsplit(tiles)
        img += f" {parts.scheme}://{parts.netloc.replace('{s}', '*')}"  # {s}: Leaflet's subdomain placeholder
    csp = ("default-src 'self'; script-src 'self'; style-src 'self'; " f"img-src {img}; connect-src 'self'; "
           "font-src 'self'; object-src 'none'; base-uri 'self'; form-action 'self'; frame-ancestors 'none'")
    return {
        "Content-Security-Policy": csp,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "same-origin",
        "X-Frame-Options": "DENY",
    }


def render(request: Request, template: str, *, title: str, needs: tuple[str, ...] = (), status_code: int = 200,
           **context: Any) -> HTMLResponse:
    """Render a page; if a vendor package it `needs` is not installed, render the setup page instead (503)."""
    web_assets: Assets = request.app.state.web_assets
    missing = web_assets.missing(needs)
    if missing:
        template, status_code, title = "setup_missing.html", 503, "Set-up incomplete"
        context = {"problems": missing}
    ctx = {
        "title": title,
        "nav": request.app.state.web_nav,
        "current_path": request.url.path,
        "asset_problems": web_assets.problems(),
        "setup_hint": SETUP_HINT,
        "static": lambda path: _static_url(request, path),
        "vendor": lambda package, path: _vendor_url(request, package, path),
        "url": lambda path: _path(request, path),
        **context,
    }
    return templates.TemplateResponse(request, template, ctx, status_code=status_code,
                                      headers=security_headers(request))


async def _layers_geojson(request: Request) -> list[dict[str, Any]]:
    out = []
    for layer in request.app.state.web_map_layers.values():
        data = layer.provider(request)
        if inspect.isawaitable(data):
            data = await data
        out.append({"name": layer.name, "title": layer.title, "data": data})
    return out


# --- the pages ----------------------------------------------------------------------------------------------

router = APIRouter(tags=["pages"], include_in_schema=False)


@router.get("/", response_class=HTMLResponse)
async def home(request: Request, _=require(Permission.PUBLIC)):
    """Start page: where to go next, and the platform's health (fetched by the page from /health)."""
    cards = [(card, _routed(request.app, card.path)) for card in HOME_CARDS]
    return render(request, "home.html", title="Serena", cards=cards)


@router.get("/login", response_class=HTMLResponse)
async def login(request: Request, _=require(Permission.PUBLIC)):
    """Sign-in form; the page posts to /v1/auth/login and keeps the tokens in sessionStorage."""
    return render(request, "login.html", title="Sign in")


@router.get("/map-demo", response_class=HTMLResponse)
async def map_demo(request: Request, _=require(Permission.PUBLIC)):
    """A Leaflet map drawing the registered GeoJSON layers on a plain background: no tile server needed."""
    config = {"tile_url": tile_url(request), "layers": await _layers_geojson(request)}
    return render(request, "map_demo.html", title="Map", needs=("leaflet",), map_config=config)


# --- demo data ----------------------------------------------------------------------------------------------

# A made-up service area by the Douro in Porto: a zone, a few streets, a planned route, a depot
# and a stop. It proves the drawing path end to end until the routing engine supplies real roads.
DEMO_GEOJSON: dict[str, Any] = {
    "type": "FeatureCollection",
    "features": [
        {"type": "Feature", "properties": {"kind": "zone", "name": "Ribeira service zone"},
         "geometry": {"type": "Polygon", "coordinates": [[
             [-8.6240, 41.1390], [-8.6050, 41.1385], [-8.6000, 41.1440], [-8.6060, 41.1500],
             [-8.6200, 41.1505], [-8.6265, 41.1450], [-8.6240, 41.1390]]]}},
        {"type": "Feature", "properties": {"kind": "road", "name": "Riverside avenue"},
         "geometry": {"type": "LineString", "coordinates": [
             [-8.6250, 41.1400], [-8.6180, 41.1405], [-8.6120, 41.1408], [-8.6060, 41.1402], [-8.6010, 41.1420]]}},
        {"type": "Feature", "properties": {"kind": "road", "name": "Hill street"},
         "geometry": {"type": "LineString", "coordinates": [
             [-8.6180, 41.1405], [-8.6170, 41.1440], [-8.6150, 41.1475], [-8.6140, 41.1500]]}},
        {"type": "Feature", "properties": {"kind": "road", "name": "Market street"},
         "geometry": {"type": "LineString", "coordinates": [
             [-8.6230, 41.1460], [-8.6170, 41.1440], [-8.6100, 41.1445], [-8.6050, 41.1470]]}},
        {"type": "Feature", "properties": {"kind": "road", "name": "Cathedral lane"},
         "geometry": {"type": "LineString", "coordinates": [
             [-8.6120, 41.1408], [-8.6100, 41.1445], [-8.6095, 41.1490]]}},
        {"type": "Feature", "properties": {"kind": "route", "name": "Planned route, van 1"},
         "geometry": {"type": "LineString", "coordinates": [
             [-8.6215, 41.1402], [-8.6180, 41.1405], [-8.6170, 41.1440], [-8.6100, 41.1445], [-8.6098, 41.1470]]}},
        {"type": "Feature", "properties": {"kind": "depot", "name": "Depot Ribeira"},
         "geometry": {"type": "Point", "coordinates": [-8.6215, 41.1402]}},
        {"type": "Feature", "properties": {"kind": "stop", "name": "Drop-off 1"},
         "geometry": {"type": "Point", "coordinates": [-8.6098, 41.1470]}},
    ],
}


def _demo_layer(request: Request) -> dict[str, Any]:
    return DEMO_GEOJSON


# --- mounting -----------------------------------------------------------------------------------------------


class VendorFiles(StaticFiles):
    """One npm package's dist directory; answers 503 with the set-up command while it is not installed.

    Plain StaticFiles raises on a missing directory (a 500 with a stack trace) or, with
    check_dir=False, answers 404; neither tells the person what to do.
    """

    def __init__(self, package: str, web_assets: Assets) -> None:
        self.package = package
        self.only = frozenset(VENDOR[package].files) if VENDOR[package].only_listed else None
        super().__init__(directory=web_assets.dist_dir(package), check_dir=False)

    def lookup_path(self, path: str) -> tuple[str, os.stat_result | None]:
        if self.only is not None and path not in self.only:
            return "", None
        return super().lookup_path(path)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not self.config_checked:
            if not os.path.isdir(self.directory):  # type: ignore[arg-type]
                response = PlainTextResponse(
                    f"Front-end library {self.package!r} is not installed ({self.directory}): {SETUP_HINT}.\n",
                    status_code=503)
                await response(scope, receive, send)
                return
        await super().__call__(scope, receive, send)


def _serve_api_docs_locally(app: FastAPI) -> None:
    """Replace FastAPI's /docs and /redoc, which load their scripts (and ReDoc its fonts) from CDNs.

    /docs keeps Swagger UI, from our npm-installed swagger-ui-dist. /redoc redirects to /docs:
    ReDoc's npm package drags in a React tree we would install only for a second API viewer.
    """
    if not app.openapi_url:
        return
    replaced = {app.docs_url, app.redoc_url} - {None}
    app.router.routes = [r for r in app.router.routes if getattr(r, "path", None) not in replaced]

    if app.docs_url:
        @app.get(app.docs_url, include_in_schema=False)
        async def api_docs(request: Request, _=require(Permission.PUBLIC)):
            """Swagger UI for the JSON API, with every asset served by this app."""
            if request.app.state.web_assets.missing(("swagger-ui-dist",)):
                return render(request, "setup_missing.html", title="API docs", needs=("swagger-ui-dist",))
            root = request.scope.get("root_path", "").rstrip("/")
            redirect = app.swagger_ui_oauth2_redirect_url
            return get_swagger_ui_html(
                openapi_url=root + app.openapi_url,
                title=f"{app.title} API docs",
                oauth2_redirect_url=root + redirect if redirect else None,
                init_oauth=app.swagger_ui_init_oauth,
                swagger_js_url=_vendor_url(request, "swagger-ui-dist", "swagger-ui-bundle.js"),
                swagger_css_url=_vendor_url(request, "swagger-ui-dist", "swagger-ui.css"),
                swagger_favicon_url=_static_url(request, "img/favicon.svg"),
                # showExtensions: each operation shows its x-serena-permission. validatorUrl: the
                # validator badge would send our schema's URL to validator.swagger.io.
                swagger_ui_parameters={"showExtensions": True, **(app.swagger_ui_parameters or {}), "validatorUrl": None},
            )

    if app.redoc_url:
        @app.get(app.redoc_url, include_in_schema=False)
        async def redoc(request: Request, _=require(Permission.PUBLIC)):
            """The API docs live at /docs (Swagger UI, served locally)."""
            return RedirectResponse(_path(request, app.docs_url or "/"), status_code=307)


def mount(app: FastAPI, *, node_modules: Path | None = None) -> None:
    """Add the pages, /static (ours) and /static/vendor/<pkg> (npm) to `app`; log missing front-end files."""
    web_assets = Assets(node_modules)
    app.state.web_assets = web_assets
    app.state.web_nav = [NavLink("Home", "/"), NavLink("Map", "/map-demo"), NavLink("API docs", "/docs")]
    app.state.web_map_layers = {}
    add_map_layer(app, "demo", _demo_layer, title="Demo district")

    # Vendor mounts first: Starlette matches mounts in order and /static would swallow /static/vendor/...
    for package in VENDOR:
        app.mount(f"/static/vendor/{package}", VendorFiles(package, web_assets), name=f"vendor-{package}")
    app.mount("/static", StaticFiles(directory=assets_mod.STATIC_DIR), name="static")
    app.include_router(router)
    for name in PAGE_MODULES:
        module = importlib.import_module(name)
        app.include_router(module.router)
        if hasattr(module, "setup"):
            module.setup(app)
    _serve_api_docs_locally(app)

    problems = web_assets.problems()
    if problems:
        logger.error("web pages: front-end files missing or stale — %s; %s", "; ".join(map(str, problems)), SETUP_HINT)
