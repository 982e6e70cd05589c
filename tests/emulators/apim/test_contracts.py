"""Replays Microsoft's published request/response samples (../shared/contracts/apim) through the
real client and compares the emulator's raw JSON answers with them field for field.

Documented differences (see emulators/apim/README.md): timestamps are the emulator's own; a stored
policy is returned as sent (APIM rewrites named values); reports omit zero-call rows and do not
measure bandwidth or latency.
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
from azure.mgmt.apimanagement import ApiManagementClient
from azure.mgmt.apimanagement import models as m

from emulators.apim.server import ApimEmulator
from tests.emulators.apim.conftest import ManualClock

CONTRACTS = Path(__file__).resolve().parents[3].parent / "shared" / "contracts" / "apim"
TIMESTAMPS = {"createdDate", "registrationDate", "startDate"}
NOT_MEASURED = {"bandwidth", "apiTimeAvg", "apiTimeMin", "apiTimeMax", "serviceTimeAvg", "serviceTimeMin",
                "serviceTimeMax"}  # fmt: skip


def sample(name: str) -> dict[str, Any]:
    path = CONTRACTS / f"{name}.json"
    if not path.exists():
        if os.environ.get("CI"):  # CI has shared/ beside the checkout: a missing sample is an error there
            pytest.fail(f"contract sample {path} is not present")
        pytest.skip(f"contract sample {path} is not present")
    return json.loads(path.read_text())


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
    with ApimEmulator(subscription_id="00000000-0000-0000-0000-000000000000", resource_group="rg1",
                      service_name="apimService1", clock=clock) as emu:  # fmt: skip
        client = emu.management_client(retry_total=0)
        yield client, "rg1", "apimService1", emu
        client.close()


def test_create_user(env: Any) -> None:
    client, rg, svc, _ = env
    s = sample("ApiManagementCreateUser")
    p, raw = s["parameters"], Raw()
    for status in ("201", "200"):  # first create, then update in place
        client.user.create_or_update(rg, svc, p["userId"], body(p), content_type="application/json",
                                     raw_response_hook=raw.hook())  # fmt: skip
        assert raw.status == int(status)
        assert_matches(raw.body, s["responses"][status]["body"])


def test_get_user(env: Any) -> None:
    client, rg, svc, _ = env
    s = sample("ApiManagementGetUser")
    expected = s["responses"]["200"]["body"]
    props = expected["properties"]
    client.user.create_or_update(rg, svc, s["parameters"]["userId"], m.UserCreateParameters(
        email=props["email"], first_name=props["firstName"], last_name=props["lastName"],
        identities=[m.UserIdentityContract(provider=i["provider"], id=i["id"]) for i in props["identities"]],
    ))  # fmt: skip
    raw = Raw()
    client.user.get(rg, svc, s["parameters"]["userId"], raw_response_hook=raw.hook())
    assert_matches(raw.body, expected)


def test_create_product(env: Any) -> None:
    client, rg, svc, _ = env
    s = sample("ApiManagementCreateProduct")
    p, raw = s["parameters"], Raw()
    for status in ("201", "200"):
        client.product.create_or_update(rg, svc, p["productId"], body(p), content_type="application/json",
                                        raw_response_hook=raw.hook())  # fmt: skip
        assert raw.status == int(status)
        assert_matches(raw.body, s["responses"][status]["body"])


def test_create_product_policy(env: Any) -> None:
    client, rg, svc, _ = env
    s = sample("ApiManagementCreateProductPolicy")
    p, raw = s["parameters"], Raw()
    client.product.create_or_update(rg, svc, p["productId"], m.ProductContract(display_name="P"))
    for status in ("201", "200"):
        client.product_policy.create_or_update(
            rg, svc, p["productId"], p["policyId"], body(p), content_type="application/json",
            raw_response_hook=raw.hook(),
        )  # fmt: skip
        assert raw.status == int(status)
        # APIM rewrites {{named values}} to their ids on save; the emulator keeps the text it was sent.
        assert_matches(raw.body, s["responses"][status]["body"], ignore=frozenset({"value"}))
        assert raw.body["properties"]["value"] == p["parameters"]["properties"]["value"]


def _user_and_product(client: ApiManagementClient, rg: str, svc: str, owner_id: str, scope: str) -> None:
    uid, pid = owner_id.rsplit("/", 1)[1], scope.rsplit("/", 1)[1]
    client.user.create_or_update(rg, svc, uid, m.UserCreateParameters(
        email=f"{uid}@example.com", first_name="foo", last_name="bar"))  # fmt: skip
    client.product.create_or_update(rg, svc, pid, m.ProductContract(display_name="P"))


def test_create_subscription(env: Any) -> None:
    client, rg, svc, _ = env
    s = sample("ApiManagementCreateSubscription")
    p, raw = s["parameters"], Raw()
    props = p["parameters"]["properties"]
    _user_and_product(client, rg, svc, props["ownerId"], props["scope"])
    for status in ("201", "200"):
        client.subscription.create_or_update(rg, svc, p["sid"], body(p), content_type="application/json",
                                             raw_response_hook=raw.hook())  # fmt: skip
        assert raw.status == int(status)
        assert_matches(raw.body, s["responses"][status]["body"])


def test_get_and_update_subscription(env: Any) -> None:
    client, rg, svc, _ = env
    get, update = sample("ApiManagementGetSubscription"), sample("ApiManagementUpdateSubscription")
    expected = get["responses"]["200"]["body"]["properties"]
    _user_and_product(client, rg, svc, expected["ownerId"], expected["scope"])
    for sid, name in ((get["parameters"]["sid"], expected["displayName"]), (update["parameters"]["sid"], "old")):
        client.subscription.create_or_update(rg, svc, sid, m.SubscriptionCreateParameters(
            owner_id=expected["ownerId"], scope=expected["scope"], display_name=name))  # fmt: skip
    raw = Raw()
    client.subscription.get(rg, svc, get["parameters"]["sid"], raw_response_hook=raw.hook())
    assert_matches(raw.body, get["responses"]["200"]["body"])

    p = update["parameters"]
    client.subscription.update(rg, svc, p["sid"], p["If-Match"], body(p), content_type="application/json",
                               raw_response_hook=raw.hook())  # fmt: skip
    assert raw.status == 200
    assert_matches(raw.body, update["responses"]["200"]["body"])


def test_user_token(env: Any) -> None:
    client, rg, svc, _ = env
    s = sample("ApiManagementUserToken")
    p, raw = s["parameters"], Raw()
    client.user.create_or_update(rg, svc, p["userId"], m.UserCreateParameters(
        email="token@example.com", first_name="foo", last_name="bar"))  # fmt: skip
    client.user.get_shared_access_token(rg, svc, p["userId"], body(p), content_type="application/json",
                                        raw_response_hook=raw.hook())  # fmt: skip
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
            client.user.create_or_update(rg, svc, uid, m.UserCreateParameters(
                email=f"u{uid}@example.com", first_name="foo", last_name="bar"))  # fmt: skip
        client.product.create_or_update(rg, svc, pid, m.ProductContract(display_name=pid))
        client.subscription.create_or_update(rg, svc, sid, m.SubscriptionCreateParameters(
            owner_id=f"/users/{uid}", scope=f"/products/{pid}", display_name=sid, state="active"))  # fmt: skip
    at = datetime(2017, 6, 2, 10, 0, tzinfo=UTC)
    busy_sid = busy["subscriptionId"].rsplit("/", 1)[1]
    for outcome in ("success", "blocked", "failed", "other"):
        emu.record_usage(busy_sid, busy[f"callCount{outcome.title()}"], at=at, outcome=outcome)

    raw = Raw()
    records = list(client.reports.list_by_subscription(rg, svc, filter=s["parameters"]["$filter"],
                                                       raw_response_hook=raw.hook()))  # fmt: skip
    assert [r.subscription_id for r in records] == [busy["subscriptionId"]]
    assert set(raw.body) == set(expected)
    assert raw.body["nextLink"] == expected["nextLink"]
    # Zero-call rows, which the sample shows, are omitted here (documented), so count differs.
    assert raw.body["count"] == 1
    assert_matches(raw.body["value"], [busy], "value", ignore=frozenset(NOT_MEASURED))
