"""Billing thresholds: `billing_thresholds[amount_gte]` on subscriptions and threshold invoices.

A subscription with a monetary threshold is invoiced early (`billing_reason=subscription_threshold`)
once the usage it accrued in the current period and has not been invoiced yet is worth at least
`amount_gte`. The billing cycle anchor does not move; the period-end invoice then bills the rest
(see `billing.metered_line`, which subtracts what threshold invoices already billed).

Stripe evaluates thresholds asynchronously ("invoices might not be issued at the exact moment a
specified threshold is reached"); the emulator evaluates synchronously whenever usage is recorded
and after a test clock advances, which is one of the moments Stripe could have picked.
Every function runs with the store lock held. Sources for each rule are in the README.
"""

from __future__ import annotations

import traceback
from collections.abc import Iterable
from decimal import Decimal
from typing import Any, NamedTuple

from emulators.stripe import billing, pricing
from emulators.stripe.core import Core
from emulators.stripe.wire import b, i, invalid, missing, nullable, obj

PARAM = "billing_thresholds"
# "Set the value to at least 50 currency units" (in the smallest currency unit).
MIN_AMOUNT = 50
# "Billing thresholds are not evaluated during the 24 hours prior to a subscription's period ending."
QUIET_BEFORE_PERIOD_END = 24 * 3600

# The wire spec: an empty string unsets the thresholds.
SPEC = nullable(obj({"amount_gte": i, "reset_billing_cycle_anchor": b}))

PriceQty = tuple[dict[str, Any], int | None]  # a price and its quantity (None: the default, 1)


# ---- validation ---------------------------------------------------------------------------------
def licensed_total(lines: Iterable[PriceQty]) -> int:
    """What the licensed (flat) prices cost per period, for (price, quantity) pairs."""
    return sum(
        pricing.amount(price, 1 if qty is None else qty) for price, qty in lines if not billing.is_metered(price)
    )


def projected_items(core: Core, sub: dict[str, Any], specs: list[dict[str, Any]]) -> list[PriceQty]:
    """The (price, quantity) pairs an `items[]` update would leave, to validate before changing anything.

    Unknown ids or prices are skipped here: the update itself reports them with Stripe's errors.
    """
    current: dict[str, PriceQty] = {x["id"]: (x["price"], x["quantity"]) for x in billing.items(sub)}
    for n, spec in enumerate(specs):
        if "id" not in spec:
            price = core.store.maybe("price", spec.get("price") or "")
            if price is not None:
                current[f"new-{n}"] = (price, spec.get("quantity"))
            continue
        if spec["id"] not in current:
            continue
        if spec.get("deleted"):
            del current[spec["id"]]
            continue
        price, qty = current[spec["id"]]
        if "price" in spec:
            price = core.store.maybe("price", spec["price"]) or price
        if "quantity" in spec:
            qty = spec["quantity"]
        current[spec["id"]] = (price, qty)
    return list(current.values())


def validate(settings: dict[str, Any] | None, licensed: int) -> dict[str, Any] | None:
    """The subscription's `billing_thresholds` for validated parameters (None unsets them)."""
    if settings is None:
        return None
    if "amount_gte" not in settings:
        # The emulator has no item usage thresholds, so a monetary threshold is the only kind.
        raise missing(f"{PARAM}[amount_gte]")
    amount = settings["amount_gte"]
    if amount < MIN_AMOUNT:
        raise invalid(
            f"{PARAM}[amount_gte]",
            f"Invalid {PARAM}[amount_gte]: must be a positive integer of at least "
            f"{MIN_AMOUNT} (in the smallest currency unit), got {amount}.",
        )
    if amount <= licensed:
        raise invalid(
            f"{PARAM}[amount_gte]",
            f"The monetary threshold ({amount}) must be greater than the sum of "
            f"the subscription's licensed prices per period ({licensed}).",
        )
    if settings.get("reset_billing_cycle_anchor"):
        raise invalid(
            f"{PARAM}[reset_billing_cycle_anchor]",
            f"{PARAM}[reset_billing_cycle_anchor]=true is not "
            "supported by this emulator; thresholds keep the billing cycle anchor (false, the default).",
        )
    return {"amount_gte": amount, "reset_billing_cycle_anchor": False}


def for_update(core: Core, sub: dict[str, Any], params: dict[str, Any]) -> dict[str, Any] | None:
    """The thresholds a subscription update leaves, checked against the items it leaves."""
    current: dict[str, Any] | None = sub.get("billing_thresholds")
    if PARAM not in params and not ("items" in params and current):
        return current
    licensed = licensed_total(projected_items(core, sub, params.get("items", [])))
    if PARAM in params:
        return validate(params[PARAM], licensed)
    assert current is not None
    if current["amount_gte"] <= licensed:  # an items change must keep the flat fees below the threshold
        raise invalid(
            "items",
            f"The subscription's monetary threshold ({current['amount_gte']}) must stay greater "
            f"than the sum of its licensed prices per period ({licensed}); change {PARAM} as well.",
        )
    return current


