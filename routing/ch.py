"""Customizable contraction hierarchy (CCH): exact shortest travel times that survive weight changes.

Why a *customizable* CH rather than a classic one: a classic CH picks its node
order from the weights, so new traffic factors mean a full re-contraction
(seconds). A CCH splits the work in three phases (Dibbelt, Strasser, Wagner 2014):

1. *Order* (metric-independent): nested dissection by METIS, so separator nodes
   rank high and the fill stays small.
2. *Contraction* (metric-independent): eliminate nodes in that order, adding the
   fill edges ("shortcut arcs") that make the upward graph chordal. Each arc links a
   lower-ranked node to a higher-ranked one and carries one weight per direction.
3. *Customization* (per metric, ~tens of ms): walk nodes bottom-up and relax every
   lower triangle `x <- v -> y` into arc `(x, y)`. Afterwards, for every s, t the
   shortest path is an up-then-down path, and the *elimination tree* (parent = the
   lowest upward neighbour) bounds the search: a node's upward search space is
   exactly its ancestors, so queries need no priority queue.

Everything here works in *rank space* (node i is the i-th eliminated); `routing.graph`
maps graph node ids through `rank` / `order`. Weights are float64 during queries
so sums agree with a plain Dijkstra to ~1e-12 relative; stored edge times stay float32.
Each arc also remembers the middle node of its best triangle, per direction, so
paths unpack to original edges, and the distance (m) of the fastest path rides
along with the time.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba as nb
import numpy as np

INF = np.inf


@dataclass
class CCH:
    """Metric-independent part of the hierarchy (arrays in rank space)."""

    rank: np.ndarray  # int32 (n,): graph node -> rank
    order: np.ndarray  # int32 (n,): rank -> graph node
    up_indptr: np.ndarray  # int64 (n+1,): arcs of rank r are up_indptr[r]:up_indptr[r+1]
    up_head: np.ndarray  # int32 (a,): higher endpoint of each arc, ascending per node
    arc_tail: np.ndarray  # int32 (a,): lower endpoint of each arc
    parent: np.ndarray  # int32 (n,): elimination-tree parent, -1 at roots

    @property
    def n_arcs(self) -> int:
        return len(self.up_head)

    def arrays(self) -> dict[str, np.ndarray]:
        return {f"cch_{k}": getattr(self, k) for k in ("rank", "order", "up_indptr", "up_head", "arc_tail", "parent")}

    @classmethod
    def from_arrays(cls, arrays) -> "CCH":
        return cls(**{k: arrays[f"cch_{k}"] for k in ("rank", "order", "up_indptr", "up_head", "arc_tail", "parent")})


@dataclass
class Metric:
    """Customised weights: per arc and direction, the time (s), distance (m) and how to unpack it."""

    up_time: np.ndarray  # float64 (a,): lower -> higher endpoint
    down_time: np.ndarray  # float64 (a,): higher -> lower endpoint
    up_dist: np.ndarray
    down_dist: np.ndarray
    up_mid: np.ndarray  # int32 (a,): middle node (rank) of the best triangle, -1 = an original edge
    down_mid: np.ndarray
    up_edge: np.ndarray  # int32 (a,): the original edge when mid == -1
    down_edge: np.ndarray
    # Downward arcs a many-to-many sweep needs (see `tight_down`); computed on first use.
    keep_down: np.ndarray | None = None


def nested_dissection_order(n: int, tail: np.ndarray, head: np.ndarray) -> np.ndarray:
    """Elimination order (rank -> node) of the undirected simple graph underlying the edges."""
    import pymetis

    a = np.minimum(tail, head).astype(np.int64)
    b = np.maximum(tail, head).astype(np.int64)
    keep = a != b
    pairs = np.unique(a[keep] * n + b[keep])
    a, b = pairs // n, pairs % n
    src = np.concatenate([a, b])
    dst = np.concatenate([b, a])
    order = np.lexsort((dst, src))
    src, dst = src[order], dst[order]
    xadj = np.zeros(n + 1, np.int64)
    np.cumsum(np.bincount(src, minlength=n), out=xadj[1:])
    # Rejected: our own inertial-flow bisection. METIS's multilevel ND gives a
    # similar fill on city graphs and is one call; FlowCutter orders would be ~20%
    # better still but exist only as a C++ program.
    try:
        adjacency = pymetis.CSRAdjacency(xadj, dst)
        perm, _iperm = pymetis.nested_dissection(adjacency=adjacency)
    except (AttributeError, TypeError):  # pymetis < 2025 takes xadj/adjncy directly
        perm, _iperm = pymetis.nested_dissection(xadj=xadj, adjncy=dst)
    return np.asarray(perm, np.int32)  # perm[new] = old: eliminate perm[0] first


def contract(n: int, tail: np.ndarray, head: np.ndarray, order: np.ndarray) -> CCH:
    """Symbolic elimination: the chordal upward graph of the order (metric-independent)."""
    rank = np.empty(n, np.int32)
    rank[order] = np.arange(n, dtype=np.int32)
    rt, rh = rank[tail], rank[head]
    lo, hi = np.minimum(rt, rh), np.maximum(rt, rh)
    keep = lo != hi
    up_indptr, up_head = _eliminate(n, lo[keep].astype(np.int64), hi[keep].astype(np.int64))
    arc_tail = np.repeat(np.arange(n, dtype=np.int32), np.diff(up_indptr)).astype(np.int32)
    parent = np.full(n, -1, np.int32)
    has = np.diff(up_indptr) > 0
    parent[has] = up_head[up_indptr[:-1][has]]
    return CCH(rank=rank, order=order.astype(np.int32), up_indptr=up_indptr, up_head=up_head, arc_tail=arc_tail, parent=parent)


def _eliminate(n: int, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    # Elimination game: when v goes, its higher neighbours become a clique. It is
    # enough to hand them to the lowest of them (v's parent), which is eliminated
    # next among them and passes the rest on in turn. Python sets: ~1 s on a city,
    # run once per build and cached, so not worth a numba hash set.
    up: list[set] = [set() for _ in range(n)]
    for a, b in zip(lo.tolist(), hi.tolist()):
        up[a].add(b)
    indptr = np.zeros(n + 1, np.int64)
    heads: list[np.ndarray] = []
    for v in range(n):
        s = up[v]
        if s:
            arr = np.fromiter(s, np.int32, len(s))
            arr.sort()
            p = int(arr[0])
            if len(arr) > 1:
                up[p].update(arr[1:].tolist())
            heads.append(arr)
            up[v] = None  # free as we go
        indptr[v + 1] = indptr[v] + len(s) if s else indptr[v]
    up_head = np.concatenate(heads).astype(np.int32) if heads else np.zeros(0, np.int32)
    return indptr, up_head


# ----------------------------------------------------------------------------- customization


def customize(cch: CCH, edge_tail: np.ndarray, edge_head: np.ndarray, time_s: np.ndarray, length_m: np.ndarray) -> Metric:
    """Weights for every arc from the graph's edge times (s) and lengths (m)."""
    a = cch.n_arcs
    m = Metric(
        up_time=np.full(a, INF),
        down_time=np.full(a, INF),
        up_dist=np.full(a, INF),
        down_dist=np.full(a, INF),
        up_mid=np.full(a, -1, np.int32),
        down_mid=np.full(a, -1, np.int32),
        up_edge=np.full(a, -1, np.int32),
        down_edge=np.full(a, -1, np.int32),
    )
    _init_arcs(
        cch.rank, cch.up_indptr, cch.up_head, edge_tail, edge_head, time_s, length_m,
        m.up_time, m.down_time, m.up_dist, m.down_dist, m.up_edge, m.down_edge,
    )
    _customize(cch.up_indptr, cch.up_head, m.up_time, m.down_time, m.up_dist, m.down_dist, m.up_mid, m.down_mid)
    return m


