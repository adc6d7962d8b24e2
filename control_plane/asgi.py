"""The control plane's ASGI application (uvicorn): HTTP is the Django app as it is; WebSockets
are the live updates of executions (control_plane/executions/consumers.py)."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "control_plane.settings.dev")
django_application = get_asgi_application()  # sets Django up before the consumers import models

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from control_plane.executions.consumers import (  # noqa: E402
    BrowserOriginValidator,
    SocketAuthMiddleware,
    websocket_urlpatterns,
)

application = ProtocolTypeRouter(
    {
        "http": django_application,
        "websocket": BrowserOriginValidator(SocketAuthMiddleware(URLRouter(websocket_urlpatterns))),
    }
)
