"""Raw row reads and transactions (`billing.store.table_rows`, `table_transactions`) and the subscription
links' layout, against Azurite. Both paths of each (`via`: the SDK's public API, and the wire of
`billing.store.table_wire`) must answer alike: the tests of the contract run with each."""

from __future__ import annotations

import socket
import threading
import uuid
from typing import Any, Never

import pytest
from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.data.tables import EdmType, TableClient, TableServiceClient

from billing.records import SubscriptionLink
from billing.store import subscriptions, table_wire
from billing.store.groups import group_of
from billing.store.subscriptions import SubscriptionLinks
from billing.store.table_rows import Via, query_rows
from billing.store.table_transactions import TransactionRefused, Write, submit
from devstack.azurite import Azurite

pytestmark = pytest.mark.storage


@pytest.fixture(params=["sdk", "wire"])
def via(request: pytest.FixtureRequest) -> Via:
    path: Via = request.param
    return path


@pytest.fixture
def table(storage_connection_string: str) -> TableClient:
    service = TableServiceClient.from_connection_string(storage_connection_string)
    return service.create_table(f"rows{uuid.uuid4().hex[:12]}")


def _link(n: int, **changes: object) -> SubscriptionLink:
    link = SubscriptionLink(
        apim_subscription_id=f"sub_rows{n:05d}",
        apim_user_id=f"user{n}",
        product_id="payg",
        subscription_name=f"name {n}",
        stripe_customer_id=f"cus_{n}",
        stripe_subscription_id=f"sub_rows{n:05d}",
        stripe_usage_item_id=f"si_{n}",
        stripe_status="active",
        apim_state="active",
        current_period_start=1_780_000_000 + n,
        current_period_end=1_782_592_000 + n,
        stripe_state_at=1_780_000_000,
    )
    return link.with_changes(**changes)


def test_rows_read_as_the_sdk_reads_them_across_pages(table: TableClient, via: Via) -> None:
    for p in range(3):
        table.submit_transaction(
            [
                (
                    "create",
                    {
                        "PartitionKey": f"p{p}",
                        "RowKey": f"r{n:03d}",
                        "big": (2**40 + n, EdmType.INT64),
                        "small": n,
                        "text": f"t{n}",
                        "flag": n % 2 == 0,
                    },
                )
                for n in range(40)
            ]
        )
    pages: list[int] = []
    rows = list(query_rows(table, page_size=25, on_page=lambda: pages.append(1), via=via))  # 120 rows, 5 pages
    assert len(pages) == 5
    sdk = {(e["PartitionKey"], e["RowKey"]): e for e in table.list_entities()}
    assert len(rows) == len(sdk) == 120
    for row in rows:
        entity = sdk[(row.values["PartitionKey"], row.values["RowKey"])]
        assert row.etag == entity.metadata["etag"]  # usable as the ETag of a conditional write
        assert row.values["big"] == entity["big"].value
        assert isinstance(row.values["big"], int)
        assert (row.values["small"], row.values["text"], row.values["flag"]) == (
            entity["small"],
            entity["text"],
            entity["flag"],
        )
        assert set(row.values) == {"PartitionKey", "RowKey", "big", "small", "text", "flag"}  # no Timestamp

    picked = list(query_rows(table, "PartitionKey eq 'p1' and small lt 3", select=["RowKey", "small"], via=via))
    assert [r.values for r in picked] == [{"RowKey": f"r{n:03d}", "small": n} for n in range(3)]


def test_a_missing_table_is_named_as_not_found(storage_connection_string: str, via: Via) -> None:
    missing = TableServiceClient.from_connection_string(storage_connection_string).get_table_client("nosuchtable")
    with pytest.raises(ResourceNotFoundError):
        list(query_rows(missing, via=via))