@nb.njit(cache=True, inline="always")
def _find_arc(up_indptr, up_head, x, y):
    """Arc index of (x, y), x < y in rank: binary search in x's sorted upward list."""
    lo = up_indptr[x]
    hi = up_indptr[x + 1]
    while lo < hi:
        mid = (lo + hi) >> 1
        if up_head[mid] < y:
            lo = mid + 1
        else:
            hi = mid
    return lo


@nb.njit(cache=True)
def _init_arcs(rank, up_indptr, up_head, tail, head, time_s, length_m, up_t, down_t, up_d, down_d, up_e, down_e):
    for e in range(len(tail)):
        a = rank[tail[e]]
        b = rank[head[e]]
        if a == b:
            continue
        t = np.float64(time_s[e])
        if a < b:
            arc = _find_arc(up_indptr, up_head, a, b)
            if t < up_t[arc]:  # parallel edges: the fastest one represents the pair
                up_t[arc] = t
                up_d[arc] = length_m[e]
                up_e[arc] = e
        else:
            arc = _find_arc(up_indptr, up_head, b, a)
            if t < down_t[arc]:
                down_t[arc] = t
                down_d[arc] = length_m[e]
                down_e[arc] = e


@nb.njit(cache=True)
def _customize(up_indptr, up_head, up_t, down_t, up_d, down_d, up_mid, down_mid):
    # Basic customization. Nodes bottom-up: when v is handled, its own arcs are
    # final (only triangles with a lower middle node can improve them). For each
    # pair x < y of v's upper neighbours, arc (x, y) exists (chordality) and is
    # found by a merge walk over x's sorted list, cheaper than a binary search per pair.
    n = len(up_indptr) - 1
    for v in range(n):
        b = up_indptr[v]
        e = up_indptr[v + 1]
        for i in range(b, e):
            x = up_head[i]
            vx_down = down_t[i]  # x -> v
            vx_up = up_t[i]  # v -> x
            p = up_indptr[x]
            for j in range(i + 1, e):
                y = up_head[j]
                while up_head[p] < y:
                    p += 1
                # x -> v -> y improves arc (x, y) upward
                c = vx_down + up_t[j]
                if c < up_t[p]:
                    up_t[p] = c
                    up_d[p] = down_d[i] + up_d[j]
                    up_mid[p] = v
                # y -> v -> x improves it downward
                c = down_t[j] + vx_up
                if c < down_t[p]:
                    down_t[p] = c
                    down_d[p] = down_d[j] + up_d[i]
                    down_mid[p] = v


