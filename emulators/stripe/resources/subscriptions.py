"""Subscriptions and subscription items: create, update (metadata, prices, cancel_at_period_end), cancel."""

from __future__ import annotations

import copy
from typing import Any

from emulators.stripe import billing, search, thresholds, trials
from emulators.stripe.resources.catalog import merge_metadata
from emulators.stripe.routes import Request, route
from emulators.stripe.store import blank
from emulators.stripe.wire import (
    EXPAND,
    LIST,
    StripeError,
    arr,
    b,
    enum,
    i,
    int_or,
    invalid,
    metadata,
    nullable,
    obj,
    s,
    validate,
)

DISCOUNTS = arr(obj({"coupon": s, "promotion_code": s, "discount": s}))
PRORATION = enum("create_prorations", "none", "always_invoice")
PAYMENT_BEHAVIOR = enum("allow_incomplete", "default_incomplete", "error_if_incomplete", "pending_if_incomplete")
BILLING_MODE = obj(
    {"type": enum("classic", "flexible"), "flexible": obj({"proration_discounts": enum("included", "itemized")})},
    ("type",),
)


def billing_mode(spec: dict[str, Any] | None, param: str) -> dict[str, Any] | None:
    """The subscription's `billing_mode` for a validated `billing_mode` parameter (None: the default).

    The default is flexible ("If no value is passed, the default is `flexible`"); the emulator
    implements flexible billing only, so classic is refused rather than silently billed as flexible.
    """
    if spec is None:
        return None
    if spec["type"] == "classic":
        raise invalid(
            f"{param}[type]",
            f"{param}[type]=classic is not supported by this emulator, which bills "
            "subscriptions in flexible billing mode (the default).",
        )
    return {
        "type": "flexible",
        "flexible": {"proration_discounts": (spec.get("flexible") or {}).get("proration_discounts", "included")},
    }


def check_price(req: Request, price_id: str, param: str, currency: str | None, interval: tuple | None) -> dict:
    price = req.core.store.get("price", price_id, param=param)
    if not price["active"]:
        raise StripeError(
            f"The price specified is inactive. This field only accepts active prices. ({price_id})", param=param
        )
    if price["recurring"] is None:
        raise StripeError(
            f"The price specified ({price_id}) is a one-time price; subscriptions need recurring prices.", param=param
        )
    if currency is not None and price["currency"] != currency:
        raise invalid(param, "All prices on a subscription must have the same currency.")
    rec = price["recurring"]
    if interval is not None and (rec["interval"], rec["interval_count"]) != interval:
        raise invalid(param, "All prices on a subscription must have the same recurring interval.")
    return price


def make_discounts(req: Request, specs: list[dict[str, str]], customer_id: str, param: str) -> list[str]:
    """Discount objects for `discounts=[{coupon}|{promotion_code}]`."""
    store = req.core.store
    out = []
    for n, spec in enumerate(specs):
        if len(spec) != 1:
            raise invalid(f"{param}[{n}]", "Each discount needs exactly one of coupon or promotion_code.")
        promo = None
        if "promotion_code" in spec:
            promo = store.get("promotion_code", spec["promotion_code"], param=f"{param}[{n}][promotion_code]")
            if not promo["active"]:
                raise invalid(f"{param}[{n}][promotion_code]", "This promotion code is not active.")
            coupon = store.get("coupon", promo["promotion"]["coupon"])
            promo["times_redeemed"] += 1
        elif "coupon" in spec:
            coupon = store.get("coupon", spec["coupon"], param=f"{param}[{n}][coupon]")
        else:
            raise invalid(f"{param}[{n}]", "Existing discounts cannot be reused by the emulator.")
        coupon["times_redeemed"] += 1
        now = req.core.now(req.core.clock_of(customer_id))
        discount = blank("discount")
        end = billing.months(coupon["duration_in_months"], now) if coupon["duration"] == "repeating" else None
        discount.update(
            id=store.new_id("di"),
            customer=customer_id,
            start=now,
            end=end,
            promotion_code=promo["id"] if promo else None,
            source={"type": "coupon", "coupon": coupon["id"]},
            checkout_session=None,
            invoice=None,
            invoice_item=None,
            subscription=None,
            subscription_item=None,
            customer_account=None,
        )
        store.put("discount", discount)
        out.append(discount["id"])
    return out


