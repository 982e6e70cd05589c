"""Turning stored objects into responses: private fields removed, `expand[]` applied."""

from __future__ import annotations

from typing import Any

from emulators.stripe.core import Core
from emulators.stripe.store import public
from emulators.stripe.wire import StripeError

MAX_DEPTH = 4


def expand_paths(raw: Any) -> list[str]:
    if raw is None:
        return []
    if isinstance(raw, str):
        return [raw]
    if isinstance(raw, list):
        return [str(x) for x in raw]
    if isinstance(raw, dict):
        return [str(v) for _, v in sorted(raw.items())]
    return []


def render(core: Core, raw: Any, paths: list[str]) -> Any:
    out = public(raw)
    for path in paths:
        parts = path.split(".")
        if len(parts) > MAX_DEPTH:
            raise StripeError(f"You cannot expand more than {MAX_DEPTH} levels of a property ({path}).", param="expand")
        _expand(core, raw, out, parts, path)
    return out


def _includable(core: Core, raw: dict[str, Any], key: str) -> tuple[bool, Any]:
    """Fields Stripe returns only when expanded (e.g. price.tiers, checkout session line_items)."""
    if raw.get("object") == "checkout.session" and key == "line_items":
        from emulators.stripe.resources.checkout import line_items  # noqa: PLC0415 - avoids an import cycle

        data = line_items(core, raw)
        return True, {
            "object": "list",
            "data": data,
            "has_more": False,
            "url": f"/v1/checkout/sessions/{raw['id']}/line_items",
        }
    if f"_{key}" in raw:
        return True, raw[f"_{key}"]
    return False, None


def _expand(core: Core, raw: Any, out: Any, parts: list[str], path: str) -> None:
    if isinstance(out, list):
        for raw_item, out_item in zip(raw if isinstance(raw, list) else out, out, strict=False):
            _expand(core, raw_item, out_item, parts, path)
        return
    if not isinstance(out, dict):
        return
    key, rest = parts[0], parts[1:]
    raw_value = raw.get(key) if isinstance(raw, dict) else None
    if key in out:
        value = out[key]
        if isinstance(value, str) and key not in ("id", "object"):
            target = core.store.find(value)
            if target is None:
                raise StripeError(f"This property cannot be expanded ({path}).", param="expand")
            out[key] = public(target)
            raw_value = target
        elif isinstance(value, list) and any(isinstance(v, str) for v in value):
            targets = [core.store.find(v) if isinstance(v, str) else v for v in value]
            out[key] = [public(t) if t is not None else v for t, v in zip(targets, value, strict=True)]
            raw_value = [t if t is not None else v for t, v in zip(targets, value, strict=True)]
        elif not rest and not isinstance(value, dict | list) and value is not None:
            raise StripeError(f"This property cannot be expanded ({path}).", param="expand")
    else:
        found, value = _includable(core, raw if isinstance(raw, dict) else {}, key)
        if not found:
            raise StripeError(f"This property cannot be expanded ({path}).", param="expand")
        out[key] = public(value)
        raw_value = value
    if rest and out[key] is not None:
        _expand(core, raw_value, out[key], rest, path)
