"""Who may read the HTTP pages: a secret, stored only as a salted PBKDF2 hash in the config, and
further secrets that also give a role (a reviewer's), each opening the pages too.

A browser sends it as the password of HTTP Basic authentication (any user name); a script may
send it as ``Authorization: Bearer <secret>``. ``vestwatch http-password`` prints the hash. A client
address that sent ``FREE_FAILURES`` wrong secrets must wait before it may try again (``BackoffError``).

>>> pages, reviewers = (hash_secret(secret, iterations=1000) for secret in ("correct horse", "battery staple"))
>>> guard = Guard(pages, {"reviewer": reviewers})
>>> [guard.allows(f"Bearer {secret}", "10.0.0.7") for secret in ("correct horse", "battery staple", "wrong")]
['reader', 'reviewer', None]
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import math
import os
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

SCHEME = "pbkdf2_sha256"
ITERATIONS = 600_000  # OWASP's figure for PBKDF2-SHA256 (2023)

FREE_FAILURES = 5  # wrong secrets a client address may send before it must wait
FIRST_WAIT_S = 1.0  # after the free ones; doubled by each further failure
MAX_WAIT_S = 300.0
FORGET_S = 600.0  # a client quiet this long since its last failure starts afresh
MAX_CLIENTS = 4096  # addresses remembered; a flood of them evicts the least recent
READER = "reader"  # the role of the pages' own secret


def hash_secret(secret: str, iterations: int = ITERATIONS) -> str:
    """``pbkdf2_sha256$<iterations>$<salt>$<hash>``, salt and hash in base64."""
    salt = os.urandom(16)
    digest = hashlib.pbkdf2_hmac("sha256", secret.encode(), salt, iterations)
    return f"{SCHEME}${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def check_stored(stored: str) -> str:
    """``stored`` if it is a hash ``hash_secret`` wrote, else ValueError saying what it must be."""
    parts = stored.split("$")
    try:
        valid = len(parts) == 4 and parts[0] == SCHEME and int(parts[1]) >= 1000
        valid = valid and len(base64.b64decode(parts[2], validate=True)) >= 8
        valid = valid and len(base64.b64decode(parts[3], validate=True)) == 32
    except (ValueError, binascii.Error):
        valid = False
    if not valid:
        raise ValueError("must be a hash from 'vestwatch http-password' (pbkdf2_sha256$...), never the password")
    return stored


class BackoffError(Exception):
    """Refused without a check: the client sent too many wrong secrets, or too many at once."""

    def __init__(self, wait_s: float) -> None:
        super().__init__(f"too many wrong secrets from this address: try again in {math.ceil(wait_s)} s")
        self.wait_s = wait_s


@dataclass
class _Failures:
    """One client address's wrong secrets."""

    count: int = 0
    last: float = 0.0  # when the latest came
    until: float = 0.0  # refused unchecked until then
    checking: int = 0  # its secrets being hashed now


class Guard:
    """Checks an ``Authorization`` header against the stored hash. PBKDF2 is slow on purpose (a
    fraction of a second), and the live page asks several times a second, so a secret that
    passed is remembered (as its SHA-256) for the life of the process. Without a limit that
    slowness is all that stops guessing, and a burst of guesses takes every core, so each client
    address gets ``FREE_FAILURES`` wrong secrets, then waits ``FIRST_WAIT_S``, doubled by each
    further failure up to ``MAX_WAIT_S``; a secret that passes starts it afresh."""

    def __init__(self, stored: str, roles: dict[str, str] | None = None, max_clients: int = MAX_CLIENTS) -> None:
        """``stored``: the pages' secret; ``roles``: the hash of each further secret by the role it gives
        (checked first: a role's secret that is also the pages' gives the role)."""
        self.secrets = [(role, _parse(hashed)) for role, hashed in (roles or {}).items()] + [(READER, _parse(stored))]
        self.passed: dict[bytes, str] = {}  # a secret's SHA-256 -> its role
        self.failures: OrderedDict[str, _Failures] = OrderedDict()  # least recent first
        self.max_clients = max_clients
        self.lock = threading.Lock()

    def allows(self, authorization: str | None, client: str) -> str | None:
        """The role ``authorization``'s secret gives (``READER`` for the pages' own), None for none;
        BackoffError, unchecked, while ``client`` (its address) must wait. No secret at all (a browser's
        first request) is no guess."""
        secret = _secret(authorization or "")
        if secret is None:
            return None
        fingerprint = hashlib.sha256(secret.encode()).digest()
        known = self._admit(client, fingerprint)
        if known:
            return known
        role = None
        try:
            role = next((role for role, stored in self.secrets if stored.matches(secret)), None)
        finally:
            self._settle(client, fingerprint, role)
        return role

    def _admit(self, client: str, fingerprint: bytes) -> str | None:
        """The role of a secret that passed before; else counts a check of ``client``'s as running. Refuses
        a client that must wait, also while its running checks could use up its free failures: a burst
        of concurrent guesses would otherwise all be hashed before the first failed."""
        now = time.monotonic()
        with self.lock:
            failures = self.failures.get(client)
            if failures and failures.until > now:
                raise BackoffError(failures.until - now)
            if fingerprint in self.passed:
                if failures:
                    failures.count, failures.until = 0, 0.0
                return self.passed[fingerprint]
            if failures is None or (not failures.checking and now - failures.last > FORGET_S):
                failures = self.failures[client] = _Failures()
            if failures.checking >= max(FREE_FAILURES - failures.count, 1):
                raise BackoffError(FIRST_WAIT_S)
            failures.checking += 1
            self._touch(client)
            return None

    def _settle(self, client: str, fingerprint: bytes, role: str | None) -> None:
        """``client``'s check is done: a pass starts it afresh, a failure counts and may start or double its wait."""
        now = time.monotonic()
        with self.lock:
            failures = self.failures.setdefault(client, _Failures())  # gone if evicted meanwhile
            failures.checking = max(failures.checking - 1, 0)
            self._touch(client)
            if role is not None:
                self.passed[fingerprint] = role
                failures.count, failures.until = 0, 0.0
                return
            failures.count += 1
            failures.last = now
            if failures.count >= FREE_FAILURES:
                doublings = min(failures.count - FREE_FAILURES, 16)
                failures.until = max(failures.until, now + min(FIRST_WAIT_S * 2**doublings, MAX_WAIT_S))

    def _touch(self, client: str) -> None:
        """``client`` is the most recent; the least recent beyond ``max_clients`` are forgotten."""
        self.failures.move_to_end(client)
        while len(self.failures) > self.max_clients:
            self.failures.popitem(last=False)


@dataclass(frozen=True)
class _Stored:
    """A stored hash, parsed."""

    iterations: int
    salt: bytes
    digest: bytes

    def matches(self, secret: str) -> bool:
        derived = hashlib.pbkdf2_hmac("sha256", secret.encode(), self.salt, self.iterations)
        return hmac.compare_digest(derived, self.digest)


def _parse(stored: str) -> _Stored:
    _, iterations, salt, digest = check_stored(stored).split("$")
    return _Stored(int(iterations), base64.b64decode(salt), base64.b64decode(digest))


def _secret(authorization: str) -> str | None:
    """The secret of a ``Basic`` (its password) or ``Bearer`` header; None for anything else."""
    scheme, _, value = authorization.strip().partition(" ")
    if scheme.lower() == "bearer":
        return value.strip() or None
    if scheme.lower() == "basic":
        try:
            _, _, password = base64.b64decode(value.strip(), validate=True).decode().partition(":")
        except (ValueError, binascii.Error, UnicodeDecodeError):
            return None
        return password or None
    return None
