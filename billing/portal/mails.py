"""The mails the portal sends, and the port that sends them. Pure code: texts only.

Every mail goes to the address it is about, so what it says may depend on whether that address
has an account: only the owner of the mailbox reads it. The pages never say so.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol


@dataclass(frozen=True)
class Mail:
    to: str
    subject: str
    text: str


class MailError(Exception):
    """The mail server did not take the message (nothing is said to the consumer but "try again")."""


class MailerPort(Protocol):
    def send(self, mail: Mail) -> None:
        """Hand the mail to the mail server; MailError if it did not accept it."""
        ...


def _hours(seconds: int) -> str:
    hours = seconds // 3600
    return f"{hours} hour{'s' if hours != 1 else ''}" if hours else f"{seconds // 60} minutes"


def confirm_address(to: str, link: str, valid_seconds: int) -> Mail:
    return Mail(
        to,
        "Confirm your e-mail address",
        "\n".join(
            (
                "Someone, hopefully you, created an account for the API developer portal with this address.",
                "",
                "To confirm that this address is yours and finish, open this link and enter the password you chose:",
                link,
                "",
                f"The link works once and for {_hours(valid_seconds)}.",
                "If you did not create an account, ignore this mail: nothing happens without the link.",
            )
        ),
    )


def already_registered(to: str, sign_in_url: str, reset_link: str, valid_seconds: int) -> Mail:
    return Mail(
        to,
        "You already have an account",
        "\n".join(
            (
                "Someone, hopefully you, tried to create an account for the API developer portal with this address.",
                "",
                "This address has an account already, so nothing was created. Sign in on the developer portal:",
                sign_in_url,
                "",
                "If you forgot your password, choose a new one with this link:",
                reset_link,
                "",
                f"The link works once and for {_hours(valid_seconds)}. If this was not you, ignore this mail: your "
                "account is unchanged.",
            )
        ),
    )


def reset_password(to: str, link: str, valid_seconds: int) -> Mail:
    return Mail(
        to,
        "Choose a new password",
        "\n".join(
            (
                "Someone, hopefully you, asked to reset the password of your API developer portal account.",
                "",
                "Open this link to choose a new password:",
                link,
                "",
                f"The link works once and for {_hours(valid_seconds)}.",
                "If you did not ask for it, ignore this mail: your password is unchanged.",
            )
        ),
    )


def no_account(to: str, sign_up_url: str) -> Mail:
    return Mail(
        to,
        "No account with this address",
        "\n".join(
            (
                "Someone, hopefully you, asked to reset the password of an API developer portal account with this",
                "address, but there is no account with it. To create one, sign up on the developer portal:",
                sign_up_url,
                "",
                "If this was not you, ignore this mail.",
            )
        ),
    )


def trial_ending(
    to: str,
    product: str,
    subscription: str,
    ends: datetime,
    *,
    charges: Sequence[str],
    portal_url: str,
    billing_url: str,
) -> Mail:
    """Three days before a free trial ends (Stripe's `customer.subscription.trial_will_end`); `charges`: what
    is billed from then on, one sentence a line."""
    return Mail(
        to,
        f"Your free trial of {product} ends on {ends:%d %B %Y}",
        "\n".join(
            (
                f"Your free trial of {product} (subscription “{subscription}”) ends on {ends:%d %B %Y at %H:%M} UTC.",
                "Calls made during the trial are not billed. From then on:",
                *(f"- {line}" for line in charges),
                "",
                "To keep your key working, there is nothing to do: the card you gave when you subscribed is charged.",
                "To stop before anything is charged, cancel the subscription in the developer portal (your profile, "
                "next",
                "to its keys) before the trial ends:",
                portal_url,
                "",
                f"Your usage and invoices: {billing_url}",
            )
        ),
    )
