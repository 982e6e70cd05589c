"""APIM product policies generated from the revenue model.

We use the product-scope `rate-limit` and `quota` policies rather than their by-key forms: at
product scope both already count per subscription (what the price list promises), they work on
every APIM tier including Consumption (where `quota-by-key` does not), and they need no policy
expression. `rate-limit` comes first so that calls refused for rate never consume quota.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

from billing.models import Product

POLICY_SECTIONS = ("inbound", "backend", "outbound", "on-error")
RATE_LIMIT_WINDOW_SECONDS = 60


def product_policy_xml(product: Product) -> str:
    """The `<policies>` document for the product: deterministic, with `<base />` in every section."""
    root = ET.Element("policies")
    for section_name in POLICY_SECTIONS:
        section = ET.SubElement(root, section_name)
        ET.SubElement(section, "base")
        if section_name != "inbound":
            continue
        if product.rate_limit is not None:
            ET.SubElement(
                section,
                "rate-limit",
                {
                    "calls": str(product.rate_limit.calls_per_minute),
                    "renewal-period": str(RATE_LIMIT_WINDOW_SECONDS),
                },
            )
        if product.quota is not None:
            ET.SubElement(
                section,
                "quota",
                {"calls": str(product.quota.calls), "renewal-period": str(product.quota.renewal_period_seconds)},
            )
    ET.indent(root, space="  ")
    return ET.tostring(root, encoding="unicode", short_empty_elements=True) + "\n"
