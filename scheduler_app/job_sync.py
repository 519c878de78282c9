"""Job sync: the leader's cache of task configuration and the APScheduler jobs made from it.

``JobSync`` reloads the configuration when any row changed (one aggregate query per poll), judges
each task's configuration once per revision (``config_error`` shows why a task is left out, the
others go on), and makes APScheduler's cached ``DjangoJobStore`` match: add, replace, remove. Each
job's trigger is wrapped in ``IsolatedTrigger``, so that a trigger that raises ends only its job.
APScheduler's fires leave through ``TaskExecutor`` to the dispatcher (``dispatch.py``).
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime
from zoneinfo import ZoneInfo

from apscheduler.executors.base import BaseExecutor
from apscheduler.job import Job
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.base import BaseTrigger
from django.conf import settings
from django.db.models import Count, Sum

from scheduler_app import conf
from scheduler_app.jobstore import CachedDjangoJobStore
from scheduler_app.models import TaskConfig
from scheduler_app.registry import TaskRegistry
from scheduler_app.tasks.base import OverlapPolicy
from scheduler_app.triggers import build_trigger
from scheduler_app.validation import config_errors

# The scheduler's lines keep the one logger name they had before the scheduler was split.
logger = logging.getLogger("scheduler_app.scheduler")

# The target stored with every job (``scheduler.fire``); job rows name it, so the path stays.
JOB_FUNC = "scheduler_app.scheduler:fire"
# A flush due while fires are claimed waits for a quieter tick, but not beyond this many intervals.
FLUSH_MAX_DEFER = 3

# Tasks whose trigger raised in APScheduler's thread (task -> why), for the control loop to mark.
_trigger_failures: dict[str, str] = {}
_trigger_failures_lock = threading.Lock()


class IsolatedTrigger(BaseTrigger):
    """A task's trigger, whose failure ends only that task's job.

    APScheduler asks triggers for the next fire time in its one scheduling thread, unguarded: a
    trigger that raised there (a bug, a value no rule foresaw) would end that thread and the firing
    of every task. Here the error is logged and the job ends (None); the control loop then marks
    the task's ``config_error`` and leaves it out until its configuration changes.
    """

    __slots__ = ("inner", "task")

    def __init__(self, inner: BaseTrigger, task: str) -> None:
        self.inner = inner
        self.task = task

    def get_next_fire_time(self, previous_fire_time: datetime | None, now: datetime) -> datetime | None:
        try:
            return self.inner.get_next_fire_time(previous_fire_time, now)
        except Exception as exc:
            logger.exception("task %s: its trigger %s failed; the task is left out", self.task, self.inner)
            with _trigger_failures_lock:
                _trigger_failures[self.task] = f"its trigger failed: {type(exc).__name__}: {exc}"
            return None

    def __getstate__(self) -> dict[str, object]:
        return {"version": 1, "inner": self.inner, "task": self.task}

    def __setstate__(self, state: dict[str, object]) -> None:
        self.inner = state["inner"]  # type: ignore[assignment]
        self.task = str(state["task"])

    def __str__(self) -> str:
        return str(self.inner)

    def __repr__(self) -> str:
        return f"<IsolatedTrigger {self.inner!r}>"


def take_trigger_failures() -> dict[str, str]:
    with _trigger_failures_lock:
        failures = dict(_trigger_failures)
        _trigger_failures.clear()
    return failures


QueueFires = Callable[[str, list[datetime]], None]


class TaskExecutor(BaseExecutor):
    """Hands APScheduler's fires, with their scheduled times, to the dispatcher."""

    def __init__(self, queue_fires: QueueFires) -> None:
        super().__init__()
        self.queue_fires = queue_fires

    def _do_submit_job(self, job: Job, run_times: list[datetime]) -> None:
        self.queue_fires(job.id, list(run_times))
        # Whatever happens to the fires is ours to record; for APScheduler the job is done.
        self._run_job_success(job.id, [])


