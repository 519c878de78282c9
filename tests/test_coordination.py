"""The leader lease and process liveness rules of coordination.py, on the real database."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.db import OperationalError, connection
from django.db.backends.signals import connection_created
from django.db.models import F
from django.utils import timezone

from scheduler_app.coordination import (
    HOST,
    HeartbeatThread,
    ProcessHandle,
    alive,
    leader,
    leader_lease,
    pid_is_alive,
    reap_dead_processes,
    release_lease,
    try_acquire_lease,
)
from scheduler_app.models import SchedulerLease, SchedulerProcess, TaskExecutionRecord, TaskState, Trigger
from scheduler_app.runner import TaskRunner
from scheduler_app.tasks.base import TaskStatus
from tests.processes import wait_for

pytestmark = pytest.mark.django_db(transaction=True)


def move_expiry(seconds_from_now: float) -> None:
    """Stand in for the clock: the lease's expiry as if time had passed."""
    SchedulerLease.objects.update(expires_at=timezone.now() + timedelta(seconds=seconds_from_now))


def test_a_held_lease_is_refused_to_others_until_it_expires() -> None:
    first, second = uuid.uuid4(), uuid.uuid4()
    assert try_acquire_lease(first)
    lease = leader_lease()
    assert lease is not None and lease.holder == first
    acquired = lease.acquired_at
    assert acquired is not None
    assert try_acquire_lease(first), "the holder renews its lease while it holds it"
    assert try_acquire_lease(second) is False
    move_expiry(30)
    assert try_acquire_lease(second) is False, "a lease that has not expired yet is not taken over"
    move_expiry(-0.001)
    assert try_acquire_lease(second) is True
    lease = leader_lease()
    assert lease is not None and lease.holder == second
    assert lease.acquired_at is not None and lease.acquired_at > acquired, "a new holder's lease starts anew"
    assert try_acquire_lease(first) is False, "the old holder has lost it"


def test_renewing_extends_the_lease_and_keeps_when_it_was_acquired(settings: object) -> None:
    holder = uuid.uuid4()
    assert try_acquire_lease(holder)
    acquired = SchedulerLease.objects.get().acquired_at
    move_expiry(-5)  # even a lapsed lease is renewed by its own holder, if nobody took it
    assert try_acquire_lease(holder)
    lease = SchedulerLease.objects.get()
    assert lease.acquired_at == acquired
    assert lease.expires_at > timezone.now() + timedelta(seconds=1)


def test_lease_length_follows_the_setting(settings: object) -> None:
    settings.SCHEDULER = {**settings.SCHEDULER, "LEASE_SECONDS": 42}  # type: ignore[attr-defined]
    before = timezone.now()
    assert try_acquire_lease(uuid.uuid4())
    expires = SchedulerLease.objects.get().expires_at
    assert before + timedelta(seconds=41.9) <= expires <= timezone.now() + timedelta(seconds=42)


def test_a_released_lease_is_free_at_once() -> None:
    first, second = uuid.uuid4(), uuid.uuid4()
    assert try_acquire_lease(first)
    release_lease(second)  # someone else's release changes nothing
    assert try_acquire_lease(second) is False
    SchedulerLease.objects.create(name="another", holder=first, expires_at=timezone.now() + timedelta(minutes=1))
    release_lease(first)
    assert leader_lease() is None
    assert try_acquire_lease(second) is True
    assert SchedulerLease.objects.get(name="another").holder == first, "only the scheduler's lease is released"


# -- process liveness and the reaper -----------------------------------------------------------------


def ended_pid() -> int:
    """The id of a process that has exited and been reaped: no process has it (for now)."""
    child = subprocess.Popen([sys.executable, "-c", ""])
    child.wait()
    return child.pid


