"""Secrets at rest: Fernet tokens in the column, rotation to a new key, clear failure on a
missing key, and production refusing to start without keys."""

from __future__ import annotations

import io
import os
import subprocess
import sys

import pytest
from cryptography.fernet import Fernet
from django.core.management import call_command
from django.db import connection

from control_plane.core import crypto
from control_plane.users.models import MFADevice, OAuthConnection

pytestmark = pytest.mark.django_db

OLD, NEW = Fernet.generate_key().decode(), Fernet.generate_key().decode()


def _raw(table: str, column: str, pk: int) -> str:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {column} FROM {table} WHERE id = %s", [pk])  # noqa: S608
        return cursor.fetchone()[0]


def test_rotation_re_encrypts_every_secret_with_the_new_key(user, settings):
    settings.FLOWPILOT_ENCRYPTION_KEYS = [OLD]
    device = MFADevice.objects.create(user=user, secret="JBSWY3DPEHPK3PXP")
    link = OAuthConnection.objects.create(
        user=user, provider="sso", subject="1", access_token="at-1", refresh_token=""
    )
    before = _raw("users_mfadevice", "secret", device.pk)
    assert Fernet(OLD).decrypt(before.encode()) == b"JBSWY3DPEHPK3PXP"

    settings.FLOWPILOT_ENCRYPTION_KEYS = [NEW, OLD]
    out = io.StringIO()
    call_command("rotate_encryption_keys", "--database", "default", stdout=out)
    assert "users.MFADevice: 1 rows re-encrypted" in out.getvalue()

    after = _raw("users_mfadevice", "secret", device.pk)
    assert Fernet(NEW).decrypt(after.encode()) == b"JBSWY3DPEHPK3PXP"
    token = _raw("users_oauthconnection", "access_token", link.pk)
    assert Fernet(NEW).decrypt(token.encode()) == b"at-1"
    settings.FLOWPILOT_ENCRYPTION_KEYS = [NEW]  # the old key can go now
    assert MFADevice.objects.get(pk=device.pk).secret == "JBSWY3DPEHPK3PXP"
    assert OAuthConnection.objects.get(pk=link.pk).access_token == "at-1"


def test_a_secret_without_its_key_fails_clearly(user, settings):
    settings.FLOWPILOT_ENCRYPTION_KEYS = [OLD]
    device = MFADevice.objects.create(user=user, secret="S")
    settings.FLOWPILOT_ENCRYPTION_KEYS = [NEW]
    with pytest.raises(crypto.DecryptionError, match="FLOWPILOT_ENCRYPTION_KEYS"):
        MFADevice.objects.get(pk=device.pk)


def test_encrypted_fields_are_discovered():
    found = {model._meta.label: names for model, names in crypto.encrypted_fields()}
    assert found["users.MFADevice"] == ["secret"]
    assert found["users.OAuthConnection"] == ["access_token", "refresh_token"]


def test_production_settings_need_encryption_keys():
    env = {k: v for k, v in os.environ.items() if k not in {"FLOWPILOT_ENCRYPTION_KEYS"}} | {
        "DJANGO_SETTINGS_MODULE": "control_plane.settings.production",
        "DJANGO_SECRET_KEY": "x" * 50,
        "DATABASE_URL": "postgresql://app@db/flowpilot",
        "DAGSTER_PG_URL": "postgresql+psycopg2://dagster@db/dagster",
    }
    result = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0 and "FLOWPILOT_ENCRYPTION_KEYS" in result.stderr
