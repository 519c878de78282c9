"""Leadership, through the production path (``run_forever`` in a thread, stopped by ``request_stop``):
the process takes the lease, heartbeats as the active scheduler, and at the stop releases the lease,
removes its row and ends every thread of its own. Fail-over between processes: test_multi_scheduler.py."""

from __future__ import annotations

import logging
import threading

import pytest

from scheduler_app import coordination
from scheduler_app.models import SchedulerProcess
from scheduler_app.scheduler import TaskScheduler
from tests.processes import wait_for

pytestmark = pytest.mark.django_db(transaction=True)


def test_run_forever_leads_and_a_stop_request_hands_the_lease_back(caplog: pytest.LogCaptureFixture) -> None:
    scheduler = TaskScheduler()
    errors: list[BaseException] = []

    def run() -> None:
        try:
            scheduler.run_forever()
        except BaseException as exc:
            errors.append(exc)
            raise

    thread = threading.Thread(target=run, name="test-control-loop")
    with caplog.at_level(logging.INFO, logger="scheduler_app"):
        thread.start()
        try:
            wait_for(lambda: scheduler.jobs.leading, timeout=30, message="the scheduler to lead")
            process = scheduler.leadership.process
            assert process is not None
            wait_for(
                lambda: SchedulerProcess.objects.filter(pk=process.id, role="active").exists(),
                timeout=30,
                message="the heartbeat as the active scheduler",
            )
            assert coordination.leader() is not None and coordination.leader().pk == process.id
            assert coordination.alive()
            own_threads = [t for t in [*scheduler.dispatch.threads(), scheduler.jobs.thread()] if t is not None]
            assert {"fire-dispatcher", "run-pickup"} <= {t.name for t in own_threads}
        finally:
            scheduler.request_stop()
            thread.join(timeout=60)
    assert not thread.is_alive() and errors == []
    assert [t.name for t in own_threads if t.is_alive()] == []
    assert not SchedulerProcess.objects.filter(pk=process.id).exists()
    assert coordination.leader_lease() is None and not coordination.alive()
    assert "this process is now the active scheduler" in caplog.text and "scheduler stopped" in caplog.text


def test_a_renewal_waits_for_the_writers_turn_and_writes_the_lease_and_the_heartbeat() -> None:
    from scheduler_app import db
    from scheduler_app.leadership import Leadership

    leadership = Leadership()
    process = leadership.register()
    renewed = threading.Event()
    leads: list[bool] = []

    def renew() -> None:
        try:
            leads.append(leadership.renew(progress_at=None, problem=""))
        finally:
            db.close_thread_connections()
            renewed.set()

    with db._writer:
        thread = threading.Thread(target=renew, name="test-renew")
        thread.start()
        # In turn with the dispatcher and the finisher: not as autocommit writes that meet SQLite's
        # lock taken and sleep in its busy handler.
        assert not renewed.wait(0.3), "the renewal went ahead while another thread had the writer's turn"
    assert renewed.wait(10) and leads == [True]
    thread.join(5)
    assert coordination.leader_lease().holder == process.id
    assert SchedulerProcess.objects.get(pk=process.id).role == SchedulerProcess.Role.ACTIVE
