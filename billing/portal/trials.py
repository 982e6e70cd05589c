"""Free trials (a paid product's `trialDays`): who is offered one, and the mail before it ends. Pure code.

One trial per consumer and product. A consumer has had the trial of a product when the ledger
(billing.store.trials) has a row for it under the consumer's APIM user or the portal account's
e-mail address: closing the account and signing up again with the same address makes a new APIM user
but finds the address's row. The offer here only decides what Checkout is asked for; the trial is
claimed, atomically, when its subscription's key is first granted (billing.access.trials), so two
Checkouts completed side by side cannot both start one.

Checkout collects a card even though nothing is due today (`payment_method_collection=always`); the
trial's end is the subscription's first billing date, when Stripe charges the first invoice.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from billing.catalog_names import apim_product_id
from billing.models import MonetizationModels, Product, UnknownProductError
from billing.portal import mails
from billing.portal.mails import MailerPort
from billing.portal.offers import describe
from billing.portal.records import normalise_email


class TrialsPort(Protocol):
    def holder(self, product_id: str, keys: Sequence[str]) -> str | None:
        """The subscription that had the product's trial under any of these identities, if one did."""
        ...


@dataclass(frozen=True)
class TrialOffer:
    days: int | None  # the trial Checkout starts; None: none (the product has none, or it was had)
    had_it: bool = False  # the product has a trial and this consumer had it already
    mail_key: str | None = None  # the account's address as the ledger keys it (kept on the subscription)


# Mailbox providers that ignore dots in the local part of their addresses ("Gmail doesn't recognize dots
# as characters within usernames", support.google.com/mail/answer/7436150); googlemail.com is the same mailbox.
_DOTLESS = {"gmail.com": "gmail.com", "googlemail.com": "gmail.com"}


def trial_address(email: str) -> str:
    """The mailbox an address delivers to, as far as the trial ledger can tell without asking anyone:
    - case does not matter (`normalise_email`: trimmed, lower case);
    - a `+tag` ends the local part: sub-addressing (RFC 5233) delivers `ada+x@...` to `ada@...` at every
      large provider, so a new tag is not a new consumer;
    - dots in the local part do not matter at Gmail (and googlemail.com is gmail.com); elsewhere a dot
      may name another mailbox, so it is kept.
    Stricter than the account's own key (an account may sign up with a tagged address): used only so
    that one mailbox gets one trial of a product. A consumer whose provider gives `+` another meaning
    loses nothing but a second trial."""
    address = normalise_email(email)
    local, at, domain = address.rpartition("@")
    if not at or not local:
        return address
    local = local.split("+", 1)[0] or local
    if domain in _DOTLESS:
        local, domain = local.replace(".", "") or local, _DOTLESS[domain]
    return f"{local}@{domain}"


def mail_key(email: str) -> str:
    """The ledger's key of an address: the SHA-256 of its mailbox (`trial_address`), as accounts are
    keyed by a hash (billing.store.accounts)."""
    return hashlib.sha256(trial_address(email).encode("utf-8")).hexdigest()


def trial_keys(user_id: str, mail: str | None) -> tuple[str, ...]:
    """The ledger's row keys of a consumer: the APIM user, and the account's address when known."""
    return (f"user-{user_id}", f"mail-{mail}") if mail else (f"user-{user_id}",)


def trial_offer(product: Product, uid: str, email: str | None, trials: TrialsPort) -> TrialOffer:
    """Whether subscribing now starts the product's trial for this consumer."""
    if product.trial_days is None or not product.is_paid:
        return TrialOffer(None)
    mail = mail_key(email) if email else None
    if trials.holder(apim_product_id(product.id), trial_keys(uid, mail)) is not None:
        return TrialOffer(None, had_it=True, mail_key=mail)
    return TrialOffer(product.trial_days, mail_key=mail)


class TrialReminders:
    """The mail sent when Stripe says a trial ends in three days (`customer.subscription.trial_will_end`)."""

    def __init__(
        self,
        models: MonetizationModels,
        user_email: Callable[[str], str | None],
        mailer: MailerPort,
        billing_url: str,
        portal_url: str,
    ) -> None:
        self._models, self._user_email, self._mailer = models, user_email, mailer
        self._billing_url, self._portal_url = billing_url, portal_url

    def send(self, user_id: str, product_id: str, subscription_name: str, trial_end: int) -> str:
        """Mail the reminder to the APIM user's address; what was done, for the event's outcome."""
        try:
            product = self._models.product(product_id)
        except UnknownProductError:
            return f"no reminder: product {product_id} is not in the models file"
        to = self._user_email(user_id)
        if not to:
            return f"no reminder: user {user_id} has no e-mail address"
        ends = datetime.fromtimestamp(trial_end, UTC)
        self._mailer.send(
            mails.trial_ending(
                to,
                product.display_name,
                subscription_name,
                ends,
                charges=charges(product),
                portal_url=self._portal_url,
                billing_url=self._billing_url,
            )
        )
        return f"trial reminder mailed to user {user_id} (trial of {product_id} ends {ends:%Y-%m-%d %H:%M} UTC)"


def charges(product: Product) -> list[str]:
    """What a product bills once its trial is over, in the words of the subscribe page."""
    price = describe(product)
    first = (
        f"{price.headline}, charged in advance: the first month when the trial ends."
        if product.flat_fee_minor
        else f"{price.headline}; usage is billed at the end of each month."
    )
    return [first, *price.details]
