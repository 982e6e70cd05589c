"""The plan change pages: a confirm step with the price difference, the change, and undoing a planned one.

GET  /api/portal/billing/plan?sid=...&product=...  the quote (from the pricing engine) and a confirm form
POST /api/portal/billing/plan                      the change (billing.portal.plan_change)
POST /api/portal/billing/plan/undo                 undo the change planned for the period end

Every POST carries the CSRF token of the session and a form token signed for (consumer, subscription,
target, session nonce): a form works only for the consumer it was shown to, in that browser, for the
change it showed, and for an hour. The service checks again that the signed-in consumer owns the
subscription in APIM and in Stripe before anything changes.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from billing.models import UnknownProductError
from billing.portal.billing_page import BillingOverview
from billing.portal.plan_change import (
    ChangeConflict,
    ChangeKind,
    PaymentFailed,
    PlanChangeError,
    change_plan,
    quote_change,
    subject,
    undo,
)
from billing.portal.tokens import TokenError
from billing.portal.web import Session, WebRequest, WebResponse, expired_form, problem, render

if TYPE_CHECKING:
    from billing.portal.deps import PortalDeps

log = logging.getLogger(__name__)
FORM_TTL = 3600


def _date(at: int) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d")


def undo_tokens(deps: PortalDeps, session: Session, data: BillingOverview, now: float) -> Mapping[str, str]:
    """Per subscription with a planned change, the signed form value of its undo button."""
    return {
        row.sid: deps.signer("plan-change-undo").sign(
            {"u": session.uid, "s": row.sid, "c": session.nonce}, now=now, ttl_seconds=FORM_TTL
        )
        for row in data.subscriptions
        if row.pending is not None
    }


def _signed_in(deps: PortalDeps, req: WebRequest, now: float) -> Session | WebResponse:
    session = deps.sessions.read(req, now)
    if session is None or session.uid is None:
        return problem(
            req,
            401,
            "signin",
            "Sign in from the developer portal first, then open the billing page again.",
            portal_url=deps.portal_home,
            title="Please sign in",
        )
    return session


def _refused(req: WebRequest, deps: PortalDeps, exc: PlanChangeError) -> WebResponse:
    return problem(
        req,
        exc.status,
        "plan_change",
        exc.message[:1].upper() + exc.message[1:] + ".",
        portal_url=deps.portal_home,
        title="The plan was not changed",
    )


def preview(deps: PortalDeps, req: WebRequest, now: float) -> WebResponse:
    """The confirm step: what the change costs and when it takes effect."""
    session = _signed_in(deps, req, now)
    if isinstance(session, WebResponse):
        return session
    uid = session.uid or ""
    try:
        target = deps.models.product(req.query.get("product", ""))
        found = subject(uid, req.query.get("sid", ""), models=deps.models, apim=deps.apim, changes=deps.plan_changes)
        if target.id == found.product.id or target.currency != found.product.currency:
            raise PlanChangeError("choose another product for this subscription")
    except UnknownProductError:
        return problem(req, 404, "product", "There is no such product.", portal_url=deps.portal_home)
    except PlanChangeError as exc:
        return _refused(req, deps, exc)
    quote = quote_change(found, target, int(now))
    # "f": the product the quote was made from: a form confirmed after another change (a second tab) is stale.
    token = deps.signer("plan-change").sign(
        {
            "u": uid,
            "s": found.sid,
            "p": target.id,
            "f": found.product.id,
            "c": session.nonce,
            "n": secrets.token_urlsafe(9),
        },
        now=now,
        ttl_seconds=FORM_TTL,
    )
    return render(
        "plan_change.html",
        title=f"Change to {target.display_name}",
        subject=found,
        quote=quote,
        kind=quote.kind.value,
        effective=_date(quote.effective_at),
        pending=found.pending(deps.models),
        csrf_token=deps.sessions.csrf_token(session, now),
        plan_token=token,
        portal_url=deps.portal_home,
    )


def _posted_form(
    deps: PortalDeps, req: WebRequest, now: float, *, purpose: str, field: str, fields: tuple[str, ...]
) -> tuple[str, dict[str, str]] | WebResponse:
    """(the signed-in user, the form's `fields`) of a POST with a valid CSRF token and a `field` token of
    `purpose` made for this user and this browser session; else the refusal."""
    session = deps.sessions.check_csrf(req, now)
    if session is None or session.uid is None:
        return expired_form(req, deps.portal_home, "Open the billing page again.")
    try:
        form = deps.signer(purpose).verify(req.form.get(field, ""), now=now)
    except TokenError:
        form = {}
    values = {name: form.get(name) for name in fields}
    if (
        form.get("u") != session.uid
        or form.get("c") != session.nonce
        or not all(isinstance(v, str) for v in values.values())
    ):
        return problem(
            req,
            401,
            "plan",
            "This form is not valid for you or has expired. Open the billing page again.",
            portal_url=deps.portal_home,
        )
    return session.uid, {name: str(value) for name, value in values.items()}


def confirm(deps: PortalDeps, req: WebRequest, now: float) -> WebResponse:
    posted = _posted_form(deps, req, now, purpose="plan-change", field="plan", fields=("s", "p", "n", "f"))
    if isinstance(posted, WebResponse):
        return posted
    uid, form = posted
    sid, pid, nonce = form["s"], form["p"], form["n"]
    try:
        target = deps.models.product(pid)
        found = subject(uid, sid, models=deps.models, apim=deps.apim, changes=deps.plan_changes)
        if found.product.id != form["f"]:
            raise ChangeConflict(f"{sid} is on {found.product.id} now, not the product this form quoted from")
        quote = change_plan(
            found,
            target,
            now=int(now),
            nonce=nonce,
            payments=deps.payments,
            changes=deps.plan_changes,
            email=deps.apim.user_email(uid),
        )
    except UnknownProductError:
        return problem(req, 404, "product", "There is no such product.", portal_url=deps.portal_home)
    except PlanChangeError as exc:
        return _refused(req, deps, exc)
    except PaymentFailed as exc:
        return problem(
            req,
            402,
            "payment",
            f"The payment for the upgrade failed ({exc}); nothing was changed. "
            "Update your card from the billing page, then try again.",
            portal_url=deps.portal_home,
            title="Payment failed",
        )
    except ChangeConflict:
        return problem(
            req,
            409,
            "plan_change",
            "Another change of this subscription was made meanwhile; nothing "
            "more was changed. Open the billing page again.",
            portal_url=deps.portal_home,
            title="Already changed",
        )
    log.info("subscription %s of user %s: %s to %s", sid, uid, quote.kind.value, target.id)
    if quote.kind is ChangeKind.UPGRADE:
        paragraphs = [
            f"“{found.name}” is now on {target.display_name}, with the same keys; its limits apply from now on.",
            f"{quote.due_now} was charged for the rest of this period.",
        ]
    else:
        paragraphs = [
            f"“{found.name}” changes to {target.display_name} on {_date(quote.effective_at)}; until then "
            "it keeps its current plan. You can undo this on the billing page."
        ]
    return render(
        "message.html",
        title="Plan changed" if quote.kind is ChangeKind.UPGRADE else "Change planned",
        status_role=True,
        paragraphs=paragraphs,
        portal_url=deps.portal_home,
        link_url="/api/portal/billing",
        link_text="Billing",
    )


def undo_post(deps: PortalDeps, req: WebRequest, now: float) -> WebResponse:
    posted = _posted_form(deps, req, now, purpose="plan-change-undo", field="undo", fields=("s",))
    if isinstance(posted, WebResponse):
        return posted
    uid, form = posted
    sid = form["s"]
    try:
        found = subject(uid, sid, models=deps.models, apim=deps.apim, changes=deps.plan_changes)
        pending = found.pending(deps.models)
        undone = undo(found, deps.plan_changes)
    except PlanChangeError as exc:
        return _refused(req, deps, exc)
    text = (
        f"The change to {pending.product_name} is undone: “{found.name}” stays on {found.product.display_name}."
        if undone is not None and pending is not None
        else "No change was planned for this subscription."
    )
    return render(
        "message.html",
        title="Change undone",
        status_role=True,
        paragraphs=[text],
        portal_url=deps.portal_home,
        link_url="/api/portal/billing",
        link_text="Billing",
    )
