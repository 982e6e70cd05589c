"""Developer portal: delegation links signed as APIM signs them, and sign-in with shared access tokens."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
from datetime import datetime, timedelta
from html.parser import HTMLParser
from urllib.parse import parse_qsl, urlsplit

import pytest
import requests
from azure.mgmt.apimanagement import models as m

from emulators.apim.server import ApimEmulator
from tests.emulators.apim.conftest import Apim, ManualClock, text

DELEGATION = "http://127.0.0.1:9/delegation"  # never fetched: the test only reads the links


class Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.by_class: dict[str, list[str]] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "a" and found.get("class") and found.get("href"):
            self.by_class.setdefault(str(found["class"]), []).append(str(found["href"]))


def links(html: str) -> dict[str, list[str]]:
    parser = Links()
    parser.feed(html)
    return parser.by_class


def expected_sig(key_b64: str, *parts: str) -> str:
    """Microsoft's documented algorithm, computed independently of the emulator."""
    digest = hmac.new(base64.b64decode(key_b64), "\n".join(parts).encode("utf-8"), hashlib.sha512).digest()
    return base64.b64encode(digest).decode()


def query(url: str) -> dict[str, str]:
    split = urlsplit(url)
    assert f"{split.scheme}://{split.netloc}{split.path}" == DELEGATION
    return dict(parse_qsl(split.query))


@pytest.fixture
def portal(apim: Apim, clock: ManualClock) -> tuple[Apim, str]:
    apim.emu.set_clock(clock)
    key = base64.b64encode(os.urandom(64)).decode()
    apim.client.delegation_settings.create_or_update(
        apim.rg,
        apim.svc,
        m.PortalDelegationSettings(
            url=DELEGATION,
            validation_key=key,
            subscriptions=m.SubscriptionsDelegationSettingsProperties(enabled=True),
            user_registration=m.RegistrationDelegationSettingsProperties(enabled=True),
        ),
    )
    apim.product("gold", groups=("guests", "developers"))  # visible to anonymous and signed-in visitors
    apim.client.product.create_or_update(apim.rg, apim.svc, "hidden", m.ProductContract(display_name="Hidden"))
    apim.user("u")
    return apim, key


def token_for(apim: Apim, uid: str, expiry: datetime) -> str:
    params = m.UserTokenParameters(key_type="primary", expiry=expiry)
    return text(apim.client.user.get_shared_access_token(apim.rg, apim.svc, uid, params).value)


def test_anonymous_page_links_are_signed(portal: tuple[Apim, str]) -> None:
    apim, key = portal
    page = requests.get(apim.emu.portal_url + "/", timeout=10)
    assert page.status_code == 200
    assert "Gold" in page.text
    assert "Hidden" not in page.text  # not published
    found = links(page.text)
    for cls, operation in (("signup", "SignUp"), ("signin", "SignIn"), ("subscribe", "SignIn")):
        q = query(found[cls][0])
        assert q["operation"] == operation
        assert q["returnUrl"] == "/"
        assert list(q) == ["operation", "returnUrl", "salt", "sig"]
        assert q["sig"] == expected_sig(key, q["salt"], q["returnUrl"])


def test_sign_in_with_token_then_subscribe_and_unsubscribe_links(portal: tuple[Apim, str], clock: ManualClock) -> None:
    apim, key = portal
    session = requests.Session()
    token = token_for(apim, "u", clock() + timedelta(minutes=10))
    signed_in = session.get(
        apim.emu.portal_url + "/signin-sso",
        params={"token": token, "returnUrl": "/products"},
        allow_redirects=False,
        timeout=10,
    )
    assert signed_in.status_code == 302
    assert signed_in.headers["Location"] == "/products"

    page = session.get(apim.emu.portal_url + "/", timeout=10).text
    assert "u@example.com" in page
    q = query(links(page)["subscribe"][0])
    assert (q["operation"], q["productId"], q["userId"]) == ("Subscribe", "gold", "u")
    assert list(q) == ["operation", "productId", "userId", "salt", "sig"]
    assert q["sig"] == expected_sig(key, q["salt"], "gold", "u")

    apim.subscription("s1", "gold", "u")
    page = session.get(apim.emu.portal_url + "/", timeout=10).text
    assert apim.key("s1") in page  # the signed-in user sees their keys
    q = query(links(page)["unsubscribe"][0])
    assert (q["operation"], q["subscriptionId"]) == ("Unsubscribe", "s1")
    assert q["sig"] == expected_sig(key, q["salt"], "s1")

    # The portal has no sign-out page: its Sign out link ends the session here, then goes to the
    # delegation endpoint with operation=SignOut (signed like the other account operations).
    assert links(page)["signout"] == ["/?signout"]
    assert session.get(apim.emu.portal_url + "/signout", allow_redirects=False, timeout=10).status_code == 404
    signed_out = session.get(apim.emu.portal_url + "/?signout", allow_redirects=False, timeout=10)
    assert signed_out.status_code == 302
    q = query(signed_out.headers["Location"])
    assert list(q) == ["operation", "userId", "salt", "sig"]
    assert (q["operation"], q["userId"]) == ("SignOut", "u")
    assert q["sig"] == expected_sig(key, q["salt"], "u")
    assert "u@example.com" not in session.get(apim.emu.portal_url + "/", timeout=10).text  # the session ended first


