"""Connectors: an organization's named connections to outside systems (a Slack workspace, ...),
which steps name as `config.connector`. Credentials are encrypted at rest and leave the database
only for the op that uses them (see selectors.connector_credentials)."""

from __future__ import annotations

from django.conf import settings
from django.db import models

from control_plane.core.crypto import EncryptedTextField
from control_plane.core.tenancy import TenantManager
from control_plane.organizations.models import Organization


class Connector(models.Model):
    class Kind(models.TextChoices):
        SLACK = "slack", "Slack"

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    name = models.SlugField(max_length=63)
    kind = models.CharField(max_length=20, choices=Kind.choices)
    description = models.CharField(max_length=500, blank=True)
    credentials = EncryptedTextField()  # JSON object text, keys per kind
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = TenantManager()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["organization", "name"], name="uniq_org_connector_name")
        ]

    def __str__(self) -> str:
        return self.name
