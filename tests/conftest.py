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
