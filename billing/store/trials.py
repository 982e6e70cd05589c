"""Who has had the free trial of which product: written once, at the trial's first key, and kept.

trials: PartitionKey = APIM product id; RowKey = one row per identity of the consumer
(billing.portal.trials.trial_keys):
  user-<APIM user id>      the portal account's APIM user
  mail-<sha256 of e-mail>  the account's address (keyed as accounts are), which outlives the user:
                           closing the account and signing up again with the same address makes a
                           new APIM user, never a new address
`subscription` (the Stripe subscription the trial was granted to) and `claimed_at` (unix seconds).
A consumer has had the trial when any of its identities has a row. The rows of one claim are written
in one entity-group transaction (same partition): all of them or none, so two subscriptions that
claim at the same moment cannot both win, not even one identity each.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from azure.core.exceptions import ResourceNotFoundError
from azure.data.tables import TableClient

from billing.store.table_transactions import TransactionRefused, Write, submit

CLAIM_ATTEMPTS = 3


class TrialLedger:
    def __init__(self, table: TableClient, clock: Callable[[], float] = time.time) -> None:
        self._table = table
        self._clock = clock

    def holder(self, product_id: str, keys: Sequence[str]) -> str | None:
        """The subscription that had the product's trial under any of these identities, if one did."""
        for key in keys:
            found = self._subscription(product_id, key)
            if found is not None:
                return found
        return None

    def claim(self, product_id: str, keys: Sequence[str], subscription_id: str) -> str | None:
        """Record that `subscription_id` has the product's trial for every identity in `keys`.

        None when it has it (now, or already: a retry claims again), else the other subscription that
        had the trial under one of these identities; then nothing is written.
        """
        now = int(self._clock())
        missing = list(keys)
        for _ in range(CLAIM_ATTEMPTS):
            writes = [
                Write({"PartitionKey": product_id, "RowKey": key, "subscription": subscription_id, "claimed_at": now})
                for key in missing
            ]
            try:
                submit(self._table, writes)
                return None
            except TransactionRefused as exc:
                if exc.status != 409:
                    raise
            held = {key: self._subscription(product_id, key) for key in missing}
            others = [sub for sub in held.values() if sub is not None and sub != subscription_id]
            if others:
                return others[0]
            # Rows of this subscription from an earlier attempt with fewer identities: add the rest.
            missing = [key for key, sub in held.items() if sub is None]
            if not missing:
                return None
        raise RuntimeError(f"trial claim of {subscription_id} for {product_id}: rows kept changing")

    def _subscription(self, product_id: str, key: str) -> str | None:
        try:
            return str(self._table.get_entity(product_id, key)["subscription"])
        except ResourceNotFoundError:
            return None
