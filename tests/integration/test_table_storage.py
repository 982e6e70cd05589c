"""Proves the storage wiring on a clean machine: a real Table Storage round trip on Azurite."""

from __future__ import annotations

import uuid

import pytest
from azure.core.exceptions import ResourceExistsError
from azure.data.tables import TableServiceClient, UpdateMode

pytestmark = pytest.mark.storage


def test_entity_round_trip_and_insert_conflict(storage_connection_string: str) -> None:
    service = TableServiceClient.from_connection_string(storage_connection_string)
    table = service.create_table_if_not_exists(f"wiring{uuid.uuid4().hex[:12]}")
    entity = {"PartitionKey": "sub-1", "RowKey": "2026-11", "reported": 1234}

    table.create_entity(entity)
    # A second insert of the same key must fail: idempotency records depend on this.
    with pytest.raises(ResourceExistsError):
        table.create_entity(entity)

    table.upsert_entity({**entity, "reported": 1500}, mode=UpdateMode.MERGE)
    assert table.get_entity("sub-1", "2026-11")["reported"] == 1500
    service.delete_table(table.table_name)
