"""The `timespan` request parameter: an ISO 8601 duration or interval, turned into [start, end] in UTC.

Forms: `PT12H` (the duration up to now, what LogsQueryClient sends for a timedelta, e.g. `PT3600.0S`),
`start/end` (what it sends for two datetimes), `start/PT1H` and `PT1H/end`. Dates alone mean midnight
UTC, as in the request-format page's example `2024-01-01/2024-01-02`.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

_DURATION = re.compile(
    r"^P(?:(?P<weeks>\d+(?:\.\d+)?)W)?(?:(?P<days>\d+(?:\.\d+)?)D)?"
    r"(?:T(?:(?P<hours>\d+(?:\.\d+)?)H)?(?:(?P<minutes>\d+(?:\.\d+)?)M)?(?:(?P<seconds>\d+(?:\.\d+)?)S)?)?$"
)


class TimespanError(ValueError):
    """The timespan is not a form the API accepts; the message says what is wrong."""


def parse(value: str, now: datetime) -> tuple[datetime, datetime]:
    """(start, end) as naive UTC datetimes, the way the gateway rows store TimeGenerated."""
    text = value.strip()
    if not text:
        raise TimespanError("timespan is empty; give an ISO 8601 duration (PT12H) or interval (start/end)")
    parts = text.split("/")
    if len(parts) == 1:
        start, end = now - _duration(parts[0]), now
    elif len(parts) == 2:
        first, second = parts
        if first.upper().startswith("P"):
            end = _instant(second)
            start = end - _duration(first)
        elif second.upper().startswith("P"):
            start = _instant(first)
            end = start + _duration(second)
        else:
            start, end = _instant(first), _instant(second)
    else:
        raise TimespanError(f"timespan {value!r} has more than one '/'; use start/end, start/duration or duration")
    if end < start:
        raise TimespanError(f"timespan {value!r} ends before it starts")
    return _naive(start), _naive(end)


def _duration(text: str) -> timedelta:
    match = _DURATION.match(text.strip().upper())
    if match is None or text.strip().upper() in ("P", "PT"):
        raise TimespanError(
            f"{text!r} is not an ISO 8601 duration this emulator reads (weeks, days, hours, minutes, seconds; "
            "e.g. PT12H, P1D, PT3600.0S)"
        )
    amounts = {name: float(amount) for name, amount in match.groupdict().items() if amount is not None}
    return timedelta(**amounts)


def _instant(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise TimespanError(f"{text!r} is not an ISO 8601 date or date-time") from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def _naive(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(tzinfo=None)
