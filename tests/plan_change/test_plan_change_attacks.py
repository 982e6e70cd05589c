"""Changing plan under attack, on the local stack with Stripe test clocks: what a consumer could try to get a
higher product without paying for it, and what could make a call billed twice or not at all.

- a declined upgrade, then the card replaced: the retry is a new request (Stripe saves a failed answer
  under its idempotency key, docs.stripe.com/idempotency), charged once;
- two tabs upgrading at once to different products: one change, paid once, APIM and Stripe agreeing;
- a crash after Stripe took the upgrade and before APIM moved the scope, its webhook lost as well:
  reconcile moves the scope, and the old product's last calls are billed once (its job was queued first);
- a Free subscription, one cancelling at its period end, and a form replayed after signing out: refused;
- a month's included calls used up in the first hour, then an upgrade: the old product keeps only the
  hour's share of its included calls, as Stripe keeps only the hour's share of its fee.
"""

from __future__ import annotations

import re
import secrets
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NoReturn

import pytest

from billing.adapters.access_apim import ApimSubscriptionsAdapter
from billing.adapters.portal_plan_change import PlanChanges
from billing.cli import main as billing_main
from billing.pricing import LineKind, part_quote
from billing.usage import runner
from billing.usage.push import PushSummary
from devstack.stack import LocalStack, StackOptions
from tests.plan_change.test_plan_change_stack import (
    DAY,
    HOUR,
    MODELS,
    PASSWORD,
    _advance,
    _apim_to,
    _burst,
    _end_period,
    _invoices,
    _lines,
    _lookup,
    _period,
    _price_of,
    _push,
    _settle,
    _stripe,
    _subscribe,
)

pytestmark = pytest.mark.storage


@pytest.fixture
def stack() -> Any:
    with LocalStack(StackOptions(run_queue_workers=False, apply_catalog=True)) as local:
        yield local


def _product_of(stack: LocalStack, sid: str) -> tuple[str, set[str]]:
    """(Stripe metadata's product, the lookup keys of its prices)."""
    current = _stripe(stack).subscriptions.retrieve(sid, params={"expand": ["items.data.price"]})
    return current.metadata["apim_product_id"], {i.price.lookup_key for i in current["items"].data}


def _apim_product(held: Any) -> tuple[str, str, str]:
    (sub,) = [s for s in held.consumer.subscriptions() if s.subscription_id == held.sid]
    return sub.product_id, sub.state, sub.primary_key


def test_a_declined_upgrade_changes_nothing_and_can_be_retried_once_the_card_is_replaced(stack: LocalStack) -> None:
    held = _subscribe(stack, "basic", "Dana")
    stripe = _stripe(stack)
    failing = stripe.payment_methods.attach("pm_card_chargeCustomerFail", params={"customer": held.customer})
    stripe.subscriptions.update(held.sid, params={"default_payment_method": failing.id})
    assert held.consumer.change_plan(held.sid, "standard").status_code == 402
    assert held.consumer.change_plan(held.sid, "standard").status_code == 402  # the same card: the same answer
    _settle(stack)
    assert _product_of(stack, held.sid) == ("basic", {"basic-flat"})
    assert _apim_product(held)[0] == "basic"
    # A working card: the upgrade goes through (a saved 402 under the same key would refuse it for a day).
    working = stripe.payment_methods.attach("pm_card_visa", params={"customer": held.customer})
    stripe.subscriptions.update(held.sid, params={"default_payment_method": working.id})
    answer = held.consumer.change_plan(held.sid, "standard")
    assert answer.status_code == 200, answer.text[:300]
    _settle(stack)
    assert _product_of(stack, held.sid) == ("standard", {"standard-flat", "standard-usage"})
    assert _apim_product(held) == ("standard", "active", held.key)
    upgrades = [inv for inv in _invoices(stack, held.sid) if inv.billing_reason == "subscription_update"]
    assert [inv.status for inv in upgrades] == ["paid"]  # charged once, for the one change


