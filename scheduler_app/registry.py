"""``TaskRegistry``: the tasks this project defines, filled from ``SCHEDULER["TASKS"]`` at start-up."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass

from django.utils.module_loading import import_string

from scheduler_app.exceptions import DuplicateTaskError, InvalidTaskError, TaskNotFound
from scheduler_app.tasks.base import BaseTask
from scheduler_app.validation import task_errors

logger = logging.getLogger("scheduler_app.registry")


@dataclass(frozen=True)
class LoadError:
    """A ``SCHEDULER["TASKS"]`` entry that could not be registered; reported by ``manage.py check``."""

    path: str
    message: str


class TaskRegistry:
    def __init__(self) -> None:
        self._tasks: dict[str, BaseTask] = {}
        self._lock = threading.Lock()
        self.load_errors: list[LoadError] = []

    def register(self, task: BaseTask | type[BaseTask]) -> BaseTask:
        """Add a task (class or instance); raise ``InvalidTaskError`` naming it when it breaks a rule."""
        if isinstance(task, type):
            if not issubclass(task, BaseTask):
                raise InvalidTaskError(f"{task.__module__}.{task.__qualname__} is not a BaseTask subclass")
            try:
                task = task()
            except TypeError as exc:
                raise InvalidTaskError(f"cannot instantiate {task.__qualname__}: {exc}") from exc
        label = getattr(task, "name", None) or type(task).__qualname__
        if problems := task_errors(task):
            raise InvalidTaskError(f"task {label!r}: " + "; ".join(problems))
        with self._lock:
            existing = self._tasks.get(task.name)
            if existing is not None and type(existing) is not type(task):
                raise DuplicateTaskError(
                    f"task {task.name!r}: name already used by {type(existing).__module__}."
                    f"{type(existing).__qualname__}"
                )
            self._tasks[task.name] = task
        return task

    def unregister(self, name: str) -> None:
        with self._lock:
            self._tasks.pop(name, None)

    def clear(self) -> None:
        with self._lock:
            self._tasks.clear()
            self.load_errors = []

    def load(self, paths: list[str]) -> None:
        """Register each dotted path; collect failures in ``load_errors`` instead of raising.

        Raising here would crash every process at import time with a traceback; collected errors
        become ``manage.py check`` errors that name the task instead.
        """
        errors: list[LoadError] = []
        loaded: dict[str, str] = {}
        for path in paths:
            try:
                task_class = import_string(path)
            except ImportError as exc:
                errors.append(LoadError(path, f"cannot import {path!r}: {exc}"))
                continue
            name = getattr(task_class, "name", None)
            if isinstance(name, str) and name in loaded:
                errors.append(LoadError(path, f"task {name!r}: duplicate name, already defined by {loaded[name]!r}"))
                continue
            try:
                self.register(task_class)
            except InvalidTaskError as exc:
                errors.append(LoadError(path, str(exc)))
                continue
            loaded[name] = path
        self.load_errors = errors
        for error in errors:
            logger.error("SCHEDULER['TASKS'] entry %s: %s", error.path, error.message)

    def get(self, name: str) -> BaseTask:
        try:
            return self._tasks[name]
        except KeyError:
            raise TaskNotFound(name, self._tasks) from None

    def names(self) -> list[str]:
        return sorted(self._tasks)

    def all(self) -> list[BaseTask]:
        return [self._tasks[name] for name in self.names()]

    def __contains__(self, name: object) -> bool:
        return name in self._tasks

    def __iter__(self) -> Iterator[BaseTask]:
        return iter(self.all())

    def __len__(self) -> int:
        return len(self._tasks)


task_registry = TaskRegistry()
