"""The link between an APIM subscription and its Stripe customer and subscription.

Paid products: the APIM subscription id IS the Stripe subscription id (`sub_...`), so creating
it on `checkout.session.completed` is idempotent and either side finds the other without an index.
One row per APIM subscription: PartitionKey = the subscription's group (`billing.store.groups`,
as its usage watermarks), RowKey = the APIM subscription id. A point read is still PartitionKey +
RowKey; the groups let the usage push list every link as ranges read side by side, and let
imports write a partition's rows in transactions.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Generator, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, fields
from itertools import pairwise
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.data.tables import TableClient, UpdateMode

from billing.records import SubscriptionLink
from billing.store.groups import GROUPS, group_of, group_of_number
from billing.store.table_rows import query_rows
from billing.store.table_transactions import MAX_OPERATIONS, TransactionRefused, Write, submit

LIST_RANGES = 8  # partition ranges `all` reads side by side (each a paged query)
PAGE_ROWS = 1000  # the Table service's page: rows handed over at once
PREFETCH_PAGES = 2  # pages a range reads ahead of the caller: memory stays bounded whatever the table holds


_FIELDS = {f.name for f in fields(SubscriptionLink)}


def _to_entity(link: SubscriptionLink) -> dict[str, Any]:
    return {"PartitionKey": group_of(link.apim_subscription_id), "RowKey": link.apim_subscription_id, **asdict(link)}


def _from_entity(entity: dict[str, Any]) -> SubscriptionLink:
    return SubscriptionLink(**{k: v for k, v in entity.items() if k in _FIELDS})


class SubscriptionLinks:
    """Repository over the subscriptions table. Writes are optimistic (ETag) where it matters."""

    def __init__(self, table: TableClient) -> None:
        self._table = table

    def get(self, apim_subscription_id: str) -> tuple[SubscriptionLink, str] | None:
        """The link and its ETag, or None."""
        try:
            entity = self._table.get_entity(group_of(apim_subscription_id), apim_subscription_id)
        except ResourceNotFoundError:
            return None
        return _from_entity(dict(entity)), str(entity.metadata["etag"])

    def create_or_replace(self, link: SubscriptionLink) -> None:
        self._table.upsert_entity(_to_entity(link), mode=UpdateMode.REPLACE)

    def create_if_absent(self, link: SubscriptionLink) -> bool:
        """Insert the link; False if a row for the subscription exists already (someone else won)."""
        try:
            self._table.create_entity(_to_entity(link))
        except ResourceExistsError:
            return False
        return True

    def replace_if_unchanged(self, link: SubscriptionLink, etag: str) -> bool:
        """Replace only if nobody wrote since `etag` was read; False if someone did (or deleted it)."""
        try:
            self._table.update_entity(
                _to_entity(link), mode=UpdateMode.REPLACE, etag=etag, match_condition=MatchConditions.IfNotModified
            )
        except (ResourceModifiedError, ResourceNotFoundError):
            return False
        return True

    def bulk_insert(self, links: Iterable[SubscriptionLink]) -> int:
        """Insert new links, a transaction per partition and 100 rows (imports, benchmarks).

        Every link must be new: a transaction holding one that exists fails as a whole
        (ResourceExistsError), and the transactions before it stay applied. Returns the rows written.
        """
        by_partition: dict[str, list[dict[str, Any]]] = {}
        for link in links:
            entity = _to_entity(link)
            by_partition.setdefault(entity["PartitionKey"], []).append(entity)
        written = 0
        for entities in by_partition.values():
            for start in range(0, len(entities), MAX_OPERATIONS):
                chunk = entities[start : start + MAX_OPERATIONS]
                try:
                    submit(self._table, [Write(e) for e in chunk])
                except TransactionRefused as exc:
                    if exc.status == 409:
                        raise ResourceExistsError(f"link {chunk[exc.index]['RowKey']} exists already") from None
                    raise
                written += len(chunk)
        return written

    def all(self) -> Generator[SubscriptionLink, None, None]:
        """Every link, in partition order, as it is read: `LIST_RANGES` partition ranges read side by side,
        each at most `PREFETCH_PAGES` pages ahead of the caller, so a million links are never all in memory."""
        bounds = [GROUPS * n // LIST_RANGES for n in range(LIST_RANGES + 1)]
        filters = [
            f"PartitionKey ge '{group_of_number(low)}' and PartitionKey lt '{group_of_number(high)}'"
            for low, high in pairwise(bounds)
        ]
        stop = threading.Event()
        pages: list[queue.Queue[list[dict[str, Any]] | BaseException | None]] = [
            queue.Queue(maxsize=PREFETCH_PAGES) for _ in filters
        ]

        def read(text: str, out: queue.Queue[list[dict[str, Any]] | BaseException | None]) -> None:
            try:
                page: list[dict[str, Any]] = []
                for row in query_rows(self._table, text):
                    page.append(row.values)
                    if len(page) == PAGE_ROWS:
                        if not _put(out, page, stop):
                            return
                        page = []
                if _put(out, page, stop):
                    _put(out, None, stop)  # this range is done
            except BaseException as exc:  # handed to the caller, who raises it
                _put(out, exc, stop)

        with ThreadPoolExecutor(max_workers=LIST_RANGES) as pool:
            try:
                for text, out in zip(filters, pages, strict=True):
                    pool.submit(read, text, out)
                for out in pages:
                    while (page := out.get()) is not None:
                        if isinstance(page, BaseException):
                            raise page
                        for values in page:
                            yield _from_entity(values)
            finally:
                stop.set()  # a caller that stopped early (or an error) ends the readers


def _put(out: queue.Queue[Any], item: object, stop: threading.Event) -> bool:
    """Hand `item` to the caller, waiting while its queue is full; False once the caller stopped listening."""
    while not stop.is_set():
        try:
            out.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False
