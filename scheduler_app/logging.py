"""A JSON log formatter: one object per line, with the structured context of scheduler log calls.

Enable it in ``LOGGING`` (the project does so when ``SCHEDULER_LOG_FORMAT=json``)::

    "formatters": {"json": {"()": "scheduler_app.logging.JSONFormatter"}},

Every line carries ``time`` (ISO 8601, UTC), ``level``, ``logger``, ``message``, ``process`` and
``thread``, plus whatever the call passed as ``extra=``: the runner's run lines carry ``task``,
``run_id``, ``trigger`` and ``duration``. Exceptions come as ``exception`` (the formatted traceback).

While the runner executes a run, every line logged in that context (by the runner, by the task's
own code, in its thread or its event loop) also carries ``task``, ``run_id`` and ``trigger``: the
runner sets them with ``log_context()``, a context variable that follows the run into its thread.
"""

from __future__ import annotations

import json
import logging
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

_context: ContextVar[dict[str, Any] | None] = ContextVar("scheduler_log_context", default=None)


class log_context:  # used as a function: ``with log_context(task=...):``
    """Add ``fields`` to every JSON line logged inside the block (and in contexts copied from it).

    A class rather than a ``@contextmanager`` generator: every run enters it twice, and the
    generator's machinery cost more than the context variable itself.
    """

    __slots__ = ("_fields", "_token")

    def __init__(self, **fields: Any) -> None:
        self._fields = fields

    def __enter__(self) -> None:
        self._token = _context.set({**(_context.get() or {}), **self._fields})

    def __exit__(self, *exc_info: object) -> None:
        _context.reset(self._token)


def current_context() -> dict[str, Any]:
    return dict(_context.get() or {})


# Attributes every LogRecord has; anything else on a record came from `extra=`.
_STANDARD = frozenset(
    logging.LogRecord("", 0, "", 0, "", None, None).__dict__.keys() | {"message", "asctime", "taskName"}
)


class JSONFormatter(logging.Formatter):
    """Formats a record as a single line of JSON; values that JSON cannot hold become strings."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, tz=UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "process": record.process,
            "thread": record.threadName,
        }
        entry.update(current_context())
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str, ensure_ascii=False)
