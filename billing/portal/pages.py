"""The portal's pages: one function per route, from a WebRequest to a WebResponse.

Every delegated operation checks APIM's signature before anything else, then binds the link to
its owner and claims its salt once (billing.portal.link_binding); every POST checks the CSRF token;
forms that act for a user carry a token signed for that user and the browser's session, so a POST
can only do what APIM asked for, for the user APIM named, signed in here.
"""

from __future__ import annotations

import contextlib
import logging
import re
import secrets
from datetime import UTC, datetime

from billing.models import UnknownProductError
from billing.portal import delegation, offers, plan_pages
from billing.portal.account_pages import ACCOUNT_OPERATIONS, account_operation_page
from billing.portal.billing_page import overview
from billing.portal.debts import outstanding_debts
from billing.portal.deps import PortalDeps
from billing.portal.link_binding import Bound, bind_link
from billing.portal.ports import HOLDING_STATES, ApimSubscription
from billing.portal.signin_pages import account_page
from billing.portal.subscribe import GoToCheckout, SubscribeError, held_subscription, subscribe
from billing.portal.tokens import TokenError
from billing.portal.trials import TrialOffer, trial_offer
from billing.portal.unsubscribe import UnsubscribeError, is_paid_subscription, unsubscribe
from billing.portal.web import WebRequest, WebResponse, expired_form, problem, redirect, render

log = logging.getLogger(__name__)

FORM_TTL = 3600  # seconds a subscribe or cancel form stays valid
_SESSION_ID = re.compile(r"^cs_[A-Za-z0-9_]{1,250}$")


# ---- GET /api/delegation ---------------------------------------------------------------------
def delegation_endpoint(deps: PortalDeps, req: WebRequest, now: float) -> WebResponse:
    try:
        request = delegation.verify(deps.delegation_key, req.query)
    except delegation.DelegationError as exc:
        return problem(req, exc.status, "delegation", exc.message, portal_url=deps.portal_home)
    op = request.operation
    if op in ("SignIn", "SignUp"):
        return account_page(deps, req, now, op, request.get("returnUrl"))
    if op == "SignOut":
        # The portal signed itself out before it called here (it has no sign-out page of its own).
        return redirect(deps.portal_home, deps.sessions.clear_cookie())
    if op in ACCOUNT_OPERATIONS and deps.mode != "full":
        return problem(
            req, 404, "not_found", "Accounts are managed by the developer portal itself.", portal_url=deps.portal_home
        )
    sub: ApimSubscription | None = None
    if op in ("Unsubscribe", "Renew"):
        sub = deps.apim.get_subscription(request.get("subscriptionId"))
        if sub is None or sub.owner_id is None:
            return problem(
                req,
                404,
                "subscription",
                "There is no such subscription: API Management does not know the subscription this link names.",
                portal_url=deps.portal_home,
            )
        owner = sub.owner_id
    else:
        owner = request.get("userId")
    bound = bind_link(deps, req, now, owner=owner, salt=req.query.get("salt", ""))
    if isinstance(bound, WebResponse):
        return bound
    if op == "Subscribe":
        return _subscribe_page(deps, req, now, bound, delegation.product_id_from(request.get("productId")))
    if sub is not None:
        page = _unsubscribe_page if op == "Unsubscribe" else _renew_page
        return page(deps, req, now, bound, sub)
    return account_operation_page(deps, req, now, bound, (op, owner))


# ---- Subscribe -------------------------------------------------------------------------------
def _subscribe_page(
    deps: PortalDeps,
    req: WebRequest,
    now: float,
    bound: Bound,
    product_id: str,
    *,
    error: str = "",
    status: int = 200,
    name: str = "",
    notice: str = "",
) -> WebResponse:
    """The subscription form for the session's consumer (bound to it by `bind_link` or the POST)."""
    session, cookie = bound.session, bound.cookie
    try:
        product = deps.models.product(product_id)
    except UnknownProductError:
        return problem(
            req, 404, "product", f"There is no product named {product_id!r} for sale.", portal_url=deps.portal_home
        )
    uid = session.uid or ""
    email = deps.apim.user_email(uid)
    held = held_subscription(deps.apim, uid, product.id)
    debts = outstanding_debts(deps.payments, uid, email) if product.is_paid and held is None else []
    # A cancelled subscription whose final invoice is still to come (billing.usage.final_invoice).
    closing = bool(product.is_paid and held is None and not debts and deps.payments.pending_final_invoices(uid))
    trial = trial_offer(product, uid, email, deps.trials) if held is None else TrialOffer(None)
    # "n": one nonce per form shown, so submitting the same form twice does one thing once.
    offer = deps.signer("subscribe-offer").sign(
        {"u": uid, "p": product.id, "c": session.nonce, "n": secrets.token_urlsafe(9)}, now=now, ttl_seconds=FORM_TTL
    )
    return render(
        "subscribe.html",
        status if not (debts or closing) else 402,
        cookie=cookie,
        title=f"Subscribe to {product.display_name}",
        product=product,
        trial=trial,
        price=offers.describe(product, trial.days),
        held=held,
        debts=debts,
        closing=closing,
        error=error,
        name=name,
        notice=notice,
        account_email=email or "",
        csrf_token=deps.sessions.csrf_token(session, now),
        offer_token=offer,
        portal_url=deps.portal_home,
    )


