"""The emulated service's resources: users, products, policies, subscriptions, delegation settings.

Plain data kept in memory under one lock; the HTTP layers translate to and from ARM JSON.
"""

from __future__ import annotations

import itertools
import secrets
import threading
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

SUBSCRIPTION_STATES = ("submitted", "active", "suspended", "cancelled", "expired", "rejected")
USER_STATES = ("active", "blocked", "pending", "deleted")
PRODUCT_STATES = ("notPublished", "published")

_etags = itertools.count(1)


def new_etag() -> str:
    # APIM's entity tags are opaque quoted strings; a counter keeps them unique and cheap.
    return f'"AAAAAAAA{next(_etags):08X}="'


def new_key() -> str:
    return secrets.token_hex(16)  # APIM keys are 32 hex characters


@dataclass
class User:
    uid: str
    email: str
    first_name: str
    last_name: str
    state: str
    note: str | None
    identities: list[dict[str, str]]
    registration_date: datetime
    etag: str = field(default_factory=new_etag)


@dataclass
class Product:
    pid: str
    display_name: str
    description: str | None
    terms: str | None
    subscription_required: bool
    approval_required: bool | None
    subscriptions_limit: int | None
    state: str
    etag: str = field(default_factory=new_etag)


@dataclass
class Policy:
    value: str
    fmt: str
    limits: list[Any]  # parsed policy.Limit objects, so the gateway never re-parses XML per call
    etag: str = field(default_factory=new_etag)


@dataclass
class Subscription:
    sid: str
    owner_uid: str | None
    scope: str  # service-relative: "/products/{pid}", "/apis/{aid}" or "/apis"
    display_name: str
    state: str
    primary_key: str
    secondary_key: str
    created_date: datetime
    start_date: datetime | None = None
    expiration_date: datetime | None = None
    end_date: datetime | None = None
    notification_date: datetime | None = None
    state_comment: str | None = None
    allow_tracing: bool | None = None
    etag: str = field(default_factory=new_etag)

    @property
    def product_id(self) -> str | None:
        prefix = "/products/"
        return self.scope[len(prefix):] if self.scope.startswith(prefix) else None


@dataclass
class DelegationSettings:
    url: str | None = None
    validation_key: str | None = None  # base64
    subscriptions_enabled: bool = False
    user_registration_enabled: bool = False
    etag: str = field(default_factory=new_etag)


class Store:
    """All resources of one API Management service. Callers hold `lock` for compound updates."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.users: dict[str, User] = {}
        self.products: dict[str, Product] = {}
        self.policies: dict[str, Policy] = {}  # by product id
        self.subscriptions: dict[str, Subscription] = {}
        self.keys: dict[str, str] = {}  # subscription key -> sid, for the gateway
        self.delegation = DelegationSettings()
        # Signs users' shared access tokens (the service's "tenant access" key in APIM).
        self.token_signing_key = secrets.token_bytes(64)

    def set_keys(self, sub: Subscription, primary: str | None = None, secondary: str | None = None) -> None:
        with self.lock:
            if primary is not None:
                self.keys.pop(sub.primary_key, None)
                sub.primary_key = primary
            if secondary is not None:
                self.keys.pop(sub.secondary_key, None)
                sub.secondary_key = secondary
            self.keys[sub.primary_key] = sub.sid
            self.keys[sub.secondary_key] = sub.sid

    def put_subscription(self, sub: Subscription) -> None:
        with self.lock:
            old = self.subscriptions.get(sub.sid)
            if old is not None:
                self.keys.pop(old.primary_key, None)
                self.keys.pop(old.secondary_key, None)
            self.subscriptions[sub.sid] = sub
            self.set_keys(sub)

    def delete_subscription(self, sid: str) -> None:
        with self.lock:
            sub = self.subscriptions.pop(sid, None)
            if sub is not None:
                self.keys.pop(sub.primary_key, None)
                self.keys.pop(sub.secondary_key, None)

    def subscription_for_key(self, key: str) -> Subscription | None:
        with self.lock:
            sid = self.keys.get(key)
            return self.subscriptions.get(sid) if sid is not None else None
