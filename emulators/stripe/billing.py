"""The billing engine: subscriptions, their periods, invoices, payments and retries.

Every function runs with the store lock held and takes "now" from the customer's clock.
"""

from __future__ import annotations

import copy
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, NamedTuple

from emulators.stripe import pricing, trials, usage
from emulators.stripe.core import Core
from emulators.stripe.periods import add_interval, days, months_after
from emulators.stripe.store import blank
from emulators.stripe.wire import StripeError

SUB = "subscription"
INV = "invoice"

# Test payment methods: what charging them does (None = succeeds).
DECLINES: dict[str, tuple[str, str]] = {
    "generic_decline": ("card_declined", "Your card was declined."),
    "insufficient_funds": ("card_declined", "Your card has insufficient funds."),
}


# ---- payment methods ---------------------------------------------------------------------------
def new_card(core: Core, last4: str, brand: str, fails: str | None, exp: tuple[int, int] = (12, 2034)) -> dict:
    pm = blank("payment_method")
    pm.update(
        id=core.store.new_id("pm"),
        created=core.now(),
        type="card",
        allow_redisplay="unspecified",
        billing_details={
            "address": dict.fromkeys(["city", "country", "line1", "line2", "postal_code", "state"]),
            "email": None,
            "name": None,
            "phone": None,
            "tax_id": None,
        },
        card={
            "brand": brand,
            "display_brand": brand,
            "checks": {"address_line1_check": None, "address_postal_code_check": None, "cvc_check": "pass"},
            "country": "US",
            "exp_month": exp[0],
            "exp_year": exp[1],
            "fingerprint": f"fp{last4}{brand}",
            "funding": "credit",
            "generated_from": None,
            "last4": last4,
            "networks": {"available": [brand], "preferred": None},
            "regulated_status": "unregulated",
            "three_d_secure_usage": {"supported": True},
            "wallet": None,
        },
        customer=None,
        customer_account=None,
        _fails=fails,
    )
    return core.store.put("payment_method", pm)


def charge(core: Core, pm_id: str | None) -> StripeError | None:
    """Try to charge a payment method; the error a real charge would raise, or None."""
    if not pm_id:
        return StripeError(
            "The customer has no default payment method to charge.",
            status=402,
            type="card_error",
            code="missing_payment_method",
        )
    pm = core.store.maybe("payment_method", pm_id)
    if pm is None:
        return StripeError(f"No such PaymentMethod: '{pm_id}'", status=404, code="resource_missing")
    fails = pm.get("_fails")
    if fails:
        code, message = DECLINES[fails]
        return StripeError(message, status=402, type="card_error", code=code, decline_code=fails)
    return None


# ---- prices on subscription items ---------------------------------------------------------------
def plan_of(price: dict[str, Any]) -> dict[str, Any]:
    rec = price.get("recurring") or {}
    return {
        "id": price["id"],
        "object": "plan",
        "active": price["active"],
        "amount": price.get("unit_amount"),
        "amount_decimal": price.get("unit_amount_decimal"),
        "billing_scheme": price["billing_scheme"],
        "created": price["created"],
        "currency": price["currency"],
        "interval": rec.get("interval"),
        "interval_count": rec.get("interval_count"),
        "livemode": False,
        "metadata": dict(price.get("metadata") or {}),
        "meter": rec.get("meter"),
        "nickname": price.get("nickname"),
        "product": price["product"],
        "tiers_mode": price.get("tiers_mode"),
        "transform_usage": price.get("transform_quantity"),
        "trial_period_days": rec.get("trial_period_days"),
        "usage_type": rec.get("usage_type"),
    }


def is_metered(price: dict[str, Any]) -> bool:
    return (price.get("recurring") or {}).get("usage_type") == "metered"


def new_item(core: Core, sub: dict, price: dict, quantity: int | None, metadata: dict, now: int) -> dict:  # noqa: PLR0917
    item = blank("subscription_item")
    item.update(
        id=core.store.new_id("si"),
        created=now,
        discounts=[],
        metadata=metadata,
        price=copy.deepcopy(price),
        plan=plan_of(price),
        quantity=None if is_metered(price) else (1 if quantity is None else quantity),
        subscription=sub["id"],
        tax_rates=[],
        billing_thresholds=None,
        current_period_start=None,
        current_period_end=None,
    )
    mark_debited(item, True)  # a new subscription's first invoice charges its flat fees in advance
    return core.store.put("subscription_item", item)


def mark_debited(item: dict, debited: bool) -> None:
    """Record what this period's invoices charged in advance for the item's flat fee (None: nothing).

    Flexible billing mode "calculates credit prorations based on the original amount previously
    debited to a customer", not on the item's current price and quantity.
    """
    licensed = debited and not is_metered(item["price"])
    item["_debited"] = {"price": item["price"], "quantity": item["quantity"]} if licensed else None


