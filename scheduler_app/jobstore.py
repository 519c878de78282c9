"""``DjangoJobStore`` with a write-behind cache, so that a fire never waits for the database.

django-apscheduler's store reads and writes the database inside APScheduler's single dispatch
loop on every fire (``get_due_jobs``, ``update_job`` with SELECT FOR UPDATE, ``get_next_run_time``),
and that is what makes it late under load. Here the database stays the durable home of the
jobs: they are loaded from it at start, and additions and removals go to it at once. The
per-fire ``next_run_time`` updates are kept in memory and written in one batch by ``flush()``
(every ``JOBSTORE_FLUSH_INTERVAL`` and at shutdown). A crash loses at most that interval of
``next_run_time`` progress; the fires it would repeat are refused by the (task, scheduled_at)
uniqueness of execution records, so they never run twice.

Only the leader scheduler holds a started store, so two schedulers never write it at once.
"""

from __future__ import annotations

import bisect
import logging
import math
import threading
from datetime import datetime
from operator import itemgetter

from apscheduler.job import Job
from apscheduler.jobstores.base import BaseJobStore, ConflictingIdError, JobLookupError
from apscheduler.util import datetime_to_utc_timestamp
from django.db import connection
from django_apscheduler.jobstores import DjangoJobStore
from django_apscheduler.models import DjangoJob
from django_apscheduler.util import get_apscheduler_datetime, get_django_internal_datetime

from scheduler_app.db import write_transaction
from scheduler_app.models import TaskState

logger = logging.getLogger("scheduler_app.jobstore")

# Jobs written per transaction by flush(): the fires due meanwhile wait at most one chunk.
FLUSH_CHUNK = 100


def _run_time_key(job: Job) -> float:
    """Where a job stands in the order of next run times (a paused job, with none, last)."""
    return datetime_to_utc_timestamp(job.next_run_time) if job.next_run_time is not None else math.inf


