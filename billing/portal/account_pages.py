"""Pages of the delegated account operations: ChangePassword, ChangeProfile and CloseAccount.

APIM signs only the user id of these links, not the operation, so a GET never acts: the link is bound
to its owner, signed in here, and its salt claimed (billing.portal.link_binding); the form is bound to
the signed user (and the e-mail found for it) and to the browser's session; the POST checks the CSRF
token, that binding and the current password before anything changes.
"""

from __future__ import annotations

import contextlib
import logging
from datetime import UTC, datetime
from typing import Any

from billing.models import UnknownProductError
from billing.portal.account_ops import change_password, change_profile, close_account, find_account
from billing.portal.accounts import AccountError
from billing.portal.deps import PortalDeps
from billing.portal.link_binding import Bound
from billing.portal.passwords import MIN_LENGTH
from billing.portal.ports import HOLDING_STATES
from billing.portal.tokens import Signer, TokenError
from billing.portal.web import Session, WebRequest, WebResponse, expired_form, problem, render, too_many

log = logging.getLogger(__name__)

ACCOUNT_OPERATIONS = ("ChangePassword", "ChangeProfile", "CloseAccount")
FORM_TTL = 3600  # seconds an account form stays valid
_TEMPLATES = {
    "ChangePassword": ("change_password.html", "Change your password"),
    "ChangeProfile": ("change_profile.html", "Your profile"),
    "CloseAccount": ("close_account.html", "Close your account"),
}


def _signer(deps: PortalDeps, op: str) -> Signer:
    # One purpose per operation: a password form's token cannot be posted to the close form.
    return deps.signer(f"account-{op}")


def _not_here(req: WebRequest, deps: PortalDeps) -> WebResponse:
    return problem(
        req, 404, "not_found", "Accounts are managed by the developer portal itself.", portal_url=deps.portal_home
    )


def account_operation_page(
    deps: PortalDeps, req: WebRequest, now: float, bound: Bound, operation: tuple[str, str]
) -> WebResponse:
    """GET of a signed ChangePassword / ChangeProfile / CloseAccount link, bound to its owner: the form.

    `operation`: (the operation, the user id the link names).
    """
    op, uid = operation
    if deps.mode != "full":
        return _not_here(req, deps)  # APIM delegates these only with sign-in and sign-up
    account = find_account(uid, deps.apim, deps.accounts)
    if account is None:
        return problem(
            req,
            404,
            "account",
            "This user's account was not made through this site's sign-up, so it "
            "cannot be changed here. Ask the API provider's support.",
            portal_url=deps.portal_home,
        )
    return _form(
        deps,
        now,
        bound.session,
        op,
        uid=uid,
        email=account.email,
        cookie=bound.cookie,
        first_name=account.first_name,
        last_name=account.last_name,
    )


def _form(
    deps: PortalDeps,
    now: float,
    session: Session,
    op: str,
    *,
    uid: str,
    email: str,
    status: int = 200,
    error: str = "",
    cookie: str | None = None,
    **extra: Any,
) -> WebResponse:
    token = _signer(deps, op).sign({"u": uid, "e": email, "c": session.nonce}, now=now, ttl_seconds=FORM_TTL)
    template, title = _TEMPLATES[op]
    if op == "CloseAccount":
        extra["subscriptions"] = _held(deps, uid)
    return render(
        template,
        status,
        cookie,
        title=title,
        error=error,
        email=email,
        account_token=token,
        csrf_token=deps.sessions.csrf_token(session, now),
        portal_url=deps.portal_home,
        min_password=str(MIN_LENGTH),
        **extra,
    )


def _held(deps: PortalDeps, uid: str) -> list[dict[str, str]]:
    rows = []
    for sub in deps.apim.user_subscriptions(uid):
        if sub.state not in HOLDING_STATES:
            continue
        product_name = sub.product_id or ""
        with contextlib.suppress(UnknownProductError):
            product_name = deps.models.product(sub.product_id or "").display_name
        rows.append({"display_name": sub.display_name, "product_name": product_name, "state": sub.state})
    return rows


def _bound(deps: PortalDeps, req: WebRequest, now: float, op: str) -> tuple[Session, str, str] | WebResponse:
    """(session, user id, e-mail) of a POSTed account form, or the answer refusing it."""
    if deps.mode != "full":
        return _not_here(req, deps)
    session = deps.sessions.check_csrf(req, now)
    if session is None:
        return expired_form(req, deps.portal_home)
    try:
        payload = _signer(deps, op).verify(req.form.get("account", ""), now=now)
    except TokenError:
        payload = {}
    uid, email = payload.get("u"), payload.get("e")
    if (
        not (isinstance(uid, str) and isinstance(email, str))
        or payload.get("c") != session.nonce
        or (session.uid != uid)
    ):
        return problem(
            req,
            401,
            "account",
            "This form is not valid for you or has expired. Start again from your profile in the developer portal.",
            portal_url=deps.portal_home,
        )
    return session, uid, email


