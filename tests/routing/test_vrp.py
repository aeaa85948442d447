"""The VRP engine on small synthetic problems: every constraint, checked independently."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from routing import vrp
from routing.vrp import Break, Job, Problem, ProblemError, Stop, StopRef, Vehicle
from routing.vrp_model import Route, Solution, Visit
from tests.routing.vrp_factories import plane, random_problem

LIMIT_S = 0.5  # short, yet enough on a 2-core machine shared with a dozen processes
ENGINES = ["auto", "ortools"]


def solved(problem: Problem, engine: str = "auto", **kwargs) -> Solution:
    solution = vrp.solve(problem, time_limit_s=LIMIT_S, engine=engine, **kwargs)
    assert vrp.check(problem, solution) == []
    return solution


@pytest.mark.parametrize("engine", ENGINES)
def test_multi_dimensional_capacity_and_time_windows_are_respected(engine):
    problem = random_problem(n_jobs=25, n_vehicles=8, seed=1)
    solution = solved(problem, engine)
    assert solution.feasible
    for route in solution.routes:
        for visit in route.visits:
            assert all(x <= 10.0 + 1e-9 for x in visit.load_after)


@pytest.mark.parametrize("engine", ENGINES)
def test_pickup_and_delivery_pairs_ride_the_same_vehicle_pickup_first(engine):
    rng = np.random.default_rng(3)
    pts = [(0.0, 0.0)] + [tuple(rng.uniform(0, 100, 2)) for _ in range(16)]
    dur, dist = plane(pts)
    jobs = [
        Job(id=f"p{k}", pickup=Stop(location=2 * k + 1, service_s=2), delivery=Stop(location=2 * k + 2, service_s=2), amount=(4.0,))
        for k in range(8)
    ]
    vehicles = [Vehicle(id=f"v{k}", start_location=0, end_location=0, capacity=(8.0,)) for k in range(3)]
    problem = Problem(dur, dist, vehicles, jobs)
    solution = solved(problem, engine)
    assert solution.feasible
    for route in solution.routes:
        kinds = [(v.job_id, v.kind) for v in route.visits]
        for job in jobs:
            if (job.id, "pickup") in kinds:
                assert kinds.index((job.id, "pickup")) < kinds.index((job.id, "delivery"))


@pytest.mark.parametrize("engine", ENGINES)
def test_deliveries_and_pickups_share_a_vehicle_without_overloading_it(engine):
    # Deliveries leave the depot on board; pickups stay to the end. Capacity 6 with
    # three deliveries of 2 and three pickups of 2: every pickup must wait until
    # enough has been delivered.
    pts = [(0.0, 0.0), (10, 0), (20, 0), (30, 0), (11, 0), (21, 0), (31, 0)]
    dur, dist = plane(pts)
    jobs = [Job(id=f"d{i}", delivery=Stop(location=i), amount=(2.0,)) for i in (1, 2, 3)]
    jobs += [Job(id=f"u{i}", pickup=Stop(location=i), amount=(2.0,)) for i in (4, 5, 6)]
    problem = Problem(dur, dist, [Vehicle(id="v", start_location=0, end_location=0, capacity=(6.0,))], jobs)
    solution = solved(problem, engine)
    assert solution.feasible


@pytest.mark.parametrize("engine", ENGINES)
def test_skills_and_vehicle_restrictions_decide_who_serves(engine):
    problem = random_problem(n_jobs=12, n_vehicles=3, seed=4, windows=False, capacity=(20.0, 20.0, 20.0))
    vehicles = [dataclasses.replace(v, skills=frozenset({"fridge"}) if v.id == "v1" else frozenset()) for v in problem.vehicles]
    jobs = [
        dataclasses.replace(j, skills=frozenset({"fridge"})) if i % 3 == 0 else
        dataclasses.replace(j, vehicles=frozenset({"v2"})) if i % 3 == 1 else j
        for i, j in enumerate(problem.jobs)
    ]
    problem = dataclasses.replace(problem, vehicles=vehicles, jobs=jobs)
    solution = solved(problem, engine)
    owner = solution.vehicle_of()
    for i, job in enumerate(jobs):
        if i % 3 == 0:
            assert owner[job.id] == "v1"
        elif i % 3 == 1:
            assert owner[job.id] == "v2"


@pytest.mark.parametrize("engine", ENGINES)
def test_open_routes_from_current_positions_and_several_depots(engine):
    problem = random_problem(n_jobs=15, n_vehicles=3, seed=5, windows=False)
    vehicles = [
        dataclasses.replace(problem.vehicles[0], start_location=3, end_location=None),
        dataclasses.replace(problem.vehicles[1], start_location=7, end_location=None),
        dataclasses.replace(problem.vehicles[2], start_location=0, end_location=9),
    ]
    problem = dataclasses.replace(problem, vehicles=vehicles)
    solution = solved(problem, engine)
    assert solution.feasible
    for route in solution.routes:
        if route.vehicle_id in ("v0", "v1"):
            assert route.end_s == pytest.approx(route.visits[-1].departure_s)


@pytest.mark.parametrize("engine", ENGINES)
def test_shift_and_maximum_route_duration_hold(engine):
    problem = random_problem(n_jobs=20, n_vehicles=6, seed=6, windows=False, shift_s=(100.0, 600.0), max_duration_s=300.0)
    solution = solved(problem, engine)
    for route in solution.routes:
        assert route.start_s >= 100.0 - 1e-6
        assert route.end_s <= 600.0 + 1e-6
        assert route.duration_s <= 300.0 + 1e-6


@pytest.mark.parametrize("engine", ["auto", "ortools", "hybrid"])
def test_breaks_are_taken_inside_their_window_and_not_during_service(engine):
    problem = random_problem(n_jobs=15, n_vehicles=3, seed=7, windows=False, capacity=(50.0,))
    brk = Break(id="lunch", earliest_start_s=100.0, latest_start_s=150.0, duration_s=60.0)
    problem = dataclasses.replace(problem, vehicles=[dataclasses.replace(v, breaks=(brk,)) for v in problem.vehicles])
    solution = solved(problem, engine)
    assert solution.feasible
    for route in solution.routes:
        if route.end_s > 150.0:
            assert [b.break_id for b in route.breaks] == ["lunch"]
            assert 100.0 - 1e-6 <= route.breaks[0].start_s <= 150.0 + 1e-6


def test_the_pyvrp_engine_refuses_breaks_with_a_clear_error():
    problem = random_problem(n_jobs=3, n_vehicles=1, seed=7, windows=False)
    brk = Break(id="lunch", earliest_start_s=10.0, latest_start_s=20.0, duration_s=5.0)
    problem = dataclasses.replace(problem, vehicles=[dataclasses.replace(problem.vehicles[0], breaks=(brk,))])
    with pytest.raises(ProblemError, match="breaks"):
        vrp.solve(problem, time_limit_s=LIMIT_S, engine="pyvrp")


@pytest.mark.parametrize("engine", ENGINES)
def test_fixed_prefixes_stay_first_and_in_order(engine):
    problem = random_problem(n_jobs=15, n_vehicles=3, seed=8, windows=False)
    prefix = (StopRef("j9"), StopRef("j2"))
    vehicles = [dataclasses.replace(problem.vehicles[1], fixed_prefix=prefix), problem.vehicles[0], problem.vehicles[2]]
    problem = dataclasses.replace(problem, vehicles=vehicles)
    solution = solved(problem, engine)
    route = next(r for r in solution.routes if r.vehicle_id == "v1")
    assert [v.job_id for v in route.visits[:2]] == ["j9", "j2"]
    assert all(v.fixed for v in route.visits[:2]) and not any(v.fixed for v in route.visits[2:])


def test_a_half_done_pair_is_delivered_by_the_vehicle_that_picked_it_up():
    pts = [(0.0, 0.0), (10, 0), (50, 50), (12, 0), (0, 5)]
    dur, dist = plane(pts)
    jobs = [
        Job(id="pair", pickup=Stop(location=1), delivery=Stop(location=2), amount=(3.0,)),
        Job(id="d", delivery=Stop(location=3), amount=(1.0,)),
    ]
    vehicles = [
        Vehicle(id="a", start_location=0, end_location=None, capacity=(5.0,), fixed_prefix=(StopRef("pair", "pickup"),)),
        Vehicle(id="b", start_location=4, end_location=None, capacity=(5.0,)),
    ]
    problem = Problem(dur, dist, vehicles, jobs)
    solution = solved(problem)
    assert solution.vehicle_of()["pair"] == "a"


def test_priorities_decide_what_is_left_out_when_the_fleet_is_full():
    problem = random_problem(n_jobs=6, n_vehicles=1, seed=9, windows=False, capacity=(5.0,))
    jobs = [dataclasses.replace(j, amount=(2.0,), priority=5 if j.id == "j6" else 0) for j in problem.jobs]
    problem = dataclasses.replace(problem, jobs=jobs)
    solution = solved(problem)
    assert "j6" in solution.vehicle_of()
    assert len(solution.unassigned) == 4
    assert all(u.reason == vrp.REASON_NO_ROOM for u in solution.unassigned)


def test_impossible_jobs_come_back_unassigned_with_their_reason():
    problem = random_problem(n_jobs=8, n_vehicles=2, seed=10, windows=False, shift_s=(0.0, 1000.0))
    far = problem.duration_s.shape[0] - 1
    bad = {
        "j1": dict(delivery=Stop(location=1, time_window_s=(50.0, 10.0))),
        "j2": dict(delivery=Stop(location=2, time_window_s=(0.0, 1e-3))),
        "j3": dict(skills=frozenset({"crane"})),
        "j4": dict(amount=(99.0, 1.0, 1.0)),
        "j5": dict(vehicles=frozenset({"ghost"})),
        "j6": dict(delivery=Stop(location=far, service_s=5000.0)),
    }
    jobs = [dataclasses.replace(j, **bad.get(j.id, {})) for j in problem.jobs]
    problem = dataclasses.replace(problem, jobs=jobs)
    solution = solved(problem)
    reasons = {u.job_id: u.reason for u in solution.unassigned}
    assert "ends before it starts" in reasons["j1"]
    assert "closes before any compatible vehicle" in reasons["j2"]
    assert "skills" in reasons["j3"] and "crane" in reasons["j3"]
    assert "exceeds the free capacity" in reasons["j4"]
    assert "ghost" in reasons["j5"]
    assert "shift" in reasons["j6"]
    assert set(solution.vehicle_of()) == {"j7", "j8"}


def test_zero_vehicles_and_non_positive_time_limits_are_clear_errors():
    problem = random_problem(n_jobs=3, n_vehicles=1)
    with pytest.raises(ProblemError, match="no vehicles"):
        vrp.solve(dataclasses.replace(problem, vehicles=[]), time_limit_s=1.0)
    for limit in (0, -1.0, math.nan, math.inf):
        with pytest.raises(ProblemError, match="time limit"):
            vrp.solve(problem, time_limit_s=limit)


def test_malformed_problems_are_rejected_with_a_message():
    problem = random_problem(n_jobs=3, n_vehicles=1)
    with pytest.raises(ProblemError, match="square"):
        vrp.solve(dataclasses.replace(problem, duration_s=problem.duration_s[:2]), time_limit_s=1.0)
    with pytest.raises(ProblemError, match="duplicate job"):
        vrp.solve(dataclasses.replace(problem, jobs=problem.jobs + problem.jobs[:1]), time_limit_s=1.0)
    with pytest.raises(ProblemError, match="matrix index"):
        bad = dataclasses.replace(problem.jobs[0], delivery=Stop(location=99))
        vrp.solve(dataclasses.replace(problem, jobs=[bad]), time_limit_s=1.0)
    with pytest.raises(ProblemError, match="unknown job"):
        v = dataclasses.replace(problem.vehicles[0], fixed_prefix=(StopRef("nope"),))
        vrp.solve(dataclasses.replace(problem, vehicles=[v]), time_limit_s=1.0)


def test_a_solve_with_nothing_to_do_returns_an_empty_plan():
    problem = dataclasses.replace(random_problem(n_jobs=3, n_vehicles=2), jobs=[])
    solution = vrp.solve(problem, time_limit_s=0.1)
    assert solution.routes == [] and solution.unassigned == [] and solution.feasible


# ---------------------------------------------------------------- the checker itself


def _one_route(problem: Problem, ids: list[str], **changes) -> Solution:
    solution = vrp.solve_sequences(problem, routes={"v0": ids})
    route = dataclasses.replace(solution.routes[0], **changes)
    others = [u for u in solution.unassigned]
    return Solution([route], others, route.distance_m, route.distance_m)


def test_checker_catches_late_service_overload_wrong_order_and_missing_skills():
    problem = random_problem(n_jobs=4, n_vehicles=1, seed=11, windows=False, capacity=(3.0,))
    jobs = [dataclasses.replace(j, amount=(1.0,)) for j in problem.jobs]
    problem = dataclasses.replace(problem, jobs=jobs)
    ok = vrp.solve_sequences(problem, routes={"v0": ["j1", "j2", "j3"]})
    ok.unassigned.append(vrp.Unassigned("j4", "test"))
    assert vrp.check(problem, ok) == []

    overloaded = vrp.solve_sequences(problem, routes={"v0": ["j1", "j2", "j3", "j4"]})
    assert any("exceeds capacity" in m for m in vrp.check(problem, overloaded))

    late_jobs = [dataclasses.replace(jobs[2], delivery=Stop(location=3, time_window_s=(0.0, 1.0)))] + jobs[:2] + jobs[3:]
    late = dataclasses.replace(problem, jobs=late_jobs)
    timed = vrp.solve_sequences(late, routes={"v0": ["j1", "j2", "j3"]})
    timed.unassigned.append(vrp.Unassigned("j4", "test"))
    assert any("outside" in m for m in vrp.check(late, timed))

    skilled = dataclasses.replace(problem, jobs=[dataclasses.replace(jobs[0], skills=frozenset({"x"}))] + jobs[1:])
    assert any("skills" in m for m in vrp.check(skilled, ok))

    dropped = dataclasses.replace(ok, unassigned=[])
    assert any("silently dropped" in m for m in vrp.check(problem, dropped))

    pts = [(0.0, 0.0), (10, 0), (20, 0)]
    dur, dist = plane(pts)
    pair = Problem(dur, dist, [Vehicle(id="v0", start_location=0, end_location=0)],
                   [Job(id="p", pickup=Stop(location=1), delivery=Stop(location=2))])
    good = vrp.solve_sequences(pair, routes={"v0": ["p"]})
    assert vrp.check(pair, good) == []
    v = good.routes[0].visits
    swapped = dataclasses.replace(good.routes[0], visits=[v[1], v[0]])
    assert any("before its pickup" in m for m in vrp.check(pair, dataclasses.replace(good, routes=[swapped])))


def test_checker_catches_a_moved_prefix_and_an_overlong_route():
    problem = random_problem(n_jobs=4, n_vehicles=1, seed=12, windows=False, max_duration_s=1e9)
    fixed = dataclasses.replace(problem, vehicles=[dataclasses.replace(problem.vehicles[0], fixed_prefix=(StopRef("j2"),))])
    moved = vrp.solve_sequences(problem, routes={"v0": ["j1", "j2", "j3", "j4"]})
    assert any("fixed prefix" in m for m in vrp.check(fixed, moved))
    short = dataclasses.replace(problem, vehicles=[dataclasses.replace(problem.vehicles[0], max_duration_s=10.0)])
    assert any("lasts" in m for m in vrp.check(short, moved))


def test_checker_catches_a_skipped_break():
    pts = [(0.0, 0.0), (100, 0)]
    dur, dist = plane(pts)
    brk = Break(id="b", earliest_start_s=10.0, latest_start_s=20.0, duration_s=30.0)
    problem = Problem(dur, dist, [Vehicle(id="v0", start_location=0, end_location=0, breaks=(brk,))],
                      [Job(id="x", delivery=Stop(location=1))])
    good = vrp.solve_sequences(problem, routes={"v0": ["x"]})
    assert vrp.check(problem, good) == []
    skipped = dataclasses.replace(good, routes=[dataclasses.replace(good.routes[0], breaks=[])])
    assert any("not taken" in m for m in vrp.check(problem, skipped))


def test_a_break_fits_in_an_earlier_wait_when_the_last_moment_has_no_room():
    # Service 100-110 then 190-200; the break (60 s, start by 150) cannot go after
    # the first service (the second would start late) but fits in the wait before it.
    pts = [(0.0, 0.0), (10.0, 0.0), (20.0, 0.0)]
    dur, dist = plane(pts)
    jobs = [
        Job(id="a", delivery=Stop(location=1, service_s=10.0, time_window_s=(100.0, 100.0))),
        Job(id="b", delivery=Stop(location=2, service_s=10.0, time_window_s=(130.0, 200.0))),
    ]
    brk = Break(id="b1", earliest_start_s=0.0, latest_start_s=150.0, duration_s=60.0)
    problem = Problem(dur, dist, [Vehicle(id="v0", start_location=0, end_location=0, breaks=(brk,))], jobs)
    solution = vrp.solve_sequences(problem, routes={"v0": ["a", "b"]})
    assert vrp.check(problem, solution) == []
    assert solution.routes[0].breaks[0].start_s <= 150.0


def test_a_limit_too_short_to_search_says_so_instead_of_overrunning():
    problem = random_problem(n_jobs=30, n_vehicles=4, seed=13)
    solution = vrp.solve(problem, time_limit_s=1e-4)
    assert vrp.check(problem, solution) == []
    assert solution.routes == []
    assert {u.reason for u in solution.unassigned} == {"time limit of 0.0001 s too short to search"}


def test_short_limits_fall_back_to_the_greedy_construction_and_stay_feasible():
    problem = random_problem(n_jobs=40, n_vehicles=8, seed=14)
    solution = vrp.solve(problem, time_limit_s=0.03)
    assert vrp.check(problem, solution) == []
    # Which of the three depends on how busy the machine is; each is a valid answer.
    if solution.routes:
        assert solution.engine.startswith("greedy") or solution.engine == "pyvrp"
    else:
        assert all("too short" in u.reason for u in solution.unassigned)


def test_a_job_pinned_to_another_vehicle_leaves_its_old_route_in_a_warm_bounded_re_plan():
    import numpy as np

    from routing import vrp
    from routing.vrp_model import Job, Problem, Stop, Vehicle

    rng = np.random.default_rng(1)
    xy = rng.uniform(0, 5000, (21, 2))
    d = np.sqrt(((xy[:, None] - xy[None]) ** 2).sum(-1))
    vehicles = [Vehicle(id="A", start_location=0, capacity=(50.0,)), Vehicle(id="B", start_location=0, capacity=(50.0,))]
    jobs = [Job(id=f"j{i}", delivery=Stop(location=i, service_s=60), amount=(1.0,)) for i in range(1, 21)]
    first = vrp.solve(Problem(duration_s=d / 8, distance_m=d, vehicles=vehicles, jobs=jobs), time_limit_s=0.5)
    moved = next(v.job_id for r in first.routes if r.vehicle_id == "A" for v in r.visits)
    pinned = [Job(id=j.id, delivery=j.delivery, amount=j.amount, vehicles=frozenset({"B"})) if j.id == moved else j for j in jobs]
    again = vrp.solve(Problem(duration_s=d / 8, distance_m=d, vehicles=vehicles, jobs=pinned), time_limit_s=0.5,
                      previous=first, max_churn=0.1)
    assert again.unassigned == []
    assert again.vehicle_of()[moved] == "B"