class JobSync:
    """The configuration cache and APScheduler over the job store, while this process leads."""

    def __init__(self, registry: TaskRegistry) -> None:
        self.registry = registry
        self.configs: dict[str, TaskConfig] = {}
        self._config_key: tuple[object, object] | None = None
        # Tasks whose runs may overlap (their queued manual runs never wait for a running one).
        self.allow_overlap: list[str] = []
        # Per task: (revision judged, why it cannot be scheduled or "").
        self._judged: dict[str, tuple[int, str]] = {}
        self._aps: BackgroundScheduler | None = None
        self._jobstore: CachedDjangoJobStore | None = None
        self._last_flush = 0.0

    @property
    def leading(self) -> bool:
        """True from ``start`` to ``drop``: APScheduler was started by this process's leadership."""
        return self._aps is not None

    def config(self, name: str) -> TaskConfig | None:
        return self.configs.get(name)

    def forget_judgements(self) -> None:
        self._judged = {}

    def thread(self) -> threading.Thread | None:
        """APScheduler's scheduling thread, while it should run."""
        return getattr(self._aps, "_thread", None) if self._aps is not None else None

    # -- APScheduler life cycle ----------------------------------------------------------------

    def start(self, queue_fires: QueueFires) -> None:
        """Load the configuration, start APScheduler paused, sync the jobs, flush, then let it fire."""
        self.load()
        self._jobstore = CachedDjangoJobStore()
        self._aps = BackgroundScheduler(
            timezone=ZoneInfo(settings.TIME_ZONE),
            jobstores={"default": self._jobstore},
            executors={"default": TaskExecutor(queue_fires)},
            # The misfire and overlap policies are ours (dispatch.py and the runner), so that every
            # fire APScheduler would drop quietly is recorded instead.
            job_defaults={"misfire_grace_time": None, "coalesce": False, "max_instances": 1_000_000},
        )
        self._aps.start(paused=True)
        self.sync()
        self._jobstore.flush()
        # The jobs, triggers and configurations just loaded live as long as the leadership: kept out
        # of the collector's full passes (runscheduler froze what start-up loaded the same way), which
        # otherwise walk them while every thread waits, fires included.
        gc.collect()
        gc.freeze()
        self._aps.resume()

    def shutdown(self) -> None:
        """Stop firing; the job store stays for a last ``flush``."""
        if self._aps is not None and self._aps.running:
            self._aps.shutdown(wait=False)

    def drop(self) -> None:
        """Stop firing and let go of APScheduler and its job store (another process leads now)."""
        self.shutdown()
        self._aps = None
        self._jobstore = None
        # What start() froze can be collected again (it would leak otherwise); the next start freezes anew.
        gc.unfreeze()

    def flush(self) -> None:
        if self._jobstore is not None:
            self._jobstore.flush()

    def flush_if_due(self, busy: bool = False) -> None:
        """Flush once ``JOBSTORE_FLUSH_INTERVAL`` has passed; while fires are claimed (``busy``), wait
        for a later call, up to ``FLUSH_MAX_DEFER`` intervals: at 1,000 jobs a flush holds the write
        lock for 30-45 ms (in chunks), and the claims of fires due meanwhile wait for each chunk."""
        now = time.monotonic()
        interval = float(conf.get("JOBSTORE_FLUSH_INTERVAL"))
        since = now - self._last_flush
        if self._jobstore is not None and since >= interval and (not busy or since >= FLUSH_MAX_DEFER * interval):
            self._jobstore.flush()
            self._last_flush = now

    # -- configuration and jobs ----------------------------------------------------------------

    def load(self) -> bool:
        """Reload task configuration when any row changed; True when it did."""
        totals = TaskConfig.objects.aggregate(revision=Sum("revision"), count=Count("pk"))
        key = (totals["revision"], totals["count"])
        if key == self._config_key:
            return False
        self.configs = {config.name: config for config in TaskConfig.objects.all()}
        self._config_key = key
        self.allow_overlap = sorted(name for name, config in self.configs.items() if _allows_overlap(config))
        return True

    def sync(self) -> None:
        """Make the job store match the registry and the configuration: add, replace, remove."""
        assert self._aps is not None
        jobs = {job.id: job for job in self._aps.get_jobs()}
        for name in self.registry.names():
            config = self.configs.get(name)
            job = jobs.pop(name, None)
            if config is None:
                continue
            # One task's configuration that cannot be scheduled leaves that task out, never the others.
            problem = self._judge(config)
            if config.enabled and not problem:
                try:
                    self._schedule(config, job)
                except Exception as exc:
                    logger.exception("task %s: its trigger cannot be built", name)
                    problem = f"its trigger cannot be built: {type(exc).__name__}: {exc}"
                    self._judged[name] = (config.revision, problem)
            self._note_config_error(config, problem)
            if job is not None and (problem or not config.enabled):
                self._aps.remove_job(name)
                logger.info("task %s %s: job removed", name, "disabled" if not config.enabled else "left out")
        for stale in jobs:
            self._aps.remove_job(stale)
            logger.info("job %s removed: no such task is registered", stale)

    def _schedule(self, config: TaskConfig, job: Job | None) -> None:
        fingerprint = config.schedule_fingerprint()
        if job is not None and job.kwargs.get("fingerprint") == fingerprint:
            return
        assert self._aps is not None
        self._aps.add_job(
            JOB_FUNC,
            trigger=IsolatedTrigger(build_trigger(config), config.name),
            id=config.name,
            name=config.name,
            kwargs={"fingerprint": fingerprint},
            replace_existing=True,
        )
        logger.info("task %s scheduled: %s", config.name, fingerprint)

    def leave_out_failed_triggers(self) -> None:
        for name, problem in take_trigger_failures().items():
            config = self.configs.get(name)
            if config is None:
                continue
            self._judged[name] = (config.revision, problem)
            self._note_config_error(config, problem)
            if self._aps is not None and self._aps.get_job(name) is not None:
                self._aps.remove_job(name)

    def _judge(self, config: TaskConfig) -> str:
        """Why the task's stored configuration cannot be scheduled ("" if it can); judged once per revision."""
        judged = self._judged.get(config.name)
        if judged is not None and judged[0] == config.revision:
            return judged[1]
        try:
            errors = config_errors(config)
        except Exception as exc:  # e.g. options stored as something other than a JSON object
            errors = {"configuration": f"cannot be read: {type(exc).__name__}: {exc}"}
        problem = "; ".join(f"{field}: {message}" for field, message in errors.items())
        self._judged[config.name] = (config.revision, problem)
        return problem

    def _note_config_error(self, config: TaskConfig, problem: str) -> None:
        """Show on the task why it is left out (admin, API, metrics), or that it is fine again."""
        if problem == config.config_error:
            return
        if problem:
            logger.error("task %s left out of the schedule (the other tasks go on): %s", config.name, problem)
        else:
            logger.info("task %s: its configuration error is resolved", config.name)
        # No revision bump: that would make every scheduler reload the configuration for nothing.
        TaskConfig.objects.filter(name=config.name).update(config_error=problem)
        config.config_error = problem


def _allows_overlap(config: TaskConfig) -> bool:
    try:
        return config.overlap_policy == OverlapPolicy.ALLOW
    except ValueError:  # a stored value no rule allows: the task is left out anyway (config_error)
        return False
