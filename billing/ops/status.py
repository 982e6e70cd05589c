"""What an operator checks first: `python -m billing status` (one screen, or `--json`).

Each part is read on its own; a part that cannot be read (a service down, a setting missing) is
named with the reason and the others are still shown. Nothing here writes: drift is reconcile's
dry run. Names and counts only: no secret, no e-mail address, no key.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from billing.models import CURRENCY_EXPONENTS
from billing.pricing import format_minor
from billing.usage.ports import ProductUsageState

log = logging.getLogger(__name__)

PENDING_TOO_OLD_SECONDS = 3600  # an event not delivered within an hour outlived its retries in minutes
BEHIND_TOO_FAR_SECONDS = 26 * 3600  # the push runs daily: a cursor older than this missed a run
INVOICE_SCAN_LIMIT = 1000  # open invoices counted; more are reported as "1000+"


@dataclass(frozen=True)
class QueueState:
    name: str
    waiting: int  # approximate, invisible (delayed) messages included
    poison: int


@dataclass(frozen=True)
class OpenInvoices:
    count: int
    due_minor: dict[str, int]  # currency -> amount remaining, in minor units
    oldest_created: int | None
    more: bool = False  # the scan stopped at INVOICE_SCAN_LIMIT


@dataclass
class Status:
    checked_at: int
    missing_settings: list[str] = field(default_factory=list)
    usage: list[ProductUsageState] = field(default_factory=list)
    subscriptions: dict[str, dict[str, int]] = field(default_factory=dict)  # product -> APIM state -> count
    queues: list[QueueState] = field(default_factory=list)
    open_invoices: OpenInvoices | None = None
    drift: list[str] | None = None  # reconcile's dry run: what it would change
    unreadable: dict[str, str] = field(default_factory=dict)  # part -> why it could not be read

    def attention(self) -> list[str]:
        """What needs someone: the reasons `status` exits 1."""
        notes = [f"settings missing: {', '.join(self.missing_settings)}"] if self.missing_settings else []
        for state in self.usage:
            if (
                state.pending
                and state.oldest_pending is not None
                and self.checked_at - state.oldest_pending > PENDING_TOO_OLD_SECONDS
            ):
                notes.append(
                    f"{state.product_id}: {state.pending} meter event(s) pending since {_when(state.oldest_pending)}"
                )
            if state.oldest_cursor is not None and self.checked_at - state.oldest_cursor > BEHIND_TOO_FAR_SECONDS:
                notes.append(
                    f"{state.product_id}: usage counted only up to {_when(state.oldest_cursor)} for some "
                    "subscriptions (a push did not run or did not finish)"
                )
        notes += [f"{q.name}: {q.poison} poison message(s)" for q in self.queues if q.poison]
        if self.drift:
            notes.append(f"{len(self.drift)} subscription(s) differ between Stripe and APIM (run `reconcile`)")
        notes += [f"{part} could not be read: {why}" for part, why in self.unreadable.items()]
        return notes

    def to_json(self) -> str:
        return json.dumps({**asdict(self), "attention": self.attention()}, indent=2, sort_keys=True)

    def render(self) -> str:
        lines = [f"Status at {_when(self.checked_at)}", ""]
        lines.append(
            "Settings       "
            + (
                f"missing: {', '.join(self.missing_settings)}"
                if self.missing_settings
                else "every required setting is set"
            )
        )
        lines.append("")
        lines.append(
            f"{'Usage':<15}{'product':<12}{'open':>6}  {'counted up to':<18}{'furthest behind':<18}"
            f"{'pending':>8}  oldest pending"
        )
        for s in self.usage or [ProductUsageState("(none)")]:
            lines.append(
                f"{'':<15}{s.product_id:<12}{s.open_periods:>6}  {_when(s.counted_until):<18}"
                f"{_when(s.oldest_cursor):<18}{s.pending:>8}  {_when(s.oldest_pending)}"
            )
        lines.append("")
        states = sorted({state for counts in self.subscriptions.values() for state in counts})
        lines.append(f"{'Subscriptions':<15}{'product':<12}" + "".join(f"{st:>11}" for st in states))
        for product, counts in sorted(self.subscriptions.items()):
            lines.append(f"{'':<15}{product:<12}" + "".join(f"{counts.get(st, 0):>11}" for st in states))
        lines.append("")
        for n, q in enumerate(self.queues):
            lines.append(f"{'Queues' if n == 0 else '':<15}{q.name:<20} {q.waiting} waiting, {q.poison} poison")
        if self.open_invoices is not None:
            inv = self.open_invoices
            amounts = (
                ", ".join(format_minor(v, c, CURRENCY_EXPONENTS.get(c, 2)) for c, v in sorted(inv.due_minor.items()))
                or "nothing"
            )
            count = f"{inv.count}+" if inv.more else str(inv.count)
            oldest = f" (oldest {_when(inv.oldest_created)})" if inv.oldest_created else ""
            lines += ["", f"{'Invoices':<15}{count} open, {amounts} due{oldest}"]
        if self.drift is not None:
            lines += ["", f"{'Drift':<15}" + ("none" if not self.drift else f"{len(self.drift)} subscription(s):")]
            lines += [f"{'':<15}{line}" for line in self.drift[:10]]
        notes = self.attention()
        lines += ["", "Needs attention" if notes else "Nothing needs attention."]
        lines += [f"  - {note}" for note in notes]
        return "\n".join(lines)


def _when(ts: int | None) -> str:
    return "-" if ts is None else datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M")


def collect(readers: Mapping[str, Callable[[Status], None]], now: int, missing: list[str]) -> Status:
    """Run each reader (part name -> fills its part of the status); a failing one is named, not fatal."""
    status = Status(checked_at=now, missing_settings=missing)
    for part, read in readers.items():
        try:
            read(status)
        except Exception as exc:
            log.warning("status: %s could not be read", part, exc_info=True)
            status.unreadable[part] = _reason(exc)
    return status


def _reason(exc: Exception) -> str:
    # The exception's class and first line: SDK messages name the request, never a key or secret.
    first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def open_invoices(invoices: Any) -> OpenInvoices:
    """Summarise an iterable of Stripe invoices (status open), at most INVOICE_SCAN_LIMIT of them."""
    count, oldest, more = 0, None, False
    due: dict[str, int] = {}
    for invoice in invoices:
        if count >= INVOICE_SCAN_LIMIT:
            more = True
            break
        count += 1
        currency = str(invoice["currency"])
        due[currency] = due.get(currency, 0) + int(invoice["amount_remaining"])
        created = int(invoice["created"])
        oldest = created if oldest is None else min(oldest, created)
    return OpenInvoices(count, due, oldest, more)
