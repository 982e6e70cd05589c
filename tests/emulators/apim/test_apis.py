"""APIs, their links to products, product groups and the service resource, through the real client.

Shapes are compared with the 2024-05-01 samples in azure-rest-api-specs
(specification/apimanagement/resource-manager/Microsoft.ApiManagement/stable/2024-05-01/examples/),
named below; emulator differences are those listed in emulators/apim/README.md.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import requests
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.mgmt.apimanagement import models as m

from emulators.apim.server import ApimEmulator
from tests.emulators.apim.conftest import Apim, text


class Raw:
    """The raw status, headers and JSON body of every response the client received, in order."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, int, dict[str, str], Any]] = []

    def __call__(self, pipeline_response: Any) -> None:
        response = pipeline_response.http_response
        text = response.text()
        self.seen.append(
            (response.request.method, response.status_code, dict(response.headers), json.loads(text) if text else None)
        )


def params(path: str = "echo", **props: Any) -> m.ApiCreateOrUpdateParameter:
    return m.ApiCreateOrUpdateParameter(
        display_name="Echo API", path=path, protocols=["https"], service_url="https://backend.example/api", **props
    )


def arm(apim: Apim, method: str, rest: str, body: Any = None) -> requests.Response:
    """One raw management call (the SDK streams the first answer of a long-running operation)."""
    url = rest if rest.startswith("https://") else f"{apim.emu.management_url}{apim.emu.emu.service_id}{rest}"
    if "api-version=" not in url:
        url += ("&" if "?" in url else "?") + "api-version=2024-05-01"
    return requests.request(
        method,
        url,
        json=body,
        verify=apim.emu.ca_bundle,
        timeout=10,
        headers={"Authorization": f"Bearer {apim.emu.emu.tokens.issue()[0]}"},
    )


def test_create_api_is_a_long_running_operation_the_sdk_completes(apim: Apim) -> None:
    api = apim.client.api.begin_create_or_update(apim.rg, apim.svc, "echo", params(description="Echoes")).result()
    assert (text(api.name), api.display_name, api.path, api.protocols) == ("echo", "Echo API", "echo", ["https"])
    assert api.subscription_required is True  # "By default when you create an API, a subscription key is required"
    # ApiManagementCreateApi.json: 201 with the API, provisioningState InProgress, Location and
    # Azure-AsyncOperation; the SDK polls the operation (Succeeded) and reads the API from Location.
    created = arm(apim, "PUT", "/apis/raw", {"properties": {"displayName": "Raw", "path": "raw"}})
    assert created.status_code == 201
    body = created.json()
    assert body["type"] == "Microsoft.ApiManagement/service/apis"
    assert set(body["properties"]) == {
        "displayName",
        "apiRevision",
        "path",
        "protocols",
        "isCurrent",
        "isOnline",
        "subscriptionKeyParameterNames",
        "subscriptionRequired",
        "provisioningState",
    }
    assert body["properties"]["provisioningState"] == "InProgress"
    assert body["properties"]["protocols"] == ["https"]
    assert created.headers["ETag"]
    assert "asyncCode=201" in created.headers["Location"]
    operation = arm(apim, "GET", created.headers["Azure-AsyncOperation"])
    assert operation.json()["status"] == "Succeeded"
    final = arm(apim, "GET", created.headers["Location"]).json()
    assert "provisioningState" not in final["properties"]  # ApiManagementGetApiContract.json
    updated = arm(apim, "PUT", "/apis/raw", {"properties": {"displayName": "Raw 2", "path": "raw"}})
    assert updated.status_code == 200
    assert "asyncCode=200" in updated.headers["Location"]
    assert arm(apim, "GET", "/tenant/operationResults/unknown").status_code == 404


