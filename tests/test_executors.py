"""The fleet (scheduler_app/executors): runs handed to django-tasks-db, run by real `db_worker` processes.

On the PostgreSQL server the suite starts (marker `postgres`), with django.tasks (marker `fleet`:
Django >= 6.0 and django-tasks-db; the Django 5.2 pass leaves these out, see scripts/test.sh).
"""

from __future__ import annotations

import itertools
import shutil
import socket
import subprocess
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from django.db import connection
from django.utils import timezone

from scheduler_app import services
from scheduler_app.abc import Submission
from scheduler_app.executors.fleet import FleetExecutor, HandedOff
from scheduler_app.ledger import BUSY_MESSAGE, Fire
from scheduler_app.models import SchedulerProcess, TaskConfig, TaskExecutionRecord, TaskState
from scheduler_app.registry import task_registry
from scheduler_app.runner import TaskRunner
from scheduler_app.task_rows import sync_task_rows
from scheduler_app.tasks.base import TaskStatus
from tests.processes import ManagedProcess, ProcessFactory, free_port, wait_for
from tests.tasks import FleetBoomTask, FleetHangTask, FleetLongTask, FleetSlowTask, FleetTickTask

pytestmark = [pytest.mark.postgres, pytest.mark.fleet, pytest.mark.process]

FLEET_TASKS = (FleetTickTask, FleetSlowTask, FleetHangTask, FleetLongTask, FleetBoomTask)
TASK_PATHS = [f"tests.tasks.{task.__name__}" for task in FLEET_TASKS]
HOST = socket.gethostname()


@pytest.fixture(autouse=True)
def _postgres_and_fleet_tasks() -> Iterator[None]:
    if connection.vendor != "postgresql":
        pytest.skip(
            "db_worker on PostgreSQL: python -m tests.pgserver run -- pytest -m postgres tests/test_executors.py"
        )
    for task in FLEET_TASKS:
        task_registry.register(task)
    yield
    for task in FLEET_TASKS:
        task_registry.unregister(task.name)


def start_worker(processes: ProcessFactory, **extra: str) -> ManagedProcess:
    """A django-tasks-db worker of the "fleet" backend, looking for work every 100 ms."""
    args = ["manage.py", "db_worker", "--backend", "fleet", "--interval", "0.1", "--no-startup-delay", "--no-reload"]
    return processes.start("db_worker", args, processes.env(TASK_PATHS, **extra))


def label(process: ManagedProcess) -> str:
    return f"{HOST}:{process.pid}"


def hand_off(name: str, at: timedelta = timedelta(0)) -> TaskExecutionRecord:
    """A fire of ``name`` recorded and handed to the fleet by the runner, as the scheduler does it."""
    sync_task_rows()
    config = TaskConfig.objects.get(name=name)
    record = TaskRunner().launch_fires([Fire(config, timezone.now().replace(microsecond=0) + at)])[0]
    assert record is not None
    record.refresh_from_db()
    return record


def ended(record_id: int) -> TaskExecutionRecord | None:
    record = TaskExecutionRecord.objects.get(pk=record_id)
    return record if record.status not in (TaskStatus.QUEUED, TaskStatus.RUNNING, TaskStatus.PENDING) else None


def test_a_scheduled_fire_runs_once_on_a_worker_and_its_record_names_the_worker(processes: ProcessFactory) -> None:
    workers = [start_worker(processes) for _ in range(2)]
    scheduler = processes.scheduler(["FleetTickTask"])

    def three_done() -> list[TaskExecutionRecord]:
        done = list(TaskExecutionRecord.objects.filter(task_id="fleet_tick", status=TaskStatus.SUCCESS))
        return done if len(done) >= 3 else []

    done = wait_for(three_done, timeout=60, message="three fires of fleet_tick run by the workers")
    labels = {label(worker): worker.pid for worker in workers}
    for record in done:
        assert record.worker_label in labels, (record.worker_label, labels)
        assert record.worker_label != label(scheduler)
        assert record.data["pid"] == labels[record.worker_label]
        assert record.worker.kind == SchedulerProcess.Kind.WORKER
    # One record per fire.
    fires = list(TaskExecutionRecord.objects.filter(task_id="fleet_tick").values_list("scheduled_at", flat=True))
    assert len(fires) == len(set(fires))