class CachedDjangoJobStore(DjangoJobStore):
    def __init__(self) -> None:
        super().__init__()
        self._jobs: dict[str, Job] = {}
        # (next run time as a timestamp, job id), kept sorted: APScheduler asks for the due jobs and
        # the next run time at every wake-up, which with fires spread over the second is up to once
        # per fire; a scan of every job each time cost ~50 us per fire at 1,000 jobs (BENCHMARKS.md).
        self._order: list[tuple[float, str]] = []
        self._keys: dict[str, float] = {}
        self._dirty: set[str] = set()
        self._cache_lock = threading.RLock()

    def start(self, scheduler, alias) -> None:
        # Skip DjangoResultStoreMixin.start: its per-fire DjangoJobExecution writes would run in
        # the dispatch loop, and TaskExecutionRecord is our history.
        BaseJobStore.start(self, scheduler, alias)
        # The next run times as the last flush wrote them: the pickled states keep the time of the
        # job's creation (a flush writes the column alone, see _write).
        stored = dict(DjangoJob.objects.values_list("id", "next_run_time"))
        with self._cache_lock:
            self._jobs, self._order, self._keys = {}, [], {}
            for job in super()._get_jobs():
                when = stored.get(job.id, job.next_run_time)
                job.next_run_time = get_apscheduler_datetime(when, scheduler) if when is not None else None
                self._put(job)
            self._dirty.clear()
        logger.info("job store loaded %d job(s) from the database", len(self._jobs))

    # -- the ordered cache (callers hold the lock) ---------------------------------------------

    def _put(self, job: Job) -> None:
        if job.id in self._keys:
            self._drop(job.id)
        key = _run_time_key(job)
        self._jobs[job.id] = job
        self._keys[job.id] = key
        bisect.insort(self._order, (key, job.id))

    def _drop(self, job_id: str) -> None:
        entry = (self._keys.pop(job_id), job_id)
        index = bisect.bisect_left(self._order, entry)
        del self._order[index]
        del self._jobs[job_id]

    # -- BaseJobStore --------------------------------------------------------------------------

    def lookup_job(self, job_id: str) -> Job | None:
        with self._cache_lock:
            return self._jobs.get(job_id)

    def get_due_jobs(self, now: datetime) -> list[Job]:
        limit = datetime_to_utc_timestamp(now)
        with self._cache_lock:
            end = bisect.bisect_right(self._order, limit, key=itemgetter(0))
            return [self._jobs[job_id] for _, job_id in self._order[:end]]

    def get_next_run_time(self) -> datetime | None:
        with self._cache_lock:
            if not self._order or self._order[0][0] == math.inf:
                return None
            return self._jobs[self._order[0][1]].next_run_time

    def get_all_jobs(self) -> list[Job]:
        with self._cache_lock:
            return [self._jobs[job_id] for _, job_id in self._order]

    def add_job(self, job: Job) -> None:
        with self._cache_lock:
            if job.id in self._jobs:
                raise ConflictingIdError(job.id)
            # One transaction, as in remove_job: whoever sees the job stored sees its next run.
            with write_transaction():
                super().add_job(job)
                TaskState.objects.filter(task_id=job.id).update(next_run_at=job.next_run_time)
            self._put(job)

    def update_job(self, job: Job) -> None:
        with self._cache_lock:
            cached = self._jobs.get(job.id)
            if cached is None:
                raise JobLookupError(job.id)
            if cached is not job:
                # A new Job for this id (add_job's replace_existing: a changed schedule): its state is
                # written at once. APScheduler moves a job on by changing the cached object itself, and
                # that is only a next run time, which flush() writes.
                super().update_job(job)
            self._put(job)
            self._dirty.add(job.id)

    def remove_job(self, job_id: str) -> None:
        with self._cache_lock:
            if job_id not in self._jobs:
                raise JobLookupError(job_id)
            # One transaction: whoever sees the job gone also sees the task without a next run.
            with write_transaction():
                DjangoJob.objects.filter(id=job_id).delete()
                TaskState.objects.filter(task_id=job_id).update(next_run_at=None)
            self._drop(job_id)
            self._dirty.discard(job_id)

    def remove_all_jobs(self) -> None:
        with self._cache_lock:
            DjangoJob.objects.all().delete()
            self._jobs, self._order, self._keys = {}, [], {}
            self._dirty.clear()

    def flush(self) -> int:
        """Write the next run times that changed since the last flush; returns how many jobs.

        In transactions of ``FLUSH_CHUNK`` jobs: a thousand jobs in one took ~25 ms of the
        process's write lock, and the fires due meanwhile waited for it. Only the next run time is
        written: a job's pickled state changes only when the job is replaced (a changed schedule;
        ``update_job`` writes that at once), and pickling a thousand jobs every second took ~40 ms of the
        process's Python, which fires due meanwhile waited for.
        """
        with self._cache_lock:
            dirty = [self._jobs[job_id] for job_id in self._dirty if job_id in self._jobs]
            self._dirty.clear()
        for start in range(0, len(dirty), FLUSH_CHUNK):
            try:
                self._write(dirty[start : start + FLUSH_CHUNK])
            except Exception:
                with self._cache_lock:
                    self._dirty.update(job.id for job in dirty[start:])
                raise
        return len(dirty)

    def _write(self, jobs: list[Job]) -> None:
        rows = [(job.id, job.next_run_time) for job in jobs]
        # Two executemany() statements instead of two ORM updates per job: with 1,000 jobs at 1 s the
        # per-row ORM flush took ~13% of the process and held the write lock the runs wait for.
        adapt = connection.ops.adapt_datetimefield_value
        job_table = connection.ops.quote_name(DjangoJob._meta.db_table)
        state_table = connection.ops.quote_name(TaskState._meta.db_table)
        state_key = connection.ops.quote_name(TaskState._meta.get_field("task").column)
        with write_transaction(), connection.cursor() as cursor:
            cursor.executemany(
                f"UPDATE {job_table} SET next_run_time = %s WHERE id = %s",
                [(adapt(get_django_internal_datetime(when)), job_id) for job_id, when in rows],
            )
            cursor.executemany(
                f"UPDATE {state_table} SET next_run_at = %s WHERE {state_key} = %s",
                [(adapt(when), job_id) for job_id, when in rows],
            )

    def shutdown(self) -> None:
        # The caller flushes while it still holds the lease; a demoted leader must not write.
        pass

    def __repr__(self) -> str:
        return f"<{type(self).__name__} jobs={len(self._jobs)}>"