def items(sub: dict) -> list[dict]:
    return sub["items"]["data"]


def product_name(core: Core, price: dict) -> str:
    product = core.store.maybe("product", price["product"])
    return product["name"] if product else price["product"]


# ---- invoices -----------------------------------------------------------------------------------
def new_invoice(  # noqa: PLR0917 - internal helper, called positionally throughout
    core: Core, customer: dict, sub: dict | None, reason: str, start: int, end: int, now: int
) -> dict:
    inv = blank("invoice")
    inv_id = core.store.new_id("in")
    inv.update(
        id=inv_id,
        account_country="US",
        account_name="Stripe emulator",
        account_tax_ids=None,
        amount_due=0,
        amount_overpaid=0,
        amount_paid=0,
        amount_remaining=0,
        amount_shipping=0,
        attempt_count=0,
        attempted=False,
        auto_advance=True,
        automatic_tax={"enabled": False, "liability": None, "status": None, "disabled_reason": None, "provider": None},
        automatically_finalizes_at=None,
        billing_reason=reason,
        collection_method="charge_automatically",
        created=now,
        currency=(sub or {}).get("currency") or "usd",
        custom_fields=None,
        customer=customer["id"],
        customer_address=None,
        customer_email=customer.get("email"),
        customer_name=customer.get("name"),
        customer_phone=customer.get("phone"),
        customer_shipping=None,
        customer_tax_exempt="none",
        customer_tax_ids=[],
        default_tax_rates=[],
        discounts=[],
        effective_at=None,
        issuer={"type": "self"},
        lines={
            "object": "list",
            "data": [],
            "has_more": False,
            "total_count": 0,
            "url": f"/v1/invoices/{inv_id}/lines",
        },
        parent=None,
        payment_settings={"default_mandate": None, "payment_method_options": None, "payment_method_types": None},
        period_start=start,
        period_end=end,
        post_payment_credit_notes_amount=0,
        pre_payment_credit_notes_amount=0,
        rendering=None,
        starting_balance=customer.get("balance", 0),
        status="draft",
        status_transitions={"finalized_at": None, "marked_uncollectible_at": None, "paid_at": None, "voided_at": None},
        subtotal=0,
        subtotal_excluding_tax=0,
        test_clock=customer.get("test_clock"),
        threshold_reason=None,  # set on billing_reason=subscription_threshold invoices (see thresholds.py)
        total=0,
        total_discount_amounts=[],
        total_excluding_tax=0,
        total_pretax_credit_amounts=[],
        total_taxes=[],
        webhooks_delivered_at=None,
        _subscription=sub["id"] if sub else None,
    )
    if sub is not None:
        inv["parent"] = {
            "type": "subscription_details",
            "quote_details": None,
            "subscription_details": {"metadata": dict(sub["metadata"]), "subscription": sub["id"]},
        }
        inv["discounts"] = list(sub.get("discounts") or [])
    return core.store.put(INV, inv)


def add_line(
    inv: dict,
    core: Core,
    *,
    amount: int,
    description: str,
    start: int,
    end: int,
    price: dict | None,
    quantity: int | Decimal | None,
    sub: dict | None,
    item: dict | None,
    proration: bool = False,
    metered: bool = False,
) -> dict:
    line = blank("line_item")
    qty = None if quantity is None else (int(quantity) if Decimal(quantity) == int(quantity) else None)
    line.update(
        id=core.store.new_id("il"),
        amount=amount,
        currency=inv["currency"],
        description=description,
        discount_amounts=[],
        discountable=True,
        discounts=[],
        invoice=inv["id"],
        metadata={},
        period={"start": start, "end": end},
        quantity=qty,
        quantity_decimal=None if quantity is None else str(quantity),
        subscription=sub["id"] if sub else None,
        pretax_credit_amounts=[],
        taxes=[],
        subtotal=amount,
        parent={
            "type": "subscription_item_details",
            "invoice_item_details": None,
            "subscription_item_details": {
                "invoice_item": None,
                "proration": proration,
                "proration_details": {"credited_items": None},
                "subscription": sub["id"] if sub else None,
                "subscription_item": item["id"] if item else None,
            },
        },
        pricing={
            "type": "price_details",
            "price_details": {"price": price["id"], "product": price["product"]} if price else None,
            "unit_amount_decimal": (price or {}).get("unit_amount_decimal"),
        },
        _metered=metered,
        _item=item["id"] if item else None,
    )
    inv["lines"]["data"].append(line)
    inv["lines"]["total_count"] = len(inv["lines"]["data"])
    return line


