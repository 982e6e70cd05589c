"""A minimal developer portal: products with delegated Sign up / Sign in / Subscribe links, and
`/signin-sso?token=...` which accepts the shared access tokens the management API issues.

Served at `/` of the portal port. With delegation configured (url + validationKey), every account
and subscription link goes to the delegation endpoint, signed as APIM signs it. Each visitor sees
the products their groups see (Guests when anonymous). There is no sign-out page: like the real
portal's `#signout` route, the Sign out link (`/?signout`) ends the session here and then goes to the
delegation endpoint (operation SignOut) or, without sign-in delegation, to the home page.
"""

from __future__ import annotations

import secrets
import threading
from html import escape

from emulators.apim.core import Emulated
from emulators.apim.delegation import delegation_url
from emulators.apim.httpbase import Request, Response

SESSION_COOKIE = "apim_emulator_session"


class Portal:
    def __init__(self, emu: Emulated) -> None:
        self.emu = emu
        self._sessions: dict[str, str] = {}
        self._lock = threading.Lock()

    def handle(self, req: Request) -> Response:
        if req.method not in ("GET", "HEAD"):
            return Response.html("<h1>405 Method Not Allowed</h1>", 405)
        if req.path == "/signin-sso":
            return self._signin_sso(req)
        if req.path in ("/", "/products"):
            if "signout" in req.query:
                return self._signout(req)
            return Response.html(self._home(req))
        return Response.html("<h1>404 Not Found</h1>", 404)

    def signed_in_user(self, req: Request) -> str | None:
        session = req.cookies().get(SESSION_COOKIE)
        with self._lock:
            uid = self._sessions.get(session or "")
        return uid if uid in self.emu.store.users else None

    # Links ---------------------------------------------------------------------------------------
    def _link(self, operation: str, **values: str) -> str | None:
        settings = self.emu.store.delegation
        if not (settings.url and settings.validation_key):
            return None
        return delegation_url(settings.url, settings.validation_key, operation, **values)

    def _account_link(self, operation: str, return_url: str) -> str:
        settings = self.emu.store.delegation
        link = self._link(operation, returnUrl=return_url) if settings.user_registration_enabled else None
        return link or "/signin-sso"

    def _home(self, req: Request) -> str:
        uid = self.signed_in_user(req)
        store = self.emu.store
        settings = store.delegation
        with store.lock:
            # "Products are first made visible to groups, and then developers in those groups can view and
            # subscribe to the products that are associated with the groups."
            products = store.visible_products(uid)
            subs = [s for s in store.subscriptions.values() if uid is not None and s.owner_uid == uid]
            user = store.users.get(uid or "")
        rows = []
        for product in products:
            if uid is None:
                href = self._account_link("SignIn", "/")  # anonymous visitors are asked to sign in first
            elif settings.subscriptions_enabled:
                href = self._link("Subscribe", productId=product.pid, userId=uid) or "#"
            else:
                href = "#"
            rows.append(
                f'<li class="product" data-product-id="{escape(product.pid)}"><h3>{escape(product.display_name)}'
                f"</h3><p>{escape(product.description or '')}</p>"
                f'<a class="subscribe" href="{escape(href)}">Subscribe</a></li>'
            )
        if user is None:
            account = (
                f'<a class="signup" href="{escape(self._account_link("SignUp", "/"))}">Sign up</a> '
                f'<a class="signin" href="{escape(self._account_link("SignIn", "/"))}">Sign in</a>'
            )
        else:
            account = (
                f'<span class="user" data-user-id="{escape(user.uid)}">Signed in as {escape(user.email)}</span> '
                '<a class="signout" href="/?signout">Sign out</a>'
            )
        sub_rows = []
        for sub in subs:
            unsubscribe = self._link("Unsubscribe", subscriptionId=sub.sid) if settings.subscriptions_enabled else None
            sub_rows.append(
                f'<tr class="subscription" data-subscription-id="{escape(sub.sid)}"><td>{escape(sub.display_name)}'
                f'</td><td>{escape(sub.product_id or sub.scope)}</td><td class="state">{escape(sub.state)}</td>'
                f'<td><code class="primary-key">{escape(sub.primary_key)}</code></td>'
                f'<td><code class="secondary-key">{escape(sub.secondary_key)}</code></td>'
                f'<td><a class="unsubscribe" href="{escape(unsubscribe or "#")}">Cancel</a></td></tr>'
            )
        subs_html = ""
        if user is not None:
            subs_html = (
                "<h2>Your subscriptions</h2><table><tr><th>Name</th><th>Product</th><th>State</th>"
                "<th>Primary key</th><th>Secondary key</th><th></th></tr>" + "".join(sub_rows) + "</table>"
            )
        note = (
            ""
            if settings.url and settings.validation_key
            else ('<p class="note">Delegation is not configured: set it with PUT .../portalsettings/delegation.</p>')
        )
        return (
            '<!doctype html><html><head><meta charset="utf-8"><title>Developer portal (APIM emulator)</title>'
            "</head><body><header><h1>Developer portal</h1>"
            + account
            + "</header>"
            + note
            + '<h2>Products</h2><ul class="products">'
            + "".join(rows)
            + "</ul>"
            + subs_html
            + "</body></html>"
        )

    # Sign-in ------------------------------------------------------------------------------------
    def _signin_sso(self, req: Request) -> Response:
        token = req.query.get("token", "")
        uid = self.emu.verify_user_token(token) if token else None
        if uid is None:
            return Response.html(
                "<h1>Sign-in failed</h1><p>The token is missing, invalid or expired. Ask the "
                "delegation endpoint for a new one (POST .../users/{id}/token).</p>",
                401,
            )
        session = secrets.token_urlsafe(24)
        with self._lock:
            self._sessions[session] = uid
        target = req.query.get("returnUrl") or "/"
        if not target.startswith("/") or target.startswith("//") or "\\" in target:
            target = "/"  # only portal-relative return URLs, never an open redirect
        cookie = f"{SESSION_COOKIE}={session}; Path=/; HttpOnly; SameSite=Lax"
        return Response.redirect(target, {"Set-Cookie": cookie})

    def _signout(self, req: Request) -> Response:
        """The portal signs itself out first, then calls the delegation endpoint with SignOut and the
        user's id when sign-in is delegated, else goes home (the developer portal's SignOutRouteGuard)."""
        session = req.cookies().get(SESSION_COOKIE)
        with self._lock:
            uid = self._sessions.pop(session or "", None)
        expired = f"{SESSION_COOKIE}=; Path=/; Max-Age=0"
        settings = self.emu.store.delegation
        target = None
        if uid is not None and settings.user_registration_enabled:
            target = self._link("SignOut", userId=uid)
        return Response.redirect(target or "/", {"Set-Cookie": expired})
