"""Secrets at rest: Fernet with key rotation (MultiFernet) and a model field that uses it.

`FLOWPILOT_ENCRYPTION_KEYS` holds comma-separated Fernet keys; the first encrypts, all decrypt,
so a new key goes first and `manage.py rotate_encryption_keys` re-encrypts old rows. Without the
variable (development, tests) one key is derived from `SECRET_KEY`; production refuses to start.
"""

from __future__ import annotations

import base64
import hashlib
from functools import cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.db import models


class DecryptionError(Exception):
    """A stored secret could not be decrypted with any configured key."""


def derived_key(secret_key: str) -> bytes:
    digest = hashlib.sha256(b"flowpilot.encryption:" + secret_key.encode()).digest()
    return base64.urlsafe_b64encode(digest)


@cache
def _fernet(keys: tuple[str, ...]) -> MultiFernet:
    return MultiFernet([Fernet(key.encode() if isinstance(key, str) else key) for key in keys])


def fernet() -> MultiFernet:
    keys = tuple(settings.FLOWPILOT_ENCRYPTION_KEYS) or (derived_key(settings.SECRET_KEY).decode(),)
    return _fernet(keys)


def encrypt(plaintext: str) -> str:
    return fernet().encrypt(plaintext.encode()).decode()


def decrypt(token: str) -> str:
    try:
        return fernet().decrypt(token.encode()).decode()
    except InvalidToken as exc:
        message = "stored secret does not decrypt with FLOWPILOT_ENCRYPTION_KEYS"
        raise DecryptionError(message) from exc


def rotate(token: str) -> str:
    """Re-encrypt with the first (newest) key."""
    return fernet().rotate(token.encode()).decode()


class EncryptedTextField(models.TextField):
    """Text stored as a Fernet token; Python code only ever sees the plaintext."""

    def from_db_value(self, value, expression, connection):
        return None if value is None else decrypt(value)

    def get_prep_value(self, value):
        value = super().get_prep_value(value)
        return None if value is None else encrypt(value)

    def value_to_string(self, obj) -> str:
        return ""  # never serialise secrets (dumpdata, admin history)
