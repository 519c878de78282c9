"""/scheduler/metrics: scraped after real runs (in this process and in a real scheduler process)."""

from __future__ import annotations

import threading
import urllib.error
import urllib.request
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from scheduler_app import metrics
from scheduler_app.models import TaskExecutionRecord
from scheduler_app.runner import TaskRunner
from scheduler_app.services import sync_task_rows
from tests.processes import wait_for
from tests.runs import run_fire

pytestmark = pytest.mark.django_db(transaction=True)

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@pytest.fixture(autouse=True)
def no_cursor_lag(monkeypatch: pytest.MonkeyPatch) -> None:
    # Records are counted once 2 s old (out-of-order commits on PostgreSQL); in-process tests need
    # no such margin. The real-process test below keeps the real lag.
    monkeypatch.setattr(metrics, "CURSOR_LAG_SECONDS", 0.0)
    sync_task_rows()


@pytest.fixture
def staff() -> Client:
    client = Client()
    client.force_login(User.objects.create_user("ops", password="pw-ops-123", is_staff=True))
    return client


def parse(text: str) -> Samples:
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def scrape(client: Client) -> Samples:
    response = client.get("/scheduler/metrics")
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain; version=")
    return parse(response.content.decode())


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_counters_and_duration_histogram_move_after_runs(staff: Client) -> None:
    before = scrape(staff)
    runner = TaskRunner()
    for _ in range(3):
        runner.run_now("tick")
    runner.run_now("boom")
    runner.run_now("hang")  # 1 s timeout
    after = scrape(staff)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("scheduler_runs_total", task="tick", status="success") == 3
    assert moved("scheduler_runs_total", task="boom", status="failed") == 1
    assert moved("scheduler_runs_total", task="hang", status="timeout") == 1
    assert moved("scheduler_run_duration_seconds_count", task="tick") == 3
    # tick returns at once: every run falls in the smallest bucket; hang's run took its 1 s timeout.
    assert moved("scheduler_run_duration_seconds_bucket", task="tick", le="0.5") == 3
    assert moved("scheduler_run_duration_seconds_bucket", task="hang", le="0.5") == 0
    assert moved("scheduler_run_duration_seconds_bucket", task="hang", le="2.5") == 1
    assert 0.9 <= moved("scheduler_run_duration_seconds_sum", task="hang") < 5
    assert moved("scheduler_run_duration_seconds_bucket", task="hang", le="+Inf") == 1
    # Manual runs have no fire time: no lateness.
    assert moved("scheduler_fire_lateness_seconds_count", task="tick") == 0

    # Gauges from TaskState / TaskConfig.
    assert value(after, "scheduler_task_last_success_timestamp_seconds", task="tick") == pytest.approx(
        timezone.now().timestamp(), abs=60
    )
    assert ("scheduler_task_last_success_timestamp_seconds", (("task", "boom"),)) not in after
    assert value(after, "scheduler_task_consecutive_failures", task="boom") >= 1
    assert value(after, "scheduler_task_enabled", task="tick") == 1
    assert value(after, "scheduler_task_enabled", task="long") == 0


def test_fire_lateness_histogram_of_scheduled_runs(staff: Client) -> None:
    before = scrape(staff)
    runner = TaskRunner()
    now = timezone.now()
    # Fires processed 0.3 s and 4 s after their time: started_at - scheduled_at is the lateness.
    run_fire(runner, "tick", now - timedelta(seconds=0.3))
    run_fire(runner, "tick", now - timedelta(seconds=4))
    after = scrape(staff)

    def moved(le: str) -> float:
        name = "scheduler_fire_lateness_seconds_bucket"
        return value(after, name, task="tick", le=le) - value(before, name, task="tick", le=le)

    # Each fire's lateness is what it was recorded with: 0.3 s and 4 s plus the time to claim and start
    # it, which a loaded machine can stretch past a bucket's bound.
    late = sorted(record.lateness_seconds for record in TaskExecutionRecord.objects.filter(task_id="tick"))
    assert len(late) == 2 and 0.3 <= late[0] < 4 <= late[1] < 10, late
    assert moved("0.25") == 0
    for le in ("0.5", "1.0", "2.5", "5.0", "10.0"):
        assert moved(le) == sum(lateness <= float(le) for lateness in late), (le, late)
    assert moved("+Inf") == 2
    lateness_sum = value(after, "scheduler_fire_lateness_seconds_sum", task="tick") - value(
        before, "scheduler_fire_lateness_seconds_sum", task="tick"
    )
    assert lateness_sum == pytest.approx(sum(late), abs=1e-3)


def test_the_queued_gauge_counts_runs_waiting_for_a_worker(staff: Client) -> None:
    from tests.runs import queued_run

    sync_task_rows()
    before = scrape(staff)
    assert before[("scheduler_runs_queued", (("task", "tick"),))] == 0  # present, at zero
    queued_run("tick")
    samples = scrape(staff)
    assert value(samples, "scheduler_runs_queued", task="tick") == 1
    # Neither pending (it has a scheduler's claim) nor running yet.
    assert value(samples, "scheduler_runs_pending", task="tick") == 0
    assert value(samples, "scheduler_runs_in_progress", task="tick") == 0


