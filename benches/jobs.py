"""The no-op jobs the baselines run, and the phase of each benchmark task (shared with ``benches.tasks``).

Kept free of Django imports: the bare APScheduler baseline imports it without settings.
"""

from __future__ import annotations

import asyncio

# How the fires of N interval tasks fall within each interval: all at the same instant; spread over
# the first 100 ms (tasks created at slightly different times); spread evenly over the whole interval.
PHASES = ("aligned", "spread100", "uniform")


def phase_offset(index: int, count: int, phases: str, interval: float = 1.0) -> float:
    """Seconds after the whole interval at which task ``index`` of ``count`` fires."""
    if phases not in PHASES:
        raise ValueError(f"unknown phases {phases!r}: one of {', '.join(PHASES)}")
    if phases == "aligned" or count <= 0:
        return 0.0
    span = 0.1 if phases == "spread100" else interval
    return span * index / count


def noop() -> None:
    return None


async def _async_noop() -> None:
    return None


def async_noop() -> None:
    """The bare form of an ``async def`` job: APScheduler 3's thread pool cannot await, so a loop per run."""
    asyncio.run(_async_noop())
