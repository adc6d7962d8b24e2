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


def encrypted_fields() -> list[tuple[type[models.Model], list[str]]]:
    """Every model with encrypted columns, and those columns."""
    from django.apps import apps

    found = []
    for model in apps.get_models():
        names = [f.name for f in model._meta.concrete_fields if isinstance(f, EncryptedTextField)]
        if names:
            found.append((model, names))
    return found


def rotate_all(*, using: str, batch_size: int = 500) -> dict[str, int]:
    """Re-encrypt every stored secret with the first key in FLOWPILOT_ENCRYPTION_KEYS, so older
    keys can then be removed. Reads the raw tokens (no decryption into Python objects) and
    writes each row in its own small transaction; safe to run again."""
    from django.db import connections, transaction

    counts: dict[str, int] = {}
    connection = connections[using]
    for model, names in encrypted_fields():
        table = connection.ops.quote_name(model._meta.db_table)
        pk = connection.ops.quote_name(model._meta.pk.column)
        columns = [connection.ops.quote_name(model._meta.get_field(n).column) for n in names]
        rotated = 0
        last = None
        while True:
            with transaction.atomic(using=using), connection.cursor() as cursor:
                where = f"WHERE {pk} > %s" if last is not None else ""
                cursor.execute(
                    f"SELECT {pk}, {', '.join(columns)} FROM {table} {where} "  # noqa: S608
                    f"ORDER BY {pk} LIMIT %s FOR UPDATE",
                    ([last] if last is not None else []) + [batch_size],
                )
                rows = cursor.fetchall()
                for row in rows:
                    values = [rotate(v) if v else v for v in row[1:]]
                    assignments = ", ".join(f"{c} = %s" for c in columns)
                    cursor.execute(
                        f"UPDATE {table} SET {assignments} WHERE {pk} = %s",  # noqa: S608
                        [*values, row[0]],
                    )
                rotated += len(rows)
            if len(rows) < batch_size:
                break
            last = rows[-1][0]
        counts[model._meta.label] = rotated
    return counts
