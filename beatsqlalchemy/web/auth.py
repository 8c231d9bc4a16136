"""Passwords of the web console's users: scrypt hashes with a random salt (what
``beatsqlalchemy web-password`` prints), checked in constant time."""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Mapping

from ..exceptions import ValidationError

SCHEME = "scrypt"
#: scrypt's cost parameters for new hashes (about 16 MiB and 50 ms per check)
COST, BLOCK_SIZE, PARALLELISM = 2**14, 8, 1
SALT_BYTES, HASH_BYTES = 16, 32
#: how long a failed login waits before it answers
FAILED_LOGIN_DELAY = 1.0


def _scrypt(password: str, salt: bytes, cost: int, block_size: int, parallelism: int) -> bytes:
    return hashlib.scrypt(password.encode(), salt=salt, n=cost, r=block_size, p=parallelism,
                          maxmem=256 * 1024 * 1024, dklen=HASH_BYTES)


def hash_password(password: str) -> str:
    """``scrypt$N$r$p$salt$hash`` of ``password`` with a new random salt."""
    if not isinstance(password, str) or not password:
        raise ValidationError("password", "<hidden>", "must not be empty")
    salt = os.urandom(SALT_BYTES)
    digest = _scrypt(password, salt, COST, BLOCK_SIZE, PARALLELISM)
    return f"{SCHEME}${COST}${BLOCK_SIZE}${PARALLELISM}${salt.hex()}${digest.hex()}"


def _parts(user: str, stored: str) -> tuple[int, int, int, bytes, bytes]:
    try:
        scheme, cost, block_size, parallelism, salt, digest = stored.split("$")
        if scheme != SCHEME:
            raise ValueError(scheme)
        return int(cost), int(block_size), int(parallelism), bytes.fromhex(salt), bytes.fromhex(digest)
    except ValueError:
        raise ValidationError(f"beat_sqlalchemy_web_users[{user!r}]", "<hidden>",
                              "not a password hash of `beatsqlalchemy web-password`") from None


class Users:
    """The users allowed in, from ``beat_sqlalchemy_web_users``; every hash read up front."""

    def __init__(self, hashes: Mapping[str, str]) -> None:
        self._hashes = {user: _parts(user, stored) for user, stored in hashes.items()}
        # an unknown user costs as much as a known one
        self._decoy = _parts("", hash_password(os.urandom(8).hex()))

    def __bool__(self) -> bool:
        return bool(self._hashes)

    def __contains__(self, user: object) -> bool:
        return user in self._hashes

    def check(self, user: str, password: str) -> bool:
        """Whether ``password`` is ``user``'s; the same work whichever is wrong."""
        known = user in self._hashes
        cost, block_size, parallelism, salt, digest = self._hashes[user] if known else self._decoy
        given = _scrypt(password, salt, cost, block_size, parallelism)
        return hmac.compare_digest(given, digest) and known
