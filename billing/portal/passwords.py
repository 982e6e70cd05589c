"""Password hashes (Argon2id) and the password rules. Pure code.

New hashes are Argon2id with OWASP's Password Storage Cheat Sheet parameters (m=19 MiB, t=2, p=1),
stored in the PHC string form that carries them ("$argon2id$v=19$m=19456,t=2,p=1$...").
Hashes of the earlier scheme ("scrypt$<n>$<r>$<p>$<salt>$<hash>", N=2^17: 128 MiB and about 0.5 s of
CPU per check) are still verified, and `needs_rehash` tells the caller to replace them at sign-in.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from zxcvbn import zxcvbn

TIME_COST, MEMORY_KIB, PARALLELISM = 2, 19 * 1024, 1
MIN_LENGTH, MAX_LENGTH = 10, 200
MIN_SCORE = 3  # zxcvbn: 3 = "safely unguessable", 4 = "very unguessable"
# zxcvbn's cost grows fast with length (its l33t matcher: about 0.9 s of CPU for 32 substituted
# characters, 4 s for 72), and strength is settled long before: score the first 32 only.
_SCORED_CHARACTERS = 32

_hasher = PasswordHasher(time_cost=TIME_COST, memory_cost=MEMORY_KIB, parallelism=PARALLELISM)


class PasswordPolicyError(ValueError):
    pass


def check_policy(password: str, *, personal: tuple[str, ...] = ()) -> None:
    """Raise PasswordPolicyError naming the rule the password breaks.

    `personal`: the e-mail address and names of the account, which a password must not lean on.
    """
    if len(password) < MIN_LENGTH:
        raise PasswordPolicyError(f"the password must have at least {MIN_LENGTH} characters")
    if len(password) > MAX_LENGTH:
        raise PasswordPolicyError(f"the password must have at most {MAX_LENGTH} characters")
    if not password.strip():
        raise PasswordPolicyError("the password must not be only spaces")
    inputs = [part for value in personal for part in value.lower().replace("@", " ").replace(".", " ").split()]
    result = zxcvbn(password[:_SCORED_CHARACTERS], user_inputs=inputs)
    if int(result["score"]) < MIN_SCORE:
        feedback = result.get("feedback") or {}
        why = str(feedback.get("warning") or "it is a common password or a simple pattern").rstrip(".")
        raise PasswordPolicyError(
            f"the password is too easy to guess ({why}): it must not be a common or breached password, a "
            "keyboard pattern or a repetition; a few unrelated words work well"
        )


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password: str, stored: str) -> bool:
    if stored.startswith("scrypt$"):
        return _verify_scrypt(password, stored)
    try:
        return _hasher.verify(stored, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def needs_rehash(stored: str) -> bool:
    """True for a hash of the earlier scheme or with weaker parameters than today's."""
    if stored.startswith("scrypt$"):
        return True
    try:
        return _hasher.check_needs_rehash(stored)
    except InvalidHashError:
        return True


def _verify_scrypt(password: str, stored: str) -> bool:
    try:
        _, n, r, p, salt, digest = stored.split("$")
        expected = base64.b64decode(digest)
        n_, r_, p_ = int(n), int(r), int(p)
        actual = hashlib.scrypt(
            password.encode("utf-8"),
            salt=base64.b64decode(salt),
            n=n_,
            r=r_,
            p=p_,
            maxmem=256 * n_ * r_ + 2**20,
            dklen=len(expected),
        )
    except ValueError:
        return False
    return hmac.compare_digest(actual, expected)
