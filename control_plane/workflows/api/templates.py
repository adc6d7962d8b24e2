"""Workflow templates over HTTP: the built-in gallery and the organization's own, one API. Views
parse, call `control_plane.workflows.templates`, and serialize."""

from __future__ import annotations

from django.urls import path
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.response import Response

from control_plane.core.pagination import paginated_response
from control_plane.organizations.api.base import TenantApi
from control_plane.workflows import selectors, templates
from control_plane.workflows import services as workflow_services
from control_plane.workflows.api.serializers import WorkflowOutput


class PlaceholderOutput(serializers.Serializer):
    name = serializers.CharField()
    description = serializers.CharField()
    default = serializers.JSONField(allow_null=True)
    required = serializers.BooleanField()

    def to_representation(self, spec):
        return {
            "name": spec["name"],
            "description": spec.get("description", ""),
            "default": spec.get("default"),
            "required": spec.get("default") is None,
        }


class TemplateOutput(serializers.Serializer):
    slug = serializers.CharField()
    name = serializers.CharField()
    category = serializers.CharField()
    description = serializers.CharField()
    source = serializers.ChoiceField(choices=["builtin", "organization"])
    placeholders = PlaceholderOutput(many=True)
    required_connectors = serializers.ListField(child=serializers.CharField())
    definition = serializers.JSONField(help_text="May hold placeholders: [[ name ]]")
    created_at = serializers.DateTimeField(allow_null=True)
    updated_at = serializers.DateTimeField(allow_null=True)


class TemplateInput(serializers.Serializer):
    slug = serializers.SlugField(max_length=60)
    name = serializers.CharField(max_length=200)
    category = serializers.CharField(max_length=60, required=False, default="custom")
    description = serializers.CharField(required=False, allow_blank=True, default="")
    definition = serializers.JSONField(help_text="A workflow definition; may hold [[ name ]]")
    placeholders = serializers.JSONField(
        required=False, default=list, help_text="[{name, description, default}]"
    )
    required_connectors = serializers.ListField(
        child=serializers.CharField(max_length=60), required=False, default=list, max_length=20
    )


class TemplateUpdateInput(serializers.Serializer):
    name = serializers.CharField(max_length=200, required=False)
    category = serializers.CharField(max_length=60, required=False)
    description = serializers.CharField(required=False, allow_blank=True)
    definition = serializers.JSONField(required=False)
    placeholders = serializers.JSONField(required=False)
    required_connectors = serializers.ListField(
        child=serializers.CharField(max_length=60), required=False, max_length=20
    )


class PreviewInput(serializers.Serializer):
    values = serializers.DictField(required=False, default=dict, help_text="{placeholder: value}")


class PreviewOutput(serializers.Serializer):
    valid = serializers.BooleanField()
    values = serializers.JSONField()
    definition = serializers.JSONField()
    errors = serializers.ListField(child=serializers.DictField())


class InstantiateInput(serializers.Serializer):
    values = serializers.DictField(required=False, default=dict, help_text="{placeholder: value}")
    name = serializers.CharField(max_length=200)
    slug = serializers.SlugField(max_length=60, required=False, allow_blank=True)


class TemplateListApi(TenantApi):
    required_permissions = {"GET": "workflow.read", "POST": "workflow.edit"}

    @extend_schema(
        parameters=[
            OpenApiParameter("category", str, description="Only this category"),
            OpenApiParameter("search", str, description="Words in the name or description"),
            OpenApiParameter("source", str, enum=["builtin", "organization"]),
        ],
        responses=TemplateOutput(many=True),
    )
    def get(self, request):
        params = request.query_params
        source = params.get("source") or None
        if source not in (None, "builtin", "organization"):
            raise serializers.ValidationError({"source": ["must be builtin or organization"]})
        items = templates.template_list(
            organization=self.organization,
            category=params.get("category") or None,
            search=params.get("search") or None,
            source=source,
        )
        return paginated_response(items, request, self, TemplateOutput)

    @extend_schema(request=TemplateInput, responses={201: TemplateOutput})
    def post(self, request):
        data = TemplateInput(data=request.data)
        data.is_valid(raise_exception=True)
        record = templates.template_create(
            organization=self.organization, created_by=request.user, **data.validated_data
        )
        template = templates.template_get(organization=self.organization, slug=record.slug)
        return Response(TemplateOutput(template).data, status=status.HTTP_201_CREATED)


class TemplateDetailApi(TenantApi):
    required_permissions = {
        "GET": "workflow.read",
        "PATCH": "workflow.edit",
        "DELETE": "workflow.edit",
    }

    @extend_schema(responses=TemplateOutput)
    def get(self, request, template_slug: str):
        template = templates.template_get(organization=self.organization, slug=template_slug)
        return Response(TemplateOutput(template).data)

    @extend_schema(request=TemplateUpdateInput, responses=TemplateOutput)
    def patch(self, request, template_slug: str):
        template = templates.template_get(organization=self.organization, slug=template_slug)
        data = TemplateUpdateInput(data=request.data)
        data.is_valid(raise_exception=True)
        templates.template_update(template=template, **data.validated_data)
        template = templates.template_get(organization=self.organization, slug=template_slug)
        return Response(TemplateOutput(template).data)

    @extend_schema(responses={204: None})
    def delete(self, request, template_slug: str):
        template = templates.template_get(organization=self.organization, slug=template_slug)
        templates.template_delete(template=template)
        return Response(status=status.HTTP_204_NO_CONTENT)


class TemplatePreviewApi(TenantApi):
    # Nothing is saved: whoever may read templates may try values on them.
    required_permissions = {"POST": "workflow.read"}

    @extend_schema(request=PreviewInput, responses=PreviewOutput)
    def post(self, request, template_slug: str):
        template = templates.template_get(organization=self.organization, slug=template_slug)
        data = PreviewInput(data=request.data)
        data.is_valid(raise_exception=True)
        preview = templates.template_preview(
            template=template, values=data.validated_data["values"]
        )
        return Response(PreviewOutput(preview).data)


class TemplateInstantiateApi(TenantApi):
    required_permissions = {"POST": "workflow.edit"}

    @extend_schema(request=InstantiateInput, responses={201: WorkflowOutput})
    def post(self, request, template_slug: str):
        templates.template_get(organization=self.organization, slug=template_slug)  # 404 first
        data = InstantiateInput(data=request.data)
        data.is_valid(raise_exception=True)
        workflow = templates.template_instantiate(
            organization=self.organization,
            user=request.user,
            slug=template_slug,
            values=data.validated_data["values"],
            name=data.validated_data["name"],
            workflow_slug=data.validated_data.get("slug") or None,
        )
        workflow = selectors.workflow_list(organization=self.organization).get(pk=workflow.pk)
        body = WorkflowOutput(workflow).data
        body["template"] = template_slug
        body["problems"] = workflow_services.definition_errors(workflow.draft_definition)
        return Response(body, status=status.HTTP_201_CREATED)


urlpatterns = [
    path("templates", TemplateListApi.as_view(), name="template-list"),
    path("templates/<slug:template_slug>", TemplateDetailApi.as_view(), name="template-detail"),
    path(
        "templates/<slug:template_slug>/preview",
        TemplatePreviewApi.as_view(),
        name="template-preview",
    ),
    path(
        "templates/<slug:template_slug>/instantiate",
        TemplateInstantiateApi.as_view(),
        name="template-instantiate",
    ),
]
