"""The fleet board page: every driver's live position and route on one map, exceptions, KPIs and reassignment.

The HTML is a public shell (a browser cannot send the bearer token on a navigation); its
script fetches /v1/fleet/* and /v1/admin/drivers with the signed-in dispatcher's token and
opens /ws/fleet (dispatch.ws), whose permission is checked on the token sent in its first
message. Positions arrive at most once per second per connection from the one feed loop of
the API process (dispatch.feed), so the page costs the server the same for 1 or 1,000 drivers
on screen.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from core.rbac import Permission
from serena.deps import require
from serena.web import pages

router = APIRouter(include_in_schema=False)

STALE_AFTER_S = 120  # a driver not heard from for this long is drawn greyed out


@router.get("/fleet", response_class=HTMLResponse)
async def board(request: Request, _=require(Permission.PUBLIC)):
    """The page shell; its script loads data with the signed-in staff token."""
    config = {"tile_url": pages.tile_url(request), "ws_path": "/ws/fleet", "stale_after_s": STALE_AFTER_S}
    return pages.render(request, "fleet/board.html", title="Fleet board", needs=("leaflet",), fleet_config=config)


def setup(app) -> None:
    pages.add_nav_link(app, "Fleet", "/fleet")
