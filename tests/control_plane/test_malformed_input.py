"""No API endpoint answers 500 to malformed input: every URL pattern under /api/v1/ gets
garbage bodies, signed in and not, and must answer a 4xx in the one JSON error shape (or a
success for the few endpoints where the garbage is valid)."""

from __future__ import annotations

import re

import pytest
from rest_framework.test import APIClient

from tests.api_routes import api_routes

pytestmark = pytest.mark.django_db

GARBAGE = [
    b"{not json",
    b"[]",
    b'"a string"',
    b"null",
    b"12345678901234567890123456789",
    b'{"email": {"$gt": ""}, "password": [1], "token": 7, "code": null}',
    b'{"email": "' + b"a" * 10_000 + b'@x.test", "password": "p"}',
    b'{"definition": {"steps": "nope"}, "name": null, "inputs": [1, 2]}',
    b'{"name": "\\u0000\\ud800"}',
    b'{"name": "a\\u0000b", "description": "x", "definition": {"steps": []}, "email": "a@b.c"}',
    b'{"inputs": {"k\\u0000": 1}, "role": "viewer\\u0000"}',
]


def api_paths() -> list[str]:
    """Every API URL, with 1 for each path parameter (an id that may or may not exist)."""
    paths = {"/api/v1/" + re.sub(r"<(?:\w+:)?(\w+)>", "1", route) for route, _ in api_routes()}
    # Signing out last keeps the signed-in run signed in for every other endpoint.
    return sorted(paths, key=lambda path: (path.endswith("/logout"), path))


def test_the_walk_finds_the_api():
    paths = api_paths()
    assert "/api/v1/auth/login" in paths and "/api/v1/users/me/sessions/1" in paths
    assert "/api/v1/workflows/1/publish" in paths


@pytest.mark.parametrize("signed_in", [False, True], ids=["anonymous", "signed-in"])
def test_garbage_never_gets_a_500(signed_in, api, published):
    client = api if signed_in else APIClient()
    failures = []
    for path in api_paths():
        for method in ["post", "patch", "put", "delete", "get"]:
            for body in GARBAGE if method != "get" else [b""]:
                query = "?page_size=x&active=%00&status=%00&role=%00&department=%C2%B2"
                response = getattr(client, method)(
                    path + (query if method == "get" else ""),
                    data=body,
                    content_type="application/json",
                )
                if response.status_code >= 500 or (
                    response.status_code >= 400 and "error" not in response.json()
                ):
                    failures.append((method, path, body[:40], response.status_code))
    assert failures == []
    if signed_in:
        assert client.get("/api/v1/users/me").status_code == 401  # the last call signed out
