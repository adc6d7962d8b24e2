from django.contrib import admin

from control_plane.workflows.models import Workflow, WorkflowVersion


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
