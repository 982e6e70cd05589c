"""Product policy XML: the limits it declares, and how they are checked at the gateway.

Only direct children of `<inbound>` are read (what the app generates); conditional blocks such as
`<choose>` are not evaluated. Supported: `rate-limit`, `rate-limit-by-key`, `quota`, `quota-by-key`.
"""

from __future__ import annotations

import math
import re
import threading
import xml.etree.ElementTree as ET
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

RATE_LIMITS = ("rate-limit", "rate-limit-by-key")
QUOTAS = ("quota", "quota-by-key")
# quota-by-key's documented default `first-period-start`; `quota` counts from the same epoch.
DEFAULT_FIRST_PERIOD_START = datetime(1, 1, 1, tzinfo=UTC)
_NAMED_VALUE = re.compile(r"^\{\{([^{}]+)\}\}$")
_DURATION = re.compile(r"^P(?:(\d+)Y)?(?:(\d+)M)?(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+)S)?)?$")


class PolicyError(ValueError):
    """The policy cannot be stored: the message names the element and attribute at fault."""


@dataclass(frozen=True)
class Renewal:
    seconds: int = 0  # 0 with months 0 means a lifetime quota
    months: int = 0


@dataclass(frozen=True)
class Limit:
    kind: str  # one of RATE_LIMITS + QUOTAS
    calls: int | None
    renewal: Renewal
    counter_key: str | None  # expression or literal, by-key forms only
    first_period_start: datetime = DEFAULT_FIRST_PERIOD_START
    increment_count: int = 1
    unresolved: str | None = None  # a {{named value}} the emulator cannot resolve

    @property
    def is_rate(self) -> bool:
        return self.kind in RATE_LIMITS


def _int_attr(el: ET.Element, name: str, *, required: bool) -> tuple[int | None, str | None]:
    raw = el.get(name)
    if raw is None:
        if required:
            raise PolicyError(f"<{el.tag}> needs the attribute {name}, a whole number")
        return None, None
    named = _NAMED_VALUE.match(raw.strip())
    if named:
        return None, named.group(1)
    try:
        value = int(raw.strip())
    except ValueError:
        raise PolicyError(f'<{el.tag} {name}="{raw}">: {name} must be a whole number') from None
    if value < 0:
        raise PolicyError(f'<{el.tag} {name}="{raw}">: {name} must not be negative')
    return value, None


def _renewal(el: ET.Element) -> Renewal:
    raw = el.get("renewal-period")
    if raw is None:
        raise PolicyError(f"<{el.tag}> needs the attribute renewal-period (seconds)")
    text = raw.strip()
    if text.isdigit():
        return Renewal(seconds=int(text))
    match = _DURATION.match(text)
    if el.tag in QUOTAS and match and any(match.groups()):
        years, months, days, hours, minutes, seconds = (int(g or 0) for g in match.groups())
        if (years or months) and (days or hours or minutes or seconds):
            raise PolicyError(f'<{el.tag} renewal-period="{raw}">: mix of months and days is not supported')
        return Renewal(seconds=((days * 24 + hours) * 60 + minutes) * 60 + seconds, months=years * 12 + months)
    raise PolicyError(f'<{el.tag} renewal-period="{raw}">: renewal-period must be a number of seconds')


def parse_policy(xml_text: str) -> list[Limit]:
    """The limits of a `<policies>` document; PolicyError if it is not one."""
    try:
        # The XML comes from the app under test on loopback; expat refuses entity expansion bombs.
        root = ET.fromstring(xml_text)  # noqa: S314
    except ET.ParseError as exc:
        raise PolicyError(f"the policy is not well-formed XML: {exc}") from None
    if root.tag != "policies":
        raise PolicyError(f"the policy's root element must be <policies>, not <{root.tag}>")
    inbound = root.find("inbound")
    limits: list[Limit] = []
    if inbound is None:
        return limits
    for el in inbound:
        if el.tag not in RATE_LIMITS + QUOTAS:
            continue
        calls, named = _int_attr(el, "calls", required=el.tag in RATE_LIMITS)
        bandwidth, named_bw = _int_attr(el, "bandwidth", required=False)
        if el.tag in QUOTAS and calls is None and bandwidth is None and named is None and named_bw is None:
            raise PolicyError(f"<{el.tag}> needs calls and/or bandwidth")
        renewal = _renewal(el)
        if el.tag in RATE_LIMITS and not 0 < renewal.seconds <= 300:
            raise PolicyError(f'<{el.tag} renewal-period="{el.get("renewal-period")}">: must be 1 to 300 seconds')
        counter_key = el.get("counter-key")
        if el.tag.endswith("-by-key") and not counter_key:
            raise PolicyError(f"<{el.tag}> needs the attribute counter-key")
        first = DEFAULT_FIRST_PERIOD_START
        if el.get("first-period-start"):
            try:
                first = datetime.fromisoformat(el.get("first-period-start", ""))
            except ValueError:
                raise PolicyError(
                    f"<{el.tag}> first-period-start must look like 2024-01-01T00:00:00Z"
                ) from None
            first = first.replace(tzinfo=UTC) if first.tzinfo is None else first.astimezone(UTC)
        increment = 1
        raw_inc = (el.get("increment-count") or "").strip()
        if raw_inc.isdigit():
            increment = int(raw_inc)
        limits.append(
            Limit(
                kind=el.tag, calls=calls, renewal=renewal, counter_key=counter_key,
                first_period_start=first, increment_count=increment, unresolved=named,
            )
        )  # fmt: skip
    return limits


