"""``manage.py check`` turns configuration mistakes into clear errors that name the task."""

from __future__ import annotations

import os
import subprocess
import sys

from scheduler_app.executors import NEEDS_FRAMEWORK, tasks_framework
from tests.processes import ROOT


def run_check(tasks: str, **extra: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings", "TEST_SCHEDULER_TASKS": tasks, **extra}
    return subprocess.run(
        [sys.executable, "manage.py", "check"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )


def test_check_names_each_broken_task() -> None:
    result = run_check(
        ",".join(
            [
                "tests.tasks.TickTask",
                "tests.bad_tasks.BadCronTask",
                "tests.bad_tasks.ZeroIntervalTask",
                "tests.bad_tasks.TickTwinTask",
                "tests.missing_module.SomeTask",
            ]
        )
    )
    assert result.returncode != 0
    out = result.stderr
    assert "scheduler.E010" in out
    assert "task 'bad_cron': cron_expression: invalid cron expression '61 * * * *'" in out
    assert "task 'zero_interval': interval_seconds: interval_seconds must be greater than 0" in out
    assert "task 'tick': duplicate name, already defined by 'tests.tasks.TickTask'" in out
    assert "cannot import 'tests.missing_module.SomeTask'" in out
    assert "Traceback" not in out


def test_check_passes_for_valid_tasks() -> None:
    result = run_check("tests.tasks.TickTask,tests.tasks.CronTask")
    assert result.returncode == 0, result.stderr
    assert "no issues" in result.stdout


def test_runscheduler_refuses_to_start_with_a_broken_task() -> None:
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "TEST_SCHEDULER_TASKS": "tests.bad_tasks.BadCronTask",
    }
    result = subprocess.run(
        [sys.executable, "manage.py", "runscheduler"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0
    assert "task 'bad_cron'" in result.stderr


def test_check_rejects_a_lease_shorter_than_two_heartbeats() -> None:
    result = run_check("tests.tasks.TickTask", TEST_LEASE_SECONDS="0.4", TEST_POLL_INTERVAL="0.25")
    assert result.returncode != 0
    assert "scheduler.E003" in result.stderr


def test_check_rejects_an_sqlite_without_returning(monkeypatch) -> None:
    import sqlite3

    from scheduler_app.checks import sqlite_version_errors

    databases = {"default": {"ENGINE": "django.db.backends.sqlite3"}, "pg": {"ENGINE": "django.db.backends.postgresql"}}
    assert sqlite_version_errors(databases) == [] or sqlite3.sqlite_version_info < (3, 35)
    # An old SQLite cannot be installed here; its version number is what the check reads.
    monkeypatch.setattr(sqlite3, "sqlite_version_info", (3, 31, 1))
    monkeypatch.setattr(sqlite3, "sqlite_version", "3.31.1")
    [error] = sqlite_version_errors(databases)
    assert error.id == "scheduler.E040" and "'default'" in error.msg and "SQLite 3.31.1" in error.msg


def test_each_check_id_has_one_home() -> None:
    """An id names one kind of problem: the app's checks and the alert checks share none."""
    import re
    from pathlib import Path

    package = Path(__file__).resolve().parent.parent / "scheduler_app"

    def ids(module: str) -> set[str]:
        return set(re.findall(r"\b[EW]0\d\d\b", (package / module).read_text()))

    assert ids("checks.py") and ids("alerts.py")
    assert not ids("checks.py") & ids("alerts.py")


# -- where runs execute (README: Scaling out) -----------------------------------------------------


def test_check_names_each_task_whose_executor_cannot_run_it() -> None:
    result = run_check("tests.tasks.TickTask,tests.bad_tasks.NowhereTask,tests.bad_tasks.ImmediateTask")
    assert result.returncode != 0
    out = result.stderr
    assert out.count("scheduler.E061") == 2, out
    if tasks_framework() is None:  # the Django 5.2 pass, without the backport
        assert f"task 'runs_nowhere': executor 'nowhere': {NEEDS_FRAMEWORK}." in out
        assert f"task 'runs_immediately': executor 'default': {NEEDS_FRAMEWORK}." in out
    else:
        from django.conf import settings

        assert (
            "task 'runs_nowhere': executor 'nowhere': 'nowhere' is neither 'local' nor a backend in "
            f"settings.TASKS (backends: {', '.join(sorted(settings.TASKS))})." in out
        )
        assert "fleet" in settings.TASKS
        assert (
            "task 'runs_immediately': executor 'default': the backend 'default' (ImmediateBackend) runs the task "
            "at once in the process that enqueues it" in out
        )
    assert "'tick'" not in out
    assert "Traceback" not in out


def test_check_refuses_a_default_executor_that_cannot_run_tasks() -> None:
    result = run_check("tests.tasks.TickTask", TEST_EXECUTOR="default")
    assert result.returncode != 0
    assert "scheduler.E060" in result.stderr
    if tasks_framework() is None:
        assert f"SCHEDULER['EXECUTOR'] = 'default': {NEEDS_FRAMEWORK}." in result.stderr
    else:
        assert "SCHEDULER['EXECUTOR'] = 'default': the backend 'default' (ImmediateBackend)" in result.stderr


def test_check_of_a_fleet_task_says_what_the_fleet_needs() -> None:
    """With django.tasks and a worker-backed backend the check passes; on Django 5.2 it says what is missing."""
    result = run_check("tests.tasks.FleetTickTask")
    if tasks_framework() is None:
        assert result.returncode != 0
        assert "Django >= 6.0, or on Django 5.2 the django-tasks backport" in result.stderr
    else:
        assert result.returncode == 0, result.stderr
        assert "no issues" in result.stdout
