"""Hosted pages: Checkout (test cards), the hosted invoice page, and the billing portal."""

from __future__ import annotations

import copy
import html
import re
import time
from typing import Any
from urllib.parse import parse_qs

from emulators.stripe import billing, pricing
from emulators.stripe.core import Core
from emulators.stripe.resources import checkout

# Stripe's test card numbers: brand and what charging the card does (None = succeeds).
TEST_CARDS: dict[str, tuple[str, str | None]] = {
    "4242424242424242": ("visa", None),
    "4000056655665556": ("visa", None),
    "5555555555554444": ("mastercard", None),
    "378282246310005": ("amex", None),
    "4000000000000002": ("visa", "generic_decline"),
    "4000000000009995": ("visa", "insufficient_funds"),
    "4000000000000341": ("visa", "generic_decline"),
}

Page = tuple[int, dict[str, str], str]

_STYLE = """<style>body{font-family:system-ui,sans-serif;max-width:40rem;margin:2rem auto;padding:0 1rem}
label{display:block;margin:.6rem 0 .2rem}input{padding:.4rem;width:100%;box-sizing:border-box}
button{margin-top:1rem;padding:.6rem 1.2rem}table{border-collapse:collapse;width:100%}
td,th{border-bottom:1px solid #ddd;padding:.3rem;text-align:left}.error{color:#b00020}</style>"""


def _page(title: str, body: str, status: int = 200) -> Page:
    doc = (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"{_STYLE}</head><body><main><h1>{html.escape(title)}</h1>{body}</main></body></html>"
    )
    return status, {"Content-Type": "text/html; charset=utf-8"}, doc


def _redirect(url: str) -> Page:
    return 303, {"Location": url, "Content-Type": "text/plain"}, f"See {url}"


def _money(minor: int, currency: str) -> str:
    return html.escape(pricing.describe_money(minor, currency))


def _form(body: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(body, keep_blank_values=True).items()}


def card_check(fields: dict[str, str]) -> tuple[str, str, tuple[int, int]] | str:
    """(last4, brand, expiry) of a usable test card, or the message Checkout shows."""
    number = re.sub(r"[\s-]", "", fields.get("cardNumber", ""))
    if not number:
        return "Your card number is incomplete."
    expiry = re.fullmatch(r"\s*(\d{1,2})\s*/\s*(\d{2}|\d{4})\s*", fields.get("cardExpiry", ""))
    if not expiry:
        return "Your card's expiration date is incomplete (use MM / YY)."
    month, year = int(expiry[1]), int(expiry[2])
    year = year + 2000 if year < 100 else year
    current = time.gmtime()
    if not 1 <= month <= 12 or (year, month) < (current.tm_year, current.tm_mon):
        return (
            "Your card's expiration date is in the past."
            if 1 <= month <= 12
            else "Your card's expiration month is invalid."
        )
    if not re.fullmatch(r"\d{3,4}", fields.get("cardCvc", "").strip()):
        return "Your card's security code is incomplete."
    if number not in TEST_CARDS:
        return (
            "Your card was declined. Your request was in test mode, but used a non test card. "
            "Use a test card such as 4242 4242 4242 4242."
        )
    brand, fails = TEST_CARDS[number]
    if fails:
        return billing.DECLINES[fails][1]
    return number[-4:], brand, (month, year)


# ---- Checkout ----------------------------------------------------------------------------------
def checkout_page(core: Core, session_id: str, method: str, body: str) -> Page:
    session = core.store.maybe("checkout.session", session_id)
    if session is None:
        return _page("Checkout session not found", "<p>This link is not valid.</p>", 404)
    if session["status"] != "open":
        return _page("Checkout", f"<p>This Checkout Session is {html.escape(session['status'])}.</p>", 410)
    if method == "POST":
        fields = _form(body)
        result = card_check(fields)
        promo_id = None
        if isinstance(result, tuple) and fields.get("promotionCode", "").strip():
            code = fields["promotionCode"].strip()
            promo = next(
                (x for x in core.store.all("promotion_code") if x["active"] and x["code"].lower() == code.lower()), None
            )
            if promo is None or not session["allow_promotion_codes"]:
                result = f"The promotion code {code} is invalid."
            else:
                promo_id = promo["id"]
        email = fields.get("email", "").strip() or None
        if isinstance(result, tuple) and not session["customer"] and not session["customer_email"] and not email:
            result = "Your email address is incomplete."
        if isinstance(result, str):
            return _checkout_form(core, session, result, fields)
        last4, brand, exp = result
        pm = billing.new_card(core, last4, brand, None, exp)
        checkout.complete(core, session, pm, email, fields.get("billingName") or None, promo_id)
        if session["success_url"]:
            return _redirect(session["success_url"].replace("{CHECKOUT_SESSION_ID}", session["id"]))
        return _page("Thanks for your order", '<p role="status">Payment complete.</p>')
    return _checkout_form(core, session, None, {})


