"""The write-behind job store: next run times kept in memory, written in chunks by ``flush()``."""

from __future__ import annotations

import pickle
import random
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from apscheduler.job import Job
from apscheduler.jobstores.memory import MemoryJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger
from django.db import connection
from django_apscheduler.models import DjangoJob

from scheduler_app import jobstore
from scheduler_app.job_sync import JOB_FUNC
from scheduler_app.jobstore import CachedDjangoJobStore
from scheduler_app.models import TaskConfig, TaskState

START = datetime(2026, 1, 1, tzinfo=UTC)


def _job(
    scheduler: BackgroundScheduler,
    job_id: str,
    next_run_time: datetime,
    *,
    seconds: int = 1,
    fingerprint: str | None = None,
) -> Job:
    """An interval job as JobSync makes them."""
    return Job(
        scheduler,
        id=job_id,
        func=JOB_FUNC,
        args=(),
        kwargs={} if fingerprint is None else {"fingerprint": fingerprint},
        trigger=IntervalTrigger(seconds=seconds, start_date=START, timezone=UTC),
        executor="default",
        name=job_id,
        misfire_grace_time=1,
        coalesce=True,
        max_instances=1,
        next_run_time=next_run_time,
    )


@pytest.fixture
def store(db: None) -> Iterator[CachedDjangoJobStore]:
    aps = BackgroundScheduler(timezone=UTC)
    store = CachedDjangoJobStore()
    store.start(aps, "default")
    for number in range(5):
        job = _job(aps, f"job-{number}", START, fingerprint=f"job-{number}")
        store.add_job(job)
    yield store
    store.remove_all_jobs()


def _advance(store: CachedDjangoJobStore, seconds: int) -> datetime:
    when = START + timedelta(seconds=seconds)
    for job in store.get_all_jobs():
        job._modify(next_run_time=when)
        store.update_job(job)
    return when


def _stored(store: CachedDjangoJobStore, job_id: str) -> tuple[datetime, datetime]:
    """The job's next run time as its row holds it, and as a new leader's store loads it."""
    row = DjangoJob.objects.get(id=job_id)
    fresh = CachedDjangoJobStore()
    fresh.start(store._scheduler, "fresh")
    loaded = fresh.lookup_job(job_id)
    assert loaded is not None
    return row.next_run_time, loaded.next_run_time


