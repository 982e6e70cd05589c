"""Free trials in the access area: one trial per consumer and product, and the reminder before it ends.

The portal offers a trial when the ledger shows none for the consumer (billing.portal.trials), but
two Checkouts opened side by side are both offered one, and a Checkout page can be completed long
after the offer. So the trial is claimed when its subscription's key is first granted: atomically,
under the APIM user and the account's address (kept on the subscription at Checkout), and a
subscription whose consumer had the product's trial is refused and cancelled like any other refused
first grant (nothing was charged: it is still in its trial).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from billing.access.deadline import Deadline
from billing.access.decisions import AccessTarget, MetadataProblem, access_target
from billing.access.ports import AccessPorts
from billing.access.stripe_objects import MalformedObject, SubscriptionSnapshot, subscription_snapshot
from billing.catalog_names import SUB_META_TRIAL_MAIL
from billing.portal.trials import trial_keys

log = logging.getLogger(__name__)
# An SMTP exchange may take up to its timeout (billing.adapters.mail_smtp: 10 s), more than the webhook's
# budget: a reminder is always sent from the event work queue, never while Stripe waits.
MAIL_SECONDS = 12.0


def trial_refusal(ports: AccessPorts, snapshot: SubscriptionSnapshot, target: AccessTarget) -> str | None:
    """At a subscription's first grant: why it must not start, if it is a trial its consumer had already.

    Claims the trial for it otherwise (called last of the first-grant checks, so that a subscription
    refused for another reason leaves the trial to its consumer's next try).
    """
    if not snapshot.trial_end:
        return None
    if ports.trials is None:
        return "free trials cannot be checked: the trial ledger is not configured"
    keys = trial_keys(target.user_id, snapshot.metadata.get(SUB_META_TRIAL_MAIL) or None)
    holder = ports.trials.claim(target.product_id, keys, snapshot.id)
    if holder is None:
        return None
    return f"user {target.user_id} had the free trial of {target.product_id} already (subscription {holder})"


def remind_trial_end(subscription_id: str, ports: AccessPorts, deadline: Deadline) -> str:
    """`customer.subscription.trial_will_end`: mail the consumer, if the trial still ends in a charge.

    Stripe's note on the event: "Before sending payment-reminder communications from this webhook,
    check the subscription status" -- so the subscription is read again: no mail once it is no longer
    trialing, or when it ends with its trial (cancelled in the portal or in Stripe's customer portal).
    """
    deadline.step_timeout(MAIL_SECONDS, at_least=MAIL_SECONDS)  # in the webhook: DeadlineExceeded, so queued
    raw = ports.stripe.retrieve(subscription_id)
    if raw is None:
        return f"no reminder: Stripe has no subscription {subscription_id}"
    try:
        snapshot = subscription_snapshot(raw)
        target = access_target(snapshot.metadata, snapshot.product_ids)
    except (MetadataProblem, MalformedObject) as problem:
        return f"no reminder for {subscription_id}: {problem}"
    why_not = _no_reminder(raw, snapshot)
    if why_not:
        return f"no reminder for {subscription_id}: {why_not}"
    if ports.reminders is None:
        log.error("trial of %s ends soon, but no reminder can be sent: no mailer is configured", subscription_id)
        return f"no reminder for {subscription_id}: no mailer is configured"
    return ports.reminders.send(target.user_id, target.product_id, target.subscription_name, snapshot.trial_end)


def _no_reminder(raw: Mapping[str, Any], snapshot: SubscriptionSnapshot) -> str:
    if snapshot.state.status != "trialing":
        return f"it is {snapshot.state.status}, no longer in its trial"
    if snapshot.state.access_ended or raw.get("cancel_at_period_end") or raw.get("cancel_at"):
        return "it was cancelled and ends with its trial: nothing will be charged"
    return ""
