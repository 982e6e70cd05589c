"""A price change moved onto a live metered subscription mid-period bills every call once, each at the
price in force when it was made (issue 18: `migrate-prices` dropped the period's usage).

The whole stack with webhooks: the consumer subscribes through the portal and pays; the provider
raises PAYG's price in the models file, applies the catalog and migrates; the period ends on the
consumer's test clock. The invoices of the period must equal the pricing engine's quotes for the
calls before the move at the old price plus the calls after it at the new one.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from billing.cli import main as billing_main
from billing.model_loader import load_models
from billing.models import UsagePrice
from billing.pricing import quote
from devstack.azurite import Azurite
from devstack.stack import LocalStack, StackOptions
from tests.catalog.conftest import models_variant

pytestmark = pytest.mark.storage


@pytest.fixture
def stack(azurite: Azurite) -> Iterator[LocalStack]:
    options = StackOptions(
        use_func=False, azurite=azurite, apply_catalog=True, stripe_webhooks=True, run_queue_workers=False
    )
    with LocalStack(options) as running:
        yield running


def _advance(stack: LocalStack, clock_id: str, to: int) -> None:
    stripe = stack.stripe_emulator.client().v1
    stripe.test_helpers.test_clocks.advance(clock_id, params={"frozen_time": to})
    deadline = time.monotonic() + 60
    while stripe.test_helpers.test_clocks.retrieve(clock_id).status != "ready":
        assert time.monotonic() < deadline, "the test clock did not finish advancing"
        time.sleep(0.05)
    stack.settle_delayed()  # a closing report waits for the report lag


def test_a_mid_period_price_move_bills_calls_before_it_at_the_old_price(stack: LocalStack, tmp_path: Path) -> None:
    stripe = stack.stripe_emulator.client().v1
    consumer = stack.consumer()
    consumer.sign_up()
    # The period began ten minutes ago, so that calls made now are inside it on both clocks.
    clock_id, _ = stack.customer_on_test_clock(consumer.user_id, consumer.email, int(time.time()) - 600)
    consumer.subscribe_and_pay("payg", "metered")
    stack.settle()
    sid = consumer.subscriptions()[0].subscription_id
    before, after = 10_000, 5_000
    stack.apim_emulator.record_usage(sid, before, at=datetime.now(UTC))
    _advance(stack, clock_id, int(time.time()) + 1)  # Stripe's present catches up with the calls

    # The provider raises PAYG from 0.15 to 0.20 per 100 calls and moves the live subscriptions.
    raised = models_variant(
        tmp_path,
        "raised.json",
        '"usagePrice": {"amount": "0.15", "perCalls": 100}',
        '"usagePrice": {"amount": "0.20", "perCalls": 100}',
    )
    assert billing_main(["catalog", "apply", "--file", str(raised)]) == 0
    assert billing_main(["catalog", "migrate-prices", "--file", str(raised), "--apply"]) == 0
    stack.settle()
    stack.apim_emulator.record_usage(sid, after, at=datetime.now(UTC))

    period_end = int(stripe.subscriptions.retrieve(sid)["items"].data[0].current_period_end)
    _advance(stack, clock_id, period_end + 300)  # the renewal draft: the app reports the rest
    _advance(stack, clock_id, period_end + 2 * 3600)  # finalised and paid
    invoices = stripe.invoices.list(params={"subscription": sid, "limit": 10}).data
    billed = sum(i.total for i in invoices if i.status == "paid")
    old = load_models().product("payg")
    new = old.model_copy(update={"usage_price": UsagePrice(amount=Decimal("0.20"), per_calls=100)})
    # By hand: 10,000 calls at USD 0.15 per 100 = 15.00; 5,000 at 0.20 per 100 = 10.00.
    assert quote(old, before).total + quote(new, after).total == 2_500
    assert billed == 2_500, [(i.billing_reason, i.total, i.status) for i in invoices]
