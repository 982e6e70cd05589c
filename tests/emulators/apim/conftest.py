"""Fixtures for the APIM emulator's own tests: the emulator, the real client, a manual clock."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import pytest
from azure.core.exceptions import HttpResponseError
from azure.core.paging import ItemPaged
from azure.mgmt.apimanagement import ApiManagementClient
from azure.mgmt.apimanagement import models as m

from emulators.apim.pytest_plugin import apim_emulator  # noqa: F401 - re-exported fixture
from emulators.apim.server import ApimEmulator

_T = TypeVar("_T")


class ManualClock:
    """A clock that moves only when told to, so limits and report lag need no sleeping."""

    def __init__(self, start: datetime) -> None:
        self.current = start

    def __call__(self) -> datetime:
        return self.current

    def advance(self, **delta: float) -> None:
        self.current += timedelta(**delta)


@dataclass
class Apim:
    emu: ApimEmulator
    client: ApiManagementClient

    @property
    def rg(self) -> str:
        return self.emu.resource_group

    @property
    def svc(self) -> str:
        return self.emu.service_name

    def user(self, uid: str, email: str | None = None) -> m.UserContract:
        params = m.UserCreateParameters(email=email or f"{uid}@example.com", first_name="Ada", last_name="Lovelace")
        return self.client.user.create_or_update(self.rg, self.svc, uid, params)

    def api(self, aid: str, path: str | None = None, **props: Any) -> m.ApiContract:
        """An API (created if missing): the gateway routes /{path}/... to it."""
        params = m.ApiCreateOrUpdateParameter(
            display_name=aid.title(),
            path=aid if path is None else path,
            protocols=["https"],
            service_url=f"https://{aid}.example",
            **props,
        )
        return self.client.api.begin_create_or_update(self.rg, self.svc, aid, params).result()

    def product(
        self,
        pid: str,
        policy_xml: str | None = None,
        *,
        apis: tuple[str, ...] = ("echo",),
        groups: tuple[str, ...] = (),
    ) -> m.ProductContract:
        """A published product with the APIs (path = id, created if missing) and groups linked to it."""
        product = self.client.product.create_or_update(
            self.rg, self.svc, pid, m.ProductContract(display_name=pid.title(), state="published")
        )
        if policy_xml is not None:
            self.client.product_policy.create_or_update(
                self.rg, self.svc, pid, "policy", m.PolicyContract(value=policy_xml, format="xml")
            )
        for aid in apis:
            if aid not in self.emu.emu.store.apis:
                self.api(aid)
            self.client.product_api.create_or_update(self.rg, self.svc, pid, aid)
        for gid in groups:
            self.client.product_group.create_or_update(self.rg, self.svc, pid, gid)
        return product

    def subscription(self, sid: str, pid: str, uid: str, state: str = "active") -> m.SubscriptionContract:
        params = m.SubscriptionCreateParameters(
            owner_id=f"/users/{uid}", scope=f"/products/{pid}", display_name=sid, state=state
        )
        return self.client.subscription.create_or_update(self.rg, self.svc, sid, params)

    def key(self, sid: str) -> str:
        key = self.client.subscription.list_secrets(self.rg, self.svc, sid).primary_key
        assert key
        return key


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(datetime(2025, 3, 10, 12, 0, 0, tzinfo=UTC))


@pytest.fixture
def apim(apim_emulator: ApimEmulator) -> Iterator[Apim]:  # noqa: F811 - the fixture imported above
    # No client retries: a test that provokes a 429 or 5xx wants to see it.
    client = apim_emulator.management_client(retry_total=0)
    yield Apim(apim_emulator, client)
    client.close()


def policy(*inbound: str) -> str:
    """A product policy document as the app stores it."""
    body = "\n    ".join(("<base />", *inbound))
    return (
        f"<policies>\n  <inbound>\n    {body}\n  </inbound>\n  <backend><base /></backend>\n"
        "  <outbound><base /></outbound>\n  <on-error><base /></on-error>\n</policies>"
    )


def text(value: object) -> str:
    """A string the answer set on an SDK model. The models type their read-only fields (id, name, type)
    as None, as the client never sends them; the emulator's answers fill them in."""
    assert isinstance(value, str), value
    return value


def flag(value: object) -> bool:
    """A boolean the answer set on an SDK model (a read-only field, typed None like `text`'s)."""
    assert isinstance(value, bool), value
    return value


def listed(value: object) -> list[Any]:
    """A list the answer set on an SDK model (a read-only field, typed None like `text`'s)."""
    assert isinstance(value, list), value
    return value


@dataclass(frozen=True)
class ArmError:
    code: str
    message: str


def arm_error(raised: pytest.ExceptionInfo[HttpResponseError]) -> ArmError:
    """The ARM error body the client parsed from a refusal (the emulator always sends code and message)."""
    error = raised.value.error
    assert error is not None
    return ArmError(text(error.code), text(error.message))


def pages(listing: Iterable[_T]) -> list[list[_T]]:
    """A list call's answer page by page (the SDK answers an ItemPaged, typed as an Iterable)."""
    assert isinstance(listing, ItemPaged)
    return [list(page) for page in listing.by_page()]
