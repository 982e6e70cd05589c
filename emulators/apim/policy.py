"""Product policy XML: the limits it declares, and how they are counted at the gateway.

Only direct children of `<inbound>` are read (what the app generates); conditional blocks such as
`<choose>` are not evaluated. Supported: `rate-limit`, `rate-limit-by-key`, `quota`, `quota-by-key`.
Sources for each rule are in README.md ("Quotas and rate limits").
"""

from __future__ import annotations

import dataclasses
import math
import re
import threading
import xml.etree.ElementTree as ET
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from xml.parsers import expat

from emulators.apim.expressions import ExpressionError

RATE_LIMITS = ("rate-limit", "rate-limit-by-key")
QUOTAS = ("quota", "quota-by-key")
# quota-by-key's documented default `first-period-start`.
DEFAULT_FIRST_PERIOD_START = datetime(1, 1, 1, tzinfo=UTC)
# quota-by-key: "Minimum period: 300 seconds." (0 stays allowed: "the period is set to infinite").
MIN_QUOTA_BY_KEY_SECONDS = 300
_NAMED_VALUE = re.compile(r"^\{\{([^{}]+)\}\}$")
_DURATION = re.compile(r"^P(?:(\d+)Y)?(?:(\d+)M)?(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+)S)?)?$")

__all__ = ["Blocked", "ExpressionError", "Limit", "Limiter", "PolicyError", "QuotaPeriod", "parse_policy"]


class PolicyError(ValueError):
    """The policy cannot be stored: the message names the element and attribute at fault."""


@dataclass(frozen=True)
class Renewal:
    seconds: int = 0  # 0 with months 0 means a lifetime quota
    months: int = 0

    @property
    def lifetime(self) -> bool:
        return not self.seconds and not self.months

    def iso(self) -> str:
        """The period as an ISO 8601 duration, as in a quota counter's periodKey ("0_P3Y6M4DT12H30M5S")."""
        years, months = divmod(self.months, 12)
        days, rest = divmod(self.seconds, 86400)
        hours, rest = divmod(rest, 3600)
        minutes, seconds = divmod(rest, 60)
        date = "".join(f"{n}{u}" for n, u in ((years, "Y"), (months, "M"), (days, "D")) if n)
        time = "".join(f"{n}{u}" for n, u in ((hours, "H"), (minutes, "M"), (seconds, "S")) if n)
        return "P" + date + ("T" + time if time else "") if date or time else "PT0S"


@dataclass(frozen=True)
class Limit:
    kind: str  # one of RATE_LIMITS + QUOTAS
    calls: int | None
    renewal: Renewal
    counter_key: str | None  # expression or literal, by-key forms only
    first_period_start: datetime = DEFAULT_FIRST_PERIOD_START
    increment_count: int = 1
    increment_condition: str | None = None  # expression or literal; evaluated on the response
    unresolved: str | None = None  # a {{named value}} the emulator cannot resolve
    line: int = 0  # where the element starts, as APIM's policy errors report it
    column: int = 0

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
        renewal = Renewal(seconds=int(text))
    else:
        match = _DURATION.match(text)
        # Only quota-by-key takes an ISO 8601 period (P0Y1M0DT0H0M0S); the others document seconds only.
        if el.tag != "quota-by-key" or not match or not any(match.groups()):
            raise PolicyError(f'<{el.tag} renewal-period="{raw}">: renewal-period must be a number of seconds')
        years, months, days, hours, minutes, seconds = (int(g or 0) for g in match.groups())
        if (years or months) and (days or hours or minutes or seconds):
            raise PolicyError(f'<{el.tag} renewal-period="{raw}">: a period of months and days is not supported')
        renewal = Renewal(seconds=((days * 24 + hours) * 60 + minutes) * 60 + seconds, months=years * 12 + months)
    if el.tag in RATE_LIMITS and not 0 < renewal.seconds <= 300:
        raise PolicyError(f'<{el.tag} renewal-period="{raw}">: must be 1 to 300 seconds')
    if el.tag == "quota-by-key" and not renewal.months and 0 < renewal.seconds < MIN_QUOTA_BY_KEY_SECONDS:
        raise PolicyError(
            f'<{el.tag} renewal-period="{raw}">: the minimum period is {MIN_QUOTA_BY_KEY_SECONDS} '
            "seconds (or 0 for a quota that never renews)"
        )
    return renewal


