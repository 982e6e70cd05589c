"""The ARM REST API of Microsoft.ApiManagement (2024-05-01) for the operations the app uses."""

from __future__ import annotations

import base64
import binascii
import json
import re
import secrets
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar
from urllib.parse import unquote

from emulators.apim import arm, odata
from emulators.apim.arm import ArmError, incorrect_values, iso, not_found, validation
from emulators.apim.core import Emulated
from emulators.apim.httpbase import Request, Response
from emulators.apim.policy import Limit, PolicyError, QuotaPeriod, parse_policy
from emulators.apim.state import (
    ADMIN_USER_ID,
    API_PROTOCOLS,
    DEFAULT_KEY_HEADER,
    DEFAULT_KEY_QUERY,
    EMAIL,
    GROUP_TYPES,
    PRODUCT_STATES,
    SUBSCRIPTION_STATES,
    USER_STATES,
    Api,
    DelegationSettings,
    Group,
    Policy,
    Product,
    Subscription,
    User,
    new_etag,
    new_key,
)
from emulators.apim.usage import Window

_SERVICE = re.compile(
    r"^/subscriptions/(?P<sub>[^/]+)/resourceGroups/(?P<rg>[^/]+)"
    r"/providers/Microsoft\.ApiManagement/service/(?P<svc>[^/]+)(?P<rest>/.*)?$",
    re.IGNORECASE,
)
_NAME = re.compile(r"^[^*#&+:<>?/\\%]{1,256}$")
_EMAIL = EMAIL
T = TypeVar("T")
# $filter fields of Group_ListByService and GroupUser_List (apimgroups.json, 2024-05-01)
_GROUP_FILTER: dict[str, Callable[[Group], Any]] = {
    "name": lambda g: g.gid,
    "displayName": lambda g: g.display_name,
    "description": lambda g: g.description,
    "externalId": lambda g: g.external_id,
}
_GROUP_USER_FILTER: dict[str, Callable[[User], Any]] = {
    "name": lambda u: u.uid,
    "email": lambda u: u.email,
    "firstName": lambda u: u.first_name,
    "lastName": lambda u: u.last_name,
    "note": lambda u: u.note,
    "registrationDate": lambda u: u.registration_date,
}
# $filter fields of Api_ListByService and ProductApi_ListByProduct (apimapis.json, apimproducts.json)
_API_FILTER: dict[str, Callable[[Api], Any]] = {
    "name": lambda a: a.aid,
    "displayName": lambda a: a.display_name,
    "description": lambda a: a.description,
    "serviceUrl": lambda a: a.service_url,
    "path": lambda a: a.path,
    "isCurrent": lambda a: True,
}
Route = tuple[str, re.Pattern[str], Callable[..., Response]]
PUBLISHER_NAME = "APIM emulator"  # the service's publisherName (the emulator has no creation form)
LOCATION = "East US"


def _body_properties(req: Request) -> dict[str, Any]:
    try:
        body = req.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ArmError(400, "InvalidRequestContent", "The request body is not valid JSON.") from None
    if body is None:
        return {}
    if not isinstance(body, dict):
        raise ArmError(400, "InvalidRequestContent", "The request body must be a JSON object.")
    props = body.get("properties", {})
    if not isinstance(props, dict):
        raise validation("properties", "must be a JSON object")
    return props


def _str(props: dict[str, Any], name: str, *, required: bool = False, max_len: int = 1000) -> str | None:
    value = props.get(name)
    if value is None:
        if required:
            raise validation(name, "is required")
        return None
    if not isinstance(value, str):
        raise validation(name, f"must be a string, not {type(value).__name__}")
    if required and not value.strip():
        raise validation(name, "must not be empty")
    if len(value) > max_len:
        raise validation(name, f"must be at most {max_len} characters")
    return value


def _bool(props: dict[str, Any], name: str) -> bool | None:
    value = props.get(name)
    if value is not None and not isinstance(value, bool):
        raise validation(name, "must be true or false")
    return value


def _choice(props: dict[str, Any], name: str, choices: tuple[str, ...]) -> str | None:
    value = _str(props, name)
    if value is not None and value not in choices:
        raise validation(name, f"'{value}' is not one of {', '.join(choices)}")
    return value


def _identities(props: dict[str, Any]) -> list[dict[str, str]] | None:
    identities = props.get("identities")
    if identities is None:
        return None
    if not isinstance(identities, list) or not all(
        isinstance(i, dict) and isinstance(i.get("provider"), str) and isinstance(i.get("id"), str) for i in identities
    ):
        raise validation("identities", 'must be a list of {"provider": "...", "id": "..."} objects')
    return identities


def _check_name(kind: str, name: str) -> str:
    name = unquote(name)
    if not _NAME.match(name):
        raise validation(kind, f"'{name}' is not a valid name (1-256 characters, none of * # & + : < > ? / \\ %)")
    return name


def _if_match(req: Request, etag: str | None, *, required: bool) -> None:
    value = req.header("if-match")
    if value is None:
        if required:
            raise ArmError(
                400, "ValidationError", "The If-Match header is required ('*' or the entity's ETag).", "If-Match"
            )
        return
    if value.strip() == "*":
        if etag is None:
            raise ArmError(412, "PreconditionFailed", "If-Match '*' given but the entity does not exist.")
        return
    if etag is None or value.strip() != etag:
        raise ArmError(412, "PreconditionFailed", "The entity's ETag does not match the If-Match header.")


