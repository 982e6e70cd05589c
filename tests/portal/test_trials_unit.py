"""Free trials without a stack: the offer, the Checkout it asks for, the page's words, the reminder mail,
the first grant's claim and the reminder event's plan, with in-memory fakes."""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest

from billing.access.deadline import Deadline, DeadlineExceeded
from billing.access.ports import AccessPorts
from billing.access.routing import HANDLED_EVENTS, EventPlan, RemindTrialEnd, plan_event
from billing.access.sync import sync_subscription
from billing.access.trials import remind_trial_end
from billing.catalog_names import SUB_META_TRIAL_MAIL
from billing.model_loader import DEFAULT_MODELS_PATH, parse_models
from billing.portal.offers import describe
from billing.portal.subscribe import GoToCheckout, subscribe
from billing.portal.trials import TrialReminders, mail_key, trial_address, trial_keys, trial_offer
from tests.access.fakes import FakeApim as FakeApimSubscriptions
from tests.access.fakes import FakeStripe, FakeUsage
from tests.fakes import FakeLinks
from tests.portal.fakes import FakeApim, FakePayments, RecordingMailer

DAY = 86400


def _models_with_trials() -> Any:
    data = json.loads(DEFAULT_MODELS_PATH.read_text())
    for product in data["products"]:
        if product["id"] in ("basic", "payg"):
            product["trialDays"] = 14
    return parse_models(json.dumps(data))


MODELS = _models_with_trials()


class Ledger:
    """The trial ledger's rules (billing.store.trials) in memory: a claim writes every key or none."""

    def __init__(self) -> None:
        self.rows: dict[tuple[str, str], str] = {}

    def holder(self, product_id: str, keys: Sequence[str]) -> str | None:
        return next((self.rows[(product_id, k)] for k in keys if (product_id, k) in self.rows), None)

    def claim(self, product_id: str, keys: Sequence[str], subscription_id: str) -> str | None:
        others = [s for k in keys if (s := self.rows.get((product_id, k))) not in (None, subscription_id)]
        if others:
            return others[0]
        self.rows.update({(product_id, k): subscription_id for k in keys})
        return None


def _subscribe(product_id: str, ledger: Ledger, payments: FakePayments, uid: str = "u1") -> object:
    return subscribe(
        MODELS.product(product_id),
        uid,
        "prod",
        nonce="n1",
        apim=FakeApim({uid: f"{uid}@example.com"}),
        payments=payments,
        app_base_url="https://app.example",
        trials=ledger,
    )


def test_a_product_with_trial_days_starts_a_trial_with_the_address_kept_on_the_subscription() -> None:
    payments = FakePayments({"basic-flat": "price_b"})
    assert isinstance(_subscribe("basic", Ledger(), payments), GoToCheckout)
    request = payments.checkouts[0]
    assert request.trial_days == 14
    assert request.metadata[SUB_META_TRIAL_MAIL] == mail_key("u1@example.com")
    # the same address however it is written, as accounts are keyed
    assert mail_key(" U1@Example.COM") == mail_key("u1@example.com")


def test_no_trial_for_a_product_without_trial_days_or_after_the_consumer_had_it() -> None:
    payments = FakePayments({"standard-flat": "price_f", "standard-usage": "price_u", "basic-flat": "price_b"})
    _subscribe("standard", Ledger(), payments)
    assert (payments.checkouts[0].trial_days, SUB_META_TRIAL_MAIL in payments.checkouts[0].metadata) == (None, False)
    ledger = Ledger()
    # an account closed and opened again: a new APIM user, the same address
    ledger.claim("basic", trial_keys("old-user", mail_key("u1@example.com")), "sub_old")
    _subscribe("basic", ledger, payments, uid="u1")
    assert payments.checkouts[1].trial_days is None
    offer = trial_offer(MODELS.product("basic"), "u1", "u1@example.com", ledger)
    assert (offer.days, offer.had_it) == (None, True)
    # another consumer is still offered the trial, and so is this one for another product
    assert trial_offer(MODELS.product("basic"), "u2", "u2@example.com", ledger).days == 14
    assert trial_offer(MODELS.product("payg"), "u1", "u1@example.com", ledger).days == 14


