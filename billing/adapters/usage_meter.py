"""Sending meter events to Stripe: v1 `billing.meter_events` or the v2 high-throughput stream.

v1 takes one event a request (about 1,000/s in live mode); the v2 stream takes up to 100 events a
request (about 10,000/s) with a short-lived session token, reused until shortly before it expires.
`send` uses the stream whenever it needs fewer requests than v1: from `STREAM_MIN_EVENTS` events
(a session and one stream request beat three v1 requests), so only tiny sends go through v1.
Every request takes a token from the shared Stripe budget; the SDK's own
retries are switched off per request so that a 429 pauses the whole process (Retry-After).
Identifiers make resending safe: Stripe drops a duplicate (v2) or refuses it as existing (v1).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any, TypeVar

import stripe

from billing.adapters.stripe_client import retryable
from billing.catalog_names import METER_CUSTOMER_KEY, METER_VALUE_KEY
from billing.usage.plan import MeterEvent
from billing.usage.ports import SendResult
from billing.usage.ratelimit import TokenBucket
from billing.usage.retry import Throttled, Transient, call_with_retry

T = TypeVar("T")

STREAM_MAX_EVENTS = 100  # Stripe: events per meter event stream request
# From this many events the stream needs fewer requests than v1 even when it must open a session.
STREAM_MIN_EVENTS = 3
SESSION_MARGIN_SECONDS = 60  # renew the stream session this long before it expires


def _is_duplicate(error: stripe.StripeError) -> bool:
    # v1 refuses an identifier it has seen in the last 24 hours: the event is already recorded.
    message = (error.user_message or str(error)).lower()
    return "identifier" in message and "already exists" in message


def _reason(error: stripe.StripeError) -> str:
    # Stripe's message names the field; never the request, which carries no secret anyway.
    return f"{type(error).__name__}: {error.user_message or 'refused'}"


def _iso(ts: int) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _v1_params(event: MeterEvent) -> dict[str, Any]:
    return {
        "event_name": event.event_name,
        "payload": {METER_CUSTOMER_KEY: event.customer_id, METER_VALUE_KEY: str(event.value)},
        "identifier": event.identifier,
        "timestamp": event.timestamp,
    }


def _v2_event(event: MeterEvent) -> dict[str, Any]:
    return {**_v1_params(event), "timestamp": _iso(event.timestamp)}


def _chunks(items: Sequence[MeterEvent], size: int) -> Iterator[Sequence[MeterEvent]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class StripeMeterSender:
    def __init__(
        self,
        client: stripe.StripeClient,
        bucket: TokenBucket,
        *,
        stream_threshold: int = STREAM_MIN_EVENTS,
        workers: int = 8,
        now: Callable[[], float] | None = None,
    ) -> None:
        self._stripe = client
        self._bucket = bucket
        self._stream_threshold = stream_threshold
        self._workers = workers
        self._now = now or (lambda: datetime.now(UTC).timestamp())
        self._session_lock = threading.Lock()
        self._session: tuple[str, float] | None = None  # token, expires at (unix)
        self._executor: ThreadPoolExecutor | None = None
        self._counter_lock = threading.Lock()
        self.requests = {"v1": 0, "stream": 0, "session": 0}

    def _count(self, kind: str) -> None:
        with self._counter_lock:
            self.requests[kind] += 1

    def send(self, events: Sequence[MeterEvent]) -> SendResult:
        """Send every event; the result says which Stripe has and which it refused (and why)."""
        if len(events) >= self._stream_threshold:
            parts = list(_chunks(events, STREAM_MAX_EVENTS))
            sender: Callable[[Sequence[MeterEvent]], SendResult] = self._send_stream
        else:
            parts = [[e] for e in events]
            sender = self._send_v1_each
        result = SendResult()
        if not parts:
            return result
        if len(parts) == 1:
            return sender(parts[0])
        for part in self._pool().map(sender, parts):
            result.extend(part)
        return result

    def _pool(self) -> ThreadPoolExecutor:
        # One pool for the sender's life: a pool per send cost thread start-ups in every batch.
        with self._session_lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(max_workers=self._workers, thread_name_prefix="meter-send")
            return self._executor

    # v1 --------------------------------------------------------------------------------------
    def _send_v1_each(self, events: Sequence[MeterEvent]) -> SendResult:
        result = SendResult()
        for event in events:
            reason = self._send_v1(event)
            if reason is None:
                result.accepted.append(event)
            else:
                result.failed.append((event, reason))
        return result

    def _send_v1(self, event: MeterEvent) -> str | None:
        """None when Stripe has the event, else why it refused it."""

        def call() -> None:
            self._count("v1")
            try:
                self._stripe.v1.billing.meter_events.create(
                    params=_v1_params(event),  # type: ignore[arg-type]
                    options={"max_network_retries": 0},
                )
            except stripe.StripeError as exc:
                translated = retryable(exc)
                if translated is exc:
                    raise
                raise translated from None

        try:
            call_with_retry(call, self._bucket)
        except stripe.StripeError as exc:
            return None if _is_duplicate(exc) else _reason(exc)
        except (Throttled, Transient) as exc:
            return f"gave up after retries: {exc}"
        return None

    # v2 stream -------------------------------------------------------------------------------
    def _token(self, renew: bool = False) -> str:
        with self._session_lock:
            if renew or self._session is None or self._session[1] - SESSION_MARGIN_SECONDS <= self._now():

                def create() -> tuple[str, float]:
                    self._count("session")
                    try:
                        session = self._stripe.v2.billing.meter_event_session.create(options={"max_network_retries": 0})
                    except stripe.StripeError as exc:
                        translated = retryable(exc)
                        if translated is exc:
                            raise
                        raise translated from None
                    expires = datetime.fromisoformat(str(session.expires_at).replace("Z", "+00:00"))
                    return session.authentication_token, expires.timestamp()

                self._session = call_with_retry(create, self._bucket)
            return self._session[0]

    def _send_stream(self, events: Sequence[MeterEvent]) -> SendResult:
        body = {"events": [_v2_event(e) for e in events]}
        renewed = False
        while True:
            token = self._token(renew=renewed)

            def call(token: str = token) -> None:
                self._count("stream")
                try:
                    self._stripe.v2.billing.meter_event_stream.create(
                        body,  # type: ignore[arg-type]
                        options={"api_key": token, "max_network_retries": 0},
                    )
                except stripe.StripeError as exc:
                    translated = retryable(exc)
                    if translated is exc:
                        raise
                    raise translated from None

            try:
                call_with_retry(call, self._bucket)
                return SendResult(accepted=list(events))
            except (stripe.AuthenticationError, stripe.TemporarySessionExpiredError):
                if renewed:
                    raise
                renewed = True  # the session expired early: one new session, then the same request
            except stripe.InvalidRequestError:
                # The stream refuses a request for one bad event: find it (and keep the rest) on v1.
                return self._send_v1_each(events)
            except (Throttled, Transient) as exc:
                return SendResult(failed=[(e, f"gave up after retries: {exc}") for e in events])


class StripeMeterCounts:
    """Stripe's meter event summaries: what a meter counted for a customer, read back.

    Reads take tokens from the same Stripe budget as the sends (one process, one rate limit), and
    429 / 5xx answers are retried as theirs are.
    """

    def __init__(self, client: stripe.StripeClient, bucket: TokenBucket) -> None:
        self._stripe = client
        self._bucket = bucket
        self._meter_ids: dict[str, str] = {}  # event name -> meter id, made once by the catalog

    def counted(self, customer_id: str, event_name: str, start: int, end: int) -> int:
        meter = self._meter_id(event_name)
        summaries = self._call(
            lambda: self._stripe.v1.billing.meters.event_summaries.list(
                meter,
                params={
                    "customer": customer_id,
                    "start_time": start,
                    "end_time": end,
                    "limit": 100,
                },
                options={"max_network_retries": 0},
            )
        )
        # Without value_grouping_window: one summary for the whole range (integers, exact as floats).
        return sum(int(s.aggregated_value) for s in summaries.data)

    def _meter_id(self, event_name: str) -> str:
        if event_name not in self._meter_ids:
            meters = self._call(
                lambda: self._stripe.v1.billing.meters.list(params={"limit": 100}, options={"max_network_retries": 0})
            )
            for meter in meters.auto_paging_iter():
                self._meter_ids[str(meter.event_name)] = str(meter.id)
        if event_name not in self._meter_ids:
            raise LookupError(f"Stripe has no meter for {event_name}: run `python -m billing catalog apply`")
        return self._meter_ids[event_name]

    def _call(self, request: Callable[[], T]) -> T:
        def once() -> T:
            try:
                return request()
            except stripe.StripeError as exc:
                translated = retryable(exc)
                if translated is exc:
                    raise
                raise translated from None

        return call_with_retry(once, self._bucket)
