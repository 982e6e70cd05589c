"""The APIM operations the consumer portal needs, over the real management client."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.mgmt.apimanagement.models import (
    SubscriptionContract,
    SubscriptionCreateParameters,
    SubscriptionUpdateParameters,
    UserContract,
    UserCreateParameters,
    UserTokenParameters,
    UserUpdateParameters,
)

from billing.adapters.apim_client import ApimService
from billing.portal.ports import ApimSubscription

ADMINISTRATOR_USER_ID = "1"
# Outcome class of the model -> the report field that counts it (blocked calls are never billed).
_OUTCOME_FIELDS = {"success": "call_count_success", "failed": "call_count_failed"}


def _odata_string(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _odata_time(value: datetime) -> str:
    return "datetime'" + value.strftime("%Y-%m-%dT%H:%M:%S") + "'"


def _last_segment(resource_id: str | None, collection: str) -> str | None:
    if not resource_id:
        return None
    marker = f"/{collection}/"
    index = resource_id.lower().rfind(marker)
    return resource_id[index + len(marker) :] if index >= 0 else None


def _subscription(contract: SubscriptionContract) -> ApimSubscription:
    return ApimSubscription(
        sid=str(contract.name),
        owner_id=_last_segment(contract.owner_id, "users"),
        product_id=_last_segment(contract.scope, "products"),
        display_name=contract.display_name or str(contract.name),
        state=str(contract.state),
        start=contract.start_date,
        created=contract.created_date,
    )


def _unknown(exc: HttpResponseError) -> bool:
    """404, or the 400 ARM answers for an id it rejects (characters or length a name cannot have):
    either way APIM has no such entity, which a signed link from a real portal never names."""
    return exc.status_code in (400, 404)


class PortalApim:
    def __init__(self, service: ApimService) -> None:
        self._s = service
        self._c = service.client

    def _at(self) -> tuple[str, str]:
        return self._s.resource_group, self._s.service_name

    def find_user_by_email(self, email: str) -> str | None:
        for user in self._c.user.list_by_service(*self._at(), filter=f"email eq {_odata_string(email)}"):
            if (user.email or "").lower() == email.lower():
                return str(user.name)
        return None

    def is_administrator(self, uid: str) -> bool:
        # Every instance's administrator is user 1; the Administrators group is system-managed and
        # holds it (Microsoft: "How to create and use groups"). Its resource name is "administrators"
        # on current instances and an id on older ones, so the built-in system group is matched by
        # its fixed display name too.
        if uid == ADMINISTRATOR_USER_ID:
            return True
        try:
            groups = list(self._c.user_group.list(*self._at(), uid))
        except ResourceNotFoundError:
            return False
        return any(
            str(g.name).lower() == "administrators" or (bool(g.built_in) and g.display_name == "Administrators")
            for g in groups
        )

    def create_user(self, uid: str, email: str, first_name: str, last_name: str) -> None:
        params = UserCreateParameters(email=email, first_name=first_name, last_name=last_name, confirmation="signup")
        self._c.user.create_or_update(*self._at(), uid, params)

    def update_user_names(self, uid: str, first_name: str, last_name: str) -> None:
        for _ in range(3):  # optimistic concurrency: read again when an administrator changed the user meanwhile
            user, etag = self._user_with_etag(uid)
            # UserUpdateParameters defaults `state` to "active": send the current state so that a
            # name change never unblocks a blocked user.
            params = UserUpdateParameters(first_name=first_name, last_name=last_name, state=user.state or "active")
            try:
                self._c.user.update(*self._at(), uid, etag, params)
            except HttpResponseError as exc:
                if exc.status_code == 412:
                    continue
                raise
            return
        raise RuntimeError(f"APIM user {uid} kept changing while its names were updated")

    def _user_with_etag(self, uid: str) -> tuple[UserContract, str]:
        headers: dict[str, Any] = {}

        def keep_headers(_response: object, body: UserContract, found: dict[str, Any]) -> UserContract:
            headers.update(found)
            return body

        # `cls` is the generated client's documented hook for the response headers (the ETag).
        user = self._c.user.get(*self._at(), uid, cls=keep_headers)
        return user, str(headers.get("ETag") or "*")

    def delete_user(self, uid: str) -> None:
        # The subscriptions are cancelled before this; deleting them with the user removes the
        # consumer's personal data from APIM and frees the e-mail address for a later sign-up.
        try:
            self._c.user.begin_delete(*self._at(), uid, "*", delete_subscriptions=True, notify=False).result()
        except ResourceNotFoundError:
            return

    def user_email(self, uid: str) -> str | None:
        try:
            return self._c.user.get(*self._at(), uid).email
        except HttpResponseError as exc:
            if _unknown(exc):
                return None
            raise

    def sign_in_token(self, uid: str, expiry: datetime) -> str:
        params = UserTokenParameters(key_type="primary", expiry=expiry)
        return str(self._c.user.get_shared_access_token(*self._at(), uid, params).value)

    def user_subscriptions(self, uid: str) -> Sequence[ApimSubscription]:
        try:
            return [_subscription(c) for c in self._c.user_subscription.list(*self._at(), uid)]
        except ResourceNotFoundError:
            return []

    def get_subscription(self, sid: str) -> ApimSubscription | None:
        try:
            return _subscription(self._c.subscription.get(*self._at(), sid))
        except HttpResponseError as exc:
            if _unknown(exc):
                return None
            raise

    def create_subscription(self, sid: str, uid: str, product_id: str, name: str, state: str) -> None:
        params = SubscriptionCreateParameters(
            owner_id=f"/users/{uid}", scope=f"/products/{product_id}", display_name=name, state=state
        )
        self._c.subscription.create_or_update(*self._at(), sid, params)

    def set_subscription_state(self, sid: str, state: str, comment: str) -> None:
        params = SubscriptionUpdateParameters(state=state, state_comment=comment)
        self._c.subscription.update(*self._at(), sid, "*", params)