def test_signin_sso_rejects_bad_tokens_and_foreign_return_urls(portal: tuple[Apim, str], clock: ManualClock) -> None:
    apim, _ = portal
    url = apim.emu.portal_url + "/signin-sso"
    token = token_for(apim, "u", clock() + timedelta(minutes=10))
    uid, stamp, sig = token.split("&")
    for bad in ("", "garbage", f"{uid}&{stamp}&{'A' * len(sig)}", f"other&{stamp}&{sig}"):
        assert requests.get(url, params={"token": bad}, allow_redirects=False, timeout=10).status_code == 401
    elsewhere = requests.get(
        url, params={"token": token, "returnUrl": "https://evil.example/"}, allow_redirects=False, timeout=10
    )
    assert elsewhere.headers["Location"] == "/"
    clock.advance(minutes=11)
    assert requests.get(url, params={"token": token}, allow_redirects=False, timeout=10).status_code == 401


def test_delegation_from_constructor() -> None:
    key = base64.b64encode(b"k" * 32).decode()
    with ApimEmulator(delegation_url=DELEGATION, delegation_key_b64=key) as emu:
        assert emu.app_settings()["APIM_DELEGATION_VALIDATION_KEY"] == key
        client = emu.management_client()
        client.product.create_or_update(
            emu.resource_group, emu.service_name, "p", m.ProductContract(display_name="P", state="published")
        )
        client.product_group.create_or_update(emu.resource_group, emu.service_name, "p", "guests")
        q = query(links(requests.get(emu.portal_url, timeout=10).text)["signin"][0])
        assert q["sig"] == expected_sig(key, q["salt"], q["returnUrl"])


def sign_in(apim: Apim, uid: str, clock: ManualClock) -> requests.Session:
    session = requests.Session()
    token = token_for(apim, uid, clock() + timedelta(minutes=10))
    assert (
        session.get(
            apim.emu.portal_url + "/signin-sso", params={"token": token}, allow_redirects=False, timeout=10
        ).status_code
        == 302
    )
    return session


def shown(session: requests.Session | None, apim: Apim) -> list[str]:
    page = (session or requests).get(apim.emu.portal_url + "/", timeout=10).text
    return re.findall(r'class="product" data-product-id="([^"]+)"', page)


def test_each_visitor_sees_the_products_of_their_groups(portal: tuple[Apim, str], clock: ManualClock) -> None:
    apim, _ = portal
    apim.client.group.create_or_update(apim.rg, apim.svc, "partners", m.GroupCreateParameters(display_name="Partners"))
    apim.product("members", groups=("developers",))
    apim.product("partner", groups=("partners",))
    apim.product("nobody")  # linked to Administrators only, as every new product is
    apim.user("partner-user")
    apim.client.group_user.create(apim.rg, apim.svc, "partners", "partner-user")
    assert shown(None, apim) == ["gold"]  # anonymous visitors are Guests
    developer = sign_in(apim, "u", clock)
    assert shown(developer, apim) == ["gold", "members"]
    partner = sign_in(apim, "partner-user", clock)
    assert shown(partner, apim) == ["gold", "members", "partner"]
    admin = sign_in(apim, "1", clock)  # Administrators see every product, published or not
    assert shown(admin, apim) == ["gold", "hidden", "members", "partner", "nobody"]
    # Unlinking a group or unpublishing hides the product again.
    apim.client.product_group.delete(apim.rg, apim.svc, "members", "developers")
    apim.client.product.update(apim.rg, apim.svc, "gold", "*", m.ProductUpdateParameters(state="notPublished"))
    assert shown(developer, apim) == []
    assert shown(None, apim) == []


def test_subscribe_links_are_offered_to_signed_in_users_who_see_the_product(
    portal: tuple[Apim, str], clock: ManualClock
) -> None:
    apim, _ = portal
    anonymous = links(requests.get(apim.emu.portal_url + "/", timeout=10).text)
    assert [query(h)["operation"] for h in anonymous["subscribe"]] == ["SignIn"]  # sign in first
    page = sign_in(apim, "u", clock).get(apim.emu.portal_url + "/", timeout=10).text
    assert [(query(h)["operation"], query(h)["productId"]) for h in links(page)["subscribe"]] == [("Subscribe", "gold")]


def test_sign_out_without_sign_in_delegation_goes_home(apim: Apim, clock: ManualClock) -> None:
    apim.emu.set_clock(clock)
    apim.user("u")
    session = sign_in(apim, "u", clock)
    assert "u@example.com" in session.get(apim.emu.portal_url + "/", timeout=10).text
    signed_out = session.get(apim.emu.portal_url + "/?signout", allow_redirects=False, timeout=10)
    assert (signed_out.status_code, signed_out.headers["Location"]) == (302, "/")
    assert "Max-Age=0" in signed_out.headers["Set-Cookie"]
    assert "u@example.com" not in session.get(apim.emu.portal_url + "/", timeout=10).text