def subscribe_post(deps: PortalDeps, req: WebRequest, now: float) -> WebResponse:
    session = deps.sessions.check_csrf(req, now)
    if session is None:
        return expired_form(req, deps.portal_home)
    try:
        offer = deps.signer("subscribe-offer").verify(req.form.get("offer", ""), now=now)
    except TokenError:
        offer = {}
    uid, pid, nonce = offer.get("u"), offer.get("p"), offer.get("n")
    if not (isinstance(uid, str) and isinstance(pid, str) and isinstance(nonce, str)) or (
        offer.get("c") != session.nonce or session.uid != uid
    ):
        return problem(
            req,
            401,
            "offer",
            "This subscription form is not valid for you or has expired. Start again "
            "from the product's Subscribe link in the developer portal.",
            portal_url=deps.portal_home,
        )
    product = deps.models.product(pid)
    name = req.form.get("name", "")
    try:
        outcome = subscribe(
            product,
            uid,
            name,
            nonce=nonce,
            apim=deps.apim,
            payments=deps.payments,
            app_base_url=deps.app_base_url,
            trials=deps.trials,
        )
    except SubscribeError as exc:
        if exc.field == "name" or exc.status == 402:
            return _subscribe_page(deps, req, now, Bound(session), pid, error=exc.message, status=exc.status, name=name)
        return problem(
            req,
            exc.status,
            "subscribe",
            exc.message,
            portal_url=deps.portal_home,
            title="Already subscribed" if exc.status == 409 else "",
        )
    if isinstance(outcome, GoToCheckout):
        return redirect(outcome.url)  # only ever the URL Stripe returned
    return render(
        "message.html",
        title="You are subscribed",
        portal_url=deps.portal_home,
        status_role=True,
        paragraphs=[
            f"Your subscription to {product.display_name} is active.",
            "Your keys are in the developer portal, under your profile.",
        ],
        link_url=deps.portal_home,
        link_text="Go to your keys",
    )


# ---- Checkout return pages -------------------------------------------------------------------
def checkout_success(deps: PortalDeps, req: WebRequest, now: float) -> WebResponse:
    session_id = req.query.get("session_id", "")
    if not _SESSION_ID.match(session_id):
        return problem(
            req,
            400,
            "session_id",
            "session_id must be a Stripe Checkout Session id (cs_...).",
            portal_url=deps.portal_home,
        )
    info = deps.payments.checkout_info(session_id)
    if info is None:
        return problem(req, 404, "session_id", "There is no such checkout.", portal_url=deps.portal_home)
    # This page grants nothing: the subscription becomes active when Stripe's webhook says it is paid.
    if info.status == "complete":
        paragraphs = [
            "Payment received: your key will be active in a moment.",
            "You find it in the developer portal, under your profile.",
        ]
        title = "Thank you"
    else:
        paragraphs = ["This checkout is not complete, so nothing was charged."]
        title = "Checkout not complete"
    return render(
        "message.html",
        title=title,
        paragraphs=paragraphs,
        status_role=True,
        portal_url=deps.portal_home,
        link_url=deps.portal_home,
        link_text="Go to the developer portal",
    )


def checkout_cancelled(deps: PortalDeps, req: WebRequest, now: float) -> WebResponse:
    return render(
        "message.html",
        title="Checkout cancelled",
        status_role=True,
        portal_url=deps.portal_home,
        paragraphs=[
            "No payment was taken and no subscription was made.",
            "You can subscribe again from the developer portal at any time.",
        ],
        link_url=deps.portal_home,
        link_text="Back to the developer portal",
    )