def test_an_unverified_sdk_takes_the_public_path(table: TableClient, monkeypatch: pytest.MonkeyPatch) -> None:
    def unverified(*args: object, **kwargs: object) -> Never:
        raise AssertionError("the wire was used with an SDK it was not verified against")

    monkeypatch.setattr(table_wire, "ACTIVE", False)
    monkeypatch.setattr(table_wire, "query", unverified)
    monkeypatch.setattr(table_wire, "submit", unverified)
    (etag,) = submit(table, [Write({"PartitionKey": "p", "RowKey": "r", "n": 1})])
    assert [(r.values["n"], r.etag) for r in query_rows(table)] == [(1, etag)]


def test_links_live_in_their_group_partition_and_list_completely(table: TableClient) -> None:
    links = SubscriptionLinks(table)
    made = [_link(n) for n in range(250)]
    assert links.bulk_insert(made[:200]) == 200
    for link in made[200:]:
        assert links.create_if_absent(link)
    listed = list(links.all())
    assert sorted(listed, key=lambda lk: lk.apim_subscription_id) == made  # every field read back
    entity = table.get_entity(group_of(made[7].apim_subscription_id), made[7].apim_subscription_id)
    assert entity["product_id"] == "payg"

    found = links.get(made[7].apim_subscription_id)
    assert found is not None
    assert found[0] == made[7]
    assert links.replace_if_unchanged(made[7].with_changes(apim_state="suspended"), found[1])
    assert not links.replace_if_unchanged(made[7].with_changes(apim_state="cancelled"), found[1])  # stale ETag
    assert links.get(made[7].apim_subscription_id)[0].apim_state == "suspended"  # type: ignore[index]
    assert links.get("sub_never") is None


