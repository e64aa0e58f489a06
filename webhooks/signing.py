"""Webhook secrets and signatures: a secret is shown once and stored encrypted (the platform
needs it again to sign); each request is signed ``v1=<hex HMAC-SHA256 of "<timestamp>.<body>">``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

from cryptography.fernet import Fernet, InvalidToken
from django.conf import settings

SECRET_PREFIX = "whsec_"
SIGNATURE_VERSION = "v1"
# Separates this key from every other use of SECRET_KEY.
KEY_CONTEXT = b"tenantml webhook secrets v1"


class UnreadableSecret(Exception):
    """A stored secret that the current SECRET_KEY cannot decrypt (the key changed)."""


def new_secret() -> str:
    """A fresh signing secret (256 random bits)."""
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def _fernet() -> Fernet:
    key = hmac.new(settings.SECRET_KEY.encode(), KEY_CONTEXT, hashlib.sha256).digest()
    return Fernet(base64.urlsafe_b64encode(key))


def encrypt_secret(secret: str) -> str:
    """The secret encrypted (Fernet: AES-128-CBC + HMAC) with a key derived from SECRET_KEY."""
    return _fernet().encrypt(secret.encode()).decode()


def decrypt_secret(token: str) -> str:
    """The secret ``encrypt_secret`` stored; raises ``UnreadableSecret`` if SECRET_KEY changed."""
    try:
        return _fernet().decrypt(token.encode()).decode()
    except InvalidToken as exc:
        raise UnreadableSecret(
            "The webhook's secret cannot be decrypted with the current SECRET_KEY; rotate it."
        ) from exc


def signature(*, secret: str, timestamp: int, body: bytes) -> str:
    """The ``TenantML-Signature`` header's value for one request."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"{SIGNATURE_VERSION}={mac.hexdigest()}"
