"""Customers (with search) and card payment methods, including Stripe's test `pm_card_*` tokens."""

from __future__ import annotations

import copy
import secrets
from typing import Any

from emulators.stripe import billing, search
from emulators.stripe.resources.catalog import merge_metadata
from emulators.stripe.routes import Request, route
from emulators.stripe.store import blank
from emulators.stripe.wire import EXPAND, LIST, StripeError, arr, enum, i, metadata, nullable, obj, s, validate

# Test tokens: last4, brand, what a charge does; declines marked "attach" fail already when attached.
TEST_TOKENS: dict[str, tuple[str, str, str | None, bool]] = {
    "pm_card_visa": ("4242", "visa", None, False),
    "pm_card_mastercard": ("4444", "mastercard", None, False),
    "pm_card_amex": ("8431", "amex", None, False),
    "pm_card_chargeCustomerFail": ("0341", "visa", "generic_decline", False),
    "pm_card_chargeDeclined": ("0002", "visa", "generic_decline", True),
    "pm_card_visa_chargeDeclined": ("0002", "visa", "generic_decline", True),
    "pm_card_chargeDeclinedInsufficientFunds": ("9995", "visa", "insufficient_funds", True),
    "pm_card_visa_chargeDeclinedInsufficientFunds": ("9995", "visa", "insufficient_funds", True),
}

ADDRESS = obj(dict.fromkeys(("city", "country", "line1", "line2", "postal_code", "state"), s))
CUSTOMER_FIELDS = {
    "email": nullable(s),
    "name": nullable(s),
    "phone": nullable(s),
    "description": nullable(s),
    "metadata": metadata,
    "address": nullable(ADDRESS),
    "preferred_locales": arr(s),
    "invoice_settings": obj(
        {
            "default_payment_method": nullable(s),
            "footer": s,
            "custom_fields": nullable(arr(obj({"name": s, "value": s}))),
        }
    ),
    "invoice_prefix": s,
    "balance": i,
    **EXPAND,
}


def attach(req: Request, pm_ref: str, customer: dict[str, Any], param: str) -> dict[str, Any]:
    """Attach a payment method (or a fresh one made from a test token) to a customer."""
    store = req.core.store
    if pm_ref in TEST_TOKENS:
        last4, brand, fails, fails_on_attach = TEST_TOKENS[pm_ref]
        if fails_on_attach:
            code, message = billing.DECLINES[fails or "generic_decline"]
            raise StripeError(message, status=402, type="card_error", code=code, decline_code=fails, param=param)
        pm = billing.new_card(req.core, last4, brand, fails)
    else:
        pm = store.get("payment_method", pm_ref, "PaymentMethod", param)
        if pm["customer"] not in (None, customer["id"]):
            raise StripeError("This PaymentMethod is already attached to another customer.", param=param)
    if pm["customer"] != customer["id"]:
        pm["customer"] = customer["id"]
        req.core.emit("payment_method.attached", pm, None, req.core.clock_of(customer["id"]))
    return pm


def _default_pm(req: Request, customer: dict[str, Any], pm_id: str | None) -> None:
    if pm_id:
        pm = req.core.store.maybe("payment_method", pm_id)
        if pm is None or pm["customer"] != customer["id"]:
            raise StripeError(
                f"The customer does not have a payment method with the ID {pm_id}. The payment method must be "
                "attached to the customer.",
                param="invoice_settings[default_payment_method]",
            )
    customer["invoice_settings"]["default_payment_method"] = pm_id


def new_customer(req: Request, p: dict[str, Any], clock_id: str | None = None) -> dict[str, Any]:
    store = req.core.store
    customer = blank("customer")
    now = req.core.now(clock_id or "")
    customer.update(
        id=store.new_id("cus"),
        address=p.get("address"),
        balance=p.get("balance", 0),
        created=now,
        currency=None,
        default_source=None,
        delinquent=False,
        description=p.get("description"),
        discount=None,
        email=p.get("email"),
        invoice_prefix=p.get("invoice_prefix") or secrets.token_hex(4).upper(),
        invoice_settings={
            "custom_fields": None,
            "default_payment_method": None,
            "footer": None,
            "rendering_options": None,
        },
        metadata=p.get("metadata", {}),
        name=p.get("name"),
        next_invoice_sequence=1,
        phone=p.get("phone"),
        preferred_locales=p.get("preferred_locales", []),
        shipping=None,
        tax_exempt="none",
        test_clock=clock_id,
        customer_account=None,
    )
    store.put("customer", customer)
    return customer


@route("POST", "/v1/customers")
def create_customer(req: Request) -> dict[str, Any]:
    p = validate(req.params, {**CUSTOMER_FIELDS, "test_clock": s, "payment_method": s})
    clock_id = None
    if "test_clock" in p:
        clock_id = req.core.store.get("test_helpers.test_clock", p["test_clock"], "test clock", "test_clock")["id"]
    customer = new_customer(req, p, clock_id)
    clock = req.core.clock_of(customer["id"])
    req.core.emit("customer.created", customer, None, clock)
    wanted = (p.get("invoice_settings") or {}).get("default_payment_method")
    if "payment_method" in p:
        pm = attach(req, p["payment_method"], customer, "payment_method")
        if wanted == p["payment_method"]:
            wanted = pm["id"]  # the token named in both places means the card it became
    if wanted:
        _default_pm(req, customer, wanted)
    return customer


