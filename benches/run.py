"""The benchmark runner: ``python -m benches.run [--quick] [--scenarios ...]`` (``make bench``).

Every setup runs as real processes against a throw-away database in a temporary folder:

- ours: ``manage.py runscheduler`` with ``BENCH_TASKS`` generated no-op tasks (``benches.settings``);
- apscheduler-memory: APScheduler 3 alone, in-memory job store (``benches.aps_baseline``);
- django-apscheduler: BlockingScheduler + ``DjangoJobStore`` + its execution records, as its README;
- django-q2: its ``qcluster`` with the ORM broker and ``Schedule`` rows (``benches.djq_baseline``).

The ``phases`` scenario (``make bench-phases``; not in the default set) runs the matrix of phase
distributions (``--phases``) x task kinds (``--kind``) at ``--phase-sizes``, ours with a web process
(gunicorn, polled) beside it, and bare APScheduler with the same phases right after each run of ours.

Each figure is the median over ``--repeats`` runs; comparisons are ratios within the same run. The
quick mode (the test suite's smoke run) uses tiny sizes, one repeat and no baselines, so it needs
nothing beyond requirements-dev.txt. Results go to ``--out`` as JSON and Markdown; a full run also
draws the plot (matplotlib) and rewrites the table in BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from benches.jobs import PHASES

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = ("precision", "throughput", "idle", "api")
# Scenarios run only when named (--scenarios).
EXTRA_SCENARIOS = ("phases",)
KINDS = ("sync", "async")
RAN = ("success", "failed", "timeout", "running", "interrupted")
PLOT = ROOT / "benches" / "plot.png"
REPORT = ROOT / "BENCHMARKS.md"
# Seconds after a window before the stop, so that fires meant for its last moments can start.
SETTLE = 1.5
BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"
PHASES_BEGIN, PHASES_END = "<!-- bench-phases:begin -->", "<!-- bench-phases:end -->"
# The issue 14 target: lateness p99 at most max(25 ms, this many times bare APScheduler's).
TARGET_FLOOR_MS, TARGET_FACTOR = 25.0, 2.0


@dataclass
class Options:
    quick: bool = False
    repeats: int = 3
    scenarios: tuple[str, ...] = SCENARIOS
    baselines: bool = True
    postgres: bool = True
    precision_sizes: tuple[int, ...] = (10, 200, 1000)
    throughput_sizes: tuple[int, ...] = (1000, 2000, 4000)
    warmup: float = 2.0
    window: float = 5.0
    idle_tasks: int = 1000
    idle_window: float = 5.0
    api_tasks: int = 1000
    api_rows: int = 1_000_000
    api_requests: int = 30
    out: Path = ROOT / "benches" / "results"
    publish: bool = True
    command: str = ""
    phase_sizes: tuple[int, ...] = (200, 1000)
    phases: tuple[str, ...] = PHASES
    kinds: tuple[str, ...] = KINDS
    web: bool = True

    @classmethod
    def quick_mode(cls) -> Options:
        return cls(
            quick=True,
            repeats=1,
            baselines=False,
            postgres=False,
            precision_sizes=(5,),
            throughput_sizes=(20,),
            warmup=1.5,
            window=2.0,
            idle_tasks=50,
            idle_window=1.0,
            api_tasks=20,
            api_rows=2000,
            api_requests=5,
            publish=False,
            phase_sizes=(5,),
        )


# -- small helpers -----------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


def proc_cpu_seconds(pids: list[int]) -> float:
    """utime + stime of these processes (all their threads), from /proc."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        with suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / ticks
    return total


