"""Pages of the consumer's account: sign-up, its e-mail confirmation, sign-in, forgotten passwords.

GET pages show a form bound to the browser's session (CSRF); POSTs check it first, then call the
account services in billing.portal.accounts. A link from a mail is used only by the POST of the page
it opens (mail scanners that fetch links change nothing). Sign-up and reset requests answer with
the same "check your e-mail" page whatever the address, so the pages reveal no account.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

from billing.portal import accounts as service
from billing.portal import delegation
from billing.portal.deps import PortalDeps
from billing.portal.passwords import MIN_LENGTH
from billing.portal.records import CONFIRM, RESET, Account
from billing.portal.web import WebRequest, WebResponse, expired_form, problem, redirect, render, too_many

SSO_TOKEN_TTL = timedelta(hours=1)
_TEMPLATES = {
    "SignIn": ("signin.html", "Sign in"),
    "SignUp": ("signup.html", "Create your account"),
    "Confirm": ("confirm.html", "Confirm your e-mail address"),
    "Forgot": ("forgot.html", "Forgot your password?"),
    "Reset": ("reset.html", "Choose a new password"),
}


def _not_here(req: WebRequest, deps: PortalDeps) -> WebResponse:
    return problem(
        req, 404, "not_found", "Accounts are managed by the developer portal itself.", portal_url=deps.portal_home
    )


def _form(
    deps: PortalDeps,
    req: WebRequest,
    now: float,
    page: str,
    *,
    status: int = 200,
    error: str = "",
    retry_after: int = 0,
    **values: str,
) -> WebResponse:
    session, cookie = deps.sessions.ensure(req, now)
    template, title = _TEMPLATES[page]
    context: dict[str, Any] = {"email": "", "first_name": "", "last_name": "", "return_url": "/", "token": "", **values}
    answer = render(
        template,
        status,
        cookie,
        title=title,
        error=error,
        csrf_token=deps.sessions.csrf_token(session, now),
        portal_url=deps.portal_home,
        signup_url=deps.portal_home,
        min_password=str(MIN_LENGTH),
        forgot_url="/api/portal/password/forgot",
        **context,
    )
    return too_many(answer, retry_after)


def _bad_return_url(deps: PortalDeps, req: WebRequest) -> WebResponse:
    return problem(
        req,
        400,
        "returnUrl",
        "returnUrl must be a path on the developer portal such as /products.",
        portal_url=deps.portal_home,
    )


def _refused(
    deps: PortalDeps, req: WebRequest, now: float, page: str, exc: service.AccountError, **values: str
) -> WebResponse:
    """The page again with the refusal's message, its status, and Retry-After when it is a 429."""
    return _form(deps, req, now, page, status=exc.status, error=exc.message, retry_after=exc.retry_after, **values)


def _check_your_mail(deps: PortalDeps, email: str, *paragraphs: str) -> WebResponse:
    return render(
        "message.html",
        200,
        title="Check your e-mail",
        status_role=True,
        portal_url=deps.portal_home,
        paragraphs=[
            f"We sent a message to {email}.",
            *paragraphs,
            "Nothing arrived within a few minutes? Look in your spam folder, or try again.",
        ],
        link_url=deps.portal_home,
        link_text="Back to the developer portal",
    )


def _sentence(message: str) -> str:
    return f"{message[:1].upper()}{message[1:]}."


def _message(
    deps: PortalDeps,
    status: int,
    title: str,
    text: str,
    *,
    link_url: str = "",
    link_text: str = "Back to the developer portal",
) -> WebResponse:
    return render(
        "message.html",
        status,
        title=title,
        paragraphs=[text],
        portal_url=deps.portal_home,
        link_url=link_url or deps.portal_home,
        link_text=link_text,
    )


def signed_in(deps: PortalDeps, account: Account, return_url: str, now: float) -> WebResponse:
    """Sign the browser in here and on the developer portal (its single sign-on), with a device cookie.

    The administrator and members of the Administrators group are never signed in by this app, even
    through an account made before that rule (such an account could have adopted them by address).
    """
    if deps.apim.is_administrator(account.apim_user_id):
        return _message(
            deps,
            403,
            "Not available",
            "This account cannot be used on the developer portal. Ask the API provider's support.",
        )
    token = deps.apim.sign_in_token(account.apim_user_id, datetime.fromtimestamp(now, UTC) + SSO_TOKEN_TTL)
    _, cookie = deps.sessions.start(account.apim_user_id, now)
    location = f"{deps.portal_url}/signin-sso?token={quote(token, safe='')}&returnUrl={quote(return_url, safe='')}"
    return redirect(location, cookie).with_cookie(deps.devices.issue(account.email, account.password_hash, now))


def _posted(deps: PortalDeps, req: WebRequest, now: float) -> WebResponse | None:
    """The refusal of a POST to the account pages, or None when it may go on."""
    if deps.mode != "full":
        return _not_here(req, deps)
    if deps.sessions.check_csrf(req, now) is None:
        return expired_form(req, deps.portal_home)
    return None


# ---- GET /api/delegation?operation=SignIn|SignUp ---------------------------------------------
def account_page(deps: PortalDeps, req: WebRequest, now: float, op: str, return_url: str) -> WebResponse:
    if not delegation.is_relative_return_url(return_url):
        return problem(
            req,
            400,
            "returnUrl",
            "returnUrl must be a path on the developer portal such as /products; other sites are never followed.",
            portal_url=deps.portal_home,
        )
    if deps.mode == "subscriptions":
        # Identities stay with APIM's own providers: back to the portal's own sign-in.
        return redirect(f"{deps.portal_url}/signin?returnUrl={quote(return_url, safe='')}")
    return _form(deps, req, now, op, return_url=return_url)


