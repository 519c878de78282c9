"""The catch-up policy: which of a task's due fires run now, and why the others do not.

A pure function of the fire times, the clock and the task's policy (no database, no scheduler), so
that the rule is tested directly and the scheduler only applies its verdict.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

# After a long downtime, at most this many missed fires are recorded one by one (the rest in one summary).
MAX_MISSED_RECORDS = 100
# With catch_up="none", a fire at most this late still counts as on time.
ON_TIME_SECONDS = 5.0


@dataclass
class CatchUpVerdict:
    """``run``: the fire times to start now; ``missed``: (fire time, reason) of those that will not run."""

    run: list[datetime]
    missed: list[tuple[datetime, str]]


def split_due_fires(run_times: list[datetime], now: datetime, window_seconds: float, catch_up: str) -> CatchUpVerdict:
    """Apply the catch-up rules to the due fire times of one task, oldest first.

    Fires later than ``window_seconds`` are missed (at most ``MAX_MISSED_RECORDS`` one by one, then one
    summary for the rest); of those within the window, ``catch_up="none"`` drops the ones more than
    ``ON_TIME_SECONDS`` late, and the newest remaining fire runs while older ones are coalesced into it.
    """
    if len(run_times) == 1:
        # A fire in time is nearly every call (once per fire of every task): decided without the lists.
        lateness = (now - run_times[0]).total_seconds()
        if lateness <= window_seconds and (catch_up != "none" or lateness <= ON_TIME_SECONDS):
            return CatchUpVerdict(run=run_times, missed=[])
    window = timedelta(seconds=window_seconds)
    late = [t for t in run_times if now - t > window]
    in_time = [t for t in run_times if now - t <= window]
    missed = [
        (t, f"missed by {(now - t).total_seconds():.0f}s, beyond the {window_seconds:g}s catch-up window")
        for t in late[:MAX_MISSED_RECORDS]
    ]
    if rest := late[MAX_MISSED_RECORDS:]:
        missed.append(
            (rest[-1], f"{len(rest)} more fires between {rest[0].isoformat()} and {rest[-1].isoformat()} were missed")
        )
    if catch_up == "none":
        overdue = [t for t in in_time if now - t > timedelta(seconds=ON_TIME_SECONDS)]
        missed.extend((t, "not caught up: the task's catch_up policy is 'none'") for t in overdue)
        in_time = [t for t in in_time if t not in overdue]
    # Of the fires still due, the newest runs and the older ones are coalesced into it.
    missed.extend((t, f"coalesced into the fire at {in_time[-1].isoformat()}") for t in in_time[:-1])
    return CatchUpVerdict(run=in_time[-1:], missed=missed)