def test_the_page_says_n_days_free_then_the_price_from_the_revenue_model() -> None:
    basic, payg = MODELS.product("basic"), MODELS.product("payg")
    # revenue-model.md: Basic is "$14.95 flat"; PAYG "$0.15 per 100 calls"
    assert describe(basic, 14).headline == "14 days free, then USD 14.95 a month"
    assert describe(payg, 14).headline == "14 days free, then pay only for what you use"
    assert "USD 0.15 per 100 calls." in describe(payg, 14).details
    assert describe(basic, 1).headline.startswith("1 day free, then")
    assert describe(basic).headline == "USD 14.95 a month"


def test_the_reminder_names_the_end_and_what_is_charged_then() -> None:
    mailer = RecordingMailer()
    reminders = TrialReminders(
        MODELS,
        {"u1": "ada@example.com"}.get,
        mailer,
        "https://app.example/api/portal/billing",
        "https://portal.example/",
    )
    ends = int(datetime(2026, 1, 15, 12, 0, tzinfo=UTC).timestamp())
    outcome = reminders.send("u1", "basic", "production", ends)
    assert "mailed" in outcome
    (mail,) = mailer.to("ada@example.com")
    assert mail.subject == "Your free trial of Basic ends on 15 January 2026"
    assert "ends on 15 January 2026 at 12:00 UTC" in mail.text
    assert "USD 14.95 a month, charged in advance: the first month when the trial ends." in mail.text
    assert "https://portal.example/" in mail.text
    assert "Your usage and invoices: https://app.example/api/portal/billing" in mail.text
    assert reminders.send("nobody", "basic", "x", ends).startswith("no reminder")
    assert len(mailer.sent) == 1


# ---- the access area: the reminder event and the first grant's claim ---------------------------
def _trialing(status: str = "trialing", **extra: Any) -> dict[str, Any]:
    sub = {
        "id": "sub_1",
        "object": "subscription",
        "status": status,
        "customer": "cus_1",
        "trial_end": 2 * DAY,
        "metadata": {"apim_user_id": "u1", "apim_product_id": "basic", "apim_subscription_name": "prod"},
        "items": {
            "data": [
                {
                    "id": "si_1",
                    "current_period_start": 0,
                    "current_period_end": 2 * DAY,
                    "price": {"product": "apim-basic", "recurring": {"usage_type": "licensed"}},
                }
            ]
        },
        "latest_invoice": {"status": "paid", "attempted": True},
    }
    sub.update(extra)
    return sub


class Sent:
    def __init__(self) -> None:
        self.sent: list[tuple[str, str, str, int]] = []

    def send(self, user_id: str, product_id: str, subscription_name: str, trial_end: int) -> str:
        self.sent.append((user_id, product_id, subscription_name, trial_end))
        return "mailed"


def _ports(sub: dict[str, Any], sent: Sent) -> AccessPorts:
    return AccessPorts(
        FakeStripe(copy.deepcopy(sub)), FakeApimSubscriptions(), FakeLinks(), FakeUsage(), reminders=sent
    )


def test_trial_will_end_is_handled_and_planned_as_a_reminder_that_survives_the_queue() -> None:
    assert "customer.subscription.trial_will_end" in HANDLED_EVENTS
    event = {
        "object": "event",
        "id": "evt_1",
        "type": "customer.subscription.trial_will_end",
        "created": 5,
        "data": {"object": _trialing()},
    }
    plan = plan_event(event)
    assert plan.actions == (RemindTrialEnd("sub_1"),)
    assert EventPlan.from_json(plan.to_json()) == plan


