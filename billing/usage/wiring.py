"""The usage push's settings (budgets, batch size, lag) and the process-wide rate budgets.

The push itself is built by the composition root, `billing.bootstrap`."""

from __future__ import annotations

import threading
from collections.abc import Mapping

from billing import config
from billing.usage.ratelimit import TokenBucket
from billing.usage.timing import CONFIRM_SETTING, LAG_SETTING, confirm_delay_of, lag_seconds_of

# Defaults per process: Stripe allows ~100 requests/s in live mode (shared with the rest of the
# app and with other instances); ARM's reads are a token bucket of 250 refilled at 25/s per
# subscription and principal (since 2024), and only the timer reads reports in bulk: 20/s leaves
# the rest to the app's other ARM calls. Scale Stripe's down with the instance count.
DEFAULT_STRIPE_RPS = 25.0
DEFAULT_ARM_RPS = 20.0
DEFAULT_BATCH_SIZE = 300

_lock = threading.Lock()
_buckets: dict[str, TokenBucket] = {}


def _number(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{name} must be a number above 0, e.g. {default:g}; got '{raw}'") from None
    if value <= 0:
        raise ValueError(f"{name} must be a number above 0, e.g. {default:g}; got '{raw}'")
    return value


_TUNING_SETTINGS = ("USAGE_STRIPE_REQUESTS_PER_SECOND", "USAGE_ARM_REQUESTS_PER_SECOND", "USAGE_BATCH_SIZE")


def tuning(env: Mapping[str, str] | None = None) -> tuple[float, float, int]:
    """(Stripe requests/s, ARM requests/s, subscriptions per batch) for this process."""
    source = {name: config.get(name, env) for name in _TUNING_SETTINGS}
    stripe_rps = _number(source, "USAGE_STRIPE_REQUESTS_PER_SECOND", DEFAULT_STRIPE_RPS)
    arm_rps = _number(source, "USAGE_ARM_REQUESTS_PER_SECOND", DEFAULT_ARM_RPS)
    batch = int(_number(source, "USAGE_BATCH_SIZE", DEFAULT_BATCH_SIZE))
    return stripe_rps, arm_rps, batch


def bucket(name: str, rate: float) -> TokenBucket:
    """The process-wide bucket of a service: every push in this process shares it."""
    with _lock:
        found = _buckets.get(name)
        if found is None or found.rate != rate:
            found = _buckets[name] = TokenBucket(rate)
        return found


def confirm_delay_seconds(env: Mapping[str, str] | None = None) -> int:
    """How long after a closing report its delivery is confirmed against Stripe's meter summaries."""
    return confirm_delay_of(config.get(CONFIRM_SETTING, env))


def lag_seconds(env: Mapping[str, str] | None = None) -> int:
    """`USAGE_REPORT_LAG_MINUTES` in whole seconds (decimal minutes allowed; see `billing.usage.timing`)."""
    return lag_seconds_of(config.get(LAG_SETTING, env))


# Log Analytics allows about 200 queries per 30 seconds per identity; a little under that.
LOGS_REQUESTS_PER_SECOND = 6.0
USAGE_SOURCES = ("logs", "reports")