def proc_rss_mb(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        with suppress(OSError):
            match = re.search(r"VmRSS:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text())
            total += int(match.group(1)) if match else 0
    return total / 1024


def process_tree(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with suppress(OSError):
                ppid = int(entry.joinpath("stat").read_text().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def machine() -> dict[str, Any]:
    cpu = ""
    with suppress(OSError):
        match = re.search(r"model name\s*:\s*(.+)", Path("/proc/cpuinfo").read_text())
        cpu = match.group(1) if match else ""
    mem = ""
    with suppress(OSError):
        match = re.search(r"MemTotal:\s+(\d+) kB", Path("/proc/meminfo").read_text())
        mem = f"{int(match.group(1)) / 1024 / 1024:.1f} GiB" if match else ""
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory": mem,
        "os": platform.platform(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "loadavg_start": os.getloadavg()[0],
        "commit": commit.stdout.strip(),
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


# -- databases ---------------------------------------------------------------------------------


class Database(ABC):
    """A throw-away database a setup runs against, and a way to read results from it."""

    url: str
    engine: str

    @abstractmethod
    def rows(self, sql: str, params: tuple = ()) -> list[tuple]:
        """The rows of a query against this database."""

    def drop(self) -> None:  # noqa: B027 - optional: most databases need no clean-up
        """Remove the database, where that takes more than deleting its folder."""


class SqliteDatabase(Database):
    engine = "sqlite"

    def __init__(self, path: Path) -> None:
        self.path = path
        self.url = f"sqlite:///{path}"

    def rows(self, sql: str, params: tuple = ()) -> list[tuple]:
        connection = sqlite3.connect(self.path, timeout=30)
        try:
            return connection.execute(sql.replace("%s", "?"), params).fetchall()
        finally:
            connection.close()


class PostgresDatabase(Database):
    engine = "postgresql"

    def __init__(self, server_url: str, name: str, admin: Callable[[str], None]) -> None:
        self.name = name
        self.url = server_url.rsplit("/", 1)[0] + f"/{name}"
        self._admin = admin

    def rows(self, sql: str, params: tuple = ()) -> list[tuple]:
        import psycopg

        with psycopg.connect(self.url.replace("postgres://", "postgresql://")) as connection:
            return connection.execute(sql, params).fetchall()

    def drop(self) -> None:
        with suppress(Exception):
            self._admin(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')


def timestamp(value: Any) -> float | None:
    """A DATETIME column as epoch seconds (SQLite gives naive UTC text, PostgreSQL aware datetimes)."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.timestamp()


class Workspace:
    """Temporary folder, migrated template databases, and an optional PostgreSQL server."""

    def __init__(self, options: Options) -> None:
        self.options = options
        self.dir = Path(tempfile.mkdtemp(prefix="scheduler-bench-"))
        self._templates: dict[tuple[str, bool], Any] = {}
        self._count = 0
        self.pg_server: Any = None
        self.pg_error = ""

    def close(self) -> None:
        if self.pg_server is not None:
            self.pg_server.destroy()
        shutil.rmtree(self.dir, ignore_errors=True)

    def env(self, database: Database, tasks: int = 0, interval: int = 1, djq: bool = False) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TEST_")}
        env.update(
            DJANGO_SETTINGS_MODULE="benches.settings",
            DATABASE_URL=database.url,
            BENCH_TASKS=str(tasks),
            BENCH_INTERVAL=str(interval),
            PYTHONUNBUFFERED="1",
        )
        if djq:
            env["BENCH_DJANGO_Q"] = "1"
        return env

    def migrate(self, database: Database, djq: bool) -> None:
        result = subprocess.run(
            [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
            cwd=ROOT,
            env=self.env(database, djq=djq),
            capture_output=True,
            text=True,
            timeout=300,
        )
        if result.returncode != 0:
            raise RuntimeError(f"migrate failed:\n{result.stdout}\n{result.stderr}")

    def postgres(self) -> Any:
        if self.pg_server is None and not self.pg_error:
            try:
                sys.path.insert(0, str(ROOT))
                from tests.pgserver import PgServer

                server = PgServer.create()
                server.start()
                server.create_database()
                self.pg_server = server
            except Exception as exc:
                self.pg_error = f"{type(exc).__name__}: {exc}"
        return self.pg_server

    def _pg_admin(self, sql: str) -> None:
        import psycopg

        url = self.pg_server.url.rsplit("/", 1)[0] + "/postgres"
        with psycopg.connect(url.replace("postgres://", "postgresql://"), autocommit=True) as connection:
            connection.execute(sql)

    def database(self, engine: str = "sqlite", djq: bool = False) -> Database:
        """A fresh, migrated database (copied from a template migrated once per engine)."""
        self._count += 1
        key = (engine, djq)
        if engine == "sqlite":
            template = self._templates.get(key)
            if template is None:
                template = SqliteDatabase(self.dir / f"template-{int(djq)}.sqlite3")
                self.migrate(template, djq)
                connection = sqlite3.connect(template.path)
                connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                connection.close()
                self._templates[key] = template
            database = SqliteDatabase(self.dir / f"run-{self._count}.sqlite3")
            shutil.copyfile(template.path, database.path)
            return database
        if self.postgres() is None:
            raise RuntimeError(self.pg_error)
        template_name = f"bench_template_{int(djq)}"
        if key not in self._templates:
            self._pg_admin(f'CREATE DATABASE "{template_name}"')
            self.migrate(PostgresDatabase(self.pg_server.url, template_name, self._pg_admin), djq)
            self._templates[key] = template_name
        name = f"bench_run_{self._count}"
        self._pg_admin(f'CREATE DATABASE "{name}" TEMPLATE "{template_name}"')
        return PostgresDatabase(self.pg_server.url, name, self._pg_admin)


@contextmanager
def started(args: list[str], env: dict[str, str], log_path: Path) -> Iterator[subprocess.Popen]:
    """A subprocess with its output in ``log_path``; stopped (SIGTERM, then SIGKILL) on exit."""
    with log_path.open("ab") as output:
        process = subprocess.Popen(
            [sys.executable, *args], cwd=ROOT, env=env, stdout=output, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        try:
            yield process
        finally:
            stop_process(process)


def stop_process(process: subprocess.Popen, timeout: float = 30.0) -> None:
    if process.poll() is None:
        with suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def wait_until(predicate: Callable[[], Any], timeout: float, what: str, process: subprocess.Popen | None = None,
               log_path: Path | None = None) -> Any:  # fmt: skip
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if process is not None and process.poll() is not None:
            tail = log_path.read_text(errors="replace")[-3000:] if log_path else ""
            raise RuntimeError(f"{what}: the process exited ({process.returncode}):\n{tail}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.02)


def log_marker(log_path: Path, pattern: str) -> Callable[[], re.Match | None]:
    def check() -> re.Match | None:
        with suppress(OSError):
            return re.search(pattern, log_path.read_text(errors="replace"))
        return None

    return check


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def web_beside(ws: Workspace, env: dict[str, str]) -> Iterator[dict[str, int]]:
    """A web process on the same database (gunicorn, one worker, as deployed), polled as a dashboard
    would be: the readiness probe (a database read) twice a second. Yields the poll counts."""
    import threading
    import urllib.error
    import urllib.request

    port = free_port()
    log_path = ws.dir / f"web-{ws._count}.log"
    args = ["-m", "gunicorn", "scheduler_project.wsgi:application", "--bind", f"127.0.0.1:{port}", "--workers", "1",
            "--threads", "2", "--access-logfile", "-"]  # fmt: skip
    counts = {"polls": 0, "failed": 0}
    stop = threading.Event()

    def get(page: str) -> int:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/scheduler/health/{page}", timeout=5) as response:
                return response.status
        except urllib.error.HTTPError as exc:
            return exc.code
        except OSError:
            return 0

    def poll() -> None:
        # Any answer counts (ready is 503 beside the bare baseline, which registers no scheduler).
        while not stop.wait(0.5):
            counts["polls"] += 1
            counts["failed"] += get("ready") == 0

    with started(args, env, log_path) as process:
        wait_until(lambda: get("live") == 200, 120, "the web process to answer", process, log_path)
        poller = threading.Thread(target=poll, daemon=True)
        poller.start()
        try:
            yield counts
        finally:
            stop.set()
            poller.join(timeout=10)


# -- fire analysis -----------------------------------------------------------------------------


@dataclass
class Fire:
    task: str
    scheduled: float
    started: float | None
    finished: float | None


def analyse_fires(fires: list[Fire], tasks: int, interval: float, w0: float, w1: float) -> dict[str, Any]:
    """Lateness of the fires meant for [w0, w1), fires missed, and runs recorded per second."""
    phase: dict[str, float] = {}
    for fire in fires:
        phase.setdefault(fire.task, fire.scheduled % interval)
    expected = 0
    for index in range(tasks):
        p = phase.get(f"noop_{index:05d}")
        if p is None:
            expected += round((w1 - w0) / interval)
        else:
            expected += math.ceil((w1 - p) / interval) - math.ceil((w0 - p) / interval)
    in_window = [f for f in fires if w0 <= f.scheduled < w1]
    ran = [f for f in in_window if f.started is not None]
    lateness = [(f.started - f.scheduled) * 1000 for f in ran]
    finished = sum(1 for f in fires if f.finished is not None and w0 <= f.finished < w1)
    return {
        "fires_expected": expected,
        "fires_run": len(ran),
        "fires_missed": max(0, expected - len(ran)),
        "lateness_p50_ms": percentile(lateness, 0.50),
        "lateness_p99_ms": percentile(lateness, 0.99),
        "lateness_max_ms": max(lateness) if lateness else None,
        "runs_per_s": finished / (w1 - w0),
        # How far apart within the interval the fires fell (the phases a run was given, as they came out).
        "phase_span_ms": (max(phase.values()) - min(phase.values())) * 1000 if phase else None,
    }


# -- setups: one fire run each -----------------------------------------------------------------


def run_ours(ws: Workspace, tasks: int, interval: int, warmup: float, window: float, engine: str = "sqlite",
             idle: bool = False, kind: str = "sync", phases: str = "",
             web: bool = False) -> dict[str, Any]:  # fmt: skip
    database = ws.database(engine)
    log_path = ws.dir / f"ours-{ws._count}.log"
    env = {**ws.env(database, tasks, interval), "BENCH_TASK_KIND": kind, "BENCH_PHASES": phases}
    try:
        beside = ExitStack()
        polls = beside.enter_context(web_beside(ws, env)) if web else None
        t0 = time.time()
        with beside, started(["manage.py", "runscheduler"], env, log_path) as process:
            wait_until(
                lambda: database.rows(
                    "SELECT 1 FROM scheduler_app_schedulerprocess WHERE pid = %s AND role = 'active'", (process.pid,)
                ),
                180, "runscheduler to become active", process, log_path,
            )  # fmt: skip
            startup = time.time() - t0
            time.sleep(warmup)
            cpu0, w0 = proc_cpu_seconds([process.pid]), time.time()
            time.sleep(window)
            cpu1, w1 = proc_cpu_seconds([process.pid]), time.time()
            rss = proc_rss_mb([process.pid])
            if not idle:
                time.sleep(SETTLE)
                # Fires still queued at the stop are not what we measure; do not wait for them.
                os.killpg(process.pid, signal.SIGKILL)
        result: dict[str, Any] = {
            "startup_s": startup,
            "cpu_percent": 100 * (cpu1 - cpu0) / (w1 - w0),
            "rss_mb": rss,
        }
        if polls is not None:
            result.update(web_polls=polls["polls"], web_polls_failed=polls["failed"])
        if not idle:
            rows = database.rows(
                "SELECT task_name, status, scheduled_at, started_at, finished_at"
                " FROM scheduler_app_taskexecutionrecord WHERE trigger = 'scheduled'"
            )
            fires = [
                Fire(name, timestamp(sched), *((timestamp(start), timestamp(end)) if status in RAN else (None, None)))
                for name, status, sched, start, end in rows
            ]
            result.update(analyse_fires(fires, tasks, interval, w0, w1))
            # Every fire of the window that started must be recorded as finished, and none other than ran.
            window_rows = [(status, timestamp(sched)) for _, status, sched, _, _ in rows]
            result["records_not_ran"] = sum(1 for st, at in window_rows if w0 <= at < w1 and st not in RAN)
            result["records_unfinished"] = sum(
                1 for f in fires if w0 <= f.scheduled < w1 and f.started is not None and f.finished is None
            )
        return result
    finally:
        database.drop()


def run_aps(ws: Workspace, store: str, tasks: int, interval: int, warmup: float, window: float,
            idle: bool = False, phases: str = "aligned", kind: str = "sync",
            web: bool = False) -> dict[str, Any]:  # fmt: skip
    database = ws.database("sqlite")
    log_path = ws.dir / f"aps-{store}-{ws._count}.log"
    out = ws.dir / f"aps-{store}-{ws._count}.json"
    t0 = time.time()
    # The first fire comes after start-up and the warm-up, like ours (start-up of 1,000 DjangoJobStore
    # jobs takes seconds, and fires due before the scheduler runs would be measured as late).
    args = ["-m", "benches.aps_baseline", "--store", store, "--tasks", str(tasks), "--interval", str(interval),
            "--out", str(out), "--first-fire", str(86400 if idle else 1), "--phases", phases,
            "--kind", kind]  # fmt: skip
    beside = ExitStack()
    if web:
        beside.enter_context(web_beside(ws, ws.env(database, 0, interval)))
    with beside, started(args, ws.env(database, 0, interval), log_path) as process:
        ready = wait_until(log_marker(log_path, r"READY ([\d.]+)"), 180, f"{store} scheduler start", process, log_path)
        startup = float(ready.group(1)) - t0
        time.sleep(warmup)
        cpu0, w0 = proc_cpu_seconds([process.pid]), time.time()
        time.sleep(window)
        cpu1, w1 = proc_cpu_seconds([process.pid]), time.time()
        rss = proc_rss_mb([process.pid])
        time.sleep(0 if idle else SETTLE)
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=60)
    result: dict[str, Any] = {"startup_s": startup, "cpu_percent": 100 * (cpu1 - cpu0) / (w1 - w0), "rss_mb": rss}
    if not idle:
        data = json.loads(out.read_text())
        fires = [Fire(*fire) for fire in data["fires"]]
        result.update(analyse_fires(fires, tasks, interval, w0, w1))
    return result


def run_djq_idle(ws: Workspace, tasks: int, window: float) -> dict[str, Any]:
    database = ws.database("sqlite", djq=True)
    env = ws.env(database, djq=True)
    subprocess.run([sys.executable, "-m", "benches.djq_baseline", "setup", "--schedules", str(tasks)],
                   cwd=ROOT, env=env, check=True, capture_output=True, timeout=120)  # fmt: skip
    log_path = ws.dir / f"djq-{ws._count}.log"
    t0 = time.time()
    with started(["manage.py", "qcluster"], env, log_path) as process:
        wait_until(log_marker(log_path, r"running"), 120, "qcluster to run", process, log_path)
        startup = time.time() - t0
        time.sleep(2.0)
        pids = process_tree(process.pid)
        cpu0, w0 = proc_cpu_seconds(pids), time.time()
        time.sleep(window)
        cpu1, w1 = proc_cpu_seconds(pids), time.time()
        rss = proc_rss_mb(pids)
        os.killpg(process.pid, signal.SIGKILL)
    return {"startup_s": startup, "cpu_percent": 100 * (cpu1 - cpu0) / (w1 - w0), "rss_mb": rss,
            "processes": len(pids)}  # fmt: skip


def run_djq_burst(ws: Workspace, tasks: int) -> dict[str, Any]:
    """N due schedules queued by django-q2's scheduler pass, drained by its cluster: runs/s recorded."""
    database = ws.database("sqlite", djq=True)
    env = ws.env(database, djq=True)
    subprocess.run([sys.executable, "-m", "benches.djq_baseline", "setup", "--schedules", str(tasks), "--due"],
                   cwd=ROOT, env=env, check=True, capture_output=True, timeout=120)  # fmt: skip
    log_path = ws.dir / f"djq-{ws._count}.log"
    with started(["manage.py", "qcluster"], env, log_path) as process:
        wait_until(log_marker(log_path, r"running"), 120, "qcluster to run", process, log_path)
        fired = subprocess.run([sys.executable, "-m", "benches.djq_baseline", "fire"], cwd=ROOT, env=env,
                               check=True, capture_output=True, text=True, timeout=300)  # fmt: skip
        t0 = float(re.search(r"FIRED ([\d.]+)", fired.stdout).group(1))
        count = lambda: database.rows("SELECT COUNT(*) FROM django_q_task")[0][0]  # noqa: E731
        with suppress(RuntimeError):
            wait_until(lambda: count() >= tasks, 120, "django-q2 to record the runs", process, log_path)
        rows = database.rows("SELECT MAX(stopped), COUNT(*) FROM django_q_task")
        # Measured; its graceful stop takes ~25 s and tells nothing.
        os.killpg(process.pid, signal.SIGKILL)
    last, done = timestamp(rows[0][0]), rows[0][1]
    return {"runs": done, "runs_per_s": done / (last - t0) if last and done else 0.0}


# -- scenarios ---------------------------------------------------------------------------------


class Repeats(Protocol):
    repeats: int


def repeated(options: Repeats, what: str, run: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run ``run`` ``repeats`` times; the medians of each figure, and the raw runs."""
    runs = []
    for attempt in range(options.repeats):
        log(f"{what} ({attempt + 1}/{options.repeats})")
        try:
            runs.append(run())
        except Exception as exc:
            log(f"{what} failed: {exc}")
            runs.append({"error": str(exc)[-2000:]})
    good = [r for r in runs if "error" not in r]
    summary: dict[str, Any] = {}
    for key in sorted({k for r in good for k in r}):
        summary[key] = median([r.get(key) for r in good])
    if not good:
        summary["error"] = runs[-1]["error"]
    summary["runs"] = runs
    return summary


def fire_setups(options: Options, ws: Workspace, scenario: str, engine: str = "sqlite") -> dict[str, Callable]:
    """The setups of a fire run. "ours" runs plain ``def run()`` no-ops, the same kind of job as the
    baselines' functions; the async form (the design's preferred one) costs an event loop per run and
    is measured apart, at the precision sizes."""
    setups: dict[str, Callable[[int], dict]] = {
        "ours": lambda n: run_ours(ws, n, 1, options.warmup, options.window, engine),
    }
    if engine != "sqlite":
        return setups
    if scenario == "precision":
        setups["ours-async"] = lambda n: run_ours(ws, n, 1, options.warmup, options.window, engine, kind="async")
    if options.baselines:
        if scenario == "precision":
            # Without a database it records nothing, so it has no place in the throughput table.
            setups["apscheduler-memory"] = lambda n: run_aps(ws, "memory", n, 1, options.warmup, options.window)
        setups["django-apscheduler"] = lambda n: run_aps(ws, "django", n, 1, options.warmup, options.window)
    return setups


def scenario_precision(options: Options, ws: Workspace) -> dict[str, Any]:
    results: dict[str, Any] = {}
    sizes = options.precision_sizes
    for setup, run in fire_setups(options, ws, "precision").items():
        # The async form at the middle size only: it is the same scheduler, with a dearer run.
        chosen = (sizes[len(sizes) // 2],) if setup == "ours-async" else sizes
        if setup == "ours-async" and options.quick:
            continue
        results[setup] = {str(n): repeated(options, f"precision {setup} N={n}", lambda n=n, run=run: run(n))
                          for n in chosen}  # fmt: skip
    if options.baselines:
        results["django-q2"] = {"not_applicable": "django-q2 schedules run at most once a minute, checked every 30 s"}
    return results


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    good = [r for r in runs if "error" not in r]
    summary: dict[str, Any] = {key: median([r.get(key) for r in good]) for key in sorted({k for r in good for k in r})}
    if not good and runs:
        summary["error"] = runs[-1]["error"]
    summary["runs"] = runs
    return summary


def scenario_phases(options: Options, ws: Workspace) -> dict[str, Any]:
    """Each cell (phases, kind, N): ours (web process beside it), then bare APScheduler with the same
    phases and the same kind of job, alternating run by run so that both see the same load."""
    results: dict[str, Any] = {}
    for n in options.phase_sizes:
        for phases in options.phases:
            for kind in options.kinds:
                ours: list[dict[str, Any]] = []
                bare: list[dict[str, Any]] = []
                for attempt in range(options.repeats):
                    what = f"phases {phases} {kind} N={n} ({attempt + 1}/{options.repeats})"
                    for label, runs, run in (
                        ("ours", ours, lambda n=n, p=phases, k=kind: run_ours(
                            ws, n, 1, options.warmup, options.window, kind=k, phases=p, web=options.web)),
                        ("apscheduler", bare, lambda n=n, p=phases, k=kind: run_aps(
                            ws, "memory", n, 1, options.warmup, options.window, phases=p, kind=k, web=options.web)),
                    ):  # fmt: skip
                        log(f"{what} {label}")
                        try:
                            runs.append(run())
                        except Exception as exc:
                            log(f"{what} {label} failed: {exc}")
                            runs.append({"error": str(exc)[-2000:]})
                results[f"{phases}/{kind}/{n}"] = {
                    "phases": phases, "kind": kind, "tasks": n, "ours": summarize(ours),
                    "apscheduler": summarize(bare),
                }  # fmt: skip
    return results


def scenario_throughput(options: Options, ws: Workspace) -> dict[str, Any]:
    results: dict[str, Any] = {}
    engines = ["sqlite"]
    if options.postgres and ws.postgres() is not None:
        engines.append("postgresql")
    for engine in engines:
        for setup, run in fire_setups(options, ws, "throughput", engine).items():
            label = setup if engine == "sqlite" else f"{setup} (postgresql)"
            results[label] = {str(n): repeated(options, f"throughput {label} N={n}", lambda n=n, run=run: run(n))
                              for n in options.throughput_sizes}  # fmt: skip
    if options.baselines:
        results["django-q2"] = {
            str(n): repeated(options, f"throughput django-q2 N={n}", lambda n=n: run_djq_burst(ws, n))
            for n in options.throughput_sizes
        }
    if options.postgres and ws.pg_server is None:
        results["postgresql"] = {"not_available": ws.pg_error}
    return results


def scenario_idle(options: Options, ws: Workspace) -> dict[str, Any]:
    n, window = options.idle_tasks, options.idle_window
    results = {"ours": repeated(options, f"idle ours N={n}", lambda: run_ours(ws, n, 86400, 2.0, window, idle=True))}
    if options.baselines:
        results["apscheduler-memory"] = repeated(
            options, "idle apscheduler-memory", lambda: run_aps(ws, "memory", n, 86400, 2.0, window, idle=True)
        )
        results["django-apscheduler"] = repeated(
            options, "idle django-apscheduler", lambda: run_aps(ws, "django", n, 86400, 2.0, window, idle=True)
        )
        results["django-q2"] = repeated(options, "idle django-q2", lambda: run_djq_idle(ws, n, window))
    return results


def scenario_api(options: Options, ws: Workspace) -> dict[str, Any]:
    database = ws.database("sqlite")
    env = ws.env(database, options.api_tasks)
    log(f"api: populating {options.api_tasks} tasks and {options.api_rows} history rows")
    started_at = time.time()
    populated = subprocess.run(
        [sys.executable, "-m", "benches.api_probe", "populate", "--rows", str(options.api_rows)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200,
    )  # fmt: skip
    if populated.returncode != 0:
        raise RuntimeError(f"populate failed:\n{populated.stderr[-3000:]}")
    populate_s = time.time() - started_at

    def measure() -> dict[str, Any]:
        result = subprocess.run(
            [sys.executable, "-m", "benches.api_probe", "measure", "--requests", str(options.api_requests)],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        if result.returncode != 0:
            raise RuntimeError(f"measure failed:\n{result.stderr[-3000:]}")
        pages = json.loads(result.stdout.strip().splitlines()[-1])
        return {f"{page}.{key}": value for page, figures in pages.items() for key, value in figures.items()
                if key != "url"}  # fmt: skip

    summary = repeated(options, "api ours", measure)
    summary["populate_s"] = populate_s
    summary["tasks"] = options.api_tasks
    summary["rows"] = options.api_rows
    return {"ours": summary}


# -- report ------------------------------------------------------------------------------------


def fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def ratio(ours: Any, theirs: Any) -> str:
    if not ours or not theirs:
        return "-"
    return f"{ours / theirs:.2f}"


def markdown(results: dict[str, Any]) -> str:
    out = []
    m = results["machine"]
    out.append(f"Command: `{results['command']}`  ")
    out.append(f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory']}, {m['os']}, Python {m['python']}, "
               f"SQLite {m['sqlite']}; load average {m['loadavg_start']:.2f} at start; commit {m['commit']}; "
               f"{m['date']}; {results['elapsed_s']:.0f} s.  ")  # fmt: skip
    out.append(f"Medians over {results['options']['repeats']} repeat(s).")
    s = results["scenarios"]
    for name, title, keys in (
        ("precision", "Fire precision: N interval tasks at 1 s",
         ["lateness_p50_ms", "lateness_p99_ms", "lateness_max_ms", "fires_missed", "fires_expected", "cpu_percent"]),
        ("throughput", "Throughput: recorded runs/s of N no-op tasks at 1 s (offered N/s)",
         ["runs_per_s", "lateness_p50_ms", "lateness_p99_ms", "fires_missed", "cpu_percent"]),
    ):  # fmt: skip
        if name not in s:
            continue
        out += ["", f"### {title}", "", "| setup | N | " + " | ".join(keys) + " |",
                "|---" * (len(keys) + 2) + "|"]  # fmt: skip
        notes = []
        for setup, by_n in s[name].items():
            if "not_applicable" in by_n or "not_available" in by_n:
                notes.append(f"{setup}: {by_n.get('not_applicable') or by_n.get('not_available')}")
                continue
            for n, fig in by_n.items():
                if "error" in fig:
                    notes.append(f"{setup} N={n}: failed: {fig['error'][:200]}")
                    continue
                out.append(f"| {setup} | {n} | " + " | ".join(fmt(fig.get(k)) for k in keys) + " |")
        ours = s[name].get("ours", {})
        ratios = []
        for setup, by_n in s[name].items():
            if setup.startswith("ours") or "not_applicable" in by_n or "not_available" in by_n:
                continue
            if setup == "django-q2":
                # A burst of N queued runs drained by its cluster, not N/s offered: compare capacities,
                # the best runs/s each reached at any N.
                best = max((f.get("runs_per_s") or 0 for f in by_n.values() if isinstance(f, dict)), default=0)
                mine_best = max((f.get("runs_per_s") or 0 for f in ours.values() if isinstance(f, dict)), default=0)
                ratios.append(f"| {setup} | best of any N | runs/s {ratio(mine_best, best)} | |")
                continue
            for n, fig in by_n.items():
                mine = ours.get(n, {})
                if name == "precision":
                    p99 = ratio(mine.get("lateness_p99_ms"), fig.get("lateness_p99_ms"))
                    p50 = ratio(mine.get("lateness_p50_ms"), fig.get("lateness_p50_ms"))
                    ratios.append(f"| {setup} | {n} | p99 {p99} | p50 {p50} |")
                else:
                    runs = ratio(mine.get("runs_per_s"), fig.get("runs_per_s"))
                    ratios.append(f"| {setup} | {n} | runs/s {runs} | |")
        if ratios:
            out += ["", "Ours / theirs (lateness: lower is better; runs/s: higher is better):", "",
                    "| vs | N | ratio | |", "|---|---|---|---|", *ratios]  # fmt: skip
        out += [f"- {note}" for note in notes]
    if "idle" in s:
        keys = ["startup_s", "cpu_percent", "rss_mb"]
        out += [
            "",
            f"### Idle: {results['options']['idle_tasks']} tasks, next fire in a day",
            "",
            "| setup | start-up to ready (s) | CPU % | RSS (MB) | ours/theirs CPU |",
            "|---|---|---|---|---|",
        ]
        ours = s["idle"].get("ours", {})
        for setup, fig in s["idle"].items():
            out.append(
                f"| {setup} | "
                + " | ".join(fmt(fig.get(k), 2) for k in keys)
                + f" | {ratio(ours.get('cpu_percent'), fig.get('cpu_percent')) if setup != 'ours' else ''} |"
            )
    if "api" in s:
        fig = s["api"]["ours"]
        out += [
            "",
            f"### API: {fig.get('tasks')} tasks, {fig.get('rows')} history rows (in-process test client,"
            " staff session)",
            "",
            "| page | status | p50 ms | p99 ms | queries |",
            "|---|---|---|---|---|",
        ]
        for page in ("status", "task_list", "history"):
            out.append(
                f"| {page} | {fmt(fig.get(page + '.status'))} | {fmt(fig.get(page + '.p50_ms'))} | "
                f"{fmt(fig.get(page + '.p99_ms'))} | {fmt(fig.get(page + '.queries'))} |"
            )
    errors = {k: v for k, v in results.get("errors", {}).items()}
    out += [f"- scenario {k} failed: {v[:300]}" for k, v in errors.items()]
    return "\n".join(out) + "\n"


def target_ms(bare_p99: float | None) -> float | None:
    return None if bare_p99 is None else max(TARGET_FLOOR_MS, TARGET_FACTOR * bare_p99)


def markdown_phases(results: dict[str, Any]) -> str:
    m = results["machine"]
    o = results["options"]
    out = [
        f"Command: `{results['command']}`  ",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['os']}, Python {m['python']}, SQLite {m['sqlite']}; load "
        f"average {m['loadavg_start']:.2f} at start, {m.get('loadavg_end', 0):.2f} at end; commit {m['commit']}; "
        f"{m['date']}; {results['elapsed_s']:.0f} s.  ",
        f"Medians over {o['repeats']} repeats of a {o['window']:g} s window each; ours and bare APScheduler "
        f"alternate run by run; web process beside both: {'yes' if o.get('web') else 'no'}. Target: ours p99 <= "
        f"max({TARGET_FLOOR_MS:g} ms, {TARGET_FACTOR:g} x bare p99).",
        "",
        "| phases | kind | N | ours p50 ms | ours p99 ms | bare p50 ms | bare p99 ms | p99 ours/bare | target ms "
        "| met | fires lost (ours, all repeats) | runs recorded / expected (ours) | bare lost |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for cell in results["scenarios"].get("phases", {}).values():
        ours, bare = cell["ours"], cell["apscheduler"]
        good = [r for r in ours["runs"] if "error" not in r]
        bare_good = [r for r in bare["runs"] if "error" not in r]
        lost = sum(r.get("fires_missed", 0) for r in good)
        recorded = sum(r.get("fires_run", 0) - r.get("records_unfinished", 0) for r in good)
        expected = sum(r.get("fires_expected", 0) for r in good)
        target = target_ms(bare.get("lateness_p99_ms"))
        p99 = ours.get("lateness_p99_ms")
        met = "-" if target is None or p99 is None else ("yes" if p99 <= target and lost == 0 else "**no**")
        errors = len(ours["runs"]) - len(good) + len(bare["runs"]) - len(bare_good)
        out.append(
            f"| {cell['phases']} | {cell['kind']} | {cell['tasks']} | {fmt(ours.get('lateness_p50_ms'))} | "
            f"{fmt(p99)} | {fmt(bare.get('lateness_p50_ms'))} | {fmt(bare.get('lateness_p99_ms'))} | "
            f"{ratio(p99, bare.get('lateness_p99_ms'))} | {fmt(target)} | {met} | {lost} | {recorded} / {expected} | "
            f"{sum(r.get('fires_missed', 0) for r in bare_good)}{f' ({errors} failed runs)' if errors else ''} |"
        )
    errors = results.get("errors", {})
    out += [f"- scenario {k} failed: {v[:300]}" for k, v in errors.items() if k == "phases"]
    return "\n".join(out) + "\n"


COLOURS = {
    "ours": "tab:blue",
    "ours-async": "tab:cyan",
    "ours (postgresql)": "tab:purple",
    "apscheduler-memory": "tab:green",
    "django-apscheduler": "tab:red",
    "django-q2": "tab:orange",
}


def plot(results: dict[str, Any], path: Path) -> str | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (pip install -r benches/requirements.txt)"
    s = results["scenarios"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4), dpi=80)

    def series(by_n: dict[str, Any], key: str) -> list[tuple[int, float]]:
        points = [(int(n), f.get(key)) for n, f in by_n.items() if isinstance(f, dict) and n.isdigit()]
        return [(n, v) for n, v in points if v]

    for setup, by_n in s.get("precision", {}).items():
        if points := series(by_n, "lateness_p99_ms"):
            left.plot(*zip(*points, strict=True), marker="o", color=COLOURS.get(setup), label=setup)
    left.axhline(25, linestyle=":", color="grey", label="target 25 ms")
    left.set(xscale="log", yscale="log", xlabel="tasks at 1 s, all in phase (fires/s)", ylabel="lateness p99 (ms)",
             title="Fire precision (p99 lateness)")  # fmt: skip
    left.legend(fontsize=8)
    sizes = results["options"]["throughput_sizes"]
    for setup, by_n in s.get("throughput", {}).items():
        if points := series(by_n, "runs_per_s"):
            label = "django-q2 (burst of N queued)" if setup == "django-q2" else setup
            right.plot(*zip(*points, strict=True), marker="o", color=COLOURS.get(setup), label=label)
    right.plot([min(sizes), max(sizes)], [min(sizes), max(sizes)], linestyle=":", color="grey", label="offered")
    right.set(xscale="log", yscale="log", xlabel="tasks at 1 s (offered runs/s)", ylabel="recorded runs/s",
              title="Throughput")  # fmt: skip
    right.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return None


def publish(results: dict[str, Any], table: str, begin: str = BEGIN, end: str = END, figure: bool = True) -> None:
    """Replace one generated part of BENCHMARKS.md, keeping the notes written around it."""
    text = REPORT.read_text() if REPORT.exists() else "# Benchmarks\n"
    if begin not in text:
        text += f"\n{begin}\n{end}\n"
    head, rest = text.split(begin, 1)
    tail = rest.split(end, 1)[1] if end in rest else ""
    body = f"{begin}\n<!-- generated by `python -m benches.run`; edit outside these markers -->\n\n{table}"
    if figure:
        body += f"\n![lateness and throughput against N]({PLOT.relative_to(ROOT)})\n"
    REPORT.write_text(head + body + end + tail)


# -- main --------------------------------------------------------------------------------------


def parse(argv: list[str]) -> Options:
    parser = argparse.ArgumentParser(prog="python -m benches.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one repeat, no baselines (smoke run)")
    parser.add_argument(
        "--scenarios",
        default=",".join(SCENARIOS),
        help=f"comma-separated: {','.join(SCENARIOS + EXTRA_SCENARIOS)} (default: all but phases)",
    )
    parser.add_argument("--phases", help=f"phases scenario: comma-separated, of {','.join(PHASES)} (default: all)")
    parser.add_argument("--kind", help="phases scenario: comma-separated, of sync,async (default: both)")
    parser.add_argument("--phase-sizes", help="phases scenario: comma-separated task counts (default 200,1000)")
    parser.add_argument("--no-web", action="store_true", help="phases scenario: no web process beside")
    parser.add_argument("--repeats", type=int)
    parser.add_argument("--precision-sizes", help="comma-separated task counts, e.g. 10,200,1000")
    parser.add_argument("--throughput-sizes", help="comma-separated task counts, e.g. 500,1000,2000")
    parser.add_argument("--window", type=float, help="seconds measured per fire run")
    parser.add_argument("--idle-tasks", type=int)
    parser.add_argument("--api-tasks", type=int)
    parser.add_argument("--api-rows", type=int)
    parser.add_argument("--no-baselines", action="store_true")
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument("--no-publish", action="store_true", help="do not rewrite BENCHMARKS.md and the plot")
    parser.add_argument("--out", type=Path, help="folder for results.json / results.md")
    parser.add_argument("--replot", action="store_true", help="redraw the plot and BENCHMARKS.md from --out's results")
    args = parser.parse_args(argv)
    options = Options.quick_mode() if args.quick else Options()
    options.command = "python -m benches.run " + " ".join(argv)
    options.scenarios = tuple(s.strip() for s in args.scenarios.split(",") if s.strip())
    unknown = set(options.scenarios) - set(SCENARIOS + EXTRA_SCENARIOS)
    if unknown:
        parser.error(f"unknown scenario(s): {', '.join(sorted(unknown))}")
    for key, allowed in (("phases", PHASES), ("kind", KINDS)):
        if getattr(args, key):
            chosen = tuple(v.strip() for v in getattr(args, key).split(",") if v.strip())
            if not chosen or set(chosen) - set(allowed):
                parser.error(f"--{key}: expected some of {','.join(allowed)}, got {getattr(args, key)!r}")
            setattr(options, "kinds" if key == "kind" else key, chosen)
    if args.phase_sizes:
        options.phase_sizes = tuple(int(n) for n in args.phase_sizes.split(","))
    options.web = not args.no_web
    if args.repeats:
        options.repeats = args.repeats
    if args.precision_sizes:
        options.precision_sizes = tuple(int(n) for n in args.precision_sizes.split(","))
    if args.throughput_sizes:
        options.throughput_sizes = tuple(int(n) for n in args.throughput_sizes.split(","))
    for key in ("window", "idle_tasks", "api_tasks", "api_rows"):
        if getattr(args, key) is not None:
            setattr(options, key, getattr(args, key))
    options.baselines = options.baselines and not args.no_baselines
    options.postgres = options.postgres and not args.no_postgres
    options.publish = options.publish and not args.no_publish
    if args.out:
        options.out = args.out
    return options


def main(argv: list[str] | None = None) -> dict[str, Any]:
    argv = sys.argv[1:] if argv is None else argv
    options = parse(argv)
    if "--replot" in argv:
        results = json.loads((options.out / "results.json").read_text())
        publish_all(results)
        return results
    started_at = time.time()
    results: dict[str, Any] = {"command": options.command, "machine": machine(), "scenarios": {}, "errors": {}}
    results["options"] = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(options).items()}
    ws = Workspace(options)
    runners = {"precision": scenario_precision, "throughput": scenario_throughput, "idle": scenario_idle,
               "api": scenario_api, "phases": scenario_phases}  # fmt: skip
    try:
        for name in options.scenarios:
            try:
                results["scenarios"][name] = runners[name](options, ws)
            except Exception as exc:
                log(f"scenario {name} failed: {exc}")
                results["errors"][name] = str(exc)[-3000:]
    finally:
        ws.close()
    results["elapsed_s"] = time.time() - started_at
    results["machine"]["loadavg_end"] = os.getloadavg()[0]
    table = markdown(results) if set(options.scenarios) & set(SCENARIOS) else ""
    if "phases" in options.scenarios:
        table += "\n### Lateness by phase distribution and task kind\n\n" + markdown_phases(results)
    options.out.mkdir(parents=True, exist_ok=True)
    (options.out / "results.json").write_text(json.dumps(results, indent=2, default=str))
    (options.out / "results.md").write_text(table)
    if options.publish:
        publish_all(results)
    print(table)
    return results


def publish_all(results: dict[str, Any]) -> None:
    """The generated parts of BENCHMARKS.md for the scenarios these results hold; the others stay."""
    ran = set(results["options"]["scenarios"])
    if ran & set(SCENARIOS):
        problem = plot(results, PLOT)
        if problem:
            log(f"no plot: {problem}")
        publish(results, markdown(results))
    if "phases" in ran:
        publish(results, markdown_phases(results), PHASES_BEGIN, PHASES_END, figure=False)


if __name__ == "__main__":
    main()
