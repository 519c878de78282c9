"""A test-only hook that kills one long-lived thread, to prove that a dead thread is noticed.

Each long-lived loop (``dispatcher``, ``watchdog``, ``finisher``, ``pickup``) guards every item it handles, so
that one bad task or value cannot end it. Should a loop end anyway (a bug outside that guard), the
scheduler must say so, turn unhealthy and exit for its supervisor to restart it. Tests prove that
by naming the thread in the environment variable ``SCHEDULER_TEST_KILL_THREAD`` (comma-separated):
that loop then raises ``InjectedFault`` outside its guard the first time it has an item. Unset,
as it always is outside the tests, it costs one lookup in an empty set per item.
"""

from __future__ import annotations

import os

KILL_ENV = "SCHEDULER_TEST_KILL_THREAD"
_KILL = frozenset(filter(None, (part.strip() for part in os.environ.get(KILL_ENV, "").split(","))))


class InjectedFault(RuntimeError):
    """Raised by ``maybe_die``: the fault a test asked for."""


def maybe_die(thread: str) -> None:
    if thread in _KILL:
        raise InjectedFault(f"{KILL_ENV} kills the {thread} thread")
