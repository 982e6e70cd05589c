"""Account changes APIM delegates: change password, change profile (names), close the account.

Every step is idempotent and the close runs in an order a retry can finish: the account row (with
the password hash) goes last, so submitting the same close form again after a failure verifies the
password and completes the remaining steps.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from datetime import datetime

from billing.portal import passwords
from billing.portal.accounts import AccountError, check_password
from billing.portal.ports import HOLDING_STATES, AccountsPort, ApimPort, AttemptsPort, PaymentsPort
from billing.portal.unsubscribe import ClosingReporter, unsubscribe
from billing.store.accounts import Account

log = logging.getLogger(__name__)
_WRITE_TRIES = 3  # optimistic concurrency on the account row


def find_account(uid: str, apim: ApimPort, accounts: AccountsPort) -> Account | None:
    """The account kept here for the APIM user, if the user signed up through this app."""
    email = apim.user_email(uid)
    if email is None:
        return None
    account = accounts.get(email)
    return account if account is not None and account.apim_user_id == uid else None


def _update(accounts: AccountsPort, email: str, change: Callable[[Account], Account]) -> Account:
    for _ in range(_WRITE_TRIES):
        found = accounts.get_with_etag(email)
        if found is None:
            raise AccountError("this account does not exist any more", status=404)
        current, etag = found
        updated = change(current)
        if updated == current or accounts.replace(updated, etag):
            return updated
    raise RuntimeError("the account row kept changing while it was updated")


def _own_account(email: str, uid: str, password: str, *, accounts: AccountsPort, attempts: AttemptsPort,
                 now: int) -> Account:  # fmt: skip
    account = check_password(email, password, accounts, attempts, now, wrong="the current password is wrong")
    if account.apim_user_id != uid:  # the form's signed e-mail and user id no longer belong together
        raise AccountError("this account does not exist any more", status=404)
    return account


def change_password(email: str, uid: str, current: str, new: str, confirm: str, *, accounts: AccountsPort,
                    attempts: AttemptsPort, now: int) -> None:  # fmt: skip
    """Replace the password hash after checking the current password (attempts limited as at sign-in)."""
    account = _own_account(email, uid, current, accounts=accounts, attempts=attempts, now=now)
    if account.closing_since:
        raise AccountError("this account is being closed; its password cannot change", status=409)
    try:
        passwords.check_policy(new)
    except passwords.PasswordPolicyError as exc:
        raise AccountError(str(exc), field="new_password") from None
    if new != confirm:
        raise AccountError("the new password and its confirmation differ", field="confirm_password")
    new_hash = passwords.hash_password(new)
    _update(accounts, email, lambda a: dataclasses.replace(a, password_hash=new_hash))


def check_names(first_name: str, last_name: str) -> tuple[str, str]:
    for field, value, label in (("first_name", first_name, "first name"), ("last_name", last_name, "last name")):
        if not value.strip() or len(value.strip()) > 100:
            raise AccountError(f"enter your {label} (1 to 100 characters)", field=field)
    return first_name.strip(), last_name.strip()


def change_profile(email: str, uid: str, first_name: str, last_name: str, *, accounts: AccountsPort,
                   apim: ApimPort) -> None:  # fmt: skip
    """New first and last names in APIM and in the account row (both idempotent, so a retry repeats both)."""
    first, last = check_names(first_name, last_name)
    found = accounts.get(email)
    if found is None or found.apim_user_id != uid:
        raise AccountError("this account does not exist any more", status=404)
    if found.closing_since:
        raise AccountError("this account is being closed; its profile cannot change", status=409)
    apim.update_user_names(uid, first, last)
    _update(accounts, email, lambda a: dataclasses.replace(a, first_name=first, last_name=last))


def close_account(email: str, uid: str, password: str, *, accounts: AccountsPort, attempts: AttemptsPort,
                  apim: ApimPort, payments: PaymentsPort, now: datetime,
                  reporter: ClosingReporter | None) -> list[str]:  # fmt: skip
    """Close the account; the names of the subscriptions it cancelled. Safe to repeat after a failure.

    1. password check, then mark the row closing (sign-in refuses it from now on);
    2. cancel each live APIM subscription as Unsubscribe does (usage so far reported, Stripe
       cancelled with a final invoice, APIM cancelled);
    3. expire open Checkout Sessions, delete the APIM user (with its cancelled subscriptions), then
       cancel any Stripe subscription still live (a checkout completed before the webhook granted
       it), so nothing keeps billing a closed account;
    4. remove the account row (the password check above already cleared its login-attempt window).
    """
    account = _own_account(email, uid, password, accounts=accounts, attempts=attempts,
                           now=int(now.timestamp()))
    if not account.closing_since:
        stamp = int(now.timestamp())
        _update(accounts, email, lambda a: a if a.closing_since else dataclasses.replace(a, closing_since=stamp))
    cancelled = []
    for sub in apim.user_subscriptions(uid):
        if sub.state in HOLDING_STATES:
            cancelled.append(unsubscribe(sub.sid, apim, payments, now, reporter))
    payments.expire_open_checkouts(uid)
    apim.delete_user(uid)
    for sid in payments.live_subscriptions(uid):
        log.info("closing account: cancelling Stripe subscription %s that APIM did not hold", sid)
        payments.cancel_subscription(sid)
    accounts.delete(email)
    return cancelled