def test_pid_is_alive_for_live_processes_only(tmp_path: Path) -> None:
    assert pid_is_alive(os.getpid())
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        # Asking twice: the question must not harm the process it asks about.
        assert pid_is_alive(sleeper.pid) and pid_is_alive(sleeper.pid)
        assert sleeper.poll() is None
    finally:
        sleeper.kill()
        sleeper.wait()
    assert not pid_is_alive(ended_pid())
    # A command name may hold ") R (": the state is the field after the last ')'.
    tricky = tmp_path / "a) R (b"
    tricky.symlink_to(shutil.which("true") or "/bin/true")
    zombie = subprocess.Popen([str(tricky)])  # exits and stays a zombie until waited for
    try:
        state = Path(f"/proc/{zombie.pid}/stat")
        deadline = time.monotonic() + 10
        while state.read_text().rsplit(")", 1)[1].split()[0] != "Z":
            assert time.monotonic() < deadline, "the child never became a zombie"
            time.sleep(0.01)
        assert not pid_is_alive(zombie.pid)
    finally:
        zombie.wait()


def test_asking_whether_a_process_lives_sends_it_no_signal() -> None:
    # The run above cannot see a harmful signal where SIGHUP is ignored (a nohup'ed run): catch them here.
    watched = (signal.SIGHUP, signal.SIGINT, signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2, signal.SIGALRM)
    received: list[int] = []
    before = {number: signal.signal(number, lambda number, frame: received.append(number)) for number in watched}
    try:
        assert pid_is_alive(os.getpid())
    finally:
        for number, handler in before.items():
            signal.signal(number, handler)
    assert received == []


# The child only calls os.kill, reads /proc and exits: none of the parent's threads' locks are needed.
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded, use of fork:DeprecationWarning")
def test_a_process_of_another_user_is_alive() -> None:
    """kill(pid, 0) is refused for another user's process: refused, so it exists."""
    assert Path("/proc/1").stat().st_uid == 0, "pid 1 is root's here"
    if os.geteuid() != 0:
        assert pid_is_alive(1)
        return
    # Root may signal every process: ask as nobody, in a forked child (changing this process's ids
    # would change them for every thread of the test session at once).
    child = os.fork()
    if child == 0:
        try:
            os.setresuid(65534, 65534, 65534)
            os._exit(0 if pid_is_alive(1) else 1)
        except BaseException:
            os._exit(2)
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0, "pid 1 was said not to exist (1) or the check failed (2)"


def running_record(worker: SchedulerProcess | None = None, label: str = "") -> TaskExecutionRecord:
    TaskState.objects.filter(task_id="tick").update(running_count=F("running_count") + 1)
    return TaskExecutionRecord.objects.create(
        task_id="tick",
        trigger=Trigger.SCHEDULED,
        status=TaskStatus.RUNNING,
        started_at=timezone.now() - timedelta(seconds=3),
        worker=worker,
        worker_label=label or (worker.label if worker else ""),
    )


def test_the_reaper_interrupts_exactly_the_runs_of_dead_processes(caplog: pytest.LogCaptureFixture) -> None:
    stale = timezone.now() - timedelta(hours=1)
    # Processes that ended, found first: starting them (slow on a loaded machine) must not age the
    # fresh heartbeats below past the lease.
    ended_here, ended_elsewhere, ended_unrecorded = ended_pid(), ended_pid(), ended_pid()
    # Even with a stale heartbeat of its own (it missed some), the reaper never reaps itself.
    me = SchedulerProcess.objects.create(kind="scheduler", host=HOST, pid=os.getpid(), last_heartbeat=stale)
    silent = SchedulerProcess.objects.create(kind="scheduler", host="elsewhere", pid=7, last_heartbeat=stale)
    far_alive = SchedulerProcess.objects.create(kind="command", host="elsewhere", pid=8)
    gone_here = SchedulerProcess.objects.create(kind="command", host=HOST, pid=ended_here)  # fresh heartbeat
    old_me = SchedulerProcess.objects.create(kind="scheduler", host=HOST, pid=os.getpid())  # a former incarnation
    doomed = [
        running_record(silent),
        running_record(gone_here),
        running_record(old_me),
        running_record(label=f"{HOST}:{ended_unrecorded}"),  # its process row is already gone
    ]
    spared = [
        running_record(me),
        running_record(far_alive),
        running_record(label=f"elsewhere:{ended_elsewhere}"),  # not ours to judge: wait for its heartbeat
        running_record(label=f"{HOST}:{os.getpid()}"),
        running_record(label=f"{HOST}:notapid"),
    ]
    with caplog.at_level(logging.WARNING, logger="scheduler_app.coordination"):
        assert reap_dead_processes(TaskRunner().interrupt, me=me.pk) == 4
    assert {r.pk for r in TaskExecutionRecord.objects.filter(status=TaskStatus.INTERRUPTED)} == {r.pk for r in doomed}
    interrupted = TaskExecutionRecord.objects.get(pk=doomed[0].pk)
    assert interrupted.finished_at is not None
    assert interrupted.error == "the process running it died (no heartbeat) before the run finished"
    assert all(TaskExecutionRecord.objects.get(pk=r.pk).status == TaskStatus.RUNNING for r in spared)
    assert set(SchedulerProcess.objects.values_list("pk", flat=True)) == {me.pk, far_alive.pk}
    assert TaskState.objects.get(task_id="tick").running_count == len(spared)
    assert "marked 4 run(s) of dead processes as interrupted" in caplog.messages
    # Nothing more to do: nothing changes, nothing is logged.
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="scheduler_app.coordination"):
        assert reap_dead_processes(TaskRunner().interrupt, me=me.pk) == 0
    assert caplog.text == ""
    assert SchedulerProcess.objects.count() == 2


