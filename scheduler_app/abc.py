"""The seams of the scheduler: what a component must do, not how.

``Executor``: where task code runs. The runner records and claims a run through the ledger
(``ledger.py``), then submits it to its executor; how the run ended comes back through
``on_settled``, and the runner records it. The in-process ``WorkerPool`` (``execution.py``) is the
first executor. Where code runs is this one decision: the runner, the scheduler and the ledger do
not change with it.
"""

from __future__ import annotations

import contextvars
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from scheduler_app.tasks.base import BaseTask, TaskStatus


@dataclass(frozen=True)
class Submission:
    """A claimed run to execute: its record (already ``running``), the task's code and its time limit."""

    record_id: int
    task: BaseTask
    timeout: float
    # The context the code runs in (the runner's log_context for the run); None: the submitter's.
    context: contextvars.Context | None = None


@dataclass
class Outcome:
    """How a run's code ended, as the executor saw it."""

    status: TaskStatus
    message: str = ""
    error: str = ""
    data: dict[str, Any] = field(default_factory=dict)


class RunHandle(Protocol):
    """An executor's handle on one submitted run, settled exactly once."""

    started_at: datetime | None  # when the code began (a run may wait for a free worker)
    duration: float
    outcome: Outcome | None
    settled: threading.Event

    def wait(self, cancel: threading.Event | None = None, reason: str = "") -> Outcome:
        """Block until settled; a set ``cancel`` settles the run as interrupted."""
        ...


class Executor(ABC):
    """Runs the code of claimed runs, each within its timeout, and settles each exactly once.

    ``local`` False: the code runs in other processes (a django.tasks backend's workers). ``submit``
    then returns once the backend holds the run, the handle is never settled here and ``on_settled``
    is not called: the worker writes the outcome through the ledger. Such an executor's runs are not
    this process's to wait for (drain, in_flight, interrupt_all are about local runs).
    """

    local: bool = True

    @abstractmethod
    def submit(self, run: Submission, on_settled: Callable[[RunHandle], None] | None = None) -> RunHandle:
        """Hand ``run`` over and return at once; ``on_settled`` is called (in some thread) once it ended.

        Raises when nothing can be started (the executor is closed): the caller still owns the run.
        """

    def submit_many(self, runs: Sequence[tuple[Submission, Callable[[RunHandle], None] | None]]) -> list[RunHandle]:
        """``submit`` for each (run, on_settled) of a burst's chunk; an executor that can take them
        at once (one lock, one wake-up per worker needed) says so by overriding this."""
        return [self.submit(run, on_settled) for run, on_settled in runs]

    @abstractmethod
    def backlog(self) -> int:
        """Runs handed over that wait for a worker."""

    @abstractmethod
    def in_flight(self) -> list[RunHandle]:
        """Runs handed over and not settled yet."""

    @abstractmethod
    def interrupt_all(self, reason: str) -> int:
        """Settle every run not ended yet as ``interrupted``; returns how many."""

    @abstractmethod
    def dead_threads(self) -> list[str]:
        """Names of the executor's long-lived threads that should run and do not (health)."""

    @abstractmethod
    def close(self, wait: float = 0.0) -> None:
        """Stop taking runs; wait up to ``wait`` seconds for the workers to end."""


class RemoteExecutor(Executor):
    """An executor whose runs' code executes in other processes (``local`` False): it holds no run
    of this process, so there is nothing here to count, interrupt, watch or wait for."""

    local = False

    def backlog(self) -> int:
        return 0

    def in_flight(self) -> list[RunHandle]:
        return []

    def interrupt_all(self, reason: str) -> int:
        return 0

    def dead_threads(self) -> list[str]:
        return []

    def close(self, wait: float = 0.0) -> None:
        return None
