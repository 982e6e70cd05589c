"""In-memory fakes shared by several packages' tests: the subscription links table.

`billing.store.subscriptions.SubscriptionLinks` serves two ports: the access services' `LinkStore`
(ETag-checked writes) and the usage push's `LinkSource` (reads). One fake keeps the rows as the table
does, a new ETag on every write, and is checked against both Protocols below.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from billing.access.ports import LinkStore
from billing.records import SubscriptionLink
from billing.usage.ports import LinkSource


class FakeLinks:
    """The links table in memory: ETag semantics like Table Storage (every write makes a new ETag)."""

    def __init__(self, links: Iterable[SubscriptionLink] = ()) -> None:
        self.version = 0
        self.rows: dict[str, tuple[SubscriptionLink, str]] = {}
        for link in links:
            self.rows[link.apim_subscription_id] = (link, self._next())
        self.before_write: list[Callable[[], object]] = []  # run before the next write (to simulate a race)

    def _next(self) -> str:
        self.version += 1
        return f"etag{self.version}"

    def _race(self) -> None:
        while self.before_write:
            self.before_write.pop(0)()

    def get(self, apim_subscription_id: str) -> tuple[SubscriptionLink, str] | None:
        return self.rows.get(apim_subscription_id)

    def all(self) -> Iterator[SubscriptionLink]:
        return iter([link for link, _ in self.rows.values()])

    def create_if_absent(self, link: SubscriptionLink) -> bool:
        self._race()
        if link.apim_subscription_id in self.rows:
            return False
        self.rows[link.apim_subscription_id] = (link, self._next())
        return True

    def replace_if_unchanged(self, link: SubscriptionLink, etag: str) -> bool:
        self._race()
        if self.rows[link.apim_subscription_id][1] != etag:
            return False
        self.rows[link.apim_subscription_id] = (link, self._next())
        return True


# mypy proves the fake has every method of the ports it stands in for, with their signatures.
_store: LinkStore = FakeLinks()
_source: LinkSource = FakeLinks()
