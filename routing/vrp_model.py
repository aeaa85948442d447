"""Plain data for the vehicle-routing engine: what a problem and a plan look like.

These dataclasses are the whole contract between the dispatch planner and the
solver. They carry no solver types, so a notebook, a test or the planner can build a
`Problem` from numpy matrices (from `routing.matrix` or anywhere else) and read a
`Solution` back without knowing which search engine produced it. Locations are plain
row/column indices into the problem's matrices, so the VRP never depends on the road
graph. Times are seconds on any clock the caller likes (seconds since midnight, since
the epoch, or Solomon's abstract units); distances are metres or any unit the matrices
use: the engine only adds and compares them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

INF = math.inf

StopKind = Literal["pickup", "delivery"]


class ProblemError(ValueError):
    """The problem or a solve request is malformed (shapes, ids, zero vehicles, limits)."""


@dataclass(frozen=True, slots=True)
class Stop:
    """A place where a job is served: a matrix index, a service time and a time window.

    `time_window_s` bounds the *start* of service, as in Solomon and VRPLIB: a vehicle
    may arrive early and wait, but never start after `time_window_s[1]`.
    """

    location: int
    service_s: float = 0.0
    time_window_s: tuple[float, float] = (0.0, INF)


@dataclass(frozen=True, slots=True)
class Job:
    """A unit of work: a delivery, a pickup, or a pickup-and-delivery pair.

    - delivery only: the goods are on the vehicle from the start of its route;
    - pickup only: the goods stay on the vehicle to the end of its route;
    - both: picked up and delivered by the same vehicle, pickup first.

    `amount` has one entry per capacity dimension (e.g. weight_kg, volume_m3, parcels).
    `skills` must all be held by the vehicle; `vehicles`, when given, restricts the job
    to those vehicle ids (the planner uses it for "already on board of van 7").
    `priority`: when not everything fits, higher-priority jobs are kept first.
    """

    id: str
    delivery: Stop | None = None
    pickup: Stop | None = None
    amount: tuple[float, ...] = ()
    skills: frozenset[str] = frozenset()
    vehicles: frozenset[str] | None = None
    priority: int = 0

    @property
    def kind(self) -> Literal["delivery", "pickup", "pair"]:
        if self.pickup is not None and self.delivery is not None:
            return "pair"
        return "pickup" if self.pickup is not None else "delivery"

    def stops(self) -> list[tuple[StopKind, Stop]]:
        """The job's stops in the order they must be served."""
        out: list[tuple[StopKind, Stop]] = []
        if self.pickup is not None:
            out.append(("pickup", self.pickup))
        if self.delivery is not None:
            out.append(("delivery", self.delivery))
        return out


@dataclass(frozen=True, slots=True)
class Break:
    """A driver break: `duration_s` long, starting in [earliest_start_s, latest_start_s].

    A break is taken while the vehicle is travelling or waiting, never during a
    service. A route that is over before `latest_start_s` needs no break.
    """

    id: str
    earliest_start_s: float
    latest_start_s: float
    duration_s: float


@dataclass(frozen=True, slots=True)
class StopRef:
    """One stop of one job, as used in fixed prefixes."""

    job_id: str
    kind: StopKind = "delivery"


@dataclass(frozen=True, slots=True)
class Vehicle:
    """A vehicle and its driver's shift.

    `start_location` is a depot or the vehicle's current position; `end_location=None`
    makes an open route that ends at its last stop. `shift_s` bounds the route's start
    and end; `max_duration_s` bounds end minus start. `fixed_prefix` lists stops that
    are already started or committed: they stay first on this vehicle, in this order,
    whatever the search finds. `initial_load` is on board from the start and stays to
    the end (e.g. returns already collected).
    """

    id: str
    start_location: int
    end_location: int | None = None
    capacity: tuple[float, ...] = ()
    shift_s: tuple[float, float] = (0.0, INF)
    max_duration_s: float = INF
    skills: frozenset[str] = frozenset()
    breaks: tuple[Break, ...] = ()
    fixed_prefix: tuple[StopRef, ...] = ()
    initial_load: tuple[float, ...] = ()


@dataclass(slots=True)
class Problem:
    """Matrices plus the fleet and the jobs. `duration_s[i, j]` is travel time i→j.

    `wait_cost`: what one second until a stop is served costs, in metres of driving; the
    objective then adds `wait_cost` × the sum of service starts over all stops. 0 (the
    default) is the classic distance-only VRP (the benchmarks' objective). Dispatch sets it:
    distance alone made one van with a long queue look cheaper than an idle van next door.
    """

    duration_s: np.ndarray
    distance_m: np.ndarray
    vehicles: list[Vehicle]
    jobs: list[Job]
    name: str = ""
    wait_cost: float = 0.0

    @property
    def n_dims(self) -> int:
        """Number of capacity dimensions (0 when nothing has a capacity)."""
        sizes = [len(j.amount) for j in self.jobs] + [len(v.capacity) for v in self.vehicles]
        return max(sizes, default=0)

    def job_index(self) -> dict[str, int]:
        return {job.id: i for i, job in enumerate(self.jobs)}


@dataclass(slots=True)
class Visit:
    """One served stop in a route, with its schedule and the load on board after it."""

    job_id: str
    kind: StopKind
    location: int
    arrival_s: float
    start_s: float  # service start: max(arrival, window start)
    departure_s: float
    load_after: tuple[float, ...] = ()
    fixed: bool = False  # part of the vehicle's fixed prefix


@dataclass(slots=True)
class BreakVisit:
    """When a break was scheduled: between `after_visit` and the next visit (-1: before the first)."""

    break_id: str
    start_s: float
    after_visit: int


@dataclass(slots=True)
class Route:
    vehicle_id: str
    visits: list[Visit]
    start_s: float
    end_s: float
    distance_m: float
    breaks: list[BreakVisit] = field(default_factory=list)

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s


@dataclass(frozen=True, slots=True)
class Unassigned:
    """A job the plan does not serve, and why (never silently dropped)."""

    job_id: str
    reason: str


@dataclass(slots=True)
class Solution:
    """A plan: one route per used vehicle, unassigned jobs with reasons, and measures.

    `objective` is the total distance (what the search minimises); `churn` is the share
    of jobs planned both before and now whose vehicle changed, or None without a
    previous plan; `engine` names the search that produced the routes.
    """

    routes: list[Route]
    unassigned: list[Unassigned]
    distance_m: float
    objective: float
    wall_time_s: float = 0.0
    churn: float | None = None
    engine: str = ""

    @property
    def feasible(self) -> bool:
        """True when every job is served (each route is feasible by construction)."""
        return not self.unassigned

    @property
    def vehicles_used(self) -> int:
        return sum(1 for r in self.routes if r.visits)

    def vehicle_of(self) -> dict[str, str]:
        """job id -> vehicle id, for every served job."""
        return {v.job_id: r.vehicle_id for r in self.routes for v in r.visits}
