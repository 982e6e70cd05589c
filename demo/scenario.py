"""The demo's story, step by step, on a running local stack. `make demo` runs it at full size;
a test runs the same code with smaller volumes and asserts the report.

Consumers sign up and subscribe through the real delegation and Checkout flow over HTTP, call the
API through the gateway (some over quota or rate limit), their usage is pushed to Stripe, each
consumer's Stripe test clock is advanced past the period end, and every invoice is compared with
the pricing engine's quote. One consumer's renewal fails (key suspended, then reactivated after
paying) and one cancels mid-period (final invoice with the usage so far).
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import requests

from billing.cli import main as billing_main
from billing.model_loader import DEFAULT_MODELS_PATH, load_models
from billing.pricing import part_quote, quote
from billing.usage.wiring import lag_seconds
from demo.progress import ProgressBar
from demo.report import ConsumerResult, Line, money
from devstack.consumer import Consumer, JourneyError
from devstack.stack import LocalStack, StackNotSettled
from emulators.apim.usage import classify

PASSWORD = "demo password " + "x" * 8
HOUR = 3600


@dataclass(frozen=True)
class ConsumerPlan:
    name: str
    product_id: str
    gateway_calls: int  # real HTTP calls through the gateway (some may be blocked)
    bulk_calls: int = 0  # successful calls recorded in bulk, as the gateway would count them
    renewal_fails: bool = False
    cancels_mid_period: bool = False
    calls_per_burst: int = 0  # 0: as fast as possible in one burst; rate limits bite
    # Changes plan from the billing page in the middle of the period (an upgrade: at once, same key), then
    # makes UPGRADE_BURST gateway calls and this many further calls in bulk on the new product.
    upgrades_to: str = ""
    calls_after_upgrade: int = 0


# `make demo`: realistic volumes (bulk usage for the large ones), small enough for a few minutes.
FULL_PLAN = (
    ConsumerPlan("Fatima (free)", "free", gateway_calls=120),
    ConsumerPlan("Dmitri (developer)", "developer", gateway_calls=150, bulk_calls=1_000),
    ConsumerPlan("Paula (payg)", "payg", gateway_calls=60, bulk_calls=9_940, cancels_mid_period=True),
    ConsumerPlan("Bruno (basic trial)", "basic", gateway_calls=130, bulk_calls=40_000),
    ConsumerPlan("Sofia (standard)", "standard", gateway_calls=60, bulk_calls=149_940, renewal_fails=True),
    ConsumerPlan("Pedro (pro)", "pro", gateway_calls=60, bulk_calls=599_940),
    ConsumerPlan("Erin (enterprise)", "enterprise", gateway_calls=60, bulk_calls=3_000_001),
    ConsumerPlan(
        "Ulrich (upgrades)",
        "standard",
        gateway_calls=60,
        bulk_calls=100_440,
        upgrades_to="pro",
        calls_after_upgrade=300_000,
    ),
)
UPGRADE_BURST = 150  # more than Standard's 100 calls a minute, well within Pro's 1,200

LAST_CALLS = 5  # calls made in the last seconds of each live paid consumer's period
LAST_CALLS_BEFORE_END = 4  # seconds before the period end, in APIM's time

# The test's plan: every path of the story, with fewer calls.
SMALL_PLAN = (
    ConsumerPlan("Fatima (free)", "free", gateway_calls=105),
    ConsumerPlan("Dmitri (developer)", "developer", gateway_calls=110, bulk_calls=1_000),
    ConsumerPlan("Paula (payg)", "payg", gateway_calls=20, bulk_calls=980, cancels_mid_period=True),
    ConsumerPlan("Sofia (standard)", "standard", gateway_calls=20, bulk_calls=100_980, renewal_fails=True),
    ConsumerPlan("Erin (enterprise)", "enterprise", gateway_calls=10, bulk_calls=1_500_000),
    ConsumerPlan("Bruno (basic trial)", "basic", gateway_calls=10, bulk_calls=1_000),
    ConsumerPlan(
        "Ulrich (upgrades)",
        "standard",
        gateway_calls=20,
        bulk_calls=100_480,
        upgrades_to="pro",
        calls_after_upgrade=300_000,
    ),
)


# The demo's provider offers a free trial of Basic (the shipped models file has none: revenue-model.md bills
# the flat fee on the first invoice): the stack's app reads payment/monetizationModels.json with this added.
DEMO_TRIALS = {"basic": 14}


def demo_models_file(directory: Path) -> Path:
    """payment/monetizationModels.json with the demo's trials, written into `directory`."""
    data = json.loads(DEFAULT_MODELS_PATH.read_text(encoding="utf-8"))
    for product in data["products"]:
        if product["id"] in DEMO_TRIALS:
            product["trialDays"] = DEMO_TRIALS[product["id"]]
    path = directory / "monetizationModels.json"
    path.write_text(json.dumps(data, indent=2), encoding="utf-8")
    return path