def flat_line(core: Core, inv: dict, sub: dict, item: dict, start: int, end: int, *, trial: bool) -> None:  # noqa: PLR0917
    price = item["price"]
    qty = item["quantity"] or 0
    amount = 0 if trial else pricing.amount(price, qty)
    name = product_name(core, price)
    label = f"Trial period for {name}" if trial else f"{qty} × {name}"
    add_line(
        inv, core, amount=amount, description=label, start=start, end=end, price=price, quantity=qty, sub=sub, item=item
    )


class Window(NamedTuple):
    """The usage a metered item's current price bills in its period.

    Events with `timestamp` in [start, period end) and, after a mid-period price change or when
    the item was added mid-period, reported after the change (`after`, in report order; `since`
    is the change's time): flexible billing mode "bills for usage based on the price at the time
    you report it".
    """

    start: int  # the period start: timestamps count from here
    since: int | None  # when the price came onto the item mid-period (None: at the period start)
    after: int | None  # the number of meter events reported before that (None: every report counts)

    @property
    def key(self) -> int:
        """Where the price's usage line starts; threshold invoices' lines are matched on it (`_cycle`)."""
        return self.since if self.since is not None else self.start


def window(item: dict) -> Window:
    return Window(item["current_period_start"], item.get("_usage_since"), item.get("_usage_after"))


def start_usage(core: Core, item: dict, now: int | None) -> None:
    """From now on (None: from the period start), the item's price bills the usage reported."""
    item["_usage_since"] = now
    item["_usage_after"] = None if now is None else core.meter_event_seq


def metered_quantity(  # noqa: PLR0917 - report-order bounds are optional
    core: Core, sub: dict, price: dict, start: int, end: int, after: int | None = None, upto: int | None = None
) -> Decimal:
    meter_id = (price.get("recurring") or {}).get("meter")
    meter = core.store.maybe("billing.meter", meter_id) if meter_id else None
    if meter is None:
        return Decimal(0)
    return usage.aggregate(meter, sub["customer"], start, end, after, upto)


def metered_line(core: Core, inv: dict, sub: dict, item: dict, span: Window, end: int) -> None:  # noqa: PLR0917
    """The usage of the item's price in `span` up to `end`, less what threshold invoices already billed."""
    price = item["price"]
    qty = metered_quantity(core, sub, price, span.start, end, span.after)
    line = add_line(
        inv,
        core,
        amount=pricing.amount(price, qty),
        description=f"{qty} × {product_name(core, price)}",
        start=span.key,
        end=end,
        price=price,
        quantity=qty,
        sub=sub,
        item=item,
        metered=True,
    )
    line["_usage_from"], line["_reported_after"] = span.start, span.after  # for refresh_metered
    previously_billed_line(core, inv, sub, item, span.key)


def close_usage(core: Core, sub: dict, item: dict, now: int) -> list[dict]:
    """Flexible billing mode, a metered price leaves the item (price change or removal) at `now`.

    "we create an invoice item that bills for previously reported metered usage when you remove
    a metered price from a subscription" (docs.stripe.com/billing/subscriptions/usage-based/
    manage-billing-setup): the usage its price accrued this period and no invoice billed yet, as
    pending lines (add_line keyword arguments) that the caller bills per `proration_behavior`.
    Usage reported from `now` on belongs to the item's next price.
    """
    if not is_metered(item["price"]) or sub["status"] == "trialing":
        return []  # trial usage is not billed (see renew)
    span = window(item)
    price = item["price"]
    qty = metered_quantity(core, sub, price, span.start, item["current_period_end"], span.after, core.meter_event_seq)
    billed, until = previously_billed(core, sub, item["id"], span.key)
    if qty == 0 and billed == 0:
        return []  # flexible mode creates no zero-amount lines
    name = product_name(core, price)
    lines = [
        {
            "amount": pricing.amount(price, qty),
            "description": f"{qty} × {name} (usage until the change)",
            "start": span.key,
            "end": now,
            "price": price,
            "quantity": qty,
            "sub": sub,
            "item": item,
            "proration": True,
        }
    ]
    if billed:
        lines.append(
            {
                "amount": -billed,
                "description": f"Amount previously billed for {name}",
                "start": span.key,
                "end": until or span.key,
                "price": price,
                "quantity": None,
                "sub": sub,
                "item": item,
                "proration": True,
            }
        )
    return lines