def _first_period_start(el: ET.Element) -> datetime:
    raw = el.get("first-period-start")
    if not raw:
        return DEFAULT_FIRST_PERIOD_START
    try:
        first = datetime.fromisoformat(raw)
    except ValueError:
        raise PolicyError(f"<{el.tag}> first-period-start must look like 2024-01-01T00:00:00Z") from None
    return first.replace(tzinfo=UTC) if first.tzinfo is None else first.astimezone(UTC)


def _positions(xml_text: str) -> list[tuple[int, int]]:
    """(line, column) of each element in document order, as .NET reports them (1-based, at the name)."""
    found: list[tuple[int, int]] = []
    parser = expat.ParserCreate()
    parser.StartElementHandler = lambda *_: found.append((parser.CurrentLineNumber, parser.CurrentColumnNumber + 2))
    parser.Parse(xml_text, True)
    return found


def parse_policy(xml_text: str) -> list[Limit]:
    """The limits of a `<policies>` document; PolicyError if it is not one."""
    try:
        # The XML comes from the app under test on loopback; expat refuses entity expansion bombs.
        root = ET.fromstring(xml_text)  # noqa: S314
        positions = dict(zip(map(id, root.iter()), _positions(xml_text), strict=True))
    except (ET.ParseError, expat.ExpatError) as exc:
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
        # Expressions are kept as text: APIM compiles them on save, the emulator evaluates them per call
        # and answers 500 for one it cannot evaluate (README).
        counter_key = el.get("counter-key")
        if el.tag.endswith("-by-key") and not counter_key:
            raise PolicyError(f"<{el.tag}> needs the attribute counter-key")
        raw_inc = (el.get("increment-count") or "").strip()
        by_key = el.tag.endswith("-by-key")
        line, column = positions.get(id(el), (0, 0))
        limits.append(
            Limit(
                kind=el.tag,
                calls=calls,
                renewal=renewal,
                counter_key=counter_key,
                first_period_start=_first_period_start(el) if el.tag == "quota-by-key" else DEFAULT_FIRST_PERIOD_START,
                increment_count=int(raw_inc) if raw_inc.isdigit() else 1,
                increment_condition=el.get("increment-condition") if by_key else None,
                unresolved=named,
                line=line,
                column=column,
            )
        )
    return limits


def _add_months(start: datetime, months: int) -> datetime:
    total = start.month - 1 + months
    year, month = start.year + total // 12, total % 12 + 1
    days_in_month = [
        31,
        29 if year % 4 == 0 and (year % 100 != 0 or year % 400 == 0) else 28,
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ][month - 1]
    return start.replace(year=year, month=month, day=min(start.day, days_in_month))