def tight_down(cch: CCH, metric: Metric) -> np.ndarray:
    """Mask of downward arcs that lie on some shortest path; cached on the metric.

    Perfect customization (Dibbelt, Strasser, Wagner) lowers every arc to the true
    distance between its ends, through upper and intermediate triangles too. An
    arc whose basic weight is above that can never be on a shortest up-down path
    (the path through the other triangle is as short and uses tight arcs), so the
    matrix sweep skips it: on Porto about 31 % of downward arcs, one third less
    work per source. Kept apart from `customize` so a weight update stays cheap and
    only the first matrix after it pays the extra pass (~20 ms on Porto).
    """
    if metric.keep_down is None:
        ut, dt = metric.up_time.copy(), metric.down_time.copy()
        _perfect(cch.up_indptr, cch.up_head, ut, dt)
        # Keep ties (and rounding-level differences): only a clearly shorter detour
        # makes an arc redundant, so float noise cannot drop the only tight arc.
        metric.keep_down = np.isfinite(metric.down_time) & (metric.down_time <= dt * (1 + 1e-9) + 1e-9)
    return metric.keep_down


@nb.njit(cache=True)
def _perfect(up_indptr, up_head, up_t, down_t):
    # Top-down over lower endpoints x: arcs between x's upper neighbours are final
    # (their lower endpoints rank above x), and a shortest x-y path leaves x by some
    # arc (x, z), so relaxing every pair (y, z) of x's neighbours both ways is enough.
    n = len(up_indptr) - 1
    for x in range(n - 1, -1, -1):
        b = up_indptr[x]
        e = up_indptr[x + 1]
        for i in range(b, e):
            y = up_head[i]
            p = up_indptr[y]
            for j in range(i + 1, e):
                z = up_head[j]
                while up_head[p] < z:
                    p += 1
                # p is arc (y, z); i is (x, y); j is (x, z)
                c = up_t[j] + down_t[p]  # x -> z -> y
                if c < up_t[i]:
                    up_t[i] = c
                c = up_t[p] + down_t[j]  # y -> z -> x
                if c < down_t[i]:
                    down_t[i] = c
                c = up_t[i] + up_t[p]  # x -> y -> z
                if c < up_t[j]:
                    up_t[j] = c
                c = down_t[p] + down_t[i]  # z -> y -> x
                if c < down_t[j]:
                    down_t[j] = c


