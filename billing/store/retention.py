"""Purging rows that are past their use, in bounded batches (the retention timer and the CLI).

Each rule names a table and a filter on a number the rows already carry (unix seconds). A run
deletes at most `limit` rows per rule and says whether more are left, so one run's cost is bounded
and the next run goes on. A row is deleted only if unchanged since it was read (its ETag): a row
that a request re-used meanwhile (a throttle window opened again) stays.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from azure.core import MatchConditions
from azure.core.exceptions import ResourceModifiedError, ResourceNotFoundError
from azure.data.tables import TableClient

from billing.store.tables import DELEGATION_SALTS_TABLE, EMAIL_TOKENS_TABLE, PROCESSED_EVENTS_TABLE, THROTTLES_TABLE

log = logging.getLogger(__name__)

DAY = 86_400
DEFAULT_LIMIT = 5_000  # rows per rule and run: about a minute of deletes at most


@dataclass(frozen=True)
class Rule:
    table: str
    why: str
    filter: str  # OData, with @cutoff for the number of seconds below which a row is past its use
    cutoff: Callable[[int], int]  # now -> that number


# Stripe retries a webhook (and an event destination) for up to 3 days: a day's margin on top.
# Delegation salts and e-mail links carry their own expiry; the longest throttle window is a day.
RULES: tuple[Rule, ...] = (
    Rule(
        PROCESSED_EVENTS_TABLE,
        "Stripe events applied more than 4 days ago (Stripe retries for 3)",
        "status eq 'done' and done_at lt @cutoff",
        lambda now: now - 4 * DAY,
    ),
    Rule(
        DELEGATION_SALTS_TABLE, "delegation link salts past their retention", "expires_at lt @cutoff", lambda now: now
    ),
    Rule(
        THROTTLES_TABLE,
        "throttle windows that ended (the longest lasts a day)",
        "window_start lt @cutoff",
        lambda now: now - 2 * DAY,
    ),
    Rule(
        EMAIL_TOKENS_TABLE,
        "e-mail links expired more than 7 days ago (until then they say 'expired')",
        "expires_at lt @cutoff",
        lambda now: now - 7 * DAY,
    ),
)


@dataclass(frozen=True)
class Purged:
    table: str
    deleted: int
    more: bool  # the limit was reached: the next run goes on

    def line(self) -> str:
        return f"{self.table}: {self.deleted} row(s) deleted" + (" (more left for the next run)" if self.more else "")


def purge(table: TableClient, rule: Rule, now: int, limit: int = DEFAULT_LIMIT, *, dry_run: bool = False) -> Purged:
    """Delete up to `limit` rows of `rule` (count them only, with `dry_run`)."""
    if limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
    rows = table.query_entities(
        rule.filter,
        parameters={"cutoff": rule.cutoff(now)},
        select=["PartitionKey", "RowKey"],
        results_per_page=min(limit + 1, 1000),
    )
    deleted = 0
    for row in rows:
        if deleted >= limit:
            return Purged(rule.table, deleted, True)
        if not dry_run:
            try:
                table.delete_entity(
                    row["PartitionKey"],
                    row["RowKey"],
                    etag=row.metadata["etag"],
                    match_condition=MatchConditions.IfNotModified,
                )
            except ResourceModifiedError:
                continue  # used again since it was read: no longer past its use
            except ResourceNotFoundError:
                continue  # another run took it
        deleted += 1
    return Purged(rule.table, deleted, False)


def purge_all(
    tables: Callable[[str], TableClient],
    now: int,
    limit: int = DEFAULT_LIMIT,
    *,
    rules: Sequence[Rule] = RULES,
    dry_run: bool = False,
) -> list[Purged]:
    results = []
    for rule in rules:
        result = purge(tables(rule.table), rule, now, limit, dry_run=dry_run)
        log.info("retention: %s (%s)", result.line(), rule.why)
        results.append(result)
    return results