def test_get_list_update_and_delete_apis(apim: Apim) -> None:
    for aid, path in (("a1", "one"), ("a2", "two/deep"), ("a3", "three")):
        apim.client.api.begin_create_or_update(apim.rg, apim.svc, aid, params(path)).result()
    raw = Raw()
    got = apim.client.api.get(apim.rg, apim.svc, "a2", raw_response_hook=raw)
    assert got.path == "two/deep"
    assert got.subscription_key_parameter_names is not None
    assert got.subscription_key_parameter_names.header == "Ocp-Apim-Subscription-Key"
    assert raw.seen[0][2]["ETag"]
    assert apim.client.api.get_entity_tag(apim.rg, apim.svc, "a2") is True
    listed = Raw()
    assert [a.name for a in apim.client.api.list_by_service(apim.rg, apim.svc, raw_response_hook=listed)] == [
        "a1",
        "a2",
        "a3",
    ]
    # ApiManagementListApis.json: list entries have no subscriptionKeyParameterNames / isOnline; nextLink "".
    body = listed.seen[0][3]
    assert (body["count"], body["nextLink"]) == (3, "")
    assert "isOnline" not in body["value"][0]["properties"]
    assert [a.name for a in apim.client.api.list_by_service(apim.rg, apim.svc, filter="path eq 'three'")] == ["a3"]
    assert [
        a.name
        for a in apim.client.api.list_by_service(apim.rg, apim.svc, filter="contains(displayName, 'echo')", top=2)
    ] == ["a1", "a2", "a3"]
    updated = apim.client.api.update(apim.rg, apim.svc, "a1", "*", m.ApiUpdateContract(display_name="New", path="uno"))
    assert (updated.display_name, updated.path, updated.service_url) == ("New", "uno", "https://backend.example/api")
    apim.client.api.begin_delete(apim.rg, apim.svc, "a1", "*").result()
    with pytest.raises(ResourceNotFoundError):
        apim.client.api.get(apim.rg, apim.svc, "a1")
    apim.client.api.begin_delete(apim.rg, apim.svc, "a1", "*").result()  # already gone: 204 again


def test_api_paths_are_unique_and_fields_are_validated(apim: Apim) -> None:
    apim.client.api.begin_create_or_update(apim.rg, apim.svc, "first", params("shared")).result()
    with pytest.raises(HttpResponseError) as err:
        apim.client.api.begin_create_or_update(apim.rg, apim.svc, "second", params("Shared")).result()
    assert err.value.status_code == 400
    # Verbatim form of a real answer (Azure/apiops#343).
    refused = arm(apim, "PUT", "/apis/second", {"properties": {"displayName": "S", "path": "Shared"}})
    assert refused.json() == {
        "error": {
            "code": "ValidationError",
            "message": "One or more fields contain incorrect values:",
            "details": [
                {
                    "code": "ValidationError",
                    "target": "path",
                    "message": "Cannot create API 'second' with the same Path 'Shared' as API 'first'  unless it's "
                    "a part of the same version set",
                }
            ],
        }
    }
    for body, field in (
        ({"properties": {"displayName": "X"}}, "path"),
        ({"properties": {"path": "x"}}, "displayName"),
        ({"properties": {"displayName": "X", "path": "x", "protocols": ["ftp"]}}, "protocols"),
        ({"properties": {"displayName": "X", "path": "x", "serviceUrl": "nope"}}, "serviceUrl"),
    ):
        answer = arm(apim, "PUT", "/apis/bad", body)
        assert answer.status_code == 400
        assert answer.json()["error"]["details"][0]["target"] == field


def test_product_api_links(apim: Apim) -> None:
    apim.api("echo")
    apim.api("other")
    apim.client.product.create_or_update(apim.rg, apim.svc, "p", m.ProductContract(display_name="P"))
    raw = Raw()
    apim.client.product_api.create_or_update(apim.rg, apim.svc, "p", "echo", raw_response_hook=raw)
    apim.client.product_api.create_or_update(apim.rg, apim.svc, "p", "echo", raw_response_hook=raw)
    assert [s[1] for s in raw.seen] == [201, 200]
    # ApiManagementCreateProductApi.json: the API itself, id /apis/{apiId}, no isOnline.
    body = raw.seen[0][3]
    assert body["id"].endswith("/apis/echo")
    assert body["type"] == "Microsoft.ApiManagement/service/apis"
    assert "isOnline" not in body["properties"]
    apim.client.product_api.create_or_update(apim.rg, apim.svc, "p", "other")
    assert apim.client.product_api.check_entity_exists(apim.rg, apim.svc, "p", "echo") is True
    listed = Raw()
    assert [
        a.name for a in apim.client.product_api.list_by_product(apim.rg, apim.svc, "p", raw_response_hook=listed)
    ] == ["echo", "other"]
    entry = listed.seen[0][3]["value"][0]
    # ApiManagementListProductApis.json: id under the product, type products/apis.
    assert entry["id"].endswith("/products/p/apis/echo")
    assert entry["type"] == "Microsoft.ApiManagement/service/products/apis"
    assert listed.seen[0][3]["nextLink"] == ""
    deleted = Raw()
    apim.client.product_api.delete(apim.rg, apim.svc, "p", "other", raw_response_hook=deleted)
    apim.client.product_api.delete(apim.rg, apim.svc, "p", "other", raw_response_hook=deleted)
    assert [s[1] for s in deleted.seen] == [200, 204]
    with pytest.raises(ResourceNotFoundError):
        apim.client.product_api.check_entity_exists(apim.rg, apim.svc, "p", "other")
    with pytest.raises(ResourceNotFoundError):
        apim.client.product_api.create_or_update(apim.rg, apim.svc, "p", "missing")
    # Deleting the API removes its links; deleting the product removes all of them.
    apim.client.api.begin_delete(apim.rg, apim.svc, "echo", "*").result()
    assert list(apim.client.product_api.list_by_product(apim.rg, apim.svc, "p")) == []
    apim.client.product_api.create_or_update(apim.rg, apim.svc, "p", "other")
    apim.client.product.delete(apim.rg, apim.svc, "p", "*")
    apim.client.product.create_or_update(apim.rg, apim.svc, "p", m.ProductContract(display_name="P"))
    assert list(apim.client.product_api.list_by_product(apim.rg, apim.svc, "p")) == []


