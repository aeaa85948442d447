"""Insertions are paced: a burst of new orders goes into one re-plan instead of one re-plan each."""

from __future__ import annotations

import pytest

from serena.commands.planner import insert_pause_s


def test_new_jobs_right_after_a_plan_wait_for_the_rest_of_the_interval():
    assert insert_pause_s(pending={"delivery.created"}, due=False, last_plan_at=100.0, now=100.1, interval_s=0.25) == pytest.approx(0.15)
    assert insert_pause_s(pending={"delivery.created"}, due=False, last_plan_at=100.0, now=100.4, interval_s=0.25) == 0.0


def test_anything_but_new_jobs_or_a_due_full_plan_goes_at_once():
    for pending in ({"delivery.failed"}, {"delivery.created", "driver.off_duty"}, set()):
        assert insert_pause_s(pending=pending, due=False, last_plan_at=100.0, now=100.01, interval_s=0.25) == 0.0
    assert insert_pause_s(pending={"delivery.created"}, due=True, last_plan_at=100.0, now=100.01, interval_s=0.25) == 0.0
    assert insert_pause_s(pending={"delivery.created"}, due=False, last_plan_at=100.0, now=100.01, interval_s=0.0) == 0.0
