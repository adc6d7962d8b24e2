"""The identity clean-up runs as a Dagster job on an hourly schedule."""

from __future__ import annotations

from datetime import timedelta

import pytest
from dagster import DagsterInstance, build_schedule_context
from django.contrib.sessions.models import Session
from django.utils import timezone

from control_plane.users.models import (
    LoginAttempt,
    MFADevice,
    OAuthState,
    UserSession,
    UserToken,
)
from control_plane.users.sessions import session_create
from control_plane.users.tokens import token_issue
from orchestration.maintenance import make_identity_cleanup
from orchestration.repository import make_repository
from resources.control_plane import ControlPlaneResource

pytestmark = pytest.mark.django_db

RESOURCE = ControlPlaneResource(settings_module="control_plane.settings.test")


def test_cleanup_job_deletes_only_what_has_no_use(user):
    now = timezone.now()
    long_ago = now - timedelta(days=31)
    live, _ = session_create(user=user, kind="api", ip=None, user_agent="live")
    expired, _ = session_create(user=user, kind="api", ip=None, user_agent="expired")
    UserSession.objects.filter(pk=expired.pk).update(expires_at=long_ago)
    recently_revoked, _ = session_create(user=user, kind="api", ip=None, user_agent="recent")
    UserSession.objects.filter(pk=recently_revoked.pk).update(revoked_at=now)
    token_issue(user=user, purpose="password_reset", ttl=timedelta(hours=1))
    token_issue(user=user, purpose="password_reset", ttl=timedelta(hours=-1))
    LoginAttempt.objects.create(email="x@y.z", success=False, reason="bad_credentials")
    old = LoginAttempt.objects.create(email="x@y.z", success=False, reason="bad_credentials")
    LoginAttempt.objects.filter(pk=old.pk).update(created_at=now - timedelta(days=91))
    OAuthState.objects.create(
        provider="p",
        state_hash="h",
        code_verifier="v",
        nonce="n",
        redirect_uri="http://x.test/cb",
        expires_at=now - timedelta(minutes=1),
    )
    abandoned = MFADevice.objects.create(user=user, secret="S")
    MFADevice.objects.filter(pk=abandoned.pk).update(created_at=now - timedelta(days=2))

    Session.objects.create(session_key="old", session_data="", expire_date=long_ago)
    Session.objects.create(session_key="new", session_data="", expire_date=now + timedelta(days=1))

    job, _ = make_identity_cleanup(RESOURCE)
    result = job.execute_in_process()

    assert result.success
    assert result.output_for_node("delete_expired_identity_rows") == {
        "sessions": 1,
        "tokens": 1,
        "login_attempts": 1,
        "oauth_states": 1,
        "mfa_devices": 1,
        "django_sessions": 1,
    }
    assert set(UserSession.objects.values_list("pk", flat=True)) == {
        live.pk,
        recently_revoked.pk,
    }
    assert UserToken.objects.count() == 1 and LoginAttempt.objects.count() == 1
    assert result.get_step_success_events()[0].step_key == "delete_expired_identity_rows"


def test_schedule_is_hourly_in_utc_and_requests_the_job():
    job, schedule = make_identity_cleanup(RESOURCE)
    assert schedule.cron_schedule == "17 * * * *" and schedule.execution_timezone == "UTC"
    assert schedule.job_name == job.name == "identity_cleanup"
    with DagsterInstance.ephemeral() as instance:
        requests = schedule.evaluate_tick(build_schedule_context(instance=instance)).run_requests
    assert len(requests) == 1


def test_the_code_location_has_the_job_and_its_schedule(published):
    repo = make_repository(RESOURCE)
    assert "identity_cleanup" in repo.job_names
    assert repo.get_schedule_def("identity_cleanup_hourly").job_name == "identity_cleanup"