# ---- Unsubscribe -----------------------------------------------------------------------------
def _unsubscribe_page(
    deps: PortalDeps, req: WebRequest, now: float, bound: Bound, sub: ApimSubscription
) -> WebResponse:
    session, cookie = bound.session, bound.cookie
    if sub.state not in HOLDING_STATES:
        return render(
            "message.html",
            cookie=cookie,
            title="Already cancelled",
            portal_url=deps.portal_home,
            paragraphs=[f"The subscription “{sub.display_name}” is {sub.state}."],
            link_url=deps.portal_home,
            link_text="Back to the developer portal",
        )
    token = deps.signer("unsubscribe").sign(
        {"s": sub.sid, "u": session.uid, "c": session.nonce}, now=now, ttl_seconds=FORM_TTL
    )
    product_name = sub.product_id or ""
    with contextlib.suppress(UnknownProductError):
        product_name = deps.models.product(sub.product_id or "").display_name
    return render(
        "unsubscribe.html",
        cookie=cookie,
        title="Cancel subscription",
        subscription=sub,
        account_email=deps.apim.user_email(sub.owner_id or "") or "",
        product_name=product_name,
        paid=is_paid_subscription(sub.sid),
        cancel_token=token,
        csrf_token=deps.sessions.csrf_token(session, now),
        portal_url=deps.portal_home,
    )


def unsubscribe_post(deps: PortalDeps, req: WebRequest, now: float) -> WebResponse:
    session = deps.sessions.check_csrf(req, now)
    if session is None:
        return expired_form(req, deps.portal_home)
    try:
        payload = deps.signer("unsubscribe").verify(req.form.get("cancel", ""), now=now)
    except TokenError:
        payload = {}
    sid = payload.get("s")
    if not isinstance(sid, str) or payload.get("c") != session.nonce or payload.get("u") != session.uid:
        return problem(
            req,
            401,
            "cancel",
            "This cancellation form is not valid or has expired. Start again from "
            "the subscription's Cancel link in the developer portal.",
            portal_url=deps.portal_home,
        )
    try:
        name = unsubscribe(sid, deps.apim, deps.payments, datetime.fromtimestamp(now, UTC), deps.final_invoices)
    except UnsubscribeError as exc:
        return problem(req, exc.status, "subscription", exc.message, portal_url=deps.portal_home)
    return render(
        "message.html",
        title="Subscription cancelled",
        status_role=True,
        portal_url=deps.portal_home,
        paragraphs=[
            f"The subscription “{name}” is cancelled; its keys no longer work.",
            "Any usage so far is billed on a final invoice once API Management's usage data "
            "has your last calls; no new period is charged.",
        ],
        link_url=deps.portal_home,
        link_text="Back to the developer portal",
    )


# ---- Renew -----------------------------------------------------------------------------------
def _renew_page(deps: PortalDeps, req: WebRequest, now: float, bound: Bound, sub: ApimSubscription) -> WebResponse:
    """APIM offers Renew for an expired subscription: here that means a new subscription to the product.

    Paid access ends only when its Stripe subscription ends, and a Stripe subscription cannot be
    revived, so a paid product is bought again through Checkout (debts first); a free one is
    subscribed again at once. Either way it is the product's subscribe page for the owner.
    """
    if sub.state in HOLDING_STATES:
        return render(
            "message.html",
            cookie=bound.cookie,
            title="Nothing to renew",
            portal_url=deps.portal_home,
            paragraphs=[
                f"The subscription “{sub.display_name}” is {sub.state}: there is nothing to renew.",
                "Paid subscriptions renew by themselves each month while your payment method works; "
                "the billing page shows your usage and links to your invoices.",
            ],
            link_url="/api/portal/billing",
            link_text="Billing",
        )
    notice = (
        f"The subscription “{sub.display_name}” is {sub.state}. Renewing it starts a new subscription "
        "to the same product."
    )
    return _subscribe_page(deps, req, now, bound, sub.product_id or "", notice=notice, name=sub.display_name)


# ---- Billing page and sign-out ---------------------------------------------------------------
def billing(deps: PortalDeps, req: WebRequest, now: float) -> WebResponse:
    session = deps.sessions.read(req, now)
    if session is None or session.uid is None:
        return problem(
            req,
            401,
            "signin",
            "Sign in from the developer portal first, then open this page again.",
            portal_url=deps.portal_home,
            title="Please sign in",
        )
    data = overview(
        session.uid,
        models=deps.models,
        apim=deps.apim,
        payments=deps.payments,
        usage=deps.usage,
        now=datetime.fromtimestamp(now, UTC),
        return_url=f"{deps.app_base_url}/api/portal/billing",
        plan_changes=deps.plan_changes,
    )
    return render(
        "billing.html",
        title="Billing",
        overview=data,
        portal_url=deps.portal_home,
        csrf_token=deps.sessions.csrf_token(session, now),
        undo_tokens=plan_pages.undo_tokens(deps, session, data, now),
    )


def sign_out(deps: PortalDeps, req: WebRequest, now: float) -> WebResponse:
    """Signed out of this app, back on the portal's home page."""
    return redirect(deps.portal_home, deps.sessions.clear_cookie())
