"""Re-running an execution from the control plane (`POST .../executions/{id}/rerun`): what is
refused and with which answer. The launch itself, through Dagster's GraphQL
`launchRunReexecution`, runs end to end in tests/e2e/test_rerun.py."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from control_plane.core.tenancy import tenant_context
from control_plane.executions.models import TriggerEvent, WorkflowExecution
from control_plane.organizations import services as organization_services
from control_plane.workflows import services as workflow_services
from tests.conftest import bearer_token
from tests.factories import definition, make_member, run_workflow

pytestmark = pytest.mark.django_db

NOBODY_LISTENS = "http://127.0.0.1:9"


def _rerun(client, execution, body=None):
    body = {"strategy": "from_failure"} if body is None else body
    return client.post(f"/api/v1/executions/{execution.pk}/rerun", body, format="json")


def _ended(workflow, status="failure", run_id="run-1"):
    execution = run_workflow(workflow)
    WorkflowExecution.objects.unscoped().filter(pk=execution.pk).update(
        status=status, dagster_run_id=run_id
    )
    execution.refresh_from_db()
    return execution


def _count(org) -> int:
    return WorkflowExecution.objects.unscoped().filter(organization=org).count()


@pytest.fixture
def no_dagster(settings):
    settings.DAGSTER_URL = NOBODY_LISTENS


def test_dagster_unreachable_is_503_and_nothing_is_kept(api, org, published, no_dagster):
    parent = _ended(published)
    before = _count(org)
    response = _rerun(api, parent)
    assert response.status_code == 503, response.content
    assert response.json()["error"]["code"] == "dagster_unavailable"
    # The new execution and its event were rolled back with the failed launch.
    assert _count(org) == before
    assert not TriggerEvent.objects.unscoped().filter(kind=TriggerEvent.Kind.RERUN).exists()
    assert not WorkflowExecution.objects.unscoped().filter(rerun_of=parent).exists()


@pytest.mark.parametrize("status", ["queued", "running"])
def test_an_execution_that_has_not_finished_is_409(api, published, status, no_dagster):
    execution = _ended(published, status=status)
    response = _rerun(api, execution, {"strategy": "all"})
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "not_finished"


def test_from_failure_of_a_successful_execution_is_409(api, published, no_dagster):
    response = _rerun(api, _ended(published, status="success"))
    assert response.status_code == 409
    error = response.json()["error"]
    assert error["code"] == "nothing_failed" and "strategy" in error["fields"]
    # Running every step again is allowed (it gets as far as Dagster, which is down here).
    assert (
        _rerun(api, _ended(published, "success", "run-2"), {"strategy": "all"}).status_code == 503
    )


def test_an_execution_that_never_ran_is_409(api, published, no_dagster):
    execution = run_workflow(published)
    WorkflowExecution.objects.unscoped().filter(pk=execution.pk).update(status="canceled")
    response = _rerun(api, execution, {"strategy": "all"})
    assert response.status_code == 409 and response.json()["error"]["code"] == "never_ran"


def test_a_newer_version_or_a_paused_workflow_is_409(api, published, user, no_dagster):
    parent = _ended(published)
    with tenant_context(published.organization_id):
        workflow_services.workflow_update(
            workflow=published,
            draft_definition=definition(inputs={"name": {"type": "string", "default": "v2"}}),
        )
        workflow_services.workflow_publish(workflow=published, published_by=user)
    response = _rerun(api, parent)
    assert response.status_code == 409 and response.json()["error"]["code"] == "version_changed"

    other = _ended(published, run_id="run-2")  # on version 2
    published.status = "paused"
    published.save(update_fields=["status"])
    response = _rerun(api, other)
    assert response.status_code == 409 and response.json()["error"]["code"] == "not_active"


@pytest.mark.parametrize(
    "body", [{}, {"strategy": "everything"}, {"strategy": ["all"]}, {"strategy": None}, []]
)
def test_a_bad_strategy_is_400_with_the_field(api, published, body, no_dagster):
    response = _rerun(api, _ended(published), body)
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["code"] == "validation_error"
    assert error["fields"] == {"strategy": ["expected one of: all, from_failure"]}


def test_over_the_runs_quota_is_429(api, org, published, no_dagster):
    parent = _ended(published)
    with tenant_context(org.pk):
        organization_services.quota_update(organization=org, runs_per_month=_count(org))
    response = _rerun(api, parent)
    assert response.status_code == 429
    assert response.json()["error"]["code"] == "quota_exceeded"
    assert "Retry-After" in response.headers


def test_another_organizations_execution_is_404(api, outsider_api, published, no_dagster):
    parent = _ended(published)
    for body in ({"strategy": "all"}, {"strategy": "nonsense"}, {}):
        response = _rerun(outsider_api, parent, body)
        assert response.status_code == 404, (body, response.content)
        assert response.json()["error"]["code"] == "not_found"
    assert api.post("/api/v1/executions/999999/rerun", {"strategy": "all"}).status_code == 404


def test_rerun_needs_workflow_run(org, published, no_dagster):
    parent = _ended(published)
    viewer, operator = APIClient(), APIClient()
    viewer.credentials(
        HTTP_AUTHORIZATION=f"Bearer {bearer_token(make_member(org, 'v@acme.test', 'viewer'))}"
    )
    operator.credentials(
        HTTP_AUTHORIZATION=f"Bearer {bearer_token(make_member(org, 'o@acme.test', 'operator'))}"
    )
    assert _rerun(viewer, parent).status_code == 403
    assert _rerun(operator, parent).status_code == 503  # allowed; Dagster is down here


def test_executions_show_what_they_re_run(api, published):
    parent = _ended(published)
    with tenant_context(published.organization_id):
        child = WorkflowExecution.objects.create(
            organization_id=published.organization_id,
            workflow=published,
            version=parent.version,
            inputs=parent.inputs,
            rerun_of=parent,
            rerun_strategy="from_failure",
        )
    body = api.get(f"/api/v1/executions/{child.pk}").json()
    assert (body["rerun_of"], body["rerun_strategy"]) == (parent.pk, "from_failure")
    listed = {e["id"]: e for e in api.get("/api/v1/executions").json()["results"]}
    assert listed[parent.pk]["rerun_of"] is None and listed[parent.pk]["rerun_strategy"] == ""
