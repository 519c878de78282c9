"""The real ``runscheduler`` process against a real database: fires, rules, restarts and crashes."""

from __future__ import annotations

import signal
import time
from datetime import timedelta
from itertools import pairwise

import pytest
from django.utils import timezone
from django_apscheduler.models import DjangoJob

from scheduler_app import services
from scheduler_app.models import SchedulerProcess, TaskExecutionRecord, TaskState
from tests.processes import wait_for

pytestmark = [pytest.mark.process]


def records(task: str, **filters: object) -> list[TaskExecutionRecord]:
    return list(TaskExecutionRecord.objects.filter(task_id=task, **filters).order_by("id"))


def count(task: str, **filters: object) -> int:
    return TaskExecutionRecord.objects.filter(task_id=task, **filters).count()


def test_interval_task_fires_on_time_and_sigterm_exits_zero(processes) -> None:
    scheduler = processes.scheduler(["TickTask"])
    wait_for(lambda: count("tick", status="success") >= 3, timeout=10, message="3 tick runs")
    runs = records("tick", status="success")
    for run in runs:
        assert run.trigger == "scheduled" and run.worker_label.endswith(f":{scheduler.pid}")
    # On time: never early, typically within milliseconds; a loaded machine may stall one fire (the
    # first, in a process just started), so the bound on the latest is looser than on the median.
    late = sorted(run.lateness_seconds for run in runs)
    assert late[0] >= 0 and late[len(late) // 2] < 0.25 and late[-1] < 1.0, late
    gaps = [(b.scheduled_at - a.scheduled_at).total_seconds() for a, b in pairwise(runs)]
    assert all(abs(gap - 1.0) < 1e-3 for gap in gaps), gaps
    state = TaskState.objects.get(task_id="tick")
    assert state.run_count >= 3 and state.last_result == "success" and state.next_run_at is not None
    assert scheduler.stop(signal.SIGTERM) == 0
    assert not SchedulerProcess.objects.filter(pid=scheduler.pid).exists()
    assert "scheduler stopped" in scheduler.output()
    # Nothing was left in task code: the process ends the ordinary way, not by os._exit.
    assert "exiting without waiting" not in scheduler.output()


def test_no_overlap_and_dropped_fires_are_recorded_as_skipped(processes) -> None:
    processes.scheduler(["SlowTask"])
    wait_for(lambda: count("slow", status="success") >= 2, timeout=15, message="2 slow runs")
    runs = records("slow", status="success")
    for earlier, later in pairwise(runs):
        assert later.started_at >= earlier.finished_at, "two runs of a non-concurrent task overlapped"
    skipped = records("slow", status="skipped")
    assert skipped, "fires during a run must be recorded as skipped"
    assert all("previous run is still running" in r.message and r.scheduled_at for r in skipped)


def test_failing_and_hanging_tasks_are_recorded_and_the_scheduler_keeps_going(processes) -> None:
    scheduler = processes.scheduler(["TickTask", "BoomTask", "HangTask", "AsyncHangTask"])
    wait_for(
        lambda: (
            count("boom", status="failed") >= 2
            and count("hang", status="timeout") >= 2
            and count("async_hang", status="timeout") >= 2
        ),
        timeout=15,
        message="failures and timeouts",
    )
    failure = records("boom", status="failed")[0]
    assert "ValueError: boom" in failure.error and "Traceback" in failure.error
    assert TaskState.objects.get(task_id="hang").fail_count >= 2
    ticks = count("tick", status="success")
    wait_for(lambda: count("tick", status="success") >= ticks + 2, timeout=5, message="ticks to go on")
    assert scheduler.alive()


def test_changes_made_by_another_process_apply_within_two_seconds(processes) -> None:
    processes.scheduler(["TickTask", "CronTask"])
    wait_for(lambda: count("tick") >= 1, timeout=10, message="a first tick")

    services.disable_task("tick", reason="maintenance")
    changed = time.monotonic()
    wait_for(lambda: not DjangoJob.objects.filter(id="tick").exists(), timeout=2, message="the tick job to go")
    assert time.monotonic() - changed < 2
    assert TaskState.objects.get(task_id="tick").next_run_at is None
    # A fire handed over just before the job went may still be recorded: only later fire times count.
    gone_at = timezone.now()
    time.sleep(1.5)  # an absence can only be observed over a window
    assert not TaskExecutionRecord.objects.filter(task_id="tick", scheduled_at__gt=gone_at).exists(), (
        "a disabled task fired"
    )

    services.enable_task("tick")
    enabled = time.monotonic()
    wait_for(lambda: DjangoJob.objects.filter(id="tick").exists(), timeout=2, message="the tick job back")
    assert time.monotonic() - enabled < 2
    wait_for(
        lambda: TaskExecutionRecord.objects.filter(task_id="tick", scheduled_at__gt=gone_at).exists(),
        timeout=10,
        message="fires to resume after enable",
    )

    services.set_schedule("tick", schedule_type="interval", interval_seconds=2)
    wait_for(
        lambda: (
            DjangoJob.objects.filter(id="tick").exists()
            and "interval|2" in str(DjangoJob.objects.get(id="tick").job_state)
        ),
        timeout=2,
        message="the new interval",
    )
    # Fires of the old interval handed over before the change may still be recorded after it.
    replaced_at = timezone.now()
    wait_for(
        lambda: count("tick", scheduled_at__gt=replaced_at) >= 2, timeout=8, message="two fires on the new interval"
    )
    first_two = records("tick", scheduled_at__gt=replaced_at)[:2]
    assert first_two[1].scheduled_at - first_two[0].scheduled_at == timedelta(seconds=2)

    queued = services.request_run("nightly", origin="api")
    wait_for(lambda: TaskExecutionRecord.objects.get(pk=queued.pk).status == "success", timeout=3, message="manual run")
    done = TaskExecutionRecord.objects.get(pk=queued.pk)
    assert done.trigger == "manual" and done.scheduled_at is None and done.message == "nightly done"


def test_restart_keeps_counts_and_never_duplicates_jobs(processes) -> None:
    first = processes.scheduler(["TickTask", "CronTask"])
    wait_for(lambda: TaskState.objects.get(task_id="tick").run_count >= 2, timeout=10, message="2 runs")
    nightly_next = TaskState.objects.get(task_id="nightly").next_run_at
    assert first.stop() == 0
    before = TaskState.objects.get(task_id="tick").run_count
    assert sorted(DjangoJob.objects.values_list("id", flat=True)) == ["nightly", "tick"]

    processes.scheduler(["TickTask", "CronTask"])
    wait_for(lambda: TaskState.objects.get(task_id="tick").run_count >= before + 2, timeout=10, message="more runs")
    assert sorted(DjangoJob.objects.values_list("id", flat=True)) == ["nightly", "tick"]
    # The cron job was kept as it was, not re-created.
    assert TaskState.objects.get(task_id="nightly").next_run_at == nightly_next
    fires = list(TaskExecutionRecord.objects.filter(task_id="tick").values_list("scheduled_at", flat=True))
    assert len(fires) == len(set(fires)), "a fire ran twice"


def test_kill_9_mid_run_leaves_no_running_record_after_restart(processes) -> None:
    doomed = processes.scheduler(["LongTask", "TickTask"])
    queued = services.request_run("long", origin="api")
    wait_for(lambda: TaskExecutionRecord.objects.get(pk=queued.pk).status == "running", timeout=5, message="run")
    doomed.kill()
    assert TaskExecutionRecord.objects.get(pk=queued.pk).status == "running"

    processes.scheduler(["LongTask", "TickTask"])
    wait_for(
        lambda: TaskExecutionRecord.objects.get(pk=queued.pk).status == "interrupted", timeout=5, message="reaping"
    )
    assert not TaskExecutionRecord.objects.filter(status="running", task_id="long").exists()
    state = TaskState.objects.get(task_id="long")
    assert state.running_count == 0 and state.last_result == "interrupted"
    # The task is free again: a new manual run starts.
    again = services.request_run("long", origin="api")
    wait_for(lambda: TaskExecutionRecord.objects.get(pk=again.pk).status == "running", timeout=5, message="new run")


def test_sigterm_lets_short_runs_finish_and_interrupts_long_ones(processes) -> None:
    scheduler = processes.scheduler(["LongTask", "SlowTask"], TEST_SHUTDOWN_GRACE="3.5")
    long_run = services.request_run("long", origin="api")
    # The slow run seen running, not looked up again later: by then it may have ended.
    slow_run = wait_for(
        lambda: (
            TaskExecutionRecord.objects.get(pk=long_run.pk).status == "running"
            and TaskExecutionRecord.objects.filter(task_id="slow", status="running").first()
        ),
        timeout=5,
        message="both running",
    )
    assert scheduler.stop(signal.SIGTERM, timeout=15) == 0
    assert TaskExecutionRecord.objects.get(pk=slow_run.pk).status == "success"
    interrupted = TaskExecutionRecord.objects.get(pk=long_run.pk)
    assert interrupted.status == "interrupted" and "stopped" in interrupted.error
    assert not TaskExecutionRecord.objects.filter(status="running").exists()


def test_fires_missed_during_downtime_are_recorded_not_replayed(processes) -> None:
    first = processes.scheduler(["TickTask"], TEST_MISFIRE_GRACE_SECONDS="1")
    wait_for(lambda: count("tick", status="success") >= 2, timeout=10, message="2 runs")
    assert first.stop() == 0
    time.sleep(4)  # the downtime itself
    restarted_at = timezone.now()
    processes.scheduler(["TickTask"], TEST_MISFIRE_GRACE_SECONDS="1")
    wait_for(lambda: count("tick", status="missed") >= 2, timeout=10, message="missed fires")
    wait_for(lambda: count("tick", status="success") >= 4, timeout=10, message="runs after the restart")
    timeline = list(TaskExecutionRecord.objects.filter(task_id="tick").order_by("scheduled_at"))
    story = [(r.scheduled_at.isoformat(), r.status, r.message) for r in timeline]
    seconds = [r.scheduled_at for r in timeline]
    # One record per fire, every second, whatever happened to it: no gap, no duplicate.
    assert all(b - a == timedelta(seconds=1) for a, b in pairwise(seconds)), story
    missed = [r for r in timeline if r.status == "missed"]
    reasons = ("catch-up window", "coalesced", "the scheduler was stopping")
    assert all(any(reason in r.message for reason in reasons) for r in missed), story
    assert any("catch-up window" in r.message for r in missed), story
    # The catch-up never replays the downtime as a storm: at most one fire from before the restart runs.
    caught_up = [r for r in timeline if r.status == "success" and r.scheduled_at < restarted_at < r.started_at]
    assert len(caught_up) <= 1, story


def test_a_burst_of_simultaneous_fires_runs_each_fire_once(processes) -> None:
    """120 tasks due in the same instant every second, 6 times the workers: claimed and recorded
    together, each fire exactly once, none skipped, and every outcome written."""
    count_tasks = 120
    paths = [f"benches.tasks.Noop{index:05d}" for index in range(count_tasks)]
    scheduler = processes.scheduler(paths, BENCH_TASKS=str(count_tasks), BENCH_TASK_KIND="sync")
    names = [f"noop_{index:05d}" for index in range(count_tasks)]
    burst = TaskExecutionRecord.objects.filter(task_id__in=names)
    wait_for(lambda: burst.filter(status="success").count() >= 3 * count_tasks, timeout=20, message="3 bursts")
    assert scheduler.stop(signal.SIGTERM) == 0
    runs = list(burst)
    assert {r.status for r in runs} == {"success"}, {r.status for r in runs}
    per_task: dict[str, list[TaskExecutionRecord]] = {}
    for run in runs:
        per_task.setdefault(run.task_id, []).append(run)
        assert run.trigger == "scheduled" and run.started_at <= run.finished_at
    assert set(per_task) == set(names)
    for name, task_runs in per_task.items():
        fires = sorted(r.scheduled_at for r in task_runs)
        # Every second from the first fire to the last ran: none lost in a burst.
        assert all(abs((b - a).total_seconds() - 1.0) < 1e-3 for a, b in pairwise(fires)), (name, fires)
        state = TaskState.objects.get(task_id=name)
        assert (state.run_count, state.running_count, state.last_result) == (len(task_runs), 0, "success")


# -- queued runs: "run now" always runs, and nothing waiting holds it back ------------------------


def accepted_while_idle(task: str) -> TaskExecutionRecord:
    """A manual run as the API queued it a moment before a scheduled fire took the task.

    Written directly: through ``request_run`` now, a busy task answers 409 (nothing is queued).
    """
    return TaskExecutionRecord.objects.create(task_id=task, trigger="manual", status="pending", origin="api")


def test_a_manual_run_that_meets_a_scheduled_run_waits_for_it_and_runs_right_after(processes) -> None:
    processes.scheduler(["SlowTask"])
    blocking = wait_for(
        lambda: TaskExecutionRecord.objects.filter(task_id="slow", trigger="scheduled", status="running").first(),
        timeout=10,
        message="a scheduled slow run",
    )
    queued = accepted_while_idle("slow")
    done = wait_for(
        lambda: (r := TaskExecutionRecord.objects.get(pk=queued.pk)).status not in ("pending", "running") and r,
        timeout=15,
        message="the manual run to end",
    )
    assert done.status == "success", (done.status, done.message)
    blocking.refresh_from_db()
    assert blocking.status == "success" and done.started_at >= blocking.finished_at
    # The next run after the one it met: no scheduled run came in between.
    between = TaskExecutionRecord.objects.filter(
        task_id="slow", trigger="scheduled", started_at__gt=blocking.started_at, started_at__lt=done.started_at
    ).exclude(status__in=["skipped", "missed"])
    assert not between.exists(), list(between.values("id", "status", "started_at"))
    # One record for the accepted run, run once.
    assert TaskExecutionRecord.objects.filter(task_id="slow", trigger="manual").count() == 1
    assert TaskState.objects.get(task_id="slow").running_count in (0, 1)


def test_a_run_queued_while_no_scheduler_ran_runs_beside_the_catch_up_fire(processes) -> None:
    first = processes.scheduler(["SlowTask"])
    wait_for(lambda: count("slow", status="success") >= 1, timeout=10, message="a slow run")
    assert first.stop() == 0
    queued = [services.request_run("slow", origin="api") for _ in range(3)]
    processes.scheduler(["SlowTask"])
    ids = [record.pk for record in queued]
    wait_for(
        lambda: TaskExecutionRecord.objects.filter(pk__in=ids, status="success").count() == 3,
        timeout=30,
        message="the three queued runs to succeed",
    )
    runs = list(TaskExecutionRecord.objects.filter(pk__in=ids).order_by("started_at"))
    assert [r.pk for r in runs] == ids, "queued runs start in the order they were accepted"
    for earlier, later in pairwise(runs):
        assert later.started_at >= earlier.finished_at, "runs of a non-concurrent task overlapped"


def test_a_manual_run_gives_up_after_the_documented_wait_and_says_why(processes) -> None:
    processes.scheduler(["LongTask"], TEST_LONG_TASK_SECONDS="20", TEST_MANUAL_RUN_MAX_WAIT="1")
    blocking = services.request_run("long", origin="api")
    wait_for(lambda: TaskExecutionRecord.objects.get(pk=blocking.pk).status == "running", timeout=5, message="run")
    queued = accepted_while_idle("long")
    wait_for(lambda: TaskExecutionRecord.objects.get(pk=queued.pk).status == "skipped", timeout=10, message="a give-up")
    skipped = TaskExecutionRecord.objects.get(pk=queued.pk)
    assert f"for run #{blocking.pk} to end" in skipped.message and "MANUAL_RUN_MAX_WAIT" in skipped.message
    assert skipped.message.startswith("skipped: waited ")
    assert TaskExecutionRecord.objects.get(pk=blocking.pk).status == "running", "the run it waited for goes on"


def test_a_manual_run_starts_at_once_behind_150_retries_not_yet_due(processes) -> None:
    later = timezone.now() + timedelta(hours=1)
    TaskExecutionRecord.objects.bulk_create(
        [
            TaskExecutionRecord(task_id="boom", trigger="retry", status="pending", scheduled_at=later, attempt=2)
            for _ in range(150)
        ]
    )
    processes.scheduler(["BoomTask", "CronTask"], TEST_POLL_INTERVAL="1")
    queued = services.request_run("nightly", origin="api")
    wait_for(
        lambda: TaskExecutionRecord.objects.get(pk=queued.pk).status == "success", timeout=5, message="the manual run"
    )
    assert count("boom", trigger="retry", status="pending") == 150, "a retry ran before it was due"
