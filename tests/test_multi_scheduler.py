"""Three real ``runscheduler`` processes on one database while the active one is killed with SIGKILL.

What must hold over the whole run, for every task firing every second: each fire time has exactly
one record (no duplicate, and no hole: the fires that fell in a failover window are recorded as
``missed`` or run late by the next leader), a standby takes over within the lease, and the run the
killed process left ``running`` becomes ``interrupted``. Runs on SQLite and, in ``make test``'s
PostgreSQL pass, on PostgreSQL.
"""

from __future__ import annotations

import itertools
import signal
import socket
import time
from collections import Counter
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from scheduler_app import conf, services
from scheduler_app.exceptions import TaskBusy
from scheduler_app.models import SchedulerProcess, TaskExecutionRecord
from tests.processes import ManagedProcess, ProcessFactory, wait_for

pytestmark = [pytest.mark.process]

TASKS = ["TickTask", "BoomTask", "SlowTask"]
NAMES = ["tick", "boom", "slow"]
HOST = socket.gethostname()


def label(process: ManagedProcess) -> str:
    return f"{HOST}:{process.pid}"


def active(processes: list[ManagedProcess]) -> ManagedProcess | None:
    """The one live process that holds the active role, if any."""
    live = {p.pid: p for p in processes if p.alive()}
    pids = SchedulerProcess.objects.filter(role="active", pid__in=list(live)).values_list("pid", flat=True)
    return live[pids[0]] if len(pids) == 1 else None


def request_run_when_idle(name: str) -> TaskExecutionRecord | None:
    try:
        return services.request_run(name, origin="test")
    except TaskBusy:
        return None


def fire_gaps(times: list) -> list[tuple[str, str]]:
    """Consecutive fire times further apart than the 1 s interval (holes in the record)."""
    second = timedelta(seconds=1)
    return [(a.isoformat(), b.isoformat()) for a, b in itertools.pairwise(times) if b - a != second]


def test_three_schedulers_every_fire_exactly_once_through_two_sigkills(processes: ProcessFactory) -> None:
    lease = float(conf.get("LEASE_SECONDS"))
    first = processes.scheduler(TASKS)
    pool = [first, processes.scheduler(TASKS, wait_active=False), processes.scheduler(TASKS, wait_active=False)]
    for standby in pool[1:]:
        processes.wait_role(standby, "standby")

    killed: list[ManagedProcess] = []
    failovers: list[float] = []
    first_run_after: list[float] = []
    leader = first
    for _ in range(2):
        # Kill it mid-run: wait until it ran ticks and has a slow run in flight.
        wait_for(
            lambda leader=leader: (
                TaskExecutionRecord.objects.filter(task_id="tick", status="success", worker_label=label(leader)).count()
                >= 2
                and TaskExecutionRecord.objects.filter(
                    task_id="slow", status="running", worker_label=label(leader)
                ).exists()
            ),
            timeout=20,
            message=f"the active scheduler {leader.pid} to run ticks and have a slow run in flight",
        )
        killed_at = timezone.now()
        started = time.monotonic()
        leader.kill()
        killed.append(leader)
        successor = wait_for(lambda: active(pool), timeout=lease + 15, message="a standby to become active")
        failovers.append(time.monotonic() - started)
        assert successor is not leader
        first_run = wait_for(
            lambda successor=successor: (
                TaskExecutionRecord.objects.filter(task_id="tick", status="success", worker_label=label(successor))
                .order_by("started_at")
                .first()
            ),
            timeout=15,
            message="the new leader's first tick",
        )
        first_run_after.append((first_run.started_at - killed_at).total_seconds())
        # Keep three schedulers: a replacement joins as a standby.
        pool.append(processes.scheduler(TASKS, wait_active=False))
        # Up and standing by before anything else happens to it (a SIGTERM before its handler is
        # installed would end it with -15, not 0).
        processes.wait_role(pool[-1], "standby")
        leader = successor

    # Changes made elsewhere (here: this process, as the API would) reach whichever process leads now.
    manual = wait_for(lambda: request_run_when_idle("tick"), timeout=10, message="tick to be idle")
    services.disable_task("boom", reason="multi-scheduler test")
    disabled_at = timezone.now()
    done = wait_for(
        lambda: TaskExecutionRecord.objects.filter(pk=manual.pk, status="success").first(),
        timeout=15,
        message="the manual run to be run by the new leader",
    )
    assert done.worker_label == label(leader)

    # The last leader runs a while undisturbed, then everyone stops cleanly.
    since = timezone.now()
    wait_for(
        lambda: TaskExecutionRecord.objects.filter(task_id="tick", status="success", started_at__gt=since).count() >= 3,
        timeout=15,
        message="three more ticks after the second failover",
    )
    late_boom = TaskExecutionRecord.objects.filter(task_id="boom", scheduled_at__gt=disabled_at + timedelta(seconds=2))
    assert not late_boom.exists(), "boom still fired 2 s after it was disabled"
    # Standbys first: a leader that stops releases the lease, and a standby would take over.
    for process in sorted(pool, key=lambda p: p is leader):
        if process.alive():
            assert process.stop(signal.SIGTERM) == 0

    report = [
        f"database: {connection.vendor}",
        f"failover (kill -> standby active): {[f'{s:.2f}s' for s in failovers]}",
        f"kill -> first tick of the new leader: {[f'{s:.2f}s' for s in first_run_after]}",
    ]
    for name in NAMES:
        scheduled = TaskExecutionRecord.objects.filter(task_id=name, trigger="scheduled")
        times = list(scheduled.order_by("scheduled_at").values_list("scheduled_at", flat=True))
        duplicates = [t.isoformat() for t, n in Counter(times).items() if n > 1]
        assert not duplicates, f"{name}: fires recorded more than once: {duplicates}"
        assert not fire_gaps(times), f"{name}: fires with no record: {fire_gaps(times)}"
        statuses = Counter(scheduled.values_list("status", flat=True))
        workers = set(scheduled.values_list("worker_label", flat=True))
        report.append(f"{name}: {len(times)} fires, {dict(statuses)}, by {len(workers)} processes")
        assert len(times) >= 8  # boom is disabled near the end
        assert len(workers) >= 3, f"{name}: expected runs by three leaders, got {workers}"
    # The failover windows show as fires recorded `missed` (coalesced) by a new leader, not as holes.
    assert TaskExecutionRecord.objects.filter(task_id="tick", status="missed").exists()

    for dead in killed:
        mine = TaskExecutionRecord.objects.filter(worker_label=label(dead))
        assert not mine.filter(status="running").exists()
        interrupted = mine.filter(task_id="slow", status="interrupted")
        assert interrupted.exists(), f"the slow run in flight in {dead.pid} was not marked interrupted"
        assert "died" in interrupted.first().error
        assert not SchedulerProcess.objects.filter(pid=dead.pid).exists()
    assert not TaskExecutionRecord.objects.filter(status__in=["running", "pending"]).exists()

    for seconds in failovers:
        # The lease outlives its holder by at most LEASE_SECONDS; a standby notices within a poll.
        assert seconds < lease + 3, f"failover took {seconds:.2f}s with a {lease:g}s lease"
    print("\n".join(report))