# ---- evaluation ---------------------------------------------------------------------------------
def evaluate_customer(core: Core, customer_id: str) -> None:
    """After usage was recorded for a customer: evaluate each of its subscriptions with a threshold."""
    _evaluate_all(core, [s for s in core.store.all(billing.SUB) if s["customer"] == customer_id])


def evaluate_clock(core: Core, clock_id: str) -> None:
    """After a test clock advanced: evaluate the subscriptions on it (usage may have come due)."""
    _evaluate_all(core, [s for s in core.store.all(billing.SUB) if s.get("test_clock") == clock_id])


def _evaluate_all(core: Core, subs: list[dict[str, Any]]) -> None:
    for sub in subs:
        if not sub.get("billing_thresholds"):
            continue
        try:
            evaluate(core, sub)
        except Exception as exc:  # never fail the caller's request; report through /_emulator/health
            core.scheduler.errors.append(f"threshold {sub['id']}: " + "".join(traceback.format_exception(exc))[-2000:])


class Accrued(NamedTuple):
    """One metered item's usage in the current period, as a threshold evaluation sees it."""

    item: dict[str, Any]
    span: billing.Window  # what the item's current price bills (from its price change, if any)
    quantity: Decimal  # cumulative in the span, up to now
    amount: int  # what that quantity costs (tiers from the span's start, one rounding)
    billed: int  # what this period's threshold invoices already billed for the item's current price
    billed_until: int | None  # the end of the last of them


def _accrued(core: Core, sub: dict[str, Any], now: int) -> list[Accrued]:
    out = []
    for item in billing.items(sub):
        if not billing.is_metered(item["price"]):
            continue
        span = billing.window(item)
        # Usage "accrued within the billing period up to the point the invoice is created": events
        # stamped in the future (Stripe accepts up to 5 minutes ahead) wait for a later evaluation.
        qty = billing.metered_quantity(core, sub, item["price"], span.start, now + 1, span.after)
        billed, until = billing.previously_billed(core, sub, item["id"], span.key)
        out.append(Accrued(item, span, qty, pricing.amount(item["price"], qty), billed, until))
    return out


def evaluate(core: Core, sub: dict[str, Any]) -> dict[str, Any] | None:
    """Create the threshold invoice if the subscription's uninvoiced usage reached its threshold."""
    settings = sub.get("billing_thresholds")
    if not settings or sub["status"] != "active" or not billing.items(sub):
        return None  # "Thresholds do not apply to trialing subscriptions"; past_due ones wait (guess)
    clock = core.clock_of(sub["customer"])
    now = core.now(clock)
    cycle_start = billing.items(sub)[0]["current_period_start"]
    cycle_end = billing.items(sub)[0]["current_period_end"]
    if now >= cycle_end - QUIET_BEFORE_PERIOD_END:
        return None
    accrued = _accrued(core, sub, now)
    pending = sub.get("_pending", [])
    # The value "excludes taxes, but includes discounts and applicable prorations".
    net = sum(a.amount - a.billed for a in accrued) + sum(p["amount"] for p in pending)
    probe = {"id": None, "created": now, "discounts": list(sub.get("discounts") or [])}
    discount = sum(d["amount"] for d in billing.discount_amount(core, probe, max(net, 0), commit=False))
    if net - discount < settings["amount_gte"]:
        return None
    return _threshold_invoice(core, sub, accrued, cycle_start, now, clock)


def _threshold_invoice(  # noqa: PLR0917 - internal helper
    core: Core, sub: dict[str, Any], accrued: list[Accrued], cycle_start: int, now: int, clock: str
) -> dict[str, Any]:
    customer = core.store.get("customer", sub["customer"])
    since = max([cycle_start, *(a.billed_until for a in accrued if a.billed_until is not None)])
    inv = billing.new_invoice(core, customer, sub, "subscription_threshold", since, now, now)
    inv["threshold_reason"] = {"amount_gte": sub["billing_thresholds"]["amount_gte"], "item_reasons": []}
    for a in accrued:
        if a.quantity == 0 and a.billed == 0:
            continue
        # The period's cumulative usage, then a credit for what earlier threshold invoices billed,
        # as in Stripe's volume-tier example. Not re-aggregated at finalisation (metered=False):
        # threshold invoices "reflect only the usage accrued ... up to the point the invoice is created".
        line = billing.add_line(
            inv,
            core,
            amount=a.amount,
            description=f"{a.quantity} × {billing.product_name(core, a.item['price'])}",
            start=a.span.key,
            end=now,
            price=a.item["price"],
            quantity=a.quantity,
            sub=sub,
            item=a.item,
        )
        line["_cycle"] = a.span.key
        billing.previously_billed_line(core, inv, sub, a.item, a.span.key)
    for pending in sub.pop("_pending", []):
        billing.add_line(inv, core, **pending)
    billing.recompute(core, inv)
    sub["latest_invoice"] = inv["id"]
    # Like every automatically charged invoice after a subscription's first: a draft, finalised
    # and charged an hour later with the subscription's or customer's default payment method.
    billing.open_draft(core, inv, clock, now)
    return inv
