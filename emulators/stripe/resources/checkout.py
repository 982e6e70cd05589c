"""Checkout Sessions in subscription mode."""

from __future__ import annotations

from typing import Any

from emulators.stripe import billing, pricing, trials
from emulators.stripe.resources.customers import new_customer
from emulators.stripe.resources.subscriptions import BILLING_MODE, DISCOUNTS, billing_mode, check_price, make_discounts
from emulators.stripe.routes import Request, route
from emulators.stripe.store import blank, random_token
from emulators.stripe.wire import EXPAND, LIST, StripeError, arr, b, enum, i, invalid, metadata, obj, s, validate

SESSION_FIELDS = {
    "mode": enum("subscription", "payment", "setup"),
    "line_items": arr(obj({"price": s, "quantity": i})),
    "customer": s,
    "customer_email": s,
    "client_reference_id": s,
    "metadata": metadata,
    "success_url": s,
    "cancel_url": s,
    "allow_promotion_codes": b,
    "discounts": DISCOUNTS,
    "locale": s,
    "expires_at": i,
    "subscription_data": obj(
        {
            "metadata": metadata,
            "trial_period_days": i,
            "description": s,
            "default_tax_rates": arr(s),
            "billing_mode": BILLING_MODE,
            "trial_settings": trials.TRIAL_SETTINGS,
        }
    ),
    "payment_method_types": arr(enum("card")),
    "billing_address_collection": enum("auto", "required"),
    "customer_creation": enum("always", "if_required"),
    "ui_mode": enum("hosted"),
    "payment_method_collection": enum("always", "if_required"),
    **EXPAND,
}


@route("POST", "/v1/checkout/sessions")
def create_session(req: Request) -> dict[str, Any]:
    p = validate(req.params, SESSION_FIELDS, ("mode",))
    core = req.core
    store = core.store
    if p["mode"] != "subscription":
        raise invalid("mode", "The emulator supports Checkout in subscription mode only.")
    if "customer" in p and "customer_email" in p:
        raise StripeError(
            "You may only specify one of these parameters: customer, customer_email.", param="customer_email"
        )
    if p.get("allow_promotion_codes") and "discounts" in p:
        raise StripeError(
            "You may only specify one of these parameters: allow_promotion_codes, discounts.", param="discounts"
        )
    customer = store.get("customer", p["customer"], param="customer") if "customer" in p else None
    billing_mode((p.get("subscription_data") or {}).get("billing_mode"), "subscription_data[billing_mode]")
    if not p.get("line_items"):
        raise StripeError("Missing required param: line_items.", code="parameter_missing", param="line_items")
    lines: list[tuple[dict, int | None]] = []
    currency = interval = None
    for n, item in enumerate(p["line_items"]):
        if "price" not in item:
            raise StripeError(
                f"Missing required param: line_items[{n}][price].",
                code="parameter_missing",
                param=f"line_items[{n}][price]",
            )
        price = check_price(req, item["price"], f"line_items[{n}][price]", currency, interval)
        currency, interval = price["currency"], (price["recurring"]["interval"], price["recurring"]["interval_count"])
        qty = item.get("quantity")
        if billing.is_metered(price):
            if qty is not None:
                raise invalid(
                    f"line_items[{n}][quantity]", "Quantity should not be specified where usage_type is `metered`."
                )
        elif qty is None:
            raise StripeError(
                f"Missing required param: line_items[{n}][quantity].",
                code="parameter_missing",
                param=f"line_items[{n}][quantity]",
            )
        lines.append((price, qty))
    for n, spec in enumerate(p.get("discounts", [])):
        if "coupon" in spec:
            store.get("coupon", spec["coupon"], param=f"discounts[{n}][coupon]")
        if "promotion_code" in spec:
            store.get("promotion_code", spec["promotion_code"], param=f"discounts[{n}][promotion_code]")
    now = core.now(core.clock_of(customer["id"]) if customer else "")
    session = blank("checkout.session")
    session_id = f"cs_test_{random_token(58)}"
    due = sum(pricing.amount(pr, q or 0) for pr, q in lines if not billing.is_metered(pr))
    subtotal = 0 if trials.check_session(p, due) else due
    session.update(
        id=session_id,
        allow_promotion_codes=p.get("allow_promotion_codes"),
        amount_subtotal=subtotal,
        amount_total=subtotal,
        automatic_tax={"enabled": False, "liability": None, "status": None, "provider": None},
        billing_address_collection=p.get("billing_address_collection"),
        cancel_url=p.get("cancel_url"),
        client_reference_id=p.get("client_reference_id"),
        created=now,
        currency=currency,
        custom_fields=[],
        custom_text={
            "after_submit": None,
            "shipping_address": None,
            "submit": None,
            "terms_of_service_acceptance": None,
        },
        customer=customer["id"] if customer else None,
        customer_creation=p.get("customer_creation", "always"),
        customer_details=None,
        customer_email=p.get("customer_email"),
        discounts=p.get("discounts", []),
        expires_at=p.get("expires_at", now + 86400),
        invoice=None,
        locale=p.get("locale"),
        metadata=p.get("metadata", {}),
        mode="subscription",
        payment_intent=None,
        payment_link=None,
        payment_method_collection=p.get("payment_method_collection", "always"),
        payment_method_options={},
        payment_method_types=["card"],
        payment_status="unpaid",
        phone_number_collection={"enabled": False},
        shipping_address_collection=None,
        shipping_options=[],
        status="open",
        submit_type=None,
        subscription=None,
        success_url=p.get("success_url"),
        total_details={"amount_discount": 0, "amount_shipping": 0, "amount_tax": 0},
        ui_mode="hosted",
        url=f"{core.base_url}/c/pay/{session_id}",
        _lines=lines,
        _subscription_data=p.get("subscription_data", {}),
    )
    return store.put("checkout.session", session)


