"""The trial ledger on Azurite: one subscription wins a product's trial, whatever races it."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator

import pytest
from azure.data.tables import TableClient, TableServiceClient

from billing.portal.trials import mail_key, trial_keys
from billing.store.trials import TrialLedger

pytestmark = pytest.mark.storage


@pytest.fixture
def table(storage_connection_string: str) -> Iterator[TableClient]:
    service = TableServiceClient.from_connection_string(storage_connection_string)
    client = service.create_table_if_not_exists(f"trials{uuid.uuid4().hex[:12]}")
    yield client
    service.delete_table(client.table_name)


def test_of_16_subscriptions_claiming_at_the_same_moment_one_wins_under_every_identity(table: TableClient) -> None:
    ledger = TrialLedger(table)
    mail = mail_key("ada@example.com")
    start = threading.Barrier(16)
    answers: dict[str, str | None] = {}
    lock = threading.Lock()

    def claim(n: int) -> None:
        # Half of them under another APIM user with the same address (an account closed and opened again).
        keys = trial_keys("u1" if n % 2 else "u2", mail)
        start.wait()
        holder = ledger.claim("basic", keys, f"sub_{n}")
        with lock:
            answers[f"sub_{n}"] = holder

    threads = [threading.Thread(target=claim, args=(n,)) for n in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    winners = [sub for sub, holder in answers.items() if holder is None]
    assert len(winners) == 1
    assert {holder for holder in answers.values() if holder is not None} == set(winners)
    rows = {row["RowKey"]: row["subscription"] for row in table.query_entities("PartitionKey eq 'basic'")}
    assert set(rows.values()) == set(winners)  # never one identity each
    assert f"mail-{mail}" in rows


def test_a_claim_is_repeatable_and_per_product(table: TableClient) -> None:
    ledger = TrialLedger(table)
    keys = trial_keys("u1", mail_key("ada@example.com"))
    assert ledger.holder("basic", keys) is None
    assert ledger.claim("basic", keys, "sub_1") is None
    assert ledger.claim("basic", keys, "sub_1") is None  # the same subscription again (a retried event)
    assert ledger.holder("basic", keys) == "sub_1"
    assert ledger.holder("basic", trial_keys("someone-else", mail_key("ADA@example.com "))) == "sub_1"
    assert ledger.claim("basic", trial_keys("u1", None), "sub_2") == "sub_1"
    assert ledger.claim("payg", keys, "sub_2") is None  # another product's trial is its own
    # Rows of an earlier claim with fewer identities (no address known then) are completed, not refused.
    assert ledger.claim("pro", trial_keys("u3", None), "sub_3") is None
    assert ledger.claim("pro", trial_keys("u3", mail_key("c@example.com")), "sub_3") is None
    assert ledger.holder("pro", trial_keys("u4", mail_key("c@example.com"))) == "sub_3"