def test_the_reaper_settles_the_dead_even_when_the_queue_cannot_be_read(caplog: pytest.LogCaptureFixture) -> None:
    stale = timezone.now() - timedelta(hours=1)
    silent = SchedulerProcess.objects.create(kind="scheduler", host="elsewhere", pid=7, last_heartbeat=stale)
    record = running_record(silent)

    def queue_unreadable(execute: Callable[..., Any], sql: str, params: Any, many: bool, context: Any) -> Any:
        if sql.startswith("SELECT") and TaskStatus.QUEUED in (params or ()):
            raise OperationalError("database is locked")
        return execute(sql, params, many, context)

    with (
        caplog.at_level(logging.WARNING, logger="scheduler_app.coordination"),
        connection.execute_wrapper(queue_unreadable),
    ):
        assert reap_dead_processes(TaskRunner().interrupt) == 1
    assert TaskExecutionRecord.objects.get(pk=record.pk).status == TaskStatus.INTERRUPTED
    assert not SchedulerProcess.objects.exists()
    failure = caplog.records[-1]
    assert failure.getMessage() == "could not settle the runs that waited too long in a backend's queue"
    assert failure.exc_info is not None and failure.exc_info[0] is OperationalError


def test_without_me_the_reaper_judges_every_row() -> None:
    stale = timezone.now() - timedelta(hours=1)
    silent = SchedulerProcess.objects.create(kind="scheduler", host="elsewhere", pid=7, last_heartbeat=stale)
    record = running_record(silent)
    assert reap_dead_processes(TaskRunner().interrupt) == 1
    assert TaskExecutionRecord.objects.get(pk=record.pk).status == TaskStatus.INTERRUPTED
    assert not SchedulerProcess.objects.exists()


def test_a_process_handle_registers_beats_comes_back_and_leaves(caplog: pytest.LogCaptureFixture) -> None:
    handle = ProcessHandle("scheduler")
    row = handle.register()
    assert (row.kind, row.host, row.pid, row.role) == ("scheduler", HOST, os.getpid(), "")
    assert handle.id == row.pk and SchedulerProcess.objects.filter(pk=row.pk).exists()
    SchedulerProcess.objects.filter(pk=row.pk).update(last_heartbeat=timezone.now() - timedelta(hours=1))
    progress = timezone.now()
    handle.heartbeat("leader", progress_at=progress, problem="")
    stored = SchedulerProcess.objects.get(pk=row.pk)
    assert (stored.role, stored.progress_at, handle.row.role) == ("leader", progress, "leader")
    assert stored.last_heartbeat == handle.row.last_heartbeat > progress - timedelta(seconds=1)
    handle.heartbeat(problem="the dispatcher thread died")  # no role: the role stays
    stored = SchedulerProcess.objects.get(pk=row.pk)
    assert (stored.role, stored.problem) == ("leader", "the dispatcher thread died")
    # Reaped while alive (it missed heartbeats): the next heartbeat registers it again, as it was.
    SchedulerProcess.objects.filter(pk=row.pk).delete()
    with caplog.at_level(logging.WARNING, logger="scheduler_app.coordination"):
        handle.heartbeat()
    assert f"process row {row.pk} was reaped while alive; registering again" in caplog.messages
    again = SchedulerProcess.objects.get(pk=row.pk)
    assert (again.role, again.problem, again.last_heartbeat) == (
        "leader",
        "the dispatcher thread died",
        handle.row.last_heartbeat,
    )
    handle.unregister()
    assert not SchedulerProcess.objects.exists()


