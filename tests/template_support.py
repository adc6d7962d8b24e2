"""Helpers shared by the template API tests and the gallery tests."""

from __future__ import annotations

from rest_framework.test import APIClient

from tests.conftest import bearer_token


def client_for(user) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {bearer_token(user)}")
    return client


def is_error(response, status: int, code: str | None = None) -> dict:
    assert response.status_code == status, response.content
    error = response.json()["error"]
    assert error["message"] and error["code"] and "request_id" in error
    if code:
        assert error["code"] == code
    return error


def instantiate(api, template: str, values: dict | None = None, name: str | None = None, **extra):
    body = {"values": values or {}, "name": name or f"From {template}", **extra}
    return api.post(f"/api/v1/templates/{template}/instantiate", body, format="json")
