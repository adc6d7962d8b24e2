from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from control_plane.core.api.views import HealthzApi, ReadyzApi
from control_plane.executions.api.hooks import WebhookReceiveApi
from control_plane.organizations.api import urls as organization_urls
from control_plane.workflows.api import urls as workflow_urls

handler400 = "control_plane.core.errors.json_400"
handler403 = "control_plane.core.errors.json_403"
handler404 = "control_plane.core.errors.json_404"
handler500 = "control_plane.core.errors.json_500"

# Everything that belongs to one organization. The canonical routes are under orgs/<org>/;
# the same views answer at the API root for API clients that name the organization in the
# X-Organization header (or have only one).
tenant_urls = [
    *organization_urls.tenant_urls,
    path("", include("control_plane.workflows.api.urls")),
    path("", include("control_plane.executions.api.urls")),
    path("", include("control_plane.connectors.api.urls")),
]

api_v1 = [
    path("", include("control_plane.users.api.urls")),
    *organization_urls.account_urls,
    *workflow_urls.account_urlpatterns,
    organization_urls.organization_detail,
    path("orgs/<slug:org>/", include((tenant_urls, "org"))),
    path("", include((tenant_urls, "default-org"))),
]

urlpatterns = [
    path("healthz", HealthzApi.as_view(), name="healthz"),
    path("readyz", ReadyzApi.as_view(), name="readyz"),
    path("hooks/<str:token>", WebhookReceiveApi.as_view(), name="webhook-receive"),
    path("api/v1/", include(api_v1)),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="swagger-ui"),
    path("admin/", admin.site.urls),
]
