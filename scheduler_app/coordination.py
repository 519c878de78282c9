"""Which processes are alive, which scheduler leads, and what happens to the runs of the dead.

Every process that runs tasks has a ``SchedulerProcess`` row and renews its heartbeat. Schedulers
compete for one ``SchedulerLease`` row; only its holder runs APScheduler and so writes the job
store. A process whose heartbeat is older than ``LEASE_SECONDS`` is dead: its ``running`` records
become ``interrupted`` and its row is deleted.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable, Iterable
from datetime import timedelta
from pathlib import Path
from uuid import UUID

from django.db.models import Case, F, Q, QuerySet, When
from django.utils import timezone

from scheduler_app import conf
from scheduler_app.db import close_thread_connections
from scheduler_app.ledger import Ledger
from scheduler_app.models import SchedulerLease, SchedulerProcess, TaskExecutionRecord
from scheduler_app.tasks.base import TaskStatus

logger = logging.getLogger("scheduler_app.coordination")
LEASE_NAME = "default"
HOST = socket.gethostname()


def lease_seconds() -> float:
    return float(conf.get("LEASE_SECONDS"))


def pid_is_alive(pid: int) -> bool:
    """True when a process of that id exists on this host and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    stat = Path(f"/proc/{pid}/stat")
    try:
        # The state letter follows the parenthesised command name.
        return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


class ProcessHandle:
    """This process's row: registered once, kept fresh by heartbeats, deleted at a clean exit."""

    def __init__(self, kind: str) -> None:
        self.row = SchedulerProcess(kind=kind, host=HOST, pid=os.getpid())

    @property
    def id(self) -> UUID:
        return self.row.id

    def register(self) -> SchedulerProcess:
        # (A fresh UUID: a plain save() inserts too, only after a vain UPDATE: an equivalent mutant.)
        self.row.save(force_insert=True)  # pragma: no mutate
        return self.row

    def heartbeat(self, role: str | None = None, **fields: object) -> None:
        """Renew the heartbeat; ``fields`` (a scheduler's ``progress_at`` and ``problem``) ride along."""
        now = timezone.now()
        changes: dict[str, object] = {"last_heartbeat": now, **fields}
        if role is not None:
            changes["role"] = role
            self.row.role = role
        for key, value in fields.items():
            setattr(self.row, key, value)
        if not SchedulerProcess.objects.filter(pk=self.row.pk).update(**changes):
            # Another process thought we were dead (we missed heartbeats) and reaped us; come back.
            logger.warning("process row %s was reaped while alive; registering again", self.row.pk)
            self.row.last_heartbeat = now
            self.row.save(force_insert=True)  # pragma: no mutate (the row is gone: save() inserts too)
        self.row.last_heartbeat = now

    def unregister(self) -> None:
        SchedulerProcess.objects.filter(pk=self.row.pk).delete()


class HeartbeatThread(threading.Thread):
    """Keeps a command process's heartbeat fresh while it runs a task in the foreground."""

    def __init__(self, handle: ProcessHandle) -> None:
        super().__init__(name="heartbeat", daemon=True)
        self.handle = handle
        self.stopped = threading.Event()

    def run(self) -> None:
        try:
            while not self.stopped.wait(float(conf.get("POLL_INTERVAL"))):
                try:
                    self.handle.heartbeat()
                except Exception:
                    logger.exception("heartbeat failed")
        finally:
            close_thread_connections()

    def stop(self) -> None:
        self.stopped.set()
        self.join(timeout=5)  # pragma: no mutate (timing only: how long to wait for a beat in flight)


def try_acquire_lease(holder: UUID) -> bool:
    """Take or renew the leader lease; True when ``holder`` leads until now + LEASE_SECONDS."""
    now = timezone.now()
    # (name=None would take the field's default, the same name: an equivalent mutant.)
    SchedulerLease.objects.bulk_create([SchedulerLease(name=LEASE_NAME)], ignore_conflicts=True)  # pragma: no mutate
    taken = (
        SchedulerLease.objects.filter(name=LEASE_NAME)
        .filter(Q(holder=holder) | Q(holder__isnull=True) | Q(expires_at__lt=now))
        .update(
            holder=holder,
            expires_at=now + timedelta(seconds=lease_seconds()),
            acquired_at=Case(When(holder=holder, then=F("acquired_at")), default=now),
        )
    )
    return taken == 1