def test_two_tabs_upgrading_at_once_make_one_change_paid_once(stack: LocalStack) -> None:
    held = _subscribe(stack, "basic", "Tess")
    start, end = _period(stack, held.sid)
    tabs = [(held.consumer.plan_change_page(held.sid, target), target) for target in ("standard", "pro")]
    assert all(page.status_code == 200 for page, _ in tabs)
    with ThreadPoolExecutor(max_workers=2) as pool:
        answers = list(pool.map(lambda tab: held.consumer.submit(tab[0], {}, f"upgrade to {tab[1]}"), tabs))
    statuses = sorted(a.status_code for a in answers)
    assert statuses == [200, 409], [a.text[:200] for a in answers]
    _settle(stack)
    (won,) = [target for (_, target), a in zip(tabs, answers, strict=True) if a.status_code == 200]
    # Stripe, APIM and the one invoice agree on the tab that won; the other changed nothing.
    assert _product_of(stack, held.sid) == (won, {f"{won}-flat", f"{won}-usage"})
    assert _apim_product(held) == (won, "active", held.key)
    (upgrade,) = [inv for inv in _invoices(stack, held.sid) if inv.billing_reason == "subscription_update"]
    at = int(_stripe(stack).subscriptions.retrieve(held.sid).metadata["apim_product_since"])
    target, basic = MODELS.product(won), MODELS.product("basic")
    due = (
        part_quote(target, 0, start, end, since=at, until=end).lines[0].amount
        - part_quote(basic, 0, start, end, since=at, until=end).lines[0].amount
    )
    assert (upgrade.status, upgrade.total) == ("paid", due)


def test_a_second_tab_confirmed_after_the_first_change_is_stale(stack: LocalStack) -> None:
    """Its quote was made from the old product: confirming it later changes nothing and charges nothing."""
    held = _subscribe(stack, "basic", "Tom")
    stale = held.consumer.plan_change_page(held.sid, "pro")
    first = held.consumer.submit(held.consumer.plan_change_page(held.sid, "standard"), {}, "upgrade to standard")
    assert first.status_code == 200, first.text[:200]
    second = held.consumer.submit(stale, {}, "upgrade to pro from a stale tab")
    assert second.status_code == 409, second.text[:200]
    _settle(stack)
    assert _product_of(stack, held.sid) == ("standard", {"standard-flat", "standard-usage"})
    assert len([inv for inv in _invoices(stack, held.sid) if inv.billing_reason == "subscription_update"]) == 1


