"""Where `status` reads each of its parts: the app's tables and queues, Stripe, and reconcile's dry run."""

from __future__ import annotations

import time
from collections.abc import Callable

from billing.bootstrap import services
from billing.ops.status import QueueState, Status, open_invoices


def _usage(status: Status) -> None:
    from billing.store.tables import USAGE_WATERMARKS_TABLE  # noqa: PLC0415 - each reader loads only its SDK
    from billing.store.watermarks import Watermarks  # noqa: PLC0415

    status.usage = list(Watermarks(services().table(USAGE_WATERMARKS_TABLE)).states().values())


def _subscriptions(status: Status) -> None:
    from billing.store.subscriptions import SubscriptionLinks  # noqa: PLC0415
    from billing.store.tables import SUBSCRIPTIONS_TABLE  # noqa: PLC0415

    counts: dict[str, dict[str, int]] = {}
    for link in SubscriptionLinks(services().table(SUBSCRIPTIONS_TABLE)).all():
        by_state = counts.setdefault(link.product_id, {})
        by_state[link.apim_state] = by_state.get(link.apim_state, 0) + 1
    status.subscriptions = counts


def _queues(status: Status) -> None:
    from billing.store.tables import ALL_QUEUES  # noqa: PLC0415

    def count(name: str) -> int:
        return int(services().queue(name).get_queue_properties().approximate_message_count or 0)

    status.queues = [QueueState(name, count(name), count(f"{name}-poison")) for name in ALL_QUEUES]


def _invoices(status: Status) -> None:
    listed = services().stripe().v1.invoices.list(params={"status": "open", "limit": 100})
    status.open_invoices = open_invoices(listed.auto_paging_iter())


def _drift(status: Status) -> None:
    from billing.access.reconcile import reconcile  # noqa: PLC0415

    lines: list[str] = []
    report = reconcile(services().access_ports(), dry_run=True, out=lines.append)
    status.drift = list(report.changed)


def status_readers() -> dict[str, Callable[[Status], None]]:
    return {"usage": _usage, "subscriptions": _subscriptions, "queues": _queues, "invoices": _invoices, "drift": _drift}


def readiness_probes() -> dict[str, Callable[[], None]]:
    """One cheap read per dependency, through the clients the app uses (their timeouts, their identity)."""
    from billing.store.tables import SUBSCRIPTIONS_TABLE, USAGE_BATCH_QUEUE  # noqa: PLC0415
    from billing.usage.windows import ReportWindow  # noqa: PLC0415

    def tables() -> None:
        rows = services().table(SUBSCRIPTIONS_TABLE).query_entities("PartitionKey eq 'readiness'", results_per_page=1)
        next(iter(rows), None)

    def queues() -> None:
        services().queue(USAGE_BATCH_QUEUE).get_queue_properties()

    def stripe() -> None:
        services().stripe().v1.customers.list(params={"limit": 1})

    def apim() -> None:  # a read the app's role grants (subscriptions/read)
        service = services().apim()
        next(iter(service.client.subscription.list(service.resource_group, service.service_name, top=1)), None)

    def usage() -> None:
        minute = int(time.time()) // 60 * 60
        services().usage_source().read(ReportWindow(minute - 120, minute - 60), product_id="readiness-probe")

    return {
        "tableStorage": tables,
        "queueStorage": queues,
        "stripe": stripe,
        "apiManagement": apim,
        "usageSource": usage,
    }
