"""Consumer accounts: sign-up confirmed by e-mail, sign-in with bounded guessing, password reset.

The rules an attacker meets:
- An account exists only once its owner opened a single-use, expiring link sent to its address and
  entered the password chosen at sign-up; only then is it tied to an APIM user (the one it creates,
  or a provider-made user with that address). Administrators are never tied to an account.
- Sign-up and reset answer alike whether or not the address has an account; only the mail differs.
- Each password check claims one of a few uses per window before it runs (`throttle`), so requests
  sent at the same moment cannot exceed the limit. A browser that signed in before carries a device
  cookie and has its own allowance, so other people's guessing does not lock its owner out.
- Every hash runs inside the instance's hashing budget (`hash_budget`).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import quote

from billing.portal import mails, passwords
from billing.portal.hash_budget import HashBudget, HashingBusy
from billing.portal.ports import AccountsPort, ApimPort, EmailLinksPort
from billing.portal.records import (
    CONFIRM,
    RESET,
    Account,
    AccountExistsError,
    DeviceToken,
    EmailLink,
    credential_tag,
    normalise_email,
)
from billing.portal.throttle import (
    GUESSES_PER_ACCOUNT,
    GUESSES_PER_ACCOUNT_FROM_DEVICES,
    GUESSES_PER_DEVICE,
    MAIL_REQUESTS_PER_CLIENT,
    MAILS_PER_ADDRESS,
    PASSWORDS_PER_LINK,
    SIGN_INS_PER_CLIENT,
    Limit,
    ThrottlePort,
    account_devices_key,
    account_key,
    client_key,
    device_key,
    link_key,
    mailbox_key,
)

CONFIRM_TTL = 24 * 3600
RESET_TTL = 3600
# RFC 5321 dot-atom local part and an ASCII domain of at least two labels. Linear to match (no
# nested repetition over overlapping characters), and applied only to at most 254 characters.
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_EMAIL = re.compile(rf"{_ATOM}(?:\.{_ATOM})*@{_LABEL}(?:\.{_LABEL})+")
_WRITE_TRIES = 3  # optimistic concurrency on the account row


class AccountError(Exception):
    """Something the person can correct; `field` names the form field, `status` the HTTP answer."""

    def __init__(self, message: str, *, field: str = "", status: int = 400, retry_after: int = 0) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.status = status
        self.retry_after = retry_after


@dataclass(frozen=True)
class PortalUrls:
    """Where the mails send people: the app's pages and the developer portal."""

    app_base_url: str
    portal_url: str

    def confirm(self, token: str) -> str:
        return f"{self.app_base_url}/api/portal/signup/confirm?token={quote(token, safe='')}"

    def reset(self, token: str) -> str:
        return f"{self.app_base_url}/api/portal/password/reset?token={quote(token, safe='')}"

    @property
    def forgot(self) -> str:
        return f"{self.app_base_url}/api/portal/password/forgot"

    @property
    def portal_home(self) -> str:
        return self.portal_url + "/"


@dataclass(frozen=True)
class AccountPorts:
    accounts: AccountsPort
    links: EmailLinksPort
    throttles: ThrottlePort
    mailer: mails.MailerPort
    apim: ApimPort
    hashing: HashBudget
    urls: PortalUrls


@dataclass(frozen=True)
class SignUpForm:
    email: str
    password: str
    first_name: str
    last_name: str


# ---- checks ----------------------------------------------------------------------------------
def check_email(email: str) -> str:
    email = email.strip()
    local = email.rpartition("@")[0]
    if len(email) > 254 or len(local) > 64 or not _EMAIL.fullmatch(email):
        raise AccountError(
            "enter an e-mail address such as name@example.com (letters, digits and . _ + - only before the @)",
            field="email",
        )
    return normalise_email(email)


def check_names(first_name: str, last_name: str) -> tuple[str, str]:
    for field, value, label in (("first_name", first_name, "first name"), ("last_name", last_name, "last name")):
        if not value.strip() or len(value.strip()) > 100:
            raise AccountError(f"enter your {label} (1 to 100 characters)", field=field)
    return first_name.strip(), last_name.strip()


