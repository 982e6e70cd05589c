"""Stripe's wire protocol: nested form keys, error objects and parameter checking."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import parse_qsl

_KEY_PART = re.compile(r"\[([^\]]*)\]")


class StripeError(Exception):
    """An error answered with Stripe's error object and HTTP status."""

    def __init__(
        self,
        message: str,
        *,
        status: int = 400,
        type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        decline_code: str | None = None,
        should_retry: bool | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.type = type
        self.code = code
        self.param = param
        self.decline_code = decline_code
        self.should_retry = should_retry

    def body(self) -> dict[str, Any]:
        err: dict[str, Any] = {"message": self.message, "type": self.type}
        for key in ("code", "param", "decline_code"):
            if getattr(self, key) is not None:
                err[key] = getattr(self, key)
        if self.code:
            err["doc_url"] = f"https://stripe.com/docs/error-codes/{self.code.replace('_', '-')}"
        return {"error": err}


def not_found(kind: str, object_id: str, param: str = "id") -> StripeError:
    return StripeError(f"No such {kind}: '{object_id}'", status=404, code="resource_missing", param=param)


def missing(param: str) -> StripeError:
    return StripeError(f"Missing required param: {param}.", code="parameter_missing", param=param)


def invalid(param: str, message: str) -> StripeError:
    return StripeError(message, code="parameter_invalid", param=param)


def parse_form(text: str) -> dict[str, Any]:
    """Decode `a[b][0][c]=v` pairs into nested dicts; dicts keyed 0..n-1 become lists."""
    root: dict[str, Any] = {}
    for raw_key, value in parse_qsl(text, keep_blank_values=True):
        head = raw_key.split("[", 1)[0]
        parts = [head, *_KEY_PART.findall(raw_key[len(head) :])]
        node = root
        for n, name in enumerate(parts):
            last = n == len(parts) - 1
            # `expand[]=x` style appends to a list
            part = str(sum(1 for k in node if k.isdigit())) if name == "" else name
            if last:
                node[part] = value
            else:
                child = node.get(part)
                if not isinstance(child, dict):
                    child = {}
                    node[part] = child
                node = child
    return _listify(root)


def _listify(node: Any) -> Any:
    if not isinstance(node, dict):
        return node
    converted = {k: _listify(v) for k, v in node.items()}
    if converted and all(k.isdigit() for k in converted):
        indexes = sorted(int(k) for k in converted)
        if indexes == list(range(len(indexes))):
            return [converted[str(i)] for i in indexes]
    return converted


# ---- parameter specs -------------------------------------------------------------------------
# A spec is a callable (path, value) -> converted value, raising StripeError on bad input.
Spec = Callable[[str, Any], Any]


def _need_str(path: str, value: Any) -> str:
    if not isinstance(value, str):
        raise invalid(path, f"Invalid string: {path} must be a string, not {type(value).__name__}.")
    return value


def s(path: str, value: Any) -> str:
    """A string."""
    return _need_str(path, value)


def i(path: str, value: Any) -> int:
    """An integer."""
    text = _need_str(path, value)
    if not re.fullmatch(r"-?\d+", text):
        raise invalid(path, f"Invalid integer: {text!r} for {path}; expected a whole number.")
    return int(text)


def b(path: str, value: Any) -> bool:
    """A boolean written as true/false."""
    text = _need_str(path, value)
    if text not in ("true", "false"):
        raise invalid(path, f"Invalid boolean: {text!r} for {path}; expected true or false.")
    return text == "true"


def dec(path: str, value: Any) -> Decimal:
    """A decimal string (Stripe's `*_decimal` fields), up to 12 decimal places."""
    text = _need_str(path, value)
    try:
        number = Decimal(text)
    except InvalidOperation:
        raise invalid(path, f"Invalid decimal: {text!r} for {path}.") from None
    if not number.is_finite():
        raise invalid(path, f"Invalid decimal: {text!r} for {path}.")
    return number


def enum(*choices: str) -> Spec:
    def check(path: str, value: Any) -> str:
        text = _need_str(path, value)
        if text not in choices:
            raise invalid(path, f"Invalid {path}: must be one of {', '.join(choices)}")
        return text

    return check


def int_or(*words: str) -> Spec:
    def check(path: str, value: Any) -> int | str:
        text = _need_str(path, value)
        return text if text in words else i(path, text)

    return check


def metadata(path: str, value: Any) -> dict[str, str]:
    """Free-form string map; an empty string for the whole map or a key unsets it."""
    if value == "":
        return {}
    if not isinstance(value, dict):
        raise invalid(path, f"Invalid object: {path} must be a hash of string keys and values.")
    for key, item in value.items():
        if not isinstance(item, str):
            raise invalid(f"{path}[{key}]", f"Invalid string: {path}[{key}] must be a string.")
    return dict(value)


def obj(fields: Mapping[str, Spec], required: tuple[str, ...] = ()) -> Spec:
    def check(path: str, value: Any) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise invalid(path, f"Invalid object: {path} must be a hash of parameters.")
        return validate(value, fields, required, prefix=path)

    return check


def arr(item: Spec) -> Spec:
    def check(path: str, value: Any) -> list[Any]:
        if value == "":
            return []
        if isinstance(value, dict):  # sparse or non-numeric keys are not an array
            raise invalid(path, f"Invalid array: {path} must be an array indexed 0, 1, ...")
        if not isinstance(value, list):
            value = [value]
        return [item(f"{path}[{n}]", v) for n, v in enumerate(value)]

    return check


def nullable(spec: Spec) -> Spec:
    def check(path: str, value: Any) -> Any:
        return None if value == "" else spec(path, value)

    return check


def validate(
    params: Mapping[str, Any],
    fields: Mapping[str, Spec],
    required: tuple[str, ...] = (),
    prefix: str = "",
) -> dict[str, Any]:
    """Check names and types; unknown names are refused so nothing is silently ignored."""
    out: dict[str, Any] = {}
    for key, value in params.items():
        path = f"{prefix}[{key}]" if prefix else key
        spec = fields.get(key)
        if spec is None:
            raise StripeError(f"Received unknown parameter: {path}", code="parameter_unknown", param=path)
        out[key] = spec(path, value)
    for key in required:
        if key not in out or out[key] in ("", None):
            raise missing(f"{prefix}[{key}]" if prefix else key)
    return out


EXPAND = {"expand": arr(s)}
LIST = {"limit": i, "starting_after": s, "ending_before": s, **EXPAND}
