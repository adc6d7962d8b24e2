"""Django set up once per Dagster process, so resources can use the control plane's services."""

from __future__ import annotations

import os
import threading

_lock = threading.Lock()


def ensure_django(settings_module: str = "control_plane.settings.dev") -> None:
    from django.apps import apps

    if apps.ready:
        return
    with _lock:
        if apps.ready:
            return
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", settings_module)
        os.environ.setdefault("FLOWPILOT_PROCESS", "dagster")
        # Daemon, code server and run workers keep their connection (health-checked on reuse).
        os.environ.setdefault("DATABASE_CONN_MAX_AGE", "600")
        import django

        django.setup()