@dataclass
class ConsumerState:
    plan: ConsumerPlan
    consumer: Consumer
    subscription_id: str = ""
    key: str = ""
    customer_id: str = ""
    clock_id: str = ""
    gateway_outcomes: dict[int, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    # What the key answered at each access change (HTTP status), for the report and the test.
    key_status: dict[str, int] = field(default_factory=dict)
    # A plan change: when (Stripe's time), the period it fell in, and the gateway's answers before it.
    changed_at: int = 0
    changed_period: tuple[int, int] = (0, 0)
    outcomes_before_change: dict[int, int] = field(default_factory=dict)


class DemoError(RuntimeError):
    """A step of the demo did not go as the product promises (the message says which)."""


Say = Callable[[str], None]


class Demo:
    def __init__(self, stack: LocalStack, plan: tuple[ConsumerPlan, ...], say: Say = print) -> None:
        try:
            self.stripe_emulator, self.apim = stack.stripe_emulator, stack.apim_emulator
        except RuntimeError as exc:  # the stack is not running
            raise DemoError(str(exc)) from exc
        self.stack = stack
        self.stripe = self.stripe_emulator.client(max_network_retries=2).v1
        self.plan = plan
        self.say = say
        self.models = load_models()
        self.states: list[ConsumerState] = []

    # ---- the story ---------------------------------------------------------------------------
    def run(self) -> list[ConsumerResult]:
        trials = ", ".join(f"{days}-day free trial of {pid}" for pid, days in DEMO_TRIALS.items())
        self.step(f"1. The catalog, from payment/monetizationModels.json (with a {trials} for the demo)")
        self.apply_catalog()
        self.step("2. Consumers sign up (address confirmed by a mailed link) and subscribe through the portal")
        for plan in self.plan:
            self.states.append(self.onboard(plan))
        # The daily push's first run after a subscription starts only opens its usage window (the
        # calls before it reach Stripe with the closing report); here it runs before any traffic.
        self.say("The usage push's first run opens the new subscriptions' usage windows:")
        self.wait_for_the_report_lag()  # its window, which ends the lag before now, must reach into the periods
        self.run_usage_push()
        self.step("3. Traffic through the API gateway")
        self.send_traffic()
        self.step("4. Usage pushed to Stripe (the daily timer's work, run now)")
        self.wait_for_the_report_lag()
        self.sync_clocks_to_now()
        self.run_usage_push()
        for state in self.states:
            if state.plan.cancels_mid_period:
                self.sync_clocks_to_now()
                self.cancel_mid_period(state)
        for state in self.states:
            if state.plan.upgrades_to:
                self.upgrade_mid_period(state)
        for state in self.states:
            if self.models.product(state.plan.product_id).trial_days:
                self.trial_reminder(state)
        self.step("5. The billing period ends: renewal invoices, closing usage, payment")
        self.end_period()
        for state in self.states:
            if self.models.product(state.plan.product_id).trial_days:
                self.check_trial_end(state)
        self.step("6. Invoices compared with the pricing engine's quotes")
        return [self.result_of(state) for state in self.states]

    def step(self, title: str) -> None:
        self.say(f"\n== {title}")

    def apply_catalog(self) -> None:
        for argv in (["catalog", "plan"], ["catalog", "apply"]):
            if billing_main(argv) != 0:
                raise DemoError(f"`python -m billing {' '.join(argv)}` failed")

    def onboard(self, plan: ConsumerPlan) -> ConsumerState:
        email = f"{plan.name.split()[0].lower()}.{secrets.token_hex(3)}@example.com"
        consumer = self.stack.consumer(email, PASSWORD, plan.name)
        state = ConsumerState(plan, consumer)
        user_id = consumer.sign_up(first_name=plan.name.split()[0], last_name="Demo")
        product = self.models.product(plan.product_id)
        name = f"{plan.product_id} for {plan.name.split()[0]}"
        if product.is_paid:
            # Stripe's way to test renewals: the consumer's Stripe customer lives on a test clock.
            state.clock_id, state.customer_id = self.stack.customer_on_test_clock(
                user_id, email, int(time.time()), plan.name
            )
            if consumer.subscriptions():
                raise DemoError(f"{plan.name} has a subscription before paying")
            consumer.subscribe_and_pay(plan.product_id, name)
            self.settle()
        else:
            answer = consumer.subscribe(plan.product_id, name)
            if answer.status_code >= 400:
                raise DemoError(f"{plan.name} could not subscribe to Free ({answer.status_code})")
        subscription = self.wait_for_state(state, "active")
        state.subscription_id, state.key = subscription.subscription_id, subscription.primary_key
        if product.trial_days:
            self.start_trial(state, product.trial_days)
        paid = " after paying with 4242 4242 4242 4242" if product.is_paid else " (no payment asked)"
        self.say(
            f"  {plan.name:<20} signed up and confirmed by mail, subscribed to {plan.product_id:<10} key active{paid}"
        )
        return state

    def wait_for_state(self, state: ConsumerState, wanted: str, timeout: float = 60) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            subs = [s for s in state.consumer.subscriptions() if s.product_id == state.plan.product_id]
            if subs and subs[0].state == wanted:
                return subs[0]
            if time.monotonic() > deadline:
                seen = subs[0].state if subs else "no subscription"
                raise DemoError(f"{state.plan.name}: subscription is '{seen}', expected '{wanted}'")
            self.settle()
            time.sleep(0.1)

    def send_traffic(self) -> None:
        for state in self.states:
            bar = ProgressBar(state.plan.gateway_calls, f"{state.plan.name}")
            outcomes = self.call_gateway(state.key, state.plan.gateway_calls, bar.advance)
            bar.close()
            for status, count in outcomes.items():
                state.gateway_outcomes[status] = state.gateway_outcomes.get(status, 0) + count
            blocked = sum(c for s, c in outcomes.items() if s in (401, 403, 429))
            if blocked:
                kinds = ", ".join(f"{count} x {status}" for status, count in sorted(outcomes.items()) if status != 200)
                state.notes.append(f"{blocked} of {state.plan.gateway_calls} gateway calls blocked ({kinds})")
            if state.plan.bulk_calls:
                self.apim.record_usage(state.subscription_id, state.plan.bulk_calls, at=datetime.now(UTC))
                state.notes.append(f"{state.plan.bulk_calls:,} further successful calls recorded in bulk")

    def call_gateway(self, key: str, calls: int, progress: Callable[[int], None]) -> dict[int, int]:
        def one(_: int) -> int:
            response = requests.get(
                f"{self.apim.gateway_url}/echo/hello", headers={"Ocp-Apim-Subscription-Key": key}, timeout=30
            )
            progress(1)
            return response.status_code

        with ThreadPoolExecutor(max_workers=8) as pool:
            statuses = list(pool.map(one, range(calls)))
        counts: dict[int, int] = {}
        for status in statuses:
            counts[status] = counts.get(status, 0) + 1
        return counts

    def gateway_status(self, key: str) -> int:
        return requests.get(
            f"{self.apim.gateway_url}/echo/hello", headers={"Ocp-Apim-Subscription-Key": key}, timeout=30
        ).status_code

    def sync_clocks_to_now(self) -> None:
        """Bring each test clock to the present, as time passes for real customers.

        The app stamps usage in wall-clock time; a clock left behind would see those events as
        'in the future', and a cancellation would end the final invoice before them.
        """
        now = int(time.time()) + 1
        for state in self.paid_states():
            self.advance_clock(state, now)

    def wait_for_the_report_lag(self) -> None:
        """The push reads usage up to now minus the report lag (APIM's data comes late): the daily push
        runs hours after most calls; here the story waits the few seconds of the local stack's lag."""
        lag = lag_seconds()
        self.say(f"  (waiting {lag} s, the report lag, so that APIM's data has the calls just made)")
        time.sleep(lag + 1)

    def run_usage_push(self) -> None:
        if billing_main(["usage", "push"]) != 0:
            raise DemoError("`python -m billing usage push` reported failures")
        self.settle()

    def cancel_mid_period(self, state: ConsumerState) -> None:
        answer = state.consumer.unsubscribe(state.subscription_id)
        if answer.status_code >= 400:
            raise DemoError(f"{state.plan.name} could not cancel ({answer.status_code})")
        self.settle()
        self.wait_for_state(state, "cancelled")
        status = state.key_status["cancelled"] = self.gateway_status(state.key)
        state.notes.append(f"cancelled mid-period: final invoice with the usage so far; key now answers {status}")
        self.say(f"  {state.plan.name:<20} cancelled mid-period; the key now answers {status}")

    def end_period(self) -> None:
        live = [s for s in self.paid_states() if not s.plan.cancels_mid_period]
        for state in live:
            if state.plan.renewal_fails:
                self.swap_to_failing_card(state)
        ends = sorted((self.current_period_end(state), n) for n, state in enumerate(live))
        # Every consumer's last calls first: periods can end seconds apart, and advancing a test clock takes
        # real seconds during which APIM's clock would pass the next consumer's last moments.
        for period_end, n in ends:
            self.last_second_calls(live[n], period_end)
        for period_end, n in ends:
            # Just past the period end: Stripe drafts the renewal invoice (invoice.created), and the
            # app reports the period's closing usage, once APIM's data has the last calls (the report
            # lag), before Stripe finalises the invoice an hour later.
            self.advance_clock(live[n], period_end + 300)
        self.settle()
        for state in live:
            clock = self.stripe.test_helpers.test_clocks.retrieve(state.clock_id)
            self.advance_clock(state, clock.frozen_time + 2 * HOUR)
        self.settle()
        for state in live:
            if state.plan.renewal_fails:
                self.recover_failed_payment(state)

    def last_second_calls(self, state: ConsumerState, period_end: int) -> None:
        """A few calls in the last seconds of the period, in APIM's time: they reach APIM's data after the
        period ended, so only a closing report that waits for the report lag bills them."""
        now = self.apim.now().timestamp()
        if now > period_end - 1:
            return  # APIM's clock only goes forward, and an earlier step took it past this period (a short trial)
        ahead = period_end - LAST_CALLS_BEFORE_END - now
        if ahead > 0:  # otherwise an earlier consumer's last calls brought APIM's clock within these seconds
            self.apim.advance_clock(ahead)
        outcomes = self.call_gateway(state.key, LAST_CALLS, lambda _: None)
        for status, count in outcomes.items():
            state.gateway_outcomes[status] = state.gateway_outcomes.get(status, 0) + count
        state.notes.append(f"{LAST_CALLS} calls {LAST_CALLS_BEFORE_END} s before the period end, reported after it")

    def upgrade_mid_period(self, state: ConsumerState) -> None:
        """Half-way through the period (Stripe's and APIM's clocks moved there), the consumer changes plan on
        the billing page: Stripe charges the prorated difference at once, the key moves to the new product."""
        target = state.plan.upgrades_to
        sub = self.stripe.subscriptions.retrieve(state.subscription_id)
        start, end = (int(sub["items"]["data"][0][k]) for k in ("current_period_start", "current_period_end"))
        at = start + (end - start) // 2
        ahead = at - self.apim.now().timestamp()
        if ahead > 0:
            self.apim.advance_clock(ahead)
        self.advance_clock(state, at)
        self.settle()
        answer = state.consumer.change_plan(state.subscription_id, target)
        if answer.status_code >= 400:
            raise DemoError(f"{state.plan.name} could not change to {target} ({answer.status_code})")
        self.settle()
        moved = [s for s in state.consumer.subscriptions() if s.subscription_id == state.subscription_id]
        if not moved or (moved[0].product_id, moved[0].state) != (target, "active"):
            raise DemoError(f"{state.plan.name}: the subscription did not move to {target}")
        same_key = moved[0].primary_key == state.key
        state.changed_at, state.changed_period = at, (start, end)
        state.outcomes_before_change, state.gateway_outcomes = state.gateway_outcomes, {}
        outcomes = self.call_gateway(state.key, UPGRADE_BURST, lambda _: None)
        state.gateway_outcomes.update(outcomes)
        self.apim.record_usage(state.subscription_id, state.plan.calls_after_upgrade, at=self.apim.now())
        state.notes.append(
            f"upgraded to {target} half-way through the period on the billing page (prorated "
            f"difference charged at once); {'same' if same_key else 'a NEW'} key; a burst of "
            f"{UPGRADE_BURST} calls answered {dict(sorted(outcomes.items()))}; "
            f"{state.plan.calls_after_upgrade:,} further calls in bulk"
        )
        self.say(
            f"  {state.plan.name:<20} upgraded {state.plan.product_id} -> {target} half-way through the period; "
            f"{'same' if same_key else 'NEW'} key, {UPGRADE_BURST} calls in a burst: "
            f"{dict(sorted(outcomes.items()))}"
        )

    def swap_to_failing_card(self, state: ConsumerState) -> None:
        method = self.stripe.payment_methods.attach(
            "pm_card_chargeCustomerFail", params={"customer": state.customer_id}
        )
        # Checkout put the card it collected on the subscription (Stripe: it becomes the subscription's
        # default payment method), and a renewal charges that one first: replace it there.
        self.stripe.subscriptions.update(state.subscription_id, params={"default_payment_method": method.id})
        self.say(f"  {state.plan.name:<20} card replaced by one that will be declined")

    def recover_failed_payment(self, state: ConsumerState) -> None:
        self.wait_for_state(state, "suspended")
        refused = state.key_status["suspended"] = self.gateway_status(state.key)
        self.say(f"  {state.plan.name:<20} renewal payment failed: subscription suspended, key answers {refused}")
        invoice = self.renewal_invoice(state)
        method = self.stripe.payment_methods.attach("pm_card_visa", params={"customer": state.customer_id})
        self.stripe.invoices.pay(invoice.id, params={"payment_method": method.id})
        self.settle()
        self.wait_for_state(state, "active")
        accepted = state.key_status["reactivated"] = self.gateway_status(state.key)
        self.say(f"  {state.plan.name:<20} paid the open invoice: reactivated, key answers {accepted}")
        state.notes.append(f"renewal declined: key suspended (answered {refused}); paid: reactivated ({accepted})")

    # ---- Stripe and settling -------------------------------------------------------------------
    def paid_states(self) -> list[ConsumerState]:
        return [s for s in self.states if s.clock_id]

    def advance_clock(self, state: ConsumerState, to: int) -> None:
        clock = self.stripe.test_helpers.test_clocks.retrieve(state.clock_id)
        if to <= clock.frozen_time:
            return
        self.stripe.test_helpers.test_clocks.advance(state.clock_id, params={"frozen_time": to})
        deadline = time.monotonic() + 60
        while self.stripe.test_helpers.test_clocks.retrieve(state.clock_id).status != "ready":
            if time.monotonic() > deadline:
                raise DemoError(f"test clock of {state.plan.name} did not finish advancing")
            time.sleep(0.1)

    def current_period_end(self, state: ConsumerState) -> int:
        sub = self.stripe.subscriptions.retrieve(state.subscription_id)
        return int(max(item["current_period_end"] for item in sub["items"]["data"]))

    def settle(self, timeout: float = 60) -> None:
        """Wait until every webhook was delivered and every queued job of the app has run, including the
        jobs that wait for the report lag (closing reports, a cancellation's final invoice)."""
        try:
            self.stack.settle_delayed(timeout)
        except StackNotSettled as exc:
            raise DemoError(str(exc)) from exc

    def invoices(self, state: ConsumerState) -> list[Any]:
        found = self.stripe.invoices.list(params={"subscription": state.subscription_id, "limit": 100})
        return sorted(found.data, key=lambda inv: inv.created)

    def metered_items(self, state: ConsumerState) -> set[str]:
        sub = self.stripe.subscriptions.retrieve(state.subscription_id, params={"expand": ["items.data.price"]})
        items = sub.to_dict()["items"]["data"]
        return {item["id"] for item in items if item["price"]["recurring"]["usage_type"] == "metered"}

    def renewal_invoice(self, state: ConsumerState) -> Any:
        renewals = [inv for inv in self.invoices(state) if inv.billing_reason == "subscription_cycle"]
        if not renewals:
            raise DemoError(f"{state.plan.name} has no renewal invoice")
        return renewals[0]

    # ---- the report ----------------------------------------------------------------------------
    def successful_and_blocked(self, state: ConsumerState) -> tuple[int, int]:
        """What the consumer did, as the demo saw it (the gateway's answers and the bulk calls), classed as
        APIM classes calls: the truth the invoice is checked against, read from nothing the app reads."""
        classes = [(classify(status), count) for status, count in state.gateway_outcomes.items()]
        successful = sum(count for kind, count in classes if kind == "success") + state.plan.bulk_calls
        return successful, sum(count for kind, count in classes if kind == "blocked")

    def result_of(self, state: ConsumerState) -> ConsumerResult:
        if self.models.product(state.plan.product_id).trial_days:
            return self.trial_result(state)
        if state.changed_at:
            return self.upgraded_result(state)
        product = self.models.product(state.plan.product_id)
        successful, blocked = self.successful_and_blocked(state)
        quoted = [Line(line.description, line.amount) for line in quote(product, successful).lines]
        invoiced: list[Line] = []
        if product.is_paid:
            invoices = self.invoices(state)
            first = invoices[0]
            # The period's flat fee was billed in advance on the first invoice; its usage in arrears
            # on the next one (the renewal, or the final invoice of a cancellation).
            closing = invoices[1] if len(invoices) > 1 else None
            metered = self.metered_items(state)
            invoiced += [
                Line(line.description, line.amount)
                for line in first.lines.data
                if _subscription_item(line) not in metered
            ]
            usage = [line for line in (closing.lines.data if closing else []) if _subscription_item(line) in metered]
            invoiced += [Line(line.description, line.amount) for line in usage]
            if product.is_metered and not usage:
                state.notes.append("no usage line found on the closing invoice")
        return ConsumerResult(
            state.plan.name, product.id, successful, blocked, invoiced, quoted, product.currency, state.notes
        )

    def upgraded_result(self, state: ConsumerState) -> ConsumerResult:
        """A consumer who upgraded: each part of the period quoted on its product by the pricing engine (fee
        prorated, included calls shared by time), against the first invoice, the upgrade's invoice and the
        renewal's usage lines (the old price's usage until the change, the new one's after it)."""
        old, new = self.models.product(state.plan.product_id), self.models.product(state.plan.upgrades_to)
        start, end = state.changed_period
        before = (
            sum(c for s, c in state.outcomes_before_change.items() if classify(s) == "success") + state.plan.bulk_calls
        )
        after = (
            sum(c for s, c in state.gateway_outcomes.items() if classify(s) == "success")
            + state.plan.calls_after_upgrade
        )
        blocked = sum(
            c
            for outcomes in (state.outcomes_before_change, state.gateway_outcomes)
            for s, c in outcomes.items()
            if classify(s) == "blocked"
        )
        parts = (
            part_quote(old, before, start, end, since=start, until=state.changed_at),
            part_quote(new, after, start, end, since=state.changed_at, until=end),
        )
        quoted = [Line(line.description, line.amount) for q in parts for line in q.lines]
        invoices = self.invoices(state)
        first = [inv for inv in invoices if inv.billing_reason == "subscription_create"]
        update = [inv for inv in invoices if inv.billing_reason == "subscription_update"]
        cycle = [inv for inv in invoices if inv.billing_reason == "subscription_cycle"][:1]
        invoiced = [Line(line.description, line.amount) for inv in first + update for line in inv.lines.data]
        invoiced += [
            Line(line.description, line.amount)
            for inv in cycle
            for line in inv.lines.data
            if self.is_metered_price(line)
        ]
        return ConsumerResult(
            state.plan.name, f"{old.id}>{new.id}", before + after, blocked, invoiced, quoted, new.currency, state.notes
        )

    def is_metered_price(self, line: Any) -> bool:
        price = ((line.to_dict().get("pricing") or {}).get("price_details") or {}).get("price")
        return bool(price) and self.stripe.prices.retrieve(price).recurring.usage_type == "metered"

    # ---- a free trial ------------------------------------------------------------------------------
    def start_trial(self, state: ConsumerState, days: int) -> None:
        """Checkout charged nothing and the key works at once: the trial's first invoice is USD 0.00."""
        first = self.invoices(state)[0]
        status = state.key_status["trial"] = self.gateway_status(state.key)
        state.gateway_outcomes[status] = state.gateway_outcomes.get(status, 0) + 1  # a call like any other
        state.notes.append(
            f"{days}-day free trial: Checkout took a card and charged {money(first.total)}; "
            f"the key answered {status} at once"
        )

    def trial_mails(self, state: ConsumerState) -> list[Any]:
        return [
            m
            for m in self.stack.mail_server.messages(to=state.consumer.email)
            if m.subject.startswith("Your free trial")
        ]

    def trial_reminder(self, state: ConsumerState) -> None:
        """Three days before the trial ends Stripe sends trial_will_end, and the app mails the consumer (had the
        clock jumped past the end at once, the app would find the trial over and, rightly, remind nobody)."""
        trial_end = int(self.stripe.subscriptions.retrieve(state.subscription_id).trial_end or 0)
        self.advance_clock(state, trial_end - 3 * 86400 + 60)
        self.settle()
        mails = self.trial_mails(state)
        if len(mails) != 1:
            raise DemoError(f"{state.plan.name}: expected one trial reminder mail, found {len(mails)}")
        state.notes.append(f'reminder mailed 3 days before the end: "{mails[0].subject}"')
        self.say(f'  {state.plan.name:<20} 3 days before the trial ends: mailed "{mails[0].subject}"')

    def check_trial_end(self, state: ConsumerState) -> None:
        """The first real invoice at the trial's end, and no second reminder."""
        if len(self.trial_mails(state)) != 1:
            raise DemoError(f"{state.plan.name}: the trial reminder was not mailed exactly once")
        conversion = self.invoices(state)[1]
        if conversion.status != "paid":
            raise DemoError(f"{state.plan.name}: the invoice at the trial's end is {conversion.status}")
        state.notes.append(f"at the trial's end the first month was charged: {money(conversion.amount_paid)}")
        self.say(
            f"  {state.plan.name:<20} at the trial's end {money(conversion.amount_paid)} charged for the first month"
        )

    def trial_result(self, state: ConsumerState) -> ConsumerResult:
        """The trial's period: nothing billed for its calls (the trial's USD 0 invoice), then the first month
        billed in advance at its end, as the pricing engine quotes a period with no calls yet."""
        product = self.models.product(state.plan.product_id)
        successful, blocked = self.successful_and_blocked(state)
        quoted = [Line(f"{product.display_name}: {product.trial_days} days free ({successful:,} calls)", 0)]
        quoted += [Line(f"{line.description}, first month", line.amount) for line in quote(product, 0).lines]
        invoiced = [Line(line.description, line.amount) for inv in self.invoices(state)[:2] for line in inv.lines.data]
        return ConsumerResult(
            state.plan.name, product.id, successful, blocked, invoiced, quoted, product.currency, state.notes
        )


def _subscription_item(line: Any) -> str:
    parent = line.to_dict().get("parent") or {}
    details = parent.get("subscription_item_details") or {}
    return str(details.get("subscription_item") or "")


def run_demo(stack: LocalStack, plan: tuple[ConsumerPlan, ...], say: Say = print) -> list[ConsumerResult]:
    try:
        return Demo(stack, plan, say).run()
    except JourneyError as exc:
        raise DemoError(str(exc)) from exc
