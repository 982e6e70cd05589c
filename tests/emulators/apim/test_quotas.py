"""quota and quota-by-key as documented, the quota counters API, the expressions the app generates."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import requests
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.mgmt.apimanagement import models as m

from emulators.apim.expressions import Context, ExpressionError, evaluate_condition, evaluate_key, parse
from emulators.apim.server import ApimEmulator
from tests.emulators.apim.conftest import Apim, ManualClock, arm_error, policy

KEY = "Ocp-Apim-Subscription-Key"
# What billing/policy.py generates for a product that bills successful calls only.
BILLABLE = (
    "@((context.Response.StatusCode <= 301 || context.Response.StatusCode == 304 || "
    "context.Response.StatusCode == 307))"
)


def by_key(calls: int, renewal: str = "0", condition: str | None = BILLABLE, **extra: str) -> str:
    attrs = {"calls": str(calls), "renewal-period": renewal, "counter-key": "@(context.Subscription.Id)", **extra}
    if condition is not None:
        attrs["increment-condition"] = condition
    text = " ".join(
        f'{k}="{v.replace("&", "&amp;").replace("<", "&lt;").replace(chr(34), "&quot;")}"' for k, v in attrs.items()
    )
    return policy(f"<quota-by-key {text} />")


def call(apim: Apim, key: str, path: str = "/echo") -> requests.Response:
    return requests.get(apim.emu.gateway_url + path, headers={KEY: key}, timeout=10)


@pytest.fixture
def timed(apim: Apim, clock: ManualClock) -> Apim:
    apim.emu.set_clock(clock)
    apim.user("u")
    return apim


def counters(collection: m.QuotaCounterCollection) -> list[m.QuotaCounterContract]:
    assert collection.value is not None
    return collection.value


def counted(counter: m.QuotaCounterContract) -> m.QuotaCounterValueContractProperties:
    assert counter.value is not None
    return counter.value


def subscribe(apim: Apim, pid: str, policy_xml: str, sid: str = "s1") -> str:
    apim.product(pid, policy_xml)
    apim.subscription(sid, pid, "u")
    return apim.key(sid)


# ---- quota-by-key ----------------------------------------------------------------------------------
def test_increment_condition_counts_only_billable_responses(timed: Apim) -> None:
    key = subscribe(timed, "paid", by_key(2))
    assert call(timed, key, "/echo/status/500").status_code == 500  # not counted
    assert call(timed, key, "/echo/status/404").status_code == 404  # not counted
    assert [call(timed, key).status_code for _ in range(3)] == [200, 200, 403]
    listed = timed.client.quota_by_counter_keys.list_by_service(timed.rg, timed.svc, "s1")
    assert [counted(c).calls_count for c in counters(listed)] == [2]


def test_lifetime_quota_never_renews_until_the_counter_is_reset(timed: Apim, clock: ManualClock) -> None:
    key = subscribe(timed, "paid", by_key(1))
    assert [call(timed, key).status_code for _ in range(2)] == [200, 403]
    clock.advance(days=400)  # "When renewal-period is set to 0, the period is set to infinite."
    blocked = call(timed, key)
    assert blocked.status_code == 403
    assert blocked.json()["message"].startswith("Out of call volume quota.")
    # The app resets the counter when Stripe starts a new period: QuotaByCounterKeys_Update.
    reset = timed.client.quota_by_counter_keys.update(
        timed.rg, timed.svc, "s1", m.QuotaCounterValueUpdateContract(calls_count=0, kb_transferred=0)
    )
    assert [(c.counter_key, counted(c).calls_count) for c in counters(reset)] == [("s1", 0)]
    assert [call(timed, key).status_code for _ in range(2)] == [200, 403]


def test_renewing_quota_by_key_windows_follow_first_period_start(timed: Apim, clock: ManualClock) -> None:
    # The clock is 2025-03-10 12:00; monthly periods start on the 15th at 09:00.
    xml = by_key(2, "P0Y1M0DT0H0M0S", condition=None, **{"first-period-start": "2025-01-15T09:00:00Z"})
    key = subscribe(timed, "monthly", xml)
    assert [call(timed, key).status_code for _ in range(3)] == [200, 200, 403]
    assert int(call(timed, key).headers["Retry-After"]) == int(
        (datetime(2025, 3, 15, 9, tzinfo=UTC) - clock()).total_seconds()
    )
    counter = counters(timed.client.quota_by_counter_keys.list_by_service(timed.rg, timed.svc, "s1"))[0]
    assert counter.period_key == "1_P1M"  # the second month since 2025-01-15
    assert (counter.period_start_time, counter.period_end_time) == (
        datetime(2025, 2, 15, 9, tzinfo=UTC),
        datetime(2025, 3, 15, 9, tzinfo=UTC),
    )
    clock.current = datetime(2025, 3, 15, 9, tzinfo=UTC)
    assert call(timed, key).status_code == 200


def test_quota_by_key_counters_are_shared_by_key_across_products(timed: Apim) -> None:
    # "For each key value, a single counter is used for all scopes at which the policy is configured."
    shared = policy('<quota-by-key calls="3" renewal-period="3600" counter-key="team" />')
    a = subscribe(timed, "a", shared, "sa")
    b = subscribe(timed, "b", shared, "sb")
    assert [call(timed, k).status_code for k in (a, b, a, b)] == [200, 200, 200, 403]


@pytest.mark.parametrize(
    ("element", "why"),
    [
        ('<quota-by-key calls="5" renewal-period="60" counter-key="k" />', "minimum period is 300 seconds"),
        ('<quota calls="5" renewal-period="P0Y1M0DT0H0M0S" />', "must be a number of seconds"),
        ('<quota-by-key calls="5" renewal-period="300" />', "counter-key"),
        ('<quota-by-key renewal-period="300" counter-key="k" />', "calls and/or bandwidth"),
        ('<rate-limit calls="5" renewal-period="301" />', "1 to 300 seconds"),
    ],
)
def test_policies_apim_refuses_are_refused(apim: Apim, element: str, why: str) -> None:
    apim.product("p")
    with pytest.raises(HttpResponseError) as err:
        apim.client.product_policy.create_or_update(
            apim.rg, apim.svc, "p", "policy", m.PolicyContract(value=policy(element), format="xml")
        )
    assert err.value.status_code == 400
    assert why in str(err.value)


def test_an_expression_the_emulator_cannot_evaluate_fails_the_call(timed: Apim) -> None:
    unknown = "@(context.Request.Headers.GetValueOrDefault(&quot;x&quot;))"
    key = subscribe(timed, "p", policy(f'<quota-by-key calls="5" renewal-period="300" counter-key="{unknown}" />'))
    answer = call(timed, key)
    assert answer.status_code == 500
    assert "cannot" in answer.json()["message"] or "does not" in answer.json()["message"]


# ---- the quota counters API ------------------------------------------------------------------------------
def test_quota_counters_api_shapes_and_period_updates(timed: Apim) -> None:
    key = subscribe(timed, "p", by_key(10, "3600", condition=None))
    for _ in range(3):
        call(timed, key)
    raw: dict[str, object] = {}
    listed = timed.client.quota_by_counter_keys.list_by_service(
        timed.rg, timed.svc, "s1", raw_response_hook=lambda r: raw.update(r.http_response.json())
    )
    # ApiManagementGetQuotaCounterKeys.json: value[] of QuotaCounterContract, nextLink "".
    assert set(raw) == {"value", "count", "nextLink"}
    entry = raw["value"][0]  # type: ignore[index]
    assert set(entry) == {"counterKey", "periodKey", "periodStartTime", "periodEndTime", "value"}
    assert entry["periodStartTime"] == "2025-03-10T12:00:00Z"
    assert entry["periodEndTime"] == "2025-03-10T13:00:00Z"
    period = counters(listed)[0].period_key
    assert period.endswith("_PT1H")
    one = timed.client.quota_by_period_keys.get(timed.rg, timed.svc, "s1", period)
    assert (one.counter_key, counted(one).calls_count, counted(one).kb_transferred) == ("s1", 3, 0)
    updated = timed.client.quota_by_period_keys.update(
        timed.rg, timed.svc, "s1", period, m.QuotaCounterValueUpdateContract(calls_count=9)
    )
    assert counted(updated).calls_count == 9
    assert [call(timed, key).status_code for _ in range(2)] == [200, 403]


def test_unknown_counters_and_quota_counters_are_not_found(timed: Apim) -> None:
    # `quota` counts per subscription; only quota-by-key counters are reachable by counter key.
    key = subscribe(timed, "p", policy('<quota calls="5" renewal-period="3600" />'))
    assert call(timed, key).status_code == 200
    for name in ("s1", "nobody"):
        with pytest.raises(ResourceNotFoundError):
            timed.client.quota_by_counter_keys.list_by_service(timed.rg, timed.svc, name)
        with pytest.raises(ResourceNotFoundError):
            timed.client.quota_by_counter_keys.update(
                timed.rg, timed.svc, name, m.QuotaCounterValueUpdateContract(calls_count=0)
            )
    with pytest.raises(ResourceNotFoundError):
        timed.client.quota_by_period_keys.get(timed.rg, timed.svc, "s1", "0_PT1H")


# ---- tiers -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("tier", ["BasicV2", "StandardV2"])
def test_v2_tiers_refuse_quota_by_key_and_have_no_quota_counters(tier: str) -> None:
    with ApimEmulator(tier=tier) as emu:
        client = emu.management_client(retry_total=0)
        rg, svc = emu.resource_group, emu.service_name
        client.product.create_or_update(rg, svc, "p", m.ProductContract(display_name="P"))
        captured: dict[str, object] = {}
        with pytest.raises(HttpResponseError) as err:
            client.product_policy.create_or_update(
                rg,
                svc,
                "p",
                "policy",
                m.PolicyContract(value=by_key(5), format="xml"),
                raw_response_hook=lambda r: captured.update(r.http_response.json()),
            )
        assert err.value.status_code == 400
        detail = captured["error"]["details"][0]  # type: ignore[index]
        # The policy()'s <quota-by-key> starts on line 4 after four spaces: column 6 is where its name is.
        assert (
            detail["message"] == f"Error in element 'quota-by-key' on line 4, column 6: Policy is not allowed "
            f"in '{tier}' sku"
        )
        # `quota` and the rate limits are there on every tier.
        client.product_policy.create_or_update(
            rg,
            svc,
            "p",
            "policy",
            m.PolicyContract(
                value=policy('<rate-limit calls="5" renewal-period="60" />', '<quota calls="9" renewal-period="60" />'),
                format="xml",
            ),
        )
        with pytest.raises(HttpResponseError) as err:
            client.quota_by_counter_keys.list_by_service(rg, svc, "anything")
        assert err.value.status_code == 400
        assert arm_error(err).code == "MethodNotAllowedInPricingTier"
        assert arm_error(err).message == f"Method not allowed in {tier} pricing tier"
        assert client.api_management_service.get(rg, svc).sku.name == tier
        client.close()


# ---- expressions -------------------------------------------------------------------------------------------
def test_expressions_follow_csharp_rules() -> None:
    ctx = Context(subscription_id="sub-1", user_id="u", product_id="gold", status_code=304)
    assert evaluate_key("@(context.Subscription.Id)", ctx) == "sub-1"
    assert evaluate_key('@("b" + "a")', ctx) == "ba"  # the spec's own counter-key example
    assert evaluate_key('@(context.Product.Id + "-" + context.User.Id)', ctx) == "gold-u"
    assert evaluate_key("literal-key", ctx) == "literal-key"
    assert evaluate_key("@{ return context.Response.StatusCode.ToString(); }", ctx) == "304"
    assert evaluate_condition(BILLABLE, ctx) is True
    assert evaluate_condition("@(context.Response.StatusCode >= 200 && context.Response.StatusCode < 400)", ctx)
    assert evaluate_condition("@(!(1 + 2 * 3 == 9) ? true : false)", ctx) is True  # * before +, then ==
    assert evaluate_condition("@(7 / 2 == 3 && -7 % 3 == -1)", ctx) is True  # integer division, C# remainder
    assert evaluate_condition("true", ctx) is True
    for status, counted in ((200, True), (301, True), (302, False), (307, True), (400, False), (500, False)):
        assert evaluate_condition(BILLABLE, Context(status_code=status)) is counted


@pytest.mark.parametrize(
    "text",
    [
        "@(context.Subscription.Id)",  # no subscription: a null reference, as in APIM
        "@(context.Response.StatusCode == 200)",  # no response yet
        "@(context.Request.Body)",  # not provided by the emulator
        '@(1 < "a")',
        "@(1 ||)",
        "@(context.Api.Id.Trim())",
        "not an expression",
    ],
)
def test_expressions_the_emulator_cannot_evaluate(text: str) -> None:
    def run() -> object:
        if text.startswith("@"):
            return parse(text).evaluate(Context(api_id="a"))
        return evaluate_condition(text, Context())

    with pytest.raises(ExpressionError):
        run()


def test_quota_windows_count_from_the_subscriptions_start_not_from_activation_again(
    timed: Apim, clock: ManualClock
) -> None:
    key = subscribe(timed, "p", policy('<quota calls="1" renewal-period="86400" />'))
    assert call(timed, key).status_code == 200
    clock.advance(hours=5)
    timed.client.subscription.update(timed.rg, timed.svc, "s1", "*", m.SubscriptionUpdateParameters(state="suspended"))
    timed.client.subscription.update(timed.rg, timed.svc, "s1", "*", m.SubscriptionUpdateParameters(state="active"))
    blocked = call(timed, key)  # re-activation keeps startDate, so the day still runs from 12:00
    assert (blocked.status_code, blocked.headers["Retry-After"]) == (403, str(19 * 3600))
    clock.advance(hours=19)
    assert call(timed, key).status_code == 200
    assert timed.client.subscription.get(timed.rg, timed.svc, "s1").start_date == datetime(2025, 3, 10, 12, tzinfo=UTC)


def test_a_key_named_by_two_policies_is_incremented_once_per_request(timed: Apim) -> None:
    twice = policy(
        '<quota-by-key calls="3" renewal-period="300" counter-key="k" />',
        '<quota-by-key calls="3" renewal-period="300" counter-key="k" increment-condition="true" />',
    )
    key = subscribe(timed, "p", twice)
    assert [call(timed, key).status_code for _ in range(4)] == [200, 200, 200, 403]
