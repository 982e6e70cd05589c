"""The consumer portal (issue 6): APIM delegation, sign-up/sign-in, subscribe, checkout pages, billing.

Thin: turn the Functions request into a WebRequest, call the page in billing.portal.pages, and
turn its answer back. Configuration problems answer 503 with the setting names, never values.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from http.cookies import CookieError, SimpleCookie
from urllib.parse import parse_qsl

import azure.functions as func

from billing import bootstrap
from billing.functions.http import error_response
from billing.portal import account_pages, pages, plan_pages, signin_pages
from billing.portal.clients import client_address
from billing.portal.deps import ConfigurationError, PortalDeps
from billing.portal.web import WebRequest, WebResponse

bp = func.Blueprint()
log = logging.getLogger(__name__)
MAX_FORM_BYTES = 16 * 1024

Page = Callable[[PortalDeps, WebRequest, float], WebResponse]


def _cookies(header: str) -> dict[str, str]:
    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(header)
    except CookieError:
        return {}
    return {name: morsel.value for name, morsel in jar.items()}


def _web_request(req: func.HttpRequest) -> WebRequest | None:
    form: dict[str, str] = {}
    if req.method == "POST":
        body = req.get_body() or b""
        if len(body) > MAX_FORM_BYTES:
            return None
        form = dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
    return WebRequest(
        method=req.method,
        query=dict(req.params),
        form=form,
        cookies=_cookies(req.headers.get("cookie", "")),
        accept=req.headers.get("accept", ""),
        client=client_address(req.headers.get("x-forwarded-for", "")),
    )


def _serve(page: Page, req: func.HttpRequest) -> func.HttpResponse:
    web = _web_request(req)
    if web is None:
        return error_response(413, "too_large", f"forms are limited to {MAX_FORM_BYTES} bytes")
    try:
        deps = bootstrap.services().portal()
    except ConfigurationError as exc:
        log.error("portal misconfigured: %s", exc)
        return error_response(503, "misconfigured", str(exc))
    try:
        answer = page(deps, web, time.time())
    except Exception:  # a failing dependency (Stripe, APIM, Storage): a short answer, details in the log
        log.exception("portal page %s failed", getattr(page, "__name__", "?"))
        return error_response(502, "unavailable", "a service this page needs did not answer; try again in a minute")
    headers = {"Content-Type": answer.content_type, **answer.headers}
    response = func.HttpResponse(answer.body, status_code=answer.status, headers=headers)
    for cookie in answer.cookies:
        response.headers.add("Set-Cookie", cookie)  # one header per cookie (the worker sends each)
    return response


@bp.route(route="delegation", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def portal_delegation(req: func.HttpRequest) -> func.HttpResponse:
    return _serve(pages.delegation_endpoint, req)


@bp.route(route="portal/signup", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
def portal_signup(req: func.HttpRequest) -> func.HttpResponse:
    return _serve(signin_pages.sign_up, req)


@bp.route(route="portal/signup/confirm", methods=["GET", "POST"], auth_level=func.AuthLevel.ANONYMOUS)
def portal_signup_confirm(req: func.HttpRequest) -> func.HttpResponse:
    return _serve(signin_pages.confirm_post if req.method == "POST" else signin_pages.confirm_page, req)


@bp.route(route="portal/signin", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
def portal_signin(req: func.HttpRequest) -> func.HttpResponse:
    return _serve(signin_pages.sign_in, req)


@bp.route(route="portal/password/forgot", methods=["GET", "POST"], auth_level=func.AuthLevel.ANONYMOUS)
def portal_password_forgot(req: func.HttpRequest) -> func.HttpResponse:
    return _serve(signin_pages.forgot_post if req.method == "POST" else signin_pages.forgot_page, req)


@bp.route(route="portal/password/reset", methods=["GET", "POST"], auth_level=func.AuthLevel.ANONYMOUS)
def portal_password_reset(req: func.HttpRequest) -> func.HttpResponse:
    return _serve(signin_pages.reset_post if req.method == "POST" else signin_pages.reset_page, req)


@bp.route(route="portal/subscribe", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
def portal_subscribe(req: func.HttpRequest) -> func.HttpResponse:
    return _serve(pages.subscribe_post, req)


@bp.route(route="portal/billing/plan", methods=["GET", "POST"], auth_level=func.AuthLevel.ANONYMOUS)
def portal_billing_plan(req: func.HttpRequest) -> func.HttpResponse:
    return _serve(plan_pages.confirm if req.method == "POST" else plan_pages.preview, req)


@bp.route(route="portal/billing/plan/undo", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
def portal_billing_plan_undo(req: func.HttpRequest) -> func.HttpResponse:
    return _serve(plan_pages.undo_post, req)


@bp.route(route="portal/checkout/success", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def portal_checkout_success(req: func.HttpRequest) -> func.HttpResponse:
    return _serve(pages.checkout_success, req)


@bp.route(route="portal/checkout/cancelled", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def portal_checkout_cancelled(req: func.HttpRequest) -> func.HttpResponse:
    return _serve(pages.checkout_cancelled, req)


@bp.route(route="portal/unsubscribe", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
def portal_unsubscribe(req: func.HttpRequest) -> func.HttpResponse:
    return _serve(pages.unsubscribe_post, req)


@bp.route(route="portal/billing", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def portal_billing(req: func.HttpRequest) -> func.HttpResponse:
    return _serve(pages.billing, req)


@bp.route(route="portal/signout", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def portal_signout(req: func.HttpRequest) -> func.HttpResponse:
    return _serve(pages.sign_out, req)


@bp.route(route="portal/account/password", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
def portal_change_password(req: func.HttpRequest) -> func.HttpResponse:
    return _serve(account_pages.change_password_post, req)


@bp.route(route="portal/account/profile", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
def portal_change_profile(req: func.HttpRequest) -> func.HttpResponse:
    return _serve(account_pages.change_profile_post, req)


@bp.route(route="portal/account/close", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
def portal_close_account(req: func.HttpRequest) -> func.HttpResponse:
    return _serve(account_pages.close_account_post, req)
