"""Health endpoints and ``manage.py scheduler_health``, with and without a live scheduler process."""

from __future__ import annotations

import json
import signal
from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from scheduler_app.coordination import HOST, try_acquire_lease
from scheduler_app.models import SchedulerProcess
from tests.processes import wait_for

pytestmark = pytest.mark.django_db(transaction=True)


def test_liveness_needs_no_login_and_no_database(client: Client, django_assert_num_queries) -> None:
    with django_assert_num_queries(0):
        response = client.get("/scheduler/health/live")
    assert response.status_code == 200 and response.json() == {"status": "ok"}
    assert "no-cache" in response["Cache-Control"]
    assert client.get("/scheduler/health/live/").status_code == 200
    assert client.head("/scheduler/health/live").status_code == 200
    response = client.post("/scheduler/health/live")
    assert response.status_code == 405


def test_readiness_without_a_scheduler(client: Client) -> None:
    response = client.get("/scheduler/health/ready")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable" and body["database"] == "ok"
    assert body["scheduler"]["alive"] == 0 and body["scheduler"]["heartbeat_age_seconds"] is None
    assert "no scheduler heartbeat" in body["reason"]


def test_readiness_judges_heartbeats_and_roles(client: Client) -> None:
    # A scheduler that stopped heartbeating an hour ago is not alive.
    SchedulerProcess.objects.create(
        kind="scheduler", role="active", host="stale-host", pid=1, last_heartbeat=timezone.now() - timedelta(hours=1)
    )
    assert client.get("/scheduler/health/ready").status_code == 503
    # Alive but only standing by: tasks are not being scheduled.
    standby = SchedulerProcess.objects.create(
        kind="scheduler", role="standby", host="standby-host", pid=2, progress_at=timezone.now()
    )
    response = client.get("/scheduler/health/ready")
    assert response.status_code == 503 and "standing by" in response.json()["reason"]
    # A `trigger_task` command is not a scheduler.
    SchedulerProcess.objects.create(kind="command", host="z", pid=3)
    assert client.get("/scheduler/health/ready").status_code == 503
    # A role of "active" is only the process's own report: the lease says who leads.
    standby.role = "active"
    standby.save()
    assert client.get("/scheduler/health/ready").status_code == 503
    assert try_acquire_lease(standby.pk)
    response = client.get("/scheduler/health/ready/")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok" and body["scheduler"]["active"] == 1 and body["scheduler"]["alive"] == 1
    assert 0 <= body["scheduler"]["heartbeat_age_seconds"] < 60
    # Anonymous callers learn no host names or pids.
    assert b"standby-host" not in response.content and b"stale-host" not in response.content


def test_readiness_max_age_setting(client: Client, settings) -> None:
    row = SchedulerProcess.objects.create(
        kind="scheduler",
        role="active",
        host="x",
        pid=1,
        last_heartbeat=timezone.now() - timedelta(seconds=30),
        progress_at=timezone.now() - timedelta(seconds=30),
    )
    assert try_acquire_lease(row.pk)
    assert client.get("/scheduler/health/ready").status_code == 503  # LEASE_SECONDS is 3 in the tests
    settings.SCHEDULER = {**settings.SCHEDULER, "HEALTH_MAX_HEARTBEAT_AGE": 120}
    response = client.get("/scheduler/health/ready")
    assert response.status_code == 200 and response.json()["scheduler"]["max_heartbeat_age_seconds"] == 120


