"""Bad input gets the right status and changes nothing: no idempotency row, no APIM write."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from azure.data.tables import TableClient

from billing.catalog_names import SUB_META_APIM_USER, SUB_META_NAME, SUB_META_PRODUCT
from billing.store.tables import PROCESSED_EVENTS_TABLE
from tests.access.conftest import WEBHOOK_SECRET, Stack, sign, unique

pytestmark = pytest.mark.storage


def _event(sub_id: str = "sub_doesnotmatter") -> dict[str, Any]:
    return {
        "id": unique("evt"),
        "object": "event",
        "created": int(time.time()),
        "type": "customer.subscription.updated",
        "data": {"object": {"id": sub_id, "object": "subscription"}},
    }


def _rows(stack: Stack, event_id: str) -> int:
    table = TableClient.from_connection_string(stack.env["AzureWebJobsStorage"], PROCESSED_EVENTS_TABLE)
    try:
        return len(list(table.query_entities(f"PartitionKey eq '{event_id}'")))
    except Exception:  # the table does not exist yet: no rows either
        return 0


def _assert_refused(stack: Stack, answer: Any, status: int, code: str, event_id: str) -> None:
    assert answer.status_code == status, answer.text
    assert answer.json()["error"]["code"] == code
    assert "Traceback" not in answer.text
    assert WEBHOOK_SECRET not in answer.text
    assert _rows(stack, event_id) == 0
    assert stack.apim_writes == []


def test_signature_problems_are_400_and_change_nothing(stack: Stack) -> None:
    event = _event()
    body = json.dumps(event).encode()
    eid = event["id"]
    _assert_refused(stack, stack.post_event(body, signature=""), 400, "signature_missing", eid)
    _assert_refused(stack, stack.post_event(body, secret="whsec_someone_else"), 400, "signature_invalid", eid)
    _assert_refused(stack, stack.post_event(body, signature="v1=abc"), 400, "signature_invalid", eid)
    # Signed for another body (a byte changed after signing).
    tampered = stack.post_event(body.replace(b"updated", b"deleted"), signature=sign(body, WEBHOOK_SECRET))
    _assert_refused(stack, tampered, 400, "signature_invalid", eid)
    # Stale: signed 6 minutes ago (beyond Stripe's 5-minute tolerance), e.g. a captured request replayed.
    stale = stack.post_event(body, timestamp=int(time.time()) - 360)
    _assert_refused(stack, stale, 400, "signature_invalid", eid)
    assert "5 minutes" in stale.json()["error"]["message"]


def test_body_problems_are_refused(stack: Stack) -> None:
    eid = "evt_none"
    _assert_refused(stack, stack.post_event(b"this is not json"), 400, "body_not_json", eid)
    _assert_refused(stack, stack.post_event(b"\xff\xfe\x00garbage"), 400, "body_not_utf8", eid)
    _assert_refused(stack, stack.post_event(b"[1, 2, 3]"), 400, "not_an_event", eid)
    _assert_refused(stack, stack.post_event({"id": "evt_1", "object": "event"}), 400, "not_an_event", eid)
    huge = json.dumps({**_event(), "padding": "x" * (1024 * 1024)}).encode()
    _assert_refused(stack, stack.post_event(huge), 413, "body_too_large", eid)


def test_secret_rotation_accepts_either_secret(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STRIPE_WEBHOOK_SECRET", f"whsec_the_new_one,{WEBHOOK_SECRET}")
    for secret in ("whsec_the_new_one", WEBHOOK_SECRET):
        answer = stack.post_event({**_event(), "type": "customer.created"}, secret=secret)
        assert answer.status_code == 200, answer.text


def _direct_subscription(stack: Stack, product: str, metadata: dict[str, str]) -> str:
    customer, _ = stack.new_customer(clock=False)
    card = stack.stripe.v1.payment_methods.attach("pm_card_visa", params={"customer": customer})
    sub = stack.stripe.v1.subscriptions.create(
        params={
            "customer": customer,
            "items": [{"price": stack.catalog.flat_price[product], "quantity": 1}],
            "default_payment_method": card.id,
            "metadata": metadata,
        }
    )
    return sub.id


@pytest.mark.parametrize(
    ("metadata", "problem"),
    [
        ({}, "lacks apim_user_id"),
        ({SUB_META_APIM_USER: "ada", SUB_META_NAME: "k"}, "lacks apim_product_id"),
        # Says Standard, but the subscription bills Basic: never grant a product nobody paid for.
        ({SUB_META_APIM_USER: "ada", SUB_META_PRODUCT: "standard", SUB_META_NAME: "k"}, "bills apim-basic"),
        ({SUB_META_APIM_USER: "ada/../x", SUB_META_PRODUCT: "basic", SUB_META_NAME: "k"}, "not an APIM name"),
    ],
)
def test_missing_or_inconsistent_metadata_is_acknowledged_and_changes_nothing(
    stack: Stack, metadata: dict[str, str], problem: str, caplog: pytest.LogCaptureFixture
) -> None:
    stack.pause_deliveries()
    sid = _direct_subscription(stack, "basic", metadata)
    event = _event(sid)
    answer = stack.post_event(event)
    assert answer.status_code == 200, answer.text  # acknowledged: a retry could not fix it
    assert problem in answer.json()["outcome"]
    assert stack.apim_state(sid) is None
    assert stack.apim_writes == []
    # Logged with the event id so an operator can find it; redelivery is a duplicate, not a crash loop.
    assert any(event["id"] in r.getMessage() and problem in r.getMessage() for r in caplog.records)
    assert stack.post_event(event).json()["duplicate"] is True


def test_unknown_event_types_are_acknowledged(stack: Stack) -> None:
    answer = stack.post_event({**_event(), "type": "radar.early_fraud_warning.created"})
    assert answer.status_code == 200
    assert "not handled" in answer.json()["outcome"]
    assert stack.apim_writes == []