def test_a_crash_between_stripes_update_and_the_scope_move_is_repaired_and_every_call_billed_once(
    stack: LocalStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    standard, pro = MODELS.product("standard"), MODELS.product("pro")
    held = _subscribe(stack, "standard", "Cora")
    _push()  # opens the usage window
    start, end = _period(stack, held.sid)
    stack.apim_emulator.record_usage(held.sid, 100_200, at=stack.apim_emulator.now())
    _push()  # 200 beyond the included calls reported as the day goes
    stack.apim_emulator.record_usage(held.sid, 300, at=stack.apim_emulator.now())  # not pushed before the change
    change_at = start + 10 * DAY
    _apim_to(stack, change_at - 60)
    _advance(stack, held, change_at)

    def crash(*_args: object, **_kwargs: object) -> NoReturn:
        raise RuntimeError("the instance died after Stripe's answer")

    # The portal dies right after Stripe took the upgrade, and the webhook's own scope move is lost too.
    monkeypatch.setattr(PlanChanges, "move_scope", crash)
    monkeypatch.setattr(ApimSubscriptionsAdapter, "set_scope", lambda *_a, **_k: None)
    answer = held.consumer.change_plan(held.sid, "pro")
    assert answer.status_code >= 500
    _apim_to(stack, change_at + 1)
    _settle(stack)  # the webhook (its move lost) and the old product's job, queued before the update
    assert _product_of(stack, held.sid) == ("pro", {"pro-flat", "pro-usage"})  # the job retired standard-usage
    assert not _stripe(stack).subscriptions.retrieve(held.sid).metadata.to_dict().get("apim_retiring_usage_item")
    assert _apim_product(held)[0] == "standard"  # APIM missed the move
    monkeypatch.undo()

    assert billing_main(["reconcile"]) == 0
    assert _apim_product(held) == ("pro", "active", held.key)
    assert _burst(stack, held.key, 150) == {200: 150}  # Pro's rate limit (Standard's is 100 a minute)
    stack.apim_emulator.record_usage(held.sid, 300_000, at=stack.apim_emulator.now())
    _end_period(stack, held)

    _first, upgrade, renewal = _invoices(stack, held.sid)
    assert (upgrade.billing_reason, renewal.billing_reason) == ("subscription_update", "subscription_cycle")
    standard_part = part_quote(standard, 100_500, start, end, since=start, until=change_at)
    pro_part = part_quote(pro, 300_150, start, end, since=change_at, until=end)
    usage: dict[str, int] = {}
    for line in _lines(renewal):
        key = _lookup(stack, _price_of(line))
        if key.endswith("-usage"):
            usage[key] = usage.get(key, 0) + int(line["amount"])
    by_kind = {(q.product_id, line.kind): line.amount for q in (standard_part, pro_part) for line in q.lines}
    # Each call once, at the product it was made on: the 300 calls not pushed before the crash included.
    assert usage == {
        "standard-usage": by_kind[("standard", LineKind.USAGE)],
        "pro-usage": by_kind[("pro", LineKind.USAGE)],
    }
    # By hand: Standard's part is 10 days of the period, so it keeps that share of its 100,000 included calls
    # (rounded down); 200 calls beyond all 100,000 were pushed before the change, the rest of the part's
    # overage by the report up to it. 31 days: 32,258 included, 100,500 - 32,258 = 68,242 at 0.1 cent =
    # 6,824.2 -> 6,824; 30 days: 33,333, 67,167 -> 6,717; 29 days: 34,482, 66,018 -> 6,602;
    # 28 days: 35,714, 64,786 -> 6,479.
    assert usage["standard-usage"] == {31: 6_824, 30: 6_717, 29: 6_602, 28: 6_479}[(end - start) // DAY]


def test_free_and_cancelling_subscriptions_cannot_change_plan_and_a_form_dies_with_its_session(
    stack: LocalStack,
) -> None:
    held = _subscribe(stack, "basic", "Fay")
    # A Free subscription through the plan change form: not a subscription the form changes (Checkout is).
    free = stack.consumer(f"frida.{secrets.token_hex(3)}@example.com", PASSWORD, "Frida")
    free.sign_up(first_name="Frida", last_name="Tester")
    free.subscribe("free", "free key")
    _settle(stack)
    (free_sub,) = [s for s in free.subscriptions() if s.product_id == "free"]
    assert free.plan_change_page(free_sub.subscription_id, "pro").status_code == 404
    # Cancelling at the period end (Stripe's customer portal, say): no upgrade onto it.
    _stripe(stack).subscriptions.update(held.sid, params={"cancel_at_period_end": True})
    _settle(stack)
    refused = held.consumer.change_plan(held.sid, "pro")
    assert refused.status_code == 409
    assert _product_of(stack, held.sid) == ("basic", {"basic-flat"})
    assert [inv.billing_reason for inv in _invoices(stack, held.sid)] == ["subscription_create"]
    # A form of the owner's, shown once the cancellation is undone and replayed after signing out of the
    # app (its cookie cleared): refused before anything is looked at, nothing changed.
    _stripe(stack).subscriptions.update(held.sid, params={"cancel_at_period_end": False})
    _settle(stack)
    page = held.consumer.plan_change_page(held.sid, "pro")
    assert page.status_code == 200
    fields = dict(re.findall(r'name="(\w+)" value="([^"]*)"', page.text))
    assert held.consumer.open(f"{stack.app_url}/api/portal/signout").status_code < 400
    url = f"{stack.app_url}/api/portal/billing/plan"
    assert held.consumer.session.post(url, data=fields, timeout=30).status_code in (401, 403)
    _settle(stack)
    assert _product_of(stack, held.sid) == ("basic", {"basic-flat"})


def test_an_upgrade_in_the_last_minutes_of_a_period_bills_each_call_once(stack: LocalStack) -> None:
    standard, pro = MODELS.product("standard"), MODELS.product("pro")
    held = _subscribe(stack, "standard", "Lena")
    _push()
    start, end = _period(stack, held.sid)
    stack.apim_emulator.record_usage(held.sid, 100_700, at=stack.apim_emulator.now())
    change_at = end - 120
    _apim_to(stack, change_at - 30)
    stack.apim_emulator.record_usage(held.sid, 40, at=stack.apim_emulator.now())  # 30 s before the change
    _advance(stack, held, change_at)
    answer = held.consumer.change_plan(held.sid, "pro")
    assert answer.status_code == 200, answer.text[:300]
    # The period ends before the old product's job has run (it waits the report lag): the renewal's draft
    # is made with the old metered price still on the subscription.
    _stripe(stack).test_helpers.test_clocks.advance(held.clock, params={"frozen_time": end + 60})
    _apim_to(stack, change_at + 30)
    stack.apim_emulator.record_usage(held.sid, 25, at=stack.apim_emulator.now())  # Pro's 90 s
    _settle(stack)
    _advance(stack, held, end + 300)
    _advance(stack, held, end + 2 * HOUR)  # the renewal finalised and paid

    invoices = _invoices(stack, held.sid)
    assert [inv.billing_reason for inv in invoices] == [
        "subscription_create",
        "subscription_update",
        "subscription_cycle",
    ]
    assert all(inv.status == "paid" for inv in invoices)
    usage: dict[str, int] = {}
    for inv in invoices:
        for line in _lines(inv):
            key = _lookup(stack, _price_of(line))
            if key.endswith("-usage"):
                usage[key] = usage.get(key, 0) + int(line["amount"])
    standard_part = part_quote(standard, 100_740, start, end, since=start, until=change_at)
    pro_part = part_quote(pro, 25, start, end, since=change_at, until=end)
    # By hand: the part ends 120 s before the period end, so Standard keeps 100,000 less 100,000 x 120 s of
    # the period's 28 to 31 days (4.96 to 4.48 calls): 99,995.0x -> 99,995 included, and its 100,740 calls are
    # 745 beyond them at 0.1 cent = 74.5 -> 75 cents (half up), once.
    assert usage.get("standard-usage") == standard_part.lines[1].amount == 75
    assert usage.get("pro-usage", 0) == pro_part.lines[1].amount == 0  # within Pro's prorated included calls
    current = _stripe(stack).subscriptions.retrieve(held.sid, params={"expand": ["items.data.price"]})
    assert {i.price.lookup_key for i in current["items"].data} == {"pro-flat", "pro-usage"}
    # Nothing of the old price is left pending for the next invoice either.
    upcoming = _stripe(stack).invoices.create_preview(params={"subscription": held.sid})
    assert not [line for line in upcoming.lines.data if _lookup(stack, _price_of(line.to_dict())) == "standard-usage"]


def test_an_upgrade_and_a_downgrade_from_two_tabs_at_once_leave_stripe_and_apim_agreeing(
    stack: LocalStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    held = _subscribe(stack, "standard", "Rita")
    tabs = [(held.consumer.plan_change_page(held.sid, target), target) for target in ("pro", "basic")]
    # Both confirmations read the subscription before either changes it (the race the checks cannot see).
    both_read = threading.Barrier(2, timeout=20)
    read = PlanChanges.current

    def current_then_wait(self: PlanChanges, subscription_id: str) -> Any:
        plan = read(self, subscription_id)
        both_read.wait()
        return plan

    monkeypatch.setattr(PlanChanges, "current", current_then_wait)
    with ThreadPoolExecutor(max_workers=2) as pool:
        answers = list(pool.map(lambda tab: held.consumer.submit(tab[0], {}, f"change to {tab[1]}"), tabs))
    monkeypatch.undo()
    _settle(stack)
    outcome = {target: a.status_code for (_, target), a in zip(tabs, answers, strict=True)}
    assert 200 in outcome.values(), outcome
    _, end = _period(stack, held.sid)
    _apim_to(stack, end + 61)
    _end_period(stack, held)
    # Whatever won, the key's product is the one Stripe bills from the new period on.
    current = _stripe(stack).subscriptions.retrieve(held.sid, params={"expand": ["items.data.price"]})
    billed = {
        i.price.lookup_key.removesuffix("-flat") for i in current["items"].data if i.price.lookup_key.endswith("-flat")
    }
    (sub,) = [s for s in held.consumer.subscriptions() if s.subscription_id == held.sid]
    assert ({sub.product_id}, current.metadata["apim_product_id"]) == (billed, sub.product_id), outcome


def test_a_past_due_subscription_changes_plan_neither_up_nor_down(stack: LocalStack) -> None:
    held = _subscribe(stack, "standard", "Paula")
    stripe = _stripe(stack)
    failing = stripe.payment_methods.attach("pm_card_chargeCustomerFail", params={"customer": held.customer})
    stripe.subscriptions.update(held.sid, params={"default_payment_method": failing.id})
    _, end = _period(stack, held.sid)
    _apim_to(stack, end + 61)
    _end_period(stack, held)  # the renewal is declined
    assert stripe.subscriptions.retrieve(held.sid).status == "past_due"
    for target in ("pro", "basic", "free"):
        assert held.consumer.plan_change_page(held.sid, target).status_code == 409, target
        assert held.consumer.change_plan(held.sid, target).status_code == 409, target
    current = stripe.subscriptions.retrieve(held.sid, params={"expand": ["items.data.price"]})
    assert (current.schedule, current.cancel_at_period_end) == (None, False)
    assert {i.price.lookup_key for i in current["items"].data} == {"standard-flat", "standard-usage"}
    assert [inv.billing_reason for inv in _invoices(stack, held.sid)] == ["subscription_create", "subscription_cycle"]


def test_a_lost_plan_change_job_is_made_good_by_the_periods_closing_report(
    stack: LocalStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    standard, pro = MODELS.product("standard"), MODELS.product("pro")
    held = _subscribe(stack, "standard", "Nora")
    _push()
    start, end = _period(stack, held.sid)
    stack.apim_emulator.record_usage(held.sid, 100_200, at=stack.apim_emulator.now())
    _push()  # 200 beyond the included calls reported before the change
    stack.apim_emulator.record_usage(held.sid, 330, at=stack.apim_emulator.now())  # not yet
    change_at = start + 12 * DAY
    _apim_to(stack, change_at - 60)
    _advance(stack, held, change_at)
    # The old product's job never runs (poisoned after its retries, say).
    monkeypatch.setattr(runner, "run_plan_change", lambda *_a, **_k: PushSummary(subscriptions_seen=1, skipped=1))
    assert held.consumer.change_plan(held.sid, "pro").status_code == 200
    _apim_to(stack, change_at + 1)
    _settle(stack)
    stack.apim_emulator.record_usage(held.sid, 1_000, at=stack.apim_emulator.now())
    _end_period(stack, held)

    _first, _upgrade, renewal = _invoices(stack, held.sid)
    usage: dict[str, int] = {}
    for line in _lines(renewal):
        key = _lookup(stack, _price_of(line))
        if key.endswith("-usage"):
            usage[key] = usage.get(key, 0) + int(line["amount"])
    standard_part = part_quote(standard, 100_530, start, end, since=start, until=change_at)
    pro_part = part_quote(pro, 1_000, start, end, since=change_at, until=end)
    assert usage == {"standard-usage": standard_part.lines[1].amount, "pro-usage": pro_part.lines[1].amount}
    # By hand, the 330 late calls included: Standard's part is 12 days of the period, so it keeps that share
    # of its 100,000 included calls (rounded down). 31 days: 1,200,000 / 31 = 38,709.7 -> 38,709, and
    # 100,530 - 38,709 = 61,821 beyond at 0.1 cent = 6,182.1 -> 6,182; 30 days: 40,000, 60,530 -> 6,053;
    # 29 days: 41,379, 59,151 -> 5,915; 28 days: 42,857, 57,673 -> 5,767.
    assert usage["standard-usage"] == {31: 6_182, 30: 6_053, 29: 5_915, 28: 5_767}[(end - start) // DAY]


def test_a_months_included_calls_used_in_the_first_hour_then_an_upgrade_are_billed_beyond_the_hours_share(
    stack: LocalStack,
) -> None:
    standard, pro = MODELS.product("standard"), MODELS.product("pro")
    held = _subscribe(stack, "standard", "Ivan")
    _push()  # opens the usage window
    start, end = _period(stack, held.sid)
    stack.apim_emulator.record_usage(held.sid, 100_000, at=stack.apim_emulator.now())
    _push()  # all within Standard's 100,000 included calls as the pushes count them: nothing sent yet
    change_at = start + HOUR
    _apim_to(stack, change_at - 60)
    _advance(stack, held, change_at)
    assert held.consumer.change_plan(held.sid, "pro").status_code == 200
    _apim_to(stack, change_at + 1)
    _settle(stack)  # the webhook, and the old product's job after the report lag
    assert _product_of(stack, held.sid) == ("pro", {"pro-flat", "pro-usage"})
    stack.apim_emulator.record_usage(held.sid, 1_000, at=stack.apim_emulator.now())
    _end_period(stack, held)

    first, upgrade, renewal = _invoices(stack, held.sid)
    assert [inv.billing_reason for inv in (first, upgrade, renewal)] == [
        "subscription_create",
        "subscription_update",
        "subscription_cycle",
    ]
    assert all(inv.status == "paid" for inv in (first, upgrade, renewal))
    standard_part = part_quote(standard, 100_000, start, end, since=start, until=change_at)
    pro_part = part_quote(pro, 1_000, start, end, since=change_at, until=end)
    by_kind = {(q.product_id, line.kind): line.amount for q in (standard_part, pro_part) for line in q.lines}
    assert first.total + upgrade.total == by_kind[("standard", LineKind.FLAT_FEE)] + by_kind[("pro", LineKind.FLAT_FEE)]
    usage: dict[str, int] = {}
    for line in _lines(renewal):
        key = _lookup(stack, _price_of(line))
        if key.endswith("-usage"):
            usage[key] = usage.get(key, 0) + int(line["amount"])
    assert usage == {
        "standard-usage": by_kind[("standard", LineKind.USAGE)],
        "pro-usage": by_kind[("pro", LineKind.USAGE)],
    }
    assert usage["pro-usage"] == 0  # 1,000 calls, within Pro's share of the rest of the period
    # By hand, for a 31-day period (744 hours): Standard's part is 1 of its 744 hours. Its fee: 8,995 less
    # the credit for 743 hours, 8,995 x 743 / 744 = 8,982.91 -> 8,983, so 12 cents. Its included calls:
    # 100,000 / 744 = 134.4 -> 134, so the 100,000 calls are 99,866 beyond them at 0.1 cent = 9,986.6 ->
    # 9,987 cents (USD 99.87), where keeping all 100,000 included calls billed nothing. Other lengths:
    # 30 days (720 h): 12 and 138 included, 99,862 -> 9,986; 29 days (696 h): 8,995 / 696 = 12.92 credited
    # short -> 13, 143 included, 99,857 -> 9,986; 28 days (672 h): 13, 148 included, 99,852 -> 9,985.
    days = (end - start) // DAY
    assert by_kind[("standard", LineKind.FLAT_FEE)] == {31: 12, 30: 12, 29: 13, 28: 13}[days]
    assert usage["standard-usage"] == {31: 9_987, 30: 9_986, 29: 9_986, 28: 9_985}[days]
