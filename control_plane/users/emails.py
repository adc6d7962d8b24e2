"""Mail to users, through Django's email framework (console in development, SMTP in
production, locmem in tests). A failure to send is logged, never shown to the caller: the
response to "reset my password" must not depend on whether the address has an account.

With EMAIL_SEND_ASYNC (the default outside tests) a small thread pool sends after the request's
transaction commits, so an SMTP round trip does not make "this address has an account" answers
measurably slower than the others."""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor

from django.conf import settings
from django.core.mail import send_mail
from django.db import transaction
from django.template.loader import render_to_string

log = logging.getLogger(__name__)
_pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="mail")


def _deliver(to: str, subject: str, body: str, template: str) -> None:
    try:
        send_mail(subject, body, None, [to])
    except Exception:  # SMTP down or misconfigured: the caller's answer must not change
        log.exception("could not send %s email", template)


def send_template(to: str, template: str, context: dict) -> None:
    """Render `template` (first line: the subject) and send it to one address."""
    context = {"web_url": settings.FLOWPILOT_WEB_URL, "issuer": settings.MFA_ISSUER, **context}
    subject, _, body = render_to_string(template, context).partition("\n")
    message = (to, subject.strip(), body.strip() + "\n", template)
    if settings.EMAIL_SEND_ASYNC:
        transaction.on_commit(lambda: _pool.submit(_deliver, *message))
    else:
        _deliver(*message)


def _send(to: str, name: str, context: dict) -> None:
    send_template(to, f"users/email/{name}.txt", context)


def send_verification(to: str, token: str) -> None:
    _send(to, "verify_email", {"token": token})


def send_account_exists(to: str) -> None:
    _send(to, "account_exists", {})


def send_password_reset(to: str, token: str) -> None:
    _send(to, "password_reset", {"token": token})


def send_password_changed(to: str) -> None:
    _send(to, "password_changed", {})