def _return_url(req: WebRequest) -> str | None:
    url = req.form.get("returnUrl", "/")
    return url if delegation.is_relative_return_url(url) else None


# ---- POST /api/portal/signup -----------------------------------------------------------------
def sign_up(deps: PortalDeps, req: WebRequest, now: float) -> WebResponse:
    refused = _posted(deps, req, now)
    if refused is not None:
        return refused
    return_url = _return_url(req)
    if return_url is None:
        return _bad_return_url(deps, req)
    form = service.SignUpForm(
        req.form.get("email", ""),
        req.form.get("password", ""),
        req.form.get("first_name", ""),
        req.form.get("last_name", ""),
    )
    try:
        service.request_sign_up(form, return_url, req.client, deps.account_ports, int(now))
    except service.AccountError as exc:
        return _refused(
            deps,
            req,
            now,
            "SignUp",
            exc,
            email=form.email,
            first_name=form.first_name,
            last_name=form.last_name,
            return_url=return_url,
        )
    return _check_your_mail(
        deps,
        form.email.strip(),
        "Open the link in it to confirm your address and finish "
        "creating your account. If the address has an account already, the message says so.",
    )


# ---- GET and POST /api/portal/signup/confirm -------------------------------------------------
def confirm_page(deps: PortalDeps, req: WebRequest, now: float) -> WebResponse:
    if deps.mode != "full":
        return _not_here(req, deps)
    token = req.query.get("token", "")
    try:
        link, _ = service.usable_link(deps.account_ports, token, CONFIRM, int(now))
    except service.AccountError as exc:
        return _message(
            deps, exc.status, "This link cannot be used", _sentence(exc.message) + " Sign up again to get a new one."
        )
    return _form(deps, req, now, "Confirm", token=token, email=link.email)


def confirm_post(deps: PortalDeps, req: WebRequest, now: float) -> WebResponse:
    refused = _posted(deps, req, now)
    if refused is not None:
        return refused
    token = req.form.get("token", "")
    try:
        account, return_url = service.confirm_sign_up(token, req.form.get("password", ""), deps.account_ports, int(now))
    except service.AccountError as exc:
        if exc.field == "password" or exc.status == 429:
            return _refused(
                deps,
                req,
                now,
                "Confirm",
                exc,
                token=token,
            )
        return _message(deps, exc.status, "Your account was not created", _sentence(exc.message))
    return signed_in(deps, account, return_url, now)


# ---- POST /api/portal/signin -----------------------------------------------------------------
def sign_in(deps: PortalDeps, req: WebRequest, now: float) -> WebResponse:
    refused = _posted(deps, req, now)
    if refused is not None:
        return refused
    return_url = _return_url(req)
    if return_url is None:
        return _bad_return_url(deps, req)
    email = req.form.get("email", "")
    try:
        account = service.sign_in(
            email,
            req.form.get("password", ""),
            client=req.client,
            device=deps.devices.read(req, now),
            ports=deps.account_ports,
            now=int(now),
        )
    except service.AccountError as exc:
        return _refused(
            deps,
            req,
            now,
            "SignIn",
            exc,
            email=email,
            return_url=return_url,
        )
    return signed_in(deps, account, return_url, now)


# ---- GET and POST /api/portal/password/forgot ------------------------------------------------
def forgot_page(deps: PortalDeps, req: WebRequest, now: float) -> WebResponse:
    if deps.mode != "full":
        return _not_here(req, deps)
    return _form(deps, req, now, "Forgot")


def forgot_post(deps: PortalDeps, req: WebRequest, now: float) -> WebResponse:
    refused = _posted(deps, req, now)
    if refused is not None:
        return refused
    email = req.form.get("email", "")
    try:
        service.request_password_reset(email, req.client, deps.account_ports, int(now))
    except service.AccountError as exc:
        return _refused(deps, req, now, "Forgot", exc, email=email)
    return _check_your_mail(
        deps,
        email.strip(),
        "If the address has an account, the message has a link to choose a new password; it works once, for an hour.",
    )


# ---- GET and POST /api/portal/password/reset -------------------------------------------------
def reset_page(deps: PortalDeps, req: WebRequest, now: float) -> WebResponse:
    if deps.mode != "full":
        return _not_here(req, deps)
    token = req.query.get("token", "")
    try:
        link, _ = service.usable_link(deps.account_ports, token, RESET, int(now))
    except service.AccountError as exc:
        return _message(
            deps,
            exc.status,
            "This link cannot be used",
            _sentence(exc.message) + " Ask for a new one.",
            link_url="/api/portal/password/forgot",
            link_text="Forgot your password?",
        )
    return _form(deps, req, now, "Reset", token=token, email=link.email)


def reset_post(deps: PortalDeps, req: WebRequest, now: float) -> WebResponse:
    refused = _posted(deps, req, now)
    if refused is not None:
        return refused
    token = req.form.get("token", "")
    try:
        account = service.reset_password(
            token, req.form.get("new_password", ""), req.form.get("confirm_password", ""), deps.account_ports, int(now)
        )
    except service.AccountError as exc:
        if exc.field or exc.status == 429:
            return _refused(deps, req, now, "Reset", exc, token=token)
        return _message(
            deps,
            exc.status,
            "Your password was not changed",
            _sentence(exc.message),
            link_url="/api/portal/password/forgot",
            link_text="Forgot your password?",
        )
    return signed_in(deps, account, "/", now)