@route("GET", "/v1/checkout/sessions/{id}")
def get_session(req: Request) -> dict[str, Any]:
    validate(req.params, EXPAND)
    return req.core.store.get("checkout.session", req.args[0], "checkout.session")


@route("GET", "/v1/checkout/sessions")
def list_sessions(req: Request) -> dict[str, Any]:
    p = validate(
        req.params,
        {
            **LIST,
            "customer": s,
            "subscription": s,
            "status": enum("open", "complete", "expired"),
            "created": s,
            "payment_intent": s,
        },
    )
    found = [
        x
        for x in req.core.store.all("checkout.session")
        if all(x.get(k) == p[k] for k in ("customer", "subscription", "status") if k in p)
    ]
    return req.core.page(found, p, "/v1/checkout/sessions")


@route("POST", "/v1/checkout/sessions/{id}/expire")
def expire_session(req: Request) -> dict[str, Any]:
    validate(req.params, EXPAND)
    session = req.core.store.get("checkout.session", req.args[0], "checkout.session")
    if session["status"] != "open":
        raise StripeError(
            f"Only Checkout Sessions with a status of open can be expired; this one is {session['status']}."
        )
    session["status"] = "expired"
    req.core.emit("checkout.session.expired", session, None, req.core.clock_of(session["customer"]))
    return session


def line_items(core: Any, session: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for n, (price, qty) in enumerate(session["_lines"]):
        amount = 0 if billing.is_metered(price) else pricing.amount(price, qty or 0)
        item = blank("item")
        item.update(
            id=f"li_{session['id'][8:30]}{n}",
            amount_discount=0,
            amount_subtotal=amount,
            amount_tax=0,
            amount_total=amount,
            currency=price["currency"],
            description=billing.product_name(core, price),
            price=price,
            quantity=qty,
            adjustable_quantity=None,
            metadata={},
        )
        out.append(item)
    return out


@route("GET", "/v1/checkout/sessions/{id}/line_items")
def list_line_items(req: Request) -> dict[str, Any]:
    p = validate(req.params, LIST)
    session = req.core.store.get("checkout.session", req.args[0], "checkout.session")
    return req.core.page(
        line_items(req.core, session), p, f"/v1/checkout/sessions/{session['id']}/line_items", newest_first=False
    )


def complete(  # noqa: PLR0917 - called from the hosted page only
    core: Any,
    session: dict[str, Any],
    pm_card: dict[str, Any],
    email: str | None,
    name: str | None,
    promotion_code: str | None,
) -> None:
    """The customer paid on the hosted page: customer, subscription, first invoice, events."""
    req = Request(core, "POST", "", (), {})
    customer = core.store.maybe("customer", session["customer"] or "")
    if customer is None:
        customer = new_customer(req, {"email": email or session["customer_email"], "name": name})
        core.emit("customer.created", customer, None)
        session["customer"] = customer["id"]
    clock = core.clock_of(customer["id"])
    pm_card["customer"] = customer["id"]
    core.emit("payment_method.attached", pm_card, None, clock)
    # "When subscriptions are created in Checkout, the collected payment method is set as the
    # default_payment_method on the Subscription": the customer's invoice settings stay as they were.
    specs = list(session["discounts"] or [])
    if promotion_code:
        specs = [{"promotion_code": promotion_code}]
    discounts = make_discounts(req, specs, customer["id"], "discounts")
    data = session["_subscription_data"]
    sub = billing.create_subscription(
        core,
        customer,
        [(price, qty, {}) for price, qty in session["_lines"]],
        metadata=dict(data.get("metadata", {})),
        trial_days=data.get("trial_period_days"),
        default_payment_method=pm_card["id"],
        discounts=discounts,
        description=data.get("description"),
        first_payment_method=pm_card["id"],
        billing_mode=billing_mode(data.get("billing_mode"), "subscription_data[billing_mode]"),
        trial_settings=trials.settings(data.get("trial_settings"), "subscription_data[trial_settings]"),
    )
    inv = core.store.get("invoice", sub["latest_invoice"])
    session.update(
        status="complete",
        subscription=sub["id"],
        invoice=inv["id"],
        payment_status="paid" if inv["amount_paid"] > 0 or not data.get("trial_period_days") else "no_payment_required",
        amount_subtotal=inv["subtotal"],
        amount_total=inv["total"],
        customer_details={
            "address": None,
            "email": customer["email"],
            "name": customer["name"],
            "phone": None,
            "tax_exempt": "none",
            "tax_ids": [],
            "business_name": None,
            "individual_name": None,
        },
        discounts=[{"coupon": None, "promotion_code": None, "discount": d} for d in discounts],
    )
    session["total_details"]["amount_discount"] = inv["subtotal"] - inv["total"]
    core.emit("checkout.session.completed", session, None, clock)