# ----------------------------------------------------------------------------- queries


@nb.njit(cache=True)
def _ancestors(parent, seeds, mark, buf):
    """Union of the seeds' elimination-tree ancestors (seeds included), ascending rank.

    `mark` must be all False on entry and is left so; `buf` is scratch space of size n.
    """
    k = 0
    for s in seeds:
        v = s
        while v >= 0 and not mark[v]:
            mark[v] = True
            buf[k] = v
            k += 1
            v = parent[v]
    out = np.sort(buf[:k])
    for i in range(k):
        mark[out[i]] = False
    return out


@nb.njit(cache=True)
def _upward(up_indptr, up_head, w_t, w_d, nodes, dt, dd, pred):
    """Relax the upward arcs of `nodes` (ascending ranks) with arc weights w_t / w_d."""
    for v in nodes:
        tv = dt[v]
        if tv == np.inf:
            continue
        dv = dd[v]
        for a in range(up_indptr[v], up_indptr[v + 1]):
            y = up_head[a]
            c = tv + w_t[a]
            if c < dt[y]:
                dt[y] = c
                dd[y] = dv + w_d[a]
                pred[y] = a


# Sources swept together: labels of one node for LANES sources sit side by side,
# so one arc load serves LANES relaxations and LLVM vectorises the inner loop.
# Measured on Porto 2000x2000, one thread, time + distance: 8 lanes 0.43 CPU-s,
# 16 lanes 0.35, 32 lanes 0.11 (at 32 LLVM if-converts the conditional distance
# update into masked SIMD stores), 64 no better. Time only: 0.16 / 0.17 / 0.13.
LANES = 32
# Below this many arc relaxations (batches x arcs in the restricted graph) a matrix runs single-threaded.
PARALLEL_MIN_WORK = 500_000


def many_to_many(
    up_indptr, up_head, parent, up_t, up_d, down_t, down_d,
    src_node, src_t, src_d, dst_node, dst_t, dst_d, with_dist=True, keep_down=None,
):
    """Time and distance matrices between seeded sources and targets (RPHAST-style).

    Each source / target is up to 2 seed nodes (rank, -1 = none) with an initial
    time and distance: a point on an edge reaches the edge's ends at a cost.
    The targets' ancestor sets are merged once into R (closed upward) and R is
    renumbered top-down into a compact local graph; then per batch of LANES
    sources: an upward search over each source's ancestors and one top-down sweep
    over R that pulls each node's labels from its upper neighbours. No priority
    queue, no buckets: the cost per source is |arcs(R)|, it parallelises trivially,
    and the sweep streams through memory in order.
    Rejected: the bucket algorithm of classic CH many-to-many; with CCH search
    spaces (all ancestors, no stall-on-demand) its buckets at top separators hold
    every target and dominate the run time.
    """
    n = len(up_indptr) - 1
    S = src_node.shape[0]
    if keep_down is None:
        keep_down = np.ones(len(up_head), np.bool_)
    r_nodes, local_of, l_indptr, l_head, l_wt, l_wd = _restrict(
        up_indptr, up_head, parent, down_t, down_d, keep_down, dst_node
    )
    dst_local = np.where(dst_node >= 0, local_of[np.maximum(dst_node, 0)], -1).astype(np.int32)
    n_batches = (S + LANES - 1) // LANES
    T = dst_node.shape[0]
    out_t = np.empty((S, T), np.float64)
    out_d = np.empty((S, T), np.float64)
    args = (
        up_indptr, up_head, parent, up_t, up_d, src_node, src_t, src_d, dst_local, dst_t, dst_d,
        local_of, l_indptr, l_head, l_wt, l_wd, n,
    )
    # Small matrices (a checkout quote, map-matching transitions) run on the calling
    # thread: waking the worker pool costs more than the work, and on a busy machine
    # waiting for a worker's time slice costs milliseconds.
    if n_batches * len(l_head) < PARALLEL_MIN_WORK:
        _m2m_chunk(*args, 0, 1, with_dist, out_t, out_d)
    else:
        n_chunks = min(n_batches, max(1, numba_threads()) * 4)
        _m2m_parallel(*args, n_chunks, with_dist, out_t, out_d)
    return out_t, out_d