def previously_billed(
    core: Core,
    sub: dict,
    item_id: str,
    cycle_start: int,
    exclude: str | None = None,
) -> tuple[int, int | None]:
    """(amount, until): what this period's threshold invoices billed for the item, and up to when.

    Each threshold invoice carries the period's cumulative usage line and a credit for the
    invoices before it, so the sum of their lines is the price of the usage at the last one:
    tiers run across the whole period and rounding happens on cumulative amounts only.
    """
    amount, until = 0, None
    for inv in core.store.all(INV):
        if (
            inv["_subscription"] != sub["id"]
            or inv["billing_reason"] != "subscription_threshold"
            or inv["id"] == exclude
        ):
            continue
        for line in inv["lines"]["data"]:
            if line.get("_item") == item_id and line.get("_cycle") == cycle_start:
                amount += line["amount"]
                until = max(until or 0, line["period"]["end"])
    return amount, until


def previously_billed_line(core: Core, inv: dict, sub: dict, item: dict, cycle_start: int) -> dict | None:
    """Stripe's "Amount previously billed" credit line for the usage that threshold invoices billed."""
    amount, until = previously_billed(core, sub, item["id"], cycle_start, exclude=inv["id"])
    if amount == 0:
        return None
    line = add_line(
        inv,
        core,
        amount=-amount,
        description=f"Amount previously billed for {product_name(core, item['price'])}",
        start=cycle_start,
        end=until or cycle_start,
        price=item["price"],
        quantity=None,
        sub=sub,
        item=item,
    )
    line["_cycle"] = cycle_start
    return line


def refresh_metered(core: Core, inv: dict) -> None:
    """Re-aggregate metered lines: usage that arrived while the invoice was a draft counts."""
    sub = core.store.maybe(SUB, inv["_subscription"] or "")
    if sub is None:
        return
    for line in inv["lines"]["data"]:
        if not line["_metered"]:
            continue
        price = core.store.maybe("price", line["pricing"]["price_details"]["price"])
        if price is None:
            continue
        qty = metered_quantity(
            core,
            sub,
            price,
            line.get("_usage_from", line["period"]["start"]),
            line["period"]["end"],
            line.get("_reported_after"),
        )
        line["amount"] = line["subtotal"] = pricing.amount(price, qty)
        line["quantity"] = int(qty) if qty == int(qty) else None
        line["quantity_decimal"] = str(qty)
        line["description"] = f"{qty} × {product_name(core, price)}"


def discount_amount(core: Core, inv: dict, subtotal: int, *, commit: bool = True) -> list[dict]:
    """The discounts of an invoice; `commit=False` computes them without using up `once` coupons."""
    amounts = []
    remaining = subtotal
    for discount_id in inv.get("discounts") or []:
        discount = core.store.maybe("discount", discount_id)
        if discount is None or remaining <= 0:
            continue
        if discount["end"] is not None and inv["created"] >= discount["end"]:
            continue
        coupon = discount["source"]["coupon"]
        coupon = core.store.maybe("coupon", coupon) if isinstance(coupon, str) else coupon
        if coupon is None:
            continue
        if coupon["duration"] == "once" and discount.get("_used_on") not in (None, inv["id"]):
            continue
        if coupon.get("percent_off") is not None:
            off = int((Decimal(str(coupon["percent_off"])) * remaining / 100).quantize(Decimal(1), ROUND_HALF_UP))
        else:
            off = min(int(coupon["amount_off"]), remaining)
        if commit:
            discount["_used_on"] = inv["id"]
        remaining -= off
        amounts.append({"amount": off, "discount": discount_id})
    return amounts


def recompute(core: Core, inv: dict) -> None:
    subtotal = sum(line["amount"] for line in inv["lines"]["data"])
    inv["total_discount_amounts"] = discount_amount(core, inv, max(subtotal, 0))
    total = subtotal - sum(d["amount"] for d in inv["total_discount_amounts"])
    inv.update(subtotal=subtotal, subtotal_excluding_tax=subtotal, total=total, total_excluding_tax=total)
    inv["amount_due"] = max(total, 0)
    inv["amount_remaining"] = inv["amount_due"] - inv["amount_paid"]


def finalize(core: Core, inv: dict, pm_id: str | None = None) -> None:
    """draft -> open (and paid at once when nothing is due), then the first payment attempt."""
    if inv["status"] != "draft":
        return
    clock = core.clock_of(inv["customer"])
    now = core.now(clock)
    refresh_metered(core, inv)
    recompute(core, inv)
    customer = core.store.get("customer", inv["customer"])
    seq = customer.get("next_invoice_sequence") or 1
    customer["next_invoice_sequence"] = seq + 1
    inv.update(
        status="open",
        number=f"{customer['invoice_prefix']}-{seq:04d}",
        hosted_invoice_url=f"{core.base_url}/i/{inv['id']}",
        invoice_pdf=f"{core.base_url}/i/{inv['id']}/pdf",
        effective_at=now,
        automatically_finalizes_at=None,
    )
    inv["status_transitions"]["finalized_at"] = now
    if inv["total"] < 0 and not inv.get("_balance_applied"):
        # Stripe credits a negative invoice total to the customer's balance (e.g. volume tiers
        # after a threshold invoice, docs.stripe.com/billing/subscriptions/usage-based/thresholds).
        customer["balance"] = customer.get("balance", 0) + inv["total"]
        inv["_balance_applied"] = True
    core.emit("invoice.finalized", inv, {"status": "draft"}, clock)
    if inv["amount_due"] == 0:
        mark_paid(core, inv, now, clock)
        return
    if inv["auto_advance"]:
        attempt(core, inv, pm_id, automatic=True)


