"""Mail to users, through Django's email framework (console in development, SMTP in
production, locmem in tests). A failure to send is logged, never shown to the caller: the
response to "reset my password" must not depend on whether the address has an account."""

from __future__ import annotations

import logging

from django.conf import settings
from django.core.mail import send_mail
from django.template.loader import render_to_string

log = logging.getLogger(__name__)


def _send(to: str, template: str, context: dict) -> None:
    context = {"web_url": settings.FLOWPILOT_WEB_URL, "issuer": settings.MFA_ISSUER, **context}
    subject, _, body = render_to_string(f"users/email/{template}.txt", context).partition("\n")
    try:
        send_mail(subject.strip(), body.strip() + "\n", None, [to])
    except Exception:  # SMTP down or misconfigured: the caller's answer must not change
        log.exception("could not send %s email", template)


def send_verification(to: str, token: str) -> None:
    _send(to, "verify_email", {"token": token})


def send_account_exists(to: str) -> None:
    _send(to, "account_exists", {})


def send_password_reset(to: str, token: str) -> None:
    _send(to, "password_reset", {"token": token})


def send_password_changed(to: str) -> None:
    _send(to, "password_changed", {})
