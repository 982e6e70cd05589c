"""Replays Microsoft's published request/response samples (../shared/contracts/apim) through the
real client and compares the emulator's raw JSON answers with them field for field.

Documented differences (see emulators/apim/README.md): timestamps are the emulator's own; a stored
policy is returned as sent (APIM rewrites named values); reports omit zero-call rows and do not
measure bandwidth or latency.

Samples that ../shared does not hold (groups, group users, the administrator) are embedded below,
each with the name of its file in azure-rest-api-specs
(specification/apimanagement/resource-manager/Microsoft.ApiManagement/stable/2024-05-01/examples/).
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from azure.core.exceptions import HttpResponseError
from azure.mgmt.apimanagement import ApiManagementClient
from azure.mgmt.apimanagement import models as m

from emulators.apim.server import ApimEmulator
from tests.emulators.apim.conftest import ManualClock

CONTRACTS = Path(__file__).resolve().parents[3].parent / "shared" / "contracts" / "apim"
TIMESTAMPS = {"createdDate", "registrationDate", "startDate"}
NOT_MEASURED = {
    "bandwidth",
    "apiTimeAvg",
    "apiTimeMin",
    "apiTimeMax",
    "serviceTimeAvg",
    "serviceTimeMin",
    "serviceTimeMax",
}


def sample(name: str) -> dict[str, Any]:
    path = CONTRACTS / f"{name}.json"
    if not path.exists():
        if os.environ.get("CI"):  # CI has shared/ beside the checkout: a missing sample is an error there
            pytest.fail(f"contract sample {path} is not present")
        pytest.skip(f"contract sample {path} is not present")
    loaded: dict[str, Any] = json.loads(path.read_text())
    return loaded


def assert_matches(actual: Any, expected: Any, where: str = "body", ignore: frozenset[str] = frozenset()) -> None:
    """Same fields at every level; same values except timestamps (parsed only) and `ignore`."""
    if isinstance(expected, dict):
        assert isinstance(actual, dict), f"{where}: expected an object, got {actual!r}"
        assert set(actual) == set(expected), f"{where}: fields {sorted(actual)} != sample {sorted(expected)}"
        for key, value in expected.items():
            if key in ignore:
                continue
            if key in TIMESTAMPS:
                datetime.fromisoformat(actual[key])
                continue
            assert_matches(actual[key], value, f"{where}.{key}", ignore)
    elif isinstance(expected, list):
        assert isinstance(actual, list), f"{where}: expected a list"
        assert len(actual) == len(expected), f"{where}: {len(actual)} items != sample {len(expected)}"
        for i, (a, e) in enumerate(zip(actual, expected, strict=True)):
            assert_matches(a, e, f"{where}[{i}]", ignore)
    else:
        assert actual == expected, f"{where}: {actual!r} != sample {expected!r}"


class Raw:
    """Captures the raw JSON body of the last response the client received."""

    def __init__(self) -> None:
        self.status = 0
        self.body: Any = None

    def hook(self) -> Callable[[Any], None]:
        def capture(pipeline_response: Any) -> None:
            self.status = pipeline_response.http_response.status_code
            text = pipeline_response.http_response.text()
            self.body = json.loads(text) if text else None

        return capture


def body(params: dict[str, Any]) -> io.BytesIO:
    return io.BytesIO(json.dumps(params["parameters"]).encode())


@pytest.fixture
def env() -> Iterator[tuple[ApiManagementClient, str, str, ApimEmulator]]:
    # The samples' own coordinates, so resource ids can be compared verbatim; the samples date from 2017.
    clock = ManualClock(datetime(2017, 6, 3, 12, 0, tzinfo=UTC))
    with ApimEmulator(
        subscription_id="00000000-0000-0000-0000-000000000000",
        resource_group="rg1",
        service_name="apimService1",
        clock=clock,
        publisher_email="admin@live.com",
    ) as emu:
        client = emu.management_client(retry_total=0)
        yield client, "rg1", "apimService1", emu
        client.close()


def test_create_user(env: Any) -> None:
    client, rg, svc, _ = env
    s = sample("ApiManagementCreateUser")
    p, raw = s["parameters"], Raw()
    for status in ("201", "200"):  # first create, then update in place
        client.user.create_or_update(
            rg, svc, p["userId"], body(p), content_type="application/json", raw_response_hook=raw.hook()
        )
        assert raw.status == int(status)
        assert_matches(raw.body, s["responses"][status]["body"])


def test_get_user(env: Any) -> None:
    client, rg, svc, _ = env
    s = sample("ApiManagementGetUser")
    expected = s["responses"]["200"]["body"]
    props = expected["properties"]
    client.user.create_or_update(
        rg,
        svc,
        s["parameters"]["userId"],
        m.UserCreateParameters(
            email=props["email"],
            first_name=props["firstName"],
            last_name=props["lastName"],
            identities=[m.UserIdentityContract(provider=i["provider"], id=i["id"]) for i in props["identities"]],
        ),
    )
    raw = Raw()
    client.user.get(rg, svc, s["parameters"]["userId"], raw_response_hook=raw.hook())
    assert_matches(raw.body, expected)


def test_create_product(env: Any) -> None:
    client, rg, svc, _ = env
    s = sample("ApiManagementCreateProduct")
    p, raw = s["parameters"], Raw()
    for status in ("201", "200"):
        client.product.create_or_update(
            rg, svc, p["productId"], body(p), content_type="application/json", raw_response_hook=raw.hook()
        )
        assert raw.status == int(status)
        assert_matches(raw.body, s["responses"][status]["body"])


def test_create_product_policy(env: Any) -> None:
    client, rg, svc, _ = env
    s = sample("ApiManagementCreateProductPolicy")
    p, raw = s["parameters"], Raw()
    client.product.create_or_update(rg, svc, p["productId"], m.ProductContract(display_name="P"))
    for status in ("201", "200"):
        client.product_policy.create_or_update(
            rg,
            svc,
            p["productId"],
            p["policyId"],
            body(p),
            content_type="application/json",
            raw_response_hook=raw.hook(),
        )
        assert raw.status == int(status)
        # APIM rewrites {{named values}} to their ids on save; the emulator keeps the text it was sent.
        assert_matches(raw.body, s["responses"][status]["body"], ignore=frozenset({"value"}))
        assert raw.body["properties"]["value"] == p["parameters"]["properties"]["value"]


def _user_and_product(client: ApiManagementClient, rg: str, svc: str, owner_id: str, scope: str) -> None:
    uid, pid = owner_id.rsplit("/", 1)[1], scope.rsplit("/", 1)[1]
    client.user.create_or_update(
        rg, svc, uid, m.UserCreateParameters(email=f"{uid}@example.com", first_name="foo", last_name="bar")
    )
    client.product.create_or_update(rg, svc, pid, m.ProductContract(display_name="P"))


def test_create_subscription(env: Any) -> None:
    client, rg, svc, _ = env
    s = sample("ApiManagementCreateSubscription")
    p, raw = s["parameters"], Raw()
    props = p["parameters"]["properties"]
    _user_and_product(client, rg, svc, props["ownerId"], props["scope"])
    for status in ("201", "200"):
        client.subscription.create_or_update(
            rg, svc, p["sid"], body(p), content_type="application/json", raw_response_hook=raw.hook()
        )
        assert raw.status == int(status)
        assert_matches(raw.body, s["responses"][status]["body"])


def test_get_and_update_subscription(env: Any) -> None:
    client, rg, svc, _ = env
    get, update = sample("ApiManagementGetSubscription"), sample("ApiManagementUpdateSubscription")
    expected = get["responses"]["200"]["body"]["properties"]
    _user_and_product(client, rg, svc, expected["ownerId"], expected["scope"])
    for sid, name in ((get["parameters"]["sid"], expected["displayName"]), (update["parameters"]["sid"], "old")):
        client.subscription.create_or_update(
            rg,
            svc,
            sid,
            m.SubscriptionCreateParameters(owner_id=expected["ownerId"], scope=expected["scope"], display_name=name),
        )
    raw = Raw()
    client.subscription.get(rg, svc, get["parameters"]["sid"], raw_response_hook=raw.hook())
    assert_matches(raw.body, get["responses"]["200"]["body"])

    p = update["parameters"]
    client.subscription.update(
        rg, svc, p["sid"], p["If-Match"], body(p), content_type="application/json", raw_response_hook=raw.hook()
    )
    assert raw.status == 200
    assert_matches(raw.body, update["responses"]["200"]["body"])


def test_user_token(env: Any) -> None:
    client, rg, svc, _ = env
    s = sample("ApiManagementUserToken")
    p, raw = s["parameters"], Raw()
    client.user.create_or_update(
        rg, svc, p["userId"], m.UserCreateParameters(email="token@example.com", first_name="foo", last_name="bar")
    )
    client.user.get_shared_access_token(
        rg, svc, p["userId"], body(p), content_type="application/json", raw_response_hook=raw.hook()
    )
    expected = s["responses"]["200"]["body"]["value"]
    assert set(raw.body) == {"value"}
    # "{userId}&{expiry yyyyMMddHHmm}&{signature}": the first two parts are determined by the request.
    assert raw.body["value"].split("&")[:2] == expected.split("&")[:2]


def test_reports_by_subscription(env: Any) -> None:
    client, rg, svc, emu = env
    s = sample("ApiManagementGetReportsBySubscription")
    expected = s["responses"]["200"]["body"]
    busy = next(r for r in expected["value"] if r["callCountTotal"])
    for record in expected["value"]:
        uid, pid, sid = (record[k].rsplit("/", 1)[1] for k in ("userId", "productId", "subscriptionId"))
        if uid not in emu.emu.store.users:
            client.user.create_or_update(
                rg, svc, uid, m.UserCreateParameters(email=f"u{uid}@example.com", first_name="foo", last_name="bar")
            )
        client.product.create_or_update(rg, svc, pid, m.ProductContract(display_name=pid))
        client.subscription.create_or_update(
            rg,
            svc,
            sid,
            m.SubscriptionCreateParameters(
                owner_id=f"/users/{uid}", scope=f"/products/{pid}", display_name=sid, state="active"
            ),
        )
    at = datetime(2017, 6, 2, 10, 0, tzinfo=UTC)
    busy_sid = busy["subscriptionId"].rsplit("/", 1)[1]
    for outcome in ("success", "blocked", "failed", "other"):
        emu.record_usage(busy_sid, busy[f"callCount{outcome.title()}"], at=at, outcome=outcome)

    raw = Raw()
    records = list(
        client.reports.list_by_subscription(rg, svc, filter=s["parameters"]["$filter"], raw_response_hook=raw.hook())
    )
    assert [r.subscription_id for r in records] == [busy["subscriptionId"]]
    assert set(raw.body) == set(expected)
    assert raw.body["nextLink"] == expected["nextLink"]
    # Zero-call rows, which the sample shows, are omitted here (documented), so count differs.
    assert raw.body["count"] == 1
    assert_matches(raw.body["value"], [busy], "value", ignore=frozenset(NOT_MEASURED))


@pytest.mark.parametrize("op", ["lt", "gt"])
def test_report_filters_take_only_ge_and_le_on_timestamp(env: Any, op: str) -> None:
    client, rg, svc, _ = env
    flt = f"timestamp ge datetime'2017-06-01T00:00:00' and timestamp {op} datetime'2017-06-04T00:00:00'"
    with pytest.raises(HttpResponseError) as refused:
        list(client.reports.list_by_subscription(rg, svc, filter=flt))
    assert refused.value.status_code == 400
    assert f"'timestamp {op}' is not supported" in str(refused.value)


# ---- samples embedded here (not in ../shared) -------------------------------------------------------
SERVICE = (
    "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg1"
    "/providers/Microsoft.ApiManagement/service/apimService1"
)

# ApiManagementListGroups.json: the three system entries' properties (their names there are old-style
# hex ids; instances created today name them administrators, developers, guests) and the envelope.
LIST_GROUPS_SYSTEM = {
    "administrators": {
        "displayName": "Administrators",
        "description": "Administrators is a built-in group. Its membership is managed by the system. "
        "Microsoft Azure subscription administrators fall into this group.",
        "builtIn": True,
        "type": "system",
    },
    "developers": {
        "displayName": "Developers",
        "description": "Developers is a built-in group. Its membership is managed by the system. "
        "Signed-in users fall into this group.",
        "builtIn": True,
        "type": "system",
    },
    "guests": {
        "displayName": "Guests",
        "description": "Guests is a built-in group. Its membership is managed by the system. "
        "Unauthenticated users visiting the developer portal fall into this group.",
        "builtIn": True,
        "type": "system",
    },
}

# ApiManagementCreateGroup.json: request and the 201/200 answers (the same body).
CREATE_GROUP = {
    "groupId": "tempgroup",
    "parameters": {"properties": {"displayName": "temp group"}},
    "response": {
        "id": SERVICE + "/groups/tempgroup",
        "type": "Microsoft.ApiManagement/service/groups",
        "name": "tempgroup",
        "properties": {"displayName": "temp group", "type": "custom"},
    },
}

# ApiManagementCreateGroupExternal.json: request and the 201/200 answers (the same body).
CREATE_GROUP_EXTERNAL = {
    "groupId": "aadGroup",
    "parameters": {
        "properties": {
            "displayName": "NewGroup (samiraad.onmicrosoft.com)",
            "description": "new group to test",
            "type": "external",
            "externalId": "aad://samiraad.onmicrosoft.com/groups/83cf2753-5831-4675-bc0e-2f8dc067c58d",
        }
    },
    "response": {
        "id": SERVICE + "/groups/aadGroup",
        "type": "Microsoft.ApiManagement/service/groups",
        "name": "aadGroup",
        "properties": {
            "displayName": "NewGroup (samiraad.onmicrosoft.com)",
            "description": "new group to test",
            "type": "external",
            "externalId": "aad://samiraad.onmicrosoft.com/groups/83cf2753-5831-4675-bc0e-2f8dc067c58d",
        },
    },
}

# ApiManagementGetGroup.json: the 200 answer.
GET_GROUP: dict[str, Any] = {
    "id": SERVICE + "/groups/59306a29e4bbd510dc24e5f9",
    "type": "Microsoft.ApiManagement/service/groups",
    "name": "59306a29e4bbd510dc24e5f9",
    "properties": {
        "displayName": "AwesomeGroup (samiraad.onmicrosoft.com)",
        "description": "awesome group of people",
        "builtIn": False,
        "type": "external",
        "externalId": "aad://samiraad.onmicrosoft.com/groups/3773adf4-032e-4d25-9988-eaff9ca72eca",
    },
}

# ApiManagementUpdateGroup.json: the 200 answer's fields (its displayName "tempgroup" does not follow
# from the request's "temp group", so only the field set and builtIn are compared).
UPDATE_GROUP_PROPERTIES = {"displayName", "description", "builtIn", "type", "externalId"}

# ApiManagementListUserGroups.json: the one entry (Developers, under its old-style hex id) and envelope.
LIST_USER_GROUPS_ENTRY_PROPERTIES = LIST_GROUPS_SYSTEM["developers"]

# ApiManagementCreateGroupUser.json: the 201/200 answer for user 59307d350af58404d8a26300.
CREATE_GROUP_USER: dict[str, Any] = {
    "id": SERVICE + "/users/59307d350af58404d8a26300",
    "type": "Microsoft.ApiManagement/service/groups/users",
    "name": "59307d350af58404d8a26300",
    "properties": {
        "firstName": "test",
        "lastName": "user",
        "email": "testuser1@live.com",
        "state": "active",
        "registrationDate": "2017-06-01T20:46:45.437Z",
        "groups": [],
        "identities": [],
    },
}

# ApiManagementListGroupUsers.json: the 200 answer. Its entry's id ends in "kjoshiarmTemplateUser1"
# while its name is "armTemplateUser1" (a slip in the sample), so the id is checked against the name.
LIST_GROUP_USERS: dict[str, Any] = {
    "value": [
        {
            "id": SERVICE + "/users/kjoshiarmTemplateUser1",
            "type": "Microsoft.ApiManagement/service/groups/users",
            "name": "armTemplateUser1",
            "properties": {
                "firstName": "user1",
                "lastName": "lastname1",
                "email": "user1@live.com",
                "state": "active",
                "registrationDate": "2017-05-31T18:54:41.447Z",
                "note": "note for user 1",
                "identities": [{"provider": "Basic", "id": "user1@live.com"}],
            },
        }
    ],
    "count": 1,
    "nextLink": "",
}

# ApiManagementListUsers.json: its first entry, the administrator (the sample's publisher e-mail is
# admin@live.com, which the env fixture passes as publisher_email).
ADMIN_USER = {
    "id": SERVICE + "/users/1",
    "type": "Microsoft.ApiManagement/service/users",
    "name": "1",
    "properties": {
        "firstName": "Administrator",
        "lastName": "",
        "email": "admin@live.com",
        "state": "active",
        "registrationDate": "2015-09-22T01:57:39.677Z",
        "identities": [{"provider": "Azure", "id": "admin@live.com"}],
    },
}


def test_list_groups_system_entries(env: Any) -> None:
    client, rg, svc, _ = env
    raw = Raw()
    groups = list(client.group.list_by_service(rg, svc, raw_response_hook=raw.hook()))
    assert [g.name for g in groups] == list(LIST_GROUPS_SYSTEM)
    assert set(raw.body) == {"value", "count", "nextLink"}
    assert (raw.body["count"], raw.body["nextLink"]) == (3, "")
    for entry in raw.body["value"]:
        gid = entry["name"]
        assert_matches(
            entry,
            {
                "id": f"{SERVICE}/groups/{gid}",
                "type": "Microsoft.ApiManagement/service/groups",
                "name": gid,
                "properties": LIST_GROUPS_SYSTEM[gid],
            },
        )


@pytest.mark.parametrize("s", [CREATE_GROUP, CREATE_GROUP_EXTERNAL], ids=["custom", "external"])
def test_create_group(env: Any, s: dict[str, Any]) -> None:
    client, rg, svc, _ = env
    raw = Raw()
    for status in (201, 200):
        client.group.create_or_update(
            rg,
            svc,
            s["groupId"],
            io.BytesIO(json.dumps(s["parameters"]).encode()),
            content_type="application/json",
            raw_response_hook=raw.hook(),
        )
        assert raw.status == status
        assert_matches(raw.body, s["response"])


def test_get_and_update_group(env: Any) -> None:
    client, rg, svc, _ = env
    props = GET_GROUP["properties"]
    client.group.create_or_update(
        rg,
        svc,
        GET_GROUP["name"],
        m.GroupCreateParameters(
            display_name=props["displayName"],
            description=props["description"],
            type=props["type"],
            external_id=props["externalId"],
        ),
    )
    raw = Raw()
    client.group.get(rg, svc, GET_GROUP["name"], raw_response_hook=raw.hook())
    assert_matches(raw.body, GET_GROUP)

    client.group.update(
        rg,
        svc,
        GET_GROUP["name"],
        "*",
        m.GroupUpdateParameters(display_name="temp group"),
        raw_response_hook=raw.hook(),
    )
    assert raw.status == 200
    assert set(raw.body["properties"]) == UPDATE_GROUP_PROPERTIES
    assert raw.body["properties"]["builtIn"] is False


def test_list_user_groups(env: Any) -> None:
    client, rg, svc, _ = env
    uid = "57681833a40f7eb6c49f6acf"  # ApiManagementListUserGroups.json's userId
    client.user.create_or_update(
        rg, svc, uid, m.UserCreateParameters(email="groups@example.com", first_name="foo", last_name="bar")
    )
    raw = Raw()
    list(client.user_group.list(rg, svc, uid, raw_response_hook=raw.hook()))
    assert_matches(
        raw.body,
        {
            "value": [
                {
                    "id": f"{SERVICE}/users/{uid}/groups/developers",
                    "type": "Microsoft.ApiManagement/service/users/groups",
                    "name": "developers",
                    "properties": LIST_USER_GROUPS_ENTRY_PROPERTIES,
                }
            ],
            "count": 1,
            "nextLink": "",
        },
    )


def test_create_group_user(env: Any) -> None:
    client, rg, svc, _ = env
    props = CREATE_GROUP_USER["properties"]
    client.group.create_or_update(rg, svc, "tempgroup", m.GroupCreateParameters(display_name="temp group"))
    client.user.create_or_update(
        rg,
        svc,
        CREATE_GROUP_USER["name"],
        m.UserCreateParameters(email=props["email"], first_name=props["firstName"], last_name=props["lastName"]),
    )
    raw = Raw()
    for status in (201, 200):
        client.group_user.create(rg, svc, "tempgroup", CREATE_GROUP_USER["name"], raw_response_hook=raw.hook())
        assert raw.status == status
        # The sample's user has no identities; one created with an e-mail has its Basic identity.
        assert_matches(raw.body, CREATE_GROUP_USER, ignore=frozenset({"identities"}))


def test_list_group_users(env: Any) -> None:
    client, rg, svc, _ = env
    expected = LIST_GROUP_USERS["value"][0]
    props, uid = expected["properties"], expected["name"]
    client.group.create_or_update(rg, svc, "57d2ef278aa04f0888cba3f3", m.GroupCreateParameters(display_name="G"))
    client.user.create_or_update(
        rg,
        svc,
        uid,
        m.UserCreateParameters(
            email=props["email"], first_name=props["firstName"], last_name=props["lastName"], note=props["note"]
        ),
    )
    client.group_user.create(rg, svc, "57d2ef278aa04f0888cba3f3", uid)
    raw = Raw()
    list(client.group_user.list(rg, svc, "57d2ef278aa04f0888cba3f3", raw_response_hook=raw.hook()))
    assert_matches(raw.body, LIST_GROUP_USERS, ignore=frozenset({"id"}))
    assert raw.body["value"][0]["id"] == f"{SERVICE}/users/{uid}"


def test_administrator_user(env: Any) -> None:
    client, rg, svc, _ = env
    raw = Raw()
    client.user.get(rg, svc, "1", raw_response_hook=raw.hook())
    assert_matches(raw.body, ADMIN_USER)
