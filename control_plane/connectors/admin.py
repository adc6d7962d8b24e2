from django.contrib import admin

from control_plane.connectors.models import Connector


@admin.register(Connector)
class ConnectorAdmin(admin.ModelAdmin):
    list_display = ("name", "kind", "organization", "updated_at")
    list_filter = ("kind",)
    search_fields = ("name", "organization__slug")
    exclude = ("credentials",)  # never shown; set them through the API