def test_links_are_listed_in_partition_order_a_few_pages_ahead_and_a_caller_may_stop_early(
    table: TableClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(subscriptions, "PAGE_ROWS", 10)  # hand-overs of 10 rows: the readers run ahead and wait
    links = SubscriptionLinks(table)
    assert links.bulk_insert(_link(n) for n in range(300)) == 300
    listed = [group_of(lk.apim_subscription_id) for lk in links.all()]
    assert len(listed) == 300
    assert listed == sorted(listed)
    threads = threading.active_count()
    early = links.all()
    next(early)
    early.close()  # a caller that stops: the readers waiting to hand over more rows end
    assert threading.active_count() == threads


def test_bulk_insert_refuses_a_link_that_exists(table: TableClient) -> None:
    links = SubscriptionLinks(table)
    links.create_if_absent(_link(1))
    with pytest.raises(ResourceExistsError):
        links.bulk_insert([_link(1, apim_state="suspended")])
    assert links.get(_link(1).apim_subscription_id)[0].apim_state == "active"  # type: ignore[index]


def test_a_transaction_applies_every_write_or_none(table: TableClient, via: Via) -> None:
    rows: list[dict[str, Any]] = [
        {"PartitionKey": "g", "RowKey": f"r{n}", "text": "quote \" and é and '", "n": n, "big": 2**40 + n, "flag": True}
        for n in range(3)
    ]
    etags = submit(table, [Write(row) for row in rows], via=via)
    for row, etag in zip(rows, etags, strict=True):
        entity = table.get_entity("g", row["RowKey"])
        assert entity.metadata["etag"] == etag
        assert (entity["text"], entity["n"], entity["big"].value, entity["flag"]) == (
            row["text"],
            row["n"],
            row["big"],
            True,
        )

    changed = submit(table, [Write({**rows[0], "n": 10}, etags[0]), Write({**rows[1], "n": 11}, etags[1])], via=via)
    assert table.get_entity("g", "r1")["n"] == 11

    # A stale ETag on the second write: the first is not applied either.
    with pytest.raises(TransactionRefused) as refused:
        submit(table, [Write({**rows[0], "n": 20}, changed[0]), Write({**rows[1], "n": 21}, etags[1])], via=via)
    assert (refused.value.status, refused.value.index) == (412, 1)
    assert "condition" in str(refused.value).lower()  # the service's reason, first line, without "1:"
    assert [table.get_entity("g", f"r{n}")["n"] for n in (0, 1)] == [10, 11]

    with pytest.raises(TransactionRefused) as exists:
        submit(table, [Write({**rows[0], "RowKey": "r9"}), Write(rows[2])], via=via)
    assert (exists.value.status, exists.value.index) == (409, 1)
    assert str(exists.value) == "operation 1 was refused with 409: The specified entity already exists."
    assert len(list(table.list_entities())) == 3


def test_a_transaction_names_what_it_cannot_hold(table: TableClient, via: Via) -> None:
    two = [Write({"PartitionKey": "a", "RowKey": "1"}), Write({"PartitionKey": "b", "RowKey": "1"})]
    with pytest.raises(ValueError, match="same partition"):
        submit(table, two, via=via)
    with pytest.raises(ValueError, match="1 to 100 operations"):
        submit(table, [Write({"PartitionKey": "a", "RowKey": str(n)}) for n in range(101)], via=via)
    with pytest.raises(TypeError, match="'when' must be str, bool or int"):
        submit(table, [Write({"PartitionKey": "a", "RowKey": "1", "when": 1.5})], via=via)
    big = [Write({"PartitionKey": "a", "RowKey": str(n), "d0": "x" * 30_000, "d1": "x" * 30_000}) for n in range(80)]
    with pytest.raises(ValueError, match="above Table Storage's 4,194,304"):  # before sending
        submit(table, big, via=via)
    assert list(table.list_entities()) == []


class _AnswerDroppingProxy:
    """A loopback proxy to Azurite that, while `drop_next` is set, forwards a `$batch` request and
    drops the connection instead of passing the answer back: the client sees a reset after the
    service applied it."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.drop_next = False
        self.dropped = 0
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        upstream = socket.create_connection(("127.0.0.1", self.target_port))
        with client, upstream:
            while True:
                request = _read_http(client)
                if not request:
                    return
                upstream.sendall(request)
                answer = _read_http(upstream)
                if b"$batch" in request.split(b"\r\n", 1)[0] and self.drop_next:
                    self.drop_next = False
                    self.dropped += 1
                    client.shutdown(socket.SHUT_RDWR)  # applied upstream; the answer never arrives
                    return
                client.sendall(answer)

    def close(self) -> None:
        self._server.close()


def _read_http(sock: socket.socket) -> bytes:
    """One HTTP/1.1 message with a Content-Length body (all that Azurite and the SDK send here)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return b""
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        (int(line.split(b":", 1)[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")), 0
    )
    while len(body) < length:
        body += sock.recv(65536)
    return head + b"\r\n\r\n" + body


def test_a_transaction_whose_answer_was_lost_is_sent_again_and_applied_once(azurite: Azurite, via: Via) -> None:
    name = f"rows{uuid.uuid4().hex[:12]}"
    TableServiceClient.from_connection_string(azurite.connection_string).create_table(name)
    proxy = _AnswerDroppingProxy(azurite.table_port)
    try:
        via_proxy = TableClient.from_connection_string(
            azurite.connection_string.replace(f":{azurite.table_port}/", f":{proxy.port}/"), name
        )
        row = {"PartitionKey": "g", "RowKey": "r", "n": 1}
        proxy.drop_next = True
        with pytest.raises(TransactionRefused) as exists:
            submit(via_proxy, [Write(row)], via=via)  # applied, its answer lost, sent again: the row exists
        assert (exists.value.status, proxy.dropped) == (409, 1)
        etag = via_proxy.get_entity("g", "r").metadata["etag"]

        proxy.drop_next = True
        with pytest.raises(TransactionRefused) as stale:
            submit(via_proxy, [Write({**row, "n": 2}, etag)], via=via)  # applied, answer lost, sent again: stale ETag
        assert (stale.value.status, proxy.dropped) == (412, 2)  # the caller rereads and finds its own write
        assert via_proxy.get_entity("g", "r")["n"] == 2
        assert len(list(via_proxy.list_entities())) == 1

        assert submit(via_proxy, [Write({**row, "n": 3}, via_proxy.get_entity("g", "r").metadata["etag"])], via=via)
    finally:
        proxy.close()
