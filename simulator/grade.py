"""The grade: what the platform did against what really happened — in the terminal and as an HTML page with plots.

Numbers come from three sources kept apart on purpose: the ground truth (simulator.truth:
true arrivals, deliveries, km), what the simulator observed through public interfaces
(task lists with ETAs, the fleet board, tracking sockets, scan answers), and what the
platform reports at the end (job states, stored and refused fixes, KPIs).
The HTML is one file: plots are PNGs (matplotlib, Agg) embedded as data URIs, no CDN.
"""

from __future__ import annotations

import base64
import html
import io
import json
from collections import Counter
from pathlib import Path

import numpy as np

from simulator import truth as truth_mod

HORIZONS_MIN = (5, 15, 30)
TERMINAL_OK = ("delivered",)
TERMINAL_FAILED = ("returned", "cancelled")  # "failed" awaits a re-attempt or its return: still open


def pct(values, q) -> float | None:
    return float(np.percentile(values, q)) if len(values) else None


def compute(result) -> dict:
    m, placed, records = result.metrics, result.placed, result.truth
    ok = [p for p in placed if not p.error]
    states = Counter(p.final_state or "unknown" for p in ok)
    delivered = states.get("delivered", 0)
    failed = sum(states.get(s, 0) for s in TERMINAL_FAILED)
    lost = states.get("unknown", 0)
    open_ = len(ok) - delivered - failed - lost
    # Open orders whose promised window had not even started when the run ended (the shop offers
    # fixed local windows after a cut-off, often hours ahead): not late, just not due yet.
    end = getattr(result, "end_wall", 0.0) or 0.0
    not_due = sum(1 for p in ok if p.final_state not in ("delivered", *TERMINAL_FAILED, None, "unknown")
                  and p.window_start_wall is not None and end and p.window_start_wall > end)
    # On time: the true delivery instant against the promised window (orders whose job we know).
    window_end = {p.job_id: p.order.window_end_s for p in ok if p.job_id}
    delivered_at = {r["job"]: r["t"] for r in records if r["k"] == "delivered"}
    judged = [j for j in delivered_at if j in window_end]
    on_time = sum(1 for j in judged if delivered_at[j] <= window_end[j])
    km = sum(r["m"] for r in records if r["k"] == "drive") / 1000.0
    # ETA error by horizon: the latest prediction known h minutes before the true arrival.
    eta: dict[int, list[float]] = {h: [] for h in HORIZONS_MIN}
    for job, arrived in m.arrivals.items():
        obs = sorted(m.eta_obs.get(job, ()))
        for h in HORIZONS_MIN:
            before = [pred for t_seen, pred in obs if t_seen <= arrived - h * 60]
            if before:
                eta[h].append(before[-1] - arrived)
    eta_out = {}
    for h, errs in eta.items():
        a = np.abs(errs) if errs else np.array([])
        eta_out[h] = {"n": len(errs), "p50_abs_s": pct(a, 50), "p90_abs_s": pct(a, 90), "median_signed_s": pct(errs, 50)}
    rejected = Counter(result.platform.get("fixes_rejected") or {})
    for k, v in m.rejected_sync.items():  # synchronous answers (WS, HTTP batch) where the platform endpoint had none
        rejected[k] = max(rejected[k], v)
    lat = np.array(m.latencies_s) * 1000 if m.latencies_s else np.array([])
    churn = [p["churn"] for p in m.plans if p.get("churn") is not None]
    versions = [p["version"] for p in m.plans]
    return {
        "orders": {"book": len(placed), "placed": len(ok), "not_placed": len(placed) - len(ok), "delivered": delivered,
                   "failed_explicitly": failed, "open": open_, "open_not_due_yet": not_due, "lost": lost, "by_state": dict(states),
                   "by_channel": dict(Counter(p.channel for p in ok)),
                   # shop orders whose order.paid never became a dispatch job (no job with the order number as reference)
                   "shop_orders_without_job": sum(1 for p in ok if p.channel == "commerce" and p.order_number
                                                  and p.order_number not in result.jobs_by_reference)},
        "on_time": {"judged": len(judged), "on_time": on_time, "pct": round(100 * on_time / len(judged), 1) if judged else None},
        "km_driven": round(km, 2),
        "eta_error": eta_out,
        "geofence": {"arrived_signals": m.geofence_checks, "false_triggers": m.geofence_false,
                     "scans_outside_at_true_door": m.counters.get("scan.delivery.outside_geofence_at_true_door", 0)},
        "fixes": {"sent": m.fixes_sent, "messages": m.sends, "stored": result.platform.get("fixes_stored"),
                  "accepted_sync": m.accepted_sync, "rejected": dict(rejected),
                  "send_errors": m.counters.get("fixes.send_error", 0)},
        "ingest_latency_ms": {"n": int(len(lat)), "p50": pct(lat, 50), "p99": pct(lat, 99), "what": "publish -> fleet board frame"},
        "planner": {"plans_seen": len(m.plans), "versions": [min(versions), max(versions)] if versions else None,
                    "churn_mean": float(np.mean(churn)) if churn else None, "churn_max": float(np.max(churn)) if churn else None,
                    "task_lists_received": m.task_lists},
        "watchers": {"opened": m.counters.get("watch.opened", 0), "messages": m.watch_msgs, "status": dict(m.watch_status)},
        "simulator_cpu": result.cpu,
        "scale": {k: v for k, v in m.scale.items() if k != "drive_start_wall"},
        "wall_s": round(result.wall_s, 1),
        "kpis": result.platform.get("kpis"),
        "counters": dict(m.counters),
    }


