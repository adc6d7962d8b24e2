"""`GET .../executions/{id}/logs`: paginated, filtered by step and level, incremental with
`after`, one organization's only; and the admin shows the log inline."""

from __future__ import annotations

import pytest
from django.test import Client

from control_plane.core.tenancy import tenant_context
from control_plane.executions.logs import execution_log_write
from tests.factories import PASSWORD, run_workflow

pytestmark = pytest.mark.django_db


@pytest.fixture
def logged(published):
    """An execution with a log: run lines, two steps' lines, a warning and an error."""
    execution = run_workflow(published)
    lines = [
        {"message": "run started (Dagster run r-1)"},
        {"step_id": "greet", "message": "step 'greet' started"},
        {"step_id": "greet", "level": "warning", "message": "slow answer"},
        {"step_id": "greet", "message": "step 'greet' succeeded"},
        {"step_id": "shout", "message": "step 'shout' started"},
        {"step_id": "shout", "level": "error", "message": "step 'shout' failed: boom"},
        {"level": "error", "message": "run failed: shout: boom"},
    ]
    with tenant_context(published.organization_id):
        execution_log_write(
            organization_id=published.organization_id, execution_id=execution.pk, lines=lines
        )
    return execution


def _logs(client, execution, query=""):
    return client.get(f"/api/v1/executions/{execution.pk}/logs{query}")


def test_the_log_in_order_and_paginated(api, logged):
    body = _logs(api, logged).json()
    assert body["count"] == 7 and body["previous"] is None
    messages = [line["message"] for line in body["results"]]
    assert messages[0] == "run started (Dagster run r-1)" and messages[-1].startswith("run failed")
    assert set(body["results"][0]) == {"id", "step_id", "level", "message", "created_at"}
    ids = [line["id"] for line in body["results"]]
    assert ids == sorted(ids)
    first = _logs(api, logged, "?page_size=3").json()
    assert len(first["results"]) == 3 and first["next"]
    second = api.get(first["next"]).json()
    assert [line["id"] for line in second["results"]] == ids[3:6]


def test_filters_by_step_level_and_after(api, logged):
    greet = _logs(api, logged, "?step=greet").json()["results"]
    assert [line["message"] for line in greet] == [
        "step 'greet' started",
        "slow answer",
        "step 'greet' succeeded",
    ]
    run_lines = _logs(api, logged, "?step=").json()["results"]
    assert [line["step_id"] for line in run_lines] == ["", ""]
    problems = _logs(api, logged, "?level=warning,error").json()["results"]
    assert [line["level"] for line in problems] == ["warning", "error", "error"]
    everything = _logs(api, logged).json()["results"]
    since = _logs(api, logged, f"?after={everything[4]['id']}").json()
    assert since["count"] == 2
    assert [line["id"] for line in since["results"]] == [e["id"] for e in everything[5:]]
    last = everything[-1]["id"]
    assert _logs(api, logged, f"?after={last}").json()["count"] == 0


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("?level=loud", "level"),
        ("?level=,", "level"),
        ("?after=abc", "after"),
        ("?after=-1", "after"),
        ("?step=" + "x" * 64, "step"),
    ],
)
def test_bad_filters_are_400_with_the_field(api, logged, query, field):
    response = _logs(api, logged, query)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "validation_error" and field in error["fields"]


def test_a_nul_in_a_filter_is_a_json_400(api, logged):
    response = _logs(api, logged, "?step=%00")
    assert response.status_code == 400 and "error" in response.json()


def test_another_organizations_log_is_404(outsider_api, api, logged):
    response = _logs(outsider_api, logged)
    assert response.status_code == 404 and "run started" not in response.content.decode()
    assert api.get("/api/v1/executions/999999/logs").status_code == 404


def test_the_admin_shows_the_log_inline(logged):
    from control_plane.users.models import User

    User.objects.create_superuser("staff@acme.test", PASSWORD)
    client = Client()
    signed_in = client.post(
        "/admin/login/?next=/admin/", {"username": "staff@acme.test", "password": PASSWORD}
    )
    assert signed_in.status_code == 302
    page = client.get(f"/admin/executions/workflowexecution/{logged.pk}/change/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "run started (Dagster run r-1)" in html and "step &#x27;shout&#x27; failed" in html
