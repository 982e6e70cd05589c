"""Generated APIM policies parse, keep <base /> everywhere and carry the file's limits."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest

from billing.model_loader import DEFAULT_MODELS_PATH, load_models
from billing.policy import product_policy_xml

MODELS = load_models()
# Read the raw file independently of the models, so a mapping bug in the models shows up here.
RAW = {p["id"]: p for p in json.loads(DEFAULT_MODELS_PATH.read_text())["products"]}
MONTH_SECONDS = 30 * 24 * 3600


# What APIM counts as a successful call (ReportRecordContract.callCountSuccess), written here by hand.
SUCCESS = (
    "@((context.Response.StatusCode <= 301 || context.Response.StatusCode == 304 || "
    "context.Response.StatusCode == 307))"
)


@pytest.mark.parametrize("tier", ["Developer", "StandardV2"])
@pytest.mark.parametrize("product_id", sorted(RAW))
def test_policy_enforces_the_files_limits(product_id: str, tier: str) -> None:
    root = ET.fromstring(product_policy_xml(MODELS.product(product_id), tier))
    assert root.tag == "policies"
    assert [section.tag for section in root] == ["inbound", "backend", "outbound", "on-error"]
    for section in root:
        assert section[0].tag == "base", f"<base /> must come first in <{section.tag}>"
    inbound = root.find("inbound")
    assert inbound is not None
    raw = RAW[product_id]
    rate = inbound.find("rate-limit")
    if raw.get("rateLimit"):
        assert rate is not None
        assert rate.attrib == {"calls": str(raw["rateLimit"]["callsPerMinute"]), "renewal-period": "60"}
    else:
        assert rate is None
    quota = inbound.find("quota-by-key" if tier == "Developer" else "quota")
    if raw.get("quota"):
        assert quota is not None
        assert raw["quota"]["period"] == "month"
        if tier == "Developer":  # classic: per subscription, billable calls only, the billing month
            paid = raw["pricingModel"] != "Free"
            assert quota.attrib == {
                "calls": str(raw["quota"]["calls"]),
                "renewal-period": "0" if paid else str(MONTH_SECONDS),
                "counter-key": "@(context.Subscription.Id)",
                "increment-condition": SUCCESS,
            }
        else:  # v2: no quota-by-key, so APIM's own 30-day window
            assert quota.attrib == {"calls": str(raw["quota"]["calls"]), "renewal-period": str(MONTH_SECONDS)}
    else:
        assert quota is None
    assert len(inbound) == 1 + (rate is not None) + (quota is not None)


def test_revenue_model_limits() -> None:
    """The limits the revenue model promises (not only what the file says)."""

    def limits(pid: str) -> tuple[str | None, str | None]:
        inbound = ET.fromstring(product_policy_xml(MODELS.product(pid))).find("inbound")
        assert inbound is not None
        rate, quota = inbound.find("rate-limit"), inbound.find("quota-by-key")
        return (rate.get("calls") if rate is not None else None, quota.get("calls") if quota is not None else None)

    assert limits("free") == (None, "100")
    assert limits("basic") == ("100", "50000")
    assert limits("standard") == ("100", None)  # the Microsoft sample wrongly allowed 200
    assert limits("enterprise") == ("3500", None)


def test_rate_limit_comes_before_quota_and_output_is_deterministic() -> None:
    basic = MODELS.product("basic")
    for tier, quota in (("Developer", "quota-by-key"), ("BasicV2", "quota")):
        inbound = ET.fromstring(product_policy_xml(basic, tier)).find("inbound")
        assert inbound is not None
        assert [child.tag for child in inbound] == ["base", "rate-limit", quota]
    assert product_policy_xml(basic) == product_policy_xml(load_models().product("basic"))


def test_a_product_that_bills_failed_calls_counts_them_in_its_quota() -> None:
    both = MODELS.product("basic").model_copy(update={"billable_outcomes": ("success", "failed")})
    inbound = ET.fromstring(product_policy_xml(both)).find("inbound")
    assert inbound is not None
    quota = inbound.find("quota-by-key")
    assert quota is not None
    assert quota.get("increment-condition") == SUCCESS[:-1] + (
        " || (context.Response.StatusCode == 400 || (context.Response.StatusCode >= 500 && "
        "context.Response.StatusCode < 600)))"
    )
