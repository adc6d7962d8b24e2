"""Outbound email through Django's email framework, so the same EMAIL_* settings (SMTP, or the
locmem backend in tests) serve the control plane and workflow steps."""

from __future__ import annotations

import smtplib
from collections.abc import Sequence

from dagster import ConfigurableResource, InitResourceContext
from pydantic import Field

from orchestration.steps.base import StepFailure
from resources.django_setup import ensure_django


class EmailResource(ConfigurableResource):
    settings_module: str = "control_plane.settings.dev"
    from_email: str = Field(default="", description="Sender; empty: DEFAULT_FROM_EMAIL")

    def setup_for_execution(self, context: InitResourceContext) -> None:
        ensure_django(self.settings_module)

    def send(
        self,
        *,
        to: Sequence[str],
        subject: str,
        body: str,
        cc: Sequence[str] = (),
        html: str | None = None,
    ) -> str:
        """Send one message; returns its Message-ID (what a reply's In-Reply-To will carry)."""
        ensure_django(self.settings_module)
        from email.utils import make_msgid

        from django.conf import settings
        from django.core.mail import BadHeaderError, EmailMultiAlternatives
        from django.core.mail.utils import DNS_NAME

        message_id = make_msgid(domain=DNS_NAME.get_fqdn())
        message = EmailMultiAlternatives(
            subject=subject,
            body=body,
            from_email=self.from_email or settings.DEFAULT_FROM_EMAIL,
            to=list(to),
            cc=list(cc),
            headers={"Message-ID": message_id},
        )
        if html:
            message.attach_alternative(html, "text/html")
        try:
            message.send(fail_silently=False)
        except BadHeaderError as exc:
            raise StepFailure(f"email header refused: {exc}") from None
        except (smtplib.SMTPException, OSError) as exc:
            raise StepFailure(f"could not send email: {type(exc).__name__}: {exc}") from None
        return message_id