def release_lease(holder: UUID) -> None:
    SchedulerLease.objects.filter(name=LEASE_NAME, holder=holder).update(holder=None, expires_at=None)


def unexpired_lease() -> QuerySet[SchedulerLease]:
    """The leader lease while it runs (a query, to be read or used as a subquery)."""
    return SchedulerLease.objects.filter(name=LEASE_NAME, expires_at__gte=timezone.now())


def leader_lease() -> SchedulerLease | None:
    """The unexpired leader lease, if any scheduler holds one."""
    return unexpired_lease().first()


def leader(processes: Iterable[SchedulerProcess] | None = None) -> SchedulerProcess | None:
    """Who leads: the live scheduler process that holds the unexpired lease (None when none does).

    The lease is the truth; a process's ``role`` is only its own report of it, written with its last
    heartbeat. ``processes`` are rows already read (judged as read); without them, one query.
    """
    if processes is not None:
        processes = list(processes)
        if not processes:  # nobody to lead: no need to read the lease
            return None
    lease = leader_lease()
    if lease is None or lease.holder is None:
        return None
    if processes is None:
        processes = SchedulerProcess.objects.filter(pk=lease.holder)
    return next(
        (p for p in processes if p.pk == lease.holder and p.kind == SchedulerProcess.Kind.SCHEDULER and p.is_alive()),
        None,
    )


def alive() -> bool:
    """Is a scheduler process alive: at least one has a fresh heartbeat (``heartbeat_cutoff``)."""
    return SchedulerProcess.objects.alive().filter(kind=SchedulerProcess.Kind.SCHEDULER).exists()


def _dead_local_process_ids(exclude: UUID | None) -> list[UUID]:
    """Rows of this host whose pid is gone: no need to wait for their heartbeat to go stale."""
    rows = SchedulerProcess.objects.filter(host=HOST).exclude(pk=exclude).values_list("pk", "pid")
    return [pk for pk, pid in rows if pid == os.getpid() or not pid_is_alive(pid)]


def _label_is_dead_here(label: str) -> bool:
    host, _, pid = label.rpartition(":")  # pragma: no mutate (partition: host names have no ':')
    return host == HOST and pid.isdigit() and not pid_is_alive(int(pid))


# Marks records interrupted with a reason and returns how many it wrote (the runner's ``interrupt``).
Interrupt = Callable[[list[TaskExecutionRecord], str], int]


def reap_dead_processes(interrupt: Interrupt, me: UUID | None = None) -> int:
    """Interrupt the runs of dead processes (through ``interrupt``) and delete their rows; returns how many runs."""
    # (values_list(flat=True) without "pk" gives the pk too: an equivalent mutant.)
    dead = set(SchedulerProcess.objects.dead().exclude(pk=me).values_list("pk", flat=True))  # pragma: no mutate
    dead.update(_dead_local_process_ids(exclude=me))
    # Running records are few and have a partial index of their own: read them all, judge here.
    running = list(TaskExecutionRecord.objects.filter(status=TaskStatus.RUNNING))
    records = [
        record
        for record in running
        if record.worker_id in dead
        # A run whose process row is already gone is judged by the host:pid it carries.
        or (record.worker_id is None and _label_is_dead_here(record.worker_label))
    ]
    count = interrupt(records, "the process running it died (no heartbeat) before the run finished")
    if dead:
        SchedulerProcess.objects.filter(pk__in=dead).delete()
    if count:
        logger.warning("marked %d run(s) of dead processes as interrupted", count)
    # Runs handed to a backend that no worker took: they will not start either (README: Scaling out).
    try:
        Ledger().expire_queued(float(conf.get("FLEET_QUEUE_MAX_WAIT")))
    except Exception:
        # The dead processes' runs are settled; the queue is looked at again at the next round.
        logger.exception("could not settle the runs that waited too long in a backend's queue")
    return count
