"""One task whose stored configuration cannot be scheduled, or one dead thread, against real
``runscheduler`` processes: the bad task is left out and shown, everything else goes on, and
health turns red only when the process really stopped working."""

from __future__ import annotations

import logging
import signal

import pytest
from django.db.models import F
from django.test import Client

from scheduler_app import services
from scheduler_app.models import SchedulerProcess, TaskConfig, TaskExecutionRecord
from scheduler_app.scheduler import EXIT_THREAD_DIED
from tests.processes import wait_for

TASKS = ["TickTask", "CronTask", "SlowTask"]


def count(task: str, **filters: object) -> int:
    return TaskExecutionRecord.objects.filter(task_id=task, **filters).count()


def store_behind_validation(name: str, **fields: object) -> None:
    """Write values straight into the row, as a value stored before today's rules would be."""
    TaskConfig.objects.filter(name=name).update(**fields, revision=F("revision") + 1)


def config_error(name: str) -> str:
    return TaskConfig.objects.get(name=name).config_error


@pytest.mark.process
def test_a_bad_stored_configuration_is_left_out_and_shown_while_the_rest_goes_on(
    processes, admin_client: Client, client: Client
) -> None:
    # The case: a cron in Pacific/Kiritimati from 9999-12-31 on, whose fire times overflow.
    store_behind_validation(
        "nightly",
        schedule_type_override="cron",
        cron_expression_override="0 * * * *",
        timezone_override="Pacific/Kiritimati",
        options_override={"start_date": "9999-12-31T23:00:00+00:00"},
    )
    first = processes.scheduler(TASKS)
    wait_for(lambda: count("tick", status="success") >= 2, timeout=30, message="tick to fire")
    wait_for(lambda: "start_date" in config_error("nightly"), timeout=20, message="nightly's config error")
    assert "left out of the schedule" in first.output()

    # Shown where operators look: the API's task, the admin's task page, the metrics.
    task = admin_client.get("/scheduler/tasks/nightly").json()
    assert "start_date" in task["config_error"] and task["enabled"] is True
    assert admin_client.get("/scheduler/tasks/tick").json()["config_error"] is None
    page = admin_client.get("/admin/scheduler_app/taskconfig/nightly/change/").content.decode()
    assert "The scheduler leaves this task out" in page
    metrics = admin_client.get("/scheduler/metrics").content.decode()
    assert 'scheduler_task_config_error{task="nightly"} 1.0' in metrics
    assert 'scheduler_task_config_error{task="tick"} 0.0' in metrics
    assert "scheduler_healthy 1.0" in metrics

    # A bad task is not a dead process: health stays green.
    assert client.get("/scheduler/health/ready").status_code == 200
    assert processes.command("scheduler_health", "--active").returncode == 0

    # A value that breaks the catch-up arithmetic, written while the scheduler runs: left out too,
    # and a later change to another task still arrives.
    store_behind_validation("slow", options_override={"catch_up_window_seconds": 99999999999999})
    wait_for(lambda: "catch_up_window_seconds" in config_error("slow"), timeout=20, message="slow's config error")
    services.set_schedule("tick", schedule_type="interval", interval_seconds=2)
    wait_for(
        lambda: (
            len(runs := list(TaskExecutionRecord.objects.filter(task_id="tick").order_by("-id")[:2])) == 2
            and (runs[0].scheduled_at - runs[1].scheduled_at).total_seconds() == 2
        ),
        timeout=30,
        message="tick's new interval to apply",
    )
    slow_runs = count("slow")
    assert not TaskExecutionRecord.objects.filter(task_id="nightly").exists()

    # A restart schedules the good tasks again, the bad ones stay out.
    assert first.stop(signal.SIGTERM) == 0
    ticks = count("tick", status="success")
    processes.scheduler(TASKS)
    wait_for(lambda: count("tick", status="success") >= ticks + 2, timeout=30, message="tick to fire after restart")
    assert count("slow") == slow_runs and not TaskExecutionRecord.objects.filter(task_id="nightly").exists()
    assert client.get("/scheduler/health/ready").status_code == 200

    # Corrected through the services, the task is scheduled again and its error goes.
    services.clear_options("nightly")
    services.clear_options("slow")
    wait_for(lambda: not config_error("nightly") and not config_error("slow"), timeout=20, message="errors cleared")
    wait_for(lambda: count("slow") > slow_runs, timeout=30, message="slow to fire again")


@pytest.mark.process
@pytest.mark.parametrize(
    ("thread", "tasks"),
    [("dispatcher", ["TickTask"]), ("watchdog", ["TickTask", "HangTask"]), ("pickup", ["TickTask"])],
)
def test_a_dead_thread_turns_health_red_and_the_process_exits_for_its_supervisor(
    processes, client: Client, thread: str, tasks: list[str]
) -> None:
    """The injected fault (scheduler_app.faults) kills the thread outside its per-item guard."""
    healthy = processes.scheduler(tasks)
    processes.wait_role(healthy, "active", progressed=True)  # health asks for progress, not a role
    assert processes.command("scheduler_health", "--active").returncode == 0
    assert healthy.stop() == 0

    doomed = processes.scheduler(tasks, wait_active=False, SCHEDULER_TEST_KILL_THREAD=thread)
    status = doomed.popen.wait(timeout=30)
    assert status == EXIT_THREAD_DIED, doomed.output()
    output = doomed.output()
    assert "thread(s) died" in output and "CRITICAL" in output
    # The thread's own traceback goes through logging too.
    assert "InjectedFault: SCHEDULER_TEST_KILL_THREAD" in output and " died\nTraceback" in output
    assert not SchedulerProcess.objects.filter(pid=doomed.pid).exists()
    response = client.get("/scheduler/health/ready")
    assert response.status_code == 503
    result = processes.command("scheduler_health")
    assert result.returncode == 1 and "no live scheduler" in result.stderr
    # The supervisor's restart (without the fault) is healthy again.
    processes.scheduler(tasks)
    wait_for(lambda: client.get("/scheduler/health/ready").status_code == 200, timeout=10, message="ready again")


@pytest.mark.django_db(transaction=True)
def test_a_huge_stored_retry_delay_queues_a_bounded_retry_and_logs_no_lost_outcome(caplog) -> None:
    from scheduler_app.runner import TaskRunner
    from scheduler_app.validation import MAX_DURATION_SECONDS

    store_behind_validation(
        "boom", options_override={"max_retries": 1, "retry_delay_seconds": 1e300, "retry_max_delay_seconds": 1e300}
    )
    runner = TaskRunner()
    try:
        with caplog.at_level(logging.INFO, logger="scheduler_app"):
            record = runner.run_now("boom")
    finally:
        runner.close()
    assert record.status == "failed"
    retry = TaskExecutionRecord.objects.get(retry_of=record)
    assert retry.status == "pending"
    delay = (retry.scheduled_at - record.finished_at).total_seconds()
    assert MAX_DURATION_SECONDS - 60 < delay <= MAX_DURATION_SECONDS + 60
    assert "could not record" not in caplog.text and "could not be queued" not in caplog.text
