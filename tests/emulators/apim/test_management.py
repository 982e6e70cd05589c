"""The management API through the real azure-mgmt-apimanagement client."""

from __future__ import annotations

import base64
import os
from datetime import UTC, datetime, timedelta

import pytest
import requests
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError
from azure.identity import DefaultAzureCredential
from azure.mgmt.apimanagement import ApiManagementClient
from azure.mgmt.apimanagement import models as m

from tests.emulators.apim.conftest import Apim, arm_error, pages, policy, text


def test_user_lifecycle_and_email_filter(apim: Apim) -> None:
    created = apim.user("alice", "alice@example.com")
    assert created.name == "alice"
    assert created.email == "alice@example.com"
    assert created.state == "active"
    assert text(created.id).endswith(f"/service/{apim.svc}/users/alice")
    apim.user("bob", "bob@example.com")

    found = list(apim.client.user.list_by_service(apim.rg, apim.svc, filter="email eq 'ALICE@example.com'"))
    assert [u.name for u in found] == ["alice"]

    updated = apim.client.user.create_or_update(
        apim.rg,
        apim.svc,
        "alice",
        m.UserCreateParameters(email="alice@example.com", first_name="Alice", last_name="Liddell", note="vip"),
    )
    assert (updated.first_name, updated.last_name, updated.note) == ("Alice", "Liddell", "vip")

    etag = apim.client.user.get_entity_tag(apim.rg, apim.svc, "alice")
    assert etag is True  # HEAD answers 200 for an existing user
    apim.client.user.begin_delete(apim.rg, apim.svc, "alice", if_match="*").result()
    with pytest.raises(ResourceNotFoundError) as err:
        apim.client.user.get(apim.rg, apim.svc, "alice")
    assert arm_error(err).code == "ResourceNotFound"


def test_duplicate_email_is_a_conflict(apim: Apim) -> None:
    apim.user("alice", "same@example.com")
    with pytest.raises(ResourceExistsError) as err:
        apim.user("other", "same@example.com")
    assert "same@example.com" in str(err.value)


def test_validation_errors_name_the_field(apim: Apim) -> None:
    with pytest.raises(HttpResponseError) as err:
        apim.client.user.create_or_update(
            apim.rg, apim.svc, "u", m.UserCreateParameters(email="not-an-email", first_name="A", last_name="B")
        )
    assert err.value.status_code == 400
    assert arm_error(err).code == "ValidationError"
    assert "email" in arm_error(err).message

    apim.product("gold")
    with pytest.raises(HttpResponseError) as err:
        apim.client.subscription.create_or_update(
            apim.rg,
            apim.svc,
            "s1",
            m.SubscriptionCreateParameters(scope="/products/gold", display_name="s1", state="paused"),
        )
    assert err.value.status_code == 400
    assert "state" in arm_error(err).message
    assert "active" in arm_error(err).message  # says what would be right


def test_if_match_mismatch_is_412(apim: Apim) -> None:
    apim.user("u")
    apim.product("gold")
    apim.subscription("s1", "gold", "u", state="submitted")
    with pytest.raises(HttpResponseError) as err:
        apim.client.subscription.update(
            apim.rg, apim.svc, "s1", '"not-the-etag"', m.SubscriptionUpdateParameters(state="active")
        )
    assert err.value.status_code == 412
    raw_etag: list[str] = []
    apim.client.subscription.get(
        apim.rg, apim.svc, "s1", raw_response_hook=lambda r: raw_etag.append(r.http_response.headers["ETag"])
    )
    updated = apim.client.subscription.update(
        apim.rg, apim.svc, "s1", raw_etag[0], m.SubscriptionUpdateParameters(state="active")
    )
    assert updated.state == "active"
    assert updated.start_date is not None


def test_subscription_keys_are_hidden_and_regenerated(apim: Apim) -> None:
    apim.user("u")
    apim.product("gold")
    created = apim.subscription("s1", "gold", "u")
    assert text(created.owner_id).endswith("/users/u")
    assert text(created.scope).endswith("/products/gold")
    got = apim.client.subscription.get(apim.rg, apim.svc, "s1")
    assert got.primary_key is None
    assert got.secondary_key is None
    keys = apim.client.subscription.list_secrets(apim.rg, apim.svc, "s1")
    assert keys.primary_key
    assert keys.secondary_key
    assert keys.primary_key != keys.secondary_key
    apim.client.subscription.regenerate_primary_key(apim.rg, apim.svc, "s1")
    again = apim.client.subscription.list_secrets(apim.rg, apim.svc, "s1")
    assert again.primary_key != keys.primary_key
    assert again.secondary_key == keys.secondary_key