def _checkout_form(core: Core, session: dict[str, Any], error: str | None, fields: dict[str, str]) -> Page:
    rows = "".join(
        f"<tr><td>{html.escape(item['description'])}</td><td>{item['quantity'] or 'metered'}</td>"
        f"<td>{_money(item['amount_total'], item['currency'])}</td></tr>"
        for item in checkout.line_items(core, session)
    )
    trial = session["_subscription_data"].get("trial_period_days")
    due = 0 if trial else session["amount_total"]
    value = html.escape(fields.get("email", session["customer_email"] or ""))
    email = (
        ""
        if session["customer"]
        else (
            f'<label for="email">Email</label><input id="email" name="email" type="email" autocomplete="email" '
            f'value="{value}" {"readonly" if session["customer_email"] else "required"}>'
        )
    )
    promo = (
        '<label for="promotionCode">Promotion code</label><input id="promotionCode" name="promotionCode">'
        if session["allow_promotion_codes"]
        else ""
    )
    alert = f'<p class="error" role="alert">{html.escape(error)}</p>' if error else ""
    back = f'<p><a href="{html.escape(session["cancel_url"])}">Back</a></p>' if session["cancel_url"] else ""
    trial_note = f"<p>{trial}-day free trial.</p>" if trial else ""
    body = f"""{back}<table><caption>Subscription</caption><tr><th>Item</th><th>Quantity</th><th>Price</th></tr>
{rows}</table>{trial_note}<p>Due today: <strong>{_money(due, session["currency"])}</strong></p>{alert}
<form method="post" action="/c/pay/{html.escape(session["id"])}">{email}
<label for="cardNumber">Card number</label><input id="cardNumber" name="cardNumber" inputmode="numeric"
 autocomplete="cc-number" placeholder="1234 1234 1234 1234" required>
<label for="cardExpiry">Expiry (MM / YY)</label><input id="cardExpiry" name="cardExpiry" autocomplete="cc-exp"
 placeholder="MM / YY" required>
<label for="cardCvc">CVC</label><input id="cardCvc" name="cardCvc" autocomplete="cc-csc" inputmode="numeric" required>
<label for="billingName">Name on card</label><input id="billingName" name="billingName" autocomplete="cc-name">
{promo}<button type="submit">Subscribe</button></form>"""
    return _page("Checkout", body)


# ---- hosted invoice page -------------------------------------------------------------------------
def invoice_page(core: Core, invoice_id: str, method: str, body: str) -> Page:
    inv = core.store.maybe("invoice", invoice_id)
    if inv is None or inv["status"] == "draft":
        return _page("Invoice not found", "<p>This invoice link is not valid.</p>", 404)
    error = None
    if method == "POST" and inv["status"] == "open":
        result = card_check(_form(body))
        if isinstance(result, str):
            error = result
        else:
            pm = billing.new_card(core, result[0], result[1], None, result[2])
            failure = billing.attempt(core, inv, pm["id"], automatic=False)
            error = failure.message if failure else None
    rows = "".join(
        f"<tr><td>{html.escape(line['description'])}</td><td>{_money(line['amount'], inv['currency'])}</td></tr>"
        for line in inv["lines"]["data"]
    )
    alert = f'<p class="error" role="alert">{html.escape(error)}</p>' if error else ""
    form = ""
    if inv["status"] == "open":
        form = f"""<form method="post"><label for="cardNumber">Card number</label>
<input id="cardNumber" name="cardNumber" required><label for="cardExpiry">Expiry (MM / YY)</label>
<input id="cardExpiry" name="cardExpiry" required><label for="cardCvc">CVC</label>
<input id="cardCvc" name="cardCvc" required><button type="submit">Pay {
            _money(inv["amount_remaining"], inv["currency"])
        }</button></form>"""
    body_html = f"""<p>Invoice {html.escape(inv["number"] or "")} — status <strong>{inv["status"]}</strong></p>
<table><tr><th>Description</th><th>Amount</th></tr>{rows}</table>
<p>Total {_money(inv["total"], inv["currency"])}; amount due {_money(inv["amount_due"], inv["currency"])};
paid {_money(inv["amount_paid"], inv["currency"])}</p>{alert}{form}"""
    return _page("Invoice", body_html)