def numba_threads() -> int:
    """Worker threads numba uses for matrices (NUMBA_NUM_THREADS, default: all cores)."""
    return nb.get_num_threads()


@nb.njit(cache=True)
def _restrict(up_indptr, up_head, parent, down_t, down_d, keep_down, dst_node):
    n = len(up_indptr) - 1
    mark = np.zeros(n, np.bool_)
    buf = np.empty(n, np.int32)
    seeds = dst_node.ravel()
    seeds = seeds[seeds >= 0]
    r_nodes = _ancestors(parent, seeds, mark, buf)[::-1].copy()  # top-down
    local_of = np.full(n, -1, np.int32)
    for i in range(len(r_nodes)):
        local_of[r_nodes[i]] = i
    n_arcs = 0
    for v in r_nodes:
        for a in range(up_indptr[v], up_indptr[v + 1]):
            n_arcs += keep_down[a]
    l_indptr = np.zeros(len(r_nodes) + 1, np.int64)
    l_head = np.empty(n_arcs, np.int32)
    l_wt = np.empty(n_arcs, np.float64)
    l_wd = np.empty(n_arcs, np.float64)
    k = 0
    for i in range(len(r_nodes)):
        v = r_nodes[i]
        for a in range(up_indptr[v], up_indptr[v + 1]):
            if not keep_down[a]:
                continue
            l_head[k] = local_of[up_head[a]]  # ancestors of a node in R are in R
            l_wt[k] = down_t[a]
            l_wd[k] = down_d[a]
            k += 1
        l_indptr[i + 1] = k
    return r_nodes, local_of, l_indptr, l_head, l_wt, l_wd


@nb.njit(cache=True)
def _sweep_td(l_indptr, l_head, l_wt, l_wd, lt, ld):
    for i in range(len(l_indptr) - 1):
        for a in range(l_indptr[i], l_indptr[i + 1]):
            j = l_head[a]
            wt = l_wt[a]
            wd = l_wd[a]
            for lane in range(LANES):
                cand = lt[j, lane] + wt
                if cand < lt[i, lane]:
                    lt[i, lane] = cand
                    ld[i, lane] = ld[j, lane] + wd


@nb.njit(cache=True)
def _sweep_t(l_indptr, l_head, l_wt, lt):
    # Time only: a plain min. At 32 lanes it costs about what _sweep_td does (both SIMD);
    # kept for the smaller output and for machines whose vector units make the blend dearer.
    for i in range(len(l_indptr) - 1):
        for a in range(l_indptr[i], l_indptr[i + 1]):
            j = l_head[a]
            wt = l_wt[a]
            for lane in range(LANES):
                lt[i, lane] = min(lt[i, lane], lt[j, lane] + wt)


@nb.njit(cache=True, parallel=True)
def _m2m_parallel(
    up_indptr, up_head, parent, up_t, up_d, src_node, src_t, src_d, dst_local, dst_t, dst_d,
    local_of, l_indptr, l_head, l_wt, l_wd, n, n_chunks, with_dist, out_t, out_d,
):
    for c in nb.prange(n_chunks):
        _m2m_chunk(
            up_indptr, up_head, parent, up_t, up_d, src_node, src_t, src_d, dst_local, dst_t, dst_d,
            local_of, l_indptr, l_head, l_wt, l_wd, n, c, n_chunks, with_dist, out_t, out_d,
        )


