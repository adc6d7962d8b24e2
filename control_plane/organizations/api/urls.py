from django.urls import path

from control_plane.organizations.api import views

# Not tied to one organization.
account_urls = [
    path("orgs", views.OrganizationListApi.as_view(), name="organization-list"),
    path("invitations/accept", views.InvitationAcceptApi.as_view(), name="invitation-accept"),
    path("permissions", views.PermissionListApi.as_view(), name="permission-list"),
]

# Inside one organization (mounted under orgs/<org>/ and, with X-Organization, at the root).
tenant_urls = [
    path("members", views.MemberListApi.as_view(), name="member-list"),
    path("members/<int:member_id>", views.MemberDetailApi.as_view(), name="member-detail"),
    path("invitations", views.InvitationListApi.as_view(), name="invitation-list"),
    path(
        "invitations/<int:invitation_id>",
        views.InvitationDetailApi.as_view(),
        name="invitation-detail",
    ),
    path("departments", views.DepartmentListApi.as_view(), name="department-list"),
    path(
        "departments/<int:department_id>",
        views.DepartmentDetailApi.as_view(),
        name="department-detail",
    ),
    path("roles", views.RoleListApi.as_view(), name="role-list"),
    path("roles/<slug:role_key>", views.RoleDetailApi.as_view(), name="role-detail"),
    path("quota", views.QuotaApi.as_view(), name="quota"),
]

organization_detail = path(
    "orgs/<slug:org>", views.OrganizationDetailApi.as_view(), name="organization-detail"
)
