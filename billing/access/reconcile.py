"""Reconcile: make every APIM subscription match its Stripe subscription, and say what changed.

Repairs drift that webhooks could not, e.g. after an outage that outlasted Stripe's retries:
a missing APIM subscription is created, a wrong state is corrected. Safe to run at any time;
it goes through the same sync as the webhooks, so it never fights them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from billing.access.ports import AccessPorts
from billing.access.sync import sync_subscription

log = logging.getLogger(__name__)


@dataclass
class ReconcileReport:
    changed: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    unchanged: int = 0


def reconcile(
    ports: AccessPorts,
    *,
    dry_run: bool = False,
    out: Callable[[str], None] | None = None,
    clock: Callable[[], float] = time.time,
) -> ReconcileReport:
    """Compare every Stripe subscription that has APIM metadata with APIM; repair unless `dry_run`."""
    report = ReconcileReport()
    emit = out or (lambda line: log.info("%s", line))
    for sub in ports.stripe.list_with_metadata():
        sid = str(sub.get("id"))
        try:
            result = sync_subscription(sid, ports, event_created=int(clock()), known=sub, dry_run=dry_run)
        except Exception as exc:  # one broken subscription must not stop the others
            log.exception("reconcile of %s failed", sid)
            report.failed.append(f"{sid}: {type(exc).__name__}")
            emit(f"{sid}: FAILED ({type(exc).__name__}); see the log")
            continue
        if result.outcome == "changed":
            report.changed.append(result.detail)
            emit(("would change " if dry_run else "changed ") + result.detail)
        elif result.outcome == "ignored":
            report.ignored.append(f"{sid}: {result.detail}")
            emit(f"skipped {sid}: {result.detail}")
        else:
            report.unchanged += 1
    return report