def check_new_password(
    ports: AccountPorts, password: str, *, personal: tuple[str, ...], field: str = "password"
) -> str:
    """The hash of a new password that meets the rules; AccountError naming the rule otherwise.

    The strength check and the hash both run inside the instance's hashing budget.
    """
    if len(password) > passwords.MAX_LENGTH:  # before any work on it
        raise AccountError(f"the password must have at most {passwords.MAX_LENGTH} characters", field=field)

    def check_and_hash() -> str | passwords.PasswordPolicyError:
        try:
            passwords.check_policy(password, personal=personal)
        except passwords.PasswordPolicyError as exc:
            return exc
        return passwords.hash_password(password)

    try:
        result = ports.hashing.run(check_and_hash)
    except HashingBusy:
        raise _busy() from None
    if isinstance(result, passwords.PasswordPolicyError):
        raise AccountError(str(result), field=field)
    return result


# ---- shared steps ----------------------------------------------------------------------------
def _busy() -> AccountError:
    return AccountError(
        "the service is busy: try again in a few seconds", status=429, retry_after=HashingBusy.retry_after
    )


@functools.cache
def _dummy_hash() -> str:
    # Checked when an address has no account, so that answers take as long as for a real one.
    return passwords.hash_password(secrets.token_urlsafe(16))