@nb.njit(cache=True)
def _m2m_chunk(
    up_indptr, up_head, parent, up_t, up_d, src_node, src_t, src_d, dst_local, dst_t, dst_d,
    local_of, l_indptr, l_head, l_wt, l_wd, n, c, n_chunks, with_dist, out_t, out_d,
):
    """Sources of chunk c (of n_chunks): upward searches, sweeps, target reads, into out_t / out_d."""
    S = src_node.shape[0]
    T = dst_local.shape[0]
    nr = len(l_indptr) - 1
    n_batches = (S + LANES - 1) // LANES
    dt = np.full(n, np.inf)
    dd = np.full(n, np.inf)
    pred = np.empty(n, np.int32)
    mark = np.zeros(n, np.bool_)
    buf = np.empty(n, np.int32)
    lt = np.empty((nr, LANES), np.float64)
    ld = np.empty((nr, LANES), np.float64)
    best_t = np.empty(LANES, np.float64)
    best_d = np.empty(LANES, np.float64)
    b_begin = c * n_batches // n_chunks
    b_end = (c + 1) * n_batches // n_chunks
    for b in range(b_begin, b_end):
        lt[:, :] = np.inf
        ld[:, :] = np.inf
        s0 = b * LANES
        for lane in range(LANES):
            s = s0 + lane
            if s >= S:
                break
            sn = src_node[s]
            for k in range(sn.shape[0]):
                if sn[k] >= 0 and src_t[s, k] < dt[sn[k]]:
                    dt[sn[k]] = src_t[s, k]
                    dd[sn[k]] = src_d[s, k]
            ups = _ancestors(parent, sn[sn >= 0], mark, buf)
            _upward(up_indptr, up_head, up_t, up_d, ups, dt, dd, pred)
            for v in ups:
                i = local_of[v]
                if i >= 0:
                    lt[i, lane] = dt[v]
                    ld[i, lane] = dd[v]
                dt[v] = np.inf
                dd[v] = np.inf
        # top-down sweep over R, all lanes at once
        if with_dist:
            _sweep_td(l_indptr, l_head, l_wt, l_wd, lt, ld)
        else:
            _sweep_t(l_indptr, l_head, l_wt, lt)
        # Targets outer, lanes inner: each target's label row is read once for all lanes.
        n_lanes = min(LANES, S - s0)
        for t in range(T):
            for lane in range(n_lanes):
                best_t[lane] = np.inf
                best_d[lane] = np.inf
            for k in range(dst_local.shape[1]):
                x = dst_local[t, k]
                if x < 0:
                    continue
                ct = dst_t[t, k]
                cd = dst_d[t, k]
                for lane in range(n_lanes):
                    cand = lt[x, lane] + ct
                    if cand < best_t[lane]:
                        best_t[lane] = cand
                        best_d[lane] = ld[x, lane] + cd
            for lane in range(n_lanes):
                out_t[s0 + lane, t] = best_t[lane]
                out_d[s0 + lane, t] = best_d[lane]


