"""Loading payment/monetizationModels.json, with errors a provider can act on.

Every problem is reported as `product '<id>' (products[i]), field '<field>': <what is wrong and
what would be valid>`, never as a traceback.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from pydantic_core import ErrorDetails

from billing.models import CallOutcome, MonetizationModels, PricingModel

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODELS_PATH = REPO_ROOT / "payment" / "monetizationModels.json"
SCHEMA_PATH = REPO_ROOT / "payment" / "monetizationModels.schema.json"


class ModelsFileError(ValueError):
    """The models file cannot be used; `problems` lists every reason, one line each."""

    def __init__(self, path: Path, problems: Sequence[str]) -> None:
        self.path = path
        self.problems = list(problems)
        super().__init__(f"{path}: " + "; ".join(self.problems))

    def report(self) -> str:
        lines = [f"{self.path} is not a valid monetization models file:"]
        lines += [f"  - {problem}" for problem in self.problems]
        return "\n".join(lines)


def load_models(path: Path | str | None = None) -> MonetizationModels:
    """Read and validate the models file; raise ModelsFileError naming every problem."""
    file = Path(path) if path is not None else DEFAULT_MODELS_PATH
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ModelsFileError(file, [f"cannot be read ({exc.strerror or exc})"]) from None
    return parse_models(text, source=file)


def parse_models(text: str, *, source: Path | str = "<models>") -> MonetizationModels:
    source_path = Path(source)
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ModelsFileError(
            source_path, [f"malformed JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"]
        ) from None
    if not isinstance(raw, dict):
        raise ModelsFileError(source_path, ['the file must hold a JSON object: {"products": [...]}'])
    try:
        # Validate from the text so that JSON numbers become exact Decimals, never floats.
        return MonetizationModels.model_validate_json(text)
    except ValidationError as exc:
        problems = [line for error in exc.errors(include_url=False) for line in _describe(error, raw)]
        raise ModelsFileError(source_path, _unique(problems)) from None


def _unique(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))


def _describe(error: ErrorDetails, raw: dict[str, Any]) -> list[str]:
    loc = list(error["loc"])
    where = _where(loc, raw)
    under_product = len(loc) >= 2 and loc[0] == "products" and isinstance(loc[1], int)
    path = loc[2:] if under_product else loc
    field = ".".join(str(part) for part in path if not isinstance(part, int))
    described = []
    for message in _message(error).splitlines():
        # Model-level rules say "field: problem"; put the field into the location.
        named, _, rest = message.partition(": ")
        if error["type"] == "value_error" and rest and " " not in named:
            described.append(f"{where}, field '{named}': {rest}")
        elif field:
            described.append(f"{where}, field '{field}': {message}")
        else:
            described.append(f"{where}: {message}")
    return described


def _where(loc: list[int | str], raw: dict[str, Any]) -> str:
    if len(loc) >= 2 and loc[0] == "products" and isinstance(loc[1], int):
        index = loc[1]
        products = raw.get("products")
        product_id = None
        if isinstance(products, list) and index < len(products) and isinstance(products[index], dict):
            product_id = products[index].get("id")
        name = f"product '{product_id}'" if isinstance(product_id, str) else "product with no id"
        return f"{name} (products[{index}])"
    return "file"


def _message(error: ErrorDetails) -> str:
    kind = error["type"]
    ctx = error.get("ctx", {})
    given = error.get("input")
    if kind == "missing":
        return "is required"
    if kind == "extra_forbidden":
        return "is not a known field (check the spelling; see monetizationModels.schema.json)"
    if kind == "enum":
        options = _enum_options(error["loc"])
        return f"{given!r} is not valid; use one of {options}"
    if kind in ("greater_than_equal", "greater_than"):
        bound = ctx.get("ge", ctx.get("gt"))
        op = ">=" if kind == "greater_than_equal" else ">"
        return f"must be {op} {bound}, got {given}"
    if kind in ("less_than_equal", "less_than"):
        bound = ctx.get("le", ctx.get("lt"))
        op = "<=" if kind == "less_than_equal" else "<"
        return f"must be {op} {bound}, got {given}"
    if kind == "int_type":
        return f"must be a whole number such as 14, not {given!r}"
    if kind == "string_pattern_mismatch":
        return f"{given!r} does not match {ctx.get('pattern')}"
    if kind == "value_error":
        return str(ctx.get("error", error["msg"]))
    if kind in ("too_short", "too_long"):
        return error["msg"].lower()
    return f"{error['msg']} (got {given!r})"


def _enum_options(loc: tuple[int | str, ...]) -> str:
    field = str(loc[-1]) if loc and not isinstance(loc[-1], int) else str(loc[-2]) if len(loc) > 1 else ""
    if field == "pricingModel":
        return ", ".join(m.value for m in PricingModel)
    if field == "billableOutcomes" or (len(loc) > 1 and loc[-2] == "billableOutcomes"):
        return ", ".join(o.value for o in CallOutcome) + " (blocked calls are never billable)"
    return "the values listed in monetizationModels.schema.json"


def json_schema() -> dict[str, Any]:
    """The JSON Schema of the models file, generated from the pydantic models."""
    schema = MonetizationModels.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "API monetization models"
    return schema


def render_json_schema() -> str:
    return json.dumps(json_schema(), indent=2, sort_keys=True) + "\n"