def test_a_duplicate_delivery_runs_the_task_once(processes: ProcessFactory, tmp_path: Path) -> None:
    from django_tasks_db.models import DBTaskResult

    from scheduler_app.executors.worker import run_record

    marker = tmp_path / "runs.txt"
    workers = [start_worker(processes, TEST_MARKER_FILE=str(marker)) for _ in range(2)]
    record = hand_off("fleet_tick")
    assert record.status == TaskStatus.QUEUED
    # The backend delivers the run twice more (as after a worker restart or a backend's own retry).
    for _ in range(2):
        run_record.using(backend="fleet").enqueue(record.pk)

    def all_delivered() -> list[str]:
        results = DBTaskResult.objects.all()
        finished = [r for r in results if r.status == "SUCCESSFUL"]
        return [r.return_value for r in finished] if len(finished) == 3 else []

    returns = wait_for(all_delivered, timeout=60, message="three deliveries of one run handled")
    assert sorted(returns) == ["not run: no longer queued", "not run: no longer queued", "success"]
    assert len(marker.read_text().splitlines()) == 1
    record.refresh_from_db()
    assert record.status == TaskStatus.SUCCESS
    assert record.worker_label in {label(worker) for worker in workers}


def test_a_manual_run_and_its_retry_go_to_the_fleet(processes: ProcessFactory) -> None:
    worker = start_worker(processes)
    sync_task_rows()
    services.set_options("fleet_boom", {"max_retries": 1, "retry_backoff": "fixed", "retry_delay_seconds": 1})
    processes.scheduler(["FleetBoomTask"])
    manual = services.request_run("fleet_boom", origin="api")

    def both_failed() -> list[TaskExecutionRecord]:
        runs = list(TaskExecutionRecord.objects.filter(task_id="fleet_boom", status=TaskStatus.FAILED).order_by("id"))
        return runs if len(runs) == 2 else []

    first, retry = wait_for(both_failed, timeout=60, message="the manual run and its retry to fail on the worker")
    assert first.pk == manual.pk and (first.trigger, first.attempt) == ("manual", 1)
    assert (retry.trigger, retry.attempt, retry.retry_of_id) == ("retry", 2, manual.pk)
    assert first.worker_label == retry.worker_label == label(worker)
    assert "ValueError: boom" in first.error


def test_a_fire_buffer_one_kept_behind_a_fleet_run_runs_next_on_the_same_worker(processes: ProcessFactory) -> None:
    sync_task_rows()
    services.set_options("fleet_slow", {"overlap": "buffer_one"})
    first = hand_off("fleet_slow")
    second = hand_off("fleet_slow", at=timedelta(seconds=1))
    assert (first.status, second.status) == (TaskStatus.QUEUED, TaskStatus.PENDING)
    assert TaskState.objects.get(task_id="fleet_slow").buffered_record_id == second.pk
    worker = start_worker(processes)
    second = wait_for(lambda: ended(second.pk), timeout=60, message="the buffered fire to run")
    first = TaskExecutionRecord.objects.get(pk=first.pk)
    assert (first.status, second.status) == (TaskStatus.SUCCESS, TaskStatus.SUCCESS)
    assert first.worker_label == second.worker_label == label(worker)
    assert first.finished_at <= second.started_at


def test_the_timeout_is_enforced_on_the_worker(processes: ProcessFactory) -> None:
    worker = start_worker(processes)
    record = hand_off("fleet_hang")
    record = wait_for(lambda: ended(record.pk), timeout=60, message="the hung run to end")
    assert record.status == TaskStatus.TIMEOUT
    assert record.message == "timed out after 1s"
    assert record.worker_label == label(worker)
    # The worker goes on: the hung code's thread is abandoned, the next run gets a fresh one.
    tick = hand_off("fleet_tick")
    tick = wait_for(lambda: ended(tick.pk), timeout=60, message="the next run on the same worker")
    assert (tick.status, tick.worker_label) == (TaskStatus.SUCCESS, label(worker))


