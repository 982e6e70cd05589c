"""The administrator user, the built-in groups and custom groups through the real azure-mgmt-apimanagement client.

Sources for each behaviour: the table in emulators/apim/README.md ("Users and groups").
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from typing import Any

import pytest
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.mgmt.apimanagement import models as m

from emulators.apim.server import ApimEmulator
from emulators.apim.state import DEFAULT_PUBLISHER_EMAIL
from tests.emulators.apim.conftest import Apim, ManualClock, flag, listed, pages, text

BUILT_IN = ["administrators", "developers", "guests"]
GROUP_PROPERTIES = {"displayName", "description", "builtIn", "type"}  # GroupContractProperties (no externalId)


class Raw:
    """The raw JSON body and status of the last response the client received."""

    def __init__(self) -> None:
        self.status = 0
        self.body: Any = None

    def hook(self) -> Callable[[Any], None]:
        def capture(pipeline_response: Any) -> None:
            self.status = pipeline_response.http_response.status_code
            text = pipeline_response.http_response.text()
            self.body = json.loads(text) if text else None

        return capture


def names(items: Any) -> list[str]:
    return [str(item.name) for item in items]


def refused(call: Callable[[], Any], status: int = 405) -> HttpResponseError:
    with pytest.raises(HttpResponseError) as err:
        call()
    assert err.value.status_code == status, err.value.message
    return err.value


# ---- a new service ----------------------------------------------------------------------------
def test_new_service_has_the_administrator_and_the_built_in_groups(apim: Apim) -> None:
    c, rg, svc = apim.client, apim.rg, apim.svc
    admin = c.user.get(rg, svc, "1")
    assert (admin.first_name, admin.last_name, admin.email, admin.state) == (
        "Administrator",
        "",
        DEFAULT_PUBLISHER_EMAIL,
        "active",
    )
    assert [(i.provider, i.id) for i in admin.identities or []] == [("Azure", DEFAULT_PUBLISHER_EMAIL)]
    assert names(c.user.list_by_service(rg, svc)) == ["1"]

    groups = list(c.group.list_by_service(rg, svc))
    assert names(groups) == BUILT_IN
    assert [g.display_name for g in groups] == ["Administrators", "Developers", "Guests"]
    assert all(g.built_in is True and g.type_properties_type == "system" for g in groups)
    assert all(g.description and "built-in group" in g.description for g in groups)

    assert names(c.group_user.list(rg, svc, "administrators")) == ["1"]
    assert names(c.group_user.list(rg, svc, "developers")) == []
    assert names(c.group_user.list(rg, svc, "guests")) == []
    assert names(c.user_group.list(rg, svc, "1")) == ["administrators"]


def test_publisher_email_is_a_constructor_option() -> None:
    clock = ManualClock(datetime(2024, 6, 1, 9, 0, tzinfo=UTC))
    with ApimEmulator(publisher_email="owner@contoso.com", clock=clock) as emu:
        assert emu.publisher_email == "owner@contoso.com"
        with emu.management_client(retry_total=0) as client:
            admin = client.user.get(emu.resource_group, emu.service_name, "1")
            assert admin.email == "owner@contoso.com"
            assert admin.registration_date == clock.current  # registered when the service was created
            # The administrator's address is taken like any other user's.
            same = m.UserCreateParameters(email="OWNER@contoso.com", first_name="A", last_name="B")
            refused(lambda: client.user.create_or_update(emu.resource_group, emu.service_name, "u", same), 409)
    with pytest.raises(ValueError, match="publisher_email"):
        ApimEmulator(publisher_email="not-an-address")


# ---- users join Developers ----------------------------------------------------------------------
def test_users_created_through_the_api_are_developers(apim: Apim) -> None:
    c, rg, svc = apim.client, apim.rg, apim.svc
    raw = Raw()
    created = c.user.create_or_update(
        rg,
        svc,
        "alice",
        m.UserCreateParameters(email="alice@example.com", first_name="Alice", last_name="Liddell"),
        raw_response_hook=raw.hook(),
    )
    assert raw.body["properties"]["groups"] == []  # as ApiManagementCreateUser.json shows the PUT answer
    assert created.groups == []
    assert names(c.user_group.list(rg, svc, "alice")) == ["developers"]
    assert names(c.group_user.list(rg, svc, "developers")) == ["alice"]
    assert c.group_user.check_entity_exists(rg, svc, "developers", "alice") is True
    assert c.group_user.check_entity_exists(rg, svc, "administrators", "alice") is False


def test_expand_groups_returns_the_users_groups(apim: Apim) -> None:
    c, rg, svc = apim.client, apim.rg, apim.svc
    apim.user("alice")
    c.group.create_or_update(rg, svc, "partners", m.GroupCreateParameters(display_name="Partners", description="P"))
    c.group_user.create(rg, svc, "partners", "alice")

    raw = Raw()
    by_user = {
        text(u.name): u for u in c.user.list_by_service(rg, svc, expand_groups=True, raw_response_hook=raw.hook())
    }
    assert [g.display_name for g in listed(by_user["1"].groups)] == ["Administrators"]
    assert [(g.display_name, g.built_in, g.type) for g in listed(by_user["alice"].groups)] == [
        ("Developers", True, "system"),
        ("Partners", False, "custom"),
    ]
    by_name = {u["name"]: u["properties"]["groups"] for u in raw.body["value"]}
    assert set(by_name["alice"][0]) == GROUP_PROPERTIES  # GroupContractProperties, not GroupContract
    assert by_name["alice"][1] == {"displayName": "Partners", "description": "P", "builtIn": False, "type": "custom"}

    # User_Get has no expandGroups parameter in the SDK; the query still works on the wire.
    got = c.user.get(rg, svc, "alice", params={"expandGroups": "true"}, raw_response_hook=raw.hook())
    assert [g.display_name for g in listed(got.groups)] == ["Developers", "Partners"]
    assert "groups" not in c.user.get(rg, svc, "alice", raw_response_hook=raw.hook()).as_dict()
    assert "groups" not in raw.body["properties"]
    assert all(u.groups is None for u in c.user.list_by_service(rg, svc))


def test_deleting_a_user_removes_its_memberships(apim: Apim) -> None:
    c, rg, svc = apim.client, apim.rg, apim.svc
    apim.user("alice")
    apim.user("bob")
    c.group.create_or_update(rg, svc, "partners", m.GroupCreateParameters(display_name="Partners"))
    c.group_user.create(rg, svc, "partners", "alice")
    c.user.begin_delete(rg, svc, "alice", if_match="*").result()
    assert names(c.group_user.list(rg, svc, "partners")) == []
    assert names(c.group_user.list(rg, svc, "developers")) == ["bob"]
    apim.user("alice")  # a new user of the same name starts in Developers only
    assert names(c.user_group.list(rg, svc, "alice")) == ["developers"]


# ---- custom groups ------------------------------------------------------------------------------
def test_custom_group_lifecycle(apim: Apim) -> None:
    c, rg, svc = apim.client, apim.rg, apim.svc
    raw = Raw()
    created = c.group.create_or_update(
        rg,
        svc,
        "partners",
        m.GroupCreateParameters(display_name="Partners", description="Partner developers"),
        raw_response_hook=raw.hook(),
    )
    assert raw.status == 201
    assert (text(created.name), created.display_name, created.type_properties_type) == (
        "partners",
        "Partners",
        "custom",
    )
    assert text(created.id).endswith(f"/service/{svc}/groups/partners")
    c.group.create_or_update(
        rg, svc, "partners", m.GroupCreateParameters(display_name="Partners"), raw_response_hook=raw.hook()
    )
    assert raw.status == 200

    got = c.group.get(rg, svc, "partners")
    assert (flag(got.built_in), got.description) == (False, "Partner developers")
    assert c.group.get_entity_tag(rg, svc, "partners") is True
    assert names(c.group.list_by_service(rg, svc)) == [*BUILT_IN, "partners"]

    etags: list[str] = []
    c.group.get(rg, svc, "partners", raw_response_hook=lambda r: etags.append(r.http_response.headers["ETag"]))
    refused(lambda: c.group.update(rg, svc, "partners", '"stale"', m.GroupUpdateParameters(description="x")), 412)
    updated = c.group.update(rg, svc, "partners", etags[0], m.GroupUpdateParameters(description="Resellers"))
    assert (updated.display_name, updated.description, flag(updated.built_in)) == ("Partners", "Resellers", False)

    c.group.delete(rg, svc, "partners", if_match="*")
    with pytest.raises(ResourceNotFoundError):
        c.group.get(rg, svc, "partners")
    c.group.delete(rg, svc, "partners", if_match="*")  # idempotent, as other ARM deletes


def test_group_validation(apim: Apim) -> None:
    c, rg, svc = apim.client, apim.rg, apim.svc
    err = refused(lambda: c.group.create_or_update(rg, svc, "g", io.BytesIO(b'{"properties": {}}')), 400)
    assert "displayName" in err.message
    err = refused(
        lambda: c.group.create_or_update(rg, svc, "g", m.GroupCreateParameters(display_name="G", type="system")), 400
    )
    assert "type" in err.message
    err = refused(
        lambda: c.group.create_or_update(rg, svc, "aad", m.GroupCreateParameters(display_name="AAD", type="external")),
        400,
    )
    assert "externalId" in err.message
    external = c.group.create_or_update(
        rg,
        svc,
        "aad",
        m.GroupCreateParameters(
            display_name="AAD", type="external", external_id="aad://contoso.onmicrosoft.com/groups/1234"
        ),
    )
    assert (external.type_properties_type, external.external_id) == (
        "external",
        "aad://contoso.onmicrosoft.com/groups/1234",
    )


def test_group_list_filter_and_paging(apim: Apim) -> None:
    c, rg, svc = apim.client, apim.rg, apim.svc
    for gid in ("g1", "g2"):
        c.group.create_or_update(rg, svc, gid, m.GroupCreateParameters(display_name=f"Group {gid}"))
    by_page = [names(page) for page in pages(c.group.list_by_service(rg, svc, top=2))]
    assert by_page == [["administrators", "developers"], ["guests", "g1"], ["g2"]]
    assert names(c.group.list_by_service(rg, svc, filter="displayName eq 'DEVELOPERS'")) == ["developers"]
    assert names(c.group.list_by_service(rg, svc, filter="startswith(name, 'g')")) == ["guests", "g1", "g2"]
    raw = Raw()
    list(c.group.list_by_service(rg, svc, filter="name eq 'g2'", raw_response_hook=raw.hook()))
    assert (raw.body["count"], raw.body["nextLink"]) == (1, "")  # last page: "nextLink": "" as in the samples
    err = refused(lambda: list(c.group.list_by_service(rg, svc, filter="colour eq 'red'")), 400)
    assert "colour" in err.message


# ---- membership -----------------------------------------------------------------------------------
def test_group_user_membership(apim: Apim) -> None:
    c, rg, svc = apim.client, apim.rg, apim.svc
    apim.user("alice")
    apim.user("bob", "bob@example.com")
    c.group.create_or_update(rg, svc, "partners", m.GroupCreateParameters(display_name="Partners"))

    raw = Raw()
    added = c.group_user.create(rg, svc, "partners", "alice", raw_response_hook=raw.hook())
    assert raw.status == 201
    assert (text(added.name), text(added.type), added.email) == (
        "alice",
        "Microsoft.ApiManagement/service/groups/users",
        "alice@example.com",
    )
    assert text(added.id).endswith("/users/alice")
    c.group_user.create(rg, svc, "partners", "alice", raw_response_hook=raw.hook())
    assert raw.status == 200  # already a member
    c.group_user.create(rg, svc, "partners", "bob")

    assert c.group_user.check_entity_exists(rg, svc, "partners", "alice") is True
    assert c.group_user.check_entity_exists(rg, svc, "partners", "1") is False
    assert c.group_user.check_entity_exists(rg, svc, "no-such-group", "alice") is False
    assert names(c.group_user.list(rg, svc, "partners")) == ["alice", "bob"]
    assert names(c.group_user.list(rg, svc, "partners", filter="email eq 'bob@example.com'")) == ["bob"]
    assert [names(p) for p in pages(c.group_user.list(rg, svc, "partners", top=1))] == [["alice"], ["bob"]]
    assert names(c.user_group.list(rg, svc, "alice")) == ["developers", "partners"]
    assert names(c.user_group.list(rg, svc, "alice", filter="displayName eq 'Partners'")) == ["partners"]

    c.group_user.delete(rg, svc, "partners", "alice", raw_response_hook=raw.hook())
    assert raw.status == 200
    c.group_user.delete(rg, svc, "partners", "alice", raw_response_hook=raw.hook())
    assert raw.status == 204  # no longer a member: nothing to do
    assert c.group_user.check_entity_exists(rg, svc, "partners", "alice") is False
    assert names(c.user_group.list(rg, svc, "alice")) == ["developers"]

    c.group.delete(rg, svc, "partners", if_match="*")
    assert names(c.user_group.list(rg, svc, "bob")) == ["developers"]


def test_membership_of_unknown_groups_and_users_is_not_found(apim: Apim) -> None:
    c, rg, svc = apim.client, apim.rg, apim.svc
    apim.user("alice")
    c.group.create_or_update(rg, svc, "partners", m.GroupCreateParameters(display_name="Partners"))
    with pytest.raises(ResourceNotFoundError):
        c.group_user.create(rg, svc, "no-such-group", "alice")
    with pytest.raises(ResourceNotFoundError):
        c.group_user.create(rg, svc, "partners", "nobody")
    with pytest.raises(ResourceNotFoundError):
        list(c.group_user.list(rg, svc, "no-such-group"))
    with pytest.raises(ResourceNotFoundError):
        list(c.user_group.list(rg, svc, "nobody"))


# ---- what the system manages ----------------------------------------------------------------------
@pytest.mark.parametrize("gid", BUILT_IN)
def test_built_in_groups_cannot_be_changed_or_deleted(apim: Apim, gid: str) -> None:
    c, rg, svc = apim.client, apim.rg, apim.svc
    before = c.group.get(rg, svc, gid)
    err = refused(lambda: c.group.create_or_update(rg, svc, gid, m.GroupCreateParameters(display_name="Mine")))
    assert err.error is not None
    assert err.error.code == "MethodNotAllowed"
    assert "built-in" in err.message
    refused(lambda: c.group.update(rg, svc, gid, "*", m.GroupUpdateParameters(description="x")))
    refused(lambda: c.group.delete(rg, svc, gid, if_match="*"))
    assert c.group.get(rg, svc, gid).as_dict() == before.as_dict()


def test_membership_of_built_in_groups_is_managed_by_the_system(apim: Apim) -> None:
    c, rg, svc = apim.client, apim.rg, apim.svc
    apim.user("alice")
    for gid in BUILT_IN:
        err = refused(partial(c.group_user.create, rg, svc, gid, "alice"))
        assert "managed by the system" in err.message
    refused(lambda: c.group_user.delete(rg, svc, "developers", "alice"))
    refused(lambda: c.group_user.delete(rg, svc, "administrators", "1"))
    assert names(c.user_group.list(rg, svc, "alice")) == ["developers"]
    assert names(c.group_user.list(rg, svc, "administrators")) == ["1"]


def test_the_administrator_cannot_be_changed_or_deleted(apim: Apim) -> None:
    c, rg, svc = apim.client, apim.rg, apim.svc
    err = refused(lambda: c.user.begin_delete(rg, svc, "1", if_match="*").result())
    assert err.error is not None
    assert err.error.code == "MethodNotAllowed"
    refused(lambda: c.user.update(rg, svc, "1", "*", m.UserUpdateParameters(first_name="Eve")))
    refused(
        lambda: c.user.create_or_update(
            rg, svc, "1", m.UserCreateParameters(email="eve@example.com", first_name="Eve", last_name="E")
        )
    )
    admin = c.user.get(rg, svc, "1")
    assert (admin.first_name, admin.email) == ("Administrator", DEFAULT_PUBLISHER_EMAIL)
    assert names(c.group_user.list(rg, svc, "administrators")) == ["1"]
