from __future__ import annotations

import functools
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.processes import ProcessFactory, database_url


@pytest.fixture
def processes(transactional_db: None, tmp_path: Path) -> Iterator[ProcessFactory]:
    """Start real runscheduler / web / command processes against this test's database."""
    from django.db import connection

    factory = ProcessFactory(database_url(connection.settings_dict), tmp_path)
    try:
        yield factory
    finally:
        factory.close()


@pytest.fixture(autouse=True)
def _fresh_time_zone_transitions() -> None:
    """Each test computes the zone transitions it needs: a cache warmed by an earlier test (or by
    collection) would hide from that test the code that finds them (mutation testing saw none of it)."""
    from scheduler_app.triggers import _transitions_in_year

    _transitions_in_year.cache_clear()


@pytest.fixture(autouse=True)
def _runners_closed_after_the_test(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every ``TaskRunner`` a test made is closed after it, as the scheduler closes its own: a runner
    left open keeps its finisher and idle workers, and their database sessions (on PostgreSQL they
    kept the test database from being dropped at the end of the run)."""
    from scheduler_app.runner import TaskRunner

    made: list[TaskRunner] = []
    init = TaskRunner.__init__

    def noted(self: TaskRunner, *args: object, **kwargs: object) -> None:
        init(self, *args, **kwargs)  # type: ignore[arg-type]
        made.append(self)

    monkeypatch.setattr(TaskRunner, "__init__", noted)
    yield
    for runner in made:
        runner.close()


@pytest.fixture(autouse=True)
def _fresh_throttles() -> Iterator[None]:
    """Request rates and failed-login counts live in Django's cache: each test starts with none."""
    from django.core.cache import cache

    cache.clear()
    yield


@pytest.fixture(scope="session")
def django_db_modify_db_settings(django_db_modify_db_settings_parallel_suffix: None) -> None:
    """`make mutate` forks test sessions from one process (mutmut): each gets a database of its own."""
    import os

    if os.environ.get("MUTANT_UNDER_TEST"):
        from pytest_django.fixtures import _set_suffix_to_test_databases

        _set_suffix_to_test_databases(suffix=f"mutant{os.getpid()}")


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Under ``make mutate``: the quickest tests first, so that a mutant a quick test kills is not kept
    waiting for the slow ones (mutmut stops a mutant's tests at the first failure). Tests that use a
    transactional database stay after the others, as pytest-django orders them."""
    durations = _mutmut_test_durations()
    if not durations:
        return

    def order(item: pytest.Item) -> tuple[bool, float]:
        marker = item.get_closest_marker("django_db")
        transactional = bool(marker and marker.kwargs.get("transaction")) or "transactional_db" in getattr(
            item, "fixturenames", ()
        )
        return transactional, durations.get(item.nodeid, 0.0)

    items.sort(key=order)


def _mutmut_test_durations() -> dict[str, float]:
    """mutmut's measured duration of each test, while it runs a mutant's tests (empty otherwise)."""
    import os

    return _durations_under(os.environ.get("MUTANT_UNDER_TEST", ""))


@functools.cache
def _durations_under(mutant: str) -> dict[str, float]:
    # Read once per mutant, not per test (each test's time limit asks). Keyed by the mutant: mutmut
    # forks every mutant's session from a process that already ran its own ("stats").
    import json

    if not mutant or mutant in ("stats", "list_all_tests"):
        return {}
    try:
        return json.loads(Path("mutmut-stats.json").read_text())["duration_by_test"]
    except (OSError, ValueError, KeyError):
        return {}


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    """Under ``make mutate``: a test that runs over 5x its measured time (at least 15 s) fails. A mutant
    that makes a run never end keeps a test waiting out every deadline it has (30 s each) without using
    CPU, so mutmut's CPU-time limit did not stop it: a few such mutants took a quarter of the run's time."""
    import signal

    measured = _mutmut_test_durations().get(item.nodeid)
    if measured is None:
        yield
        return
    limit = max(15.0, 5 * measured)

    def over_time(signum: int, frame: object) -> None:
        raise TimeoutError(f"{item.nodeid} ran over {limit:.0f} s under this mutant (it was {measured:.1f} s)")

    previous = signal.signal(signal.SIGALRM, over_time)
    signal.setitimer(signal.ITIMER_REAL, limit)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
