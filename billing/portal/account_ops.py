"""Account changes APIM delegates: change password, change profile (names), close the account.

Every step is idempotent and the close runs in an order a retry can finish: the account row (with
the password hash) goes last, so submitting the same close form again after a failure verifies the
password and completes the remaining steps.
"""

from __future__ import annotations

import dataclasses
import logging
from datetime import datetime

from billing.portal.accounts import (
    AccountError,
    AccountPorts,
    check_names,
    check_new_password,
    check_password,
    update_account,
)
from billing.portal.ports import HOLDING_STATES, AccountsPort, ApimPort, FinalInvoicesPort, PaymentsPort
from billing.portal.records import Account, DeviceToken
from billing.portal.unsubscribe import unsubscribe

log = logging.getLogger(__name__)


def find_account(uid: str, apim: ApimPort, accounts: AccountsPort) -> Account | None:
    """The account kept here for the APIM user, if the user signed up through this app."""
    email = apim.user_email(uid)
    if email is None:
        return None
    account = accounts.get(email)
    return account if account is not None and account.apim_user_id == uid else None


def _own_account(
    email: str, uid: str, password: str, *, ports: AccountPorts, client: str, device: DeviceToken | None, now: int
) -> Account:
    account = check_password(
        email, password, client=client, device=device, ports=ports, now=now, wrong="the current password is wrong"
    )
    if account.apim_user_id != uid:  # the form's signed e-mail and user id no longer belong together
        raise AccountError("this account does not exist any more", status=404)
    if not account.confirmed_at:
        # An account from before addresses were confirmed may have adopted someone else's user by
        # its address: it changes nothing until its owner confirms (a link is sent at sign-in).
        raise AccountError("confirm your e-mail address first: sign in again to get the link", status=403)
    return account


def change_password(
    email: str,
    uid: str,
    current: str,
    new: str,
    confirm: str,
    *,
    ports: AccountPorts,
    client: str,
    device: DeviceToken | None,
    now: int,
) -> None:
    """Replace the password hash after checking the current password (guesses limited as at sign-in)."""
    account = _own_account(email, uid, current, ports=ports, client=client, device=device, now=now)
    if account.closing_since:
        raise AccountError("this account is being closed; its password cannot change", status=409)
    if new != confirm:
        raise AccountError("the new password and its confirmation differ", field="confirm_password")
    new_hash = check_new_password(
        ports, new, personal=(account.email, account.first_name, account.last_name), field="new_password"
    )
    update_account(ports.accounts, email, lambda a: dataclasses.replace(a, password_hash=new_hash))


def change_profile(
    email: str,
    uid: str,
    password: str,
    first_name: str,
    last_name: str,
    *,
    ports: AccountPorts,
    client: str,
    device: DeviceToken | None,
    now: int,
) -> None:
    """New first and last names in APIM and in the account row, after checking the current password.

    Both writes are idempotent, so a retry after a failure repeats both.
    """
    first, last = check_names(first_name, last_name)
    account = _own_account(email, uid, password, ports=ports, client=client, device=device, now=now)
    if account.closing_since:
        raise AccountError("this account is being closed; its profile cannot change", status=409)
    ports.apim.update_user_names(uid, first, last)
    update_account(ports.accounts, email, lambda a: dataclasses.replace(a, first_name=first, last_name=last))


def close_account(
    email: str,
    uid: str,
    password: str,
    *,
    ports: AccountPorts,
    client: str,
    device: DeviceToken | None,
    payments: PaymentsPort,
    now: datetime,
    final_invoices: FinalInvoicesPort,
) -> list[str]:
    """Close the account; the names of the subscriptions it cancelled. Safe to repeat after a failure.

    1. password check, then mark the row closing (sign-in refuses it from now on);
    2. cancel each live APIM subscription as Unsubscribe does (key off at once; Stripe told to end
       it by its period end at the latest; its final invoice job queued for after the report lag);
    3. expire open Checkout Sessions, delete the APIM user (with its cancelled subscriptions), then
       cancel any other Stripe subscription still live (a checkout completed before the webhook
       granted it: it never had a key) at once, so nothing keeps billing a closed account; those of
       step 2 (and of earlier cancels) are left to their final invoice jobs, and cannot renew;
    4. remove the account row (the password check above already cleared its login-attempt window).
    """
    accounts, apim = ports.accounts, ports.apim
    account = _own_account(email, uid, password, ports=ports, client=client, device=device, now=int(now.timestamp()))
    if any(d.amount_remaining > 0 for d in payments.outstanding_invoices(uid, email)):
        # Closing would leave the debt with a customer nobody signs in as any more.
        raise AccountError(
            "your account has unpaid invoices: pay them first (the billing page links to them), then close it",
            status=402,
        )
    if not account.closing_since:
        stamp = int(now.timestamp())
        update_account(accounts, email, lambda a: a if a.closing_since else dataclasses.replace(a, closing_since=stamp))
    cancelled = []
    for sub in apim.user_subscriptions(uid):
        if sub.state in HOLDING_STATES:
            cancelled.append(unsubscribe(sub.sid, apim, payments, now, final_invoices))
    payments.expire_open_checkouts(uid)
    apim.delete_user(uid)
    ending = set(payments.pending_final_invoices(uid))
    for sid in payments.live_subscriptions(uid):
        if sid in ending:
            continue  # its final invoice job cancels it once the usage up to the cancel is reported
        log.info("closing account: cancelling Stripe subscription %s that APIM did not hold", sid)
        payments.cancel_subscription(sid)
    accounts.delete(email)
    return cancelled
