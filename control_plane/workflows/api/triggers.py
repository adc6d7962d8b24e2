"""Triggers of a workflow over HTTP: list, create, read, change, delete, rotate secrets.

Readers (workflow.read) see every trigger but not a webhook's URL, which is its credential;
editors (workflow.edit) see the URL. A signing secret is shown only in the response that made
it (create with `"signing": true`, or rotate); afterwards a trigger says only `"signed": true`.
A workflow or trigger of another organization, or a trigger of another workflow, is a 404."""

from __future__ import annotations

from typing import Any

from django.urls import path
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.response import Response

from control_plane.core.pagination import paginated_response
from control_plane.organizations.api.base import TenantApi
from control_plane.users.api.views import valid_data
from control_plane.workflows import triggers
from control_plane.workflows.models import Workflow, WorkflowTrigger

# -- serializers ---------------------------------------------------------------------------------


class StrictInput(serializers.Serializer):
    """Refuses keys it does not know: a misspelt or another kind's field is an error, not
    silently dropped."""

    unknown_message = "unknown field"

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(self.initial_data) - set(self.fields))
        if unknown:
            raise ValidationError({field: [self.unknown_message] for field in unknown})
        return attrs


class TriggerInput(StrictInput):
    kind = serializers.ChoiceField(choices=WorkflowTrigger.Kind.choices)
    name = serializers.CharField(max_length=100, required=False, allow_blank=True, default="")
    enabled = serializers.BooleanField(required=False, default=True)
    inputs = serializers.JSONField(
        required=False, help_text="Inputs every run of this trigger gets (declared inputs only)"
    )
    cron = serializers.CharField(
        max_length=100,
        required=False,
        allow_blank=True,
        allow_null=True,
        help_text="schedule: 5-field cron, e.g. '0 9 * * 1-5'",
    )
    timezone = serializers.CharField(
        max_length=64,
        required=False,
        allow_blank=True,
        allow_null=True,
        help_text="schedule: IANA time zone, default UTC",
    )
    event_type = serializers.CharField(
        max_length=100,
        required=False,
        allow_blank=True,
        allow_null=True,
        help_text=f"event: one of {', '.join(triggers.EVENT_TYPES)}",
    )
    signing = serializers.BooleanField(
        required=False, help_text="webhook: make an HMAC-SHA256 signing secret (shown once)"
    )


class TriggerUpdateInput(StrictInput):
    unknown_message = "cannot be changed (editable: " + ", ".join(sorted(triggers.EDITABLE)) + ")"

    name = serializers.CharField(max_length=100, required=False, allow_blank=True)
    enabled = serializers.BooleanField(required=False)
    inputs = serializers.JSONField(required=False)
    cron = serializers.CharField(max_length=100, required=False, allow_blank=True, allow_null=True)
    timezone = serializers.CharField(
        max_length=64, required=False, allow_blank=True, allow_null=True
    )
    event_type = serializers.CharField(
        max_length=100, required=False, allow_blank=True, allow_null=True
    )


class RotateInput(StrictInput):
    what = serializers.ChoiceField(choices=["url", "signing_secret"])


# Output fields only one kind has; the others are left out of that kind's representation.
KIND_OUTPUT_FIELDS = {
    WorkflowTrigger.Kind.MANUAL: (),
    WorkflowTrigger.Kind.SCHEDULE: ("cron", "timezone"),
    WorkflowTrigger.Kind.WEBHOOK: ("url", "signed"),
    WorkflowTrigger.Kind.EVENT: ("event_type",),
}


class TriggerOutput(serializers.ModelSerializer):
    workflow = serializers.IntegerField(source="workflow_id")
    url = serializers.SerializerMethodField(
        help_text="webhook: the URL to call; null for readers without workflow.edit"
    )
    signed = serializers.SerializerMethodField(help_text="webhook: requests must be signed")
    created_by = serializers.EmailField(source="created_by.email", allow_null=True, default=None)

    class Meta:
        model = WorkflowTrigger
        fields = [
            "id",
            "workflow",
            "kind",
            "name",
            "enabled",
            "inputs",
            "cron",
            "timezone",
            "url",
            "signed",
            "event_type",
            "created_by",
            "created_at",
            "updated_at",
            "last_triggered_at",
        ]

    def get_url(self, trigger: WorkflowTrigger) -> str | None:
        return triggers.webhook_url(trigger) if self.context.get("show_url") else None

    def get_signed(self, trigger: WorkflowTrigger) -> bool:
        return bool(trigger.signing_secret)

    def to_representation(self, trigger: WorkflowTrigger) -> dict[str, Any]:
        data = super().to_representation(trigger)
        own = KIND_OUTPUT_FIELDS.get(trigger.kind, ())
        for fields in KIND_OUTPUT_FIELDS.values():
            for field in fields:
                if field not in own:
                    data.pop(field, None)
        return data


class TriggerSecretOutput(TriggerOutput):
    signing_secret = serializers.CharField(help_text="Shown this once: keep it with the sender")

    class Meta(TriggerOutput.Meta):
        fields = [*TriggerOutput.Meta.fields, "signing_secret"]


