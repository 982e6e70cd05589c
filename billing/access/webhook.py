"""Receiving a Stripe webhook: verify, claim exactly once, apply within a time budget, answer.

Order of work: size limit, signature on the raw body (every configured secret, for rotation),
then parsing; nothing is stored or changed for a body that fails any of these. Then the event is
claimed in the idempotency table and its plan runs; work that would outlast Stripe's patience is
queued (and answered 200 once durably queued).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from billing.access.deadline import Deadline, DeadlineExceeded
from billing.access.draft_window import draft_window_problem
from billing.access.ports import AccessPorts, DependencyTimeout, WorkQueue
from billing.access.routing import (
    EventPlan,
    MalformedEvent,
    RemindTrialEnd,
    ReportClosingUsage,
    SyncSubscription,
    plan_event,
)
from billing.access.sync import sync_subscription
from billing.access.trials import remind_trial_end
from billing.records import Claim, ClaimKind
from billing.telemetry import annotate

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 1024 * 1024  # Stripe's events are far smaller; anything bigger is not from Stripe
SIGNATURE_TOLERANCE = 300  # seconds, Stripe's default tolerance for the signed timestamp
WEBHOOK_BUDGET = 8.0  # seconds of work before deferring to the queue (Stripe waits about 10 s)


# (payload, Stripe-Signature header, secret, tolerance in seconds) -> None if it verifies, else why not.
SignatureCheck = Callable[[str, str, str, int], "str | None"]


@dataclass(frozen=True)
class Answer:
    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Answer:
    return Answer(status, {"error": {"code": code, "message": message}}, headers or {})


class EventClaims(Protocol):
    def claim(self, event_id: str, event_type: str, *, take_queued: bool = False) -> Claim: ...

    def mark_done(self, claim: Claim, outcome: str) -> None: ...

    def mark_queued(self, claim: Claim) -> None: ...

    def release(self, claim: Claim) -> None: ...


@dataclass(frozen=True)
class WebhookDeps:
    """What a webhook needs, built lazily: storage or APIM being down is an answer, not a crash."""

    secrets: Sequence[str]
    check: SignatureCheck
    claims: Callable[[], EventClaims]
    ports: Callable[[], AccessPorts]
    work_queue: Callable[[], WorkQueue]


class TransientFailure(Exception):
    """A dependency did not answer in time: worth deferring rather than failing."""


def verify(
    body: bytes,
    signature: str | None,
    secrets: Sequence[str],
    check: SignatureCheck,
    setting: str = "STRIPE_WEBHOOK_SECRET",
) -> Answer | dict[str, Any]:
    """The parsed event, or the answer for a body that must not be processed (`setting`: the secrets' name)."""
    if len(body) > MAX_BODY_BYTES:
        return _error(413, "body_too_large", f"the body has {len(body)} bytes; at most {MAX_BODY_BYTES} are accepted")
    if not secrets:
        log.error("%s is not set: every delivery to this endpoint is refused", setting)
        return _error(500, "not_configured", "the webhook signing secret is not configured")
    if not signature:
        return _error(400, "signature_missing", "the Stripe-Signature header is missing")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return _error(400, "body_not_utf8", "the body is not UTF-8 text")
    reasons = []
    for secret in secrets:
        problem = check(text, signature, secret, SIGNATURE_TOLERANCE)
        if problem is None:
            break
        reasons.append(_signature_reason(problem))
    else:
        # The SDK's messages name the header's shape or the timestamp, never a secret.
        return _error(400, "signature_invalid", f"the Stripe-Signature header does not verify: {reasons[0]}")
    try:
        event = json.loads(text)
    except ValueError:
        return _error(400, "body_not_json", "the body is signed but is not JSON")
    if not isinstance(event, dict):
        return _error(400, "not_an_event", 'expected a JSON object: {"object": "event", ...}')
    return event


def _signature_reason(message: str) -> str:
    if "tolerance" in message:
        return "the signed timestamp is older than 5 minutes (stale or replayed)"
    if "extract timestamp" in message:
        return "expected t=<unix time>,v1=<hex signature>"
    if "expected scheme" in message:
        return "no v1 signature in it"
    return "no v1 signature matches the body with the configured secret(s)"


def receive(
    body: bytes, signature: str | None, deps: WebhookDeps, clock: Callable[[], float] = time.monotonic
) -> Answer:
    deadline = Deadline(WEBHOOK_BUDGET, clock)
    verified = verify(body, signature, deps.secrets, deps.check)
    if isinstance(verified, Answer):
        return verified
    try:
        plan = plan_event(verified)
    except MalformedEvent as exc:
        return _error(400, "not_an_event", str(exc))
    annotate(**{"stripe.event_id": plan.event_id, "stripe.event_type": plan.event_type})
    if not plan.actions:
        log.info("event %s (%s) acknowledged: %s", plan.event_id, plan.event_type, plan.note)
        return Answer(200, {"received": True, "outcome": plan.note})
    try:
        claims = deps.claims()
        claim = claims.claim(plan.event_id, plan.event_type)
    except Exception:
        log.exception("event %s: the idempotency store is unavailable", plan.event_id)
        return _error(503, "storage_unavailable", "cannot record the event now; retry later", {"Retry-After": "10"})
    if claim.kind is ClaimKind.DONE:
        return Answer(200, {"received": True, "duplicate": True, "outcome": claim.outcome})
    if claim.kind is ClaimKind.BUSY:
        if claim.status == "queued":
            # Durably queued by an earlier delivery; the worker applies it.
            return Answer(200, {"received": True, "duplicate": True, "outcome": "queued"})
        # Another instance works on it: answering non-2xx makes Stripe come back later.
        return _error(409, "in_progress", "this event is being processed; retry later", {"Retry-After": "30"})
    return _run_claimed(plan, claim, claims, deps, deadline)


def _run_claimed(plan: EventPlan, claim: Claim, claims: EventClaims, deps: WebhookDeps, deadline: Deadline) -> Answer:
    try:
        outcome = apply_plan(plan, deps.ports(), deadline)
    except (DeadlineExceeded, TransientFailure) as slow:
        return _defer(plan, claim, claims, deps, str(slow))
    except Exception:
        log.exception("event %s (%s) failed; released for Stripe's retry", plan.event_id, plan.event_type)
        _release_quietly(claims, claim)
        return _error(500, "handler_failed", "the event could not be applied; it will be retried")
    try:
        claims.mark_done(claim, outcome)
    except Exception:
        # Applied but not recorded: the retry re-applies it, which changes nothing.
        log.exception("event %s applied but not marked done", plan.event_id)
        return _error(503, "storage_unavailable", "the event was applied but not recorded; retry later")
    log.info("event %s (%s): %s", plan.event_id, plan.event_type, outcome)
    return Answer(200, {"received": True, "outcome": outcome})


def _defer(plan: EventPlan, claim: Claim, claims: EventClaims, deps: WebhookDeps, why: str) -> Answer:
    try:
        deps.work_queue().defer(plan.to_json())
    except Exception:
        log.exception("event %s: could not queue deferred work", plan.event_id)
        _release_quietly(claims, claim)
        return _error(503, "queue_unavailable", "the event could not be queued; retry later")
    try:
        claims.mark_queued(claim)
    except Exception:
        # Without the hand-over the worker would find the claim busy: free it for the worker instead.
        log.warning("event %s queued but its claim not handed over; releasing it", plan.event_id)
        _release_quietly(claims, claim)
    log.info("event %s (%s) deferred to the work queue: %s", plan.event_id, plan.event_type, why)
    return Answer(200, {"received": True, "outcome": "queued"})


def _release_quietly(claims: EventClaims, claim: Claim) -> None:
    try:
        claims.release(claim)
    except Exception:
        log.warning("event %s: claim not released; it goes stale and is retried", claim.event_id)


def apply_plan(plan: EventPlan, ports: AccessPorts, deadline: Deadline) -> str:
    """Run the plan's actions; the outcome text is what the idempotency row records."""
    outcomes = []
    for action in plan.actions:
        if isinstance(action, SyncSubscription):
            try:
                result = sync_subscription(action.subscription_id, ports, event_created=plan.created, deadline=deadline)
            except DependencyTimeout as exc:
                raise TransientFailure(str(exc)) from exc
            if result.outcome == "ignored":
                log.warning(
                    "event %s (%s): %s ignored: %s",
                    plan.event_id,
                    plan.event_type,
                    result.subscription_id,
                    result.detail,
                )
            outcomes.append(f"{result.outcome}: {result.detail}")
        elif isinstance(action, RemindTrialEnd):
            outcomes.append(remind_trial_end(action.subscription_id, ports, deadline))
        elif isinstance(action, ReportClosingUsage):
            deadline.step_timeout(2.0)
            ports.usage.request_closing(action.subscription_id, action.period_start, action.period_end)
            outcomes.append(
                f"closing usage requested for {action.subscription_id} [{action.period_start}, {action.period_end})"
            )
            problem = draft_window_problem(
                invoice_id=action.invoice_id,
                subscription_id=action.subscription_id,
                created=action.invoice_created,
                finalizes_at=action.finalizes_at,
                needs_seconds=ports.usage.closing_takes_seconds(),
            )
            if problem is not None:
                log.error("draft window too short: %s", problem)
                outcomes.append("draft window too short (logged)")
    return "; ".join(outcomes)


def work(message: bytes | str, deps: WebhookDeps) -> str:
    """The event work queue's worker: claim the queued event, apply it without a budget, mark it done.

    Raises on failure so that the Functions host retries the message (then moves it to the poison queue).
    """
    plan = EventPlan.from_json(message)
    annotate(**{"stripe.event_id": plan.event_id, "stripe.event_type": plan.event_type})
    claims = deps.claims()
    claim = claims.claim(plan.event_id, plan.event_type, take_queued=True)
    if claim.kind is ClaimKind.DONE:
        return f"already done: {claim.outcome}"
    if claim.kind is ClaimKind.BUSY:
        raise RuntimeError(f"event {plan.event_id} is being processed elsewhere ({claim.status}); retry later")
    try:
        outcome = apply_plan(plan, deps.ports(), Deadline.unbounded())
    except Exception:
        # Back to queued (not deleted): the message's retry must still find it owned by the queue.
        try:
            claims.mark_queued(claim)
        except Exception:
            log.warning("event %s: claim left processing; it goes stale and is retried", plan.event_id)
        raise
    claims.mark_done(claim, outcome)
    log.info("queued event %s (%s): %s", plan.event_id, plan.event_type, outcome)
    return outcome
