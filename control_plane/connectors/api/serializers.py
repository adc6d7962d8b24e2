from __future__ import annotations

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from control_plane.connectors.models import Connector
from control_plane.connectors.services import credential_markers


class ConnectorInput(serializers.Serializer):
    name = serializers.CharField(max_length=63)
    kind = serializers.ChoiceField(choices=Connector.Kind.choices)
    description = serializers.CharField(
        max_length=500, required=False, allow_blank=True, default=""
    )
    credentials = serializers.JSONField(help_text='Per kind; slack: {"bot_token": "xoxb-..."}')


class ConnectorUpdateInput(serializers.Serializer):
    name = serializers.CharField(max_length=63, required=False)
    description = serializers.CharField(max_length=500, required=False, allow_blank=True)
    credentials = serializers.JSONField(
        required=False, help_text="Replaces the stored credentials whole"
    )


class ConnectorOutput(serializers.ModelSerializer):
    credentials = serializers.SerializerMethodField()

    class Meta:
        model = Connector
        fields = ["id", "name", "kind", "description", "credentials", "created_at", "updated_at"]

    @extend_schema_field(
        serializers.DictField(child=serializers.CharField(), help_text='{"bot_token": "set"}')
    )
    def get_credentials(self, connector: Connector) -> dict[str, str]:
        return credential_markers(connector)  # write-only: which keys are set, never values
