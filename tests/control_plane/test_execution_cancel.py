"""Cancelling an execution from the control plane: before its run starts (withdrawn here, the
sensor never launches it) and after (Dagster is asked to terminate the run)."""

from __future__ import annotations

import pytest
from dagster import DagsterInstance
from rest_framework.test import APIClient

from control_plane.core.tenancy import tenant_context
from control_plane.executions.models import TriggerEvent, WorkflowExecution
from control_plane.executions.services import trigger_events_pending
from control_plane.workflows.selectors import workflow_latest_version, workflow_spec
from orchestration.rendering import build_job
from orchestration.repository import default_resources
from resources.control_plane import ControlPlaneResource
from tests.conftest import bearer_token
from tests.factories import make_member, run_workflow, steps_of

pytestmark = pytest.mark.django_db


def _cancel(client, execution):
    return client.post(f"/api/v1/executions/{execution.pk}/cancel")


def test_a_queued_execution_is_withdrawn_and_never_launched(api, published):
    execution = run_workflow(published)
    response = _cancel(api, execution)
    assert response.status_code == 200, response.content
    assert response.json()["status"] == "canceled"
    event = TriggerEvent.objects.unscoped().get(execution=execution)
    assert event.status == TriggerEvent.Status.CANCELED
    assert event.pk not in [
        e["event_id"] for e in trigger_events_pending(after_id=0, stale_seconds=0)
    ]
    again = _cancel(api, execution)
    assert again.status_code == 409 and again.json()["error"]["code"] == "conflict"


def test_a_run_requested_just_before_the_cancel_stops_at_its_first_op(api, published):
    """The sensor may have asked for the run already: its first op finds the execution
    canceled and the run fails without running a step."""
    execution = run_workflow(published, inputs={"name": "late"})
    assert _cancel(api, execution).status_code == 200
    with tenant_context(published.organization_id):
        spec = workflow_spec(version_id=workflow_latest_version(workflow=published).pk)
    resources = default_resources(
        ControlPlaneResource(settings_module="control_plane.settings.test")
    )
    result = build_job(spec, resources).execute_in_process(
        run_config={"inputs": execution.inputs},
        tags={"flowpilot/execution": str(execution.pk)},
        instance=DagsterInstance.ephemeral(),
        raise_on_error=False,
    )
    assert not result.success
    execution.refresh_from_db()
    assert execution.status == "canceled" and execution.dagster_run_id is None
    assert not steps_of(execution).filter(status="success").exists()


def test_a_started_run_needs_dagster_to_stop_it(api, published, settings):
    settings.DAGSTER_URL = "http://127.0.0.1:9"  # nothing listens
    execution = run_workflow(published)
    WorkflowExecution.objects.unscoped().filter(pk=execution.pk).update(
        dagster_run_id="r-123", status="running"
    )
    response = _cancel(api, execution)
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "dagster_unavailable"
    execution.refresh_from_db()
    assert execution.status == "running"


def test_cancel_needs_workflow_run(org, published):
    execution = run_workflow(published)
    viewer, operator = APIClient(), APIClient()
    viewer.credentials(
        HTTP_AUTHORIZATION=f"Bearer {bearer_token(make_member(org, 'v@acme.test', 'viewer'))}"
    )
    operator.credentials(
        HTTP_AUTHORIZATION=f"Bearer {bearer_token(make_member(org, 'o@acme.test', 'operator'))}"
    )
    assert _cancel(viewer, execution).status_code == 403
    assert _cancel(operator, execution).status_code == 200


def test_unknown_execution_is_404(api):
    assert api.post("/api/v1/executions/999999/cancel").status_code == 404