def mark_paid(core: Core, inv: dict, now: int, clock: str) -> None:
    inv.update(status="paid", amount_paid=inv["amount_due"], amount_remaining=0, next_payment_attempt=None)
    inv["status_transitions"]["paid_at"] = now
    core.emit("invoice.paid", inv, {"status": "open"}, clock)
    core.emit("invoice.payment_succeeded", inv, None, clock)
    sub = core.store.maybe(SUB, inv["_subscription"] or "")
    if sub is None or sub["status"] not in ("past_due", "unpaid", "incomplete"):
        return
    others_open = [
        i
        for i in core.store.all(INV)
        if i["_subscription"] == sub["id"] and i["status"] == "open" and i["id"] != inv["id"]
    ]
    if not others_open:
        trialing = sub["trial_end"] is not None and now < sub["trial_end"]
        set_status(core, sub, "trialing" if trialing else "active", clock)


def payment_method_for(core: Core, inv: dict) -> str | None:
    sub = core.store.maybe(SUB, inv["_subscription"] or "")
    if sub and sub.get("default_payment_method"):
        return str(sub["default_payment_method"])
    customer = core.store.get("customer", inv["customer"])
    return (customer.get("invoice_settings") or {}).get("default_payment_method")


def attempt(core: Core, inv: dict, pm_id: str | None, automatic: bool) -> StripeError | None:
    """One payment attempt on an open invoice; schedules the next retry on automatic failures."""
    clock = core.clock_of(inv["customer"])
    now = core.now(clock)
    error = charge(core, pm_id or payment_method_for(core, inv))
    inv["attempt_count"] += 1
    inv["attempted"] = True
    if error is None:
        mark_paid(core, inv, now, clock)
        return None
    sub = core.store.maybe(SUB, inv["_subscription"] or "")
    first_invoice = inv["billing_reason"] == "subscription_create"
    retries = core.config.retry_days
    failures = inv.setdefault("_failures", 0) + 1
    inv["_failures"] = failures
    more = automatic and not first_invoice and failures <= len(retries) and not inv.get("_retry_scheduled_all")
    inv["next_payment_attempt"] = None
    if more and automatic:
        when = now + days(retries[failures - 1])
        inv["next_payment_attempt"] = when
        inv_id = inv["id"]
        core.schedule(clock, when, f"retry {inv_id}", lambda: retry(core, inv_id, failures))
    core.emit("invoice.payment_failed", inv, None, clock)
    if sub is not None and sub["status"] not in ("canceled", "incomplete", "incomplete_expired"):
        if more or not automatic:
            if sub["status"] in ("active", "trialing"):
                set_status(core, sub, "past_due", clock)
        elif not first_invoice:
            if core.config.after_retries == "canceled":
                cancel(core, sub, invoice_now=False, prorate=False, reason="payment_failed")
            elif sub["status"] != "unpaid":
                set_status(core, sub, "unpaid", clock)
    return error


def retry(core: Core, inv_id: str, failures_before: int) -> None:
    inv = core.store.maybe(INV, inv_id)
    if inv is None or inv["status"] != "open" or inv.get("_failures") != failures_before:
        return  # paid, voided, or a manual attempt happened meanwhile and rescheduled nothing
    attempt(core, inv, None, automatic=True)


def void(core: Core, inv: dict) -> None:
    clock = core.clock_of(inv["customer"])
    inv.update(status="void", next_payment_attempt=None, amount_remaining=0)
    inv["status_transitions"]["voided_at"] = core.now(clock)
    core.emit("invoice.voided", inv, {"status": "open"}, clock)


def mark_uncollectible(core: Core, inv: dict) -> None:
    clock = core.clock_of(inv["customer"])
    inv.update(status="uncollectible", next_payment_attempt=None)
    inv["status_transitions"]["marked_uncollectible_at"] = core.now(clock)
    core.emit("invoice.marked_uncollectible", inv, {"status": "open"}, clock)


