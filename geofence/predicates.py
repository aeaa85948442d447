"""Exact planar point-in-polygon on lng/lat edges, with the same answers as GEOS/shapely.

Zones are compared with shapely's planar semantics (edges are straight in lng/lat),
so the exact test must agree with GEOS bit for bit, including points on a vertex or
an edge (boundary counts as inside, i.e. `covers`/`intersects`). We port GEOS's
RayCrossingCounter (the test behind prepared `intersects`) and its orientation
predicate: a floating-point filter with GEOS's error bound and, when the filter
cannot decide, an exact sign from expansion arithmetic (Shewchuk's two-sum /
two-product). GEOS falls back to double-double there; both give the true sign for
any inputs our zones produce (the double-double error, ~2^-104 of a product, is far
below the smallest non-zero determinant of city-scale coordinates, ~2^-94).
Rejected: a plain double determinant, which misclassifies points within ~1e-15 deg
of an edge and so disagrees with shapely on points built exactly on edges.
"""

from __future__ import annotations

import numba
import numpy as np

_SPLITTER = 134217729.0  # 2^27 + 1, Dekker's split
_DP_SAFE_EPSILON = 1e-15  # GEOS CGAlgorithmsDD


@numba.njit(cache=True, inline="always")
def _two_sum(a: float, b: float):
    x = a + b
    bv = x - a
    av = x - bv
    return x, (a - av) + (b - bv)


@numba.njit(cache=True, inline="always")
def _two_product(a: float, b: float):
    x = a * b
    c = _SPLITTER * a
    ahi = c - (c - a)
    alo = a - ahi
    c = _SPLITTER * b
    bhi = c - (c - b)
    blo = b - bhi
    err = x - ahi * bhi - alo * bhi - ahi * blo
    return x, alo * blo - err


@numba.njit(cache=True)
def _exact_det_sign(ax: float, ay: float, bx: float, by: float, cx: float, cy: float) -> int:
    """Exact sign of (b-a) x (c-b), the determinant GEOS's orientationIndex evaluates."""
    dx1, dx1e = _two_sum(bx, -ax)
    dy1, dy1e = _two_sum(by, -ay)
    dx2, dx2e = _two_sum(cx, -bx)
    dy2, dy2e = _two_sum(cy, -by)
    terms = np.empty(16)
    n = 0
    for u, v, s in (
        (dx1, dy2, 1.0), (dx1, dy2e, 1.0), (dx1e, dy2, 1.0), (dx1e, dy2e, 1.0),
        (dy1, dx2, -1.0), (dy1, dx2e, -1.0), (dy1e, dx2, -1.0), (dy1e, dx2e, -1.0),
    ):
        hi, lo = _two_product(u, v)
        terms[n] = s * hi
        terms[n + 1] = s * lo
        n += 2
    # Grow a non-overlapping expansion term by term; its sign is the sign of its
    # largest non-zero component (the last one, as components grow in magnitude).
    e = np.zeros(17)
    m = 0
    for t in range(16):
        q = terms[t]
        for i in range(m):
            q, e[i] = _two_sum(q, e[i])
        e[m] = q
        m += 1
    for i in range(m - 1, -1, -1):
        if e[i] > 0.0:
            return 1
        if e[i] < 0.0:
            return -1
    return 0


@numba.njit(cache=True)
def orientation_index(ax: float, ay: float, bx: float, by: float, cx: float, cy: float) -> int:
    """+1 if c is left of a->b (counter-clockwise), -1 right, 0 collinear; exact."""
    detleft = (ax - cx) * (by - cy)
    detright = (ay - cy) * (bx - cx)
    det = detleft - detright
    if detleft > 0.0:
        if detright <= 0.0:
            return 1 if det > 0.0 else (-1 if det < 0.0 else 0)
        detsum = detleft + detright
    elif detleft < 0.0:
        if detright >= 0.0:
            return 1 if det > 0.0 else (-1 if det < 0.0 else 0)
        detsum = -detleft - detright
    else:
        return 1 if det > 0.0 else (-1 if det < 0.0 else 0)
    errbound = _DP_SAFE_EPSILON * detsum
    if det >= errbound or -det >= errbound:
        return 1 if det > 0.0 else -1
    return _exact_det_sign(ax, ay, bx, by, cx, cy)


@numba.njit(cache=True)
def covers_point(px: float, py: float, edges: np.ndarray, edge_ids: np.ndarray) -> bool:
    """True if the point is inside or on the boundary of the rings whose edges are listed.

    `edges` rows are (x1, y1, x2, y2) in lng/lat degrees; `edge_ids` selects the rows
    that can cross the point's eastward ray (any superset is fine: rows that cannot
    cross are skipped by the same tests). Port of GEOS RayCrossingCounter.countSegment.
    """
    crossings = 0
    for t in range(edge_ids.shape[0]):
        e = edge_ids[t]
        x1 = edges[e, 0]
        y1 = edges[e, 1]
        x2 = edges[e, 2]
        y2 = edges[e, 3]
        if x1 < px and x2 < px:
            continue  # strictly left of the point
        if px == x2 and py == y2:
            return True  # on a vertex
        if y1 == py and y2 == py:  # horizontal edge: only the on-segment test counts
            lo = min(x1, x2)
            hi = max(x1, x2)
            if lo <= px <= hi:
                return True
            continue
        # an upward edge includes its start and excludes its end; downward the reverse
        if (y1 > py and y2 <= py) or (y2 > py and y1 <= py):
            orient = orientation_index(x1, y1, x2, y2, px, py)
            if orient == 0:
                return True
            if y2 < y1:
                orient = -orient
            if orient == 1:
                crossings += 1
    return crossings % 2 == 1
