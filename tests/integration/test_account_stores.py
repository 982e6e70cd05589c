"""The account stores on Azurite: throttles claimed atomically under concurrency, e-mail links by hash."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator

import pytest
from azure.data.tables import TableClient, TableServiceClient

from billing.portal.records import CONFIRM, EmailLink
from billing.portal.throttle import Limit
from billing.store.email_links import EmailLinks, token_key
from billing.store.throttles import Throttles

pytestmark = pytest.mark.storage


@pytest.fixture
def table(storage_connection_string: str) -> Iterator[TableClient]:
    service = TableServiceClient.from_connection_string(storage_connection_string)
    client = service.create_table_if_not_exists(f"accounts{uuid.uuid4().hex[:12]}")
    yield client
    service.delete_table(client.table_name)


def test_24_claims_at_the_same_moment_pass_only_the_limit(table: TableClient) -> None:
    throttles = Throttles(table)
    start = threading.Barrier(24)
    answers: list[int] = []
    lock = threading.Lock()

    def claim() -> None:
        start.wait()
        wait = throttles.take("account:one", Limit(5, 900), 1_000)
        with lock:
            answers.append(wait)

    threads = [threading.Thread(target=claim) for _ in range(24)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(answers)[:6] == [0, 0, 0, 0, 0, 900]  # five claimed, every other one told to wait
    assert answers.count(0) == 5
    assert table.get_entity("account:one", "window")["uses"] == 5


def test_a_window_reopens_after_its_time_and_clear_forgets_it(table: TableClient) -> None:
    throttles = Throttles(table)
    limit = Limit(2, 60)
    assert [throttles.take("k", limit, 100) for _ in range(3)] == [0, 0, 60]
    assert throttles.take("k", limit, 159) == 1
    assert throttles.take("k", limit, 160) == 0  # a new window starts with this claim
    assert throttles.take("k", limit, 161) == 0
    assert throttles.take("k", limit, 161) == 59
    throttles.clear("k")
    throttles.clear("k")  # clearing twice is harmless
    assert throttles.take("k", limit, 162) == 0


def test_links_are_stored_under_the_hash_of_their_token_and_replaced_conditionally(table: TableClient) -> None:
    links = EmailLinks(table)
    token = "a-secret-token-from-a-mail"
    link = EmailLink(CONFIRM, "ada@example.com", 100, 200, "$argon2id$hash", "Ada", "L", "/docs")
    links.create(token, link)
    assert [e["PartitionKey"] for e in table.list_entities()] == [token_key(token)]  # not the token itself
    found = links.get(token)
    assert found is not None
    assert found[0] == link
    used = EmailLink(**{**link.__dict__, "used_at": 150})
    assert links.replace(token, used, found[1])
    assert not links.replace(token, link, found[1])  # a second writer with the old ETag loses
    again = links.get(token)
    assert again is not None
    assert again[0].used_at == 150
    assert links.get("another token") is None
    assert links.get("x" * 500) is None  # never looked up: no token is that long