def test_allow_concurrent_false_holds_across_workers(processes: ProcessFactory) -> None:
    for _ in range(3):
        start_worker(processes)
    processes.scheduler(["FleetSlowTask"])

    def runs() -> list[TaskExecutionRecord]:
        done = list(TaskExecutionRecord.objects.filter(task_id="fleet_slow", status=TaskStatus.SUCCESS))
        skipped = TaskExecutionRecord.objects.filter(task_id="fleet_slow", status=TaskStatus.SKIPPED).exists()
        return done if len(done) >= 3 and skipped else []

    done = sorted(wait_for(runs, timeout=90, message="three runs and a skipped fire"), key=lambda r: r.started_at)
    for earlier, later in itertools.pairwise(done):
        assert earlier.finished_at <= later.started_at, (earlier.pk, later.pk)
    skipped = TaskExecutionRecord.objects.filter(task_id="fleet_slow", status=TaskStatus.SKIPPED).first()
    assert skipped is not None and skipped.message == BUSY_MESSAGE


def test_a_worker_killed_mid_run_leaves_the_run_interrupted_and_the_task_free(
    processes: ProcessFactory, tmp_path: Path
) -> None:
    marker = tmp_path / "running"
    worker = start_worker(processes, TEST_MARKER_FILE=str(marker), TEST_LONG_TASK_SECONDS="600")
    processes.scheduler(["FleetLongTask"])  # its leader reaps dead processes
    record = hand_off("fleet_long")
    wait_for(marker.exists, timeout=60, message="the long run to start on the worker")
    record.refresh_from_db()
    assert (record.status, record.worker_label) == (TaskStatus.RUNNING, label(worker))
    worker.kill()
    # README, Scaling out: within LEASE_SECONDS (3 s here) plus a reaper round.
    record = wait_for(lambda: ended(record.pk), timeout=30, message="the dead worker's run to be reaped")
    assert record.status == TaskStatus.INTERRUPTED
    assert "died" in record.error
    # The task's slot is free: its next run runs, on another worker.
    second = start_worker(processes, TEST_LONG_TASK_SECONDS="0.1")
    again = hand_off("fleet_long", at=timedelta(seconds=1))
    again = wait_for(lambda: ended(again.pk), timeout=60, message="the next run of the task")
    assert (again.status, again.worker_label) == (TaskStatus.SUCCESS, label(second))


def test_a_run_no_worker_takes_is_recorded_missed_and_never_runs_later(
    processes: ProcessFactory, tmp_path: Path
) -> None:
    from django_tasks_db.models import DBTaskResult

    processes.scheduler(["FleetLongTask"], TEST_FLEET_QUEUE_MAX_WAIT="1")  # no worker up
    record = hand_off("fleet_long")
    record = wait_for(lambda: ended(record.pk), timeout=30, message="the queued run to be given up")
    assert record.status == TaskStatus.MISSED
    assert record.message.startswith("missed: queued on backend 'fleet' for ")
    assert record.message.endswith("s and no worker took it (SCHEDULER['FLEET_QUEUE_MAX_WAIT'] is 1s)")
    assert TaskState.objects.get(task_id="fleet_long").running_count == 0
    # A worker that comes up later gets the stale delivery and runs nothing.
    marker = tmp_path / "running"
    start_worker(processes, TEST_MARKER_FILE=str(marker))
    result = wait_for(
        lambda: DBTaskResult.objects.filter(status="SUCCESSFUL").first(), timeout=60, message="the stale delivery"
    )
    assert result.return_value == "not run: no longer queued"
    assert not marker.exists()


def test_a_run_the_backend_refuses_is_recorded_failed_and_frees_the_task(transactional_db: None) -> None:
    FleetTickTask.executor = "nowhere"  # what the system check refuses, should it get past it
    try:
        record = hand_off("fleet_tick")
    finally:
        FleetTickTask.executor = "fleet"
    assert record.status == TaskStatus.FAILED
    assert record.message == "could not hand the run to its backend"
    assert "nowhere" in record.error
    assert TaskState.objects.get(task_id="fleet_tick").running_count == 0


# -- the second engine: RQ workers over a real redis-server ------------------------------------------


@pytest.fixture
def redis_url(tmp_path: Path, settings: object) -> Iterator[str]:
    """A throw-away redis-server (Debian's `redis-server` package; `make test` installs it)."""
    binary = shutil.which("redis-server")
    assert binary, "redis-server is missing: apt-get install redis-server (scripts/test.sh does it as root)"
    port = free_port()
    server = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(tmp_path),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    url = f"redis://127.0.0.1:{port}/0"
    try:
        import redis

        wait_for(lambda: _pings(redis.Redis.from_url(url)), timeout=20, message="redis-server to answer")
        settings.RQ_QUEUES = {"default": {"URL": url}}  # type: ignore[attr-defined]
        yield url
    finally:
        server.terminate()
        server.wait(timeout=10)


