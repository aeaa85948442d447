"""The customer's tracking page: /track/{token} — live map, driver marker, ETA window, status timeline.

A public page (the unguessable token in the URL is the credential, as on /ws/track/{token}).
The script (static/js/track.js) reads the current state from /v1/tracking/links/{token},
the map base from /v1/tracking/links/{token}/map (roads from our own graph, so it works
without a tile server) and then follows /ws/track/{token}. Mounted by serena.app.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from core.rbac import Permission
from serena.deps import require
from serena.web import pages

router = APIRouter(include_in_schema=False)


@router.get("/track/{token}", response_class=HTMLResponse)
async def track_page(request: Request, token: str, _=require(Permission.PUBLIC)):
    settings = request.app.state.settings
    config = {
        "state_url": f"/v1/tracking/links/{token}",
        "map_url": f"/v1/tracking/links/{token}/map",
        "ws_path": f"/ws/track/{token}",
        "tile_url": settings.tracking_tile_url or pages.tile_url(request),
    }
    return pages.render(request, "track/page.html", title="Your delivery", needs=("leaflet",), track_config=config)