# -- views ---------------------------------------------------------------------------------------


class TriggerApi(TenantApi):
    def get_workflow(self, workflow_id: int) -> Workflow:
        workflow = Workflow.objects.filter(organization=self.organization, pk=workflow_id).first()
        if workflow is None:
            raise NotFound("Workflow not found.")
        return workflow

    def get_trigger(self, workflow_id: int, trigger_id: int) -> WorkflowTrigger:
        workflow = self.get_workflow(workflow_id)
        trigger = triggers.trigger_get(workflow=workflow, trigger_id=trigger_id)
        if trigger is None:
            raise NotFound("Trigger not found.")
        return trigger

    def context(self) -> dict[str, Any]:
        return {"show_url": "workflow.edit" in self.permissions()}

    def body(self, trigger: WorkflowTrigger, *, with_secret: bool = False) -> dict[str, Any]:
        """The trigger as the caller may see it; with the signing secret only right after
        it was made."""
        data = TriggerOutput(trigger, context=self.context()).data
        if with_secret and trigger.signing_secret:
            data["signing_secret"] = trigger.signing_secret
        return data


def _enabled_filter(value: str | None) -> bool | None:
    if value is None or value == "":
        return None
    lowered = value.lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    raise ValidationError({"enabled": ["expected true or false"]})


class TriggerListApi(TriggerApi):
    required_permissions = {"GET": "workflow.read", "POST": "workflow.edit"}

    @extend_schema(
        parameters=[
            OpenApiParameter("kind", enum=list(WorkflowTrigger.Kind.values)),
            OpenApiParameter("enabled", bool),
        ],
        responses=TriggerOutput(many=True),
    )
    def get(self, request, workflow_id: int):
        workflow = self.get_workflow(workflow_id)
        kind = request.query_params.get("kind") or None
        if kind is not None and kind not in WorkflowTrigger.Kind.values:
            expected = ", ".join(WorkflowTrigger.Kind.values)
            raise ValidationError({"kind": [f"expected one of: {expected}"]})
        qs = triggers.trigger_list(
            workflow=workflow,
            kind=kind,
            enabled=_enabled_filter(request.query_params.get("enabled")),
        ).select_related("created_by")
        return paginated_response(qs, request, self, TriggerOutput, context=self.context())

    @extend_schema(request=TriggerInput, responses={201: TriggerSecretOutput})
    def post(self, request, workflow_id: int):
        workflow = self.get_workflow(workflow_id)
        data = valid_data(TriggerInput, request)
        trigger = triggers.trigger_create(workflow=workflow, created_by=request.user, **data)
        return Response(self.body(trigger, with_secret=True), status=status.HTTP_201_CREATED)


class TriggerDetailApi(TriggerApi):
    required_permissions = {
        "GET": "workflow.read",
        "PATCH": "workflow.edit",
        "DELETE": "workflow.edit",
    }

    @extend_schema(responses=TriggerOutput)
    def get(self, request, workflow_id: int, trigger_id: int):
        return Response(self.body(self.get_trigger(workflow_id, trigger_id)))

    @extend_schema(request=TriggerUpdateInput, responses=TriggerOutput)
    def patch(self, request, workflow_id: int, trigger_id: int):
        trigger = self.get_trigger(workflow_id, trigger_id)
        data = valid_data(TriggerUpdateInput, request)
        trigger = triggers.trigger_update(trigger=trigger, **data)
        return Response(self.body(trigger))

    @extend_schema(responses={204: None})
    def delete(self, request, workflow_id: int, trigger_id: int):
        triggers.trigger_delete(trigger=self.get_trigger(workflow_id, trigger_id))
        return Response(status=status.HTTP_204_NO_CONTENT)


class TriggerRotateApi(TriggerApi):
    """`{"what": "url"}`: a new webhook URL, the old one stops working; `{"what":
    "signing_secret"}`: a new signing secret, returned this once."""

    required_permissions = {"POST": "workflow.edit"}

    @extend_schema(request=RotateInput, responses=TriggerSecretOutput)
    def post(self, request, workflow_id: int, trigger_id: int):
        trigger = self.get_trigger(workflow_id, trigger_id)
        what = valid_data(RotateInput, request)["what"]
        if what == "url":
            trigger = triggers.webhook_rotate(trigger=trigger)
            return Response(self.body(trigger))
        trigger = triggers.signing_secret_rotate(trigger=trigger)
        return Response(self.body(trigger, with_secret=True))


urlpatterns = [
    path(
        "workflows/<int:workflow_id>/triggers",
        TriggerListApi.as_view(),
        name="workflow-triggers",
    ),
    path(
        "workflows/<int:workflow_id>/triggers/<int:trigger_id>",
        TriggerDetailApi.as_view(),
        name="workflow-trigger-detail",
    ),
    path(
        "workflows/<int:workflow_id>/triggers/<int:trigger_id>/rotate",
        TriggerRotateApi.as_view(),
        name="workflow-trigger-rotate",
    ),
]
