"""`SERENA_TRACKING_GRAPH=default`: map matching and the customer map's roads on the bundled city.

`make demo` and docker compose set it; before, the demo ran with no matching and an empty
customer map (the setting only took a file or a graph directory).
"""

from __future__ import annotations

from core.settings import Settings
from routing import graph
from tracking import matching
from tracking.api import roads_around


def test_default_selects_the_bundled_city_for_matching_and_the_customer_map():
    g = graph.default_city(progress=False)
    matcher = matching.from_settings(Settings(env="test", tracking_graph="default"))
    assert isinstance(matcher, matching.Matcher)
    assert matcher.g.n_edges == g.n_edges > 0
    mid = len(g.lat) // 2
    roads = roads_around(g, float(g.lat[mid]), float(g.lng[mid]))
    assert roads["features"] and all(f["geometry"]["type"] == "LineString" for f in roads["features"])
    assert matching.from_settings(Settings(env="test", tracking_graph="")) is None
