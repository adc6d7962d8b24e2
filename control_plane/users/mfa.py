"""TOTP multi-factor authentication (RFC 6238, through pyotp) with single-use backup codes.

The TOTP secret is encrypted at rest; each accepted code's time step is remembered so the same
code is never accepted twice. Backup codes are shown once and stored as HMACs keyed by the
server secret, so a copy of the database alone does not reveal them."""

from __future__ import annotations

import hmac
import secrets
import time
from dataclasses import dataclass

import pyotp
import segno
from django.conf import settings
from django.db import transaction
from django.utils import timezone
from django.utils.crypto import salted_hmac

from control_plane.core.errors import ApplicationError, ConflictError
from control_plane.users.models import MFABackupCode, MFADevice, User

TOTP_DIGITS = 6
_BACKUP_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"  # no 0/o, 1/l/i


class InvalidCodeError(ApplicationError):
    code = "invalid_code"

    def __init__(self, field: str = "code") -> None:
        message = "The code is not valid."
        super().__init__(message, fields={field: [message]})


@dataclass(frozen=True)
class Enrolment:
    device: MFADevice
    secret: str
    provisioning_uri: str
    qr_svg: str


def _normalise(code: str) -> str:
    return "".join(code.split()).replace("-", "").lower()


def _backup_hash(user: User, code: str) -> str:
    return salted_hmac("flowpilot.mfa.backup_code", f"{user.pk}:{_normalise(code)}").hexdigest()


def confirmed_device(user: User) -> MFADevice | None:
    return MFADevice.objects.filter(user=user, confirmed_at__isnull=False).first()


@transaction.atomic
def totp_enrol(*, user: User) -> Enrolment:
    """Start enrolment: a new secret, its otpauth:// URI and a QR code of it (SVG). Replaces any
    enrolment that was never confirmed."""
    if confirmed_device(user) is not None:
        raise ConflictError("Two-factor authentication is already on; disable it first.")
    MFADevice.objects.filter(user=user, confirmed_at__isnull=True).delete()
    secret = pyotp.random_base32()
    device = MFADevice.objects.create(user=user, secret=secret)
    uri = pyotp.TOTP(secret).provisioning_uri(name=user.email, issuer_name=settings.MFA_ISSUER)
    qr_svg = segno.make(uri, error="m").svg_inline(scale=4)
    return Enrolment(device=device, secret=secret, provisioning_uri=uri, qr_svg=qr_svg)


def _totp_step(device: MFADevice, code: str) -> int | None:
    """The time step `code` belongs to (now ± one step of clock drift), unless already used."""
    code = _normalise(code)
    if len(code) != TOTP_DIGITS or not code.isdigit():
        return None
    totp = pyotp.TOTP(device.secret)
    now_step = int(time.time()) // totp.interval
    for step in (now_step - 1, now_step, now_step + 1):
        if step > device.last_used_step and hmac.compare_digest(totp.generate_otp(step), code):
            return step
    return None


def _use_step(device: MFADevice, step: int) -> None:
    device.last_used_step = step
    device.last_used_at = timezone.now()
    device.save(update_fields=["last_used_step", "last_used_at"])


@transaction.atomic
def totp_confirm(*, user: User, code: str) -> list[str]:
    """Prove the new authenticator with its first code; turns MFA on and returns the backup
    codes (the only time they are shown)."""
    device = (
        MFADevice.objects.select_for_update()
        .filter(user=user, confirmed_at__isnull=True)
        .order_by("-created_at")
        .first()
    )
    if device is None:
        raise ConflictError("No enrolment to confirm; start one first.")
    step = _totp_step(device, code)
    if step is None:
        raise InvalidCodeError()
    _use_step(device, step)
    device.confirmed_at = timezone.now()
    device.save(update_fields=["confirmed_at"])
    return _backup_codes_replace(user)


def _backup_codes_replace(user: User) -> list[str]:
    MFABackupCode.objects.filter(user=user).delete()
    codes = []
    for _ in range(settings.MFA_BACKUP_CODE_COUNT):
        raw = "".join(secrets.choice(_BACKUP_ALPHABET) for _ in range(10))
        codes.append(f"{raw[:5]}-{raw[5:]}")
    MFABackupCode.objects.bulk_create(
        MFABackupCode(user=user, code_hash=_backup_hash(user, code)) for code in codes
    )
    return codes


@transaction.atomic
def second_factor_verify(*, user: User, code: str, field: str = "code") -> str:
    """Accept a TOTP code or an unused backup code; returns which one it was. Row locks make
    two concurrent uses of the same code have one winner."""
    device = MFADevice.objects.select_for_update().filter(user=user, confirmed_at__isnull=False)
    device = device.first()
    if device is None:
        raise InvalidCodeError(field)
    step = _totp_step(device, code)
    if step is not None:
        _use_step(device, step)
        return "totp"
    used = MFABackupCode.objects.filter(
        user=user, code_hash=_backup_hash(user, code), used_at__isnull=True
    ).update(used_at=timezone.now())
    if used:
        return "backup_code"
    raise InvalidCodeError(field)


def _check_password(user: User, password: str) -> None:
    if not user.check_password(password):
        message = "The password is not correct."
        raise ApplicationError(message, code="invalid_password", fields={"password": [message]})


@transaction.atomic
def backup_codes_regenerate(*, user: User, password: str, code: str) -> list[str]:
    _check_password(user, password)
    second_factor_verify(user=user, code=code)
    return _backup_codes_replace(user)


@transaction.atomic
def mfa_disable(*, user: User, password: str, code: str) -> None:
    """Turn MFA off: needs the password and a current code (or a backup code)."""
    if confirmed_device(user) is None:
        raise ConflictError("Two-factor authentication is not on.")
    _check_password(user, password)
    second_factor_verify(user=user, code=code)
    MFADevice.objects.filter(user=user).delete()
    MFABackupCode.objects.filter(user=user).delete()


def backup_codes_remaining(user: User) -> int:
    return MFABackupCode.objects.filter(user=user, used_at__isnull=True).count()
