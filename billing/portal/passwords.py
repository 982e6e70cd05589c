"""Password hashes with scrypt (memory-hard, in the standard library) and a per-account salt.

The stored form carries its parameters, so they can be raised later without breaking old hashes:
"scrypt$<n>$<r>$<p>$<salt b64>$<hash b64>". Pure code.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

# OWASP's scrypt guidance: N=2^17, r=8, p=1 (128 MiB). The memory limit must exceed 128*N*r.
N, R, P = 2**17, 8, 1
SALT_BYTES = 16
HASH_BYTES = 32
MIN_LENGTH, MAX_LENGTH = 10, 200


class PasswordPolicyError(ValueError):
    pass


def check_policy(password: str) -> None:
    if len(password) < MIN_LENGTH:
        raise PasswordPolicyError(f"the password must have at least {MIN_LENGTH} characters")
    if len(password) > MAX_LENGTH:
        raise PasswordPolicyError(f"the password must have at most {MAX_LENGTH} characters")


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(password.encode("utf-8"), salt=salt, n=n, r=r, p=p, maxmem=256 * n * r + 2**20,
                          dklen=HASH_BYTES)  # fmt: skip


def hash_password(password: str, *, n: int = N, r: int = R, p: int = P) -> str:
    salt = secrets.token_bytes(SALT_BYTES)
    digest = _scrypt(password, salt, n, r, p)
    encoded = (base64.b64encode(salt).decode(), base64.b64encode(digest).decode())
    return "$".join(("scrypt", str(n), str(r), str(p), *encoded))


def verify_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(digest)
        actual = _scrypt(password, base64.b64decode(salt), int(n), int(r), int(p))
    except ValueError:
        return False
    return hmac.compare_digest(actual, expected)