class ExpressionError(ValueError):
    """A policy expression the emulator does not evaluate."""


_EXPRESSIONS = {
    "context.subscription.id": "subscription_id",
    "context.subscription.key": "subscription_key",
    "context.user.id": "user_id",
    "context.product.id": "product_id",
    "context.request.ipaddress": "ip",
}


def evaluate_key(expression: str, context: dict[str, str]) -> str:
    """A counter key: a literal, or one of the `@(context.X.Y)` expressions in _EXPRESSIONS."""
    text = expression.strip()
    if not text.startswith("@"):
        return text
    inner = text[2:-1] if text.startswith("@(") and text.endswith(")") else text[1:]
    attr = _EXPRESSIONS.get(inner.strip().replace(" ", "").lower())
    if attr is None:
        raise ExpressionError(f"the emulator cannot evaluate the policy expression {expression!r}")
    return context[attr]


def _add_months(start: datetime, months: int) -> datetime:
    total = start.month - 1 + months
    year, month = start.year + total // 12, total % 12 + 1
    days_in_month = [31, 29 if year % 4 == 0 and (year % 100 != 0 or year % 400 == 0) else 28, 31, 30, 31,
                     30, 31, 31, 30, 31, 30, 31][month - 1]  # fmt: skip
    return start.replace(year=year, month=month, day=min(start.day, days_in_month))


def quota_window(limit: Limit, now: datetime) -> tuple[int, datetime | None]:
    """(period index, end of the period) for a quota; fixed windows counted from first-period-start."""
    start = limit.first_period_start
    if limit.renewal.months:
        elapsed = (now.year - start.year) * 12 + (now.month - start.month)
        if _add_months(start, elapsed) > now:
            elapsed -= 1
        index = elapsed // limit.renewal.months
        return index, _add_months(start, (index + 1) * limit.renewal.months)
    if limit.renewal.seconds == 0:
        return 0, None  # lifetime quota
    period = timedelta(seconds=limit.renewal.seconds)
    index = (now - start) // period
    return index, start + (index + 1) * period


@dataclass(frozen=True)
class Blocked:
    status: int
    retry_after: int
    message: str


def _hms(seconds: int) -> str:
    hours, rest = divmod(seconds, 3600)
    return f"{hours:02d}:{rest // 60:02d}:{rest % 60:02d}"


class Limiter:
    """Counters for rate limits (sliding window) and quotas (fixed windows), shared by all calls."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rates: dict[tuple[str, ...], deque[tuple[datetime, int]]] = {}
        self._quotas: dict[tuple[str, ...], tuple[int, int]] = {}

    def reset(self) -> None:
        with self._lock:
            self._rates.clear()
            self._quotas.clear()

    def check(self, limit: Limit, counter: tuple[str, ...], now: datetime) -> Blocked | None:
        """Count one call against `limit`, or say why it is refused (refused calls are not counted)."""
        with self._lock:
            if limit.is_rate:
                return self._check_rate(limit, counter, now)
            return self._check_quota(limit, counter, now)

    def _check_rate(self, limit: Limit, counter: tuple[str, ...], now: datetime) -> Blocked | None:
        window = timedelta(seconds=limit.renewal.seconds)
        calls = self._rates.setdefault(counter, deque())
        while calls and calls[0][0] <= now - window:
            calls.popleft()
        used = sum(n for _, n in calls)
        assert limit.calls is not None  # rate limits always have calls (parse_policy checks)
        if used + limit.increment_count > limit.calls:
            wait = max(1, math.ceil((calls[0][0] + window - now).total_seconds())) if calls else 1
            return Blocked(429, wait, f"Rate limit is exceeded. Try again in {wait} seconds.")
        calls.append((now, limit.increment_count))
        return None

    def _check_quota(self, limit: Limit, counter: tuple[str, ...], now: datetime) -> Blocked | None:
        index, end = quota_window(limit, now)
        period, used = self._quotas.get(counter, (index, 0))
        if period != index:
            used = 0
        if limit.calls is not None and used + limit.increment_count > limit.calls:
            wait = max(1, math.ceil((end - now).total_seconds())) if end is not None else 0
            left = f"Quota will be replenished in {_hms(wait)}." if end is not None else "The quota does not renew."
            return Blocked(403, wait, f"Out of call volume quota. {left}")
        self._quotas[counter] = (index, used + limit.increment_count)
        return None
