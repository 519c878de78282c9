"""Failure alerts: real runs through the TaskRunner, Django's locmem mail, a real HTTP receiver."""

from __future__ import annotations

import json
import logging
import signal
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import django
import pytest
from django.utils import timezone

from scheduler_app import alerts
from scheduler_app.models import TaskExecutionRecord
from scheduler_app.registry import task_registry
from scheduler_app.runner import TaskRunner
from scheduler_app.services import sync_task_rows
from scheduler_app.tasks.base import BaseTask, ScheduleType, TaskResult, TaskSchedule
from tests.processes import free_port, wait_for

pytestmark = pytest.mark.django_db(transaction=True)


class FlakyTask(BaseTask):
    """Fails or succeeds as the test says."""

    name = "flaky"
    schedule = TaskSchedule(schedule_type=ScheduleType.INTERVAL, interval_seconds=3600)
    fail: ClassVar[bool] = True

    def run(self) -> TaskResult:
        if FlakyTask.fail:
            raise RuntimeError("flaky is down")
        return TaskResult.success("flaky is fine")


class PickyTask(BaseTask):
    """Sets its own threshold, which wins over SCHEDULER['ALERT_AFTER_FAILURES']."""

    name = "picky"
    schedule = TaskSchedule(schedule_type=ScheduleType.INTERVAL, interval_seconds=3600)
    alert_after_failures = 2

    def run(self) -> TaskResult:
        return TaskResult.failed(error="picky failed")


class QuietTask(BaseTask):
    name = "quiet"
    schedule = TaskSchedule(schedule_type=ScheduleType.INTERVAL, interval_seconds=3600)
    alert_after_failures = 0

    def run(self) -> TaskResult:
        raise RuntimeError("nobody is told")