def _done(
    deps: PortalDeps,
    title: str,
    *paragraphs: str,
    cookie: str | None = None,
    link_url: str = "",
    link_text: str = "Back to the developer portal",
) -> WebResponse:
    return render(
        "message.html",
        200,
        cookie,
        title=title,
        status_role=True,
        paragraphs=list(paragraphs),
        portal_url=deps.portal_home,
        link_url=link_url or deps.portal_home,
        link_text=link_text,
    )


# ---- POST /api/portal/account/password -------------------------------------------------------
def change_password_post(deps: PortalDeps, req: WebRequest, now: float) -> WebResponse:
    bound = _bound(deps, req, now, "ChangePassword")
    if isinstance(bound, WebResponse):
        return bound
    session, uid, email = bound
    try:
        change_password(
            email,
            uid,
            req.form.get("current_password", ""),
            req.form.get("new_password", ""),
            req.form.get("confirm_password", ""),
            ports=deps.account_ports,
            client=req.client,
            device=deps.devices.read(req, now),
            now=int(now),
        )
    except AccountError as exc:
        return too_many(
            _form(deps, now, session, "ChangePassword", uid=uid, email=email, status=exc.status, error=exc.message),
            exc.retry_after,
        )
    return _done(deps, "Password changed", "Your password is changed: use the new one the next time you sign in.")


# ---- POST /api/portal/account/profile --------------------------------------------------------
def change_profile_post(deps: PortalDeps, req: WebRequest, now: float) -> WebResponse:
    bound = _bound(deps, req, now, "ChangeProfile")
    if isinstance(bound, WebResponse):
        return bound
    session, uid, email = bound
    first, last = req.form.get("first_name", ""), req.form.get("last_name", "")
    try:
        change_profile(
            email,
            uid,
            req.form.get("password", ""),
            first,
            last,
            ports=deps.account_ports,
            client=req.client,
            device=deps.devices.read(req, now),
            now=int(now),
        )
    except AccountError as exc:
        return too_many(
            _form(
                deps,
                now,
                session,
                "ChangeProfile",
                uid=uid,
                email=email,
                status=exc.status,
                error=exc.message,
                first_name=first,
                last_name=last,
            ),
            exc.retry_after,
        )
    return _done(deps, "Profile saved", f"Your name is now {first.strip()} {last.strip()}.")


# ---- POST /api/portal/account/close ----------------------------------------------------------
def close_account_post(deps: PortalDeps, req: WebRequest, now: float) -> WebResponse:
    bound = _bound(deps, req, now, "CloseAccount")
    if isinstance(bound, WebResponse):
        return bound
    session, uid, email = bound
    try:
        cancelled = close_account(
            email,
            uid,
            req.form.get("password", ""),
            ports=deps.account_ports,
            client=req.client,
            device=deps.devices.read(req, now),
            payments=deps.payments,
            now=datetime.fromtimestamp(now, UTC),
            final_invoices=deps.final_invoices,
        )
    except AccountError as exc:
        return too_many(
            _form(deps, now, session, "CloseAccount", uid=uid, email=email, status=exc.status, error=exc.message),
            exc.retry_after,
        )
    except Exception:  # a dependency failed midway: every step done so far stays done, a resubmit finishes
        log.exception("closing the account of APIM user %s did not finish", uid)
        return _form(
            deps,
            now,
            session,
            "CloseAccount",
            uid=uid,
            email=email,
            status=502,
            error="Closing your account did not finish because a service did not answer. Enter your "
            "password and submit again in a minute to finish; nothing is cancelled or billed twice.",
        )
    paragraphs = ["Your account is closed and you are signed out."]
    if cancelled:
        paragraphs.append(
            "Cancelled: "
            + ", ".join(f"“{name}”" for name in cancelled)
            + ". Usage of paid subscriptions so far is billed on a final invoice."
        )
    # Signing out: this site's session ends here; the APIM user (and so its portal session) is deleted.
    return _done(
        deps,
        "Account closed",
        *paragraphs,
        cookie=deps.sessions.clear_cookie(),
        link_url=deps.portal_home,
        link_text="Back to the developer portal",
    )
