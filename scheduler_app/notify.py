"""How a queued run reaches the active scheduler at once, instead of at its next poll.

``announce_pending()`` is called by whoever queues a run (``services.request_run``), and by a
process other than the scheduler that ended a run (``trigger_task``, a fleet worker): a manual run
queued behind that run waits for its end. On PostgreSQL it sends ``NOTIFY`` after the commit, and
the scheduler's ``PendingWatcher`` thread, listening on a connection of its own, wakes the pickup.
On SQLite (no notifications between processes) the watcher reads ``PRAGMA data_version`` every
``SQLITE_CHECK_SECONDS`` on a connection of its own (it changes when another connection commits;
reading it touches no table) and, when it changed, wakes the pickup if a newer record was queued
(the id of the newest queued record, through the pending index) or if a queued manual run waits
for a run to end (``waiting()``). Either way the control loop's poll stays the fallback: a lost
connection or notification only costs the old latency, and the listener reconnects by itself.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from django.db import connection, transaction

from scheduler_app.records import newest_pending_sql

logger = logging.getLogger("scheduler_app.notify")

CHANNEL = "scheduler_app_pending"
SQLITE_CHECK_SECONDS = 0.1
# Seconds between two attempts to get the PostgreSQL listener back after its connection was lost.
RECONNECT_SECONDS = (0.5, 30.0)


def announce_pending() -> None:
    """Tell the schedulers, once the caller's transaction commits, that a run was queued or ended."""
    if connection.vendor == "postgresql":
        transaction.on_commit(_notify)


def _notify() -> None:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_notify(%s, '')", [CHANNEL])
    except Exception:
        # The run is queued all the same: the scheduler's poll finds it, a moment later.
        logger.warning("could not notify the scheduler of a queued run; it is picked up at its next poll")


class PendingWatcher:
    """A thread that calls ``wake()`` soon after a run is queued by any process."""

    def __init__(self, wake: Callable[[], None], waiting: Callable[[], bool] | None = None) -> None:
        self.wake = wake
        # Whether a queued manual run waits for a run to end (SQLite: any commit may be that end).
        self.waiting = waiting
        self._stop = threading.Event()
        self.thread: threading.Thread | None = None
        self.vendor = connection.vendor

    def start(self) -> None:
        if self.vendor not in ("postgresql", "sqlite"):
            return  # the poll alone
        if self.vendor == "sqlite" and not Path(str(connection.settings_dict["NAME"])).is_file():
            return  # an in-memory database: no other process can queue a run
        target = self._listen if self.vendor == "postgresql" else self._check_sqlite
        self.thread = threading.Thread(target=target, name="pending-watcher", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self.thread is not None and self.thread is not threading.current_thread():
            self.thread.join(timeout=5)

    # -- SQLite --------------------------------------------------------------------------------

    def _check_sqlite(self) -> None:
        # A connection of our own, in autocommit, outside Django: a read transaction left open
        # would freeze data_version, and Django's cursor would triple the cost of each look.
        import sqlite3

        sql = newest_pending_sql()
        database: sqlite3.Connection | None = None
        version: int | None = None
        newest: int | None = None
        while not self._stop.is_set():
            # time.sleep, not Event.wait: the cheapest wake-up there is, and this loop's idle cost
            # is nearly all wake-ups (stop() waits at most one round).
            time.sleep(SQLITE_CHECK_SECONDS)
            try:
                if database is None:
                    path = str(connection.settings_dict["NAME"])
                    database = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None, timeout=1)
                now = database.execute("PRAGMA data_version").fetchone()[0]
                if now == version:
                    continue
                version = now
                latest = database.execute(sql).fetchone()[0]
            except Exception:
                # A locked or vanished file: the poll covers it; open it again next round.
                logger.debug("pending check failed", exc_info=True)
                if database is not None:
                    database.close()
                database, version = None, None
                continue
            if latest is not None and (newest is None or latest > newest):
                # The first look too: a run queued before it would otherwise wait for the poll.
                self.wake()
                newest = latest
            elif self.waiting is not None and self.waiting():
                # Another process may have ended the run that a queued manual run waits for.
                self.wake()
        if database is not None:
            database.close()

    # -- PostgreSQL ----------------------------------------------------------------------------

    def _listen(self) -> None:
        delay = RECONNECT_SECONDS[0]
        lost = False
        while not self._stop.is_set():
            try:
                with self._connect() as listener:
                    listener.execute(f"LISTEN {CHANNEL}")
                    if lost:
                        logger.info("listening for queued runs again")
                    lost, delay = False, RECONNECT_SECONDS[0]
                    # Whatever was queued while we did not listen.
                    self.wake()
                    while not self._stop.is_set():
                        for _ in listener.notifies(timeout=1.0):
                            self.wake()
            except Exception as exc:
                if not lost:
                    logger.warning(
                        "not listening for queued runs (%s); picked up by polling until the connection is back",
                        str(exc).strip().splitlines()[0] if str(exc) else type(exc).__name__,
                    )
                lost = True
                self._stop.wait(delay)
                delay = min(delay * 2, RECONNECT_SECONDS[1])

    @staticmethod
    def _connect() -> Any:
        import psycopg

        params = connection.get_connection_params()
        for key in ("cursor_factory", "context", "prepare_threshold"):
            params.pop(key, None)
        return psycopg.connect(**params, autocommit=True)