def _claim(ports: AccountPorts, key: str, limit: Limit, now: int, message: str) -> None:
    wait = ports.throttles.take(key, limit, now)
    if wait:
        minutes = max(1, -(-wait // 60))
        raise AccountError(message.format(minutes=minutes), status=429, retry_after=wait)


def _send(ports: AccountPorts, to: str, now: int, compose: Callable[[], mails.Mail]) -> None:
    """Send a mail unless the address had its share this hour (then quietly nothing, same answer)."""
    if ports.throttles.take(mailbox_key(to), MAILS_PER_ADDRESS, now):
        return
    try:
        ports.mailer.send(compose())
    except mails.MailError:
        raise AccountError(
            "the e-mail could not be sent just now: try again in a few minutes", status=503, retry_after=60
        ) from None


def _new_link(ports: AccountPorts, link: EmailLink) -> str:
    token = secrets.token_urlsafe(32)
    ports.links.create(token, link)
    return token


def _reset_link(ports: AccountPorts, email: str, account: Account | None, now: int) -> str:
    """A reset link's URL; for an address without an account the link leads nowhere (same work done)."""
    credential = credential_tag(email, account.password_hash) if account else ""
    return ports.urls.reset(_new_link(ports, EmailLink(RESET, email, now, now + RESET_TTL, credential=credential)))


def _send_confirmation(ports: AccountPorts, link: EmailLink, now: int) -> None:
    def compose() -> mails.Mail:
        token = _new_link(ports, link)
        return mails.confirm_address(link.email, ports.urls.confirm(token), CONFIRM_TTL)

    _send(ports, link.email, now, compose)


def update_account(accounts: AccountsPort, email: str, change: Callable[[Account], Account]) -> Account:
    """Apply `change` to the stored account, again if another instance wrote it meanwhile."""
    for _ in range(_WRITE_TRIES):
        found = accounts.get_with_etag(email)
        if found is None:
            raise AccountError("this account does not exist any more", status=404)
        current, etag = found
        updated = change(current)
        if updated == current or accounts.replace(updated, etag):
            return updated
    raise RuntimeError("the account row kept changing while it was updated")


# ---- sign-up and its confirmation ------------------------------------------------------------
def request_sign_up(form: SignUpForm, return_url: str, client: str, ports: AccountPorts, now: int) -> None:
    """Mail the address a confirmation link, or, if it has an account, a note with a reset link.

    The answer is the same either way, and so is the work: a password check and hash, a link row
    and a mail. Cheap checks and the per-client limit come before anything costly.
    """
    email = check_email(form.email)
    first, last = check_names(form.first_name, form.last_name)
    _claim(
        ports,
        client_key("mail", client),
        MAIL_REQUESTS_PER_CLIENT,
        now,
        "too many sign-ups from your network: try again in {minutes} minute(s)",
    )
    password_hash = check_new_password(ports, form.password, personal=(email, first, last))
    existing = ports.accounts.get(email)
    if existing is not None and existing.confirmed_at:
        # Each such mail lets the owner in (a reset link), so nobody can fill the address's mail
        # allowance with notes that leave the owner no way to a new password.
        _send(
            ports,
            email,
            now,
            lambda: mails.already_registered(
                email, ports.urls.portal_home, _reset_link(ports, email, existing, now), RESET_TTL
            ),
        )
        return
    link = EmailLink(CONFIRM, email, now, now + CONFIRM_TTL, password_hash, first, last, return_url)
    _send_confirmation(ports, link, now)


def usable_link(ports: AccountPorts, token: str, purpose: str, now: int) -> tuple[EmailLink, str]:
    found = ports.links.get(token)
    if found is None or found[0].purpose != purpose:
        raise AccountError("this link is not valid: open the link from the most recent e-mail", status=404)
    link, etag = found
    if link.used_at:
        raise AccountError("this link was used already: each link works once", status=410)
    if now >= link.expires_at:
        raise AccountError("this link has expired", status=410)
    return link, etag


def _user_id_for(token: str) -> str:
    # The same token always makes the same APIM user, so a confirmation retried after a failure
    # finishes what the first attempt started instead of making a second user.
    return hashlib.sha256(b"apim-user:" + token.encode("utf-8")).hexdigest()[:32]


def confirm_sign_up(token: str, password: str, ports: AccountPorts, now: int) -> tuple[Account, str]:
    """Create (or confirm) the account of a confirmation link; the account and the link's return URL.

    Idempotent until the link is marked used at the end: a failure part-way (APIM, Storage) leaves
    state that submitting the form again completes.
    """
    link, _ = usable_link(ports, token, CONFIRM, now)
    try:
        with ports.hashing.slot():  # first: a busy instance counts no try against the link
            _claim(
                ports,
                link_key(token),
                PASSWORDS_PER_LINK,
                now,
                "too many wrong passwords for this link: sign up again to get a new one",
            )
            ok = bool(password) and ports.hashing.compute(
                lambda: passwords.verify_password(password, link.password_hash)
            )
    except HashingBusy:
        raise _busy() from None
    if not ok:
        raise AccountError("this is not the password you chose when you signed up", field="password", status=401)
    email = link.email
    existing = ports.accounts.get_with_etag(email)
    if existing is not None and existing[0].confirmed_at:
        _mark_used(ports, token, now)
        raise AccountError("this address has an account already: sign in instead", status=409)
    uid = ports.apim.find_user_by_email(email)
    if uid is not None and ports.apim.is_administrator(uid):
        _mark_used(ports, token, now)
        raise AccountError(
            "this address belongs to an administrator of the developer portal and cannot be "
            "used for a consumer account",
            status=403,
        )
    if uid is None:
        uid = _user_id_for(token)
        ports.apim.create_user(uid, email, link.first_name, link.last_name)
    created = existing[0].created_at if existing is not None else now
    account = Account(email, link.password_hash, uid, link.first_name, link.last_name, created, confirmed_at=now)
    if existing is None:
        _create_account(ports.accounts, account)
    elif not ports.accounts.replace(account, existing[1]):
        raise AccountError("this account changed while it was confirmed: open the link again", status=409)
    _mark_used(ports, token, now)
    ports.throttles.clear(account_key(email))
    return account, link.return_url


def _create_account(accounts: AccountsPort, account: Account) -> None:
    try:
        accounts.create(account)
    except AccountExistsError:
        # Another submission of the same form got there first: the same person, the same result.
        current = accounts.get(account.email)
        if current is None or current.apim_user_id != account.apim_user_id:
            raise AccountError("this address has an account already: sign in instead", status=409) from None


def _mark_used(ports: AccountPorts, token: str, now: int) -> None:
    # The password hash a confirmation link carried is no longer needed once it is used.
    found = ports.links.get(token)
    if found is not None and not found[0].used_at:
        ports.links.replace(token, dataclasses.replace(found[0], used_at=now, password_hash=""), found[1])


# ---- sign-in ---------------------------------------------------------------------------------
def check_password(
    email: str,
    password: str,
    *,
    client: str,
    device: DeviceToken | None,
    ports: AccountPorts,
    now: int,
    wrong: str = "the e-mail address or password is wrong",
) -> Account:
    """The account if `password` is its password; AccountError 429 past the limits, 401 when wrong.

    `device`: this browser's device cookie, if it has a genuine one; it counts only when it was
    issued under the account's current credentials. Sign-in and every account change that asks for
    the current password share the allowances.
    """
    email = normalise_email(email)
    if not email or not password:
        raise AccountError("enter your e-mail address and password" if not email else "enter your password")
    if len(password) > passwords.MAX_LENGTH or len(email) > 254:
        raise AccountError("the e-mail address or password is too long", status=400)
    account = ports.accounts.get(email)
    trusted = (
        device is not None
        and account is not None
        and (device.credential == credential_tag(email, account.password_hash))
    )
    locked = (
        "too many failed sign-ins for this account: try again in {minutes} minute(s), or choose a new "
        "password with “Forgot your password?”"
    )
    try:
        with ports.hashing.slot():  # first: a busy instance counts no guess against anyone
            if trusted:
                assert device is not None
                _claim(ports, account_devices_key(email), GUESSES_PER_ACCOUNT_FROM_DEVICES, now, locked)
                key, limit = device_key(device.nonce), GUESSES_PER_DEVICE
            else:
                _claim(
                    ports,
                    client_key("signin", client),
                    SIGN_INS_PER_CLIENT,
                    now,
                    "too many sign-ins from your network: try again in {minutes} minute(s)",
                )
                key, limit = account_key(email), GUESSES_PER_ACCOUNT
            _claim(ports, key, limit, now, locked)
            stored = account.password_hash if account else _dummy_hash()
            ok = ports.hashing.compute(lambda: passwords.verify_password(password, stored))
    except HashingBusy:
        raise _busy() from None
    if account is None or not ok:
        raise AccountError(wrong, field="password", status=401)
    ports.throttles.clear(key)
    if passwords.needs_rehash(account.password_hash):
        try:
            new_hash = ports.hashing.run(lambda: passwords.hash_password(password))
        except HashingBusy:
            return account  # the next sign-in replaces it
        account = update_account(ports.accounts, email, lambda a: dataclasses.replace(a, password_hash=new_hash))
    return account


def sign_in(
    email: str, password: str, *, client: str, device: DeviceToken | None, ports: AccountPorts, now: int
) -> Account:
    """The signed-in account; AccountError 401 wrong, 429 too many, 403 closing or not confirmed yet."""
    account = check_password(email, password, client=client, device=device, ports=ports, now=now)
    if account.closing_since:
        raise AccountError("this account is being closed; it cannot be used any more", status=403)
    if not account.confirmed_at:
        # An account from before addresses were confirmed: it proves its address now, with the
        # password it has, before it can be used.
        link = EmailLink(
            CONFIRM, account.email, now, now + CONFIRM_TTL, account.password_hash, account.first_name, account.last_name
        )
        _send_confirmation(ports, link, now)
        raise AccountError(
            f"confirm your e-mail address first: we sent a link to {account.email}; open it and enter your password",
            status=403,
        )
    return account


# ---- password reset --------------------------------------------------------------------------
def request_password_reset(email: str, client: str, ports: AccountPorts, now: int) -> None:
    """Mail a reset link, or a note that the address has no account; the answer and the work are alike."""
    email = check_email(email)
    _claim(
        ports,
        client_key("mail", client),
        MAIL_REQUESTS_PER_CLIENT,
        now,
        "too many requests from your network: try again in {minutes} minute(s)",
    )
    account = ports.accounts.get(email)

    def compose() -> mails.Mail:
        link = _reset_link(ports, email, account, now)  # written for an unknown address too: same work
        if account is None:
            return mails.no_account(email, ports.urls.portal_home)
        return mails.reset_password(email, link, RESET_TTL)

    _send(ports, email, now, compose)


def reset_password(token: str, new: str, confirm: str, ports: AccountPorts, now: int) -> Account:
    """Set the new password of a reset link's account (which also confirms its address)."""
    link, etag = usable_link(ports, token, RESET, now)
    account = ports.accounts.get(link.email)
    if account is None or link.credential != credential_tag(account.email, account.password_hash):
        # No account, or its password changed since the link was made: older links stop working.
        raise AccountError("this link is no longer valid: ask for a new one", status=410)
    if account.closing_since:
        raise AccountError("this account is being closed; it cannot be used any more", status=403)
    if new != confirm:
        raise AccountError("the new password and its confirmation differ", field="confirm_password")
    new_hash = check_new_password(
        ports, new, personal=(account.email, account.first_name, account.last_name), field="new_password"
    )
    if not ports.links.replace(token, dataclasses.replace(link, used_at=now), etag):
        raise AccountError("this link was used already: each link works once", status=410)
    updated = update_account(
        ports.accounts,
        link.email,
        lambda a: dataclasses.replace(a, password_hash=new_hash, confirmed_at=a.confirmed_at or now),
    )
    ports.throttles.clear(account_key(link.email))
    return updated