class Receiver:
    """A webhook receiver on 127.0.0.1 that records every POST; it can answer 500 or hold requests."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.arrived: list[bytes] = []  # requests received, answered or not yet
        self.headers: list[dict[str, str]] = []
        self.status = 200
        self.release = threading.Event()
        self.release.set()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                receiver.arrived.append(body)
                receiver.release.wait(30)
                receiver.headers.append(dict(self.headers))
                receiver.bodies.append(json.loads(body))
                self.send_response(receiver.status)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/scheduler"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(autouse=True)
def tasks() -> Iterator[None]:
    FlakyTask.fail = True
    for task in (FlakyTask, PickyTask, QuietTask):
        task_registry.register(task)
    sync_task_rows()
    yield
    assert alerts.flush(15), "alerts still queued at the end of the test"
    for task in (FlakyTask, PickyTask, QuietTask):
        task_registry.unregister(task.name)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.close()


@pytest.fixture
def configured(settings: Any, receiver: Receiver, mailoutbox: list) -> Receiver:
    settings.ADMINS = ["ops@example.com"]
    settings.SCHEDULER = {
        **settings.SCHEDULER,
        "ALERT_AFTER_FAILURES": 3,
        "ALERT_WEBHOOK_URL": receiver.url,
        "ALERT_WEBHOOK_HEADERS": {"Authorization": "Bearer hook-secret"},
        "ALERT_WEBHOOK_TIMEOUT": 2.0,
    }
    return receiver


def run(name: str, times: int = 1) -> None:
    runner = TaskRunner()
    for _ in range(times):
        runner.run_now(name)
    assert alerts.flush(15)


def test_one_alert_per_streak_and_one_recovery(configured: Receiver, mailoutbox: list) -> None:
    run("flaky", 2)
    assert mailoutbox == [] and configured.bodies == [], "two failures are below the threshold of three"

    run("flaky")
    assert len(mailoutbox) == 1 and len(configured.bodies) == 1
    mail = mailoutbox[0]
    assert mail.to == ["ops@example.com"]
    assert "task flaky is failing: 3 runs in a row failed" in mail.subject
    assert "RuntimeError: flaky is down" in mail.body  # the traceback travels with the alert
    hook = configured.bodies[0]
    assert hook["event"] == "task_failing" and hook["task"] == "flaky"
    assert hook["consecutive_failures"] == 3 and hook["alert_after_failures"] == 3
    assert hook["record"]["status"] == "failed" and "flaky is down" in hook["record"]["error"]
    assert configured.headers[0]["Authorization"] == "Bearer hook-secret"
    assert configured.headers[0]["Content-Type"] == "application/json"

    run("flaky", 3)
    assert len(mailoutbox) == 1 and len(configured.bodies) == 1, "no flood while the streak goes on"

    FlakyTask.fail = False
    run("flaky")
    assert len(mailoutbox) == 2 and len(configured.bodies) == 2
    assert "task flaky recovered after 6 failed run(s)" in mailoutbox[1].subject
    recovered = configured.bodies[1]
    assert recovered["event"] == "task_recovered" and recovered["consecutive_failures"] == 6
    assert recovered["record"]["status"] == "success"

    run("flaky", 2)
    assert len(mailoutbox) == 2 and len(configured.bodies) == 2, "one recovery notice, not one per success"

    # A new streak is a new alert.
    FlakyTask.fail = True
    run("flaky", 3)
    assert len(mailoutbox) == 3 and configured.bodies[2]["event"] == "task_failing"


def test_short_streak_then_success_sends_nothing(configured: Receiver, mailoutbox: list) -> None:
    run("flaky", 2)
    FlakyTask.fail = False
    run("flaky")
    FlakyTask.fail = True
    run("flaky", 2)
    assert mailoutbox == [] and configured.bodies == []


def test_threshold_of_one_alerts_on_the_first_failure_and_timeouts_count(
    configured: Receiver, settings: Any, mailoutbox: list
) -> None:
    settings.SCHEDULER = {**settings.SCHEDULER, "ALERT_AFTER_FAILURES": 1}
    run("hang")  # times out after its 1 s limit
    assert len(configured.bodies) == 1
    assert configured.bodies[0]["record"]["status"] == "timeout"
    assert "task hang is failing: run timeout" in mailoutbox[0].subject


def test_task_attribute_overrides_the_setting(configured: Receiver, mailoutbox: list) -> None:
    run("picky")
    assert configured.bodies == []
    run("picky")
    assert [b["task"] for b in configured.bodies] == ["picky"]
    assert configured.bodies[0]["alert_after_failures"] == 2
    run("quiet", 4)  # alert_after_failures = 0: never
    assert [b["task"] for b in configured.bodies] == ["picky"]


def test_skipped_runs_neither_extend_nor_end_a_streak(configured: Receiver, settings: Any) -> None:
    from scheduler_app.models import TaskState

    run("flaky", 2)
    # A second run while one holds the slot is recorded as skipped.
    TaskState.objects.filter(task_id="flaky").update(running_count=1)
    skipped = TaskRunner().run_now("flaky")
    assert skipped.status == "skipped"
    TaskState.objects.filter(task_id="flaky").update(running_count=0)
    assert alerts.flush(15) and configured.bodies == []
    run("flaky")
    assert [b["consecutive_failures"] for b in configured.bodies] == [3]


def test_the_runner_does_not_wait_for_a_slow_receiver(configured: Receiver, settings: Any) -> None:
    settings.SCHEDULER = {**settings.SCHEDULER, "ALERT_AFTER_FAILURES": 1, "ALERT_WEBHOOK_TIMEOUT": 30.0}
    configured.release.clear()  # the receiver holds every request until released
    started = time.monotonic()
    record = TaskRunner().run_now("flaky")
    elapsed = time.monotonic() - started
    assert record.status == "failed"
    assert configured.bodies == [], "the run returned while its alert was still being delivered"
    assert elapsed < 10
    configured.release.set()
    assert alerts.flush(15)
    assert len(configured.bodies) == 1


def test_receiver_down_is_logged_not_fatal_and_mail_still_goes(
    settings: Any, mailoutbox: list, caplog: pytest.LogCaptureFixture
) -> None:
    settings.ADMINS = ["ops@example.com"]
    # Nothing listens on this port: the connection is refused.
    settings.SCHEDULER = {**settings.SCHEDULER, "ALERT_WEBHOOK_URL": f"http://127.0.0.1:{free_port()}/hook"}
    with caplog.at_level(logging.WARNING, logger="scheduler_app.alerts"):
        record = TaskRunner().run_now("flaky")
        assert alerts.flush(15)
    assert record.status == "failed"
    assert len(mailoutbox) == 1, "the mail channel does not depend on the webhook"
    failures = [r for r in caplog.records if "alert delivery by webhook failed" in r.getMessage()]
    assert len(failures) == 1 and "task flaky is failing" in failures[0].getMessage()
    # The process goes on: the next runs are recorded and judged as usual.
    FlakyTask.fail = False
    assert TaskRunner().run_now("flaky").status == "success"
    assert alerts.flush(15)
    assert len(mailoutbox) == 2 and "recovered" in mailoutbox[1].subject


def test_receiver_error_status_is_logged(configured: Receiver, settings: Any, caplog: pytest.LogCaptureFixture) -> None:
    settings.SCHEDULER = {**settings.SCHEDULER, "ALERT_AFTER_FAILURES": 1}
    configured.status = 500
    with caplog.at_level(logging.WARNING, logger="scheduler_app.alerts"):
        run("flaky")
    assert len(configured.bodies) == 1
    assert any("webhook failed (HTTPError" in r.getMessage() for r in caplog.records)


def test_mail_server_down_is_logged_and_the_webhook_still_goes(
    configured: Receiver, settings: Any, caplog: pytest.LogCaptureFixture
) -> None:
    settings.SCHEDULER = {**settings.SCHEDULER, "ALERT_AFTER_FAILURES": 1}
    # An SMTP server that is not there: the connection is refused.
    smtp, port = "django.core.mail.backends.smtp.EmailBackend", free_port()
    if django.VERSION >= (6, 1):
        settings.MAILERS = {"default": {"BACKEND": smtp, "OPTIONS": {"host": "127.0.0.1", "port": port, "timeout": 2}}}
    else:
        settings.EMAIL_BACKEND, settings.EMAIL_HOST, settings.EMAIL_PORT = smtp, "127.0.0.1", port
        settings.EMAIL_TIMEOUT = 2
    with caplog.at_level(logging.WARNING, logger="scheduler_app.alerts"):
        run("flaky")
    assert len(configured.bodies) == 1
    assert any("alert delivery by mail failed" in r.getMessage() for r in caplog.records)


def test_nothing_configured_means_no_alert_work(settings: Any, mailoutbox: list, django_assert_num_queries) -> None:
    settings.ADMINS = []
    settings.SCHEDULER = {**settings.SCHEDULER, "ALERT_WEBHOOK_URL": ""}
    record = TaskRunner().run_now("flaky")
    # The receiver returns before any query when no channel is configured.
    with django_assert_num_queries(0):
        alerts.on_run_finished(sender=None, record=record)
    assert alerts.flush(5) and mailoutbox == []


@pytest.mark.process
def test_alerts_from_a_real_scheduler_process(processes, receiver: Receiver) -> None:
    """The scheduler process's receivers post to the webhook while it keeps scheduling."""
    scheduler = processes.scheduler(
        ["BoomTask", "TickTask"],
        SCHEDULER_ALERT_WEBHOOK_URL=receiver.url,
    )
    wait_for(lambda: receiver.bodies, timeout=30, message="an alert from the scheduler process")
    assert receiver.bodies[0]["event"] == "task_failing" and receiver.bodies[0]["task"] == "boom"
    from scheduler_app.models import TaskExecutionRecord

    wait_for(
        lambda: TaskExecutionRecord.objects.filter(task_id="boom", status="failed").count() >= 4,
        timeout=30,
        message="boom to keep failing",
    )
    assert scheduler.alive()
    assert [b["task"] for b in receiver.bodies] == ["boom"], "one alert for the whole streak"
    assert TaskExecutionRecord.objects.filter(task_id="tick", status="success").exists()