def open_draft(core: Core, inv: dict, clock: str, now: int) -> None:
    """Announce a draft and schedule its automatic finalisation an hour later."""
    inv["automatically_finalizes_at"] = now + core.config.finalize_after
    core.emit("invoice.created", inv, None, clock)
    inv_id = inv["id"]
    core.schedule(
        clock,
        now + core.config.finalize_after,
        f"finalize {inv_id}",
        lambda: finalize(core, core.store.get(INV, inv_id)),
    )


# ---- subscriptions ------------------------------------------------------------------------------
def set_status(core: Core, sub: dict, status: str, clock: str, extra_previous: dict | None = None) -> None:
    previous = {"status": sub["status"], **(extra_previous or {})}
    sub["status"] = status
    core.emit("customer.subscription.updated", sub, previous, clock)


def period_end(sub: dict, start: int) -> int:
    rec = items(sub)[0]["price"]["recurring"]
    return add_interval(start, sub["billing_cycle_anchor"], rec["interval"], rec["interval_count"])


def create_subscription(
    core: Core,
    customer: dict,
    lines: list[tuple[dict, int | None, dict]],
    *,
    metadata: dict,
    trial_days: int | None = None,
    trial_end: int | None = None,
    default_payment_method: str | None = None,
    discounts: list[str] | None = None,
    description: str | None = None,
    cancel_at_period_end: bool = False,
    first_payment_method: str | None = None,
    billing_thresholds: dict | None = None,
    billing_mode: dict | None = None,
    trial_settings: dict | None = None,
) -> dict:
    """Create the subscription and its first invoice (flat fees in advance), finalised at once."""
    clock = customer.get("test_clock") or ""
    now = core.now(clock)
    if trial_days:
        trial_end = now + days(trial_days)
    sub = blank("subscription")
    sub_id = core.store.new_id("sub")
    sub.update(
        id=sub_id,
        automatic_tax={"enabled": False, "liability": None, "disabled_reason": None},
        billing_cycle_anchor=trial_end or now,
        billing_cycle_anchor_config=None,
        # Flexible is the default for subscriptions created through the API and Checkout
        # (changelog 2025-09-30.clover); classic is refused where the parameters are checked.
        billing_mode={
            "type": "flexible",
            "flexible": {"proration_discounts": "included"},
            "updated_at": now,
            **(billing_mode or {}),
        },
        billing_thresholds=billing_thresholds,
        cancel_at=None,
        cancel_at_period_end=cancel_at_period_end,
        canceled_at=None,
        cancellation_details={"comment": None, "feedback": None, "reason": None},
        collection_method="charge_automatically",
        created=now,
        currency=lines[0][0]["currency"],
        customer=customer["id"],
        default_payment_method=default_payment_method,
        default_tax_rates=[],
        description=description,
        discounts=list(discounts or []),
        invoice_settings={"account_tax_ids": None, "issuer": {"type": "self"}},
        items={
            "object": "list",
            "data": [],
            "has_more": False,
            "total_count": 0,
            "url": f"/v1/subscription_items?subscription={sub_id}",
        },
        metadata=metadata,
        payment_settings={
            "payment_method_options": None,
            "payment_method_types": None,
            "save_default_payment_method": "off",
        },
        start_date=now,
        status="incomplete",
        test_clock=customer.get("test_clock"),
        trial_start=now if trial_end else None,
        trial_end=trial_end,
        trial_settings=trial_settings or trials.settings(None, "trial_settings"),
    )
    for price, qty, item_meta in lines:
        items(sub).append(new_item(core, sub, price, qty, item_meta, now))
    sub["items"]["total_count"] = len(items(sub))
    end = trial_end or period_end(sub, now)
    for item in items(sub):
        item["current_period_start"], item["current_period_end"] = now, end
    for discount_id in sub["discounts"]:
        discount = core.store.get("discount", discount_id)
        discount["subscription"] = sub_id
    core.store.put(SUB, sub)
    core.emit("customer.subscription.created", sub, None, clock)

    inv = new_invoice(core, customer, sub, "subscription_create", now, now, now)
    for item in items(sub):
        if not is_metered(item["price"]):
            flat_line(core, inv, sub, item, now, end, trial=trial_end is not None)
    recompute(core, inv)
    sub["latest_invoice"] = inv["id"]
    core.emit("invoice.created", inv, None, clock)
    finalize(core, inv, first_payment_method)
    if sub["status"] == "incomplete" and inv["status"] == "paid":
        set_status(core, sub, "trialing" if trial_end else "active", clock)
    elif sub["status"] == "incomplete":
        core.schedule(clock, now + 23 * 3600, f"expire {sub_id}", lambda: expire_incomplete(core, sub_id))
    trials.schedule_will_end(core, sub, clock, now)
    core.schedule(clock, end, f"renew {sub_id}", lambda: renew(core, sub_id, end))
    return sub


