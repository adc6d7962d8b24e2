from django.contrib import admin

from control_plane.organizations.models import (
    Department,
    Invitation,
    Organization,
    OrganizationMember,
    Role,
    UsageQuota,
)


class MemberInline(admin.TabularInline):
    model = OrganizationMember
    extra = 0
    fields = ("user", "role", "department", "status", "created_at")
    readonly_fields = ("created_at",)
    raw_id_fields = ("user",)


class QuotaInline(admin.TabularInline):
    model = UsageQuota
    extra = 0
    can_delete = False


@admin.register(Organization)
class OrganizationAdmin(admin.ModelAdmin):
    list_display = ("slug", "name", "plan", "created_at")
    list_filter = ("plan",)
    search_fields = ("slug", "name")
    inlines = [MemberInline, QuotaInline]


@admin.register(OrganizationMember)
class MemberAdmin(admin.ModelAdmin):
    list_display = ("user", "organization", "role", "department", "status", "created_at")
    list_filter = ("role", "status")
    search_fields = ("user__email", "organization__slug")
    list_select_related = ("user", "organization", "department")
    raw_id_fields = ("user",)


@admin.register(Invitation)
class InvitationAdmin(admin.ModelAdmin):
    list_display = ("email", "organization", "role", "status", "created_at", "expires_at")
    search_fields = ("email", "organization__slug")
    exclude = ("token_hash",)
    readonly_fields = ("accepted_at", "accepted_by", "invited_by")


@admin.register(Department)
class DepartmentAdmin(admin.ModelAdmin):
    list_display = ("name", "organization", "created_at")
    search_fields = ("name", "organization__slug")


@admin.register(Role)
class RoleAdmin(admin.ModelAdmin):
    list_display = ("key", "name", "organization", "created_at")
    search_fields = ("key", "organization__slug")
