"""The public delivery API: idempotent creation, clear refusals, the state machine's guard."""

from __future__ import annotations

import uuid

import pytest

from dispatch import lifecycle
from dispatch.models import JobState
from tests.dispatch.conftest import delivery_body


async def test_same_idempotency_key_gives_the_same_job(client, dispatcher, depot, pool):
    key = f"k-{uuid.uuid4().hex}"
    body = delivery_body(60.17, 24.95)
    first = await client.post("/v1/deliveries", headers={**dispatcher.headers, "Idempotency-Key": key}, json=body)
    again = await client.post("/v1/deliveries", headers={**dispatcher.headers, "Idempotency-Key": key}, json=body)
    assert first.status_code == 201 and again.status_code == 200
    assert first.json()["id"] == again.json()["id"]
    assert first.json()["depot_id"] == depot["id"]  # nearest depot chosen
    created_events = await pool.fetchval("SELECT count(*) FROM outbox WHERE type='delivery.created' AND aggregate_id=$1", first.json()["id"])
    assert created_events == 1


async def test_same_key_with_a_different_request_is_refused(client, dispatcher, depot):
    key = f"k-{uuid.uuid4().hex}"
    h = {**dispatcher.headers, "Idempotency-Key": key}
    assert (await client.post("/v1/deliveries", headers=h, json=delivery_body(60.17, 24.95))).status_code == 201
    r = await client.post("/v1/deliveries", headers=h, json=delivery_body(60.18, 24.95))
    assert r.status_code == 409 and "different delivery request" in r.json()["detail"]


@pytest.mark.parametrize(
    ("patch", "reason"),
    [
        ({"window_end": "2020-01-01T00:00:00Z"}, "window_end must be after window_start"),
        ({"window_start": "2026-11-25T10:00:00", "window_end": "2026-11-25T12:00:00"}, "need a time zone"),
        ({"dropoff": {"lat": 95, "lng": 24.9}}, "dropoff.lat"),
        ({"weight_kg": -1}, "weight_kg"),
        ({"skills": ["Cold Chain"]}, "skills.0"),
    ],
)
async def test_bad_delivery_requests_name_the_problem(client, dispatcher, depot, patch, reason):
    r = await client.post("/v1/deliveries", headers={**dispatcher.headers, "Idempotency-Key": f"k-{uuid.uuid4().hex}"},
                          json=delivery_body(60.17, 24.95) | patch)
    assert r.status_code == 422 and reason in r.json()["detail"]


async def test_missing_idempotency_key_is_refused(client, dispatcher, depot):
    r = await client.post("/v1/deliveries", headers=dispatcher.headers, json=delivery_body(60.17, 24.95))
    assert r.status_code == 422 and "Idempotency-Key" in r.text


async def test_cancel_before_pickup_then_cancel_again_is_an_illegal_transition(client, dispatcher, depot):
    r = await client.post("/v1/deliveries", headers={**dispatcher.headers, "Idempotency-Key": f"k-{uuid.uuid4().hex}"},
                          json=delivery_body(60.17, 24.95))
    job_id = r.json()["id"]
    r = await client.post(f"/v1/deliveries/{job_id}/cancel", headers=dispatcher.headers, json={"reason": "customer changed mind"})
    assert r.status_code == 200 and r.json()["state"] == "cancelled"
    r = await client.post(f"/v1/deliveries/{job_id}/cancel", headers=dispatcher.headers, json={"reason": "again"})
    assert r.status_code == 409 and "cancelled" in r.json()["detail"]
    hist = (await client.get(f"/v1/deliveries/{job_id}/history", headers=dispatcher.headers)).json()
    assert [h["to_state"] for h in hist] == ["created", "cancelled"]


def test_state_machine_refuses_skipping_states_and_leaving_terminal_ones():
    with pytest.raises(lifecycle.IllegalTransition, match="cannot go from created to delivered"):
        lifecycle.check(JobState.CREATED, JobState.DELIVERED)
    for terminal in (JobState.DELIVERED, JobState.RETURNED, JobState.CANCELLED):
        for target in JobState:
            with pytest.raises(lifecycle.IllegalTransition):
                lifecycle.check(terminal, target)
    lifecycle.check(JobState.FAILED, JobState.OUT_FOR_DELIVERY)  # re-attempt
    lifecycle.check(JobState.FAILED, JobState.RETURNED)  # or back to the depot


def test_every_state_has_an_event():
    assert set(lifecycle.EVENT_FOR) == set(JobState)
    assert lifecycle.EVENT_FOR[JobState.DELIVERED] == "delivery.completed"


async def test_label_pdf_has_the_package_code(client, dispatcher, depot):
    r = await client.post("/v1/deliveries", headers={**dispatcher.headers, "Idempotency-Key": f"k-{uuid.uuid4().hex}"},
                          json=delivery_body(60.17, 24.95))
    job = r.json()
    pdf = await client.get(f"/v1/deliveries/{job['id']}/label.pdf", headers=dispatcher.headers)
    assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF")
    assert job["package_code"].encode() in pdf.content


def test_order_paid_v1_nested_contract_is_read_without_the_flat_aliases():
    from dispatch import service

    key, req = service.request_from_order_paid({
        "order_id": "o-1", "order_number": "SO-1", "pickup_depot_id": 3,
        "contact": {"name": "Aino", "phone": "+358401"}, "dropoff": {"lat": 60.17, "lng": 24.94, "address": "A 1"},
        "window": {"start": "2026-11-25T10:00:00Z", "end": "2026-11-25T12:00:00Z"},
        "weight_kg": 2, "volume_l": 10, "parcels": 2, "skills": ["cold"], "priority": 1})
    assert key == "order:o-1" and req.depot_id == 3 and req.recipient_name == "Aino" and req.parcels == 2
    assert req.window_end.hour == 12 and req.skills == ["cold"]
