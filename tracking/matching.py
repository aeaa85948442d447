"""Map matching: which road (directed edge of `routing.graph`) each GPS fix is on, by an HMM over candidate roads.

The classic formulation (Newson & Krumm 2009). Hidden states are positions on the
network near each fix: every 4 m around the fix's projection on each of the
`max_candidates` nearest street pieces within `radius_m` (`routing.snap.candidates`), in
both directions on two-way streets. Emission: a Gaussian in the distance from the fix to
the position (sigma = the GPS noise, `sigma_m`), plus, when the phone reports its course
over ground, a capped Gaussian in the angle between that heading and the road's direction
there. Transition: an exponential in |network distance between the two positions -
distance driven| (the Doppler speed x dt, `beta_speed_m`; the great-circle distance between
the fixes, `beta_m`, without speed): a driver goes along roads, so a jump to a parallel
street (short as the crow flies, long by road) is unlikely.

Eight candidate streets, not four: with 14 m of radial noise, in an old town or at a
junction of slip roads the true street is often not among the four nearest, and no model
recovers a state it never had (4 -> 8, with the per-street decision, took online matching
without heading from 92-93 % to 94-95.6 %, measured with benchmarks/matching.py).

Network distances come from a bounded Dijkstra over the graph's CSR arrays in numba
(`_transitions`): for 1 Hz fixes the bound is tens of metres, so each search touches a few
nodes. `routing.matrix.travel_matrix` gives the same numbers exactly but costs ~20 ms per
call through the contraction hierarchy, which is right for matrices and far too slow per
fix.

Two uses:
- `Matcher.match_trace` — Viterbi over a whole trace (offline; tests, history clean-up);
- `Matcher` as an ingest pipeline stage — online: per driver it keeps the last fix's
  candidate states and their log-probabilities and, for each new fix, takes the street
  piece with the most probability mass (forward Viterbi, no look-ahead, so a fix is stored
  with its edge at once). The state is kept per ingest replica; with a shared subscription
  a replica sees a share of a driver's fixes, which only makes its transitions longer
  (still scored by road distance). `RouteContextStage` adds the driver's planned path as a
  prior. `Matcher(lag=L)` also re-decides each fix L fixes later (fixed-lag Viterbi) and
  returns the fixes it changed; ingest does not use it (a stored fix's edge would then
  need an UPDATE of history, and with heading and the route context it gains < 0.3 points).
"""

from __future__ import annotations

import heapq
import logging
from collections import OrderedDict
from dataclasses import dataclass, field

import numba
import numpy as np

from core.settings import Settings
from tracking.validate import Fix

log = logging.getLogger("serena.tracking.matching")

NEG = -1e18


@numba.njit(cache=True)
def _transitions(indptr, head, tail, length, src_e, src_off, dst_e, dst_off, max_d, back_m):
    """(S, T) network distances from each source position to each target position; inf beyond max_d.

    A target up to `back_m` behind the source on the same edge counts as that distance
    (GPS noise projects a slowly moving car backwards); otherwise motion is forward only.
    One bounded Dijkstra per distinct source edge, from its head node: the positions along
    an edge (a dozen per candidate street) differ only in the distance to that node, so
    searching once per position, as this did first, repeated the same search ~10 times.
    """
    S, T = len(src_e), len(dst_e)
    out = np.full((S, T), np.inf)
    for i in range(S):
        for j in range(T):
            if dst_e[j] == src_e[i] and dst_off[j] >= src_off[i] - back_m:
                out[i, j] = abs(dst_off[j] - src_off[i])
    order = np.argsort(src_e, kind="mergesort")
    node_d = np.empty(T)  # network distance from the source edge's head to each target's tail node
    a = 0
    while a < S:
        e = src_e[order[a]]
        b = a
        d0_min = np.inf
        while b < S and src_e[order[b]] == e:
            d0_min = min(d0_min, length[e] - src_off[order[b]])
            b += 1
        bound = max_d - d0_min
        if bound >= 0:
            node_d[:] = np.inf
            dist = {head[e]: 0.0}
            heap = [(0.0, head[e])]
            while heap:
                d, u = heapq.heappop(heap)
                if d > dist[u]:
                    continue
                for j in range(T):
                    if tail[dst_e[j]] == u and d < node_d[j]:
                        node_d[j] = d
                for k in range(indptr[u], indptr[u + 1]):
                    v = head[k]
                    nd = d + length[k]
                    if nd <= bound and (v not in dist or nd < dist[v]):
                        dist[v] = nd
                        heapq.heappush(heap, (nd, v))
            for r in range(a, b):
                i = order[r]
                d0 = length[e] - src_off[i]
                for j in range(T):
                    if d0 + node_d[j] <= max_d:
                        c = d0 + node_d[j] + dst_off[j]
                        if c < out[i, j]:
                            out[i, j] = c
        a = b
    return out


