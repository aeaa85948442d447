"""Map-matching benchmark: share of noisy GPS fixes matched to the true street piece, and per-fix cost.

Simulated drives on real OSM graphs (Heidelberg, Porto, Monaco from the shared data):
fastest paths between random nodes driven at 10 m/s, one fix a second, each fix the true
position plus Gaussian noise (`--noise`, default 10 m per axis, ~14 m radial), a Doppler
speed with 0.5 m/s error and a course over ground (heading) with `--heading-noise` degrees
of error (default 10; phones derive it from the same Doppler velocity, ~3 degrees at 10 m/s,
so 10 is on the pessimistic side). The truth is the edge the simulated car was on; either
direction of a street piece counts as a hit.

Methods, all on the same traces:
- nearest road (the baseline: `routing.snap.snap`);
- offline Viterbi over the whole trace (`Matcher.match_trace`);
- online, each fix decided when it arrives (`Matcher.match_online`, what ingest stores),
  without and with the fix's heading, without and with the route context (the true
  path as the plan, i.e. a driver who follows the plan), and with a wrong plan (another
  trace's path) to show the prior does not hold a driver on a route they left;
- online with a fixed lag of 1 or 2 fixes (`Matcher(lag=L)`: each fix gets a provisional
  edge at once, and fix k is re-decided when fix k+L arrives, by backtracking the best path;
  the figure counts the final decision, and the last L fixes of a drive stay provisional).

Per-fix ms is the wall time of feeding the fixes one at a time (a batch of one, the worst
case for ingest), divided by the fixes; the last row feeds one batch per second holding the
next fix of every drive, as ingest sees many drivers at once (candidates are found for the
whole batch in one k-d tree query).

    flock /tmp/serena-bench.lock python -m benchmarks.matching [--graphs heidelberg porto monaco] [--routes 20] [--seed 7]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tests.paths import OSM  # noqa: E402
from tests.tracking.drives import on_true_street, simulate  # noqa: E402
from tracking.matching import Matcher  # noqa: E402
from tracking.validate import Fix  # noqa: E402

def run_online(m: Matcher, traces, *, heading: bool, plan: str | None, driver0: int = 0):
    """(hits, fixes, seconds) of online matching, one fix per call, as ingest would see them.

    plan: None (no route context), "true" (the driver follows the plan) or "wrong"
    (another trace's path is the plan).
    """
    hits = total = 0
    elapsed = 0.0
    for i, (lat, lng, speed, hdg, true) in enumerate(traces):
        d = driver0 + i
        if plan is not None:
            planned = true if plan == "true" else traces[(i + 1) % len(traces)][4]
            m.set_route(d, np.unique(planned))
        fixes = [Fix(d, k, 1000.0 + k, float(lat[k]), float(lng[k]), 10.0, float(speed[k]),
                     float(hdg[k]) if heading else None, 0.0) for k in range(len(lat))]
        t = time.perf_counter()
        for f in fixes:
            m.match_online([f])
        elapsed += time.perf_counter() - t
        got = np.array([f.edge if f.edge is not None else -1 for f in fixes])
        hits += int(on_true_street(m.g, got, true).sum())
        total += len(true)
        m.set_route(d, None)
    return hits, total, elapsed


def run_batched(m: Matcher, traces, *, heading: bool, plan: str | None):
    """As run_online, but each call holds the next fix of every drive (ingest's batches: many drivers at once)."""
    fixes = []
    for i, (lat, lng, speed, hdg, true) in enumerate(traces):
        if plan is not None:
            m.set_route(i, np.unique(true))
        fixes.append([Fix(i, k, 1000.0 + k, float(lat[k]), float(lng[k]), 10.0, float(speed[k]),
                          float(hdg[k]) if heading else None, 0.0) for k in range(len(lat))])
    t = time.perf_counter()
    for k in range(max(len(f) for f in fixes)):
        m.match_online([f[k] for f in fixes if k < len(f)])
    elapsed = time.perf_counter() - t
    hits = total = 0
    for f, tr in zip(fixes, traces, strict=True):
        hits += int(on_true_street(m.g, np.array([x.edge if x.edge is not None else -1 for x in f]), tr[4]).sum())
        total += len(f)
    return hits, total, elapsed


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--graphs", nargs="+", default=["heidelberg", "porto", "monaco"])
    ap.add_argument("--routes", type=int, default=20, help="simulated drives per graph (>= 1 km each)")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--noise", type=float, default=10.0, help="GPS noise, m per axis")
    ap.add_argument("--heading-noise", type=float, default=10.0, help="course-over-ground noise, degrees")
    args = ap.parse_args(argv)

    from routing import graph, snap

    rows = []
    for name in args.graphs:
        g = graph.load(OSM / f"{name}.osm.pbf", progress=False)
        traces = simulate(g, np.random.default_rng(args.seed), args.routes, noise_m=args.noise,
                          heading_noise_deg=args.heading_noise)
        n = sum(len(t[4]) for t in traces)
        res: dict[str, tuple[float, float]] = {}
        t = time.perf_counter()
        hits = sum(int(on_true_street(g, snap.snap(g, la, ln, max_distance_m=None).edge, tr).sum())
                   for la, ln, _s, _h, tr in traces)
        res["nearest road"] = (hits / n, (time.perf_counter() - t) / n * 1e3)
        m = Matcher(g)
        m.match_online([Fix(-1, 0, 0.0, float(g.lat[0]), float(g.lng[0]), 10.0, None, None, 0.0)])  # numba warm-up
        t = time.perf_counter()
        hits = 0
        for la, ln, sp, _h, tr in traces:
            edges, _ = m.match_trace(la, ln, np.arange(len(la), dtype=float), sp)
            hits += int(on_true_street(g, edges, tr).sum())
        res["offline Viterbi"] = (hits / n, (time.perf_counter() - t) / n * 1e3)
        t = time.perf_counter()
        hits = 0
        for la, ln, sp, hd, tr in traces:
            edges, _ = m.match_trace(la, ln, np.arange(len(la), dtype=float), sp, hd)
            hits += int(on_true_street(g, edges, tr).sum())
        res["offline Viterbi + heading"] = (hits / n, (time.perf_counter() - t) / n * 1e3)
        # (label, Matcher options, run options); "previous" = the defaults before heading and
        # the wider candidate set (4 streets per fix, per-state decision), on today's code.
        previous = dict(max_candidates=4, decide="state", exact_distance=False)
        methods = [
            ("online, previous settings", previous, dict(heading=False, plan=None)),
            ("online + route, previous settings", previous, dict(heading=False, plan="true")),
            ("online", {}, dict(heading=False, plan=None)),
            ("online + route", {}, dict(heading=False, plan="true")),
            ("online + heading", {}, dict(heading=True, plan=None)),
            ("online + heading + route", {}, dict(heading=True, plan="true")),
            ("online + heading + wrong route", {}, dict(heading=True, plan="wrong")),
            ("lag 2", dict(lag=2), dict(heading=False, plan=None)),
            ("lag 2 + heading", dict(lag=2), dict(heading=True, plan=None)),
            ("lag 2 + heading + route", dict(lag=2), dict(heading=True, plan="true")),
        ]
        for k, (label, mk, kw) in enumerate(methods):
            h, tot, s = run_online(Matcher(g, **mk), traces, driver0=1000 * (k + 1), **kw)
            res[label] = (h / tot, s / tot * 1e3)
        h, tot, s = run_batched(Matcher(g), traces, heading=True, plan="true")
        res[f"online + heading + route, batches of {len(traces)} drivers"] = (h / tot, s / tot * 1e3)
        rows.append((name, n, res))
        print(f"# {name}: {len(traces)} drives, {n} fixes", file=sys.stderr, flush=True)

    base_label = "nearest road"
    print(f"\nnoise {args.noise:g} m per axis, heading noise {args.heading_noise:g} deg, seed {args.seed}, "
          f"{args.routes} drives per graph\n")
    labels = list(rows[0][2])
    print(f"| method | " + " | ".join(f"{name} ({n} fixes)" for name, n, _ in rows) + " | ms/fix (per graph) |")
    print("|---|" + "---|" * len(rows) + "---|")
    for lab in labels:
        cells = []
        for _name, _n, res in rows:
            acc = res[lab][0]
            ratio = acc / res[base_label][0]
            cells.append(f"{acc * 100:.1f} % (x{ratio:.2f})")
        ms = " / ".join(f"{res[lab][1]:.2f}" for _n, _c, res in rows)
        print(f"| {lab} | " + " | ".join(cells) + f" | {ms} |")
    print(f"\n(xN = accuracy / nearest-road accuracy in this run; load: {os.getloadavg()[0]:.2f})")


if __name__ == "__main__":
    main()