# ---- billing portal ------------------------------------------------------------------------------
def portal_page(core: Core, portal_id: str, method: str, body: str, action: str) -> Page:
    """The portal as the session's configuration allows: invoice history, cancellation (at the period
    end or immediately, with or without prorations), plan switching and card updates, each only
    when its feature is enabled."""
    portal = core.store.maybe("billing_portal.session", portal_id)
    if portal is None:
        return _page("Session not found", "<p>This portal link is not valid.</p>", 404)
    config = core.store.get("billing_portal.configuration", portal["configuration"])
    features = config["features"]
    notice = ""
    if method == "POST":
        actions = {"cancel": _portal_cancel, "update": _portal_update, "payment_method": _portal_payment_method}
        handler = actions.get(action)
        if handler is None:
            return _page("Not found", "<p>Unknown portal action.</p>", 404)
        outcome = handler(core, portal, features, _form(body))
        if isinstance(outcome, tuple):
            return outcome
        notice = outcome
    return _portal_view(core, portal, features, notice)


def _own_subscription(core: Core, portal: dict[str, Any], sub_id: str) -> dict[str, Any] | None:
    sub = core.store.maybe("subscription", sub_id)
    return sub if sub is not None and sub["customer"] == portal["customer"] else None


def _refused(feature: str) -> Page:
    return _page("Not available", f"<p>{html.escape(feature)} is not enabled in this portal.</p>", 403)


def _portal_cancel(core: Core, portal: dict[str, Any], features: dict[str, Any], fields: dict[str, str]) -> str | Page:
    cancel = features["subscription_cancel"]
    if not cancel["enabled"]:
        return _refused("Cancelling subscriptions")
    sub = _own_subscription(core, portal, fields.get("subscription", ""))
    if sub is None:
        return _page("Not found", "<p>No such subscription for this customer.</p>", 404)
    if sub["status"] in ("canceled", "incomplete_expired"):
        return '<p role="status">This subscription has already ended.</p>'
    if cancel["mode"] == "immediately":
        # Usage so far is invoiced (guess); unused flat time is credited with create_prorations.
        billing.cancel(core, sub, invoice_now=True, prorate=cancel["proration_behavior"] == "create_prorations")
        return '<p role="status">Your subscription has been cancelled.</p>'
    if not sub["cancel_at_period_end"]:
        before = copy.deepcopy(sub)
        clock = core.clock_of(portal["customer"])
        sub.update(
            cancel_at_period_end=True,
            cancel_at=billing.items(sub)[0]["current_period_end"],
            canceled_at=core.now(clock),
        )
        sub["cancellation_details"]["reason"] = "cancellation_requested"
        previous = {k: before[k] for k in ("cancel_at_period_end", "cancel_at", "canceled_at")}
        core.emit("customer.subscription.updated", sub, previous, clock)
    return '<p role="status">Your subscription has been cancelled. It ends at the end of the billing period.</p>'


def switch_targets(
    core: Core, features: dict[str, Any], sub: dict[str, Any]
) -> tuple[dict[str, Any] | None, list[str]]:
    """(the item a plan switch replaces, the prices it may switch to), per `subscription_update`.

    Only prices listed in the configuration's products, of the subscription's interval, for a
    subscription whose item's product is listed (guess: the portal switches one item's plan).
    """
    update = features["subscription_update"]
    if not update["enabled"] or "price" not in update["default_allowed_updates"]:
        return None, []
    listed = {entry["product"]: entry["prices"] for entry in update["products"] or []}
    item = next((x for x in billing.items(sub) if x["price"]["product"] in listed), None)
    if item is None or sub["status"] in ("canceled", "incomplete_expired"):
        return None, []
    rec = item["price"]["recurring"]
    targets = []
    for prices in listed.values():
        for price_id in prices:
            price = core.store.maybe("price", price_id)
            if (
                price is None
                or not price["active"]
                or price_id == item["price"]["id"]
                or (price["recurring"]["interval"], price["recurring"]["interval_count"])
                != (rec["interval"], rec["interval_count"])
            ):
                continue
            targets.append(price_id)
    return item, targets


def _portal_update(core: Core, portal: dict[str, Any], features: dict[str, Any], fields: dict[str, str]) -> str | Page:
    from emulators.stripe.resources import subscriptions  # noqa: PLC0415 - pages load before the resources
    from emulators.stripe.routes import Request  # noqa: PLC0415

    if not features["subscription_update"]["enabled"]:
        return _refused("Changing plans")
    sub = _own_subscription(core, portal, fields.get("subscription", ""))
    if sub is None:
        return _page("Not found", "<p>No such subscription for this customer.</p>", 404)
    item, targets = switch_targets(core, features, sub)
    if item is None or fields.get("price") not in targets:
        return _page("Not available", "<p>This plan cannot be chosen here.</p>", 403)
    params = {
        "items": [{"id": item["id"], "price": fields["price"]}],
        "proration_behavior": features["subscription_update"]["proration_behavior"],
    }
    subscriptions.update_subscription(Request(core, "POST", f"/v1/subscriptions/{sub['id']}", (sub["id"],), params))
    return '<p role="status">Your plan has been updated.</p>'