@nb.njit(cache=True)
def point_to_point(up_indptr, up_head, parent, up_t, up_d, down_t, down_d, s_node, s_t, s_d, t_node, t_t, t_d):
    """Fastest up-down path between two seed sets.

    Returns (time, distance, meeting node, forward arc chain, backward arc chain):
    the forward chain lists the upward arcs from the meeting node back to a source
    seed; the backward chain lists arcs from the meeting node down to a target seed.
    """
    n = len(up_indptr) - 1
    fdt = np.full(n, np.inf)
    fdd = np.full(n, np.inf)
    bdt = np.full(n, np.inf)
    bdd = np.full(n, np.inf)
    fpred = np.full(n, -1, np.int32)
    bpred = np.full(n, -1, np.int32)
    mark = np.zeros(n, np.bool_)
    buf = np.empty(n, np.int32)
    for k in range(len(s_node)):
        if s_node[k] >= 0 and s_t[k] < fdt[s_node[k]]:
            fdt[s_node[k]] = s_t[k]
            fdd[s_node[k]] = s_d[k]
    for k in range(len(t_node)):
        if t_node[k] >= 0 and t_t[k] < bdt[t_node[k]]:
            bdt[t_node[k]] = t_t[k]
            bdd[t_node[k]] = t_d[k]
    fwd_nodes = _ancestors(parent, s_node[s_node >= 0], mark, buf)
    bwd_nodes = _ancestors(parent, t_node[t_node >= 0], mark, buf)
    _upward(up_indptr, up_head, up_t, up_d, fwd_nodes, fdt, fdd, fpred)
    _upward(up_indptr, up_head, down_t, down_d, bwd_nodes, bdt, bdd, bpred)
    best = np.inf
    best_d = np.inf
    meet = -1
    for v in fwd_nodes:
        c = fdt[v] + bdt[v]
        if c < best:
            best = c
            best_d = fdd[v] + bdd[v]
            meet = v
    up_chain = np.empty(n, np.int32)
    down_chain = np.empty(n, np.int32)
    nu = 0
    nd = 0
    if meet >= 0:
        v = meet
        while fpred[v] >= 0:
            a = fpred[v]
            up_chain[nu] = a
            nu += 1
            v = _arc_tail_of(up_indptr, a)
        v = meet
        while bpred[v] >= 0:
            a = bpred[v]
            down_chain[nd] = a
            nd += 1
            v = _arc_tail_of(up_indptr, a)
    return best, best_d, meet, up_chain[:nu][::-1].copy(), down_chain[:nd].copy()


@nb.njit(cache=True, inline="always")
def _arc_tail_of(up_indptr, a):
    # Binary search in up_indptr; avoids passing arc_tail around.
    lo = 0
    hi = len(up_indptr) - 1
    while hi - lo > 1:
        mid = (lo + hi) >> 1
        if up_indptr[mid] <= a:
            lo = mid
        else:
            hi = mid
    return lo


@nb.njit(cache=True)
def unpack(up_indptr, up_head, up_mid, down_mid, up_edge, down_edge, up_arcs, down_arcs):
    """Original edge ids along upward arcs (traversed low -> high) then downward arcs (high -> low)."""
    out = np.empty(64, np.int32)
    k = 0
    stack_a = np.empty(256, np.int64)
    stack_dir = np.empty(256, np.int8)  # 1 = traverse upward, 0 = downward
    for phase in range(2):
        arcs = up_arcs if phase == 0 else down_arcs
        for a0 in arcs:
            sp = 0
            stack_a[0] = a0
            stack_dir[0] = 1 if phase == 0 else 0
            sp = 1
            while sp > 0:
                sp -= 1
                a = stack_a[sp]
                d = stack_dir[sp]
                mid = up_mid[a] if d == 1 else down_mid[a]
                if mid < 0:
                    if k == len(out):
                        grown = np.empty(2 * len(out), np.int32)
                        grown[:k] = out[:k]
                        out = grown
                    out[k] = up_edge[a] if d == 1 else down_edge[a]
                    k += 1
                    continue
                if sp + 2 >= len(stack_a):
                    ga = np.empty(2 * len(stack_a), np.int64)
                    gd = np.empty(2 * len(stack_a), np.int8)
                    ga[:sp] = stack_a[:sp]
                    gd[:sp] = stack_dir[:sp]
                    stack_a = ga
                    stack_dir = gd
                x = _arc_tail_of(up_indptr, a)
                y = up_head[a]
                a_vx = _find_arc(up_indptr, up_head, mid, x)
                a_vy = _find_arc(up_indptr, up_head, mid, y)
                # push in reverse of traversal order
                if d == 1:  # x -> v -> y : (v,x) downward then (v,y) upward
                    stack_a[sp] = a_vy
                    stack_dir[sp] = 1
                    stack_a[sp + 1] = a_vx
                    stack_dir[sp + 1] = 0
                else:  # y -> v -> x : (v,y) downward then (v,x) upward
                    stack_a[sp] = a_vx
                    stack_dir[sp] = 1
                    stack_a[sp + 1] = a_vy
                    stack_dir[sp + 1] = 0
                sp += 2
    return out[:k].copy()

