"""Changing plan on the local stack, with Stripe test clocks: an upgrade mid-period, a downgrade at the
period end (undone once, then kept), and the refusals (another consumer's subscription, a card that
does not pay). Invoices are compared with the pricing engine's quotes for the part of the period on
each product, for the calls this test made (counted here, not read from the app)."""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
import requests

from billing.cli import main as billing_main
from billing.model_loader import load_models
from billing.pricing import LineKind, part_quote, quote
from billing.usage.wiring import lag_seconds
from devstack.consumer import Consumer
from devstack.stack import LocalStack, StackOptions

pytestmark = pytest.mark.storage

MODELS = load_models()
DAY, HOUR = 86400, 3600
PASSWORD = "plan change password " + "x" * 6


@pytest.fixture
def stack() -> Iterator[LocalStack]:
    # One stack per test: APIM's clock only goes forward, and each test moves it by a period.
    with LocalStack(StackOptions(run_queue_workers=False, apply_catalog=True)) as local:
        yield local


@dataclass
class Held:
    consumer: Consumer
    sid: str
    key: str
    customer: str
    clock: str


def _stripe(stack: LocalStack) -> Any:
    return stack.stripe_emulator.client(max_network_retries=2).v1


def _settle(stack: LocalStack) -> None:
    stack.settle_delayed(90)


def _subscribe(stack: LocalStack, product: str, name: str) -> Held:
    email = f"{name.lower()}.{secrets.token_hex(3)}@example.com"
    consumer = stack.consumer(email, PASSWORD, name)
    uid = consumer.sign_up(first_name=name, last_name="Tester")
    clock, customer = stack.customer_on_test_clock(uid, email, int(stack.apim_emulator.now().timestamp()), name)
    consumer.subscribe_and_pay(product, f"{product} key")
    _settle(stack)
    (sub,) = [s for s in consumer.subscriptions() if s.product_id == product and s.state == "active"]
    return Held(consumer, sub.subscription_id, sub.primary_key, customer, clock)


def _advance(stack: LocalStack, held: Held, to: int) -> None:
    stripe = _stripe(stack)
    if to > stripe.test_helpers.test_clocks.retrieve(held.clock).frozen_time:
        stripe.test_helpers.test_clocks.advance(held.clock, params={"frozen_time": to})
    _settle(stack)


def _apim_to(stack: LocalStack, when: int) -> None:
    """APIM's clock (the gateway's and its logs' time) to `when`, as Stripe's test clock moves."""
    ahead = when - stack.apim_emulator.now().timestamp()
    if ahead > 0:
        stack.apim_emulator.advance_clock(ahead)


def _burst(stack: LocalStack, key: str, calls: int) -> dict[int, int]:
    def one(_: int) -> int:
        return requests.get(
            f"{stack.apim_emulator.gateway_url}/echo/hello", headers={"Ocp-Apim-Subscription-Key": key}, timeout=30
        ).status_code

    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = list(pool.map(one, range(calls)))
    return {status: statuses.count(status) for status in set(statuses)}


def _period(stack: LocalStack, sid: str) -> tuple[int, int]:
    item = _stripe(stack).subscriptions.retrieve(sid)["items"].data[0]
    return int(item.current_period_start), int(item.current_period_end)


def _invoices(stack: LocalStack, sid: str) -> list[Any]:
    found = _stripe(stack).invoices.list(params={"subscription": sid, "limit": 100}).data
    return sorted(found, key=lambda inv: (inv.created, inv.id))


def _lines(invoice: Any) -> list[dict[str, Any]]:
    return [line.to_dict() for line in invoice.lines.data]


def _price_of(line: dict[str, Any]) -> str:
    return str(((line.get("pricing") or {}).get("price_details") or {}).get("price") or "")


def _lookup(stack: LocalStack, price_id: str) -> str:
    return str(_stripe(stack).prices.retrieve(price_id).lookup_key or "")


def _end_period(stack: LocalStack, held: Held) -> None:
    """Past the period end: the renewal draft, its closing report after the lag, then finalised and paid."""
    _, end = _period(stack, held.sid)
    _advance(stack, held, end + 300)
    _advance(stack, held, end + 2 * HOUR)


def _push() -> None:
    time.sleep(lag_seconds() + 1)
    assert billing_main(["usage", "push"]) == 0


def _billing_page(held: Held) -> str:
    return held.consumer.billing_page().text