def test_the_reminder_goes_from_the_work_queue_and_only_while_the_trial_ends_in_a_charge() -> None:
    sent = Sent()
    ports = _ports(_trialing(), sent)
    with pytest.raises(DeadlineExceeded):  # within the webhook's 8 s: the mail is queued, not sent
        remind_trial_end("sub_1", ports, Deadline(8.0))
    assert remind_trial_end("sub_1", ports, Deadline.unbounded()) == "mailed"
    assert sent.sent == [("u1", "basic", "prod", 2 * DAY)]
    for gone in (
        _trialing("active"),
        _trialing("canceled"),
        _trialing(cancel_at_period_end=True),
        _trialing(metadata={**_trialing()["metadata"], "apim_access_ended_at": "5"}),
    ):
        assert remind_trial_end("sub_1", _ports(gone, sent), Deadline.unbounded()).startswith("no reminder")
    assert len(sent.sent) == 1


def test_the_first_grant_claims_the_trial_and_a_second_trial_is_refused_and_cancelled() -> None:
    ledger, mail = Ledger(), mail_key("u1@example.com")
    first = _trialing(metadata={**_trialing()["metadata"], SUB_META_TRIAL_MAIL: mail})
    stripe, apim = FakeStripe(first), FakeApimSubscriptions()
    ports = AccessPorts(stripe, apim, FakeLinks(), FakeUsage(), trials=ledger)
    assert sync_subscription("sub_1", ports, event_created=1).outcome == "changed"
    assert apim.subs["sub_1"].state == "active"  # trialing: the key works
    assert ledger.rows == {("basic", "user-u1"): "sub_1", ("basic", f"mail-{mail}"): "sub_1"}
    assert sync_subscription("sub_1", ports, event_created=2).outcome == "unchanged"  # a retry: still its own

    # The same address under a new APIM user (the account closed and opened again), the first cancelled.
    apim.subs["sub_1"] = replace(apim.subs["sub_1"], state="cancelled")
    again = _trialing(id="sub_2", metadata={**first["metadata"], "apim_user_id": "u9"})
    stripe.sub = again
    result = sync_subscription("sub_2", ports, event_created=3)
    assert result.outcome == "ignored"
    assert "had the free trial of basic already (subscription sub_1)" in result.detail
    assert stripe.cancelled == ["sub_2"]
    assert "sub_2" not in apim.subs
    # A subscription without a trial claims nothing and is not refused for one.
    stripe.sub = {**again, "id": "sub_3", "trial_end": None}
    assert sync_subscription("sub_3", ports, event_created=4).outcome == "changed"
    assert set(ledger.rows.values()) == {"sub_1"}


def test_a_mail_setting_that_cannot_work_leaves_the_webhooks_granting_keys() -> None:
    from billing.bootstrap import trial_reminders  # noqa: PLC0415

    settings = {"SMTP_PORT": "not a port", "SMTP_HOST": "mail.example"}
    assert trial_reminders(MODELS, settings, apim=None) is None  # type: ignore[arg-type]  # refused before APIM


def test_one_trial_per_mailbox_whatever_case_tags_or_gmail_dots() -> None:
    # Decision (billing.portal.trials.trial_address): case and a +tag never make another mailbox; dots do
    # only outside Gmail, which ignores them (googlemail.com is gmail.com).
    assert trial_address(" Ada.Lovelace+trial2@Example.COM ") == "ada.lovelace@example.com"
    assert trial_address("a.d.a+x@googlemail.com") == trial_address("ADA@gmail.com") == "ada@gmail.com"
    assert trial_address("a.da@example.com") != trial_address("ada@example.com")
    assert trial_address("+only@example.com") == "+only@example.com"  # no local part left: kept as it is
    ledger = Ledger()
    ledger.claim("basic", trial_keys("u-first", mail_key("ada@example.com")), "sub_first")
    for other in ("ADA@example.com", "ada+again@example.com", "Ada+2@Example.com"):
        offer = trial_offer(MODELS.product("basic"), "u-second", other, ledger)
        assert (offer.days, offer.had_it) == (None, True), other
    gmail = Ledger()
    gmail.claim("basic", trial_keys("u-first", mail_key("bruno.tester@gmail.com")), "sub_g")
    assert trial_offer(MODELS.product("basic"), "u-second", "brunotester+x@googlemail.com", gmail).had_it
    # another mailbox at the same provider is still offered the trial
    assert trial_offer(MODELS.product("basic"), "u-third", "bruno.t@example.com", gmail).days == 14