@pytest.mark.process
def test_a_stopping_scheduler_delivers_its_last_alert_then_exits_cleanly(processes, receiver: Receiver) -> None:
    receiver.release.clear()  # the receiver holds the alert's request
    # The request waits up to 30 s: the stop below must not outlast it on a slow machine.
    scheduler = processes.scheduler(
        ["BoomTask"], SCHEDULER_ALERT_WEBHOOK_URL=receiver.url, TEST_ALERT_WEBHOOK_TIMEOUT="30"
    )
    wait_for(lambda: receiver.arrived, timeout=30, message="the alert to reach the receiver")
    scheduler.send(signal.SIGTERM)
    wait_for(
        lambda: "INFO scheduler_app.scheduler scheduler stopped" in scheduler.output(),
        timeout=30,
        message="the scheduler loop to stop",
    )
    assert scheduler.alive(), "the process waits for the alert being delivered"
    receiver.release.set()
    assert scheduler.stop(timeout=20) == 0
    assert len(receiver.bodies) == 1 and receiver.bodies[0]["task"] == "boom"
    assert "exiting without waiting" not in scheduler.output()


@pytest.mark.parametrize(
    ("key", "value", "code"),
    [
        ("ALERT_AFTER_FAILURES", -1, "scheduler.E030"),
        ("ALERT_AFTER_FAILURES", "3", "scheduler.E030"),
        ("ALERT_WEBHOOK_URL", "file:///etc/passwd", "scheduler.E031"),
        ("ALERT_WEBHOOK_URL", "hooks.example.com/x", "scheduler.E031"),
        ("ALERT_WEBHOOK_HEADERS", {"X-Token": 5}, "scheduler.E032"),
        ("ALERT_WEBHOOK_TIMEOUT", 0, "scheduler.E033"),
        ("HEALTH_MAX_HEARTBEAT_AGE", "10", "scheduler.E033"),
        ("METRICS_TOKEN_ENV", 42, "scheduler.E034"),
    ],
)
def test_bad_operations_settings_fail_the_system_checks(settings: Any, key: str, value: Any, code: str) -> None:
    from django.core.management import call_command
    from django.core.management.base import SystemCheckError

    settings.SCHEDULER = {**settings.SCHEDULER, key: value}
    with pytest.raises(SystemCheckError, match=code):
        call_command("check")


