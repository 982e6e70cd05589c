"""How long invoices stay drafts (the invoice finalization grace period), and the last invoice of a
subscription set to cancel at its period end: what the app relies on to bill a period's last calls."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
import requests

from emulators.stripe.server import StripeEmulator
from tests.emulators.stripe.conftest import JAN_1_2026, clocked_customer
from tests.emulators.stripe.test_lifecycle import _catalog, _report

FEB_1 = int(datetime(2026, 2, 1, tzinfo=UTC).timestamp())
HOUR = 3600


def _created_events(client: Any, invoice_id: str) -> list[Any]:
    events = client.v1.events.list(params={"type": "invoice.created", "limit": 100}).data
    return [e for e in events if e.data.object.id == invoice_id]


def test_drafts_stay_drafts_for_the_saved_grace_period_and_take_usage_reported_meanwhile(
    stripe_emulator: StripeEmulator, client: Any, meter: Any
) -> None:
    stripe_emulator.save_invoice_finalization_grace_period(3 * HOUR)
    _, usage = _catalog(client, meter)
    clock, customer = clocked_customer(client)
    sub = client.v1.subscriptions.create(params={"customer": customer.id, "items": [{"price": usage.id}]})
    client.v1.test_helpers.test_clocks.advance(clock.id, params={"frozen_time": FEB_1 + 2 * HOUR})
    draft = client.v1.invoices.list(params={"subscription": sub.id, "limit": 1}).data[0]
    # Two hours after the period end: still a draft, finalising three hours after it was created.
    assert (draft.status, draft.created, draft.automatically_finalizes_at) == ("draft", FEB_1, FEB_1 + 3 * HOUR)
    # The app reads the window from the invoice.created event it receives.
    (created,) = _created_events(client, draft.id)
    assert created.data.object.automatically_finalizes_at == FEB_1 + 3 * HOUR
    _report(client, customer, FEB_1 - 1, 2000, "late")  # January's last second, reported in February
    client.v1.test_helpers.test_clocks.advance(clock.id, params={"frozen_time": FEB_1 + 3 * HOUR})
    final = client.v1.invoices.retrieve(draft.id)
    # 2,000 calls at 0.15 cents each, counted at finalisation.
    assert (final.status, final.amount_paid, final.automatically_finalizes_at) == ("paid", 300, None)


def test_the_grace_period_is_at_most_72_hours_in_whole_seconds(stripe_emulator: StripeEmulator) -> None:
    url = f"{stripe_emulator.base_url}/_emulator/settings"
    assert requests.post(url, json={"finalize_after": 72 * HOUR}, timeout=10).json()["finalize_after"] == 72 * HOUR
    for bad in (72 * HOUR + 1, 1.5, -1, True):
        answer = requests.post(url, json={"finalize_after": bad}, timeout=10)
        assert answer.status_code == 400, bad
    assert "72 hours" in answer.json()["error"]["message"]
    with pytest.raises(ValueError, match="72 hours"):
        stripe_emulator.save_invoice_finalization_grace_period(73 * HOUR)
    assert requests.get(url, timeout=10).json()["finalize_after"] == 72 * HOUR  # unchanged by the refusals


def test_cancel_at_period_end_bills_the_periods_usage_on_a_last_invoice_and_no_next_period(
    client: Any, meter: Any
) -> None:
    flat, usage = _catalog(client, meter)
    clock, customer = clocked_customer(client)
    sub = client.v1.subscriptions.create(
        params={"customer": customer.id, "items": [{"price": flat.id, "quantity": 1}, {"price": usage.id}]}
    )
    client.v1.test_helpers.test_clocks.advance(clock.id, params={"frozen_time": FEB_1 - 10})
    _report(client, customer, JAN_1_2026 + 86400, 1000, "early")  # 150 cents
    client.v1.subscriptions.update(sub.id, params={"cancel_at_period_end": True})
    client.v1.test_helpers.test_clocks.advance(clock.id, params={"frozen_time": FEB_1 + 60})
    ended = client.v1.subscriptions.retrieve(sub.id)
    assert (ended.status, ended.ended_at) == ("canceled", FEB_1)
    last = client.v1.invoices.retrieve(str(ended.latest_invoice))
    assert (last.status, last.period_start, last.period_end) == ("draft", JAN_1_2026, FEB_1)
    assert last.automatically_finalizes_at == FEB_1 + HOUR
    assert len(_created_events(client, last.id)) == 1  # announced like a renewal draft
    _report(client, customer, FEB_1 - 5, 2000, "late")  # the last seconds' calls, reported in the draft window
    client.v1.test_helpers.test_clocks.advance(clock.id, params={"frozen_time": FEB_1 + 2 * HOUR})
    last = client.v1.invoices.retrieve(last.id)
    # The period's usage only (3,000 calls x 0.15 cents): no flat fee for a period that never starts.
    assert (last.status, last.amount_paid) == ("paid", 450)
    assert all(line.pricing.price_details.price == usage.id for line in last.lines.data)
    invoices = client.v1.invoices.list(params={"subscription": sub.id}).data
    assert sorted(i.billing_reason for i in invoices) == ["subscription_create", "subscription_cycle"]