@dataclass
class _State:
    lat: float
    lng: float
    ts: float
    edges: np.ndarray
    offs: np.ndarray
    logp: np.ndarray
    speed_mps: float | None = None
    recent: list = field(default_factory=list)  # fixed lag: the last lag+1 (fix, edges, offsets, backpointers)
    trail: list = field(default_factory=list)  # the last few (x m, y m, ts) for the heading check
    heading_score: float = 0.7  # running share of headings that agree with the direction of travel


class Matcher:
    """HMM map matcher over a `routing.graph.Graph` (see the module docstring)."""

    # Defaults tuned on simulated 1 Hz traces with 10 m noise per axis (seed 11 in tuning; the
    # tests and benchmarks/matching.py use seed 7): online with heading 97-98 % of fixes on the
    # true street piece in Monaco, Heidelberg and Porto, offline 97-99 %.
    def __init__(self, g, *, sigma_m: float = 10.0, beta_m: float = 20.0, radius_m: float = 40.0,
                 max_candidates: int = 8, max_drivers: int = 200_000, back_m: float | None = 2.0,
                 beta_speed_m: float = 3.0, step_m: float = 4.0, route_bonus: float = 1.5,
                 heading_sigma_deg: float = 20.0, heading_cap: float = 4.0, heading_min_speed_mps: float = 2.0,
                 heading_trust: float = 0.6, lag: int = 0, exact_distance: bool = True, decide: str = "street") -> None:
        from routing import snap

        self.g = g
        self.snap = snap
        self.sigma = sigma_m
        self.beta = beta_m
        self.radius = radius_m
        self.back_m = back_m if back_m is not None else 2.0 * sigma_m
        self.beta_speed = beta_speed_m
        # Positions along each candidate street around the projection, +-2 sigma.
        half = max(1, int(np.ceil(2.0 * sigma_m / step_m)))
        self.shifts = np.arange(-half, half + 1) * step_m
        self.k = max_candidates
        self.length = g.length_m.astype(np.float64)
        self.indptr = g.indptr.astype(np.int64)
        self.head = g.head.astype(np.int64)
        self.tail = g.tail.astype(np.int64)
        self.twin = g.twin.astype(np.int64)
        self.states: OrderedDict[int, _State] = OrderedDict()
        self.routes: dict[int, np.ndarray] = {}  # driver -> planned path edges (both directions)
        self.route_bonus = route_bonus
        self.max_drivers = max_drivers
        self.heading_sigma = heading_sigma_deg
        self.heading_trust = heading_trust
        self.lag = lag
        self.decide = decide
        self.exact_distance = exact_distance
        self.heading_cap = heading_cap
        self.heading_min_speed = heading_min_speed_mps
        self._init_bearings()

    def _init_bearings(self) -> None:
        """Per geometry segment: its bearing (deg) and where it starts along its edge (m, scaled to length_m)."""
        g = self.g
        la, ln = np.radians(g.geom_lat.astype(np.float64)), np.radians(g.geom_lng.astype(np.float64))
        dl = ln[1:] - ln[:-1]
        x = np.sin(dl) * np.cos(la[1:])
        y = np.cos(la[:-1]) * np.sin(la[1:]) - np.sin(la[:-1]) * np.cos(la[1:]) * np.cos(dl)
        bearing = np.degrees(np.arctan2(x, y)) % 360.0
        kx = np.cos(0.5 * (la[1:] + la[:-1]))
        seg = np.hypot(dl * kx, la[1:] - la[:-1])
        ip = g.geom_indptr.astype(np.int64)
        last = np.zeros(len(la), bool)
        last[ip[1:] - 1] = True  # the last vertex of an edge starts no segment of it
        seg = np.where(last[:-1], 0.0, seg)
        cum = np.concatenate([[0.0], np.cumsum(seg)])
        edge_of = np.repeat(np.arange(g.n_edges), np.diff(ip))
        along = cum - cum[ip[:-1]][edge_of]  # from the edge's first vertex
        total = np.maximum(along[ip[1:] - 1], 1e-9)
        scale = self.length / total
        # Monotone key over all vertices: edge e's vertices sit in [base[e], base[e] + length[e]].
        base = np.concatenate([[0.0], np.cumsum(self.length + 1.0)[:-1]])
        self._vkey = base[edge_of] + along * scale[edge_of]
        self._vbase = base
        self._vbearing = np.concatenate([bearing, [0.0]])
        self._ip = ip
        # Vertices in a local plane (m) around the graph's centre, for state positions.
        self._lat0, self._lng0 = float(np.mean(g.lat)), float(np.mean(g.lng))
        self._ky = np.radians(1.0) * 6_371_008.8
        self._kx = self._ky * np.cos(np.radians(self._lat0))
        self._vx, self._vy = self._project(g.geom_lat, g.geom_lng)

    def _project(self, lat, lng) -> tuple[np.ndarray, np.ndarray]:
        return ((np.asarray(lng, np.float64) - self._lng0) * self._kx, (np.asarray(lat, np.float64) - self._lat0) * self._ky)

    def _vertex(self, e: np.ndarray, off: np.ndarray) -> np.ndarray:
        """Index of the geometry vertex starting the segment of edge e that holds offset off (m)."""
        v = np.searchsorted(self._vkey, self._vbase[e] + off, side="right") - 1
        return np.clip(v, self._ip[e], self._ip[e + 1] - 2)

    def _state_xy(self, e: np.ndarray, off: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Positions (local plane, m) of states (edge, offset m)."""
        v = self._vertex(e, off)
        span = self._vkey[v + 1] - self._vkey[v]
        t = np.clip((self._vbase[e] + off - self._vkey[v]) / np.where(span > 0, span, 1.0), 0.0, 1.0)
        return (self._vx[v] + t * (self._vx[v + 1] - self._vx[v]), self._vy[v] + t * (self._vy[v + 1] - self._vy[v]))

    def _road_bearing(self, e: np.ndarray, off: np.ndarray) -> np.ndarray:
        """Bearing (deg) of directed edge e at offset off (m)."""
        return self._vbearing[self._vertex(e, off)]

    def _heading_term(self, e: np.ndarray, off: np.ndarray, heading_deg, speed_mps) -> np.ndarray | float:
        """Log-likelihood of the reported course over ground given the road's direction at each state.

        A Gaussian in the angle (sigma = heading_sigma_deg, wider than a phone's ~3 degrees at
        10 m/s because road geometry is drawn coarsely and a car does not follow its centre
        line), capped at `heading_cap` log-units so that a turning car or a bad reading
        costs at most what ~28 m of position error would: heading decides near-ties (a cross
        street at an intersection, the direction on a two-way street) and never overrides
        clear positional evidence. Below `heading_min_speed_mps` phones report noise, so
        heading is ignored there.
        """
        if heading_deg is None or speed_mps is None or not np.isfinite(heading_deg) or speed_mps < self.heading_min_speed:
            return 0.0
        diff = np.abs((self._road_bearing(e, off) - heading_deg + 180.0) % 360.0 - 180.0)
        return -np.minimum(0.5 * (diff / self.heading_sigma) ** 2, self.heading_cap)

    # -- candidates -----------------------------------------------------------------------------
    def _candidates(self, lat: np.ndarray, lng: np.ndarray) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Per point: states (directed edge, offset m) and their distance to the fix (m).

        States are not only the fix's projection on each nearby street piece but positions
        every `step_m` around it along the street (both directions of two-way streets): the
        projection carries the full along-track GPS error, so with projections alone the
        HMM cannot tell on which side of an intersection a car 5 m past it is. With
        positions along the road, the reported speed (transition) and the 2-D distance from
        the fix to each position (emission) pin down where along the road each fix was.
        `exact_distance=False` uses sqrt(cross-track^2 + shift^2) instead, a straight-street
        approximation that overstates the distance past a street's end (measured: no
        difference in accuracy; kept as the previous behaviour for the benchmark).
        """
        pi, cand = self.snap.candidates(self.g, lat, lng, radius_m=self.radius, max_per_point=self.k)
        qx, qy = self._project(lat, lng)
        out = []
        bounds = np.searchsorted(pi, np.arange(len(lat) + 1))
        shifts = self.shifts
        for p in range(len(lat)):
            sl = slice(bounds[p], bounds[p + 1])
            e = cand.edge[sl].astype(np.int64)
            off = cand.offset_m[sl].astype(np.float64)
            d = cand.distance_m[sl].astype(np.float64)
            tw = self.twin[e]
            two = tw >= 0
            e = np.concatenate([e, tw[two]])
            d = np.concatenate([d, d[two]])
            off = np.concatenate([off, self.length[tw[two]] - off[two]])
            L = self.length[e]
            so = off[:, None] + shifts[None, :]
            inside = (so >= 0) & (so <= L[:, None])
            ee = np.broadcast_to(e[:, None], so.shape)[inside]
            oo = so[inside]
            if self.exact_distance:
                sx, sy = self._state_xy(ee, oo)
                dd = np.hypot(sx - qx[p], sy - qy[p])
            else:
                dd = np.broadcast_to(np.sqrt(d[:, None] ** 2 + shifts[None, :] ** 2), so.shape)[inside]
            out.append((ee, oo, dd))
        return out

    def _emission(self, d: np.ndarray) -> np.ndarray:
        return -0.5 * (d / self.sigma) ** 2

    def _step(self, prev_e, prev_off, prev_logp, gc_m: float, e, off, driven_m: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Best predecessor and log-probability (without emission) for each new state.

        `driven_m` (reported speed x elapsed time) is what the road distance should be when the
        device reports speed: Doppler speed is accurate to ~0.5 m/s while positions carry the
        full GPS noise, so it pins down how far along the road the car went, which the noisy
        straight-line distance cannot. Without it, the great-circle distance stands in.
        """
        expected = gc_m if driven_m is None else driven_m
        beta = self.beta if driven_m is None else self.beta_speed
        max_d = (expected + 10.0 * beta + 20.0) if driven_m is not None else 3.0 * gc_m + 2.0 * self.radius + 50.0
        net = _transitions(self.indptr, self.head, self.tail, self.length, prev_e, prev_off, e, off, max_d, self.back_m)
        score = prev_logp[:, None] - np.abs(net - expected) / beta
        best = np.argmax(score, axis=0)
        return best, score[best, np.arange(len(e))]

    # -- offline ----------------------------------------------------------------------------------
    def match_trace(self, lat, lng, ts=None, speed_mps=None, heading_deg=None) -> tuple[np.ndarray, np.ndarray]:
        """Viterbi over a whole trace: (directed edge, offset m) per fix; edge -1 where no road is in range.

        With `ts` (s) and `speed_mps`, transitions expect the distance driven (mean speed x dt);
        with `heading_deg` too (course over ground, NaN where unknown), emissions score it.
        """
        from routing.graph import haversine_m

        lat = np.asarray(lat, np.float64)
        lng = np.asarray(lng, np.float64)
        cands = self._candidates(lat, lng)
        if heading_deg is not None and speed_mps is not None:
            cands = [(e, off, d, self._heading_term(e, off, heading_deg[t], speed_mps[t])) for t, (e, off, d) in enumerate(cands)]
        else:
            cands = [(e, off, d, 0.0) for e, off, d in cands]
        n = len(lat)
        edges = np.full(n, -1, np.int64)
        offs = np.zeros(n)
        seg_start = 0
        back: list[np.ndarray] = []
        logp = None
        for t in range(n + 1):
            e, off, d, h = cands[t] if t < n else (np.empty(0, np.int64), np.empty(0), np.empty(0), 0.0)
            if t < n and logp is not None and len(e):
                gc = float(haversine_m(lat[t - 1], lng[t - 1], lat[t], lng[t]))
                driven = None
                if ts is not None and speed_mps is not None and np.isfinite(speed_mps[t]) and np.isfinite(speed_mps[t - 1]):
                    driven = 0.5 * (speed_mps[t] + speed_mps[t - 1]) * (ts[t] - ts[t - 1])
                best, lp = self._step(cands[t - 1][0], cands[t - 1][1], logp, gc, e, off, driven)
                if np.all(lp < NEG / 2) or not np.any(np.isfinite(lp)):
                    best, lp = None, None
            else:
                best, lp = None, None
            if lp is None:
                # Close the running segment (backtrack), then start a new one at t.
                if logp is not None:
                    s = int(np.argmax(logp))
                    for u in range(t - 1, seg_start - 1, -1):
                        edges[u], offs[u] = cands[u][0][s], cands[u][1][s]
                        if u > seg_start:
                            s = int(back[u - seg_start - 1][s])
                if t == n:
                    break
                seg_start, back = t, []
                logp = self._emission(d) + h if len(e) else None
                if logp is None:
                    seg_start = t + 1
                continue
            back.append(best)
            logp = lp + self._emission(d) + h
        return edges, offs

    # -- online (pipeline stage) ------------------------------------------------------------------
    def set_route(self, driver_id: int, edges) -> None:
        """The route context: directed edges the driver is expected to drive (its planned path), or None.

        Candidates on the route get a prior of `route_bonus` log-units (about what 15 m of
        extra distance costs at sigma 10 m): enough to settle the near-ties at intersections
        and between parallel streets, too little to hold a driver on the plan who has left it.
        """
        if edges is None or not len(edges):
            self.routes.pop(driver_id, None)
            return
        e = np.asarray(edges, np.int64)
        tw = self.twin[e]
        self.routes[driver_id] = np.unique(np.concatenate([e, tw[tw >= 0]]))

    def match_online(self, fixes: list[Fix]) -> list[Fix]:
        """Set edge / edge_fraction on fixes (in event-time order per driver) from each driver's previous state.

        Each fix gets the best state's edge at once (the filter estimate). With `lag` > 0 the
        fix `lag` steps back is then re-decided by backtracking the best path from the newest
        fix (fixed-lag Viterbi); returns the fixes, from this call or earlier ones, whose
        edge changed that way.
        """
        from routing.graph import haversine_m

        todo = [f for f in fixes if not f.late]
        if not todo:
            return []
        todo.sort(key=lambda f: (f.driver_id, f.ts))
        cands = self._candidates(np.array([f.lat for f in todo]), np.array([f.lng for f in todo]))
        corrected: list[Fix] = []
        for f, (e, off, d) in zip(todo, cands, strict=True):
            st = self.states.get(f.driver_id)
            if not len(e):
                self.states.pop(f.driver_id, None)
                continue
            lp = best = None
            if st is not None and f.ts > st.ts and f.ts - st.ts < 120:
                gc = float(haversine_m(st.lat, st.lng, f.lat, f.lng))
                driven = None
                if f.speed_mps is not None and st.speed_mps is not None:
                    driven = 0.5 * (f.speed_mps + st.speed_mps) * (f.ts - st.ts)
                best, lp = self._step(st.edges, st.offs, st.logp, gc, e, off, driven)
                if not np.any(np.isfinite(lp)):
                    lp = best = None
            trail, score = self._check_heading(st, f)
            heading = f.heading_deg if score >= self.heading_trust else None
            logp = self._emission(d) + self._heading_term(e, off, heading, f.speed_mps) + (lp - np.max(lp) if lp is not None else 0.0)
            route = self.routes.get(f.driver_id)
            if route is not None:
                on = route[np.minimum(np.searchsorted(route, e), len(route) - 1)] == e  # route is sorted
                logp = logp + self.route_bonus * on
            logp = np.where(np.isfinite(logp), logp, NEG)
            j = int(np.argmax(logp))
            if self.decide == "street":
                j = self._best_street(e, logp, j)
            self._assign(f, e[j], off[j])
            recent: list = []
            if self.lag:
                recent = (st.recent if st is not None and best is not None else []) + [(f, e, off, best)]
                recent = recent[-(self.lag + 1):]
                s_ = j
                for u in range(len(recent) - 1, 0, -1):  # backtrack to the oldest kept fix
                    s_ = int(recent[u][3][s_])
                    g_, ge, go, _b = recent[u - 1]
                    if u - 1 == 0 and len(recent) == self.lag + 1 and g_.edge != int(ge[s_]):
                        self._assign(g_, ge[s_], go[s_])
                        corrected.append(g_)
            self.states[f.driver_id] = _State(f.lat, f.lng, f.ts, e, off, logp, f.speed_mps, recent, trail, score)
            self.states.move_to_end(f.driver_id)
            if len(self.states) > self.max_drivers:
                self.states.popitem(last=False)
        return corrected

    def _check_heading(self, st: _State | None, f: Fix) -> tuple[list, float]:
        """The driver's trail and heading score after this fix.

        A phone can report a stuck or meaningless course (0 or a constant when it has none):
        scored against the roads, such a heading costs ~4 points of accuracy (measured with a
        constant 90 degrees: 88 % instead of 93 % without heading). So each driver's heading
        is trusted only while it agrees with the direction of travel seen in the positions:
        the bearing of the chord from a fix a few seconds back to this one (>= 25 m, where 14 m
        of noise per end leaves ~20 degrees of error). The score is a running mean (0.9 / 0.1)
        of |heading - chord| < 60 degrees; a good heading agrees ~95 % of the time (turns
        included), a constant or random one ~1/3. Positions, not the matched roads, are the
        reference: matching with the heading would confirm whatever the heading says.
        """
        x, y = self._project(f.lat, f.lng)
        trail = [p for p in (st.trail if st is not None else []) if 0 < f.ts - p[2] <= 10.0][-4:]
        score = st.heading_score if st is not None else _State.heading_score
        if f.heading_deg is not None and f.speed_mps is not None and f.speed_mps >= self.heading_min_speed and trail:
            px, py, _ = trail[0]
            dx, dy = float(x) - px, float(y) - py
            if dx * dx + dy * dy >= 25.0 ** 2:
                chord = np.degrees(np.arctan2(dx, dy)) % 360.0
                agree = abs((f.heading_deg - chord + 180.0) % 360.0 - 180.0) < 60.0
                score = 0.9 * score + 0.1 * agree
        return trail + [(float(x), float(y), f.ts)], score

    def _best_street(self, e: np.ndarray, logp: np.ndarray, j: int) -> int:
        """The best state on the street piece with the most probability mass (states of both directions summed)."""
        key = np.minimum(e, np.where(self.twin[e] >= 0, self.twin[e], e))
        w = np.exp(logp - logp[j])
        streets, inv = np.unique(key, return_inverse=True)
        mass = np.bincount(inv, weights=w)
        best = int(np.argmax(mass))
        if best == inv[j]:
            return j
        on = np.flatnonzero(inv == best)
        return int(on[np.argmax(logp[on])])

    def _assign(self, f: Fix, e, off) -> None:
        f.edge = int(e)
        f.edge_fraction = float(off / self.length[e]) if self.length[e] > 0 else 0.0

    async def __call__(self, fixes: list[Fix]) -> list:
        """Pipeline stage: matches in place, emits no events."""
        self.match_online(fixes)
        return []


class RouteContextStage:
    """Pipeline stage: online matching with each driver's planned path to its next stop as the route context.

    The path is computed with `routing.paths.route` from the driver's position when its next
    planned stop changes (a few ms, once per stop), and kept until then; a driver who leaves
    it is matched on the evidence (the prior is weak by design).
    """

    def __init__(self, matcher: Matcher, *, redis, prefix: str) -> None:
        from tracking import eta, live

        self.matcher = matcher
        self.live = live.LiveState(redis, prefix)
        self.plans_key = eta.Keys(prefix).plans
        self.route_for: dict[int, str | None] = {}  # driver -> stop id its route context leads to

    async def __call__(self, fixes: list[Fix]) -> list:
        import orjson

        from routing import paths

        first: dict[int, Fix] = {}
        for f in fixes:
            if not f.late and (f.driver_id not in first or f.ts < first[f.driver_id].ts):
                first[f.driver_id] = f
        if first:
            drivers = list(first)
            for d, raw in zip(drivers, await self.live.hmget(self.plans_key, drivers), strict=True):
                stop = None
                if raw:
                    stop = next((s for s in orjson.loads(raw)["stops"] if s.get("status", "pending") == "pending"), None)
                stop_id = str(stop["stop_id"]) if stop else None
                if self.route_for.get(d, "") == stop_id:
                    continue
                self.route_for[d] = stop_id
                edges = None
                if stop is not None:
                    try:
                        path = paths.route(self.matcher.g, (first[d].lat, first[d].lng), (float(stop["lat"]), float(stop["lng"])))
                        edges = path.edges
                    except Exception as exc:  # noqa: BLE001 - no route context is a degraded mode, not an error
                        log.debug("no route context for driver %s: %s", d, exc)
                self.matcher.set_route(d, edges)
        self.matcher.match_online(fixes)
        return []


def from_settings(settings: Settings, *, redis=None) -> Matcher | RouteContextStage | None:
    """The matcher for settings.tracking_graph (an OSM file, a graph directory or "default", the
    bundled city), or None when unset.

    Without a graph the pipeline stores fixes unmatched (edge NULL) and ETAs use the
    straight-line fallback; nothing else changes.
    """
    if not settings.tracking_graph:
        return None
    from routing import graph

    g = graph.default_city(progress=False) if settings.tracking_graph == "default" else graph.load(settings.tracking_graph, progress=False)
    log.info("map matching on %s (%d edges)", settings.tracking_graph, g.n_edges)
    matcher = Matcher(g)
    return RouteContextStage(matcher, redis=redis, prefix=settings.redis_prefix) if redis is not None else matcher
