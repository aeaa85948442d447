"""What the simulation measured while it ran (the grade turns it into a report)."""

from __future__ import annotations

import time
from collections import Counter, OrderedDict
from dataclasses import dataclass, field

import httpx


@dataclass
class Metrics:
    counters: Counter = field(default_factory=Counter)
    fixes_sent: int = 0  # unique (driver, seq) sent
    sends: int = 0  # messages including duplicates
    _seen: set = field(default_factory=set)
    _sent_at: OrderedDict = field(default_factory=OrderedDict)  # (driver, ts) -> wall time sent, for latency
    latencies_s: list[float] = field(default_factory=list)  # publish -> seen on the fleet board
    accepted_sync: int = 0  # from WS replies and HTTP batch answers
    rejected_sync: Counter = field(default_factory=Counter)
    eta_obs: dict[str, list[tuple[float, float]]] = field(default_factory=dict)  # job -> [(sim t seen, predicted arrival sim t)]
    arrivals: dict[str, float] = field(default_factory=dict)  # job -> first true arrival at the door (sim t)
    plans: list[dict] = field(default_factory=list)  # [{t, version, churn, reason, solve_ms}]
    task_lists: int = 0
    mqtt_reconnects: int = 0
    watch_msgs: int = 0
    watch_status: Counter = field(default_factory=Counter)
    geofence_checks: int = 0
    geofence_false: int = 0
    timeline: list[dict] = field(default_factory=list)  # periodic samples for the plots
    first_sent: dict[int, float] = field(default_factory=dict)  # driver -> wall time its first fix went out
    sent_by_s: Counter = field(default_factory=Counter)  # unique fixes sent by their timestamp's whole second
    scale: dict = field(default_factory=dict)  # bootstrap and steady-window figures (run.py fills it)

    def count(self, key: str, n: int = 1) -> None:
        self.counters[key] += n

    def on_sent(self, driver_id: int, p: dict) -> None:
        self.sends += 1
        key = (driver_id, p["seq"])
        if key not in self._seen:
            self._seen.add(key)
            self.fixes_sent += 1
            self.sent_by_s[int(p["ts"])] += 1
            if driver_id not in self.first_sent:
                self.first_sent[driver_id] = p["sent_at"]
        self._sent_at[(driver_id, round(float(p["ts"]), 1))] = p["sent_at"]
        if len(self._sent_at) > 200_000:
            self._sent_at.popitem(last=False)

    def on_board_position(self, driver_id: int, ts: float, now: float | None = None) -> None:
        sent = self._sent_at.pop((driver_id, round(float(ts), 1)), None)
        if sent is not None:
            self.latencies_s.append((now or time.time()) - sent)

    def on_batch(self, r: httpx.Response) -> None:
        self.count(f"http_batch.{r.status_code}")
        if r.status_code == 200:
            body = r.json()
            self.accepted_sync += int(body.get("accepted", 0))
            for reason, n in (body.get("rejected") or {}).items():
                self.rejected_sync[reason] += int(n)

    def on_ws_reply(self, reply: dict) -> None:
        self.accepted_sync += len(reply.get("accepted", ()))
        if reply.get("duplicates"):
            self.rejected_sync["duplicate"] += len(reply["duplicates"])
        for r in reply.get("rejected", ()):
            self.rejected_sync[str(r.get("reason"))] += 1
