"""The driver app: a progressive web app at /driver (sign in, shift, ordered task list, scans, proof, live location).

The page is one HTML shell and one script (static/driver/app.js). What makes it a PWA:

- `/driver/manifest.webmanifest` names the app, its start URL and icon, so a phone can
  install it to the home screen;
- `/driver/sw.js`, a service worker served from under /driver (a worker controls only the
  paths below its own URL; the header `Service-Worker-Allowed: /driver` lets it control the
  page /driver itself), caches the app shell — this page, our CSS/JS and the scanner library —
  so the app opens without a network. API calls are never cached: a task list or a scan
  answer from a cache would be a lie.

The location stream, its offline buffer (IndexedDB) and the upload on reconnect are in
app.js; the protocol is tracking's (/ws/driver, POST /v1/tracking/me/pings).
"""

from __future__ import annotations

import hashlib
import json

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response

from core.rbac import Permission
from serena.deps import require
from serena.web import assets, pages

router = APIRouter(include_in_schema=False)

SW_FILE = assets.STATIC_DIR / "driver" / "sw.js"
# What the service worker caches at install: everything the page needs to start offline.
SHELL_STATIC = ("css/serena.css", "js/serena.js", "driver/app.css", "driver/app.js", "img/favicon.svg")
SHELL_VENDOR = (("@zxing/browser", "zxing-browser.min.js"),)


def _config(request: Request) -> dict:
    return {
        "sw": pages._path(request, "/driver/sw.js"),
        "scope": pages._path(request, "/driver"),
        "ws_path": "/ws/driver",
        "pings_path": "/v1/tracking/me/pings",
        "poll_tasks_s": 5,  # GET /v1/driver/tasks is one Redis read; acked only when the version changes
    }


@router.get("/driver", response_class=HTMLResponse)
async def driver_app(request: Request, _=require(Permission.PUBLIC)):
    """The app shell; its script signs the driver in and talks to /v1/driver/* with the driver's token."""
    return pages.render(request, "driver/app.html", title="Driver", needs=("@zxing/browser",), driver_config=_config(request))


@router.get("/driver/manifest.webmanifest")
async def manifest(request: Request, _=require(Permission.PUBLIC)):
    """The web app manifest: install to the home screen, open full screen at /driver."""
    body = {
        "name": "Serena Driver",
        "short_name": "Driver",
        "description": "Shift, tasks, scans and proof of delivery for Serena drivers.",
        "start_url": pages._path(request, "/driver"),
        "scope": pages._path(request, "/driver"),
        "display": "standalone",
        "orientation": "portrait",
        "background_color": "#f6f7f9",
        "theme_color": "#0f766e",
        "icons": [{"src": pages._static_url(request, "img/favicon.svg"), "sizes": "any", "type": "image/svg+xml",
                   "purpose": "any"}],
    }
    return JSONResponse(body, media_type="application/manifest+json", headers={"Cache-Control": "no-cache"})


@router.get("/driver/sw.js")
async def service_worker(request: Request, _=require(Permission.PUBLIC)):
    """The service worker, with this deployment's shell URLs (versioned like the pages' own links) filled in."""
    shell = [pages._path(request, "/driver")]
    shell += [pages._static_url(request, p) for p in SHELL_STATIC]
    shell += [pages._vendor_url(request, pkg, p) for pkg, p in SHELL_VENDOR]
    # named after the shell's versioned URLs: any changed file (or vendor package) installs a fresh shell
    cache = "serena-driver-" + hashlib.sha256("\n".join(shell).encode()).hexdigest()[:12]
    code = SW_FILE.read_text().replace("__SHELL__", json.dumps(shell)).replace("__CACHE__", json.dumps(cache))
    return Response(code, media_type="text/javascript", headers={
        "Service-Worker-Allowed": pages._path(request, "/driver"),
        "Cache-Control": "no-cache",  # browsers re-check the worker anyway; this keeps proxies honest
    })


def setup(app) -> None:
    pages.add_nav_link(app, "Driver", "/driver")
