"""Job sync: a trigger that fails ends only its own job; the stored job target stays importable."""

from __future__ import annotations

import gc
import pickle
import time
from datetime import UTC, datetime, timedelta

import pytest
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.util import ref_to_obj

from scheduler_app import conf, job_sync, scheduler
from scheduler_app.job_sync import JOB_FUNC, IsolatedTrigger, JobSync, take_trigger_failures
from scheduler_app.registry import task_registry
from scheduler_app.triggers import CronTrigger, make_interval_trigger
from tests.processes import wait_for


def test_the_stored_job_target_is_still_scheduler_fire() -> None:
    """Job rows written before the split name ``scheduler_app.scheduler:fire``; it must still resolve."""
    assert JOB_FUNC == "scheduler_app.scheduler:fire"
    assert ref_to_obj(JOB_FUNC) is scheduler.fire


class FailsAfterFirstFire(BaseTrigger):
    """A trigger with a bug: fine for its first fire time, raises for the next one."""

    def __init__(self) -> None:
        self.calls = 0

    def get_next_fire_time(self, previous_fire_time: datetime | None, now: datetime) -> datetime | None:
        self.calls += 1
        if self.calls > 1:
            raise OverflowError("date value out of range")
        return now + timedelta(milliseconds=50)


def test_a_failing_trigger_ends_only_its_own_job_not_apschedulers_thread() -> None:
    """In a real APScheduler: unguarded, the error would end its scheduling thread and every job."""
    take_trigger_failures()
    fired: list[str] = []
    aps = BackgroundScheduler(timezone="UTC")
    aps.start()
    try:
        aps.add_job(fired.append, IsolatedTrigger(FailsAfterFirstFire(), "bad"), args=["bad"], id="bad")
        aps.add_job(fired.append, IsolatedTrigger(make_interval_trigger(0.05, "UTC"), "good"), args=["good"], id="good")
        wait_for(lambda: fired.count("good") >= 5, timeout=10, message="the good job to keep firing")
        assert fired.count("bad") == 1 and aps.get_job("bad") is None and aps.get_job("good") is not None
        assert aps._thread.is_alive()
        failures = take_trigger_failures()
        assert failures == {"bad": "its trigger failed: OverflowError: date value out of range"}
    finally:
        aps.shutdown(wait=False)


def test_an_isolated_trigger_keeps_its_trigger_through_the_job_store() -> None:
    trigger = pickle.loads(pickle.dumps(IsolatedTrigger(CronTrigger("0 2 * * *", "Europe/Berlin"), "nightly")))
    assert trigger.task == "nightly" and str(trigger) == "cron[0 2 * * * Europe/Berlin]"
    after = datetime(2027, 1, 1, tzinfo=UTC)
    assert trigger.get_next_fire_time(None, after) == datetime(2027, 1, 1, 1, 0, tzinfo=UTC)


@pytest.mark.django_db(transaction=True)
def test_a_due_flush_waits_while_fires_are_claimed_but_not_beyond_its_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    jobs = JobSync(task_registry)
    jobs.start(lambda name, run_times: None)
    flushes: list[int] = []
    assert jobs._jobstore is not None
    flush = jobs._jobstore.flush
    monkeypatch.setattr(jobs._jobstore, "flush", lambda: flushes.append(flush()) or flushes[-1])
    interval = float(conf.get("JOBSTORE_FLUSH_INTERVAL"))
    try:
        jobs._last_flush = time.monotonic() - 1.5 * interval
        jobs.flush_if_due(busy=True)
        assert flushes == [], "flushed while fires were being claimed"
        jobs.flush_if_due(busy=False)
        assert len(flushes) == 1, "a due flush once the claims are done"
        jobs.flush_if_due(busy=False)
        assert len(flushes) == 1, "not due again at once"
        jobs._last_flush = time.monotonic() - (job_sync.FLUSH_MAX_DEFER + 0.5) * interval
        jobs.flush_if_due(busy=True)
        assert len(flushes) == 2, "claims that never end do not hold the flush back for longer"
    finally:
        jobs.drop()


@pytest.mark.django_db(transaction=True)
def test_leading_freezes_its_jobs_out_of_full_collections_and_stepping_down_thaws_them() -> None:
    jobs = JobSync(task_registry)
    gc.unfreeze()
    jobs.start(lambda name, run_times: None)
    try:
        assert gc.get_freeze_count() > 0, "the loaded jobs are left out of full passes"
    finally:
        jobs.drop()
    assert gc.get_freeze_count() == 0, "a dropped leadership's objects can be collected again"
