"""``manage.py check`` turns configuration mistakes into clear errors that name the task."""

from __future__ import annotations

import os
import subprocess
import sys

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
