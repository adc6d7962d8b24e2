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
        # Daemon, code server and run workers keep their connection (health-checked on reuse).
        # Set only while the settings are read: a process this one starts (the CLI starts
        # uvicorn, where every request has a thread and would keep a connection of its own)
        # must not inherit them.
        own = {"FLOWPILOT_PROCESS": "dagster", "DATABASE_CONN_MAX_AGE": "600"}
        added = [name for name in own if name not in os.environ]
        os.environ.update({name: own[name] for name in added})
        try:
            import django

            django.setup()
        finally:
            for name in added:
                os.environ.pop(name, None)
