"""Who may read the HTTP pages: one secret, stored only as a salted PBKDF2 hash in the config.

A browser sends it as the password of HTTP Basic authentication (any user name); a script may
send it as ``Authorization: Bearer <secret>``. ``vestwatch http-password`` prints the hash.

>>> stored = hash_secret("correct horse", iterations=1000)
>>> Guard(stored).allows("Bearer correct horse"), Guard(stored).allows("Bearer wrong")
(True, False)
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import threading

SCHEME = "pbkdf2_sha256"
ITERATIONS = 600_000  # OWASP's figure for PBKDF2-SHA256 (2023)


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


class Guard:
    """Checks an ``Authorization`` header against the stored hash. PBKDF2 is slow on purpose (a
    fraction of a second), and the live page asks several times a second, so a secret that
    passed is remembered (as its SHA-256) for the life of the process."""

    def __init__(self, stored: str) -> None:
        _, iterations, salt, digest = check_stored(stored).split("$")
        self.iterations, self.salt, self.digest = int(iterations), base64.b64decode(salt), base64.b64decode(digest)
        self.passed: set[bytes] = set()
        self.lock = threading.Lock()

    def allows(self, authorization: str | None) -> bool:
        secret = _secret(authorization or "")
        if secret is None:
            return False
        fingerprint = hashlib.sha256(secret.encode()).digest()
        with self.lock:
            if fingerprint in self.passed:
                return True
        derived = hashlib.pbkdf2_hmac("sha256", secret.encode(), self.salt, self.iterations)
        if not hmac.compare_digest(derived, self.digest):
            return False
        with self.lock:
            self.passed.add(fingerprint)
        return True


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
