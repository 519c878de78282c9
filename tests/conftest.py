from __future__ import annotations

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
