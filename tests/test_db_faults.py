"""PostgreSQL faults under a real ``runscheduler``: the server restarts, a long task runs.

These tests need the server that ``make test`` (``python -m tests.pgserver run -- pytest ...``)
starts for the session: they stop and start it. Outside such a session they are skipped with a
reason saying so; ``make test`` always runs them, and fails when it cannot get a server.
"""

from __future__ import annotations

import itertools
import signal
import socket
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path

import pytest
from django.db import connection, transaction
from django.utils import timezone

from scheduler_app import services
from scheduler_app.models import TaskExecutionRecord, TaskState
from tests.pgserver import PgServer
from tests.processes import ManagedProcess, ProcessFactory, wait_for

pytestmark = [pytest.mark.process, pytest.mark.postgres]
HOST = socket.gethostname()


@pytest.fixture
def pg_server() -> PgServer:
    server = PgServer.from_env()
    if connection.vendor != "postgresql" or server is None:
        pytest.skip("needs the PostgreSQL server of `make test` (python -m tests.pgserver run -- pytest ...)")
    return server


def ticks(**filters: object) -> list[TaskExecutionRecord]:
    return list(TaskExecutionRecord.objects.filter(task_id="tick", trigger="scheduled", **filters).order_by("id"))


def assert_every_fire_recorded_once(first_at) -> Counter:
    times = sorted(r.scheduled_at for r in ticks() if r.scheduled_at >= first_at)
    duplicates = [t for t, n in Counter(times).items() if n > 1]
    assert not duplicates, f"fires recorded twice: {duplicates}"
    holes = [(a, b) for a, b in itertools.pairwise(times) if b - a != timedelta(seconds=1)]
    assert not holes, f"fires with no record: {holes}"
    return Counter(r.status for r in ticks() if r.scheduled_at >= first_at)


def restart_under(scheduler: ManagedProcess, server: PgServer, until_log: str) -> tuple[float, float]:
    """Stop the server, wait until the scheduler's log shows ``until_log``, start it again.

    Returns (outage seconds, seconds from the server's return to the scheduler's next run).
    """
    seen = scheduler.output().count(until_log)
    server.stop()
    down = time.monotonic()
    wait_for(
        lambda: scheduler.output().count(until_log) > seen, timeout=20, message=f"the scheduler to log {until_log!r}"
    )
    assert scheduler.alive(), scheduler.output()
    server.start()
    back = time.monotonic()
    back_at = timezone.now()
    connection.close()  # the test's own connection died with the server
    wait_for(lambda: ticks(status="success", started_at__gt=back_at), timeout=20, message="a tick after the restart")
    recovered = time.monotonic() - back
    assert scheduler.alive(), scheduler.output()
    return back - down, recovered


def test_scheduler_survives_postgres_restarts_and_records_what_it_could_not(
    processes: ProcessFactory, pg_server: PgServer
) -> None:
    scheduler = processes.scheduler(["TickTask"])
    wait_for(lambda: len(ticks(status="success")) >= 2, timeout=15, message="two ticks before the fault")
    first_at = ticks(status="success")[0].scheduled_at

    # A short outage: the first failed fire, well inside the lease, so the leader keeps leading.
    short = restart_under(scheduler, pg_server, "could not be recorded")
    # A long one: the leader cannot renew its lease and steps down, then leads again.
    long = restart_under(scheduler, pg_server, "stepping down")

    wait_for(
        lambda: len(ticks(status="success", started_at__gt=timezone.now() - timedelta(seconds=5))) >= 2,
        timeout=15,
        message="steady ticks after the restarts",
    )
    assert scheduler.stop(signal.SIGTERM) == 0
    statuses = assert_every_fire_recorded_once(first_at)
    assert statuses["missed"] >= 1, statuses
    missed = TaskExecutionRecord.objects.filter(task_id="tick", status="missed")
    assert any("database" in r.message for r in missed), [r.message for r in missed]
    assert not TaskExecutionRecord.objects.filter(status="running").exists()
    assert TaskState.objects.get(task_id="tick").running_count == 0
    print(
        f"\nshort outage {short[0]:.1f}s: next run {short[1]:.2f}s after the database returned; "
        f"long outage {long[0]:.1f}s: next run {long[1]:.2f}s after; fires: {dict(statuses)}"
    )


def test_a_long_run_holds_no_transaction_or_lock(
    processes: ProcessFactory, pg_server: PgServer, tmp_path: Path
) -> None:
    marker = tmp_path / "long.running"
    processes.scheduler(["LongTask"], TEST_MARKER_FILE=str(marker), TEST_LONG_TASK_SECONDS="20")
    services.request_run("long", origin="test")
    wait_for(marker.exists, timeout=15, message="the long task to start")
    record = wait_for(lambda: TaskExecutionRecord.objects.filter(task_id="long", status="running").first(), timeout=10)
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND backend_type = 'client backend' AND pid <> pg_backend_pid() "
                "AND xact_start < now() - interval '1 second'"
            )
            assert cursor.fetchone()[0] == 0, "a session kept a transaction open for over a second"
        with transaction.atomic(), connection.cursor() as cursor:
            # NOWAIT fails at once if the scheduler holds a lock on the rows its run will update.
            cursor.execute(
                "SELECT 1 FROM scheduler_app_taskexecutionrecord WHERE id = %s FOR UPDATE NOWAIT", [record.pk]
            )
            cursor.execute("SELECT 1 FROM scheduler_app_taskstate WHERE task_name = 'long' FOR UPDATE NOWAIT")
        time.sleep(0.2)
    assert TaskExecutionRecord.objects.get(pk=record.pk).status == "running"


def test_a_run_that_ends_while_the_database_is_down_is_recorded_when_it_returns(
    processes: ProcessFactory, pg_server: PgServer, tmp_path: Path
) -> None:
    marker = tmp_path / "long.running"
    scheduler = processes.scheduler(["LongTask"], TEST_MARKER_FILE=str(marker), TEST_LONG_TASK_SECONDS="2")
    record = services.request_run("long", origin="test")
    wait_for(marker.exists, timeout=15, message="the long task to start")
    pg_server.stop()
    try:
        wait_for(
            lambda: "cannot record the outcome of 1 run(s) yet" in scheduler.output(),
            timeout=15,
            message="the run to end and fail to record its outcome",
        )
    finally:
        pg_server.start()
    connection.close()
    done = wait_for(
        lambda: TaskExecutionRecord.objects.filter(pk=record.pk).exclude(status__in=["pending", "running"]).first(),
        timeout=20,
        message="the outcome to be recorded once the database is back",
    )
    assert done.status == "success", (done.status, done.error)
    assert TaskState.objects.get(task_id="long").running_count == 0
    assert scheduler.alive()
    assert scheduler.stop(signal.SIGTERM) == 0


@pytest.mark.django_db
def test_postgresql_connections_probe_a_silent_server() -> None:
    """A network cut sends no RST: keepalives are what turn a dead server into an error."""
    connection.ensure_connection()
    raw = connection.connection
    sock = socket.socket(fileno=raw.pgconn.socket)
    try:
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 30
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL) == 10
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT) == 3
    finally:
        sock.detach()  # the socket belongs to libpq