def expire_incomplete(core: Core, sub_id: str) -> None:
    sub = core.store.get(SUB, sub_id)
    if sub["status"] != "incomplete":
        return
    clock = core.clock_of(sub["customer"])
    inv = core.store.maybe(INV, sub["latest_invoice"] or "")
    if inv is not None and inv["status"] == "open":
        void(core, inv)
    sub["ended_at"] = core.now(clock)
    set_status(core, sub, "incomplete_expired", clock)


def renew(core: Core, sub_id: str, boundary: int) -> None:
    """Period end: the next period's flat fees plus the finished period's usage, as a draft."""
    sub = core.store.get(SUB, sub_id)
    if sub["status"] in ("canceled", "incomplete", "incomplete_expired") or not items(sub):
        return
    if items(sub)[0]["current_period_end"] != boundary:
        return  # the period was changed meanwhile (e.g. cancelled and recreated)
    clock = core.clock_of(sub["customer"])
    now = core.now(clock)
    customer = core.store.get("customer", sub["customer"])
    old_start = items(sub)[0]["current_period_start"]
    if sub["cancel_at_period_end"] or (sub["cancel_at"] is not None and sub["cancel_at"] <= boundary):
        end_subscription(core, sub, boundary, final_usage=True, reason="cancellation_requested")
        return
    previous_items = [
        {
            "id": i["id"],
            "current_period_start": i["current_period_start"],
            "current_period_end": i["current_period_end"],
        }
        for i in items(sub)
    ]
    spans = {item["id"]: window(item) for item in items(sub)}  # the finished period's usage, per item
    finished = list(items(sub))  # the items that accrued the finished period's usage
    from emulators.stripe import schedules  # noqa: PLC0415 - schedules builds on this module

    # A subscription schedule's next phase starts at this boundary: its items bill the new period.
    _, metadata_before = schedules.enter_next_phase(core, sub, boundary)
    if sub["cancel_at_period_end"]:  # the schedule's last phase ended with end_behavior=cancel
        end_subscription(core, sub, boundary, final_usage=True, reason="cancellation_requested")
        return
    new_end = period_end(sub, boundary)
    for item in items(sub):
        item["current_period_start"], item["current_period_end"] = boundary, new_end
        start_usage(core, item, None)  # a new period: every report counts for the item's price again
        mark_debited(item, True)  # the renewal invoice charges the flat fees in advance
    previous: dict[str, Any] = {"items": {"data": previous_items}}
    if metadata_before is not None:
        previous["metadata"] = metadata_before
    if sub["status"] == "trialing":
        previous["status"] = "trialing"
        sub["status"] = "active"
    inv = new_invoice(core, customer, sub, "subscription_cycle", old_start, boundary, now)
    _cycle_lines(core, inv, sub, finished, spans, (boundary, new_end))
    for pending in sub.pop("_pending", []):
        add_line(inv, core, **pending)
    recompute(core, inv)
    sub["latest_invoice"] = inv["id"]
    core.emit("customer.subscription.updated", sub, previous, clock)
    if sub["status"] == "unpaid":
        inv["auto_advance"] = False  # Stripe keeps invoices of unpaid subscriptions as drafts
        core.emit("invoice.created", inv, None, clock)
    else:
        open_draft(core, inv, clock, now)
    core.schedule(clock, new_end, f"renew {sub_id}", lambda: renew(core, sub_id, new_end))


def _cycle_lines(  # noqa: PLR0917
    core: Core,
    inv: dict,
    sub: dict,
    finished: list[dict],
    spans: dict[str, Window],
    period: tuple[int, int],
) -> None:
    """A renewal's lines: the finished period's usage of the items that accrued it (also those a schedule's
    phase removed at the boundary), the next period's flat fees of the current items, in item order."""
    boundary, new_end = period
    current = items(sub)
    for item in finished + [x for x in current if x not in finished]:
        if is_metered(item["price"]):
            if item in finished and (sub["trial_end"] is None or sub["trial_end"] < boundary):
                metered_line(core, inv, sub, item, spans[item["id"]], boundary)
        elif item in current:
            flat_line(core, inv, sub, item, boundary, new_end, trial=False)


