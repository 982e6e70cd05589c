"""The emulated service's resources: users, groups, APIs, products and their links, policies,
subscriptions, delegation settings.

Plain data kept in memory under one lock; the HTTP layers translate to and from ARM JSON.
"""

from __future__ import annotations

import itertools
import re
import secrets
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

SUBSCRIPTION_STATES = ("submitted", "active", "suspended", "cancelled", "expired", "rejected")
USER_STATES = ("active", "blocked", "pending", "deleted")
PRODUCT_STATES = ("notPublished", "published")
GROUP_TYPES = ("custom", "system", "external")
API_PROTOCOLS = ("http", "https", "ws", "wss")
# Pricing tiers (sku.name) the emulator plays; the v2 tiers lack quota-by-key and the quotas API.
CLASSIC_TIERS = ("Developer", "Basic", "Standard", "Premium")
V2_TIERS = ("BasicV2", "StandardV2")
TIERS = CLASSIC_TIERS + V2_TIERS
DEFAULT_TIER = "Developer"
DEFAULT_KEY_HEADER = "Ocp-Apim-Subscription-Key"
DEFAULT_KEY_QUERY = "subscription-key"
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")

# Every API Management instance has an administrator user "1" (first name "Administrator", empty last
# name, the publisher e-mail given at creation; examples/ApiManagementListUsers.json) and three
# built-in groups. Instances created today name them administrators, developers and guests.
ADMIN_USER_ID = "1"
DEFAULT_PUBLISHER_EMAIL = "admin@apim-emulator.example"
ADMINISTRATORS, DEVELOPERS, GUESTS = "administrators", "developers", "guests"
# Display names and descriptions exactly as in examples/ApiManagementListGroups.json (2024-05-01).
BUILT_IN_GROUPS = (
    (
        ADMINISTRATORS,
        "Administrators",
        "Administrators is a built-in group. Its membership is managed by the "
        "system. Microsoft Azure subscription administrators fall into this group.",
    ),
    (
        DEVELOPERS,
        "Developers",
        "Developers is a built-in group. Its membership is managed by the system. "
        "Signed-in users fall into this group.",
    ),
    (
        GUESTS,
        "Guests",
        "Guests is a built-in group. Its membership is managed by the system. Unauthenticated "
        "users visiting the developer portal fall into this group.",
    ),
)

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
class Group:
    gid: str
    display_name: str
    description: str | None
    type: str  # custom | system | external
    external_id: str | None = None
    etag: str = field(default_factory=new_etag)

    @property
    def built_in(self) -> bool:
        """True for the three system groups (the spec's `builtIn`); their membership is system-managed."""
        return self.type == "system"


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
class Api:
    aid: str
    display_name: str
    path: str  # relative URL suffix; unique in the service (case-insensitively)
    protocols: list[str]
    service_url: str | None
    description: str | None
    subscription_required: bool
    key_header: str = DEFAULT_KEY_HEADER
    key_query: str = DEFAULT_KEY_QUERY
    etag: str = field(default_factory=new_etag)

    @property
    def segments(self) -> list[str]:
        return [p.lower() for p in self.path.split("/") if p]


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
        return self.scope[len(prefix) :] if self.scope.startswith(prefix) else None


@dataclass
class DelegationSettings:
    url: str | None = None
    validation_key: str | None = None  # base64
    subscriptions_enabled: bool = False
    user_registration_enabled: bool = False
    etag: str = field(default_factory=new_etag)


