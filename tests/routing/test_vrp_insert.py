"""Dynamic planning: inserting into a live plan, re-optimising it, and churn."""

from __future__ import annotations

import dataclasses

import pytest

from routing import vrp, vrp_live
from routing.vrp import Job, Stop


@pytest.fixture(scope="module")
def live():
    problem, new = vrp_live.live_fleet(n_vehicles=8, n_jobs=60, n_new=10, seed=3)
    plan = vrp.solve(problem, time_limit_s=0.5)
    assert vrp.check(problem, plan) == [] and plan.feasible
    return problem, new, plan


def test_inserting_new_jobs_keeps_every_fixed_prefix_and_moves_nothing(live):
    problem, new, plan = live
    before = {r.vehicle_id: [v.job_id for v in r.visits] for r in plan.routes}
    grown = dataclasses.replace(problem, jobs=problem.jobs + new[:3])
    updated = vrp.insert(grown, plan=plan)
    assert vrp.check(grown, updated) == []
    assert updated.engine == "insertion"
    assert updated.churn == 0.0
    assert {j.id for j in new[:3]} <= set(updated.vehicle_of())
    for route in updated.routes:
        vehicle = next(v for v in grown.vehicles if v.id == route.vehicle_id)
        assert [v.job_id for v in route.visits[: len(vehicle.fixed_prefix)]] == [r.job_id for r in vehicle.fixed_prefix]
        # Old stops keep their relative order: insertion only adds.
        kept = [v.job_id for v in route.visits if v.job_id in before.get(route.vehicle_id, [])]
        assert kept == before.get(route.vehicle_id, [])


def test_a_job_that_fits_nowhere_is_returned_with_a_reason(live):
    problem, new, plan = live
    impossible = Job(id="late", delivery=Stop(location=new[0].delivery.location, time_window_s=(0.0, 1.0)))
    grown = dataclasses.replace(problem, jobs=problem.jobs + [impossible])
    updated = vrp.insert(grown, plan=plan)
    assert [(u.job_id, "closes before" in u.reason) for u in updated.unassigned] == [("late", True)]
    assert vrp.check(grown, updated) == []


def test_insertion_of_a_pickup_and_delivery_pair(live):
    problem, new, plan = live
    day = (9 * 3600.0, 18 * 3600.0)
    pair = Job(
        id="pair",
        pickup=dataclasses.replace(new[1].delivery, time_window_s=day),
        delivery=dataclasses.replace(new[2].delivery, time_window_s=day),
        amount=(5.0, 0.1, 1.0),
    )
    grown = dataclasses.replace(problem, jobs=problem.jobs + [pair])
    updated = vrp.insert(grown, plan=plan)
    assert vrp.check(grown, updated) == []
    route = next(r for r in updated.routes if any(v.job_id == "pair" for v in r.visits))
    kinds = [v.kind for v in route.visits if v.job_id == "pair"]
    assert kinds == ["pickup", "delivery"]


def test_a_pair_whose_delivery_window_closes_before_its_pickup_is_explained(live):
    problem, new, plan = live
    pair = Job(
        id="pair",
        pickup=dataclasses.replace(new[1].delivery, time_window_s=(50_000.0, 60_000.0)),
        delivery=dataclasses.replace(new[2].delivery, time_window_s=(35_000.0, 45_000.0)),
    )
    grown = dataclasses.replace(problem, jobs=problem.jobs + [pair])
    updated = vrp.insert(grown, plan=plan)
    assert [u.reason for u in updated.unassigned] == [
        "its delivery window closes before any vehicle can get there after the pickup"
    ]


def test_full_reoptimisation_keeps_fixed_prefixes_and_reports_churn(live):
    problem, new, plan = live
    grown = dataclasses.replace(problem, jobs=problem.jobs + new)
    inserted = vrp.insert(grown, plan=plan)
    again = vrp.solve(grown, time_limit_s=0.5, previous=inserted)
    assert vrp.check(grown, again) == []
    assert again.churn is not None and 0.0 <= again.churn <= 1.0
    assert again.churn == vrp.churn(previous=inserted, current=again)
    for route in again.routes:
        assert route.visits[0].fixed and route.visits[0].job_id == problem.jobs[int(route.vehicle_id[3:])].id


def test_churn_counts_jobs_that_changed_vehicle(live):
    problem, _, plan = live
    a, b = plan.routes[0], plan.routes[1]
    moved_job = a.visits[-1]
    swapped = dataclasses.replace(
        plan,
        routes=[dataclasses.replace(a, visits=a.visits[:-1]), dataclasses.replace(b, visits=b.visits + [moved_job])]
        + plan.routes[2:],
    )
    shared = len(plan.vehicle_of())
    assert vrp.churn(previous=plan, current=swapped) == pytest.approx(1 / shared)


def test_drivers_with_breaks_get_insertions_and_warm_reoptimisation_that_respect_them():
    problem, new = vrp_live.live_fleet(n_vehicles=6, n_jobs=40, n_new=3, seed=5)
    lunch = vrp.Break(id="lunch", earliest_start_s=12 * 3600.0, latest_start_s=13 * 3600.0, duration_s=1800.0)
    problem = dataclasses.replace(problem, vehicles=[dataclasses.replace(v, breaks=(lunch,)) for v in problem.vehicles])
    plan = vrp.solve(problem, time_limit_s=0.5)
    assert vrp.check(problem, plan) == []
    grown = dataclasses.replace(problem, jobs=problem.jobs + new)
    inserted = vrp.insert(grown, plan=plan)
    assert vrp.check(grown, inserted) == []
    again = vrp.solve(grown, time_limit_s=0.5, previous=inserted)
    assert vrp.check(grown, again) == []
    assert len(again.unassigned) <= len(inserted.unassigned)


def test_reoptimisation_that_keeps_vehicles_moves_no_job_and_keeps_prefixes(live):
    problem, new, plan = live
    grown = dataclasses.replace(problem, jobs=problem.jobs + new)
    inserted = vrp.insert(grown, plan=plan)
    again = vrp.solve(grown, time_limit_s=0.5, previous=inserted, keep_vehicles=True)
    assert vrp.check(grown, again) == []
    assert again.churn == 0.0
    assert again.vehicle_of() == inserted.vehicle_of()
    assert again.distance_m <= inserted.distance_m + 1e-6


@pytest.mark.parametrize("bound", [0.0, 0.1])
def test_bounded_churn_reoptimisation_stays_within_its_bound(live, bound):
    problem, new, plan = live
    grown = dataclasses.replace(problem, jobs=problem.jobs + new)
    inserted = vrp.insert(grown, plan=plan)
    again = vrp.solve(grown, time_limit_s=0.5, previous=inserted, max_churn=bound)
    assert vrp.check(grown, again) == []
    assert again.engine == "bounded-churn"
    assert again.churn <= bound
    assert len(again.unassigned) <= len(inserted.unassigned)
    assert again.distance_m <= inserted.distance_m + 1e-6