def resolve_lines(req: Request, specs: list[dict[str, Any]], param: str) -> list[tuple[dict, int | None, dict]]:
    lines: list[tuple[dict, int | None, dict]] = []
    currency = interval = None
    seen = set()
    for n, spec in enumerate(specs):
        if "price" not in spec:
            raise StripeError(
                f"Missing required param: {param}[{n}][price].", code="parameter_missing", param=f"{param}[{n}][price]"
            )
        price = check_price(req, spec["price"], f"{param}[{n}][price]", currency, interval)
        currency = price["currency"]
        interval = (price["recurring"]["interval"], price["recurring"]["interval_count"])
        if price["id"] in seen:
            raise invalid(f"{param}[{n}][price]", "Cannot add multiple subscription items with the same price.")
        seen.add(price["id"])
        qty = spec.get("quantity")
        if billing.is_metered(price) and qty is not None:
            raise invalid(f"{param}[{n}][quantity]", "Quantity should not be specified where usage_type is `metered`.")
        if qty is not None and qty < 0:
            raise invalid(f"{param}[{n}][quantity]", "Quantity must be at least 0.")
        lines.append((price, qty, spec.get("metadata", {})))
    if not lines:
        raise StripeError(f"Missing required param: {param}.", code="parameter_missing", param=param)
    return lines


@route("POST", "/v1/subscriptions")
def create_subscription(req: Request) -> dict[str, Any]:
    p = validate(
        req.params,
        {
            "customer": s,
            "items": arr(obj({"price": s, "quantity": i, "metadata": metadata})),
            "metadata": metadata,
            "trial_period_days": i,
            "trial_end": int_or("now"),
            "default_payment_method": s,
            "payment_behavior": PAYMENT_BEHAVIOR,
            "proration_behavior": PRORATION,
            "cancel_at_period_end": b,
            "description": s,
            "discounts": DISCOUNTS,
            "collection_method": enum("charge_automatically"),
            "off_session": b,
            "billing_thresholds": thresholds.SPEC,
            "billing_mode": BILLING_MODE,
            **EXPAND,
        },
        ("customer", "items"),
    )
    core = req.core
    mode = billing_mode(p.get("billing_mode"), "billing_mode")
    customer = core.store.get("customer", p["customer"], param="customer")
    lines = resolve_lines(req, p["items"], "items")
    limits = thresholds.validate(p.get("billing_thresholds"), thresholds.licensed_total((pr, q) for pr, q, _ in lines))
    pm = p.get("default_payment_method")
    if pm:
        found = core.store.maybe("payment_method", pm)
        if found is None or found["customer"] != customer["id"]:
            raise StripeError(
                f"The customer does not have a payment method with the ID {pm}.", param="default_payment_method"
            )
    trials.check_days(p.get("trial_period_days"), "trial_period_days")
    trial_end = p.get("trial_end")
    now = core.now(core.clock_of(customer["id"]))
    if trial_end == "now":
        trial_end = None
    elif trial_end is not None and trial_end <= now:
        raise invalid("trial_end", "trial_end must be in the future.")
    if p.get("payment_behavior") == "error_if_incomplete" and not (trial_end or p.get("trial_period_days")):
        due = sum(billing.pricing.amount(pr, q or 1) for pr, q, _ in lines if not billing.is_metered(pr))
        if due > 0:
            error = billing.charge(core, pm or customer["invoice_settings"]["default_payment_method"])
            if error is not None:
                raise error
    discounts = make_discounts(req, p.get("discounts", []), customer["id"], "discounts")
    return billing.create_subscription(
        core,
        customer,
        lines,
        metadata=p.get("metadata", {}),
        trial_days=p.get("trial_period_days"),
        trial_end=trial_end,
        default_payment_method=pm,
        discounts=discounts,
        description=p.get("description"),
        cancel_at_period_end=p.get("cancel_at_period_end", False),
        billing_thresholds=limits,
        billing_mode=mode,
    )


@route("GET", "/v1/subscriptions/{id}")
def get_subscription(req: Request) -> dict[str, Any]:
    validate(req.params, EXPAND)
    return req.core.store.get("subscription", req.args[0])