class Store:
    """All resources of one API Management service. Callers hold `lock` for compound updates."""

    def __init__(self, publisher_email: str = DEFAULT_PUBLISHER_EMAIL, created: datetime | None = None) -> None:
        if not EMAIL.match(publisher_email):
            raise ValueError(
                f"publisher_email must be an e-mail address such as name@example.com, not {publisher_email!r}"
            )
        self.lock = threading.RLock()
        self.users: dict[str, User] = {}
        self.groups: dict[str, Group] = {
            gid: Group(gid=gid, display_name=name, description=text, type="system")
            for gid, name, text in BUILT_IN_GROUPS
        }
        # group id -> member user ids, in the order they joined (a dict used as an ordered set)
        self.members: dict[str, dict[str, None]] = {gid: {} for gid in self.groups}
        self.products: dict[str, Product] = {}
        self.apis: dict[str, Api] = {}
        # product id -> linked API ids / group ids, in the order they were linked (dicts as ordered sets)
        self.product_apis: dict[str, dict[str, None]] = {}
        self.product_groups: dict[str, dict[str, None]] = {}
        self.policies: dict[str, Policy] = {}  # by product id
        self.subscriptions: dict[str, Subscription] = {}
        self.keys: dict[str, str] = {}  # subscription key -> sid, for the gateway
        self.delegation = DelegationSettings()
        # Signs users' shared access tokens (the service's "tenant access" key in APIM).
        self.token_signing_key = secrets.token_bytes(64)
        self.users[ADMIN_USER_ID] = User(
            uid=ADMIN_USER_ID,
            email=publisher_email,
            first_name="Administrator",
            last_name="",
            state="active",
            note=None,
            identities=[{"provider": "Azure", "id": publisher_email}],
            registration_date=created or datetime.now(UTC),
        )
        self.add_member(ADMINISTRATORS, ADMIN_USER_ID)

    @property
    def publisher_email(self) -> str:
        return self.users[ADMIN_USER_ID].email

    # Users and groups ---------------------------------------------------------------------------
    def add_user(self, user: User) -> None:
        """A user created through the API; Developers membership is managed by the system."""
        with self.lock:
            self.users[user.uid] = user
            self.add_member(DEVELOPERS, user.uid)

    def delete_user(self, uid: str) -> None:
        with self.lock:
            self.users.pop(uid, None)
            for members in self.members.values():
                members.pop(uid, None)

    def put_group(self, group: Group) -> None:
        with self.lock:
            self.groups[group.gid] = group
            self.members.setdefault(group.gid, {})

    def delete_group(self, gid: str) -> None:
        with self.lock:
            self.groups.pop(gid, None)
            self.members.pop(gid, None)
            for groups in self.product_groups.values():
                groups.pop(gid, None)

    def add_member(self, gid: str, uid: str) -> bool:
        """Adds `uid` to group `gid`; False when it already was a member."""
        with self.lock:
            members = self.members.setdefault(gid, {})
            if uid in members:
                return False
            members[uid] = None
            return True

    def remove_member(self, gid: str, uid: str) -> bool:
        """Removes `uid` from group `gid`; False when it was not a member."""
        with self.lock:
            members = self.members.get(gid, {})
            if uid not in members:
                return False
            del members[uid]
            return True

    def is_member(self, gid: str, uid: str) -> bool:
        with self.lock:
            return uid in self.members.get(gid, {})

    def groups_of(self, uid: str) -> list[Group]:
        with self.lock:
            return [g for g in self.groups.values() if uid in self.members.get(g.gid, {})]

    def members_of(self, gid: str) -> list[User]:
        with self.lock:
            return [self.users[uid] for uid in self.members.get(gid, {}) if uid in self.users]

    # Products, APIs and their links --------------------------------------------------------------
    def add_product(self, product: Product) -> None:
        """A new product is visible only to Administrators: it starts linked to that group."""
        with self.lock:
            self.products[product.pid] = product
            self.product_apis[product.pid] = {}
            self.product_groups[product.pid] = {ADMINISTRATORS: None}

    def delete_product(self, pid: str) -> None:
        with self.lock:
            self.products.pop(pid, None)
            self.policies.pop(pid, None)
            self.product_apis.pop(pid, None)
            self.product_groups.pop(pid, None)

    def delete_api(self, aid: str) -> None:
        with self.lock:
            self.apis.pop(aid, None)
            for apis in self.product_apis.values():
                apis.pop(aid, None)

    def apis_of(self, pid: str) -> list[Api]:
        with self.lock:
            return [self.apis[a] for a in self.product_apis.get(pid, {}) if a in self.apis]

    def groups_of_product(self, pid: str) -> list[Group]:
        with self.lock:
            return [self.groups[g] for g in self.product_groups.get(pid, {}) if g in self.groups]

    def match_api(self, path: str) -> Api | None:
        """The API whose path is the longest prefix (whole segments, any case) of a gateway request path."""
        wanted = [p.lower() for p in path.split("/") if p]
        with self.lock:
            candidates = [a for a in self.apis.values() if wanted[: len(a.segments)] == a.segments]
        return max(candidates, key=lambda a: len(a.segments), default=None)

    def visible_products(self, uid: str | None) -> list[Product]:
        """What the developer portal lists: Administrators see every product; anyone else sees the
        published products linked to one of their groups (Guests when anonymous; Developers plus their
        custom and external groups when signed in)."""
        with self.lock:
            groups = {g.gid for g in self.groups_of(uid)} if uid is not None else {GUESTS}
            if ADMINISTRATORS in groups:
                return list(self.products.values())
            if uid is not None:
                groups.add(DEVELOPERS)  # every signed-in user is a developer, whatever the member lists say
            return [
                p
                for p in self.products.values()
                if p.state == "published" and groups & set(self.product_groups.get(p.pid, {}))
            ]

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
