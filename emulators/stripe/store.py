"""In-memory object store: every Stripe object the emulator holds, under one lock."""

from __future__ import annotations

import copy
import json
import secrets
import string
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from emulators.stripe.wire import not_found

_ALPHABET = string.ascii_letters + string.digits
_FIELDS: dict[str, list[str]] = json.loads((Path(__file__).with_name("fields.json")).read_text())


def random_token(length: int = 24) -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(length))


def blank(object_type: str) -> dict[str, Any]:
    """Every field Stripe's published sample of this type has, set to null until filled in."""
    obj: dict[str, Any] = dict.fromkeys(_FIELDS.get(object_type, []))
    obj["object"] = object_type
    if "livemode" in obj:
        obj["livemode"] = False
    if "metadata" in obj:
        obj["metadata"] = {}
    return obj


def public(value: Any) -> Any:
    """A deep copy without the emulator's private `_fields`, ready to serialise."""
    if isinstance(value, dict):
        return {k: public(v) for k, v in value.items() if not k.startswith("_")}
    if isinstance(value, list):
        return [public(v) for v in value]
    return copy.copy(value)


class Store:
    """Objects by kind and id. Callers hold `lock` across a whole request or scheduled action."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self._kinds: dict[str, dict[str, dict[str, Any]]] = {}
        self.on_put: Callable[[dict[str, Any]], None] | None = None  # Core records writes for search

    @staticmethod
    def new_id(prefix: str) -> str:
        return f"{prefix}_{random_token()}"

    def put(self, kind: str, obj: dict[str, Any]) -> dict[str, Any]:
        self._kinds.setdefault(kind, {})[obj["id"]] = obj
        if self.on_put is not None:
            self.on_put(obj)
        return obj

    def get(self, kind: str, object_id: str, label: str | None = None, param: str = "id") -> dict[str, Any]:
        obj = self._kinds.get(kind, {}).get(object_id)
        if obj is None or obj.get("_deleted"):
            raise not_found(label or kind.rsplit(".", maxsplit=1)[-1].replace("_", " "), object_id, param)
        return obj

    def maybe(self, kind: str, object_id: str) -> dict[str, Any] | None:
        obj = self._kinds.get(kind, {}).get(object_id)
        return None if obj is None or obj.get("_deleted") else obj

    def all(self, kind: str) -> list[dict[str, Any]]:
        return [o for o in self._kinds.get(kind, {}).values() if not o.get("_deleted")]

    def find(self, object_id: str) -> dict[str, Any] | None:
        """Any live object by id (used by `expand`)."""
        for objects in self._kinds.values():
            obj = objects.get(object_id)
            if obj is not None and not obj.get("_deleted"):
                return obj
        return None