def test_subscription_scope_and_owner_accept_full_ids(apim: Apim) -> None:
    apim.user("u")
    product = apim.product("gold")
    owner = apim.client.user.get(apim.rg, apim.svc, "u").id
    sub = apim.client.subscription.create_or_update(
        apim.rg, apim.svc, "s1", m.SubscriptionCreateParameters(owner_id=owner, scope=product.id, display_name="x")
    )
    assert sub.state == "submitted"  # APIM's default
    assert sub.scope == product.id


def test_subscription_list_filter_and_paging(apim: Apim) -> None:
    apim.user("u")
    apim.user("v")
    apim.product("gold")
    apim.product("silver")
    for i in range(7):
        apim.subscription(f"g{i}", "gold", "u", state="active" if i % 2 == 0 else "suspended")
    apim.subscription("s0", "silver", "v")

    listed = pages(apim.client.subscription.list(apim.rg, apim.svc, top=3))
    names = [[s.name for s in page] for page in listed]
    assert names == [["g0", "g1", "g2"], ["g3", "g4", "g5"], ["g6", "s0"]]

    active_gold = apim.client.subscription.list(
        apim.rg, apim.svc, filter="productId eq '/products/gold' and state eq 'active'", top=2
    )
    assert sorted(text(s.name) for s in active_gold) == ["g0", "g2", "g4", "g6"]
    by_owner = apim.client.subscription.list(apim.rg, apim.svc, filter="ownerId eq 'v'")
    assert [s.name for s in by_owner] == ["s0"]
    skipped = apim.client.subscription.list(apim.rg, apim.svc, skip=6)
    assert [s.name for s in skipped] == ["g6", "s0"]


def test_bad_filter_is_a_clear_400(apim: Apim) -> None:
    with pytest.raises(HttpResponseError) as err:
        list(apim.client.subscription.list(apim.rg, apim.svc, filter="colour eq 'red'"))
    assert err.value.status_code == 400
    assert "colour" in arm_error(err).message


def test_product_policy_round_trip_and_invalid_xml(apim: Apim) -> None:
    apim.product("gold")
    xml = policy('<rate-limit calls="5" renewal-period="60" />')
    apim.client.product_policy.create_or_update(apim.rg, apim.svc, "gold", "policy", m.PolicyContract(value=xml))
    got = apim.client.product_policy.get(apim.rg, apim.svc, "gold", "policy")
    assert got.value == xml
    listed = apim.client.product_policy.list_by_product(apim.rg, apim.svc, "gold")
    assert [p.value for p in listed] == [xml]

    with pytest.raises(HttpResponseError) as err:
        apim.client.product_policy.create_or_update(
            apim.rg, apim.svc, "gold", "policy", m.PolicyContract(value="<policies><inbound>")
        )
    assert err.value.status_code == 400
    assert "well-formed" in arm_error(err).message
    with pytest.raises(HttpResponseError) as err:
        apim.client.product_policy.create_or_update(
            apim.rg,
            apim.svc,
            "gold",
            "policy",
            m.PolicyContract(value=policy('<quota calls="lots" renewal-period="60" />')),
        )
    assert "calls" in arm_error(err).message


def test_product_delete_requires_delete_subscriptions(apim: Apim) -> None:
    apim.user("u")
    apim.product("gold")
    apim.subscription("s1", "gold", "u")
    with pytest.raises(HttpResponseError) as err:
        apim.client.product.delete(apim.rg, apim.svc, "gold", if_match="*")
    assert err.value.status_code == 409
    apim.client.product.delete(apim.rg, apim.svc, "gold", if_match="*", delete_subscriptions=True)
    with pytest.raises(ResourceNotFoundError):
        apim.client.subscription.get(apim.rg, apim.svc, "s1")
    assert [p.name for p in apim.client.product.list_by_service(apim.rg, apim.svc)] == []


