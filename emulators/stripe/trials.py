"""Free trials: their parameters, and `customer.subscription.trial_will_end` three days before one ends.

The rest of a trial lives where the billing engine handles every subscription (billing.py): the
subscription starts `trialing` with a USD 0 first invoice ("Trial period for <product>"), its first
period ends at `trial_end` (the billing cycle anchor), where `renew` makes it `active` and drafts the
first real invoice (`subscription_cycle`, finalised and charged an hour later like any renewal; a
declined charge makes it `past_due`), and usage reported during the trial is never billed.
Sources: emulators/stripe/README.md, "Free trials".
"""

from __future__ import annotations

from typing import Any

from emulators.stripe.core import Core
from emulators.stripe.periods import days
from emulators.stripe.wire import Spec, enum, invalid, obj

MAX_TRIAL_DAYS = 730  # "The trial period must be 730 days (2 years) or less."
WILL_END_BEFORE = days(3)  # "Occurs three days before a subscription's trial period is scheduled to end"
# `trial_settings[end_behavior][missing_payment_method]`: what happens at the trial's end without a payment
# method. Only Stripe's default is emulated: the invoice is made and its charge fails (`past_due`).
END_BEHAVIORS = ("cancel", "create_invoice", "pause")
DEFAULT_SETTINGS = {"end_behavior": {"missing_payment_method": "create_invoice"}}
TRIAL_SETTINGS: Spec = obj(
    {"end_behavior": obj({"missing_payment_method": enum(*END_BEHAVIORS)}, ("missing_payment_method",))},
    ("end_behavior",),
)


def check_days(value: int | None, param: str) -> int | None:
    """`trial_period_days`: "Has to be at least 1", and at most 730."""
    if value is None:
        return None
    if value < 1:
        raise invalid(param, f"Invalid {param}: must be at least 1.")
    if value > MAX_TRIAL_DAYS:
        raise invalid(param, f"Invalid {param}: the trial period must be {MAX_TRIAL_DAYS} days (2 years) or less.")
    return value


def settings(spec: dict[str, Any] | None, param: str) -> dict[str, Any]:
    """The subscription's `trial_settings`; end behaviours other than Stripe's default are refused."""
    if spec is None:
        return {"end_behavior": dict(DEFAULT_SETTINGS["end_behavior"])}
    behavior = spec["end_behavior"]["missing_payment_method"]
    if behavior != "create_invoice":
        raise invalid(
            f"{param}[end_behavior][missing_payment_method]",
            f"missing_payment_method={behavior} is not supported by this emulator (only create_invoice).",
        )
    return {"end_behavior": {"missing_payment_method": behavior}}


def schedule_will_end(core: Core, sub: dict[str, Any], clock: str, now: int) -> None:
    """`customer.subscription.trial_will_end` three days before the trial ends, by the customer's clock;
    at once when less is left ("If a trial is shortened so that fewer than three days remain, this event
    can fire immediately"). Nothing is sent for a trial that ended or changed meanwhile."""
    trial_end = sub.get("trial_end")
    if not trial_end or sub["status"] != "trialing":
        return
    sub_id = sub["id"]

    def will_end() -> None:
        current = core.store.get("subscription", sub_id)
        if current["status"] == "trialing" and current["trial_end"] == trial_end:
            core.emit("customer.subscription.trial_will_end", current, None, clock)

    due = trial_end - WILL_END_BEFORE
    if due <= now:
        will_end()
    else:
        core.schedule(clock, due, f"trial_will_end {sub_id}", will_end)


def usage_is_billed(sub: dict[str, Any]) -> bool:
    """ "During the trial period, any usage accrued doesn't count toward the total charged to the customer"."""
    return sub["status"] != "trialing"


def check_session(params: dict[str, Any], due: int) -> int | None:
    """A Checkout Session's trial parameters; its trial days (None: no trial). `due`: the first invoice's
    total without a trial."""
    data = params.get("subscription_data") or {}
    days_ = check_days(data.get("trial_period_days"), "subscription_data[trial_period_days]")
    settings(data.get("trial_settings"), "subscription_data[trial_settings]")
    if (days_ or due == 0) and params.get("payment_method_collection") == "if_required":
        # "When set to if_required, Checkout will not collect a payment method when the total due for the
        # session is 0": the hosted page here always collects a card.
        raise invalid(
            "payment_method_collection",
            "payment_method_collection=if_required with nothing due today is not supported by this emulator.",
        )
    return days_
