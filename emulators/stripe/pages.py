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
    doc = (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
           f'{_STYLE}</head><body><main><h1>{html.escape(title)}</h1>{body}</main></body></html>')
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
        return "Your card's expiration date is in the past." if 1 <= month <= 12 else \
            "Your card's expiration month is invalid."
    if not re.fullmatch(r"\d{3,4}", fields.get("cardCvc", "").strip()):
        return "Your card's security code is incomplete."
    if number not in TEST_CARDS:
        return ("Your card was declined. Your request was in test mode, but used a non test card. "
                "Use a test card such as 4242 4242 4242 4242.")
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
            promo = next((x for x in core.store.all("promotion_code")
                          if x["active"] and x["code"].lower() == code.lower()), None)
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
        return _page("Thanks for your order", "<p role=\"status\">Payment complete.</p>")
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
    email = "" if session["customer"] else (
        f'<label for="email">Email</label><input id="email" name="email" type="email" autocomplete="email" '
        f'value="{value}" {"readonly" if session["customer_email"] else "required"}>')
    promo = ('<label for="promotionCode">Promotion code</label><input id="promotionCode" name="promotionCode">'
             if session["allow_promotion_codes"] else "")
    alert = f'<p class="error" role="alert">{html.escape(error)}</p>' if error else ""
    back = (f'<p><a href="{html.escape(session["cancel_url"])}">Back</a></p>' if session["cancel_url"] else "")
    trial_note = f"<p>{trial}-day free trial.</p>" if trial else ""
    body = f"""{back}<table><caption>Subscription</caption><tr><th>Item</th><th>Quantity</th><th>Price</th></tr>
{rows}</table>{trial_note}<p>Due today: <strong>{_money(due, session['currency'])}</strong></p>{alert}
<form method="post" action="/c/pay/{html.escape(session['id'])}">{email}
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
    rows = "".join(f"<tr><td>{html.escape(line['description'])}</td><td>{_money(line['amount'], inv['currency'])}"
                   "</td></tr>" for line in inv["lines"]["data"])
    alert = f'<p class="error" role="alert">{html.escape(error)}</p>' if error else ""
    form = ""
    if inv["status"] == "open":
        form = f"""<form method="post"><label for="cardNumber">Card number</label>
<input id="cardNumber" name="cardNumber" required><label for="cardExpiry">Expiry (MM / YY)</label>
<input id="cardExpiry" name="cardExpiry" required><label for="cardCvc">CVC</label>
<input id="cardCvc" name="cardCvc" required><button type="submit">Pay {_money(inv['amount_remaining'],
inv['currency'])}</button></form>"""
    body_html = f"""<p>Invoice {html.escape(inv['number'] or '')} — status <strong>{inv['status']}</strong></p>
<table><tr><th>Description</th><th>Amount</th></tr>{rows}</table>
<p>Total {_money(inv['total'], inv['currency'])}; amount due {_money(inv['amount_due'], inv['currency'])};
paid {_money(inv['amount_paid'], inv['currency'])}</p>{alert}{form}"""
    return _page("Invoice", body_html)


# ---- billing portal ------------------------------------------------------------------------------
def portal_page(core: Core, portal_id: str, method: str, body: str, action: str) -> Page:
    portal = core.store.maybe("billing_portal.session", portal_id)
    if portal is None:
        return _page("Session not found", "<p>This portal link is not valid.</p>", 404)
    customer_id = portal["customer"]
    notice = ""
    if method == "POST" and action == "cancel":
        sub_id = _form(body).get("subscription", "")
        sub = core.store.maybe("subscription", sub_id)
        if sub is None or sub["customer"] != customer_id:
            return _page("Not found", "<p>No such subscription for this customer.</p>", 404)
        if sub["status"] not in ("canceled", "incomplete_expired"):
            if core.config.portal_cancel == "immediately":
                billing.cancel(core, sub, invoice_now=True, prorate=False)
            elif not sub["cancel_at_period_end"]:
                before = copy.deepcopy(sub)
                clock = core.clock_of(customer_id)
                sub.update(cancel_at_period_end=True, cancel_at=billing.items(sub)[0]["current_period_end"],
                           canceled_at=core.now(clock))
                sub["cancellation_details"]["reason"] = "cancellation_requested"
                previous = {k: before[k] for k in ("cancel_at_period_end", "cancel_at", "canceled_at")}
                core.emit("customer.subscription.updated", sub, previous, clock)
            notice = '<p role="status">Your subscription has been cancelled.</p>'
    subs = [x for x in core.store.all("subscription") if x["customer"] == customer_id]
    sub_rows = []
    for sub in subs:
        names = ", ".join(html.escape(billing.product_name(core, i["price"])) for i in billing.items(sub))
        ends = " (cancels at period end)" if sub["cancel_at_period_end"] else ""
        button = "" if sub["status"] in ("canceled", "incomplete_expired") or sub["cancel_at_period_end"] else (
            f'<form method="post" action="/p/session/{html.escape(portal_id)}/cancel">'
            f'<input type="hidden" name="subscription" value="{html.escape(sub["id"])}">'
            f'<button type="submit" aria-label="Cancel subscription {names}">Cancel subscription</button></form>')
        sub_rows.append(f"<tr><td>{names}</td><td>{sub['status']}{ends}</td><td>{button}</td></tr>")
    invoices = [x for x in core.store.all("invoice") if x["customer"] == customer_id and x["status"] != "draft"]
    inv_rows = "".join(
        f"<tr><td><a href=\"{html.escape(x['hosted_invoice_url'])}\">{html.escape(x['number'] or x['id'])}</a></td>"
        f"<td>{x['status']}</td><td>{_money(x['total'], x['currency'])}</td></tr>" for x in reversed(invoices))
    back = f'<p><a href="{html.escape(portal["return_url"])}">Return</a></p>' if portal["return_url"] else ""
    body_html = f"""{back}{notice}<h2>Subscriptions</h2><table><tr><th>Plan</th><th>Status</th><th></th></tr>
{''.join(sub_rows)}</table><h2>Invoice history</h2><table><tr><th>Invoice</th><th>Status</th><th>Total</th></tr>
{inv_rows}</table>"""
    return _page("Billing", body_html)