def test_upgrade_mid_period_bills_each_part_at_its_product_and_keeps_the_key(stack: LocalStack) -> None:
    standard, pro = MODELS.product("standard"), MODELS.product("pro")
    held = _subscribe(stack, "standard", "Una")
    _push()  # opens the usage window, as the daily push does
    start, end = _period(stack, held.sid)
    # Standard part: 100,400 calls in bulk and 10 through the gateway.
    stack.apim_emulator.record_usage(held.sid, 100_400, at=stack.apim_emulator.now())
    before = _burst(stack, held.key, 10)
    assert before == {200: 10}
    change_at = start + 15 * DAY
    _apim_to(stack, change_at - 60)
    _advance(stack, held, change_at)
    page = held.consumer.plan_change_page(held.sid, "pro")
    assert page.status_code == 200, page.text[:300]
    expected_due = part_quote(pro, 0, start, end, since=change_at, until=end).lines[0].amount - (
        standard.flat_fee_minor - part_quote(standard, 0, start, end, since=start, until=change_at).lines[0].amount
    )
    assert f"USD {expected_due / 100:,.2f}" in page.text
    answer = held.consumer.submit(page, {}, "upgrade")
    assert answer.status_code == 200, answer.text[:300]
    _apim_to(stack, change_at + 1)
    _settle(stack)
    # Same key, now Pro: its rate limit (1,200 a minute, Standard's is 100) lets a burst of 150 through.
    (sub,) = [s for s in held.consumer.subscriptions() if s.subscription_id == held.sid]
    assert (sub.product_id, sub.state, sub.primary_key) == ("pro", "active", held.key)
    assert _burst(stack, held.key, 150) == {200: 150}
    stack.apim_emulator.record_usage(held.sid, 300_000, at=stack.apim_emulator.now())
    pro_calls, standard_calls = 300_150, 100_410
    _end_period(stack, held)

    first, upgrade, renewal = _invoices(stack, held.sid)
    assert (first.billing_reason, upgrade.billing_reason, renewal.billing_reason) == (
        "subscription_create",
        "subscription_update",
        "subscription_cycle",
    )
    assert all(inv.status == "paid" for inv in (first, upgrade, renewal))
    standard_part = part_quote(standard, standard_calls, start, end, since=start, until=change_at)
    pro_part = part_quote(pro, pro_calls, start, end, since=change_at, until=end)
    by_kind = {(q.product_id, line.kind): line.amount for q in (standard_part, pro_part) for line in q.lines}
    # Flat fees: Standard paid in advance, then the upgrade's credit and charge: each part's prorated fee.
    assert first.total + upgrade.total == by_kind[("standard", LineKind.FLAT_FEE)] + by_kind[("pro", LineKind.FLAT_FEE)]
    assert upgrade.total == expected_due
    usage = {
        _lookup(stack, _price_of(line)): line["amount"]
        for line in _lines(renewal)
        if _lookup(stack, _price_of(line)).endswith("-usage")
    }
    assert usage == {
        "standard-usage": by_kind[("standard", LineKind.USAGE)],
        "pro-usage": by_kind[("pro", LineKind.USAGE)],
    }
    # Worked out by hand: Standard's part is 15 days of the period, so it keeps that share of its 100,000
    # included calls, rounded down (as its fee is prorated); the rest of its 100,410 calls at 0.1 cent.
    # 31 days: 1,500,000 / 31 = 48,387.1 -> 48,387 included, 52,023 beyond = 5,202.3 -> 5,202 cents;
    # 30 days: 50,000, 50,410 beyond = 5,041; 29 days: 51,724.1 -> 51,724, 48,686 beyond = 4,868.6 -> 4,869;
    # 28 days: 53,571.4 -> 53,571, 46,839 beyond = 4,683.9 -> 4,684.
    assert usage["standard-usage"] == {31: 5_202, 30: 5_041, 29: 4_869, 28: 4_684}[(end - start) // DAY]
    next_fee = [line["amount"] for line in _lines(renewal) if _lookup(stack, _price_of(line)) == "pro-flat"]
    assert next_fee == [pro.flat_fee_minor]
    # The old metered price has left the subscription; its metadata no longer marks one as retiring.
    current = _stripe(stack).subscriptions.retrieve(held.sid, params={"expand": ["items.data.price"]})
    assert {i.price.lookup_key for i in current["items"].data} == {"pro-flat", "pro-usage"}
    assert not current.metadata.to_dict().get("apim_retiring_usage_item")


def test_downgrade_at_the_period_end_can_be_undone_and_applies_at_the_phase_change(stack: LocalStack) -> None:
    pro, standard = MODELS.product("pro"), MODELS.product("standard")
    held = _subscribe(stack, "pro", "Dora")
    _start, end = _period(stack, held.sid)
    stack.apim_emulator.record_usage(held.sid, 500_500, at=stack.apim_emulator.now())
    preview = held.consumer.plan_change_page(held.sid, "standard")
    assert preview.status_code == 200
    effective = datetime.fromtimestamp(end, UTC).strftime("%Y-%m-%d")
    assert effective in preview.text
    assert held.consumer.submit(preview, {}, "downgrade").status_code == 200
    assert f"Changes to Standard on {effective}" in _billing_page(held)
    # Undo: the schedule is released, nothing is planned any more.
    assert held.consumer.undo_plan_change().status_code == 200
    assert "Changes to" not in _billing_page(held)
    assert _stripe(stack).subscriptions.retrieve(held.sid).schedule is None
    # Planned again, and kept: until the period end the key keeps Pro's limits.
    assert held.consumer.change_plan(held.sid, "standard").status_code == 200
    assert f"Changes to Standard on {effective}" in _billing_page(held)
    assert _burst(stack, held.key, 150) == {200: 150}
    pro_calls = 500_650
    _apim_to(stack, end + 61)
    _end_period(stack, held)

    (sub,) = [s for s in held.consumer.subscriptions() if s.subscription_id == held.sid]
    assert (sub.product_id, sub.state, sub.primary_key) == ("standard", "active", held.key)
    outcomes = _burst(stack, held.key, 150)
    assert outcomes.get(429, 0) == 50
    assert outcomes.get(200) == 100
    first, renewal = _invoices(stack, held.sid)
    whole_period = quote(pro, pro_calls)  # the period was wholly Pro's
    assert first.total == pro.flat_fee_minor
    usage = [line["amount"] for line in _lines(renewal) if _lookup(stack, _price_of(line)) == "pro-usage"]
    assert usage == [whole_period.lines[1].amount] == [39]  # 650 calls beyond 500,000 at 0.06 cents: 39 cents
    fees = [line["amount"] for line in _lines(renewal) if _lookup(stack, _price_of(line)) == "standard-flat"]
    assert fees == [standard.flat_fee_minor]
    assert re.search(r"Changes to", _billing_page(held)) is None


def test_only_the_owner_changes_a_subscription_and_only_a_paid_upgrade_happens(stack: LocalStack) -> None:
    owner = _subscribe(stack, "basic", "Olga")
    other = stack.consumer(f"mallory.{secrets.token_hex(3)}@example.com", PASSWORD, "Mallory")
    other.sign_up(first_name="Mallory", last_name="Tester")
    # Another consumer: the confirm step is refused as for a subscription that does not exist.
    assert other.plan_change_page(owner.sid, "standard").status_code == 404
    # Nor does a form of the owner's work in another browser (its token is bound to the session).
    page = owner.consumer.plan_change_page(owner.sid, "standard")
    fields = dict(re.findall(r'name="(\w+)" value="([^"]*)"', page.text))
    stolen = other.session.post(f"{stack.app_url}/api/portal/billing/plan", data=fields, timeout=30)
    assert stolen.status_code in (401, 403)
    # A card that does not pay: the upgrade is refused and nothing changes.
    stripe = _stripe(stack)
    failing = stripe.payment_methods.attach("pm_card_chargeCustomerFail", params={"customer": owner.customer})
    stripe.subscriptions.update(owner.sid, params={"default_payment_method": failing.id})
    refused = owner.consumer.change_plan(owner.sid, "standard")
    assert refused.status_code == 402
    _settle(stack)
    (sub,) = [s for s in owner.consumer.subscriptions() if s.subscription_id == owner.sid]
    assert sub.product_id == "basic"
    current = stripe.subscriptions.retrieve(owner.sid, params={"expand": ["items.data.price"]})
    assert {i.price.lookup_key for i in current["items"].data} == {"basic-flat"}
    assert current.metadata["apim_product_id"] == "basic"
    assert len(_invoices(stack, owner.sid)) == 1


def test_a_consumer_who_owes_money_cannot_upgrade(stack: LocalStack) -> None:
    held = _subscribe(stack, "developer", "Petra")
    held.consumer.subscribe_and_pay("basic", "basic key")
    _settle(stack)
    (basic,) = [s for s in held.consumer.subscriptions() if s.product_id == "basic"]
    stripe = _stripe(stack)
    failing = stripe.payment_methods.attach("pm_card_chargeCustomerFail", params={"customer": held.customer})
    stripe.subscriptions.update(basic.subscription_id, params={"default_payment_method": failing.id})
    _, end = _period(stack, basic.subscription_id)
    _apim_to(stack, end + 61)
    _end_period(stack, held)  # Basic's renewal is declined: an open invoice; Developer's renewal is paid
    assert any(inv.status == "open" for inv in _invoices(stack, basic.subscription_id))
    refused = held.consumer.change_plan(held.sid, "standard")
    assert refused.status_code == 402
    assert "unpaid invoices" in refused.text
    current = stripe.subscriptions.retrieve(held.sid)
    assert current.metadata["apim_product_id"] == "developer"
    # A cheaper plan stays possible: it costs nothing now.
    assert held.consumer.plan_change_page(held.sid, "payg").status_code == 200


def test_moving_to_free_ends_the_paid_subscription_at_the_period_end_then_gives_free(stack: LocalStack) -> None:
    held = _subscribe(stack, "basic", "Fritz")
    _, end = _period(stack, held.sid)
    assert held.consumer.change_plan(held.sid, "free").status_code == 200
    effective = datetime.fromtimestamp(end, UTC).strftime("%Y-%m-%d")
    assert f"Changes to Free on {effective}" in _billing_page(held)
    assert _burst(stack, held.key, 3) == {200: 3}  # paid for until the period end
    _apim_to(stack, end + 61)
    _end_period(stack, held)
    subs = {s.product_id: s for s in held.consumer.subscriptions()}
    assert subs["free"].state == "active"
    assert held.sid not in {s.subscription_id for s in subs.values() if s.state == "active"}
    assert _stripe(stack).subscriptions.retrieve(held.sid).status == "canceled"
    assert [inv.billing_reason for inv in _invoices(stack, held.sid)] == ["subscription_create"]