def test_product_group_links(apim: Apim) -> None:
    apim.client.product.create_or_update(apim.rg, apim.svc, "p", m.ProductContract(display_name="P"))
    # "By default, new products are unpublished, and are visible only to the Administrators group."
    listed = Raw()
    assert [
        g.name for g in apim.client.product_group.list_by_product(apim.rg, apim.svc, "p", raw_response_hook=listed)
    ] == ["administrators"]
    # ApiManagementListProductGroups.json: entries under the product, type products/groups, full properties.
    entry = listed.seen[0][3]["value"][0]
    assert entry["id"].endswith("/products/p/groups/administrators")
    assert entry["type"] == "Microsoft.ApiManagement/service/products/groups"
    assert entry["properties"]["builtIn"] is True
    apim.client.group.create_or_update(apim.rg, apim.svc, "partners", m.GroupCreateParameters(display_name="Partners"))
    raw = Raw()
    for gid in ("developers", "developers", "partners"):
        apim.client.product_group.create_or_update(apim.rg, apim.svc, "p", gid, raw_response_hook=raw)
    assert [s[1] for s in raw.seen] == [201, 200, 201]
    # ApiManagementCreateProductGroup.json: the group's own /groups/{id} id with the products/groups type.
    assert raw.seen[0][3]["id"].endswith("/groups/developers")
    assert raw.seen[0][3]["type"] == "Microsoft.ApiManagement/service/products/groups"
    assert apim.client.product_group.check_entity_exists(apim.rg, apim.svc, "p", "partners") is True
    assert [
        g.name for g in apim.client.product_group.list_by_product(apim.rg, apim.svc, "p", filter="name eq 'developers'")
    ] == ["developers"]
    apim.client.group.delete(apim.rg, apim.svc, "partners", "*")  # a deleted group leaves its products
    with pytest.raises(ResourceNotFoundError):
        apim.client.product_group.check_entity_exists(apim.rg, apim.svc, "p", "partners")
    deleted = Raw()
    for _ in range(2):
        apim.client.product_group.delete(apim.rg, apim.svc, "p", "administrators", raw_response_hook=deleted)
    assert [s[1] for s in deleted.seen] == [200, 204]
    assert [g.name for g in apim.client.product_group.list_by_product(apim.rg, apim.svc, "p")] == ["developers"]
    with pytest.raises(ResourceNotFoundError):
        apim.client.product_group.create_or_update(apim.rg, apim.svc, "p", "nobody")


def test_the_service_resource(apim: Apim) -> None:
    raw = Raw()
    service = apim.client.api_management_service.get(apim.rg, apim.svc, raw_response_hook=raw)
    assert (text(service.name), text(service.type), service.sku.name, service.sku.capacity) == (
        apim.svc,
        "Microsoft.ApiManagement/service",
        "Developer",
        1,
    )
    assert service.gateway_url == apim.emu.gateway_url
    assert service.developer_portal_url == apim.emu.portal_url
    assert service.publisher_email == apim.emu.publisher_email
    assert service.location
    assert service.publisher_name
    assert service.provisioning_state == "Succeeded"
    assert raw.seen[0][3]["id"] == apim.emu.emu.service_id
    with pytest.raises(HttpResponseError) as err:
        apim.client.api_management_service.get(apim.rg, "elsewhere")
    assert err.value.status_code == 404


def test_tier_is_a_constructor_option() -> None:
    with pytest.raises(ValueError, match="tier must be one of"):
        ApimEmulator(tier="Consumption")
    emu = ApimEmulator(tier="Premium")
    assert emu.tier == "Premium"
