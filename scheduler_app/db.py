"""Database hygiene for long-lived processes and the SQLite options that keep writers apart."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from django.db import OperationalError, close_old_connections, connections, transaction

logger = logging.getLogger("scheduler_app.db")
T = TypeVar("T")

SQLITE_OPTIONS: dict[str, Any] = {
    # BEGIN IMMEDIATE takes the write lock up front, so two writers queue on the busy timeout
    # instead of deadlocking on a read-to-write upgrade ("database is locked").
    "transaction_mode": "IMMEDIATE",
    "timeout": 30,
    # WAL lets readers and one writer work at once; NORMAL sync is durable across process crashes.
    "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
}


def database_options(config: dict[str, Any]) -> dict[str, Any]:
    """Complete a DATABASES entry parsed from DATABASE_URL with our per-engine defaults."""
    engine = config.get("ENGINE", "")
    if engine.endswith("sqlite3"):
        config["OPTIONS"] = {**SQLITE_OPTIONS, **config.get("OPTIONS", {})}
    elif engine.endswith("postgresql"):
        config.setdefault("OPTIONS", {}).setdefault("connect_timeout", 5)
    # Long-lived processes keep connections, checked before each reuse (no "server has gone away").
    config.setdefault("CONN_MAX_AGE", 60)
    config.setdefault("CONN_HEALTH_CHECKS", True)
    return config


@contextmanager
def fresh_connections() -> Iterator[None]:
    """Around every unit of work in a long-lived thread: drop connections that are broken or old."""
    close_old_connections()
    try:
        yield
    finally:
        close_old_connections()


def close_thread_connections() -> None:
    """Close this thread's connections; threads that end must do this or PostgreSQL keeps them."""
    connections.close_all()


def with_retry(
    operation: Callable[[], T], *, attempts: int = 5, delay: float = 0.2, what: str = "database operation"
) -> T:
    """Run ``operation`` in a transaction, retrying when the database is briefly unavailable."""
    for attempt in range(1, attempts + 1):
        try:
            with transaction.atomic():
                return operation()
        except OperationalError as exc:
            if attempt == attempts:
                raise
            logger.warning("%s failed (%s); retrying in %.1fs", what, exc, delay * attempt)
            # A broken connection is closed here, so the next attempt opens a new one.
            close_old_connections()
            time.sleep(delay * attempt)
    raise AssertionError("unreachable")