def _diff(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    return {k: before[k] for k in after if not k.startswith("_") and before.get(k) != after[k]}


@route("POST", "/v1/subscriptions/{id}")
def update_subscription(req: Request) -> dict[str, Any]:  # noqa: PLR0912 - one branch per field
    p = validate(
        req.params,
        {
            "metadata": metadata,
            "cancel_at_period_end": b,
            "cancel_at": nullable(i),
            "default_payment_method": nullable(s),
            "description": nullable(s),
            "proration_behavior": PRORATION,
            "payment_behavior": PAYMENT_BEHAVIOR,
            "items": arr(obj({"id": s, "price": s, "quantity": i, "metadata": metadata, "deleted": b})),
            "cancellation_details": obj({"comment": nullable(s), "feedback": nullable(s)}),
            "trial_end": int_or("now"),
            "off_session": b,
            "billing_thresholds": thresholds.SPEC,
            **EXPAND,
        },
    )
    core = req.core
    sub = core.store.get("subscription", req.args[0])
    if sub["status"] in ("canceled", "incomplete_expired"):
        allowed = {"metadata", "cancellation_details", "expand"}
        bad = set(p) - allowed
        if bad:
            raise StripeError(
                "A canceled subscription can only update its cancellation_details and metadata.", param=sorted(bad)[0]
            )
    limits = thresholds.for_update(core, sub, p)  # checked before anything changes
    before = copy.deepcopy(sub)
    clock = core.clock_of(sub["customer"])
    now = core.now(clock)
    sub["billing_thresholds"] = limits
    if "metadata" in p:
        sub["metadata"] = merge_metadata(sub["metadata"], p["metadata"])
    if "cancel_at_period_end" in p:
        sub["cancel_at_period_end"] = p["cancel_at_period_end"]
        sub["cancel_at"] = billing.items(sub)[0]["current_period_end"] if p["cancel_at_period_end"] else None
        sub["canceled_at"] = now if p["cancel_at_period_end"] else None
    if "cancel_at" in p:
        if p["cancel_at"] is not None and p["cancel_at"] != billing.items(sub)[0]["current_period_end"]:
            raise invalid("cancel_at", "The emulator supports cancel_at only at the current period end.")
        sub["cancel_at"] = p["cancel_at"]
        sub["cancel_at_period_end"] = p["cancel_at"] is not None
    if "cancellation_details" in p:
        sub["cancellation_details"].update(p["cancellation_details"])
    if "description" in p:
        sub["description"] = p["description"]
    if "default_payment_method" in p:
        pm = p["default_payment_method"]
        found = core.store.maybe("payment_method", pm) if pm else None
        if pm and (found is None or found["customer"] != sub["customer"]):
            raise StripeError(
                f"The customer does not have a payment method with the ID {pm}.", param="default_payment_method"
            )
        sub["default_payment_method"] = pm
    if p.get("trial_end") == "now" and sub["status"] == "trialing":
        raise invalid("trial_end", "Ending a trial early is not supported by the emulator.")
    behavior = p.get("proration_behavior", "create_prorations")
    lines: list[dict[str, Any]] = []
    if "items" in p:
        saved = [(item, copy.deepcopy(item)) for item in billing.items(sub)]
        lines = _update_items(req, sub, p["items"], now, billed=behavior != "none")
        if p.get("payment_behavior") == "error_if_incomplete" and behavior == "always_invoice":
            _charge_or_undo(req, sub, before, saved, lines)
    # Prorations of licensed prices and, in flexible billing mode, the usage a removed metered
    # price accrued: pending invoice items for the next invoice, invoiced at once, or dropped
    # ("If you want to remove a metered price without billing for it, set proration_behavior to none.").
    if lines and behavior == "create_prorations":
        sub.setdefault("_pending", []).extend(lines)
    elif lines and behavior == "always_invoice":
        billing.invoice_prorations_now(core, sub, lines)
    previous = _diff(before, sub)
    if previous:
        core.emit("customer.subscription.updated", sub, previous, clock)
    return sub


def _charge_or_undo(
    req: Request,
    sub: dict[str, Any],
    before: dict[str, Any],
    saved: list[tuple[dict, dict]],
    lines: list[dict[str, Any]],
) -> None:
    """`payment_behavior=error_if_incomplete`: "return an HTTP 402 status code if a subscription's invoice
    cannot be paid ... this parameter does not update the subscription and returns an error instead"
    (SubscriptionUpdateParams). The invoice `always_invoice` makes is charged with the payment method
    it would use; if that charge fails, every item change is undone and the card error is raised."""
    core = req.core
    due = sum(line["amount"] for line in lines)
    if due <= 0:
        return
    customer = core.store.get("customer", sub["customer"])
    pm = sub.get("default_payment_method") or customer["invoice_settings"]["default_payment_method"]
    error = billing.charge(core, pm)
    if error is None:
        return
    kept = [item for item, _ in saved]
    for item in billing.items(sub):
        if all(item is not old for old in kept):
            item["_deleted"] = True  # added by the refused update
    for item, copy_before in saved:
        item.clear()
        item.update(copy_before)
    sub["items"]["data"][:] = kept
    sub["items"]["total_count"] = len(kept)
    for key in (
        "metadata",
        "billing_thresholds",
        "cancel_at_period_end",
        "cancel_at",
        "canceled_at",
        "description",
        "default_payment_method",
    ):
        sub[key] = before[key]
    raise error


def _update_items(
    req: Request, sub: dict[str, Any], specs: list[dict[str, Any]], now: int, *, billed: bool
) -> list[dict]:
    """Apply `items[]`; the lines the change bills (prorations, usage of removed metered prices).

    `billed`: the lines will be invoiced (proration_behavior is not `none`), so what the items'
    flat fees debited this period changes with them.
    """
    core = req.core
    lines: list[dict] = []
    current = billing.items(sub)
    first = current[0]["price"]["recurring"] if current else None
    interval = (first["interval"], first["interval_count"]) if first else None
    for n, spec in enumerate(specs):
        param = f"items[{n}]"
        if "id" in spec:
            item = next((x for x in current if x["id"] == spec["id"]), None)
            if item is None:
                raise StripeError(
                    f"No such subscription item: '{spec['id']}'",
                    status=404,
                    code="resource_missing",
                    param=f"{param}[id]",
                )
            lines += _change_item(req, sub, item, spec, param, interval, now, billed)
            continue
        if "price" not in spec:
            raise StripeError(
                f"Missing required param: {param}[price].", code="parameter_missing", param=f"{param}[price]"
            )
        price = check_price(req, spec["price"], f"{param}[price]", sub["currency"], interval)
        item = billing.new_item(core, sub, price, spec.get("quantity"), spec.get("metadata", {}), now)
        if current:
            item["current_period_start"] = current[0]["current_period_start"]
            item["current_period_end"] = current[0]["current_period_end"]
            if billing.is_metered(price):
                billing.start_usage(core, item, now)  # added mid-period: the usage reported from now on
        current.append(item)
        lines += [x for x in billing.proration_lines(core, sub, item, None, now) if x["amount"] > 0]
        billing.mark_debited(item, billed)
    sub["items"]["total_count"] = len(current)
    if not current:
        raise invalid("items", "A subscription must keep at least one item.")
    return lines


def _change_item(  # noqa: PLR0917 - one item of an items[] update
    req: Request,
    sub: dict[str, Any],
    item: dict[str, Any],
    spec: dict[str, Any],
    param: str,
    interval: tuple | None,
    now: int,
    billed: bool,
) -> list[dict]:
    """Delete or change an existing item; the lines that bills."""
    core = req.core
    lines: list[dict] = []
    debited = item.get("_debited")
    if spec.get("deleted"):
        # Flexible mode "generates an invoice item for unbilled usage when you remove a metered
        # subscription item"; a licensed one gets a credit for its unused time.
        lines += billing.close_usage(core, sub, item, now)
        lines += billing.proration_lines(core, sub, item, debited, now, charge_new=False)
        billing.items(sub).remove(item)
        item["_deleted"] = True
        return lines
    old_price, old_qty = item["price"], item["quantity"]
    if "price" in spec and spec["price"] != old_price["id"]:
        price = check_price(req, spec["price"], f"{param}[price]", sub["currency"], interval)
        lines += billing.close_usage(core, sub, item, now)  # a metered old price: its usage so far
        item["price"] = copy.deepcopy(price)
        item["plan"] = billing.plan_of(price)
        # The new price bills the usage reported from now on ("only usage reported after the price
        # change is billed at the new price").
        billing.start_usage(core, item, now if billing.is_metered(price) else None)
        if billing.is_metered(price):
            item["quantity"] = None
        elif item["quantity"] is None:
            item["quantity"] = 1
    if "quantity" in spec:
        if billing.is_metered(item["price"]):
            raise invalid(f"{param}[quantity]", "Quantity should not be specified where usage_type is `metered`.")
        item["quantity"] = spec["quantity"]
    if "metadata" in spec:
        item["metadata"] = merge_metadata(item["metadata"], spec["metadata"])
    if (item["price"]["id"], item["quantity"]) != (old_price["id"], old_qty):
        lines += billing.proration_lines(core, sub, item, debited, now)
        if billed:  # with proration_behavior=none the period stays paid at what was debited
            billing.mark_debited(item, True)
    return lines


@route("DELETE", "/v1/subscriptions/{id}")
def cancel_subscription(req: Request) -> dict[str, Any]:
    p = validate(
        req.params,
        {
            "invoice_now": b,
            "prorate": b,
            "cancellation_details": obj({"comment": nullable(s), "feedback": nullable(s)}),
            **EXPAND,
        },
    )
    sub = req.core.store.get("subscription", req.args[0])
    if sub["status"] in ("canceled", "incomplete_expired"):
        raise StripeError(
            f"This subscription ({sub['id']}) has already been canceled.", code="resource_missing", status=404
        )
    if "cancellation_details" in p:
        sub["cancellation_details"].update(p["cancellation_details"])
    return billing.cancel(req.core, sub, invoice_now=p.get("invoice_now", False), prorate=p.get("prorate", False))


STATUSES = (
    "active",
    "past_due",
    "unpaid",
    "canceled",
    "incomplete",
    "incomplete_expired",
    "trialing",
    "paused",
    "all",
    "ended",
)


@route("GET", "/v1/subscriptions")
def list_subscriptions(req: Request) -> dict[str, Any]:
    p = validate(
        req.params,
        {
            **LIST,
            "customer": s,
            "price": s,
            "status": enum(*STATUSES),
            "test_clock": s,
            "created": s,
            "collection_method": s,
        },
    )
    status = p.get("status")

    def keep(sub: dict[str, Any]) -> bool:
        if "customer" in p and sub["customer"] != p["customer"]:
            return False
        if "test_clock" in p and sub["test_clock"] != p["test_clock"]:
            return False
        if "price" in p and all(x["price"]["id"] != p["price"] for x in billing.items(sub)):
            return False
        if status is None:  # "If no value is supplied, all subscriptions that have not been canceled are returned."
            return sub["status"] != "canceled"
        if status == "ended":
            return sub["status"] in ("canceled", "incomplete_expired")
        return status == "all" or sub["status"] == status

    return req.core.page([x for x in req.core.store.all("subscription") if keep(x)], p, "/v1/subscriptions")


@route("GET", "/v1/subscriptions/search")
def search_subscriptions(req: Request) -> dict[str, Any]:
    p = validate(req.params, {"query": s, "limit": i, "page": s, **EXPAND}, ("query",))
    clauses = search.parse(p["query"], {"status", "customer"})
    found = search.find(req.core, "subscription", clauses)
    return search.result(found, "/v1/subscriptions/search", p.get("limit", 10))


@route("GET", "/v1/subscription_items")
def list_items(req: Request) -> dict[str, Any]:
    p = validate(req.params, {**LIST, "subscription": s}, ("subscription",))
    sub = req.core.store.get("subscription", p["subscription"], param="subscription")
    return req.core.page(billing.items(sub), p, f"/v1/subscription_items?subscription={sub['id']}", newest_first=False)


@route("GET", "/v1/subscription_items/{id}")
def get_item(req: Request) -> dict[str, Any]:
    validate(req.params, EXPAND)
    return req.core.store.get("subscription_item", req.args[0], "subscription item")


@route("POST", "/v1/subscription_items/{id}")
def update_item(req: Request) -> dict[str, Any]:
    p = validate(
        req.params,
        {
            "price": s,
            "quantity": i,
            "metadata": metadata,
            "proration_behavior": PRORATION,
            "payment_behavior": PAYMENT_BEHAVIOR,
            "off_session": b,
            **EXPAND,
        },
    )
    item = req.core.store.get("subscription_item", req.args[0], "subscription item")
    spec = {k: v for k, v in p.items() if k in ("price", "quantity", "metadata")}
    params: dict[str, Any] = {"items": [{"id": item["id"], **{k: _form(v) for k, v in spec.items()}}]}
    if "proration_behavior" in p:
        params["proration_behavior"] = p["proration_behavior"]
    update_subscription(Request(req.core, "POST", req.path, (item["subscription"],), params))
    return item


def _form(value: Any) -> Any:
    """Back to wire form, so the nested update validates it exactly as the API would."""
    if isinstance(value, dict):
        return {k: _form(v) for k, v in value.items()}
    return str(value).lower() if isinstance(value, bool) else str(value)
