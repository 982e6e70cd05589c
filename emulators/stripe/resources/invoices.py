"""Invoices: read, list, lines, finalise, pay, void, mark uncollectible, preview."""

from __future__ import annotations

from typing import Any

from emulators.stripe import billing, search
from emulators.stripe.resources.catalog import merge_metadata
from emulators.stripe.routes import Request, route
from emulators.stripe.wire import EXPAND, LIST, StripeError, b, enum, i, metadata, nullable, s, validate

STATUSES = ("draft", "open", "paid", "uncollectible", "void")


def _invoice(req: Request) -> dict[str, Any]:
    return req.core.store.get("invoice", req.args[0])


@route("GET", "/v1/invoices/{id}")
def get_invoice(req: Request) -> dict[str, Any]:
    validate(req.params, EXPAND)
    return _invoice(req)


@route("POST", "/v1/invoices/{id}")
def update_invoice(req: Request) -> dict[str, Any]:
    p = validate(
        req.params,
        {"metadata": metadata, "auto_advance": b, "description": nullable(s), "footer": nullable(s), **EXPAND},
    )
    inv = _invoice(req)
    if inv["status"] != "draft" and set(p) - {"metadata", "expand"}:
        raise StripeError("Only metadata can be changed once an invoice is finalized.")
    previous = {}
    for key in ("auto_advance", "description", "footer"):
        if key in p:
            previous[key] = inv[key]
            inv[key] = p[key]
    if "metadata" in p:
        previous["metadata"] = dict(inv["metadata"])
        inv["metadata"] = merge_metadata(inv["metadata"], p["metadata"])
    req.core.emit("invoice.updated", inv, previous, req.core.clock_of(inv["customer"]))
    return inv


@route("GET", "/v1/invoices")
def list_invoices(req: Request) -> dict[str, Any]:
    p = validate(
        req.params,
        {
            **LIST,
            "customer": s,
            "subscription": s,
            "status": enum(*STATUSES),
            "collection_method": s,
            "created": s,
            "due_date": s,
        },
    )
    found = [
        x
        for x in req.core.store.all("invoice")
        if ("customer" not in p or x["customer"] == p["customer"])
        and ("subscription" not in p or x["_subscription"] == p["subscription"])
        and ("status" not in p or x["status"] == p["status"])
    ]
    return req.core.page(found, p, "/v1/invoices")


@route("GET", "/v1/invoices/search")
def search_invoices(req: Request) -> dict[str, Any]:
    p = validate(req.params, {"query": s, "limit": i, "page": s, **EXPAND}, ("query",))
    clauses = search.parse(p["query"], {"status", "customer", "number", "total"})
    found = search.find(req.core, "invoice", clauses)
    return search.result(found, "/v1/invoices/search", p.get("limit", 10))


@route("GET", "/v1/invoices/{id}/lines")
def list_lines(req: Request) -> dict[str, Any]:
    p = validate(req.params, LIST)
    inv = _invoice(req)
    if inv["status"] == "draft":
        billing.refresh_metered(req.core, inv)
        billing.recompute(req.core, inv)
    return req.core.page(inv["lines"]["data"], p, f"/v1/invoices/{inv['id']}/lines", newest_first=False)


@route("POST", "/v1/invoices/{id}/finalize")
def finalize_invoice(req: Request) -> dict[str, Any]:
    p = validate(req.params, {"auto_advance": b, **EXPAND})
    inv = _invoice(req)
    if inv["status"] != "draft":
        raise StripeError(
            "This invoice is already finalized, you can't re-finalize a non-draft invoice.", code="invoice_not_editable"
        )
    inv["auto_advance"] = p.get("auto_advance", inv["auto_advance"])
    billing.finalize(req.core, inv)
    return inv


@route("POST", "/v1/invoices/{id}/pay")
def pay_invoice(req: Request) -> dict[str, Any]:
    p = validate(
        req.params,
        {
            "payment_method": s,
            "paid_out_of_band": b,
            "off_session": b,
            "forgive": b,
            "source": s,
            "mandate": s,
            **EXPAND,
        },
    )
    core = req.core
    inv = _invoice(req)
    if "source" in p or "mandate" in p:
        raise StripeError("The emulator pays invoices with payment methods only.", param="source")
    if inv["status"] == "paid":
        raise StripeError("Invoice is already paid", code="invoice_already_paid" if False else None)
    if inv["status"] in ("void",):
        raise StripeError("This invoice has been voided and can no longer be paid.")
    if inv["status"] == "draft":
        inv["auto_advance"] = False
        billing.finalize(core, inv)
        if inv["status"] == "paid":
            return inv
    clock = core.clock_of(inv["customer"])
    if p.get("paid_out_of_band"):
        billing.mark_paid(core, inv, core.now(clock), clock)
        return inv
    pm = p.get("payment_method")
    if pm:
        found = core.store.maybe("payment_method", pm)
        if found is None or found["customer"] != inv["customer"]:
            raise StripeError(f"The customer does not have a payment method with the ID {pm}.", param="payment_method")
    error = billing.attempt(core, inv, pm, automatic=False)
    if error is not None:
        raise error
    return inv


@route("POST", "/v1/invoices/{id}/void")
def void_invoice(req: Request) -> dict[str, Any]:
    validate(req.params, EXPAND)
    inv = _invoice(req)
    if inv["status"] not in ("open", "uncollectible"):
        raise StripeError(f"You can only void open or uncollectible invoices; this one is {inv['status']}.")
    billing.void(req.core, inv)
    return inv


@route("POST", "/v1/invoices/{id}/mark_uncollectible")
def mark_uncollectible(req: Request) -> dict[str, Any]:
    validate(req.params, EXPAND)
    inv = _invoice(req)
    if inv["status"] != "open":
        raise StripeError(f"You can only mark open invoices uncollectible; this one is {inv['status']}.")
    billing.mark_uncollectible(req.core, inv)
    return inv


@route("POST", "/v1/invoices/create_preview")
def preview(req: Request) -> dict[str, Any]:
    p = validate(req.params, {"customer": s, "subscription": s, **EXPAND}, ("subscription",))
    core = req.core
    sub = core.store.get("subscription", p["subscription"], param="subscription")
    if "customer" in p and p["customer"] != sub["customer"]:
        raise StripeError("The subscription does not belong to that customer.", param="customer")
    customer = core.store.get("customer", sub["customer"])
    start = billing.items(sub)[0]["current_period_start"]
    end = billing.items(sub)[0]["current_period_end"]
    inv = billing.new_invoice(core, customer, sub, "upcoming", start, end, core.now(core.clock_of(sub["customer"])))
    core.store._kinds["invoice"].pop(inv["id"])  # a preview is not stored
    core.search_versions.pop(inv["id"], None)  # nor searchable
    inv["id"] = None
    new_end = billing.period_end(sub, end)
    for item in billing.items(sub):
        if billing.is_metered(item["price"]):
            billing.metered_line(core, inv, sub, item, billing.window(item), end)
        else:
            billing.flat_line(core, inv, sub, item, end, new_end, trial=False)
    billing.recompute(core, inv)
    return inv
