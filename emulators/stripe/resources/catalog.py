"""Products, prices, coupons and promotion codes."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from emulators.stripe import search
from emulators.stripe.routes import Request, route
from emulators.stripe.store import blank
from emulators.stripe.wire import (
    EXPAND,
    LIST,
    StripeError,
    arr,
    b,
    dec,
    enum,
    i,
    int_or,
    invalid,
    metadata,
    nullable,
    obj,
    s,
    validate,
)

# ---- products ----------------------------------------------------------------------------------
PRODUCT_FIELDS = {
    "name": s,
    "active": b,
    "description": nullable(s),
    "metadata": metadata,
    "images": arr(s),
    "marketing_features": arr(obj({"name": s})),
    "statement_descriptor": s,
    "tax_code": s,
    "unit_label": nullable(s),
    "url": nullable(s),
    "shippable": b,
    **EXPAND,
}


@route("POST", "/v1/products")
def create_product(req: Request) -> dict[str, Any]:
    p = validate(req.params, {**PRODUCT_FIELDS, "id": s}, ("name",))
    store = req.core.store
    if p.get("id") and store.maybe("product", p["id"]):
        raise StripeError(f"Product already exists: {p['id']}", code="resource_already_exists", param="id")
    now = req.core.now()
    product = blank("product")
    product.update(
        id=p.get("id") or store.new_id("prod"),
        active=p.get("active", True),
        created=now,
        updated=now,
        default_price=None,
        description=p.get("description"),
        images=p.get("images", []),
        marketing_features=p.get("marketing_features", []),
        metadata=p.get("metadata", {}),
        name=p["name"],
        package_dimensions=None,
        shippable=p.get("shippable"),
        statement_descriptor=p.get("statement_descriptor"),
        tax_code=p.get("tax_code"),
        unit_label=p.get("unit_label"),
        url=p.get("url"),
        type="service",
    )
    return store.put("product", product)


@route("GET", "/v1/products/{id}")
def get_product(req: Request) -> dict[str, Any]:
    validate(req.params, EXPAND)
    return req.core.store.get("product", req.args[0])


@route("POST", "/v1/products/{id}")
def update_product(req: Request) -> dict[str, Any]:
    p = validate(req.params, {**PRODUCT_FIELDS, "default_price": s})
    product = req.core.store.get("product", req.args[0])
    if "default_price" in p:
        req.core.store.get("price", p["default_price"], param="default_price")
    meta = p.pop("metadata", None)
    p.pop("expand", None)
    product.update(p, updated=req.core.now())
    if meta is not None:
        product["metadata"] = merge_metadata(product["metadata"], meta)
    return product


@route("DELETE", "/v1/products/{id}")
def delete_product(req: Request) -> dict[str, Any]:
    product = req.core.store.get("product", req.args[0])
    if any(p["product"] == product["id"] for p in req.core.store.all("price")):
        raise StripeError("This product cannot be deleted because it has one or more user-created prices.")
    product["_deleted"] = True
    return {"id": product["id"], "object": "product", "deleted": True}


@route("GET", "/v1/products")
def list_products(req: Request) -> dict[str, Any]:
    p = validate(req.params, {**LIST, "active": b, "ids": arr(s), "created": s, "url": s, "shippable": b})
    found = [
        x
        for x in req.core.store.all("product")
        if ("active" not in p or x["active"] == p["active"]) and ("ids" not in p or x["id"] in p["ids"])
    ]
    return req.core.page(found, p, "/v1/products")


@route("GET", "/v1/products/search")
def search_products(req: Request) -> dict[str, Any]:
    p = validate(req.params, {"query": s, "limit": i, "page": s, **EXPAND}, ("query",))
    clauses = search.parse(p["query"], {"name", "active", "description"})
    found = search.find(req.core, "product", clauses)
    return search.result(found, "/v1/products/search", p.get("limit", 10))


def merge_metadata(current: dict[str, str], update: dict[str, str]) -> dict[str, str]:
    """Stripe merges metadata updates; an empty value removes the key."""
    if not update:
        return {}
    merged = dict(current)
    for key, value in update.items():
        if value == "":
            merged.pop(key, None)
        else:
            merged[key] = value
    return merged


# ---- prices ------------------------------------------------------------------------------------
TIER = obj(
    {
        "up_to": int_or("inf"),
        "unit_amount": i,
        "unit_amount_decimal": dec,
        "flat_amount": i,
        "flat_amount_decimal": dec,
    },
    ("up_to",),
)
RECURRING = obj(
    {
        "interval": enum("day", "week", "month", "year"),
        "interval_count": i,
        "usage_type": enum("licensed", "metered"),
        "meter": s,
        "trial_period_days": i,
    },
    ("interval",),
)
PRICE_FIELDS = {
    "currency": s,
    "product": s,
    "product_data": obj(
        {"name": s, "metadata": metadata, "active": b, "unit_label": s, "statement_descriptor": s, "tax_code": s}
    ),
    "unit_amount": i,
    "unit_amount_decimal": dec,
    "billing_scheme": enum("per_unit", "tiered"),
    "tiers": arr(TIER),
    "tiers_mode": enum("graduated", "volume"),
    "recurring": RECURRING,
    "transform_quantity": obj({"divide_by": i, "round": enum("up", "down")}, ("divide_by", "round")),
    "lookup_key": s,
    "transfer_lookup_key": b,
    "nickname": s,
    "metadata": metadata,
    "active": b,
    "tax_behavior": enum("exclusive", "inclusive", "unspecified"),
    **EXPAND,
}


def _decimal_text(number: Decimal) -> str:
    text = format(number.normalize(), "f")
    return text


def _amounts(unit: int | None, unit_dec: Decimal | None, where: str) -> tuple[int | None, str | None]:
    if unit is not None and unit_dec is not None:
        raise StripeError(
            f"You may only specify one of these parameters: {where}unit_amount, {where}unit_amount_decimal."
        )
    if unit is not None:
        if unit < 0:
            raise invalid(f"{where}unit_amount", "Invalid unit_amount: must be at least 0")
        return unit, str(unit)
    if unit_dec is not None:
        if unit_dec < 0:
            raise invalid(f"{where}unit_amount_decimal", "Invalid unit_amount_decimal: must be at least 0")
        whole = int(unit_dec) if unit_dec == int(unit_dec) else None
        return whole, _decimal_text(unit_dec)
    return None, None


def _tiers(p: dict[str, Any]) -> list[dict[str, Any]]:
    tiers = []
    for n, tier in enumerate(p["tiers"]):
        where = f"tiers[{n}][]"
        unit, unit_dec = _amounts(tier.get("unit_amount"), tier.get("unit_amount_decimal"), where[:-1])
        flat, flat_dec = tier.get("flat_amount"), tier.get("flat_amount_decimal")
        if flat is not None and flat_dec is not None:
            raise StripeError(f"You may only specify one of flat_amount and flat_amount_decimal in tiers[{n}].")
        if unit is None and unit_dec is None and flat is None and flat_dec is None:
            raise invalid(f"tiers[{n}]", f"Each tier needs unit_amount or flat_amount; tiers[{n}] has neither.")
        up_to = None if tier["up_to"] == "inf" else tier["up_to"]
        if up_to is None and n != len(p["tiers"]) - 1:
            raise invalid(f"tiers[{n}][up_to]", "Only the last tier may have up_to=inf.")
        if up_to is not None and tiers and tiers[-1]["up_to"] is not None and up_to <= tiers[-1]["up_to"]:
            raise invalid(f"tiers[{n}][up_to]", "Tiers must be in ascending order of up_to.")
        tiers.append(
            {
                "up_to": up_to,
                "unit_amount": unit,
                "unit_amount_decimal": unit_dec,
                "flat_amount": flat if flat_dec is None else (int(flat_dec) if flat_dec == int(flat_dec) else None),
                "flat_amount_decimal": str(flat)
                if flat is not None
                else (_decimal_text(flat_dec) if flat_dec is not None else None),
            }
        )
    if tiers and tiers[-1]["up_to"] is not None:
        raise invalid("tiers", "The last tier must have up_to=inf.")
    return tiers


@route("POST", "/v1/prices")
def create_price(req: Request) -> dict[str, Any]:  # noqa: PLR0912, PLR0915 - one check per rule
    p = validate(req.params, PRICE_FIELDS, ("currency",))
    store = req.core.store
    if "product" in p and "product_data" in p:
        raise StripeError("You may only specify one of these parameters: product, product_data.")
    if "product" in p:
        product_id = store.get("product", p["product"], param="product")["id"]
    elif "product_data" in p:
        data = p["product_data"]
        if "name" not in data:
            raise StripeError(
                "Missing required param: product_data[name].", code="parameter_missing", param="product_data[name]"
            )
        product_id = create_product(Request(req.core, "POST", "", (), {"name": data["name"]}))["id"]
        store.get("product", product_id)["metadata"] = data.get("metadata", {})
    else:
        raise StripeError("Missing required param: product.", code="parameter_missing", param="product")
    scheme = p.get("billing_scheme", "per_unit")
    unit, unit_dec = _amounts(p.get("unit_amount"), p.get("unit_amount_decimal"), "")
    tiers = None
    if scheme == "tiered":
        if "tiers" not in p or "tiers_mode" not in p:
            raise StripeError(
                "Tiered prices need both tiers and tiers_mode.",
                code="parameter_missing",
                param="tiers" if "tiers" not in p else "tiers_mode",
            )
        if unit is not None or unit_dec is not None:
            raise invalid("unit_amount", "Tiered prices take their amounts from tiers, not unit_amount.")
        if "transform_quantity" in p:
            raise invalid("transform_quantity", "transform_quantity cannot be combined with tiered pricing.")
        tiers = _tiers(p)
    else:
        if "tiers" in p or "tiers_mode" in p:
            raise invalid("tiers", "tiers and tiers_mode need billing_scheme=tiered.")
        if unit is None and unit_dec is None:
            raise StripeError("Missing required param: unit_amount.", code="parameter_missing", param="unit_amount")
    recurring = None
    if "recurring" in p:
        r = p["recurring"]
        usage_type = r.get("usage_type", "licensed")
        if usage_type == "metered":
            if "meter" not in r:
                raise StripeError(
                    "Metered prices need recurring[meter].", code="parameter_missing", param="recurring[meter]"
                )
            store.get("billing.meter", r["meter"], "billing meter", "recurring[meter]")
        elif "meter" in r:
            raise invalid("recurring[meter]", "recurring[meter] is only allowed with usage_type=metered.")
        count = r.get("interval_count", 1)
        if count < 1:
            raise invalid("recurring[interval_count]", "interval_count must be at least 1.")
        recurring = {
            "interval": r["interval"],
            "interval_count": count,
            "meter": r.get("meter"),
            "usage_type": usage_type,
            "trial_period_days": r.get("trial_period_days"),
        }
    if "transform_quantity" in p and p["transform_quantity"]["divide_by"] < 1:
        raise invalid("transform_quantity[divide_by]", "divide_by must be at least 1.")
    lookup_key = p.get("lookup_key")
    if lookup_key:
        for other in store.all("price"):
            if other["lookup_key"] == lookup_key:
                if not p.get("transfer_lookup_key"):
                    raise StripeError(
                        f"A price (`{other['id']}`) already uses that lookup key; set transfer_lookup_key=true "
                        "to move it.",
                        param="lookup_key",
                    )
                other["lookup_key"] = None
    price = blank("price")
    price.update(
        id=store.new_id("price"),
        active=p.get("active", True),
        billing_scheme=scheme,
        created=req.core.now(),
        currency=p["currency"].lower(),
        custom_unit_amount=None,
        lookup_key=lookup_key,
        metadata=p.get("metadata", {}),
        nickname=p.get("nickname"),
        product=product_id,
        recurring=recurring,
        tax_behavior=p.get("tax_behavior", "unspecified"),
        tiers_mode=p.get("tiers_mode"),
        transform_quantity=p.get("transform_quantity"),
        type="recurring" if recurring else "one_time",
        unit_amount=unit,
        unit_amount_decimal=unit_dec,
        _tiers=tiers,
    )
    return store.put("price", price)


@route("GET", "/v1/prices/{id}")
def get_price(req: Request) -> dict[str, Any]:
    validate(req.params, EXPAND)
    return req.core.store.get("price", req.args[0])


@route("POST", "/v1/prices/{id}")
def update_price(req: Request) -> dict[str, Any]:
    p = validate(
        req.params,
        {
            "active": b,
            "metadata": metadata,
            "nickname": s,
            "lookup_key": nullable(s),
            "transfer_lookup_key": b,
            "tax_behavior": PRICE_FIELDS["tax_behavior"],
            **EXPAND,
        },
    )
    price = req.core.store.get("price", req.args[0])
    if p.get("lookup_key"):
        for other in req.core.store.all("price"):
            if other["lookup_key"] == p["lookup_key"] and other["id"] != price["id"]:
                if not p.get("transfer_lookup_key"):
                    raise StripeError(f"A price (`{other['id']}`) already uses that lookup key.", param="lookup_key")
                other["lookup_key"] = None
    for key in ("active", "nickname", "lookup_key", "tax_behavior"):
        if key in p:
            price[key] = p[key]
    if "metadata" in p:
        price["metadata"] = merge_metadata(price["metadata"], p["metadata"])
    return price


@route("GET", "/v1/prices")
def list_prices(req: Request) -> dict[str, Any]:
    p = validate(
        req.params,
        {
            **LIST,
            "active": b,
            "currency": s,
            "product": s,
            "type": enum("one_time", "recurring"),
            "lookup_keys": arr(s),
            "created": s,
            "recurring": obj({"interval": s, "usage_type": s, "meter": s}),
        },
    )

    def keep(x: dict[str, Any]) -> bool:
        if "active" in p and x["active"] != p["active"]:
            return False
        if "lookup_keys" in p and x["lookup_key"] not in p["lookup_keys"]:
            return False
        for key in ("currency", "product", "type"):
            if key in p and x[key] != p[key]:
                return False
        rec = p.get("recurring") or {}
        return all((x["recurring"] or {}).get(k) == v for k, v in rec.items())

    return req.core.page([x for x in req.core.store.all("price") if keep(x)], p, "/v1/prices")


@route("GET", "/v1/prices/search")
def search_prices(req: Request) -> dict[str, Any]:
    p = validate(req.params, {"query": s, "limit": i, "page": s, **EXPAND}, ("query",))
    clauses = search.parse(p["query"], {"active", "currency", "lookup_key", "product", "type"})
    found = search.find(req.core, "price", clauses)
    return search.result(found, "/v1/prices/search", p.get("limit", 10))


# ---- coupons and promotion codes ---------------------------------------------------------------
@route("POST", "/v1/coupons")
def create_coupon(req: Request) -> dict[str, Any]:
    p = validate(
        req.params,
        {
            "id": s,
            "amount_off": i,
            "currency": s,
            "percent_off": dec,
            "duration": enum("once", "repeating", "forever"),
            "duration_in_months": i,
            "name": s,
            "max_redemptions": i,
            "redeem_by": i,
            "metadata": metadata,
            "applies_to": obj({"products": arr(s)}),
            **EXPAND,
        },
    )
    if ("amount_off" in p) == ("percent_off" in p):
        raise StripeError("A coupon needs exactly one of amount_off or percent_off.", param="percent_off")
    if "amount_off" in p and "currency" not in p:
        raise StripeError("Missing required param: currency.", code="parameter_missing", param="currency")
    duration = p.get("duration", "once")
    if (duration == "repeating") != ("duration_in_months" in p):
        raise invalid("duration_in_months", "duration_in_months is required with, and only with, duration=repeating.")
    if "percent_off" in p and not 0 < p["percent_off"] <= 100:
        raise invalid("percent_off", "percent_off must be greater than 0 and at most 100.")
    store = req.core.store
    coupon = blank("coupon")
    coupon.update(
        id=p.get("id") or store.new_id("co")[3:11].upper(),
        amount_off=p.get("amount_off"),
        currency=p.get("currency"),
        created=req.core.now(),
        duration=duration,
        duration_in_months=p.get("duration_in_months"),
        max_redemptions=p.get("max_redemptions"),
        metadata=p.get("metadata", {}),
        name=p.get("name"),
        percent_off=float(p["percent_off"]) if "percent_off" in p else None,
        redeem_by=p.get("redeem_by"),
        times_redeemed=0,
        valid=True,
        applies_to=p.get("applies_to"),
    )
    return store.put("coupon", coupon)


@route("GET", "/v1/coupons/{id}")
def get_coupon(req: Request) -> dict[str, Any]:
    validate(req.params, EXPAND)
    return req.core.store.get("coupon", req.args[0])


@route("DELETE", "/v1/coupons/{id}")
def delete_coupon(req: Request) -> dict[str, Any]:
    coupon = req.core.store.get("coupon", req.args[0])
    coupon["_deleted"] = True
    return {"id": coupon["id"], "object": "coupon", "deleted": True}


@route("GET", "/v1/coupons")
def list_coupons(req: Request) -> dict[str, Any]:
    p = validate(req.params, {**LIST, "created": s})
    return req.core.page(req.core.store.all("coupon"), p, "/v1/coupons")


@route("POST", "/v1/promotion_codes")
def create_promotion_code(req: Request) -> dict[str, Any]:
    p = validate(
        req.params,
        {
            "promotion": obj({"type": enum("coupon"), "coupon": s}, ("type", "coupon")),
            "code": s,
            "active": b,
            "customer": s,
            "expires_at": i,
            "max_redemptions": i,
            "metadata": metadata,
            "restrictions": obj({"first_time_transaction": b, "minimum_amount": i, "minimum_amount_currency": s}),
            **EXPAND,
        },
        ("promotion",),
    )
    store = req.core.store
    coupon = store.get("coupon", p["promotion"]["coupon"], param="promotion[coupon]")
    code = p.get("code") or store.new_id("x")[2:10].upper()
    if any(x["code"].lower() == code.lower() and x["active"] for x in store.all("promotion_code")):
        raise StripeError(f"An active promotion code with code {code} already exists.", param="code")
    promo = blank("promotion_code")
    restrictions = {
        "first_time_transaction": False,
        "minimum_amount": None,
        "minimum_amount_currency": None,
        "currency_options": {},
    }
    restrictions.update(p.get("restrictions", {}))
    promo.update(
        id=store.new_id("promo"),
        active=p.get("active", True),
        code=code,
        created=req.core.now(),
        customer=p.get("customer"),
        customer_account=None,
        expires_at=p.get("expires_at"),
        max_redemptions=p.get("max_redemptions"),
        metadata=p.get("metadata", {}),
        promotion={"type": "coupon", "coupon": coupon["id"]},
        restrictions=restrictions,
        times_redeemed=0,
    )
    return store.put("promotion_code", promo)


@route("GET", "/v1/promotion_codes/{id}")
def get_promotion_code(req: Request) -> dict[str, Any]:
    validate(req.params, EXPAND)
    return req.core.store.get("promotion_code", req.args[0])


@route("POST", "/v1/promotion_codes/{id}")
def update_promotion_code(req: Request) -> dict[str, Any]:
    p = validate(req.params, {"active": b, "metadata": metadata, **EXPAND})
    promo = req.core.store.get("promotion_code", req.args[0])
    if "active" in p:
        promo["active"] = p["active"]
    if "metadata" in p:
        promo["metadata"] = merge_metadata(promo["metadata"], p["metadata"])
    return promo


@route("GET", "/v1/promotion_codes")
def list_promotion_codes(req: Request) -> dict[str, Any]:
    p = validate(req.params, {**LIST, "active": b, "code": s, "coupon": s, "customer": s, "created": s})
    found = [
        x
        for x in req.core.store.all("promotion_code")
        if ("active" not in p or x["active"] == p["active"])
        and ("code" not in p or x["code"] == p["code"])
        and ("coupon" not in p or x["promotion"]["coupon"] == p["coupon"])
    ]
    return req.core.page(found, p, "/v1/promotion_codes")