@route("GET", "/v1/customers/{id}")
def get_customer(req: Request) -> dict[str, Any]:
    validate(req.params, EXPAND)
    store = req.core.store
    customer = store._kinds.get("customer", {}).get(req.args[0])
    if customer is not None and customer.get("_deleted"):
        return {"id": customer["id"], "object": "customer", "deleted": True}
    return store.get("customer", req.args[0])


@route("POST", "/v1/customers/{id}")
def update_customer(req: Request) -> dict[str, Any]:
    p = validate(req.params, {**CUSTOMER_FIELDS, "default_source": s})
    customer = req.core.store.get("customer", req.args[0])
    before = copy.deepcopy(customer)
    p.pop("expand", None)
    if "default_source" in p:
        raise StripeError(
            "Sources are not supported by the emulator; use invoice_settings[default_payment_method].",
            param="default_source",
        )
    settings = p.pop("invoice_settings", None)
    if settings:
        if "default_payment_method" in settings:
            _default_pm(req, customer, settings.pop("default_payment_method"))
        customer["invoice_settings"].update(settings)
    if "metadata" in p:
        customer["metadata"] = merge_metadata(customer["metadata"], p.pop("metadata"))
    customer.update(p)
    previous = {k: before[k] for k in customer if not k.startswith("_") and before.get(k) != customer[k]}
    if previous:
        req.core.emit("customer.updated", customer, previous, req.core.clock_of(customer["id"]))
    return customer


@route("DELETE", "/v1/customers/{id}")
def delete_customer(req: Request) -> dict[str, Any]:
    customer = req.core.store.get("customer", req.args[0])
    for sub in req.core.store.all("subscription"):
        if sub["customer"] == customer["id"] and sub["status"] not in ("canceled", "incomplete_expired"):
            billing.cancel(req.core, sub, invoice_now=False, prorate=False)
    req.core.emit("customer.deleted", customer, None, req.core.clock_of(customer["id"]))
    customer["_deleted"] = True
    return {"id": customer["id"], "object": "customer", "deleted": True}


@route("GET", "/v1/customers")
def list_customers(req: Request) -> dict[str, Any]:
    p = validate(req.params, {**LIST, "email": s, "test_clock": s, "created": s})
    found = [
        c
        for c in req.core.store.all("customer")
        if ("email" not in p or c["email"] == p["email"])
        and ("test_clock" not in p or c["test_clock"] == p["test_clock"])
    ]
    return req.core.page(found, p, "/v1/customers")


@route("GET", "/v1/customers/search")
def search_customers(req: Request) -> dict[str, Any]:
    p = validate(req.params, {"query": s, "limit": i, "page": s, **EXPAND}, ("query",))
    clauses = search.parse(p["query"], {"email", "name", "phone"})
    found = search.find(req.core, "customer", clauses)
    return search.result(found, "/v1/customers/search", p.get("limit", 10))


# ---- payment methods -------------------------------------------------------------------------------
@route("POST", "/v1/payment_methods/{id}/attach")
def attach_payment_method(req: Request) -> dict[str, Any]:
    p = validate(req.params, {"customer": s, **EXPAND}, ("customer",))
    customer = req.core.store.get("customer", p["customer"], param="customer")
    return attach(req, req.args[0], customer, "payment_method")


@route("POST", "/v1/payment_methods/{id}/detach")
def detach_payment_method(req: Request) -> dict[str, Any]:
    validate(req.params, EXPAND)
    pm = req.core.store.get("payment_method", req.args[0], "PaymentMethod")
    customer_id = pm["customer"]
    if customer_id is None:
        raise StripeError("The payment method you provided is not attached to a customer so detachment is impossible.")
    pm["customer"] = None
    customer = req.core.store.maybe("customer", customer_id)
    if customer and customer["invoice_settings"]["default_payment_method"] == pm["id"]:
        customer["invoice_settings"]["default_payment_method"] = None
    req.core.emit("payment_method.detached", pm, {"customer": customer_id}, req.core.clock_of(customer_id))
    return pm


@route("GET", "/v1/payment_methods/{id}")
def get_payment_method(req: Request) -> dict[str, Any]:
    validate(req.params, EXPAND)
    return req.core.store.get("payment_method", req.args[0], "PaymentMethod")


@route("GET", "/v1/payment_methods")
def list_payment_methods(req: Request) -> dict[str, Any]:
    p = validate(req.params, {**LIST, "customer": s, "type": enum("card")})
    found = [m for m in req.core.store.all("payment_method") if "customer" not in p or m["customer"] == p["customer"]]
    return req.core.page(found, p, "/v1/payment_methods")


@route("GET", "/v1/customers/{id}/payment_methods")
def list_customer_payment_methods(req: Request) -> dict[str, Any]:
    p = validate(req.params, {**LIST, "type": enum("card"), "allow_redisplay": s})
    customer = req.core.store.get("customer", req.args[0])
    found = [m for m in req.core.store.all("payment_method") if m["customer"] == customer["id"]]
    return req.core.page(found, p, f"/v1/customers/{customer['id']}/payment_methods")