def test_running_and_pending_gauges(staff: Client) -> None:
    from scheduler_app.services import request_run

    done = threading.Event()
    thread = threading.Thread(target=lambda: (TaskRunner().run_now("slow"), done.set()), daemon=True)
    thread.start()
    try:
        wait_for(
            lambda: value(scrape(staff), "scheduler_runs_in_progress", task="slow") == 1,
            timeout=10,
            message="the slow run to show as in progress",
        )
        request_run("tick")
        assert value(scrape(staff), "scheduler_runs_pending", task="tick") == 1
    finally:
        thread.join(timeout=20)
    assert done.is_set()
    samples = scrape(staff)
    assert value(samples, "scheduler_runs_in_progress", task="slow") == 0
    assert value(samples, "scheduler_runs_total", task="slow", status="success") >= 1


def test_a_run_open_at_one_scrape_is_counted_when_it_finishes(staff: Client) -> None:
    """The cursor passes a running record; it is counted later, exactly once."""
    thread = threading.Thread(target=lambda: TaskRunner().run_now("slow"), daemon=True)
    thread.start()
    wait_for(
        lambda: TaskExecutionRecord.objects.filter(task_id="slow", status="running").exists(),
        message="the slow run to start",
    )
    TaskRunner().run_now("tick")  # a later id that finishes first
    during = scrape(staff)
    thread.join(timeout=20)
    after = scrape(staff)
    again = scrape(staff)
    key = {"task": "slow", "status": "success"}
    assert value(after, "scheduler_runs_total", **key) - value(during, "scheduler_runs_total", **key) == 1
    assert value(again, "scheduler_runs_total", **key) == value(after, "scheduler_runs_total", **key)


def test_a_run_queued_on_a_backend_is_counted_once_when_a_worker_finished_it(staff: Client) -> None:
    """A run handed to a fleet (README: Scaling out) is open while `queued`: not counted as ended."""
    from scheduler_app.ledger import Fire, Ledger, RunOutcome
    from scheduler_app.tasks.base import TaskStatus

    ledger = Ledger()
    record = ledger.record_fires([Fire(ledger.config("tick"), timezone.now().replace(microsecond=0))])[0]
    assert record is not None and ledger.hand_off(record.pk, "fleet")
    queued = scrape(staff)
    assert value(queued, "scheduler_runs_total", task="tick", status="queued") == 0
    claimed = Ledger(worker_label="worker:1").claim_handed_off(record.pk)
    assert claimed is not None
    now = timezone.now()
    ledger.finish([(claimed[1], RunOutcome(record.pk, "tick", TaskStatus.SUCCESS, now, now, 0.01, "", "", {}))])
    after, again = scrape(staff), scrape(staff)
    key = {"task": "tick", "status": "success"}
    assert value(after, "scheduler_runs_total", **key) - value(queued, "scheduler_runs_total", **key) == 1
    assert value(again, "scheduler_runs_total", **key) == value(after, "scheduler_runs_total", **key)


def test_pruning_history_never_makes_counters_go_down(staff: Client) -> None:
    runner = TaskRunner()
    for _ in range(4):
        runner.run_now("tick")
    before = scrape(staff)
    TaskExecutionRecord.objects.filter(task_id="tick").delete()
    after = scrape(staff)
    for name in ("scheduler_runs_total", "scheduler_run_duration_seconds_count"):
        labels = {"task": "tick", "status": "success"} if name == "scheduler_runs_total" else {"task": "tick"}
        assert value(after, name, **labels) == value(before, name, **labels) >= 4


def test_scrape_cost_does_not_grow_with_tasks_or_history(staff: Client) -> None:
    runner = TaskRunner()
    runner.run_now("tick")
    scrape(staff)  # the first scrape of a process reads the whole history once
    with CaptureQueriesContext(connection) as few:
        scrape(staff)
    # Many more records and runs of several tasks: still the same number of queries.
    now = timezone.now()
    TaskExecutionRecord.objects.bulk_create(
        [
            TaskExecutionRecord(
                task_id=name,
                trigger="scheduled",
                status="success",
                scheduled_at=now - timedelta(seconds=i + 1),
                started_at=now - timedelta(seconds=i),
                finished_at=now,
                duration_seconds=0.01 * i,
            )
            for i in range(300)
            for name in ("tick", "slow", "boom")
        ]
    )
    with CaptureQueriesContext(connection) as many:
        samples = scrape(staff)
    # Session and user lookups of the request come on top of the collector's own queries.
    assert len(many) == len(few) <= 12
    assert value(samples, "scheduler_fire_lateness_seconds_count", task="boom") >= 300