def _portal_payment_method(
    core: Core, portal: dict[str, Any], features: dict[str, Any], fields: dict[str, str]
) -> str | Page:
    if not features["payment_method_update"]["enabled"]:
        return _refused("Updating payment methods")
    result = card_check(fields)
    if isinstance(result, str):
        return f'<p class="error" role="alert">{html.escape(result)}</p>'
    customer = core.store.get("customer", portal["customer"])
    clock = core.clock_of(customer["id"])
    pm = billing.new_card(core, result[0], result[1], None, result[2])
    pm["customer"] = customer["id"]
    core.emit("payment_method.attached", pm, None, clock)
    # The new card becomes the customer's default and replaces the default of their live subscriptions
    # that had their own (guess: otherwise the subscription's default would keep being charged).
    previous = {"invoice_settings": dict(customer["invoice_settings"])}
    customer["invoice_settings"]["default_payment_method"] = pm["id"]
    core.emit("customer.updated", customer, previous, clock)
    for sub in core.store.all("subscription"):
        if (
            sub["customer"] == customer["id"]
            and sub["default_payment_method"]
            and sub["status"] not in ("canceled", "incomplete_expired")
        ):
            old = sub["default_payment_method"]
            sub["default_payment_method"] = pm["id"]
            core.emit("customer.subscription.updated", sub, {"default_payment_method": old}, clock)
    return '<p role="status">Your payment method has been updated.</p>'


def _portal_view(core: Core, portal: dict[str, Any], features: dict[str, Any], notice: str) -> Page:
    customer_id = portal["customer"]
    base = f"/p/session/{html.escape(portal['id'])}"
    subs = [x for x in core.store.all("subscription") if x["customer"] == customer_id]
    sub_rows = []
    for sub in subs:
        names = ", ".join(html.escape(billing.product_name(core, i["price"])) for i in billing.items(sub))
        ends = " (cancels at period end)" if sub["cancel_at_period_end"] else ""
        hidden = f'<input type="hidden" name="subscription" value="{html.escape(sub["id"])}">'
        actions = ""
        live = sub["status"] not in ("canceled", "incomplete_expired") and not sub["cancel_at_period_end"]
        if features["subscription_cancel"]["enabled"] and live:
            actions += (
                f'<form method="post" action="{base}/cancel">{hidden}'
                f'<button type="submit" aria-label="Cancel subscription {names}">Cancel subscription'
                "</button></form>"
            )
        _, targets = switch_targets(core, features, sub)
        if targets:
            options = "".join(
                f'<option value="{html.escape(t)}">{html.escape(_price_label(core, t))}</option>' for t in targets
            )
            select_id = f"price-{html.escape(sub['id'])}"
            actions += (
                f'<form method="post" action="{base}/update">{hidden}<label for="{select_id}">'
                f'New plan</label><select id="{select_id}" name="price">{options}</select>'
                f'<button type="submit" aria-label="Update plan {names}">Update plan</button></form>'
            )
        sub_rows.append(f"<tr><td>{names}</td><td>{sub['status']}{ends}</td><td>{actions}</td></tr>")
    sections = [
        f"""<h2>Subscriptions</h2><table><tr><th>Plan</th><th>Status</th><th></th></tr>
{"".join(sub_rows)}</table>"""
    ]
    if features["payment_method_update"]["enabled"]:
        sections.append(f"""<h2>Payment method</h2><form method="post" action="{base}/payment_method">
<label for="cardNumber">Card number</label><input id="cardNumber" name="cardNumber" required>
<label for="cardExpiry">Expiry (MM / YY)</label><input id="cardExpiry" name="cardExpiry" required>
<label for="cardCvc">CVC</label><input id="cardCvc" name="cardCvc" required>
<button type="submit">Update payment method</button></form>""")
    if features["invoice_history"]["enabled"]:
        invoices = [x for x in core.store.all("invoice") if x["customer"] == customer_id and x["status"] != "draft"]
        inv_rows = "".join(
            f'<tr><td><a href="{html.escape(x["hosted_invoice_url"])}">{html.escape(x["number"] or x["id"])}</a>'
            f"</td><td>{x['status']}</td><td>{_money(x['total'], x['currency'])}</td></tr>"
            for x in reversed(invoices)
        )
        sections.append(f"""<h2>Invoice history</h2><table><tr><th>Invoice</th><th>Status</th><th>Total</th></tr>
{inv_rows}</table>""")
    back = f'<p><a href="{html.escape(portal["return_url"])}">Return</a></p>' if portal["return_url"] else ""
    return _page("Billing", back + notice + "".join(sections))


def _price_label(core: Core, price_id: str) -> str:
    price = core.store.get("price", price_id)
    name = billing.product_name(core, price)
    if billing.is_metered(price):
        return f"{name} (metered)"
    rec = price["recurring"]
    return f"{name}, {pricing.describe_money(pricing.amount(price, 1), price['currency'])} per {rec['interval']}"
