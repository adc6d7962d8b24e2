from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from control_plane.core.api.views import HealthzApi, ReadyzApi

handler400 = "control_plane.core.errors.json_400"
handler403 = "control_plane.core.errors.json_403"
handler404 = "control_plane.core.errors.json_404"
handler500 = "control_plane.core.errors.json_500"

api_v1 = [
    path("", include("control_plane.users.api.urls")),
    path("", include("control_plane.workflows.api.urls")),
    path("", include("control_plane.executions.api.urls")),
]

urlpatterns = [
    path("healthz", HealthzApi.as_view(), name="healthz"),
    path("readyz", ReadyzApi.as_view(), name="readyz"),
    path("api/v1/", include(api_v1)),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="swagger-ui"),
    path("admin/", admin.site.urls),
]
