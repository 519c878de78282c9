"""A JSON log formatter: one object per line, with the structured context of scheduler log calls.

Enable it in ``LOGGING`` (the project does so when ``SCHEDULER_LOG_FORMAT=json``)::

    "formatters": {"json": {"()": "scheduler_app.logging.JSONFormatter"}},

Every line carries ``time`` (ISO 8601, UTC), ``level``, ``logger``, ``message``, ``process`` and
``thread``, plus whatever the call passed as ``extra=``: the runner's run lines carry ``task``,
``run_id``, ``trigger`` and ``duration``. Exceptions come as ``exception`` (the formatted traceback).
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

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