def quota_window(renewal: Renewal, start: datetime, now: datetime) -> tuple[int, datetime, datetime | None]:
    """(period index, period start, period end) of fixed windows counted from `start`; end None = lifetime."""
    if renewal.lifetime:
        return 0, start, None
    if renewal.months:
        elapsed = (now.year - start.year) * 12 + (now.month - start.month)
        if _add_months(start, elapsed) > now:
            elapsed -= 1
        index = max(0, elapsed) // renewal.months
        return index, _add_months(start, index * renewal.months), _add_months(start, (index + 1) * renewal.months)
    period = timedelta(seconds=renewal.seconds)
    index = max(0, (now - start) // period)
    return index, start + index * period, start + (index + 1) * period


@dataclass(frozen=True)
class Blocked:
    status: int
    retry_after: int
    message: str


@dataclass
class QuotaPeriod:
    """One period of a quota-by-key counter, as the quotas API shows it (QuotaCounterContract)."""

    counter_key: str
    period_key: str
    start: datetime
    end: datetime | None
    calls: int = 0
    kb: float = 0.0


def _hms(seconds: int) -> str:
    hours, rest = divmod(seconds, 3600)
    return f"{hours:02d}:{rest // 60:02d}:{rest % 60:02d}"


def _quota_exceeded(end: datetime | None, now: datetime) -> Blocked:
    if end is None:
        return Blocked(403, 0, "Out of call volume quota. The quota does not renew.")
    wait = max(1, math.ceil((end - now).total_seconds()))
    return Blocked(403, wait, f"Out of call volume quota. Quota will be replenished in {_hms(wait)}.")


class Limiter:
    """Counters for rate limits (sliding window) and quotas (fixed windows), shared by all calls.

    `quota` counts per subscription from the subscription's start; `quota-by-key` counts per evaluated
    counter key from `first-period-start`, and only its counters are visible to the quotas API.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rates: dict[tuple[str, ...], deque[tuple[datetime, int]]] = {}
        self._quotas: dict[tuple[str, ...], tuple[int, int]] = {}
        self._keyed: dict[str, dict[str, QuotaPeriod]] = {}

    def reset(self) -> None:
        with self._lock:
            self._rates.clear()
            self._quotas.clear()
            self._keyed.clear()

    def check_rate(self, limit: Limit, counter: tuple[str, ...], now: datetime) -> Blocked | None:
        """Count one call against a rate limit, or say why it is refused (refused calls are not counted)."""
        with self._lock:
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

    def check_quota(self, limit: Limit, counter: tuple[str, ...], now: datetime, start: datetime) -> Blocked | None:
        """`quota`: count one call in the fixed window that started at a multiple of the period after `start`."""
        with self._lock:
            index, _, end = quota_window(limit.renewal, start, now)
            period, used = self._quotas.get(counter, (index, 0))
            if period != index:
                used = 0
            if limit.calls is not None and used + limit.increment_count > limit.calls:
                return _quota_exceeded(end, now)
            self._quotas[counter] = (index, used + limit.increment_count)
            return None

    def check_quota_by_key(
        self, limit: Limit, key: str, now: datetime, counted: frozenset[int] = frozenset()
    ) -> Blocked | QuotaPeriod:
        """`quota-by-key`: the current period of `key` if the call may pass (not yet counted), else Blocked.

        `counted` holds the periods this request already counted: a key is incremented, and so checked,
        once per request.
        """
        with self._lock:
            index, start, end = quota_window(limit.renewal, limit.first_period_start, now)
            periods = self._current(key, now)
            period_key = f"{index}_{limit.renewal.iso()}"
            period = periods.setdefault(period_key, QuotaPeriod(key, period_key, start, end))
            if id(period) in counted:
                return period
            if limit.calls is not None and period.calls + limit.increment_count > limit.calls:
                return _quota_exceeded(end, now)
            return period

    def count(self, period: QuotaPeriod, calls: int) -> None:
        with self._lock:
            period.calls += calls

    def _current(self, key: str, now: datetime) -> dict[str, QuotaPeriod]:
        # Periods that have ended are forgotten: the quotas API lists "current quota counter periods".
        periods = self._keyed.setdefault(key, {})
        for name in [n for n, p in periods.items() if p.end is not None and p.end <= now]:
            del periods[name]
        return periods

    # The quotas API (QuotaByCounterKeys / QuotaByPeriodKeys): snapshots, never the live objects.
    def counters(self, key: str, now: datetime) -> list[QuotaPeriod] | None:
        with self._lock:
            periods = self._current(key, now) if key in self._keyed else {}
            return [dataclasses.replace(p) for p in periods.values()] or None

    def set_counters(
        self, key: str, now: datetime, calls: int | None, kb: float | None, period_key: str | None = None
    ) -> list[QuotaPeriod] | None:
        """Set every current period of `key` (or only `period_key`); None when there is none."""
        with self._lock:
            periods = self._current(key, now) if key in self._keyed else {}
            chosen = [p for name, p in periods.items() if period_key is None or name == period_key]
            for period in chosen:
                period.calls = period.calls if calls is None else calls
                period.kb = period.kb if kb is None else kb
            return [dataclasses.replace(p) for p in chosen] or None