def _pings(client: object) -> bool:
    try:
        return bool(client.ping())  # type: ignore[attr-defined]
    except Exception:
        return False


def start_rq_worker(processes: ProcessFactory, redis_url: str, **extra: str) -> ManagedProcess:
    """An RQ worker that runs jobs in its own process (SimpleWorker: the process whose heartbeat we keep)."""
    args = [
        "manage.py",
        "rqworker",
        "default",
        "--worker-class",
        "rq.worker.SimpleWorker",
        "--job-class",
        "django_tasks_rq.backend.Job",
    ]
    return processes.start("rqworker", args, processes.env(TASK_PATHS, TEST_REDIS_URL=redis_url, **extra))


def test_on_rq_a_fire_runs_once_on_a_worker_even_when_delivered_twice(
    processes: ProcessFactory, redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from scheduler_app.executors.worker import run_record

    marker = tmp_path / "runs.txt"
    workers = [start_rq_worker(processes, redis_url, TEST_MARKER_FILE=str(marker)) for _ in range(2)]
    deliveries: list[str] = []
    submit = FleetExecutor.submit

    def noting_the_delivery(self: FleetExecutor, run: Submission, on_settled: object = None) -> HandedOff:
        handed = submit(self, run)
        deliveries.append(handed.result_id)
        return handed

    monkeypatch.setattr(FleetExecutor, "submit", noting_the_delivery)
    FleetTickTask.executor = "rq"
    try:
        record = hand_off("fleet_tick")
    finally:
        FleetTickTask.executor = "fleet"
    assert record.status == TaskStatus.QUEUED
    deliveries.append(run_record.using(backend="rq").enqueue(record.pk).id)
    record = wait_for(lambda: ended(record.pk), timeout=60, message="the run on an RQ worker")
    assert record.status == TaskStatus.SUCCESS
    assert record.worker_label in {label(worker) for worker in workers}
    assert record.data["pid"] in {worker.pid for worker in workers}

    def handled(delivery: str) -> str | None:
        result = run_record.using(backend="rq").get_result(delivery)
        return result.return_value if result.status == "SUCCESSFUL" else None

    # Two workers take the two deliveries at once: either may win the claim, the other runs nothing.
    answers = [wait_for(lambda d=d: handled(d), timeout=60, message="both deliveries handled") for d in deliveries]
    assert sorted(answers) == ["not run: no longer queued", "success"]
    assert len(marker.read_text().splitlines()) == 1


def test_on_rq_the_timeout_is_enforced_on_the_worker(processes: ProcessFactory, redis_url: str) -> None:
    worker = start_rq_worker(processes, redis_url)
    FleetHangTask.executor = "rq"
    try:
        record = hand_off("fleet_hang")
    finally:
        FleetHangTask.executor = "fleet"
    record = wait_for(lambda: ended(record.pk), timeout=60, message="the hung run to end")
    assert (record.status, record.message, record.worker_label) == (
        TaskStatus.TIMEOUT,
        "timed out after 1s",
        label(worker),
    )


def test_on_rq_a_worker_killed_mid_run_leaves_the_run_interrupted(
    processes: ProcessFactory, redis_url: str, tmp_path: Path
) -> None:
    marker = tmp_path / "running"
    worker = start_rq_worker(processes, redis_url, TEST_MARKER_FILE=str(marker), TEST_LONG_TASK_SECONDS="600")
    processes.scheduler(["FleetLongTask"])  # its leader reaps dead processes
    FleetLongTask.executor = "rq"
    try:
        record = hand_off("fleet_long")
    finally:
        FleetLongTask.executor = "fleet"
    wait_for(marker.exists, timeout=60, message="the long run to start on the RQ worker")
    worker.kill()
    record = wait_for(lambda: ended(record.pk), timeout=30, message="the dead worker's run to be reaped")
    assert (record.status, record.worker_label) == (TaskStatus.INTERRUPTED, label(worker))
    assert TaskState.objects.get(task_id="fleet_long").running_count == 0