def end_subscription(core: Core, sub: dict, at: int, final_usage: bool, reason: str) -> dict | None:
    """Cancel now: a final draft invoice for the usage of the unfinished period, then the deletion."""
    clock = core.clock_of(sub["customer"])
    now = core.now(clock)
    customer = core.store.get("customer", sub["customer"])
    inv = None
    metered = [i for i in items(sub) if is_metered(i["price"]) and trials.usage_is_billed(sub)]
    start = items(sub)[0]["current_period_start"] if items(sub) else at
    if final_usage and metered and at > start:
        inv = new_invoice(core, customer, sub, "subscription_cycle", start, at, now)
        for item in metered:
            metered_line(core, inv, sub, item, window(item), at)
        recompute(core, inv)
        sub["latest_invoice"] = inv["id"]
    previous = {"status": sub["status"]}
    sub.update(status="canceled", canceled_at=sub["canceled_at"] or now, ended_at=at)
    sub["cancellation_details"]["reason"] = reason
    core.emit("customer.subscription.deleted", sub, previous, clock)
    if inv is not None:
        open_draft(core, inv, clock, now)
    return inv


def cancel(core: Core, sub: dict, invoice_now: bool, prorate: bool, reason: str = "cancellation_requested") -> dict:
    clock = core.clock_of(sub["customer"])
    now = core.now(clock)
    if not invoice_now and not prorate:
        end_subscription(core, sub, now, final_usage=False, reason=reason)
        return sub
    customer = core.store.get("customer", sub["customer"])
    start = items(sub)[0]["current_period_start"]
    end = items(sub)[0]["current_period_end"]
    credits = []
    if prorate and end > now and sub["status"] in ("active", "past_due", "unpaid"):
        for item in items(sub):
            credits += proration_lines(core, sub, item, item.get("_debited"), now, charge_new=False)
    if not invoice_now:
        if credits:
            customer["balance"] = customer.get("balance", 0) + sum(c["amount"] for c in credits)
        end_subscription(core, sub, now, final_usage=False, reason=reason)
        return sub
    metered = [i for i in items(sub) if is_metered(i["price"]) and trials.usage_is_billed(sub)]
    inv = new_invoice(core, customer, sub, "subscription_update", start, now, now)
    for item in metered:
        metered_line(core, inv, sub, item, window(item), now)
    for credit in credits:
        add_line(inv, core, **credit)
    recompute(core, inv)
    if inv["total"] < 0:
        customer["balance"] = customer.get("balance", 0) + inv["total"]
        inv["_balance_applied"] = True  # not again at finalisation
    sub["latest_invoice"] = inv["id"]
    previous = {"status": sub["status"]}
    sub.update(status="canceled", canceled_at=now, ended_at=now)
    sub["cancellation_details"]["reason"] = reason
    core.emit("customer.subscription.deleted", sub, previous, clock)
    open_draft(core, inv, clock, now)
    return sub


def proration_lines(
    core: Core, sub: dict, item: dict, debited: dict | None, now: int, *, charge_new: bool = True
) -> list[dict]:
    """Credit the unused part of what was debited (see mark_debited) and, unless the item is removed,
    charge its current flat fee for the rest of the period."""
    start, end = item["current_period_start"], item["current_period_end"]
    if end <= now or sub["status"] == "trialing":
        return []
    fraction = Decimal(end - now) / Decimal(end - start)
    out = []
    if debited is not None and not is_metered(debited["price"]):
        old_price, old_qty = debited["price"], debited["quantity"]
        old = Decimal(pricing.amount(old_price, old_qty or 0))
        out.append(
            {
                "amount": -int((old * fraction).quantize(Decimal(1), ROUND_HALF_UP)),
                "description": f"Unused time on {product_name(core, old_price)}",
                "start": now,
                "end": end,
                "price": old_price,
                "quantity": old_qty,
                "sub": sub,
                "item": item,
                "proration": True,
            }
        )
    if charge_new and not is_metered(item["price"]):
        new = Decimal(pricing.amount(item["price"], item["quantity"] or 0))
        out.append(
            {
                "amount": int((new * fraction).quantize(Decimal(1), ROUND_HALF_UP)),
                "description": f"Remaining time on {product_name(core, item['price'])}",
                "start": now,
                "end": end,
                "price": item["price"],
                "quantity": item["quantity"],
                "sub": sub,
                "item": item,
                "proration": True,
            }
        )
    return out


def invoice_prorations_now(core: Core, sub: dict, lines: list[dict]) -> None:
    clock = core.clock_of(sub["customer"])
    now = core.now(clock)
    customer = core.store.get("customer", sub["customer"])
    inv = new_invoice(core, customer, sub, "subscription_update", now, now, now)
    for line in lines:
        add_line(inv, core, **line)
    recompute(core, inv)
    sub["latest_invoice"] = inv["id"]
    core.emit("invoice.created", inv, None, clock)
    finalize(core, inv)


def months(n: int, start: int) -> int:
    return months_after(start, n)