def test_good_operations_settings_pass_the_system_checks(settings: Any) -> None:
    from django.core.management import call_command

    settings.SCHEDULER = {
        **settings.SCHEDULER,
        "ALERT_AFTER_FAILURES": 0,
        "ALERT_WEBHOOK_URL": "https://hooks.example.com/scheduler",
        "ALERT_WEBHOOK_HEADERS": {"Authorization": "Bearer x"},
        "HEALTH_MAX_HEARTBEAT_AGE": 30,
    }
    call_command("check")


def test_overlapping_runs_count_in_the_order_they_finished(configured: Receiver, settings: Any) -> None:
    """Two overlapping failures of a task that allows concurrent runs are one streak, alerted once."""
    settings.SCHEDULER = {**settings.SCHEDULER, "ALERT_AFTER_FAILURES": 1}
    began = timezone.now() - timedelta(seconds=10)
    first = TaskExecutionRecord.objects.create(task_id="flaky", trigger="manual", status="running", started_at=began)
    second = TaskExecutionRecord.objects.create(
        task_id="flaky", trigger="manual", status="failed", started_at=began, finished_at=began + timedelta(seconds=1)
    )
    # The later run ended first: it starts the streak.
    assert alerts.evaluate(second) is not None
    first.status, first.finished_at = "failed", began + timedelta(seconds=2)
    first.save()
    # The earlier run ended second, inside the streak: no second alert (by id order it would be first).
    assert alerts.evaluate(first) is None
    FlakyTask.fail = False
    recovered = TaskRunner().run_now("flaky")
    alert = alerts.evaluate(recovered)
    assert alert is not None and alert.event == alerts.RECOVERED and alert.streak == 2


def test_admins_as_name_address_pairs_get_the_mail(configured: Receiver, settings: Any, mailoutbox: list) -> None:
    """Django 5.2 projects list ADMINS as (name, address) pairs, Django 6 as addresses: both are mailed."""
    settings.ADMINS = [("Ops", "ops@example.com"), "oncall@example.com"]
    settings.SCHEDULER = {**settings.SCHEDULER, "ALERT_AFTER_FAILURES": 1}
    run("flaky")
    assert len(mailoutbox) == 1
    assert mailoutbox[0].to == ["ops@example.com", "oncall@example.com"]
    assert mailoutbox[0].subject.startswith(settings.EMAIL_SUBJECT_PREFIX + "task flaky is failing")


def test_mailers_alone_before_django_61_is_a_check_warning(settings: Any) -> None:
    """Only MAILERS set, on Django 5.2: EMAIL_BACKEND's defaults would send the alerts nowhere."""
    [warning] = alerts.mail_settings_warnings((5, 2, 8, "final", 0), {"MAILERS"})
    assert warning.id == "scheduler.W050" and "EMAIL_BACKEND" in warning.msg
    assert alerts.mail_settings_warnings((5, 2), {"MAILERS", "EMAIL_BACKEND"}) == []
    assert alerts.mail_settings_warnings((6, 1), {"MAILERS"}) == []
    # This project's settings configure the right one for the Django they run on.
    settings.ADMINS = ["ops@example.com"]
    assert alerts.channels().mail and alerts.check_mail_settings() == []