def test_a_frozen_leader_that_wakes_up_believing_it_leads_runs_no_fire_twice(processes: ProcessFactory) -> None:
    """SIGSTOP the leader past its lease: a standby takes over; SIGCONT: for a moment both lead.

    The woken process's APScheduler fires its backlog before its control loop learns that the
    lease is gone; the (task, scheduled_at) uniqueness of records refuses every fire the new
    leader already has.
    """
    lease = float(conf.get("LEASE_SECONDS"))
    old = processes.scheduler(["TickTask"])
    new = processes.scheduler(["TickTask"], wait_active=False)
    processes.wait_role(new, "standby")
    wait_for(
        lambda: (
            TaskExecutionRecord.objects.filter(task_id="tick", status="success", worker_label=label(old)).count() >= 2
        ),
        timeout=15,
        message="two ticks by the first leader",
    )
    old.send(signal.SIGSTOP)
    try:
        processes.wait_role(new, "active", timeout=lease + 15)
        wait_for(
            lambda: (
                TaskExecutionRecord.objects.filter(task_id="tick", status="success", worker_label=label(new)).count()
                >= 2
            ),
            timeout=15,
            message="two ticks by the new leader",
        )
    finally:
        old.send(signal.SIGCONT)
    wait_for(lambda: "stepping down" in old.output(), timeout=15, message="the woken leader to step down")
    since = timezone.now()
    wait_for(
        lambda: TaskExecutionRecord.objects.filter(task_id="tick", status="success", started_at__gt=since).count() >= 2,
        timeout=15,
        message="ticks after the old leader woke",
    )
    assert old.stop(signal.SIGTERM) == 0
    assert new.stop(signal.SIGTERM) == 0

    times = list(
        TaskExecutionRecord.objects.filter(task_id="tick", trigger="scheduled")
        .order_by("scheduled_at")
        .values_list("scheduled_at", flat=True)
    )
    duplicates = [t.isoformat() for t, n in Counter(times).items() if n > 1]
    assert not duplicates, f"fires recorded more than once: {duplicates}"
    assert not fire_gaps(times), f"fires with no record: {fire_gaps(times)}"
    refused = old.output().count("already recorded by another process")
    print(f"\n{connection.vendor}: {len(times)} fires; the woken leader was refused {refused} fire(s) the new one had")
