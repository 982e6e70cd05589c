"""How long the closing report waits for APIM's usage data, and how long it takes (settings parsing, pure).

APIM's usage data arrives minutes late (Microsoft documents an ingestion latency of minutes for the
gateway logs that the Reports API and Log Analytics' `ApiManagementGatewayLogs` are built from), so
a period's closing report, and the usage report of a cancellation, wait `USAGE_REPORT_LAG_MINUTES`
(a queue message hidden that long) before they read it. Then the delivery is confirmed against
Stripe's meter summaries `USAGE_CONFIRM_DELAY_SECONDS` later, and a shortfall is read a second time
a third of that later before it is sent (`billing.usage.runner.retry_delays`). All of it must happen
while Stripe keeps the invoice a draft (`billing.access.draft_window`):

    period end ── invoice.created ── lag ── closing report ── confirm delay ── confirmation ── 1/3 ── second read
                                                                                       ... Stripe finalises the draft

Each of those three steps is a queue message, and the Functions queue trigger polls an idle queue
at most `QUEUE_POLL_SECONDS` apart (host.json `queues.maxPollingInterval`, default one minute), so
each may start up to that much after it became visible.
"""

from __future__ import annotations

import re
from decimal import ROUND_CEILING, Decimal

LAG_SETTING = "USAGE_REPORT_LAG_MINUTES"
CONFIRM_SETTING = "USAGE_CONFIRM_DELAY_SECONDS"
# An Azure Storage queue message can be hidden for at most 7 days (visibilitytimeout of Put Message).
MAX_LAG_MINUTES = 7 * 24 * 60
QUEUE_POLL_SECONDS = 60
QUEUED_STEPS = 3  # closing report, confirmation, second read of a shortfall

_PLAIN_DECIMAL = re.compile(r"\d+(\.\d+)?|\.\d+")


def lag_seconds_of(raw: str) -> int:
    """Whole seconds of a `USAGE_REPORT_LAG_MINUTES` value: decimal minutes (e.g. 30, 0.05), parsed exactly
    and rounded up to a whole second (the report never waits less than the setting says)."""
    text = raw.strip()
    if not _PLAIN_DECIMAL.fullmatch(text):
        raise ValueError(
            f"{LAG_SETTING} must be a number of minutes written with digits and at most one "
            f"decimal point, e.g. 30 or 0.05; got '{raw}'"
        )
    minutes = Decimal(text)
    if minutes > MAX_LAG_MINUTES:
        raise ValueError(
            f"{LAG_SETTING} must be at most {MAX_LAG_MINUTES} (7 days, the longest a queue message "
            f"can wait); got '{raw}'"
        )
    return int((minutes * 60).to_integral_value(rounding=ROUND_CEILING))


def confirm_delay_of(raw: str) -> int:
    text = raw.strip()
    if not text.isdigit():
        raise ValueError(f"{CONFIRM_SETTING} must be a whole number of seconds, e.g. 900; got '{raw}'")
    return int(text)


def closing_takes_seconds(lag_seconds: int, confirm_delay: int) -> int:
    """From the period's end (or a cancel) until the closing report's delivery is settled, at the latest."""
    return lag_seconds + confirm_delay + confirm_delay // 3 + QUEUED_STEPS * QUEUE_POLL_SECONDS
