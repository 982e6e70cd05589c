"""Binding a signed delegation link to the consumer it acts for, once.

APIM signs a link's fields but not its operation or a time: a Renew link is also a valid
Unsubscribe link, a SignOut link a valid ChangeProfile link, and any link is valid for ever. So a
link that changes something acts only
- in "full" mode, for the portal account signed in here, which must own the user or subscription
  the link names (otherwise nothing happens and the consumer is asked to sign in as the owner);
- in "subscriptions" mode (identities kept by APIM, no account here), for the owner APIM states;
and in both modes its salt is claimed once in Table Storage before anything is shown or changed,
so a replayed link (from a browser history or a log) does nothing. The portal makes a new salt
each time it renders a link, so a consumer who needs the page again clicks the link again.
"""

from __future__ import annotations

from dataclasses import dataclass

from billing.portal.deps import PortalDeps
from billing.portal.web import Session, WebRequest, WebResponse, problem

# Used salts are kept this long; a link replayed later could act again, so keep it well beyond how
# long anyone keeps a link (APIM's links carry no time of their own).
SALT_RETENTION_SECONDS = 400 * 24 * 3600


@dataclass(frozen=True)
class Bound:
    """The browser's session, acting for the link's owner, and its Set-Cookie value if it is new."""

    session: Session
    cookie: str | None = None


def bind_link(deps: PortalDeps, req: WebRequest, now: float, *, owner: str, salt: str) -> Bound | WebResponse:
    """The session acting for `owner`, or the refusal (then nothing was claimed or changed)."""
    portal = deps.portal_home
    current = deps.sessions.read(req, now)
    signed_in = current is not None and current.uid is not None
    if deps.mode == "full" and not signed_in:
        return problem(
            req,
            401,
            "signin",
            "Sign in to the developer portal first, then open this link again from your profile.",
            portal_url=portal,
            title="Please sign in",
        )
    if signed_in and current is not None and current.uid != owner:
        # In "subscriptions" mode too: never swap the consumer a browser acts for behind its back
        # (someone else's link opened here would otherwise make this browser act, and pay, for them).
        return problem(
            req,
            403,
            "owner",
            "This link belongs to another account than the one this browser is "
            "signed in as; nothing was changed. Open it as its owner.",
            portal_url=portal,
            title="Not your link",
        )
    if not deps.salts.claim(salt, owner, int(now), SALT_RETENTION_SECONDS):
        return problem(
            req,
            409,
            "link_used",
            "This link was used already, and each link works once. Open it again "
            "from the developer portal, which makes a new one.",
            portal_url=portal,
            title="This link was used",
        )
    if current is not None and signed_in:
        return Bound(current)
    # "subscriptions" mode: the signed, single-use link is what identifies the consumer here.
    return Bound(*deps.sessions.start(owner, now))
