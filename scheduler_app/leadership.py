"""Leadership: this process's row, its heartbeat and its claim on the leader lease.

Every poll the control loop calls ``renew``: it competes for the lease (``coordination.py`` holds
the rule) and sends the heartbeat with the role that came out of it. A lease renewed now is
trusted for a little less than its length (``lease_valid``): past that, the leader stops firing
and picking up runs even if it cannot reach the database to learn who leads. Standbys say once
per standby term that they stand by.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime

from scheduler_app import conf
from scheduler_app.coordination import ProcessHandle, reap_dead_processes, release_lease, try_acquire_lease
from scheduler_app.db import write_transaction
from scheduler_app.models import SchedulerProcess

# The scheduler's lines keep the one logger name they had before the scheduler was split.
logger = logging.getLogger("scheduler_app.scheduler")


class Leadership:
    def __init__(self) -> None:
        self.process: ProcessHandle | None = None
        self._lease_valid_until = 0.0
        self._standing_by = False  # said once per standby term, not each poll

    @property
    def process_id(self) -> int | None:
        return self.process.id if self.process is not None else None

    def register(self) -> ProcessHandle:
        self.process = ProcessHandle(SchedulerProcess.Kind.SCHEDULER)
        self.process.register()
        return self.process

    def renew(self, *, progress_at: datetime | None, problem: str) -> bool:
        """Try to take or keep the lease and send the heartbeat; True when this process leads."""
        assert self.process is not None
        began = time.monotonic()
        # One transaction, in turn with the dispatcher's and the finisher's (``write_transaction``):
        # as three autocommit writes, each that found SQLite's lock taken slept in its busy handler
        # (1, 2, 5, 10 ... ms, growing), and a renewal after a burst took ~100 ms (BENCHMARKS.md,
        # session 7), while a claim that came meanwhile slept the same way behind it.
        with write_transaction():
            leader = try_acquire_lease(self.process.id)
            self.process.heartbeat(
                role=SchedulerProcess.Role.ACTIVE if leader else SchedulerProcess.Role.STANDBY,
                progress_at=progress_at,
                problem=problem,
            )
        if leader:
            # Renewed (at the latest) when we asked: trust it for a little less than its length.
            self._lease_valid_until = began + float(conf.get("LEASE_SECONDS")) * 0.8
        return leader

    def lease_valid(self) -> bool:
        """True while the lease last renewed can still be trusted."""
        return time.monotonic() < self._lease_valid_until

    def note_standby(self, leader: bool) -> None:
        if not leader and not self._standing_by:
            logger.info("standing by: another scheduler holds the lease; this one takes over if it stops")
        self._standing_by = not leader

    def report_problem(self, problem: str) -> None:
        if self.process is not None:
            self.process.heartbeat(problem=problem)

    def reap(self, interrupt: Callable[..., object]) -> None:
        """Settle the runs of scheduler processes that died (their heartbeat stopped)."""
        reap_dead_processes(interrupt, me=self.process_id)

    def resign(self) -> None:
        """Release the lease (a standby takes over at once) and remove this process's row."""
        if self.process is None:
            return
        release_lease(self.process.id)
        self.process.unregister()
        self.process = None
