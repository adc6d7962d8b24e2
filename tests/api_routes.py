"""Every API URL pattern, from Django's URL resolver: the tests that must cover each endpoint
walk this list, so a new endpoint is covered (or fails them) without anyone remembering."""

from __future__ import annotations

from django.urls import URLPattern, URLResolver, get_resolver


def api_routes() -> list[tuple[str, type]]:
    """(route under api/v1/, e.g. "orgs/<slug:org>/members", and its view class)."""
    routes: list[tuple[str, type]] = []

    def walk(patterns, prefix: str) -> None:
        for pattern in patterns:
            route = prefix + str(pattern.pattern)
            if isinstance(pattern, URLResolver):
                walk(pattern.url_patterns, route)
            elif isinstance(pattern, URLPattern) and route.startswith("api/v1/"):
                routes.append((route.removeprefix("api/v1/"), pattern.callback.view_class))

    walk(get_resolver().url_patterns, "")
    return routes