def _f(x, spec=".0f", unit="") -> str:
    return "—" if x is None else f"{x:{spec}}{unit}"


def terminal(g: dict) -> str:
    o, f, lat, pl = g["orders"], g["fixes"], g["ingest_latency_ms"], g["planner"]
    lines = [
        "── Serena simulation grade ──────────────────────────────────────",
        f"orders      placed {o['placed']} (of {o['book']}; {o['not_placed']} refused)  delivered {o['delivered']}  "
        f"failed {o['failed_explicitly']}  open {o['open']}"
        + (f" ({o['open_not_due_yet']} with a window starting after the run)" if o.get("open_not_due_yet") else "")
        + f"  lost {o['lost']}"
        + (f"  (shop orders that never became a delivery: {o['shop_orders_without_job']})" if o["shop_orders_without_job"] else ""),
        f"on time     {_f(g['on_time']['pct'], '.1f', ' %')} of {g['on_time']['judged']} delivered   km driven {g['km_driven']:.1f}",
    ]
    for h, e in g["eta_error"].items():
        lines.append(f"ETA error   {h:>2} min before arrival: P50 {_f(e['p50_abs_s'], '.0f', ' s')}  P90 "
                     f"{_f(e['p90_abs_s'], '.0f', ' s')}  (median signed {_f(e['median_signed_s'], '+.0f', ' s')}, n={e['n']})")
    gf = g["geofence"]
    lines += [
        f"geofence    false 'arrived' {gf['false_triggers']} of {gf['arrived_signals']}   delivery scans outside the "
        f"fence at the true door {gf['scans_outside_at_true_door']}",
        f"fixes       sent {f['sent']} ({f['messages']} messages)  stored {_f(f['stored'], 'd')}  rejected "
        + (", ".join(f"{k} {v}" for k, v in sorted(f["rejected"].items())) or "none"),
        f"ingest      latency P50 {_f(lat['p50'], '.0f', ' ms')}  P99 {_f(lat['p99'], '.0f', ' ms')}  ({lat['what']}, n={lat['n']})",
        f"planner     plans seen {pl['plans_seen']}  versions {pl['versions']}  churn mean "
        f"{_f(None if pl['churn_mean'] is None else 100 * pl['churn_mean'], '.1f', ' %')}  task lists {pl['task_lists_received']}",
        f"watchers    {g['watchers']['opened']} tracking sockets, {g['watchers']['messages']} updates {g['watchers']['status']}",
        _scale_line(g.get("scale") or {}),
        f"simulator   {g['simulator_cpu'].get('cores_used', 0):.2f} cores on average over {g['wall_s']:.0f} s "
        f"(driving phase {g['simulator_cpu'].get('drive_phase', 0):.2f} cores)",
    ]
    return "\n".join(lines)


