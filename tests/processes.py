"""Helpers to start the project's real processes (runscheduler, a web server, commands) in tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

ROOT = Path(__file__).resolve().parent.parent

# A TypeVar, not `def wait_for[T]`: the suite also runs on Python 3.11 (the Django 5.2 pass).
T = TypeVar("T")


def wait_for(predicate: Callable[[], T], timeout: float = 10.0, interval: float = 0.05, message: str = "") -> T:
    """Poll ``predicate`` until it returns something truthy; fail with ``message`` at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {message or predicate}")
        time.sleep(interval)


def database_url(settings_dict: dict[str, Any]) -> str:
    """The DATABASE_URL that points a subprocess at the database this test process uses."""
    engine = settings_dict["ENGINE"]
    if engine.endswith("sqlite3"):
        return f"sqlite:///{settings_dict['NAME']}"
    if engine.endswith("postgresql"):
        user = quote(settings_dict.get("USER") or "")
        password = quote(settings_dict.get("PASSWORD") or "")
        auth = f"{user}:{password}@" if password else (f"{user}@" if user else "")
        return f"postgres://{auth}{settings_dict['HOST']}:{settings_dict['PORT']}/{settings_dict['NAME']}"
    raise ValueError(f"no URL form for {engine}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ManagedProcess:
    def __init__(self, args: list[str], env: dict[str, str], log_path: Path, name: str) -> None:
        self.name = name
        self.log_path = log_path
        self._log = log_path.open("ab")
        self.popen = subprocess.Popen(
            args, cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.port: int | None = None

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def send(self, signum: int) -> None:
        if self.alive():
            self.popen.send_signal(signum)

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        """Send ``signum`` and wait for the exit; returns the exit status."""
        self.send(signum)
        try:
            return self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()
            raise AssertionError(
                f"{self.name} did not exit within {timeout}s after {signal.Signals(signum).name}"
            ) from None

    def kill(self) -> None:
        """SIGKILL, and reap it so that it does not linger as a zombie."""
        if self.alive():
            self.popen.kill()
        self.popen.wait()

    def output(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def close(self) -> None:
        if self.alive():
            self.popen.terminate()
            try:
                self.popen.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        self._log.close()


class ProcessFactory:
    """Starts processes against the test database and stops them all at teardown."""

    def __init__(self, db_url: str, tmp_path: Path) -> None:
        self.db_url = db_url
        self.tmp_path = tmp_path
        self.processes: list[ManagedProcess] = []

    def env(self, tasks: list[str] | None = None, **extra: str) -> dict[str, str]:
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "tests.settings",
            "DATABASE_URL": self.db_url,
            "PYTHONUNBUFFERED": "1",
        }
        if tasks is not None:
            env["TEST_SCHEDULER_TASKS"] = ",".join(f"tests.tasks.{t}" if "." not in t else t for t in tasks)
        env.update(extra)
        return env

    def start(self, name: str, args: list[str], env: dict[str, str]) -> ManagedProcess:
        log = self.tmp_path / f"{name}-{len(self.processes)}.log"
        process = ManagedProcess([sys.executable, *args], env, log, name)
        self.processes.append(process)
        return process

    def scheduler(self, tasks: list[str], wait_active: bool = True, **extra: str) -> ManagedProcess:
        process = self.start("runscheduler", ["manage.py", "runscheduler"], self.env(tasks, **extra))
        if wait_active:
            self.wait_role(process, "active")
        return process

    def wait_role(self, process: ManagedProcess, role: str, timeout: float = 20.0, progressed: bool = False) -> None:
        """Until ``process`` has taken ``role``; ``progressed``: and a round in it has ended and been
        reported (jobs started, dead runs reaped, threads checked: what health asks for), which
        takes up to a poll more."""
        from scheduler_app.models import SchedulerProcess

        def has_role() -> bool:
            if not process.alive():
                raise AssertionError(f"{process.name} exited ({process.popen.returncode}):\n{process.output()}")
            rows = SchedulerProcess.objects.filter(pid=process.pid, role=role)
            return (rows.filter(progress_at__isnull=False) if progressed else rows).exists()

        wait_for(has_role, timeout=timeout, message=f"{process.name} pid {process.pid} to be {role}")

    def web(self, tasks: list[str] | None = None, **extra: str) -> ManagedProcess:
        port = free_port()
        process = self.start(
            "web",
            # --insecure: serve the admin's static files with DEBUG off, as the browser tests need them.
            ["manage.py", "runserver", "--noreload", "--insecure", f"127.0.0.1:{port}"],
            self.env(tasks, **extra),
        )
        process.port = port

        def ready() -> bool:
            if not process.alive():
                raise AssertionError(f"web server exited:\n{process.output()}")
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/admin/login/", timeout=2)
            except urllib.error.HTTPError:
                return True
            except OSError:
                return False
            return True

        wait_for(ready, timeout=30, message="the web server to answer")
        return process

    def command(
        self, *args: str, tasks: list[str] | None = None, timeout: float = 60, **extra: str
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=ROOT,
            env=self.env(tasks, **extra),
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def close(self) -> None:
        for process in self.processes:
            process.close()
        for process in self.processes:
            print(f"----- {process.name} (pid {process.pid}) output -----")
            print(process.output()[-20000:])
