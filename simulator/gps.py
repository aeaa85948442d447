"""An imperfect phone: what the platform sees of a true position.

Per fix: Gaussian error (`noise_m`, default 8 m, per axis), a reported accuracy that is
roughly honest; rarely a multipath jump of hundreds of metres that lasts a few fixes and
still claims good accuracy (that is what multipath does); tunnels — a dropout of tens of
seconds during which fixes are buffered, then sent as one burst; duplicates (a QoS 1
re-send); out-of-order pairs; and a small constant clock skew per phone.

Everything is drawn from the phone's own seeded generator, so the same seed gives the
same noise. Fix timestamps are the phone's clock: wall time + skew.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from simulator.city import offset


@dataclass
class PhoneModel:
    noise_m: float = 8.0  # 1-sigma horizontal error per axis
    multipath_p: float = 0.004  # chance per fix that a multipath episode starts
    multipath_m: tuple[float, float] = (150.0, 600.0)
    multipath_fixes: tuple[int, int] = (1, 4)
    tunnel_p: float = 0.002  # chance per fix (while driving) that a dropout starts
    tunnel_s: tuple[float, float] = (15.0, 60.0)
    duplicate_p: float = 0.01
    reorder_p: float = 0.01
    skew_s: float = 1.0  # 1-sigma of the phone's constant clock error

    @classmethod
    def perfect(cls) -> "PhoneModel":
        return cls(noise_m=0.0, multipath_p=0.0, tunnel_p=0.0, duplicate_p=0.0, reorder_p=0.0, skew_s=0.0)


@dataclass
class Fix:
    seq: int
    ts: float  # the phone's clock
    lat: float
    lng: float
    accuracy_m: float
    speed_mps: float
    heading_deg: float
    kind: str = "ok"  # ok | multipath (for the truth log; never sent)

    def payload(self, driver_id: int, sent_at: float) -> dict:
        return {"driver_id": driver_id, "seq": self.seq, "ts": round(self.ts, 3), "lat": round(self.lat, 7),
                "lng": round(self.lng, 7), "accuracy_m": round(self.accuracy_m, 1), "speed_mps": round(self.speed_mps, 2),
                "heading_deg": round(self.heading_deg, 1), "sent_at": round(sent_at, 4)}


@dataclass
class Phone:
    model: PhoneModel
    rng: np.random.Generator
    seq: int = 0
    skew: float = 0.0
    _multipath_left: int = 0
    _multipath_offset: tuple[float, float] = (0.0, 0.0)
    _tunnel_until: float = 0.0  # wall time
    buffer: list[Fix] = field(default_factory=list)
    _held: Fix | None = None  # a fix held back to be sent after the next one (out of order)
    counts: dict[str, int] = field(default_factory=lambda: {"multipath": 0, "tunnel": 0, "duplicate": 0, "reordered": 0})

    def __post_init__(self) -> None:
        self.skew = float(self.rng.normal(0.0, self.model.skew_s)) if self.model.skew_s else 0.0

    def in_tunnel(self, wall: float) -> bool:
        return wall < self._tunnel_until

    def peek(self, lat: float, lng: float) -> Fix:
        """A fix of the true position as the app would attach it to a scan (noise, no seq, no side effects)."""
        m, r = self.model, self.rng
        n_err, e_err = (r.normal(0, m.noise_m), r.normal(0, m.noise_m)) if m.noise_m else (0.0, 0.0)
        if self._multipath_left:
            n_err += self._multipath_offset[0]
            e_err += self._multipath_offset[1]
        olat, olng = offset(lat, lng, n_err, e_err)
        return Fix(0, 0.0, olat, olng, max(3.0, m.noise_m * 1.5) if m.noise_m else 5.0, 0.0, 0.0)

    def observe(self, wall: float, lat: float, lng: float, speed: float, heading: float, *, moving: bool) -> list[Fix]:
        """The fixes to send now for a true position (possibly none, possibly a burst)."""
        m, r = self.model, self.rng
        # As the driver app does: max(last + 1, wall-clock ms) — increasing, and unique per driver
        # across runs that reuse saved accounts (a seq restarting at 1 collided with the previous
        # run's history: 81,825 fixes of a warm 1,000-driver run were refused as duplicates).
        self.seq = max(self.seq + 1, int(wall * 1000))
        kind = "ok"
        if self._multipath_left == 0 and m.multipath_p and r.random() < m.multipath_p:
            self._multipath_left = int(r.integers(m.multipath_fixes[0], m.multipath_fixes[1] + 1))
            d, a = r.uniform(*m.multipath_m), r.uniform(0, 2 * math.pi)
            self._multipath_offset = (d * math.cos(a), d * math.sin(a))
            self.counts["multipath"] += 1
        n_err, e_err = (r.normal(0, m.noise_m), r.normal(0, m.noise_m)) if m.noise_m else (0.0, 0.0)
        acc = max(3.0, m.noise_m * 1.5 * r.uniform(0.8, 1.3)) if m.noise_m else 5.0
        if self._multipath_left:
            self._multipath_left -= 1
            n_err += self._multipath_offset[0]
            e_err += self._multipath_offset[1]
            kind = "multipath"
        olat, olng = offset(lat, lng, n_err, e_err)
        fix = Fix(self.seq, wall + self.skew, olat, olng, acc, max(0.0, speed + (r.normal(0, 0.5) if m.noise_m else 0.0)),
                  heading, kind)
        if moving and not self.in_tunnel(wall) and m.tunnel_p and r.random() < m.tunnel_p:
            self._tunnel_until = wall + r.uniform(*m.tunnel_s)
            self.counts["tunnel"] += 1
        if self.in_tunnel(wall):
            self.buffer.append(fix)
            return []
        out = self.buffer + [fix]  # out of the tunnel: the burst, oldest first
        self.buffer = []
        if self._held is not None:
            out.append(self._held)  # sent after a newer fix: out of order
            self._held = None
        elif len(out) == 1 and m.reorder_p and r.random() < m.reorder_p:
            self._held = out.pop()
            self.counts["reordered"] += 1
        if out and m.duplicate_p and r.random() < m.duplicate_p:
            out.append(out[-1])
            self.counts["duplicate"] += 1
        return out