def _scale_line(sc: dict) -> str:
    w = sc.get("steady_window") or {}
    made = "accounts reused (saved sessions)" if sc.get("reused_accounts") else \
        f"drivers created in {_f(sc.get('create_s'), '.1f', ' s')}"
    line = (f"bootstrap   {made}, {sc.get('signed_in', 0)} signed in "
            f"(last at +{_f(sc.get('last_sign_in_s'), '.1f', ' s')}), {sc.get('streaming', 0)} streaming "
            f"(all by +{_f(sc.get('all_streaming_s'), '.1f', ' s')})")
    if w:
        line += (f"\nsteady      {w['length_s']} s from +{w['start_s']:.0f} s: sent {w['sent']} ({w['sent_per_s']:.1f}/s), "
                 f"stored {w['stored']} ({w['stored_per_s']:.1f}/s)")
    return line


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def plots(result, g: dict) -> dict[str, str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = {}
    tl = result.metrics.timeline
    if tl:
        fig, ax = plt.subplots(figsize=(7, 3))
        t = [x["t"] / 60 for x in tl]
        ax.plot(t, [x["placed"] for x in tl], label="orders placed")
        ax.plot(t, [x["delivered"] for x in tl], label="delivered")
        ax.plot(t, [x["moving"] for x in tl], label="vans moving", alpha=0.6)
        ax.set_xlabel("simulated minutes")
        ax.legend()
        ax.set_title("Orders and vans over time")
        out["timeline"] = _png(fig)
    errs = {h: [] for h in HORIZONS_MIN}
    m = result.metrics
    for job, arrived in m.arrivals.items():
        obs = sorted(m.eta_obs.get(job, ()))
        for h in HORIZONS_MIN:
            before = [p for ts, p in obs if ts <= arrived - h * 60]
            if before:
                errs[h].append((before[-1] - arrived) / 60)
    if any(errs.values()):
        fig, ax = plt.subplots(figsize=(7, 3))
        ax.boxplot([errs[h] or [np.nan] for h in HORIZONS_MIN], tick_labels=[f"{h} min" for h in HORIZONS_MIN])
        ax.axhline(0, color="grey", lw=0.5)
        ax.set_ylabel("predicted − true arrival (min)")
        ax.set_title("ETA error by horizon")
        out["eta"] = _png(fig)
    if m.latencies_s:
        fig, ax = plt.subplots(figsize=(7, 3))
        ax.hist(np.array(m.latencies_s) * 1000, bins=50)
        ax.set_xlabel("ms from publish to the fleet board")
        ax.set_title("Ingest latency")
        out["latency"] = _png(fig)
    rej = g["fixes"]["rejected"]
    if rej:
        fig, ax = plt.subplots(figsize=(7, 2.5))
        ax.barh(list(rej.keys()), list(rej.values()))
        ax.set_title("Fixes refused by reason")
        out["rejected"] = _png(fig)
    if result.out_dir is not None and (result.out_dir / "truth.jsonl.gz").exists():
        recs = truth_mod.read(result.out_dir / "truth.jsonl.gz")
        tracks: dict[int, list] = {}
        for r in recs:
            if r["k"] == "pos":
                tracks.setdefault(r["d"], []).append((r["lng"], r["lat"]))
        fig, ax = plt.subplots(figsize=(6, 6))
        for pts in list(tracks.values())[:200]:
            a = np.array(pts)
            ax.plot(a[:, 0], a[:, 1], lw=0.6, alpha=0.6)
        drops = np.array([(r["lng"], r["lat"]) for r in recs if r["k"] == "order"]) if any(r["k"] == "order" for r in recs) else None
        if drops is not None:
            ax.scatter(drops[:, 0], drops[:, 1], s=8, c="k", label="drop-offs")
            ax.legend()
        ax.set_aspect(1 / np.cos(np.radians(np.mean(ax.get_ylim()))))
        ax.set_title("True tracks")
        out["map"] = _png(fig)
    return out


def write_html(result, g: dict, path: Path) -> Path:
    imgs = plots(result, g)
    rows = "".join(f"<tr><th>{html.escape(k)}</th><td><pre>{html.escape(json.dumps(v, indent=1, default=str))}</pre></td></tr>"
                   for k, v in g.items() if k != "counters")
    body = "".join(f'<figure><img src="{src}" alt="{k}"></figure>' for k, src in imgs.items())
    doc = f"""<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Serena simulation grade</title>
<style>body{{font:14px system-ui,sans-serif;margin:2em;max-width:1100px}}table{{border-collapse:collapse}}
th,td{{border-bottom:1px solid #ddd;padding:4px 8px;text-align:left;vertical-align:top}}pre{{margin:0}}
figure{{display:inline-block;margin:8px}}</style></head><body>
<h1>Serena simulation grade</h1><pre>{html.escape(terminal(g))}</pre>{body}
<h2>Figures</h2><table>{rows}</table>
<h2>Configuration</h2><pre>{html.escape(json.dumps(result.config, indent=1, default=str))}</pre></body></html>"""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(doc)
    return path


def write_all(result) -> tuple[dict, Path]:
    g = compute(result)
    out = result.out_dir
    out.mkdir(parents=True, exist_ok=True)
    (out / "grade.json").write_text(json.dumps(g, indent=1, default=str))
    return g, write_html(result, g, out / "report.html")
