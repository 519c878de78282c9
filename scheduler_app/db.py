"""Database hygiene for long-lived processes and the SQLite options that keep writers apart."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from django.db import DEFAULT_DB_ALIAS, close_old_connections, connections, transaction
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.backends.signals import connection_created

logger = logging.getLogger("scheduler_app.db")

SQLITE_OPTIONS: dict[str, Any] = {
    # BEGIN IMMEDIATE takes the write lock up front, so two writers queue on the busy timeout
    # instead of deadlocking on a read-to-write upgrade ("database is locked").
    "transaction_mode": "IMMEDIATE",
    "timeout": 30,
    # WAL lets readers and one writer work at once; NORMAL sync is durable across process crashes.
    "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
}


POSTGRESQL_OPTIONS: dict[str, Any] = {
    "connect_timeout": 5,
    # TCP keepalives: a server that vanished behind a network cut (no RST ever comes) is noticed in
    # about a minute (30 s idle + 3 x 10 s probes) instead of the kernel's two hours, so a scheduler
    # blocked on that connection gets an error, steps down and reconnects.
    "keepalives": 1,
    "keepalives_idle": 30,
    "keepalives_interval": 10,
    "keepalives_count": 3,
}


def database_options(config: dict[str, Any]) -> dict[str, Any]:
    """Complete a DATABASES entry parsed from DATABASE_URL with our per-engine defaults."""
    engine = config.get("ENGINE", "")
    if engine.endswith("sqlite3"):
        config["OPTIONS"] = {**SQLITE_OPTIONS, **config.get("OPTIONS", {})}
    elif engine.endswith("postgresql"):
        config["OPTIONS"] = {**POSTGRESQL_OPTIONS, **config.get("OPTIONS", {})}
    # Long-lived processes keep connections, checked before each reuse (no "server has gone away").
    # dj-database-url always fills in CONN_MAX_AGE=0 / CONN_HEALTH_CHECKS=False, so its defaults
    # count as unset here; at 0 every run reconnected (and re-ran the PRAGMAs): see BENCHMARKS.md.
    if not config.get("CONN_MAX_AGE"):
        config["CONN_MAX_AGE"] = 60
    if not config.get("CONN_HEALTH_CHECKS"):
        config["CONN_HEALTH_CHECKS"] = True
    return config


@contextmanager
def fresh_connections() -> Iterator[None]:
    """Around every unit of work in a long-lived thread: drop connections that are broken or old."""
    close_old_connections()
    try:
        yield
    finally:
        close_old_connections()


# SQLite has one writer at a time. A thread that finds the write lock taken sleeps in SQLite's busy
# handler (1, 2, 5 ... 100 ms between tries), which made scheduled runs tens of ms late under load;
# threads of one process take turns on this lock instead, handed over at once. On PostgreSQL the
# same turns keep the fire dispatcher and the run finisher, which update the same task-state rows,
# from waiting on each other's row locks (or deadlocking) inside the server.
_writer = threading.RLock()


@contextmanager
def write_transaction(using: str = DEFAULT_DB_ALIAS) -> Iterator[None]:
    """``transaction.atomic()`` for the short write transactions of the scheduler's threads."""
    with _writer, transaction.atomic(using=using):
        yield


# SQLite copies its write-ahead log back into the database (a checkpoint: page writes and an fsync)
# inside the commit that grows the log past ``wal_autocheckpoint`` pages (1,000 by default): in the
# scheduler, mostly the dispatcher's, so every second or two a burst's claim took 4-12 ms longer
# (BENCHMARKS.md, session 6). The scheduler's connections raise that bound to a safety net, and the
# control loop checkpoints between bursts (``checkpoint_wal``), with the GIL and the write lock free.
WAL_AUTOCHECKPOINT_PAGES = 10_000


def leave_wal_checkpoints_to_the_control_loop() -> None:
    """In the scheduler's process: this process's SQLite connections, open or to come, checkpoint
    their write-ahead log themselves only past ``WAL_AUTOCHECKPOINT_PAGES``."""
    connection_created.connect(_raise_autocheckpoint, dispatch_uid="scheduler_app.db.wal_autocheckpoint")
    for wrapper in connections.all(initialized_only=True):
        if wrapper.connection is not None:
            _raise_autocheckpoint(type(wrapper), wrapper)


def _raise_autocheckpoint(sender: object, connection: BaseDatabaseWrapper, **kwargs: object) -> None:
    if connection.vendor == "sqlite":
        with connection.cursor() as cursor:
            cursor.execute(f"PRAGMA wal_autocheckpoint = {WAL_AUTOCHECKPOINT_PAGES}")


def checkpoint_wal(using: str = DEFAULT_DB_ALIAS) -> tuple[int, int] | None:
    """Copy what SQLite's write-ahead log holds back into the database without waiting for anyone
    (``PASSIVE``); returns (pages in the log, pages copied), or None when not SQLite in WAL mode."""
    wrapper = connections[using]
    if wrapper.vendor != "sqlite":
        return None
    with wrapper.cursor() as cursor:
        cursor.execute("PRAGMA wal_checkpoint(PASSIVE)")
        _busy, logged, copied = cursor.fetchone()
    return None if logged < 0 else (logged, copied)


def close_thread_connections() -> None:
    """Close this thread's connections; threads that end must do this or PostgreSQL keeps them.

    Only those the thread opened: a worker calls this after every run, and most runs open none
    (``close_all`` would build a wrapper per database alias for the thread to close it unopened).
    """
    for connection in connections.all(initialized_only=True):
        if connection.connection is not None:
            connection.close()