class ManagementApi:
    def __init__(self, emu: Emulated) -> None:
        self.emu = emu
        self.store = emu.store
        R: Callable[[str, str, Callable[..., Response]], Route] = lambda m, p, f: (m, re.compile(p + "$"), f)  # noqa: E731
        self.operations: dict[str, datetime] = {}  # long-running operation id -> when it completed
        self.routes: list[Route] = [
            R("GET", r"/", self.service),
            R("GET", r"/tenant/operationResults/(?P<op>[^/]+)", self.operation_result),
            R("GET", r"/apis", self.list_apis),
            R("GET|HEAD|PUT|PATCH|DELETE", r"/apis/(?P<aid>[^/]+)", self.api),
            R("GET|PATCH", r"/quotas/(?P<key>[^/]+)", self.quota_counters),
            R("GET|PATCH", r"/quotas/(?P<key>[^/]+)/periods/(?P<period>[^/]+)", self.quota_period),
            R("GET", r"/users", self.list_users),
            R("GET|HEAD|PUT|PATCH|DELETE", r"/users/(?P<uid>[^/]+)", self.user),
            R("POST", r"/users/(?P<uid>[^/]+)/token", self.user_token),
            R("GET", r"/users/(?P<uid>[^/]+)/subscriptions", self.user_subscriptions),
            R("GET", r"/users/(?P<uid>[^/]+)/groups", self.user_groups),
            R("GET", r"/groups", self.list_groups),
            R("GET|HEAD|PUT|PATCH|DELETE", r"/groups/(?P<gid>[^/]+)", self.group),
            R("GET", r"/groups/(?P<gid>[^/]+)/users", self.group_users),
            R("HEAD|PUT|DELETE", r"/groups/(?P<gid>[^/]+)/users/(?P<uid>[^/]+)", self.group_user),
            R("GET", r"/products", self.list_products),
            R("GET|HEAD|PUT|PATCH|DELETE", r"/products/(?P<pid>[^/]+)", self.product),
            R("GET", r"/products/(?P<pid>[^/]+)/policies", self.list_product_policies),
            R("GET|HEAD|PUT|DELETE", r"/products/(?P<pid>[^/]+)/policies/(?P<policy>[^/]+)", self.product_policy),
            R("GET", r"/products/(?P<pid>[^/]+)/subscriptions", self.product_subscriptions),
            R("GET", r"/products/(?P<pid>[^/]+)/apis", self.product_apis),
            R("HEAD|PUT|DELETE", r"/products/(?P<pid>[^/]+)/apis/(?P<aid>[^/]+)", self.product_api),
            R("GET", r"/products/(?P<pid>[^/]+)/groups", self.product_groups),
            R("HEAD|PUT|DELETE", r"/products/(?P<pid>[^/]+)/groups/(?P<gid>[^/]+)", self.product_group),
            R("GET", r"/subscriptions", self.list_subscriptions),
            R("GET|HEAD|PUT|PATCH|DELETE", r"/subscriptions/(?P<sid>[^/]+)", self.subscription),
            R("POST", r"/subscriptions/(?P<sid>[^/]+)/listSecrets", self.subscription_secrets),
            R("POST", r"/subscriptions/(?P<sid>[^/]+)/regenerate(?P<which>Primary|Secondary)Key", self.regenerate),
            R("GET", r"/reports/by(?P<group>Subscription|Product|User)", self.reports),
            R("GET|HEAD|PUT|PATCH", r"/portalsettings/delegation", self.delegation),
            R("POST", r"/portalsettings/delegation/listSecrets", self.delegation_secrets),
        ]

    # ---- entry -------------------------------------------------------------------------------
    def handle(self, req: Request) -> Response:
        try:
            return self._dispatch(req)
        except ArmError as exc:
            return exc.response()
        except odata.FilterError as exc:
            return ArmError(400, "ValidationError", str(exc), "$filter").response()

    def _dispatch(self, req: Request) -> Response:
        if not self.emu.tokens.valid(req.header("authorization")):
            resp = ArmError(
                401,
                "AuthenticationFailed",
                "Authentication failed. The 'Authorization' header is "
                "missing or its bearer token is not one this emulator issued.",
            ).response()
            resp.headers["WWW-Authenticate"] = 'Bearer authorization_uri="' + req.base_url + '", error="invalid_token"'
            return resp
        self._inject_faults()
        if req.query.get("api-version") is None:
            raise ArmError(
                400,
                "MissingApiVersionParameter",
                "The api-version query parameter (?api-version=) is required for all requests.",
            )
        match = _SERVICE.match(req.path)
        if match is None:
            raise ArmError(404, "NotFound", f"No route for {req.method} {req.path}.")
        if match.group("sub").lower() != self.emu.subscription_id.lower():
            raise ArmError(404, "SubscriptionNotFound", f"The subscription '{match.group('sub')}' could not be found.")
        if match.group("rg").lower() != self.emu.resource_group.lower():
            raise ArmError(404, "ResourceGroupNotFound", f"Resource group '{match.group('rg')}' could not be found.")
        if match.group("svc").lower() != self.emu.service_name.lower():
            raise ArmError(
                404,
                "ResourceNotFound",
                f"The Resource 'Microsoft.ApiManagement/service/{match.group('svc')}' under resource "
                f"group '{match.group('rg')}' was not found.",
            )
        rest = match.group("rest") or "/"
        allowed_elsewhere = False
        for methods, pattern, handler in self.routes:
            route = pattern.match(rest)
            if route is None:
                continue
            if req.method not in methods.split("|"):
                allowed_elsewhere = True
                continue
            with self.store.lock:
                return handler(req, **route.groupdict())
        if allowed_elsewhere:
            raise ArmError(405, "MethodNotAllowed", f"{req.method} is not supported on {rest}.")
        raise ArmError(404, "NotFound", f"The emulator does not serve {rest}.")

    def _inject_faults(self) -> None:
        faults = self.emu.faults
        if faults.latency_ms:
            time.sleep(faults.latency_ms / 1000)  # the injected latency is the point here
        status = faults.draw()
        if status == 429:
            exc = ArmError(429, "TooManyRequests", "The request was throttled (injected fault).")
            raise _WithHeaders(exc, {"Retry-After": str(faults.retry_after_seconds)})
        if status == 500:
            raise ArmError(500, "InternalServerError", "The server encountered an internal error (injected fault).")

    def _id(self, *parts: str) -> str:
        return self.emu.service_id + "".join(f"/{p}" for p in parts)

    @staticmethod
    def _with_etag(resp: Response, etag: str) -> Response:
        resp.headers["ETag"] = etag
        return resp

    # ---- users -------------------------------------------------------------------------------
    def _user_json(
        self, user: User, *, groups: list[Group] | None = None, kind: str = "Microsoft.ApiManagement/service/users"
    ) -> dict[str, Any]:
        """`groups` None leaves the property out; PUT answers carry `[]`, as in the published samples."""
        props: dict[str, Any] = {
            "firstName": user.first_name,
            "lastName": user.last_name,
            "email": user.email,
            "state": user.state,
            "registrationDate": iso(user.registration_date),
        }
        if user.note is not None:
            props["note"] = user.note
        if groups is not None:
            props["groups"] = [self._group_properties(g) for g in groups]
        props["identities"] = user.identities
        return {"id": self._id("users", user.uid), "type": kind, "name": user.uid, "properties": props}

    def _expanded_groups(self, req: Request, user: User) -> list[Group] | None:
        if req.query.get("expandGroups", "").lower() != "true":
            return None
        return self.store.groups_of(user.uid)

    @staticmethod
    def _refuse_administrator_change(uid: str) -> None:
        if uid == ADMIN_USER_ID:
            raise ArmError(
                405,
                "MethodNotAllowed",
                "User '1' is the service's built-in administrator (the publisher "
                "e-mail given at creation): it cannot be changed or deleted through this API.",
            )

    def _get_user(self, uid: str) -> User:
        user = self.store.users.get(uid)
        if user is None:
            raise not_found("User", uid)
        return user

    def list_users(self, req: Request) -> Response:
        top, skip = arm.paging(req)
        pred = odata.matcher(
            odata.parse_filter(req.query.get("$filter")),
            {
                "name": lambda u: u.uid,
                "email": lambda u: u.email,
                "firstName": lambda u: u.first_name,
                "lastName": lambda u: u.last_name,
                "state": lambda u: u.state,
                "note": lambda u: u.note,
                "registrationDate": lambda u: u.registration_date,
            },
        )
        users = [u for u in self.store.users.values() if pred(u)]
        return Response.json(
            arm.page(req, users, top, skip, lambda u: self._user_json(u, groups=self._expanded_groups(req, u)))
        )

    def user(self, req: Request, uid: str) -> Response:
        uid = _check_name("userId", uid)
        existing = self.store.users.get(uid)
        if req.method in ("GET", "HEAD"):
            found = self._get_user(uid)
            return self._with_etag(
                Response.json(self._user_json(found, groups=self._expanded_groups(req, found))), found.etag
            )
        self._refuse_administrator_change(uid)
        if req.method == "DELETE":
            if existing is None:
                return Response(204)  # ARM deletes are idempotent
            _if_match(req, existing.etag, required=True)
            self.store.delete_user(uid)  # and its group memberships
            if req.query.get("deleteSubscriptions", "").lower() == "true":
                for owned in [s for s in self.store.subscriptions.values() if s.owner_uid == uid]:
                    self.store.delete_subscription(owned.sid)
            return Response(204)
        user = self._target(req, self.store.users.get(uid), lambda: self._get_user(uid))
        props = _body_properties(req)
        email = _str(props, "email", required=user is None, max_len=254)
        first = _str(props, "firstName", required=user is None, max_len=100)
        last = _str(props, "lastName", required=user is None, max_len=100)
        state = _choice(props, "state", USER_STATES)
        note = _str(props, "note")
        identities = _identities(props)
        if email is not None:
            self._check_email(uid, email)
        created = user is None
        if user is None:
            assert email is not None
            assert first is not None
            assert last is not None
            user = User(
                uid=uid,
                email=email,
                first_name=first,
                last_name=last,
                state=state or "active",
                note=note,
                identities=identities or [{"provider": "Basic", "id": email}],
                registration_date=self.emu.now(),
            )
            self.store.add_user(user)  # joins Developers (system-managed membership)
        else:
            user.email = email or user.email
            user.first_name = first or user.first_name
            user.last_name = last or user.last_name
            user.state = state or user.state
            user.note = note if note is not None else user.note
            user.identities = identities if identities is not None else user.identities
            user.etag = new_etag()
        status = 201 if created else 200
        return self._with_etag(Response.json(self._user_json(user, groups=[]), status), user.etag)

    def _check_email(self, uid: str, email: str) -> None:
        if not _EMAIL.match(email):
            raise validation("email", f"'{email}' is not a valid e-mail address such as name@example.com")
        if any(u.email.lower() == email.lower() and u.uid != uid for u in self.store.users.values()):
            raise ArmError(409, "Conflict", f"email: a user with the e-mail address '{email}' already exists.", "email")

    @staticmethod
    def _target(req: Request, existing: T | None, get: Callable[[], T]) -> T | None:
        """The resource a PUT or PATCH changes (None: PUT creates it), after checking If-Match."""
        if req.method == "PATCH":
            resource = get()
            _if_match(req, resource.etag, required=True)  # type: ignore[attr-defined]
            return resource
        if existing is not None:
            _if_match(req, existing.etag, required=False)  # type: ignore[attr-defined]
        return existing

    def user_token(self, req: Request, uid: str) -> Response:
        user = self._get_user(_check_name("userId", uid))
        props = _body_properties(req)
        key_type = _choice(props, "keyType", ("primary", "secondary"))
        if key_type is None:
            raise validation("keyType", "is required: 'primary' or 'secondary'")
        expiry = arm.parse_time(props.get("expiry"), "expiry")
        if expiry is None:
            raise validation("expiry", "is required: the token's expiry as an ISO 8601 date-time")
        if expiry <= self.emu.now():
            raise validation("expiry", "must be in the future")
        return Response.json({"value": self.emu.user_token(user.uid, expiry)})

    def user_subscriptions(self, req: Request, uid: str) -> Response:
        self._get_user(_check_name("userId", uid))
        return self._list_subs(req, lambda s: s.owner_uid == uid)

    # ---- groups ------------------------------------------------------------------------------
    @staticmethod
    def _group_properties(group: Group, *, built_in: bool = True) -> dict[str, Any]:
        """GroupContractProperties; fields without a value are left out, as in the published samples."""
        props: dict[str, Any] = {"displayName": group.display_name}
        if group.description is not None:
            props["description"] = group.description
        if built_in:
            props["builtIn"] = group.built_in
        props["type"] = group.type
        if group.external_id is not None:
            props["externalId"] = group.external_id
        return props

    def _group_json(self, group: Group, *, built_in: bool = True) -> dict[str, Any]:
        return {
            "id": self._id("groups", group.gid),
            "type": "Microsoft.ApiManagement/service/groups",
            "name": group.gid,
            "properties": self._group_properties(group, built_in=built_in),
        }

    def _get_group(self, gid: str) -> Group:
        group = self.store.groups.get(gid)
        if group is None:
            raise not_found("Group", gid)
        return group

    @staticmethod
    def _refuse_system_group_change(group: Group | None, what: str) -> None:
        if group is not None and group.built_in:
            raise ArmError(
                405,
                "MethodNotAllowed",
                f"Group '{group.gid}' ({group.display_name}) is a built-in system group: {what}.",
            )

    def list_groups(self, req: Request) -> Response:
        top, skip = arm.paging(req)
        pred = odata.matcher(odata.parse_filter(req.query.get("$filter")), _GROUP_FILTER)
        groups = [g for g in self.store.groups.values() if pred(g)]
        return Response.json(arm.page(req, groups, top, skip, self._group_json, last_link=""))

    def group(self, req: Request, gid: str) -> Response:
        gid = _check_name("groupId", gid)
        existing = self.store.groups.get(gid)
        if req.method in ("GET", "HEAD"):
            found = self._get_group(gid)
            return self._with_etag(Response.json(self._group_json(found)), found.etag)
        self._refuse_system_group_change(existing, "built-in groups cannot be created, changed or deleted")
        if req.method == "DELETE":
            if existing is None:
                return Response(204)
            _if_match(req, existing.etag, required=True)
            self.store.delete_group(gid)  # and its memberships
            return Response(200)
        group = self._target(req, existing, lambda: self._get_group(gid))
        props = _body_properties(req)
        display = _str(props, "displayName", required=group is None, max_len=300)
        description = _str(props, "description", max_len=1000)
        kind = _choice(props, "type", GROUP_TYPES)
        external_id = _str(props, "externalId", max_len=2000)
        if kind == "system":
            raise validation("type", "'system' is reserved for the built-in groups; use 'custom' or 'external'")
        final_kind = kind or (group.type if group else "custom")
        final_external = external_id if external_id is not None else (group.external_id if group else None)
        if final_kind == "external" and not final_external:
            raise validation(
                "externalId",
                "is required for an external group, e.g. aad://<tenant>.onmicrosoft.com/groups/<group object id>",
            )
        if final_kind == "custom" and final_external:
            raise validation("externalId", "is only for external groups (type 'external')")
        created = group is None
        if group is None:
            assert display is not None
            group = Group(
                gid=gid, display_name=display, description=description, type=final_kind, external_id=final_external
            )
            self.store.put_group(group)
        else:
            group.display_name = display or group.display_name
            group.description = description if description is not None else group.description
            group.type = final_kind
            group.external_id = final_external
            group.etag = new_etag()
        if req.method == "PATCH":
            return self._with_etag(Response.json(self._group_json(group)), group.etag)
        # PUT answers leave out builtIn, as ApiManagementCreateGroup(External).json show for 201 and 200.
        return self._with_etag(
            Response.json(self._group_json(group, built_in=False), 201 if created else 200), group.etag
        )

    def group_users(self, req: Request, gid: str) -> Response:
        group = self._get_group(_check_name("groupId", gid))
        top, skip = arm.paging(req)
        pred = odata.matcher(odata.parse_filter(req.query.get("$filter")), _GROUP_USER_FILTER)
        users = [u for u in self.store.members_of(group.gid) if pred(u)]
        return Response.json(
            arm.page(
                req,
                users,
                top,
                skip,
                lambda u: self._user_json(u, kind="Microsoft.ApiManagement/service/groups/users"),
                last_link="",
            )
        )

    def group_user(self, req: Request, gid: str, uid: str) -> Response:
        group = self._get_group(_check_name("groupId", gid))
        uid = _check_name("userId", uid)
        member = self.store.is_member(group.gid, uid)
        if req.method == "HEAD":
            if not member:
                raise ArmError(404, "ResourceNotFound", f"User '{uid}' is not a member of group '{group.gid}'.")
            return Response(204)
        self._refuse_system_group_change(
            group, "its membership is managed by the system; users cannot be added to it or removed from it"
        )
        if req.method == "DELETE":
            return Response(200 if self.store.remove_member(group.gid, uid) else 204)
        user = self._get_user(uid)
        self.store.add_member(group.gid, uid)
        body = self._user_json(user, groups=[], kind="Microsoft.ApiManagement/service/groups/users")
        return Response.json(body, 200 if member else 201)

    def user_groups(self, req: Request, uid: str) -> Response:
        user = self._get_user(_check_name("userId", uid))
        top, skip = arm.paging(req)
        pred = odata.matcher(
            odata.parse_filter(req.query.get("$filter")),
            {
                "name": lambda g: g.gid,
                "displayName": lambda g: g.display_name,
                "description": lambda g: g.description,
            },
        )
        groups = [g for g in self.store.groups_of(user.uid) if pred(g)]

        def render(group: Group) -> dict[str, Any]:
            return {
                "id": self._id("users", user.uid, "groups", group.gid),
                "type": "Microsoft.ApiManagement/service/users/groups",
                "name": group.gid,
                "properties": self._group_properties(group),
            }

        return Response.json(arm.page(req, groups, top, skip, render, last_link=""))

    # ---- products ----------------------------------------------------------------------------
    def _product_json(self, product: Product) -> dict[str, Any]:
        props: dict[str, Any] = {"displayName": product.display_name}
        for key, value in (("description", product.description), ("terms", product.terms)):
            if value is not None:
                props[key] = value
        props["subscriptionRequired"] = product.subscription_required
        if product.approval_required is not None:
            props["approvalRequired"] = product.approval_required
        if product.subscriptions_limit is not None:
            props["subscriptionsLimit"] = product.subscriptions_limit
        props["state"] = product.state
        return {
            "id": self._id("products", product.pid),
            "type": "Microsoft.ApiManagement/service/products",
            "name": product.pid,
            "properties": props,
        }

    def _get_product(self, pid: str) -> Product:
        product = self.store.products.get(pid)
        if product is None:
            raise not_found("Product", pid)
        return product

    def list_products(self, req: Request) -> Response:
        top, skip = arm.paging(req)
        pred = odata.matcher(
            odata.parse_filter(req.query.get("$filter")),
            {
                "name": lambda p: p.pid,
                "displayName": lambda p: p.display_name,
                "description": lambda p: p.description,
                "terms": lambda p: p.terms,
                "state": lambda p: p.state,
                "groups": lambda p: None,
            },
        )
        products = [p for p in self.store.products.values() if pred(p)]
        return Response.json(arm.page(req, products, top, skip, self._product_json))

    def product(self, req: Request, pid: str) -> Response:
        pid = _check_name("productId", pid)
        existing = self.store.products.get(pid)
        if req.method in ("GET", "HEAD"):
            found = self._get_product(pid)
            return self._with_etag(Response.json(self._product_json(found)), found.etag)
        if req.method == "DELETE":
            if existing is None:
                return Response(204)
            _if_match(req, existing.etag, required=True)
            subs = [s for s in self.store.subscriptions.values() if s.product_id == pid]
            if subs and req.query.get("deleteSubscriptions", "").lower() != "true":
                raise ArmError(
                    409,
                    "Conflict",
                    f"Product '{pid}' has {len(subs)} subscription(s); pass "
                    "deleteSubscriptions=true to delete them with it.",
                )
            for sub in subs:
                self.store.delete_subscription(sub.sid)
            self.store.delete_product(pid)  # and its policy, API links and group links
            return Response(200)
        product = self._target(req, existing, lambda: self._get_product(pid))
        props = _body_properties(req)
        display = _str(props, "displayName", required=product is None, max_len=300)
        description = _str(props, "description")
        terms = _str(props, "terms")
        sub_required = _bool(props, "subscriptionRequired")
        approval = _bool(props, "approvalRequired")
        state = _choice(props, "state", PRODUCT_STATES)
        limit = props.get("subscriptionsLimit")
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
            raise validation("subscriptionsLimit", "must be a whole number of zero or more")
        created = product is None
        if product is None:
            assert display is not None
            required = True if sub_required is None else sub_required
            product = Product(
                pid=pid,
                display_name=display,
                description=description,
                terms=terms,
                subscription_required=required,
                approval_required=(approval if approval is not None else False) if required else approval,
                subscriptions_limit=limit,
                state=state or "notPublished",
            )
            self.store.add_product(product)  # linked to Administrators, as every new product is
        else:
            product.display_name = display or product.display_name
            product.description = description if description is not None else product.description
            product.terms = terms if terms is not None else product.terms
            product.subscription_required = sub_required if sub_required is not None else product.subscription_required
            product.approval_required = approval if approval is not None else product.approval_required
            product.subscriptions_limit = limit if limit is not None else product.subscriptions_limit
            product.state = state or product.state
            product.etag = new_etag()
        return self._with_etag(Response.json(self._product_json(product), 201 if created else 200), product.etag)

    def product_subscriptions(self, req: Request, pid: str) -> Response:
        self._get_product(_check_name("productId", pid))
        return self._list_subs(req, lambda s: s.product_id == pid)

    # ---- product policies --------------------------------------------------------------------
    def _policy_json(self, pid: str, policy: Policy, fmt: str | None) -> dict[str, Any]:
        props: dict[str, Any] = {"value": policy.value}
        if fmt is not None:
            props["format"] = fmt
        return {
            "id": self._id("products", pid, "policies", "policy"),
            "type": "Microsoft.ApiManagement/service/products/policies",
            "name": "policy",
            "properties": props,
        }

    def list_product_policies(self, req: Request, pid: str) -> Response:
        self._get_product(_check_name("productId", pid))
        policy = self.store.policies.get(pid)
        items = [self._policy_json(pid, policy, None)] if policy else []
        return Response.json({"value": items, "count": len(items)})

    def product_policy(self, req: Request, pid: str, policy: str) -> Response:
        pid = _check_name("productId", pid)
        if policy != "policy":
            raise validation("policyId", f"'{policy}' is not a policy identifier; the only one is 'policy'")
        self._get_product(pid)
        existing = self.store.policies.get(pid)
        if req.method in ("GET", "HEAD"):
            if existing is None:
                raise not_found("Policy", f"{pid}/policy")
            fmt = req.query.get("format")
            if fmt is not None and fmt not in ("xml", "rawxml"):
                raise validation("format", f"'{fmt}' is not one of xml, rawxml")
            return self._with_etag(Response.json(self._policy_json(pid, existing, fmt)), existing.etag)
        if req.method == "DELETE":
            if existing is None:
                return Response(204)
            _if_match(req, existing.etag, required=True)
            del self.store.policies[pid]
            return Response(200)
        if existing is not None:
            _if_match(req, existing.etag, required=False)
        props = _body_properties(req)
        fmt = _choice(props, "format", ("xml", "rawxml", "xml-link", "rawxml-link")) or "xml"
        if fmt.endswith("-link"):
            raise validation("format", "linked policies (xml-link, rawxml-link) cannot be fetched offline")
        value = _str(props, "value", required=True, max_len=1_000_000)
        assert value is not None
        try:
            limits = parse_policy(value)
        except PolicyError as exc:
            raise validation("value", str(exc)) from None
        self._refuse_policies_of_other_tiers(limits)
        stored = Policy(value=value, fmt=fmt, limits=limits)
        self.store.policies[pid] = stored
        return self._with_etag(
            Response.json(self._policy_json(pid, stored, None), 200 if existing else 201), stored.etag
        )

    def _refuse_policies_of_other_tiers(self, limits: list[Limit]) -> None:
        # quota-by-key "APPLIES TO: Developer | Basic | Standard | Premium"; APIM refuses a policy its
        # tier lacks with "Error in element '...' on line L, column C: Policy is not allowed in '...' sku".
        for limit in limits:
            if limit.kind == "quota-by-key" and self.emu.is_v2:
                raise incorrect_values(
                    "representation",
                    f"Error in element '{limit.kind}' on line {limit.line}, "
                    f"column {limit.column}: Policy is not allowed in '{self.emu.tier}' sku",
                )

    # ---- the service itself --------------------------------------------------------------------
    def service(self, req: Request) -> Response:
        """ApiManagementService_Get, shaped like ApiManagementServiceGetService.json."""
        emu = self.emu
        gateway_host = (emu.gateway_url or "").split("://")[-1]
        props: dict[str, Any] = {
            "publisherEmail": self.store.publisher_email,
            "publisherName": PUBLISHER_NAME,
            "notificationSenderEmail": "apimgmt-noreply@mail.windowsazure.com",
            "provisioningState": "Succeeded",
            "targetProvisioningState": "",
            "createdAtUtc": iso(emu.created),
            "gatewayUrl": emu.gateway_url,
            "developerPortalUrl": emu.portal_url,
            "hostnameConfigurations": [
                {
                    "type": "Proxy",
                    "hostName": gateway_host,
                    "negotiateClientCertificate": False,
                    "defaultSslBinding": False,
                    "certificateSource": "BuiltIn",
                }
            ],
            "publicIPAddresses": ["127.0.0.1"],
            "virtualNetworkType": "None",
            "disableGateway": False,
            "publicNetworkAccess": "Enabled",
            "platformVersion": "mtv1" if emu.is_v2 else "stv2",
        }
        body = {
            "id": emu.service_id,
            "name": emu.service_name,
            "type": "Microsoft.ApiManagement/service",
            "tags": {},
            "location": LOCATION,
            "etag": "AAAAAAAAAAA=",
            "properties": props,
            "sku": {"name": emu.tier, "capacity": 1},
        }
        return self._with_etag(Response.json(body), '"AAAAAAAAAAA="')

    def operation_result(self, req: Request, op: str) -> Response:
        """The Azure-AsyncOperation URL of an API create: the emulator finishes at once, so Succeeded."""
        done = self.operations.get(op)
        if done is None:
            raise not_found("Operation", op)
        return Response.json(
            {
                "id": self._id("tenant", "operationResults", op),
                "name": op,
                "status": "Succeeded",
                "startTime": iso(done),
                "endTime": iso(done),
            }
        )

    # ---- APIs ------------------------------------------------------------------------------------
    def _api_properties(self, api: Api, *, single: bool) -> dict[str, Any]:
        """ApiContractProperties as the samples show them: lists (ApiManagementListApis.json) leave out
        subscriptionKeyParameterNames and isOnline, single answers carry them."""
        props: dict[str, Any] = {"displayName": api.display_name, "apiRevision": "1"}
        if api.description is not None:
            props["description"] = api.description
        if api.service_url is not None:
            props["serviceUrl"] = api.service_url
        props["path"] = api.path
        props["protocols"] = list(api.protocols)
        if single:
            props["subscriptionKeyParameterNames"] = {"header": api.key_header, "query": api.key_query}
        props["subscriptionRequired"] = api.subscription_required
        props["isCurrent"] = True
        if single:
            props["isOnline"] = True
        return props

    def _api_json(self, api: Api, *, single: bool = True) -> dict[str, Any]:
        return {
            "id": self._id("apis", api.aid),
            "type": "Microsoft.ApiManagement/service/apis",
            "name": api.aid,
            "properties": self._api_properties(api, single=single),
        }

    def _get_api(self, aid: str) -> Api:
        api = self.store.apis.get(aid)
        if api is None:
            raise not_found("Api", aid)
        return api

    def list_apis(self, req: Request) -> Response:
        top, skip = arm.paging(req)
        pred = odata.matcher(odata.parse_filter(req.query.get("$filter")), _API_FILTER)
        apis = [a for a in self.store.apis.values() if pred(a)]
        return Response.json(arm.page(req, apis, top, skip, lambda a: self._api_json(a, single=False), last_link=""))

    def api(self, req: Request, aid: str) -> Response:
        aid = _check_name("apiId", aid)
        if ";rev=" in aid:
            raise validation("apiId", "API revisions (;rev=n) are not emulated")
        existing = self.store.apis.get(aid)
        if req.method in ("GET", "HEAD"):
            found = self._get_api(aid)
            return self._with_etag(Response.json(self._api_json(found)), found.etag)
        if req.method == "DELETE":
            if existing is not None:
                _if_match(req, existing.etag, required=True)
                self.store.delete_api(aid)  # and its product links
            return Response(204)  # Api_Delete: "204 The API was successfully deleted."
        api = self._target(req, existing, lambda: self._get_api(aid))
        creating = api is None
        change = self._api_change(_body_properties(req), creating)
        if change.get("path") is not None:
            self._check_unique_path(aid, change["path"])
        if api is None:
            api = Api(
                aid=aid,
                display_name=change["displayName"],
                path=change["path"],
                protocols=change.get("protocols") or ["https"],
                service_url=change.get("serviceUrl"),
                description=change.get("description"),
                subscription_required=change.get("subscriptionRequired", True) is not False,
            )
            self.store.apis[aid] = api
        else:
            for name, attr in (
                ("displayName", "display_name"),
                ("path", "path"),
                ("protocols", "protocols"),
                ("serviceUrl", "service_url"),
                ("description", "description"),
                ("subscriptionRequired", "subscription_required"),
            ):
                if change.get(name) is not None:
                    setattr(api, attr, change[name])
            api.etag = new_etag()
        names = change.get("subscriptionKeyParameterNames") or {}
        api.key_header = names.get("header") or api.key_header or DEFAULT_KEY_HEADER
        api.key_query = names.get("query") or api.key_query or DEFAULT_KEY_QUERY
        if req.method == "PATCH":
            return self._with_etag(Response.json(self._api_json(api)), api.etag)
        return self._api_long_running_answer(req, api, 201 if creating else 200)

    @staticmethod
    def _api_change(props: dict[str, Any], creating: bool) -> dict[str, Any]:
        """The validated ApiCreateOrUpdateProperties / ApiContractUpdateProperties that were sent."""
        change: dict[str, Any] = {
            "displayName": _str(props, "displayName", required=creating, max_len=300),
            "serviceUrl": _str(props, "serviceUrl", max_len=2000),
            "description": _str(props, "description", max_len=100_000),
            "subscriptionRequired": _bool(props, "subscriptionRequired"),
        }
        path = props.get("path")
        if path is None and creating:
            raise validation("path", "is required")
        if path is not None and (not isinstance(path, str) or len(path) > 400):
            raise validation("path", "must be a string of at most 400 characters")
        change["path"] = path.strip("/") if isinstance(path, str) else None
        url = change["serviceUrl"]
        if url is not None and not re.match(r"^https?://[^/\s]+", url):
            raise validation("serviceUrl", f"'{url}' is not an absolute http(s) URL")
        protocols = props.get("protocols")
        if protocols is not None and (
            not isinstance(protocols, list) or not protocols or any(p not in API_PROTOCOLS for p in protocols)
        ):
            raise validation("protocols", f"must be a non-empty list of {', '.join(API_PROTOCOLS)}")
        change["protocols"] = list(protocols) if protocols is not None else None
        names = props.get("subscriptionKeyParameterNames")
        if names is not None and not (
            isinstance(names, dict) and all(isinstance(names.get(k, ""), str) for k in ("header", "query"))
        ):
            raise validation("subscriptionKeyParameterNames", 'must be {"header": "...", "query": "..."}')
        change["subscriptionKeyParameterNames"] = names
        return change

    def _check_unique_path(self, aid: str, path: str) -> None:
        for other in self.store.apis.values():
            if other.aid != aid and other.path.lower() == path.lower():
                # Verbatim form (two spaces included) from a real answer, Azure/apiops#343.
                raise incorrect_values(
                    "path",
                    f"Cannot create API '{aid}' with the same Path '{path}' as API "
                    f"'{other.aid}'  unless it's a part of the same version set",
                )

    def _api_long_running_answer(self, req: Request, api: Api, status: int) -> Response:
        """Api_CreateOrUpdate is a long-running operation (final-state-via location). As in
        ApiManagementCreateApi.json, the answer carries the API with provisioningState InProgress and the
        Location / Azure-AsyncOperation URLs; the operation has already succeeded when the SDK polls."""
        op = secrets.token_hex(12)
        self.operations[op] = self.emu.now()
        body = self._api_json(api)
        body["properties"]["provisioningState"] = "InProgress"
        base = f"{req.base_url}{self.emu.service_id}"
        headers = {
            "ETag": api.etag,
            "Location": f"{base}/apis/{api.aid}?api-version={arm.API_VERSION}&asyncId={op}&asyncCode={status}",
            "Azure-AsyncOperation": f"{base}/tenant/operationResults/{op}?api-version={arm.API_VERSION}",
        }
        return Response.json(body, status, headers)

    # ---- product APIs and product groups ------------------------------------------------------------
    def product_apis(self, req: Request, pid: str) -> Response:
        product = self._get_product(_check_name("productId", pid))
        top, skip = arm.paging(req)
        pred = odata.matcher(
            odata.parse_filter(req.query.get("$filter")), {k: v for k, v in _API_FILTER.items() if k != "isCurrent"}
        )
        apis = [a for a in self.store.apis_of(product.pid) if pred(a)]

        def render(api: Api) -> dict[str, Any]:
            return {
                "id": self._id("products", product.pid, "apis", api.aid),
                "type": "Microsoft.ApiManagement/service/products/apis",
                "name": api.aid,
                "properties": self._api_properties(api, single=False),
            }

        return Response.json(arm.page(req, apis, top, skip, render, last_link=""))

    def product_api(self, req: Request, pid: str, aid: str) -> Response:
        product = self._get_product(_check_name("productId", pid))
        aid = _check_name("apiId", aid)
        links = self.store.product_apis.setdefault(product.pid, {})
        linked = aid in links
        if req.method == "HEAD":
            if not linked:
                raise ArmError(404, "ResourceNotFound", f"API '{aid}' is not part of product '{product.pid}'.")
            return Response(204)
        if req.method == "DELETE":
            links.pop(aid, None)
            return Response(200 if linked else 204)
        api = self._get_api(aid)
        links[aid] = None
        # ApiManagementCreateProductApi.json: the API itself (its /apis/{id} id and type), no isOnline.
        body = self._api_json(api)
        del body["properties"]["isOnline"]
        return Response.json(body, 200 if linked else 201)

    def product_groups(self, req: Request, pid: str) -> Response:
        product = self._get_product(_check_name("productId", pid))
        top, skip = arm.paging(req)
        pred = odata.matcher(
            odata.parse_filter(req.query.get("$filter")),
            {k: _GROUP_FILTER[k] for k in ("name", "displayName", "description")},
        )
        groups = [g for g in self.store.groups_of_product(product.pid) if pred(g)]

        def render(group: Group) -> dict[str, Any]:
            return {
                "id": self._id("products", product.pid, "groups", group.gid),
                "type": "Microsoft.ApiManagement/service/products/groups",
                "name": group.gid,
                "properties": self._group_properties(group),
            }

        return Response.json(arm.page(req, groups, top, skip, render, last_link=""))

    def product_group(self, req: Request, pid: str, gid: str) -> Response:
        product = self._get_product(_check_name("productId", pid))
        gid = _check_name("groupId", gid)
        links = self.store.product_groups.setdefault(product.pid, {})
        linked = gid in links
        if req.method == "HEAD":
            if not linked:
                raise ArmError(404, "ResourceNotFound", f"Group '{gid}' is not linked to product '{product.pid}'.")
            return Response(204)
        if req.method == "DELETE":
            links.pop(gid, None)
            return Response(200 if linked else 204)
        group = self._get_group(gid)
        links[gid] = None
        # ApiManagementCreateProductGroup.json: the group's /groups/{id} id with the products/groups type.
        body = self._group_json(group)
        body["type"] = "Microsoft.ApiManagement/service/products/groups"
        return Response.json(body, 200 if linked else 201)

    # ---- quota counters (quota-by-key) -----------------------------------------------------------
    def _refuse_on_v2(self) -> None:
        if self.emu.is_v2:
            raise ArmError(400, "MethodNotAllowedInPricingTier", f"Method not allowed in {self.emu.tier} pricing tier")

    @staticmethod
    def _quota_json(period: QuotaPeriod) -> dict[str, Any]:
        def stamp(value: datetime | None) -> str | None:
            # %Y would print year 1 (first-period-start's default) without its leading zeros
            return f"{value.year:04d}-{value:%m-%dT%H:%M:%S}Z" if value is not None else None

        return {
            "counterKey": period.counter_key,
            "periodKey": period.period_key,
            "periodStartTime": stamp(period.start),
            "periodEndTime": stamp(period.end),
            "value": {"callsCount": period.calls, "kbTransferred": period.kb},
        }

    @staticmethod
    def _counter_values(req: Request) -> tuple[int | None, float | None]:
        props = _body_properties(req)
        calls, kb = props.get("callsCount"), props.get("kbTransferred")
        if calls is not None and (isinstance(calls, bool) or not isinstance(calls, int) or calls < 0):
            raise validation("callsCount", "must be a whole number of zero or more")
        if kb is not None and (isinstance(kb, bool) or not isinstance(kb, int | float) or kb < 0):
            raise validation("kbTransferred", "must be a number of zero or more")
        return calls, None if kb is None else float(kb)

    def quota_counters(self, req: Request, key: str) -> Response:
        """QuotaByCounterKeys_ListByService (GET) and QuotaByCounterKeys_Update (PATCH: every current period)."""
        self._refuse_on_v2()
        key = unquote(key)
        now = self.emu.now()
        if req.method == "PATCH":
            calls, kb = self._counter_values(req)
            periods = self.emu.limiter.set_counters(key, now, calls, kb)
        else:
            periods = self.emu.limiter.counters(key, now)
        if periods is None:
            raise ArmError(404, "ResourceNotFound", f"Quota counter '{key}' not found.")
        return Response.json({"value": [self._quota_json(p) for p in periods], "count": len(periods), "nextLink": ""})

    def quota_period(self, req: Request, key: str, period: str) -> Response:
        """QuotaByPeriodKeys_Get and QuotaByPeriodKeys_Update: one period of one counter key."""
        self._refuse_on_v2()
        key, period = unquote(key), unquote(period)
        now = self.emu.now()
        if req.method == "PATCH":
            calls, kb = self._counter_values(req)
            periods = self.emu.limiter.set_counters(key, now, calls, kb, period_key=period)
        else:
            periods = [p for p in self.emu.limiter.counters(key, now) or [] if p.period_key == period] or None
        if periods is None:
            raise ArmError(404, "ResourceNotFound", f"Quota counter '{key}' has no period '{period}'.")
        return Response.json(self._quota_json(periods[0]))

    # ---- subscriptions -----------------------------------------------------------------------
    def _subscription_json(self, sub: Subscription) -> dict[str, Any]:
        props: dict[str, Any] = {}
        if sub.owner_uid is not None:
            props["ownerId"] = self._id("users", sub.owner_uid)
        props["scope"] = self.emu.service_id + sub.scope
        props["displayName"] = sub.display_name
        props["state"] = sub.state
        props["createdDate"] = iso(sub.created_date)
        for key, value in (
            ("startDate", sub.start_date),
            ("expirationDate", sub.expiration_date),
            ("endDate", sub.end_date),
            ("notificationDate", sub.notification_date),
        ):
            if value is not None:
                props[key] = iso(value)
        if sub.state_comment is not None:
            props["stateComment"] = sub.state_comment
        if sub.allow_tracing is not None:
            props["allowTracing"] = sub.allow_tracing
        return {
            "id": self._id("subscriptions", sub.sid),
            "type": "Microsoft.ApiManagement/service/subscriptions",
            "name": sub.sid,
            "properties": props,
        }

    def _get_sub(self, sid: str) -> Subscription:
        sub = self.store.subscriptions.get(sid)
        if sub is None:
            raise not_found("Subscription", sid)
        return sub

    def _list_subs(self, req: Request, base: Callable[[Subscription], bool]) -> Response:
        top, skip = arm.paging(req)
        clauses = [self._normalise_id_clause(c) for c in odata.parse_filter(req.query.get("$filter"))]
        pred = odata.matcher(
            clauses,
            {
                "name": lambda s: s.sid,
                "displayName": lambda s: s.display_name,
                "state": lambda s: s.state,
                "stateComment": lambda s: s.state_comment,
                "ownerId": lambda s: s.owner_uid,
                "userId": lambda s: s.owner_uid,
                "user": lambda s: s.owner_uid,
                "scope": lambda s: s.scope,
                "productId": lambda s: s.product_id,
                "product": lambda s: s.product_id,
                "createdDate": lambda s: s.created_date,
            },
        )
        subs = [s for s in self.store.subscriptions.values() if base(s) and pred(s)]
        return Response.json(arm.page(req, subs, top, skip, self._subscription_json))

    def list_subscriptions(self, req: Request) -> Response:
        return self._list_subs(req, lambda s: True)

    def _normalise_id_clause(self, clause: odata.Clause) -> odata.Clause:
        """Accept "/users/x", the full resource id or "x" for id-valued filters."""
        field = clause.field.lower()
        if not isinstance(clause.value, str):
            return clause
        if field in ("ownerid", "userid", "user"):
            name = arm.relative_id(clause.value, "users", self.emu.service_id)
        elif field in ("productid", "product"):
            name = arm.relative_id(clause.value, "products", self.emu.service_id)
        elif field == "scope":
            rel = self._scope(clause.value, strict=False)
            return odata.Clause(clause.field, clause.op, rel)
        else:
            return clause
        return odata.Clause(clause.field, clause.op, name if name is not None else clause.value)

    def _scope(self, value: str, *, strict: bool = True) -> str:
        """The service-relative scope ("/products/x", "/apis", "/apis/x") of a relative or full id."""
        lowered, prefix = value.lower(), self.emu.service_id.lower()
        rel = value[len(prefix) :] if lowered.startswith(prefix) else value
        product = arm.relative_id(rel, "products", self.emu.service_id)
        if product is not None:
            if strict and product not in self.store.products:
                raise validation("scope", f"product '{product}' does not exist")
            return f"/products/{product}"
        if rel.rstrip("/").lower() == "/apis" or arm.relative_id(rel, "apis", self.emu.service_id):
            return rel.rstrip("/")
        if strict:
            raise validation("scope", f"'{value}' is not a scope; use /products/{{productId}} or its full resource id")
        return value

    def subscription(self, req: Request, sid: str) -> Response:
        sid = _check_name("sid", sid)
        existing = self.store.subscriptions.get(sid)
        if req.method in ("GET", "HEAD"):
            found = self._get_sub(sid)
            return self._with_etag(Response.json(self._subscription_json(found)), found.etag)
        if req.method == "DELETE":
            if existing is None:
                return Response(204)
            _if_match(req, existing.etag, required=True)
            self.store.delete_subscription(sid)
            return Response(200)
        sub = self._target(req, existing, lambda: self._get_sub(sid))
        props = _body_properties(req)
        creating = sub is None
        scope_raw = _str(props, "scope", required=creating)
        display = _str(props, "displayName", required=creating, max_len=100)
        owner_raw = _str(props, "ownerId")
        state = _choice(props, "state", SUBSCRIPTION_STATES)
        comment = _str(props, "stateComment")
        primary = _str(props, "primaryKey", max_len=256)
        secondary = _str(props, "secondaryKey", max_len=256)
        tracing = _bool(props, "allowTracing")
        expiration = arm.parse_time(props.get("expirationDate"), "expirationDate")
        self._check_keys(sid, primary=primary, secondary=secondary)
        scope = self._scope(scope_raw) if scope_raw is not None else None
        owner = self._owner(owner_raw) if owner_raw is not None else None
        now = self.emu.now()
        if sub is None:
            assert scope is not None
            assert display is not None
            sub = Subscription(
                sid=sid,
                owner_uid=owner,
                scope=scope,
                display_name=display,
                state=state or "submitted",
                primary_key=primary or new_key(),
                secondary_key=secondary or new_key(),
                created_date=now,
                expiration_date=expiration,
                state_comment=comment,
                allow_tracing=tracing,
            )
            self._apply_state_dates(sub, None, now)
            self.store.put_subscription(sub)
            return self._with_etag(Response.json(self._subscription_json(sub), 201), sub.etag)
        before = sub.state
        sub.scope = scope or sub.scope
        sub.display_name = display or sub.display_name
        sub.owner_uid = owner or sub.owner_uid
        sub.state = state or sub.state
        sub.state_comment = comment if comment is not None else sub.state_comment
        sub.allow_tracing = tracing if tracing is not None else sub.allow_tracing
        sub.expiration_date = expiration or sub.expiration_date
        self.store.set_keys(sub, primary, secondary)
        self._apply_state_dates(sub, before, now)
        sub.etag = new_etag()
        return self._with_etag(Response.json(self._subscription_json(sub)), sub.etag)

    def _check_keys(self, sid: str, **keys: str | None) -> None:
        for name, key in keys.items():
            if key is not None and not key.strip():
                raise validation(f"{name}Key", "must not be empty")
            if key is not None and self.store.keys.get(key, sid) != sid:
                raise validation(f"{name}Key", "is already used by another subscription")

    def _owner(self, owner_raw: str) -> str:
        owner = arm.relative_id(owner_raw, "users", self.emu.service_id)
        if owner is None:
            raise validation("ownerId", f"'{owner_raw}' is not a user id; use /users/{{userId}} or the full id")
        if owner not in self.store.users:
            raise validation("ownerId", f"user '{owner}' does not exist")
        return owner

    @staticmethod
    def _apply_state_dates(sub: Subscription, before: str | None, now: datetime) -> None:
        # APIM stamps startDate on activation and endDate when a subscription stops for good.
        if sub.state == before:
            return
        if sub.state == "active" and sub.start_date is None:
            sub.start_date = now
        if sub.state in ("cancelled", "expired", "rejected"):
            sub.end_date = now

    def subscription_secrets(self, req: Request, sid: str) -> Response:
        sub = self._get_sub(_check_name("sid", sid))
        return self._with_etag(
            Response.json({"primaryKey": sub.primary_key, "secondaryKey": sub.secondary_key}), sub.etag
        )

    def regenerate(self, req: Request, sid: str, which: str) -> Response:
        sub = self._get_sub(_check_name("sid", sid))
        if which == "Primary":
            self.store.set_keys(sub, primary=new_key())
        else:
            self.store.set_keys(sub, secondary=new_key())
        sub.etag = new_etag()
        return Response(204)

    # ---- reports -----------------------------------------------------------------------------
    def reports(self, req: Request, group: str) -> Response:
        # Built-in analytics and its reports exist in the classic tiers only (README, "Tiers").
        self._refuse_on_v2()
        raw = req.query.get("$filter")
        if not raw:
            raise validation(
                "$filter",
                "is required, e.g. timestamp ge datetime'2024-06-01T00:00:00' and "
                "timestamp le datetime'2024-06-02T00:00:00'",
            )
        top, skip = arm.paging(req)
        window = Window()
        wanted: dict[str, str] = {}
        for clause in odata.parse_filter(raw):
            field = clause.field.lower()
            if field == "timestamp":
                # The spec's filter table: timestamp supports only ge and le.
                if not isinstance(clause.value, datetime) or clause.op not in ("ge", "le"):
                    raise validation(
                        "$filter",
                        f"'timestamp {clause.op}' is not supported: timestamp takes ge and "
                        "le with datetime'...' values",
                    )
                ts = clause.value.timestamp()
                if clause.op == "ge":
                    window = Window(ts, True, window.upper, window.upper_inclusive)
                else:
                    window = Window(window.lower, window.lower_inclusive, ts, True)
            elif field in ("subscriptionid", "productid", "userid") and clause.op == "eq":
                collection = {"subscriptionid": "subscriptions", "productid": "products", "userid": "users"}[field]
                value = str(clause.value)
                wanted[field] = arm.relative_id(value, collection, self.emu.service_id) or value
            else:
                raise validation(
                    "$filter",
                    f"'{clause.field} {clause.op}' is not supported here; use timestamp "
                    "ge/le and optionally subscriptionId, productId or userId eq",
                )
        if window.lower is None:
            raise validation("$filter", "needs a lower bound: timestamp ge datetime'...'")
        visible_until = self.emu.now().timestamp() - self.emu.report_lag_seconds
        where = {field.removesuffix("id"): value for field, value in wanted.items()}  # subscription, product, user
        rows = self.emu.usage.rows(window, visible_until, group.lower(), where)
        return Response.json(arm.page(req, rows, top, skip, lambda r: self._report_json(r, group), last_link=""))

    def _report_json(self, row: Any, group: str) -> dict[str, Any]:
        success, blocked, failed, other = row.counts
        record: dict[str, Any] = {"name": ""}
        if group == "Product":
            product = self.store.products.get(row.product_id or "")
            record["name"] = product.display_name if product else ""
        elif group == "User":
            user = self.store.users.get(row.user_id or "")
            record["name"] = f"{user.first_name} {user.last_name}" if user else ""
        if group in ("Subscription", "User"):
            record["userId"] = f"/users/{row.user_id}" if row.user_id else None
        if group in ("Subscription", "Product"):
            record["productId"] = f"/products/{row.product_id}" if row.product_id else None
        if group == "Subscription":
            record["subscriptionId"] = f"/subscriptions/{row.subscription_id}"
        record.update(
            {
                "callCountSuccess": success,
                "callCountBlocked": blocked,
                "callCountFailed": failed,
                "callCountOther": other,
                "callCountTotal": success + blocked + failed + other,
                "bandwidth": 0,
                "cacheHitCount": 0,
                "cacheMissCount": 0,
                "apiTimeAvg": 0,
                "apiTimeMin": 0,
                "apiTimeMax": 0,
                "serviceTimeAvg": 0,
                "serviceTimeMin": 0,
                "serviceTimeMax": 0,
            }
        )
        return record

    # ---- delegation settings -----------------------------------------------------------------
    def _delegation_json(self, settings: DelegationSettings) -> dict[str, Any]:
        props: dict[str, Any] = {
            "url": settings.url,
            "subscriptions": {"enabled": settings.subscriptions_enabled},
            "userRegistration": {"enabled": settings.user_registration_enabled},
        }
        return {
            "id": self._id("portalsettings", "delegation"),
            "type": "Microsoft.ApiManagement/service/portalsettings",
            "name": "delegation",
            "properties": props,
        }

    def delegation(self, req: Request) -> Response:
        settings = self.store.delegation
        if req.method in ("GET", "HEAD"):
            return self._with_etag(Response.json(self._delegation_json(settings)), settings.etag)
        if req.method == "PATCH":
            _if_match(req, settings.etag, required=True)
        else:
            _if_match(req, settings.etag, required=False)
        props = _body_properties(req)
        url = _str(props, "url")
        if url is not None and not re.match(r"^https?://[^/\s]+", url):
            raise validation("url", f"'{url}' is not an absolute http(s) URL")
        key = _str(props, "validationKey")
        if key is not None:
            try:
                if len(base64.b64decode(key, validate=True)) < 16:
                    raise validation("validationKey", "must decode to at least 16 bytes")
            except (binascii.Error, ValueError):
                raise validation("validationKey", "must be base64, e.g. base64.b64encode(os.urandom(64))") from None
        flags: dict[str, bool] = {}
        for section in ("subscriptions", "userRegistration"):
            value = props.get(section)
            if value is None:
                continue
            if not isinstance(value, dict) or not isinstance(value.get("enabled"), bool):
                raise validation(f"{section}.enabled", 'must be an object like {"enabled": true}')
            flags[section] = value["enabled"]
        settings.url = url if url is not None else settings.url
        settings.validation_key = key if key is not None else settings.validation_key
        settings.subscriptions_enabled = flags.get("subscriptions", settings.subscriptions_enabled)
        settings.user_registration_enabled = flags.get("userRegistration", settings.user_registration_enabled)
        settings.etag = new_etag()
        if req.method == "PATCH":
            return self._with_etag(Response(204), settings.etag)
        return self._with_etag(Response.json(self._delegation_json(settings)), settings.etag)

    def delegation_secrets(self, req: Request) -> Response:
        return Response.json({"validationKey": self.store.delegation.validation_key})


class _WithHeaders(ArmError):
    def __init__(self, inner: ArmError, headers: dict[str, str]) -> None:
        super().__init__(inner.status, inner.code, inner.message)
        self.headers = headers

    def response(self) -> Response:
        resp = super().response()
        resp.headers.update(self.headers)
        return resp
