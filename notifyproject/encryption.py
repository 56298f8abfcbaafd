"""Encryption at rest for stored secrets (apps' push credentials), with key rotation.

CLARION_ENCRYPTION_KEYS is a comma-separated list of Fernet keys: the first encrypts, every
one decrypts, so a new key is put first and an old one dropped once
`manage.py reencrypt_app_credentials` has rewritten every value with the new key. With no key,
DEBUG derives one from SECRET_KEY (development only); otherwise storing a secret is refused.
See docs/apps.md.
"""

import base64
import hashlib

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings


class EncryptionKeyMissingError(Exception):
    """No CLARION_ENCRYPTION_KEYS outside DEBUG: secrets cannot be stored or read."""


class DecryptionError(Exception):
    """A stored value no configured key opens (a key was dropped too early, or the value is not ours)."""


def _development_key() -> bytes:
    digest = hashlib.sha256(f"clarion-at-rest:{settings.SECRET_KEY}".encode()).digest()
    return base64.urlsafe_b64encode(digest)


def _keys() -> MultiFernet:
    keys = list(settings.CLARION_ENCRYPTION_KEYS)
    if not keys:
        if not settings.DEBUG:
            raise EncryptionKeyMissingError(
                "Set CLARION_ENCRYPTION_KEYS (a Fernet key: manage.py generate_encryption_key) "
                "before storing credentials."
            )
        keys = [_development_key()]
    try:
        return MultiFernet([Fernet(key) for key in keys])
    except (ValueError, TypeError) as exc:
        raise EncryptionKeyMissingError(
            f"CLARION_ENCRYPTION_KEYS holds a value that is not a Fernet key ({exc})."
        ) from None


def encrypt(plaintext: str) -> str:
    """The value as stored: a Fernet token (base64 text) under the first key; "" stays ""."""
    if not plaintext:
        return ""
    return _keys().encrypt(plaintext.encode()).decode()


def decrypt(stored: str) -> str:
    if not stored:
        return ""
    try:
        return _keys().decrypt(stored.encode()).decode()
    except InvalidToken:
        raise DecryptionError("no key in CLARION_ENCRYPTION_KEYS opens this value") from None


def reencrypt(stored: str) -> str:
    """The value under the first key (MultiFernet.rotate), for key rotation."""
    if not stored:
        return ""
    try:
        return _keys().rotate(stored.encode()).decode()
    except InvalidToken:
        raise DecryptionError("no key in CLARION_ENCRYPTION_KEYS opens this value") from None


def generate_key() -> str:
    return Fernet.generate_key().decode()
