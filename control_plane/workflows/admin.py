from django.contrib import admin

from control_plane.workflows.models import (
    Workflow,
    WorkflowTemplate,
    WorkflowTrigger,
    WorkflowVariable,
    WorkflowVersion,
)


class VersionInline(admin.TabularInline):
    model = WorkflowVersion
    extra = 0
    can_delete = False
    fields = ("number", "content_hash", "published_at", "created_by")
    readonly_fields = fields

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(Workflow)
class WorkflowAdmin(admin.ModelAdmin):
    list_display = ("slug", "name", "organization", "status", "updated_at")
    list_filter = ("status",)
    search_fields = ("slug", "name")
    inlines = [VersionInline]


@admin.register(WorkflowVariable)
class WorkflowVariableAdmin(admin.ModelAdmin):
    list_display = ("name", "organization", "workflow", "type", "is_secret", "updated_at")
    list_filter = ("type", "is_secret")
    search_fields = ("name", "organization__slug")
    exclude = ("secret_value",)  # never shown; set it through the API


@admin.register(WorkflowTrigger)
class WorkflowTriggerAdmin(admin.ModelAdmin):
    list_display = ("workflow", "kind", "name", "enabled", "event_type", "last_triggered_at")
    list_filter = ("kind", "enabled")
    search_fields = ("name", "workflow__slug", "event_type")
    exclude = ("webhook_token", "webhook_token_hash", "signing_secret")


@admin.register(WorkflowTemplate)
class WorkflowTemplateAdmin(admin.ModelAdmin):
    list_display = ("slug", "name", "category", "organization", "updated_at")
    list_filter = ("category",)
    search_fields = ("slug", "name")