def test_flush_writes_every_changed_job_in_chunks(store: CachedDjangoJobStore, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(jobstore, "FLUSH_CHUNK", 2)
    when = _advance(store, 7)
    assert store.flush() == 5
    for number in range(5):
        assert _stored(store, f"job-{number}") == (when, when)
    assert store.flush() == 0, "nothing changed since"
    # What a flush writes is the time alone: the pickled state (trigger, arguments) stays as added.
    assert pickle.loads(DjangoJob.objects.get(id="job-0").job_state)["next_run_time"] == START


def test_jobs_a_failed_chunk_did_not_write_are_written_by_the_next_flush(
    store: CachedDjangoJobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(jobstore, "FLUSH_CHUNK", 2)
    when = _advance(store, 9)
    write = CachedDjangoJobStore._write
    calls = []

    def fails_second(self: CachedDjangoJobStore, jobs: list[Job]) -> None:
        calls.append(len(jobs))
        if len(calls) == 2:
            raise RuntimeError("database gone")
        write(self, jobs)

    monkeypatch.setattr(CachedDjangoJobStore, "_write", fails_second)
    with pytest.raises(RuntimeError):
        store.flush()
    assert store.flush() == 3, "the failed chunk and the one after it"
    for number in range(5):
        assert _stored(store, f"job-{number}") == (when, when)


def test_due_jobs_and_next_run_time_match_apschedulers_memory_store(store: CachedDjangoJobStore) -> None:
    """The ordered cache against an independent implementation: APScheduler's MemoryJobStore, fed the
    same adds, moves, pauses and removals, must name the same due jobs in the same order."""
    reference = MemoryJobStore()
    reference.start(store._scheduler, "reference")
    for job in store.get_all_jobs():
        reference.add_job(job)
    rng = random.Random(14)
    ids = [job.id for job in store.get_all_jobs()]
    for step in range(300):
        job_id = rng.choice(ids)
        job = store.lookup_job(job_id)
        action = rng.random()
        if job is None:
            job = _job(store._scheduler, job_id, START + timedelta(seconds=rng.randint(0, 20)))
            store.add_job(job)
            reference.add_job(job)
        elif action < 0.1:
            store.remove_job(job_id)
            reference.remove_job(job_id)
        else:
            # Moved (ties on purpose: several jobs share a time), or paused (no next run time).
            when = None if action < 0.2 else START + timedelta(seconds=rng.randint(0, 20))
            job._modify(next_run_time=when)
            store.update_job(job)
            reference.update_job(job)
        now = START + timedelta(seconds=rng.randint(0, 20), microseconds=rng.choice([0, 500_000]))
        assert [j.id for j in store.get_due_jobs(now)] == [j.id for j in reference.get_due_jobs(now)], step
        assert store.get_next_run_time() == reference.get_next_run_time(), step
        assert [j.id for j in store.get_all_jobs()] == [j.id for j in reference.get_all_jobs()], step


def test_a_replaced_job_is_stored_at_once_with_its_new_trigger(store: CachedDjangoJobStore) -> None:
    """A changed schedule replaces the job (add_job with replace_existing): its whole state is written
    then, not left to flush(), which writes next run times only."""
    old = store.lookup_job("job-1")
    assert old is not None
    new = _job(store._scheduler, "job-1", START + timedelta(seconds=2), seconds=2, fingerprint="interval|2")
    store.update_job(new)
    state = pickle.loads(DjangoJob.objects.get(id="job-1").job_state)
    assert state["kwargs"] == {"fingerprint": "interval|2"} and state["trigger"].interval == timedelta(seconds=2)
    assert store.flush() == 1
    fresh = CachedDjangoJobStore()
    fresh.start(store._scheduler, "fresh")
    loaded = fresh.lookup_job("job-1")
    assert loaded is not None and loaded.kwargs == {"fingerprint": "interval|2"}
    assert loaded.next_run_time == START + timedelta(seconds=2)


def _state_update_fails(execute: Callable[..., Any], sql: str, params: Any, many: bool, context: dict[str, Any]) -> Any:
    """A database that fails a task state's update: what a half-done job store write would leave."""
    if sql.startswith("UPDATE") and TaskState._meta.db_table in sql:
        raise RuntimeError("database gone")
    return execute(sql, params, many, context)


def test_an_added_job_and_its_tasks_next_run_go_together_or_not_at_all(store: CachedDjangoJobStore) -> None:
    TaskState.objects.create(task=TaskConfig.objects.create(name="job-9"))
    when = START + timedelta(seconds=9)
    job = _job(store._scheduler, "job-9", when, fingerprint="job-9")

    with connection.execute_wrapper(_state_update_fails), pytest.raises(RuntimeError):
        store.add_job(job)
    assert not DjangoJob.objects.filter(id="job-9").exists(), "the job was stored without its task's next run"
    assert store.lookup_job("job-9") is None

    store.add_job(job)
    assert DjangoJob.objects.filter(id="job-9").exists() and store.lookup_job("job-9") is job
    assert TaskState.objects.get(task_id="job-9").next_run_at == when


def test_a_removed_job_and_its_tasks_next_run_go_together_or_not_at_all(store: CachedDjangoJobStore) -> None:
    """Whoever sees the job gone sees no next run (the CI failure of stop 25 read between the two);
    a removal that fails half-way leaves the job stored and scheduled."""
    TaskState.objects.create(task=TaskConfig.objects.create(name="job-2"), next_run_at=START)

    with connection.execute_wrapper(_state_update_fails), pytest.raises(RuntimeError):
        store.remove_job("job-2")
    assert DjangoJob.objects.filter(id="job-2").exists(), "the job was deleted without its task's next run"
    assert store.lookup_job("job-2") is not None
    assert TaskState.objects.get(task_id="job-2").next_run_at == START

    store.remove_job("job-2")
    assert not DjangoJob.objects.filter(id="job-2").exists() and store.lookup_job("job-2") is None
    assert TaskState.objects.get(task_id="job-2").next_run_at is None
