"""Errors the app raises; the API, the admin and the commands translate them for their users."""

from __future__ import annotations

from collections.abc import Iterable


class SchedulerError(Exception):
    """Base class of every error of this app."""


class InvalidTaskError(SchedulerError):
    """A task definition breaks a rule; the message names the task."""


class DuplicateTaskError(InvalidTaskError):
    """Two tasks share one name."""


class TaskNotFound(SchedulerError, KeyError):
    """No task of that name is registered."""

    def __init__(self, name: str, known: Iterable[str] = ()) -> None:
        self.name = name
        self.known = sorted(known)
        super().__init__(name)

    def __str__(self) -> str:
        known = ", ".join(self.known) or "(none)"
        return f"unknown task {self.name!r}; known tasks: {known}"


class TaskBusy(SchedulerError):
    """The task is running and does not allow concurrent runs."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"task {name!r} is running and does not allow concurrent runs")
