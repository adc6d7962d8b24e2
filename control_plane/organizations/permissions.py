"""Named permissions and the built-in roles as sets of them. Custom roles (per organization,
in the `Role` table) are sets of the same names. Views declare what each HTTP method needs as a
scope map (`required_permissions = {"GET": "workflow.read", ...}`)."""

from __future__ import annotations

from dataclasses import dataclass

PERMISSIONS: dict[str, str] = {
    "organization.manage": "Rename the organization and change its settings",
    "member.read": "See the members and departments",
    "member.manage": "Change members' roles and departments, remove members",
    "invitation.manage": "Invite people and revoke invitations",
    "department.manage": "Create, rename and delete departments",
    "role.manage": "Create, change and delete custom roles",
    "workflow.read": "See workflows and their versions",
    "workflow.edit": "Create and edit workflow drafts",
    "workflow.publish": "Publish and roll back workflow versions",
    "workflow.run": "Start workflow runs",
    "execution.read": "See executions and their steps",
    "connector.manage": "Connect outside systems and manage their credentials",
    "billing.read": "See the plan, quotas and usage",
}


@dataclass(frozen=True)
class BuiltinRole:
    key: str
    name: str
    description: str
    permissions: frozenset[str]


_READ = {"member.read", "workflow.read", "execution.read"}

BUILTIN_ROLES: dict[str, BuiltinRole] = {
    role.key: role
    for role in (
        BuiltinRole("owner", "Owner", "Everything, including other owners", frozenset(PERMISSIONS)),
        BuiltinRole("admin", "Admin", "Everything but owners", frozenset(PERMISSIONS)),
        BuiltinRole(
            "editor",
            "Editor",
            "Builds, publishes and runs workflows",
            frozenset(_READ | {"workflow.edit", "workflow.publish", "workflow.run"}),
        ),
        BuiltinRole("operator", "Operator", "Runs workflows", frozenset(_READ | {"workflow.run"})),
        BuiltinRole("viewer", "Viewer", "Reads workflows and executions", frozenset(_READ)),
    )
}
OWNER = "owner"