@pytest.mark.process
def test_command_and_readiness_follow_a_real_scheduler(processes, client: Client) -> None:
    result = processes.command("scheduler_health")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "unhealthy: no live scheduler" in result.stderr

    scheduler = processes.scheduler(["TickTask"])
    processes.wait_role(scheduler, "active", progressed=True)  # health asks for progress, not a role
    result = processes.command("scheduler_health")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "healthy: 1 scheduler(s) alive (1 active, 0 standby)" in result.stdout
    assert processes.command("scheduler_health", "--active").returncode == 0
    assert processes.command("scheduler_health", "--local").returncode == 0
    result = processes.command("scheduler_health", "--json")
    assert result.returncode == 0 and json.loads(result.stdout)["healthy"] is True
    assert client.get("/scheduler/health/ready").status_code == 200

    # Killed without a chance to clean up: its row stays, and goes stale.
    scheduler.kill()
    result = wait_for(
        lambda: (r := processes.command("scheduler_health", "--max-age", "1")).returncode == 1 and r,
        timeout=30,
        interval=0.2,
        message="the health command to notice the dead scheduler",
    )
    assert "no heartbeat in the last 1s" in result.stderr
    wait_for(lambda: client.get("/scheduler/health/ready").status_code == 503, timeout=30, message="not ready")


@pytest.mark.process
def test_a_cleanly_stopped_scheduler_is_unhealthy_at_once(processes) -> None:
    scheduler = processes.scheduler(["TickTask"])
    processes.wait_role(scheduler, "active", progressed=True)  # health asks for progress, not a role
    assert processes.command("scheduler_health").returncode == 0
    assert scheduler.stop(signal.SIGTERM) == 0
    result = processes.command("scheduler_health")
    assert result.returncode == 1 and "no live scheduler" in result.stderr


@pytest.mark.process
def test_local_and_active_options(processes) -> None:
    """``--local`` wants a scheduler on this host; ``--active`` wants the leader."""
    SchedulerProcess.objects.create(
        kind="scheduler", role="standby", host="elsewhere", pid=1, progress_at=timezone.now()
    )
    assert processes.command("scheduler_health").returncode == 0
    result = processes.command("scheduler_health", "--local")
    assert result.returncode == 1 and f"no live scheduler on this host ({HOST})" in result.stderr
    result = processes.command("scheduler_health", "--active")
    assert result.returncode == 1 and "no active scheduler" in result.stderr
    result = processes.command("scheduler_health", "--max-age", "0")
    assert result.returncode == 1 and "--max-age must be greater than 0" in result.stderr


@pytest.mark.process
def test_database_unreachable_exits_2(processes, tmp_path) -> None:
    missing = tmp_path / "no-such-dir" / "db.sqlite3"
    result = processes.command("scheduler_health", DATABASE_URL=f"sqlite:///{missing}")
    assert result.returncode == 2, result.stdout + result.stderr
    assert "database unreachable" in result.stderr


def test_alive_is_not_enough_the_active_scheduler_must_be_working(client: Client) -> None:
    """A fresh heartbeat with a dead thread, or with a control loop that stopped making progress, is red."""
    from django.core.management import CommandError, call_command

    now = timezone.now()
    row = SchedulerProcess.objects.create(
        kind="scheduler", role="active", host=HOST, pid=1, progress_at=now, problem="thread(s) died: fire-dispatcher"
    )
    assert try_acquire_lease(row.pk)
    response = client.get("/scheduler/health/ready")
    assert response.status_code == 503
    body = response.json()
    assert "not processing fires: thread(s) died: fire-dispatcher" in body["reason"]
    assert body["scheduler"]["alive"] == 1 and body["scheduler"]["active_working"] == 0
    with pytest.raises(CommandError, match="no working active scheduler: thread"):
        call_command("scheduler_health", "--active")

    # Heartbeats go on, but the last completed round of the control loop is a minute old.
    SchedulerProcess.objects.filter(pk=row.pk).update(problem="", progress_at=now - timedelta(minutes=1))
    response = client.get("/scheduler/health/ready")
    assert response.status_code == 503 and "no progress of its control loop" in response.json()["reason"]
    with pytest.raises(CommandError, match="no working scheduler on this host"):
        call_command("scheduler_health", "--local")

    SchedulerProcess.objects.filter(pk=row.pk).update(progress_at=timezone.now())
    assert client.get("/scheduler/health/ready").status_code == 200
    call_command("scheduler_health", "--active")