def test_shared_access_token(apim: Apim) -> None:
    apim.user("u")
    expiry = datetime.now(UTC) + timedelta(hours=1)
    token = apim.client.user.get_shared_access_token(
        apim.rg, apim.svc, "u", m.UserTokenParameters(key_type="primary", expiry=expiry)
    ).value
    uid, stamp, sig = text(token).split("&")
    assert uid == "u"
    assert stamp == expiry.strftime("%Y%m%d%H%M")
    assert len(base64.b64decode(sig)) == 64  # an HMAC-SHA512
    with pytest.raises(HttpResponseError) as err:
        apim.client.user.get_shared_access_token(
            apim.rg, apim.svc, "u", m.UserTokenParameters(key_type="tertiary", expiry=expiry)
        )
    assert "keyType" in arm_error(err).message


def test_delegation_settings(apim: Apim) -> None:
    key = base64.b64encode(os.urandom(64)).decode()
    apim.client.delegation_settings.create_or_update(
        apim.rg,
        apim.svc,
        m.PortalDelegationSettings(
            url="http://127.0.0.1:9/delegation",
            validation_key=key,
            subscriptions=m.SubscriptionsDelegationSettingsProperties(enabled=True),
            user_registration=m.RegistrationDelegationSettingsProperties(enabled=True),
        ),
    )
    got = apim.client.delegation_settings.get(apim.rg, apim.svc)
    assert got.url == "http://127.0.0.1:9/delegation"
    assert got.validation_key is None  # only listSecrets reveals it
    assert got.subscriptions is not None
    assert got.subscriptions.enabled is True
    assert apim.client.delegation_settings.list_secrets(apim.rg, apim.svc).validation_key == key
    with pytest.raises(HttpResponseError) as err:
        apim.client.delegation_settings.create_or_update(
            apim.rg, apim.svc, m.PortalDelegationSettings(validation_key="***not base64***")
        )
    assert "validationKey" in arm_error(err).message


def test_requests_without_a_token_are_refused(apim: Apim) -> None:
    url = f"{apim.emu.management_url}{apim.emu.emu.service_id}/users?api-version=2024-05-01"
    response = requests.get(url, verify=apim.emu.ca_bundle, timeout=10)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "AuthenticationFailed"
    forged = requests.get(url, verify=apim.emu.ca_bundle, timeout=10, headers={"Authorization": "Bearer forged"})
    assert forged.status_code == 401


def test_wrong_service_name_is_not_found(apim: Apim) -> None:
    with pytest.raises(ResourceNotFoundError):
        apim.client.user.get(apim.rg, "some-other-service", "u")


def test_app_settings_work_with_default_azure_credential(apim: Apim, monkeypatch: pytest.MonkeyPatch) -> None:
    """The app's own way in: environment only, DefaultAzureCredential picks the managed identity."""
    settings = apim.emu.app_settings()
    for name in ("AZURE_CLIENT_ID", "AZURE_TENANT_ID", "AZURE_CLIENT_SECRET", "AZURE_FEDERATED_TOKEN_FILE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in settings.items():
        monkeypatch.setenv(name, value)
    credential = DefaultAzureCredential(exclude_interactive_browser_credential=True)
    with ApiManagementClient(
        credential, settings["APIM_SUBSCRIPTION_ID"], base_url=settings["APIM_MANAGEMENT_ENDPOINT"]
    ) as client:
        client.product.create_or_update(
            settings["APIM_RESOURCE_GROUP"], settings["APIM_SERVICE_NAME"], "free", m.ProductContract(display_name="F")
        )
        names = [
            p.name
            for p in client.product.list_by_service(settings["APIM_RESOURCE_GROUP"], settings["APIM_SERVICE_NAME"])
        ]
    assert names == ["free"]


def test_subscriptions_by_user_and_by_product_and_product_patch(apim: Apim) -> None:
    apim.user("u")
    apim.user("v")
    apim.product("gold")
    apim.product("silver")
    apim.subscription("a", "gold", "u")
    apim.subscription("b", "silver", "u")
    apim.subscription("c", "gold", "v", state="suspended")
    assert [s.name for s in apim.client.user_subscription.list(apim.rg, apim.svc, "u")] == ["a", "b"]
    assert [s.name for s in apim.client.product_subscriptions.list(apim.rg, apim.svc, "gold")] == ["a", "c"]
    suspended = apim.client.product_subscriptions.list(apim.rg, apim.svc, "gold", filter="state eq 'suspended'")
    assert [s.name for s in suspended] == ["c"]

    patched = apim.client.product.update(
        apim.rg, apim.svc, "gold", "*", m.ProductUpdateParameters(description="Best", state="notPublished")
    )
    assert (patched.display_name, patched.description, patched.state) == ("Gold", "Best", "notPublished")