def test_processes_alive_and_active(staff: Client) -> None:
    from scheduler_app.models import SchedulerProcess

    assert value(scrape(staff), "scheduler_up") == 0
    from scheduler_app.coordination import try_acquire_lease

    leader = SchedulerProcess.objects.create(kind="scheduler", role="active", host="a", pid=1)
    assert value(scrape(staff), "scheduler_up") == 0  # its role is its own word; the lease says who leads
    assert try_acquire_lease(leader.pk)
    SchedulerProcess.objects.create(kind="scheduler", role="standby", host="b", pid=2)
    SchedulerProcess.objects.create(
        kind="scheduler", role="active", host="c", pid=3, last_heartbeat=timezone.now() - timedelta(hours=1)
    )
    samples = scrape(staff)
    assert value(samples, "scheduler_up") == 1
    assert value(samples, "scheduler_processes_alive", kind="scheduler", role="active") == 1
    assert value(samples, "scheduler_processes_alive", kind="scheduler", role="standby") == 1
    assert value(samples, "scheduler_processes_alive", kind="command", role="none") == 0
    ages = {labels: v for (name, labels), v in samples.items() if name == "scheduler_process_heartbeat_age_seconds"}
    assert set(ages) == {(("process", "a:1"), ("role", "active")), (("process", "b:2"), ("role", "standby"))}


# -- access ----------------------------------------------------------------------------------------


def test_anonymous_and_non_staff_are_refused(client: Client) -> None:
    response = client.get("/scheduler/metrics")
    assert response.status_code == 401 and response["WWW-Authenticate"].startswith("Bearer")
    assert response.json()["code"] == "not_authenticated"
    client.force_login(User.objects.create_user("plain", password="pw-plain-123"))
    response = client.get("/scheduler/metrics/")
    assert response.status_code == 403 and response.json()["code"] == "forbidden"
    assert client.post("/scheduler/metrics").status_code == 405


def test_basic_auth_bearer_token_and_anonymous_setting(
    client: Client, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import base64

    User.objects.create_user("ops", password="pw-ops-123", is_staff=True)
    good = base64.b64encode(b"ops:pw-ops-123").decode()
    bad = base64.b64encode(b"ops:wrong").decode()
    assert client.get("/scheduler/metrics", HTTP_AUTHORIZATION=f"Basic {good}").status_code == 200
    assert client.get("/scheduler/metrics", HTTP_AUTHORIZATION=f"Basic {bad}").status_code == 401
    assert client.get("/scheduler/metrics", HTTP_AUTHORIZATION="Basic !!!").status_code == 401

    # No token configured: no bearer token is accepted.
    monkeypatch.delenv("SCHEDULER_METRICS_TOKEN", raising=False)
    assert client.get("/scheduler/metrics", HTTP_AUTHORIZATION="Bearer ").status_code == 401
    monkeypatch.setenv("SCHEDULER_METRICS_TOKEN", "s3cret-token")
    assert client.get("/scheduler/metrics", HTTP_AUTHORIZATION="Bearer s3cret-token").status_code == 200
    assert client.get("/scheduler/metrics", HTTP_AUTHORIZATION="Bearer s3cret-tokeN").status_code == 401

    settings.SCHEDULER = {**settings.SCHEDULER, "METRICS_ALLOW_ANONYMOUS": True}
    response = client.get("/scheduler/metrics")
    assert response.status_code == 200 and b"\nscheduler_up 0.0\n" in response.content


@pytest.mark.process
def test_metrics_of_a_real_scheduler_scraped_from_a_real_web_process(processes) -> None:
    """The web process runs no task: what it serves comes from what the scheduler process did."""
    processes.scheduler(["TickTask", "BoomTask"])
    web = processes.web(tasks=["TickTask", "BoomTask"], SCHEDULER_METRICS_TOKEN="web-token")
    url = f"http://127.0.0.1:{web.port}/scheduler/metrics"

    def fetch(token: str = "web-token") -> Samples:
        request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.headers["Content-Type"].startswith("text/plain")
            return parse(response.read().decode())

    with pytest.raises(urllib.error.HTTPError) as refused:
        fetch("not-the-token")
    assert refused.value.code == 401

    first = fetch()
    assert value(first, "scheduler_up") == 1
    assert value(first, "scheduler_processes_alive", kind="scheduler", role="active") == 1

    def grown() -> Samples | None:
        samples = fetch()
        tick = value(samples, "scheduler_runs_total", task="tick", status="success")
        boom = value(samples, "scheduler_runs_total", task="boom", status="failed")
        fired = value(samples, "scheduler_fire_lateness_seconds_count", task="tick")
        return (
            samples
            if tick >= value(first, "scheduler_runs_total", task="tick", status="success") + 3
            and (boom >= 2 and fired >= 3)
            else None
        )

    samples = wait_for(grown, timeout=40, interval=0.5, message="counters of the scheduler's runs to move")
    assert value(samples, "scheduler_run_duration_seconds_count", task="tick") >= 3
    assert value(samples, "scheduler_run_duration_seconds_bucket", task="tick", le="+Inf") >= 3
    # Each tick fire starts well within a few seconds of its time on this machine.
    assert value(samples, "scheduler_fire_lateness_seconds_bucket", task="tick", le="5.0") >= 3
    assert value(samples, "scheduler_task_last_success_timestamp_seconds", task="tick") > 0
    assert value(samples, "scheduler_task_consecutive_failures", task="boom") >= 2
