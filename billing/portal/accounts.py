"""Sign-up and sign-in of consumer accounts, with failed attempts limited per account."""

from __future__ import annotations

import functools
import re
import uuid
from dataclasses import dataclass

from billing.portal import passwords
from billing.portal.ports import AccountsPort, ApimPort, AttemptsPort
from billing.store.accounts import Account, AccountExistsError, normalise_email

MAX_FAILURES = 5  # failed sign-ins allowed per account and window
WINDOW_SECONDS = 15 * 60
_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]+$")


@functools.cache
def _dummy_hash() -> str:
    # Verifying against it when an account does not exist takes as long as a real check, so
    # response times do not reveal which addresses have accounts.
    return passwords.hash_password("not-a-real-password-0")


class AccountError(Exception):
    """Something the person can correct; `field` names the form field, `status` the HTTP answer."""

    def __init__(self, message: str, *, field: str = "", status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.status = status


@dataclass(frozen=True)
class SignUpForm:
    email: str
    password: str
    first_name: str
    last_name: str


def validate_sign_up(form: SignUpForm) -> None:
    if not _EMAIL.match(form.email.strip()) or len(form.email) > 254:
        raise AccountError("enter an e-mail address such as name@example.com", field="email")
    for field, value, label in (("first_name", form.first_name, "first name"),
                                ("last_name", form.last_name, "last name")):  # fmt: skip
        if not value.strip() or len(value) > 100:
            raise AccountError(f"enter your {label} (1 to 100 characters)", field=field)
    try:
        passwords.check_policy(form.password)
    except passwords.PasswordPolicyError as exc:
        raise AccountError(str(exc), field="password") from None


def sign_up(form: SignUpForm, accounts: AccountsPort, apim: ApimPort, now: int) -> str:
    """Create the account and its APIM user (or adopt the APIM user with that address); its user id."""
    validate_sign_up(form)
    email = normalise_email(form.email)
    if accounts.get(email) is not None:
        raise AccountError("an account with this e-mail address exists already: sign in instead",
                           field="email", status=409)  # fmt: skip
    uid = apim.find_user_by_email(email)
    if uid is None:
        uid = uuid.uuid4().hex
        apim.create_user(uid, email, form.first_name.strip(), form.last_name.strip())
    account = Account(email, passwords.hash_password(form.password), uid, form.first_name.strip(),
                      form.last_name.strip(), now)  # fmt: skip
    try:
        accounts.create(account)
    except AccountExistsError:
        raise AccountError("an account with this e-mail address exists already: sign in instead",
                           field="email", status=409) from None  # fmt: skip
    return uid


def locked_until(attempts: AttemptsPort, email: str, now: int) -> int | None:
    window = attempts.current(email)
    if window is None or now - window.window_start >= WINDOW_SECONDS or window.failures < MAX_FAILURES:
        return None
    return window.window_start + WINDOW_SECONDS


def check_password(email: str, password: str, accounts: AccountsPort, attempts: AttemptsPort, now: int, *,
                   wrong: str = "the e-mail address or password is wrong") -> Account:  # fmt: skip
    """The account if `password` is its password; AccountError 429 while locked, 401 when wrong.

    Sign-in and every account change that asks for the current password count failures in the
    same window, so the limit cannot be sidestepped by guessing through another form.
    """
    email = normalise_email(email)
    if not email or not password:
        raise AccountError("enter your e-mail address and password" if not email else "enter your password",
                           status=400)  # fmt: skip
    until = locked_until(attempts, email, now)
    if until is not None:
        minutes = max(1, -(-(until - now) // 60))
        raise AccountError(f"too many failed sign-ins for this account: try again in {minutes} minute(s)",
                           status=429)  # fmt: skip
    account = accounts.get(email)
    ok = passwords.verify_password(password, account.password_hash if account else _dummy_hash())
    if account is None or not ok:
        attempts.record_failure(email, now, WINDOW_SECONDS)
        raise AccountError(wrong, field="password", status=401)
    attempts.reset(email)
    return account


def sign_in(email: str, password: str, accounts: AccountsPort, attempts: AttemptsPort, now: int) -> str:
    """The APIM user id of the account, or AccountError (401 wrong, 429 too many failures)."""
    account = check_password(email, password, accounts, attempts, now)
    if account.closing_since:
        raise AccountError("this account is being closed; it cannot be used any more", status=403)
    return account.apim_user_id
