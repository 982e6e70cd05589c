"""The gateway enforces the product policy the app stored, and reports count what happened."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
import requests
from azure.mgmt.apimanagement import models as m

from tests.emulators.apim.conftest import Apim, ManualClock, pages, policy, text

KEY = "Ocp-Apim-Subscription-Key"
INVALID_KEY = (
    "Access denied due to invalid subscription key. Make sure to provide a valid key for an active subscription."
)
MISSING_KEY = (
    "Access denied due to missing subscription key. Make sure to include subscription key when making "
    "requests to an API."
)


def call(apim: Apim, key: str | None, path: str = "/echo", **kwargs: Any) -> requests.Response:
    headers = {KEY: key} if key is not None else {}
    return requests.get(apim.emu.gateway_url + path, headers=headers, timeout=10, **kwargs)


def window(start: datetime, end: datetime) -> str:
    fmt = "%Y-%m-%dT%H:%M:%S"
    return f"timestamp ge datetime'{start.strftime(fmt)}' and timestamp le datetime'{end.strftime(fmt)}'"


def report(apim: Apim, start: datetime, end: datetime) -> dict[str, m.ReportRecordContract]:
    records = apim.client.reports.list_by_subscription(apim.rg, apim.svc, filter=window(start, end))
    return {text(r.subscription_id): r for r in records}


@pytest.fixture
def timed(apim: Apim, clock: ManualClock) -> Apim:
    apim.emu.set_clock(clock)
    apim.user("u")
    return apim


def test_quota_lets_exactly_n_through_per_period(timed: Apim, clock: ManualClock) -> None:
    # `quota` windows start at the subscription's start: "The start of each period is calculated
    # relative to the start time of the subscription." The clock is 12:00; the subscription starts 12:07.
    timed.product("free", policy('<quota calls="5" renewal-period="3600" />'))
    clock.advance(minutes=7)
    timed.subscription("s1", "free", "u")
    key = timed.key("s1")
    clock.advance(minutes=10)
    statuses = [call(timed, key).status_code for _ in range(7)]
    assert statuses == [200] * 5 + [403] * 2
    blocked = call(timed, key)
    assert blocked.headers["Retry-After"] == str(50 * 60)  # until 13:07
    assert blocked.json() == {
        "statusCode": 403,
        "message": "Out of call volume quota. Quota will be replenished in 00:50:00.",
    }

    clock.advance(minutes=49)  # 13:06, still the first period
    assert call(timed, key).status_code == 403
    clock.advance(minutes=1)  # 13:07, a new period
    assert [call(timed, key).status_code for _ in range(6)] == [200] * 5 + [403]


def test_quota_by_key_counts_each_subscription_separately(timed: Apim) -> None:
    timed.product(
        "free", policy('<quota-by-key calls="2" renewal-period="300" counter-key="@(context.Subscription.Id)" />')
    )
    timed.subscription("a", "free", "u")
    timed.subscription("b", "free", "u")
    a, b = timed.key("a"), timed.key("b")
    assert [call(timed, a).status_code for _ in range(3)] == [200, 200, 403]
    assert [call(timed, b).status_code for _ in range(3)] == [200, 200, 403]


def test_rate_limit_lets_r_per_minute_then_429(timed: Apim, clock: ManualClock) -> None:
    timed.product("dev", policy('<rate-limit calls="3" renewal-period="60" />'))
    timed.subscription("s1", "dev", "u")
    key = timed.key("s1")
    assert [call(timed, key).status_code for _ in range(3)] == [200, 200, 200]
    limited = call(timed, key)
    assert limited.status_code == 429
    assert limited.headers["Retry-After"] == "60"
    clock.advance(seconds=30)
    assert call(timed, key).headers["Retry-After"] == "30"
    clock.advance(seconds=30)  # the first three calls have left the one-minute window
    assert [call(timed, key).status_code for _ in range(4)] == [200, 200, 200, 429]


def test_rate_limit_by_key_with_subscription_expression(timed: Apim) -> None:
    timed.product(
        "dev",
        policy('<rate-limit-by-key calls="1" renewal-period="60" counter-key="@(context.Subscription.Id)" />'),
    )
    timed.subscription("a", "dev", "u")
    timed.subscription("b", "dev", "u")
    assert [call(timed, timed.key("a")).status_code for _ in range(2)] == [200, 429]
    assert call(timed, timed.key("b")).status_code == 200


def test_a_policy_outside_inbound_does_not_limit(timed: Apim) -> None:
    """The gateway reads what the app stored: a limit in the wrong section is not enforced."""
    xml = (
        '<policies><inbound><base /></inbound><outbound><quota calls="1" renewal-period="300" /></outbound></policies>'
    )
    timed.product("oops", xml)
    timed.subscription("s1", "oops", "u")
    key = timed.key("s1")
    assert [call(timed, key).status_code for _ in range(3)] == [200, 200, 200]


def test_product_without_policy_has_no_limits(timed: Apim) -> None:
    timed.product("open")
    timed.subscription("s1", "open", "u")
    key = timed.key("s1")
    assert {call(timed, key).status_code for _ in range(20)} == {200}


def test_keys_and_subscription_states(timed: Apim) -> None:
    timed.product("open")
    timed.subscription("s1", "open", "u")
    key = timed.key("s1")
    assert call(timed, None).json() == {"statusCode": 401, "message": MISSING_KEY}
    assert call(timed, "0" * 32).json() == {"statusCode": 401, "message": INVALID_KEY}
    assert requests.get(f"{timed.emu.gateway_url}/echo?subscription-key={key}", timeout=10).status_code == 200

    # A key of a subscription that is not active is an invalid key: 401, as for an unknown key.
    timed.client.subscription.update(timed.rg, timed.svc, "s1", "*", m.SubscriptionUpdateParameters(state="suspended"))
    suspended = call(timed, key)
    assert (suspended.status_code, suspended.json()["message"]) == (401, INVALID_KEY)
    timed.client.subscription.update(timed.rg, timed.svc, "s1", "*", m.SubscriptionUpdateParameters(state="active"))
    assert call(timed, key).status_code == 200

    timed.subscription("pending", "open", "u", state="submitted")
    assert call(timed, timed.key("pending")).status_code == 401
    old = key
    timed.client.subscription.regenerate_primary_key(timed.rg, timed.svc, "s1")
    assert call(timed, old).status_code == 401


def test_reports_count_outcomes(timed: Apim, clock: ManualClock) -> None:
    timed.product("free", policy('<quota calls="3" renewal-period="3600" />'))
    timed.subscription("s1", "free", "u")
    timed.subscription("idle", "free", "u")
    key = timed.key("s1")
    start = clock()
    for _ in range(2):
        assert call(timed, key).status_code == 200
    assert call(timed, key, "/echo/status/500").status_code == 500  # third call: within quota, backend fails
    assert call(timed, key).status_code == 403  # over quota: blocked
    assert call(timed, key).status_code == 403
    clock.advance(hours=1)
    assert call(timed, key, "/echo/status/404").status_code == 404  # new period; backend 404 is "other" in APIM
    assert call(timed, key, "/echo/status/400").status_code == 400  # 400 is "failed"

    rows = report(timed, start, clock())
    assert list(rows) == ["/subscriptions/s1"]  # the idle subscription has no row
    row = rows["/subscriptions/s1"]
    assert (row.call_count_success, row.call_count_blocked, row.call_count_failed, row.call_count_other) == (
        2,
        2,
        2,
        1,
    )
    assert row.call_count_total == 7
    assert row.product_id == "/products/free"
    assert row.user_id == "/users/u"

    first_hour = report(timed, start, start + timedelta(minutes=59))["/subscriptions/s1"]
    assert first_hour.call_count_total == 5


def test_report_lag(timed: Apim, clock: ManualClock) -> None:
    timed.emu.report_lag_seconds = 120
    timed.product("open")
    timed.subscription("s1", "open", "u")
    start = clock()
    assert call(timed, timed.key("s1")).status_code == 200
    horizon = start + timedelta(hours=1)
    assert report(timed, start, horizon) == {}
    clock.advance(seconds=119)
    assert report(timed, start, horizon) == {}
    clock.advance(seconds=1)
    assert report(timed, start, horizon)["/subscriptions/s1"].call_count_success == 1


def test_bulk_usage_and_control_endpoint(timed: Apim, clock: ManualClock) -> None:
    timed.product("open")
    timed.subscription("s1", "open", "u")
    at = clock() - timedelta(days=2)
    timed.emu.record_usage("s1", 1_000_000, at=at)
    timed.emu.record_usage("s1", 7, at=at, outcome="blocked")
    posted = requests.post(
        f"{timed.emu.gateway_url}/_emulator/usage",
        json={"records": [{"subscriptionId": "s1", "calls": 5, "at": (at + timedelta(days=1)).isoformat()}]},
        timeout=10,
    )
    assert posted.status_code == 200
    bad = requests.post(
        f"{timed.emu.gateway_url}/_emulator/usage", json={"subscriptionId": "nope", "calls": 1}, timeout=10
    )
    assert bad.status_code == 400
    assert "nope" in bad.json()["error"]["message"]

    day = report(timed, at - timedelta(hours=1), at + timedelta(hours=1))["/subscriptions/s1"]
    assert (day.call_count_success, day.call_count_blocked, day.call_count_total) == (1_000_000, 7, 1_000_007)
    both = report(timed, at - timedelta(hours=1), clock())["/subscriptions/s1"]
    assert both.call_count_success == 1_000_005
    with pytest.raises(ValueError, match="outcome"):
        timed.emu.record_usage("s1", 1, at=at, outcome="great")


def test_report_filter_by_subscription(timed: Apim, clock: ManualClock) -> None:
    timed.product("open")
    for sid in ("a", "b"):
        timed.subscription(sid, "open", "u")
        timed.emu.record_usage(sid, 3, at=clock())
    records = list(
        timed.client.reports.list_by_subscription(
            timed.rg,
            timed.svc,
            filter=window(clock() - timedelta(minutes=1), clock()) + " and subscriptionId eq 'b'",
        )
    )
    assert [r.subscription_id for r in records] == ["/subscriptions/b"]
    products = list(
        timed.client.reports.list_by_product(
            timed.rg, timed.svc, filter=window(clock() - timedelta(minutes=1), clock())
        )
    )
    assert [(text(p.product_id), p.call_count_success) for p in products] == [("/products/open", 6)]


def test_reports_page_through_many_subscriptions(timed: Apim, clock: ManualClock) -> None:
    total = 20_000
    timed.product("open")
    sids = [f"sub-{i:06d}" for i in range(total)]
    timed.emu.bulk_create_subscriptions(sids, product_id="open", owner_id="u")
    for i, sid in enumerate(sids):
        if i % 4:  # every fourth subscription has no usage and must not appear
            timed.emu.record_usage(sid, i, at=clock() - timedelta(hours=1))
    sizes: list[int] = []
    seen: dict[str | None, int | None] = {}
    request_filter = window(clock() - timedelta(days=1), clock())
    pager = timed.client.reports.list_by_subscription(timed.rg, timed.svc, filter=request_filter, top=5_000)
    for rows in pages(pager):
        sizes.append(len(rows))
        seen.update({r.subscription_id: r.call_count_success for r in rows})
    expected = {f"/subscriptions/sub-{i:06d}": i for i in range(total) if i % 4}
    assert seen == expected
    assert sizes == [5_000, 5_000, 5_000]  # 15,000 subscriptions with usage, three full pages


# ---- routing to APIs and the scope of keys ------------------------------------------------------------
def test_requests_go_to_the_api_with_the_longest_matching_path(timed: Apim) -> None:
    timed.api("shop")
    timed.api("orders", "shop/orders")
    timed.product("p", apis=("shop", "orders"))
    timed.subscription("s1", "p", "u")
    key = timed.key("s1")
    assert call(timed, key, "/shop").json()["api"] == "shop"
    assert call(timed, key, "/shop/items/1").json()["api"] == "shop"
    assert call(timed, key, "/shop/orders/7").json()["api"] == "orders"
    assert call(timed, key, "/SHOP/Orders").json()["api"] == "orders"  # paths match whatever their case
    # Whole segments only, and no API at all: APIM's OperationNotFound, with or without a key.
    for path, key_sent in (("/shopping", key), ("/nowhere", key), ("/nowhere", None)):
        missing = call(timed, key_sent, path)
        assert (missing.status_code, missing.json()) == (404, {"statusCode": 404, "message": "Resource not found"})


def test_a_product_key_reaches_only_the_products_apis(timed: Apim, clock: ManualClock) -> None:
    timed.product("p", apis=("echo",))
    timed.product("other", apis=("secret",))
    timed.subscription("s1", "p", "u")
    key = timed.key("s1")
    start = clock()
    assert call(timed, key, "/echo").status_code == 200
    refused = call(timed, key, "/secret")
    assert (refused.status_code, refused.json()["message"]) == (401, INVALID_KEY)
    # Unlinking the API takes effect on the next call; linking it again restores access.
    timed.client.product_api.delete(timed.rg, timed.svc, "p", "echo")
    assert call(timed, key, "/echo").status_code == 401
    timed.client.product_api.create_or_update(timed.rg, timed.svc, "p", "echo")
    assert call(timed, key, "/echo").status_code == 200
    row = report(timed, start, clock())["/subscriptions/s1"]
    assert (row.call_count_success, row.call_count_blocked) == (2, 2)  # refused keys count as blocked


def test_suspended_and_cancelled_keys_are_refused_and_reported_as_blocked(timed: Apim, clock: ManualClock) -> None:
    timed.product("p")
    timed.subscription("s1", "p", "u")
    key = timed.key("s1")
    start = clock()
    for state in ("suspended", "cancelled"):
        timed.client.subscription.update(timed.rg, timed.svc, "s1", "*", m.SubscriptionUpdateParameters(state=state))
        answer = call(timed, key)
        assert (answer.status_code, answer.json()) == (401, {"statusCode": 401, "message": INVALID_KEY})
    row = report(timed, start, clock())["/subscriptions/s1"]
    assert (row.call_count_blocked, row.call_count_total) == (2, 2)


def test_api_scoped_and_all_apis_keys_skip_product_policies(timed: Apim) -> None:
    timed.product("p", policy('<rate-limit calls="1" renewal-period="60" />'), apis=("echo", "other"))
    for sid, scope in (("one", "/apis/echo"), ("all", "/apis")):
        timed.client.subscription.create_or_update(
            timed.rg,
            timed.svc,
            sid,
            m.SubscriptionCreateParameters(owner_id="/users/u", scope=scope, display_name=sid, state="active"),
        )
    one, every = timed.key("one"), timed.key("all")
    assert [call(timed, one, "/echo").status_code for _ in range(3)] == [200, 200, 200]  # no product rate limit
    assert call(timed, one, "/other").status_code == 401  # another API
    assert [call(timed, every, p).status_code for p in ("/echo", "/other", "/echo")] == [200, 200, 200]
    assert call(timed, one, "/echo").json()["product"] is None


def test_calls_without_a_key_reach_only_apis_that_need_no_subscription(timed: Apim) -> None:
    timed.api("public", subscription_required=False)
    timed.api("free-api")
    timed.product("p", apis=("echo",))
    open_product = m.ProductContract(display_name="Open", state="published", subscription_required=False)
    timed.client.product.create_or_update(timed.rg, timed.svc, "open", open_product)
    timed.client.product_api.create_or_update(timed.rg, timed.svc, "open", "free-api")
    assert call(timed, None, "/public").status_code == 200
    assert call(timed, None, "/free-api").status_code == 200  # through the open product
    assert call(timed, None, "/echo").json() == {"statusCode": 401, "message": MISSING_KEY}


def test_custom_subscription_key_names(timed: Apim) -> None:
    timed.api(
        "custom", subscription_key_parameter_names=m.SubscriptionKeyParameterNamesContract(header="X-Key", query="key")
    )
    timed.product("p", apis=("custom",))
    timed.subscription("s1", "p", "u")
    key = timed.key("s1")
    assert requests.get(f"{timed.emu.gateway_url}/custom", headers={"X-Key": key}, timeout=10).status_code == 200
    assert requests.get(f"{timed.emu.gateway_url}/custom?key={key}", timeout=10).status_code == 200
    assert call(timed, key, "/custom").status_code == 401  # the default header is not read for this API


def test_a_scope_change_keeps_the_keys_and_the_gateway_applies_the_new_products_policy(timed: Apim) -> None:
    """PATCH `scope` (SubscriptionUpdateParameters: "Scope like /products/{productId}"): a plan change."""
    timed.product("small", policy('<rate-limit calls="2" renewal-period="60" />'))
    timed.product("large", policy('<rate-limit calls="5" renewal-period="60" />'))
    timed.subscription("s1", "small", "u")
    key = timed.key("s1")
    secondary = timed.client.subscription.list_secrets(timed.rg, timed.svc, "s1").secondary_key
    assert [call(timed, key).status_code for _ in range(3)] == [200, 200, 429]
    moved = timed.client.subscription.update(
        timed.rg, timed.svc, "s1", "*", m.SubscriptionUpdateParameters(scope="/products/large")
    )
    assert text(moved.scope).endswith("/products/large")
    assert moved.state == "active"
    secrets = timed.client.subscription.list_secrets(timed.rg, timed.svc, "s1")
    assert (secrets.primary_key, secrets.secondary_key) == (key, secondary)
    # The large product's own counter: five calls a minute from the change on.
    assert [call(timed, key).status_code for _ in range(6)] == [200] * 5 + [429]

    listed = [s.name for s in timed.client.product_subscriptions.list(timed.rg, timed.svc, "large")]
    assert listed == ["s1"]
    with pytest.raises(Exception, match="does not exist"):
        timed.client.subscription.update(
            timed.rg, timed.svc, "s1", "*", m.SubscriptionUpdateParameters(scope="/products/none")
        )
