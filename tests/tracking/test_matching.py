"""Map matching against ground truth: simulated drives on a real road graph with 10 m GPS noise."""

from __future__ import annotations

import time

import numpy as np
import pytest

from tests.paths import OSM
from tracking.matching import Matcher
from tracking.validate import Fix

NOISE_M = 10.0  # standard deviation per axis (north and east): ~14 m radial RMS
SPEED_MPS = 10.0


@pytest.fixture(scope="module")
def heidelberg():
    from routing import graph

    src = OSM / "heidelberg.osm.pbf"
    if not src.exists():
        pytest.skip("shared OSM data not available")
    return graph.load(src, progress=False)


@pytest.fixture(scope="module")
def traces(heidelberg):
    return simulate(heidelberg, np.random.default_rng(7), 10)


def simulate(g, rng, n_routes: int):
    """Drives along fastest paths between random nodes at 10 m/s, one fix per second: (noisy lat, lng, speed, true edge)."""
    from routing import paths
    from routing.graph import haversine_m

    traces = []
    while len(traces) < n_routes:
        a, b = rng.integers(0, g.n_nodes, 2)
        p = paths.route(g, (g.lat[a], g.lng[a]), (g.lat[b], g.lng[b]))
        if p.distance_m < 1000:
            continue
        lat, lng, edge = [], [], []
        carry = 0.0
        for e in p.edges[1:-1]:
            s, t = g.geom_indptr[e], g.geom_indptr[e + 1]
            la, ln = g.geom_lat[s:t], g.geom_lng[s:t]
            for i in range(len(la) - 1):
                seg = float(haversine_m(la[i], ln[i], la[i + 1], ln[i + 1]))
                pos = carry
                while pos < seg:
                    f = pos / seg
                    lat.append(la[i] + f * (la[i + 1] - la[i]))
                    lng.append(ln[i] + f * (ln[i + 1] - ln[i]))
                    edge.append(e)
                    pos += SPEED_MPS
                carry = pos - seg
        if len(lat) < 30:
            continue
        lat, lng = np.array(lat), np.array(lng)
        ky = 111_195.0
        nlat = lat + rng.normal(0, NOISE_M, len(lat)) / ky
        nlng = lng + rng.normal(0, NOISE_M, len(lat)) / (ky * np.cos(np.radians(lat)))
        speed = SPEED_MPS + rng.normal(0, 0.5, len(lat))  # Doppler speed: ~0.5 m/s error
        traces.append((nlat, nlng, speed, np.array(edge)))
    return traces


def on_true_street(g, matched: np.ndarray, true: np.ndarray) -> np.ndarray:
    """Matched to the true street piece (either direction of a two-way street)."""
    return (matched == true) | ((g.twin[true] >= 0) & (matched == g.twin[true]))


def test_at_least_95_percent_of_noisy_fixes_land_on_the_true_edge(heidelberg, traces):
    g = heidelberg
    m = Matcher(g)
    hits = total = nearest_hits = online_hits = 0
    from routing import snap

    for i, (lat, lng, speed, true) in enumerate(traces):
        ts = np.arange(len(lat), dtype=float)
        edges, _ = m.match_trace(lat, lng, ts, speed)
        hits += on_true_street(g, edges, true).sum()
        total += len(true)
        nearest_hits += on_true_street(g, snap.snap(g, lat, lng, max_distance_m=None).edge.astype(np.int64), true).sum()
        fixes = [Fix(i, k, 1000.0 + k, lat[k], lng[k], NOISE_M, speed[k], None, 0.0) for k in range(len(lat))]
        for f in fixes:  # one fix at a time, as they arrive
            m.match_online([f])
        online_hits += on_true_street(g, np.array([f.edge for f in fixes]), true).sum()
    assert total > 3000
    assert hits / total >= 0.95, f"offline Viterbi {hits / total:.3f}"
    assert online_hits / total >= 0.90, f"online {online_hits / total:.3f}"  # no look-ahead: decided when the fix arrives
    assert nearest_hits / total < hits / total - 0.05  # the HMM is what earns it


def test_route_context_lifts_online_matching_and_a_wrong_plan_does_not_mislead_it(heidelberg, traces):
    g = heidelberg
    on_plan, off_plan, total = 0, 0, 0
    for mode in ("on", "off"):
        m = Matcher(g)
        for i, (lat, lng, speed, true) in enumerate(traces):
            planned = true if mode == "on" else traces[(i + 1) % len(traces)][3]  # off: another route entirely
            m.set_route(i, np.unique(planned))
            fixes = [Fix(i, k, 1000.0 + k, lat[k], lng[k], NOISE_M, speed[k], None, 0.0) for k in range(len(lat))]
            for f in fixes:
                m.match_online([f])
            hits = on_true_street(g, np.array([f.edge for f in fixes]), true).sum()
            if mode == "on":
                on_plan += hits
                total += len(true)
            else:
                off_plan += hits
    assert on_plan / total >= 0.94, f"on plan {on_plan / total:.3f}"  # 92.4 % without the plan (test above)
    assert off_plan / total >= 0.90, f"off plan {off_plan / total:.3f}"


async def test_the_pipeline_stores_the_matched_edge_with_the_plan_as_route_context(heidelberg, tsettings, pool, redis,
                                                                                   new_driver_id):
    from tests.tracking.conftest import inbound, ping
    from tracking import eta
    from tracking.ingest import Pipeline
    from tracking.matching import RouteContextStage

    g = heidelberg
    lat, lng, speed, true = simulate(g, np.random.default_rng(3), 1)[0]
    d = new_driver_id()
    end = int(g.head[true[-1]])
    await eta.write_plan(redis, prefix=tsettings.redis_prefix, driver_id=d,
                         stops=[{"stop_id": f"s-{d}", "order_id": f"o-{d}", "lat": float(g.lat[end]), "lng": float(g.lng[end])}])
    stage = RouteContextStage(Matcher(g), redis=redis, prefix=tsettings.redis_prefix)
    pipe = Pipeline(settings=tsettings, pool=pool, redis=redis, stages=[stage])
    t0 = time.time() - len(lat)
    for k in range(len(lat)):
        await pipe.process([inbound(ping(d, k, ts=t0 + k, lat=float(lat[k]), lng=float(lng[k]), speed_mps=float(speed[k])))])
    rows = await pool.fetch("SELECT seq, edge, edge_fraction FROM tracking_positions WHERE driver_id = $1 ORDER BY seq", d)
    edges = np.array([r["edge"] for r in rows])
    assert len(rows) == len(lat) and all(0 <= r["edge_fraction"] <= 1 for r in rows)
    assert on_true_street(g, edges, true).mean() >= 0.85
    live = await pipe.live.get([d])
    assert live[d]["edge"] == rows[-1]["edge"]
    assert stage.route_for[d] == f"s-{d}" and d in stage.matcher.routes  # the plan's path is the route context