def _wait_for_a_heartbeat_after(handle: ProcessHandle, first: object, message: str) -> None:
    wait_for(
        lambda: SchedulerProcess.objects.get(pk=handle.id).last_heartbeat != first,
        timeout=10,
        interval=0.01,
        message=message,
    )


def test_the_heartbeat_thread_beats_until_stopped(settings: object) -> None:
    settings.SCHEDULER = {**settings.SCHEDULER, "POLL_INTERVAL": 0.05}  # type: ignore[attr-defined]
    handle = ProcessHandle("command")
    handle.register()
    first = handle.row.last_heartbeat
    thread = HeartbeatThread(handle)
    assert (thread.name, thread.daemon) == ("heartbeat", True)
    thread.start()
    try:
        _wait_for_a_heartbeat_after(handle, first, "no heartbeat")
    finally:
        thread.stop()
    assert not thread.is_alive()


def test_a_failed_heartbeat_is_logged_and_the_thread_beats_on(
    settings: object, caplog: pytest.LogCaptureFixture
) -> None:
    settings.SCHEDULER = {**settings.SCHEDULER, "POLL_INTERVAL": 0.05}  # type: ignore[attr-defined]
    handle = ProcessHandle("command")
    handle.register()
    first = handle.row.last_heartbeat
    thread = HeartbeatThread(handle)
    failed: list[str] = []

    def first_beat_fails(execute: Callable[..., Any], sql: str, params: Any, many: bool, context: Any) -> Any:
        if not failed and sql.startswith("UPDATE") and SchedulerProcess._meta.db_table in sql:
            failed.append(sql)
            raise OperationalError("disk I/O error")
        return execute(sql, params, many, context)

    def wrap_the_heartbeat_connection(sender: object, connection: object, **kwargs: object) -> None:
        if threading.current_thread() is thread:
            connection.execute_wrappers.append(first_beat_fails)  # type: ignore[attr-defined]

    connection_created.connect(wrap_the_heartbeat_connection)
    try:
        with caplog.at_level(logging.ERROR, logger="scheduler_app.coordination"):
            thread.start()
            _wait_for_a_heartbeat_after(handle, first, "no heartbeat after the failed one")
    finally:
        thread.stop()
        connection_created.disconnect(wrap_the_heartbeat_connection)
    assert failed, "the first beat failed"
    [failure] = caplog.records
    assert failure.getMessage() == "heartbeat failed"
    assert failure.exc_info is not None and failure.exc_info[0] is OperationalError


def test_the_lease_not_the_role_says_who_leads() -> None:
    assert leader() is None and alive() is False
    says_active = SchedulerProcess.objects.create(kind="scheduler", role="active", host="a", pid=1)
    holder = SchedulerProcess.objects.create(kind="scheduler", role="standby", host="b", pid=2)
    assert alive() is True
    assert leader() is None, "a role of active without the lease leads nothing"
    assert try_acquire_lease(holder.pk)
    assert leader() == holder and leader([says_active, holder]) == holder
    assert leader([says_active]) is None and leader([]) is None
    # A holder whose heartbeat went stale is dead: it leads nothing, whatever its lease says.
    SchedulerProcess.objects.filter(pk=holder.pk).update(last_heartbeat=timezone.now() - timedelta(hours=1))
    assert leader() is None
    holder.refresh_from_db()
    assert not holder.is_alive() and says_active.is_alive()
