"""A throw-away PostgreSQL server for the test suite, started from the machine's own binaries.

``python -m tests.pgserver run -- CMD...`` starts a server on 127.0.0.1 and a free port, runs CMD
with ``DATABASE_URL`` pointing at it (and ``TEST_PG_*`` describing it, so that tests can restart
it), then stops the server and deletes its data whatever CMD did; the exit status is CMD's.
``python -m tests.pgserver check`` says whether a server can be had here.

initdb refuses to run as root, so under root the server runs as an unprivileged user (``postgres``
when the Debian package created it, else ``nobody``) that owns the data directory. The data
directory lives in a fresh temporary folder; nothing is left behind.
"""

from __future__ import annotations

import glob
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

NAME = "scheduler"
SUPERUSER = "scheduler_test"
# A throw-away cluster: durability buys nothing here and costs seconds per test.
SERVER_SETTINGS = {
    "listen_addresses": "127.0.0.1",
    "unix_socket_directories": "",
    "max_connections": "300",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "log_min_messages": "warning",
}


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL binaries on this machine, or the server would not start."""


def find_bindir() -> Path:
    """The directory holding initdb and pg_ctl: $PG_BINDIR, Debian's layout, or the PATH."""
    candidates = [os.environ.get("PG_BINDIR", "")]
    # Debian/Ubuntu: /usr/lib/postgresql/<major>/bin; newest first.
    debian = glob.glob("/usr/lib/postgresql/*/bin")
    debian.sort(key=lambda p: int(re.sub(r"\D", "", p.split("/")[-2]) or 0), reverse=True)
    candidates += debian
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(str(Path(on_path).parent))
    for candidate in candidates:
        if candidate and (Path(candidate) / "initdb").is_file() and (Path(candidate) / "pg_ctl").is_file():
            return Path(candidate)
    raise PostgresUnavailable(
        "no PostgreSQL server binaries found (looked for initdb and pg_ctl in $PG_BINDIR, "
        "/usr/lib/postgresql/*/bin and the PATH); on Debian: apt-get install postgresql"
    )


def server_account() -> pwd.struct_passwd | None:
    """The unprivileged account to run the server as when we are root; None when we are not root."""
    if os.geteuid() != 0:
        return None
    for name in (os.environ.get("PG_RUN_AS", ""), "postgres", "nobody"):
        if not name:
            continue
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise PostgresUnavailable("running as root and found neither a 'postgres' nor a 'nobody' account to run initdb")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PgServer:
    """One cluster in ``base``: ``start()``, ``stop()``, ``restart()``, ``destroy()``."""

    def __init__(self, base: Path, bindir: Path, port: int, password: str, account: pwd.struct_passwd | None) -> None:
        self.base = base
        self.bindir = bindir
        self.port = port
        self.password = password
        self.account = account
        self.datadir = base / "data"
        self.logfile = base / "server.log"

    # -- construction --------------------------------------------------------------------------

    @classmethod
    def create(cls) -> PgServer:
        """initdb a new cluster in a fresh temporary folder (not started yet)."""
        bindir = find_bindir()
        account = server_account()
        # Under root, $TMPDIR may be a folder the server's account cannot enter; /tmp it can.
        base = Path(tempfile.mkdtemp(prefix="scheduler-pg-", dir="/tmp" if account is not None else None))
        server = cls(base, bindir, free_port(), secrets.token_urlsafe(18), account)
        pwfile = base / "pwfile"
        pwfile.write_text(server.password + "\n")
        if account is not None:
            os.chown(base, account.pw_uid, account.pw_gid)
            os.chown(pwfile, account.pw_uid, account.pw_gid)
        try:
            server._pg(
                "initdb",
                "-D", str(server.datadir),
                "-U", SUPERUSER,
                "--pwfile", str(pwfile),
                "--auth-host=scram-sha-256",
                "--auth-local=scram-sha-256",
                "-E", "UTF8",
                "--locale=C",
                "--no-sync",
            )  # fmt: skip
        except PostgresUnavailable:
            server.destroy()
            raise
        finally:
            pwfile.unlink(missing_ok=True)
        return server

    @classmethod
    def from_env(cls) -> PgServer | None:
        """The server ``run`` started for this test session, or None when the tests run elsewhere."""
        base = os.environ.get("TEST_PG_BASE")
        if not base:
            return None
        account = pwd.getpwnam(os.environ["TEST_PG_USER"]) if os.environ.get("TEST_PG_USER") else None
        return cls(
            Path(base),
            Path(os.environ["TEST_PG_BINDIR"]),
            int(os.environ["TEST_PG_PORT"]),
            os.environ.get("TEST_PG_PASSWORD", ""),
            account,
        )

    # -- properties ----------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"postgres://{SUPERUSER}:{self.password}@127.0.0.1:{self.port}/{NAME}"

    def env(self) -> dict[str, str]:
        return {
            "DATABASE_URL": self.url,
            "TEST_PG_BASE": str(self.base),
            "TEST_PG_BINDIR": str(self.bindir),
            "TEST_PG_PORT": str(self.port),
            "TEST_PG_PASSWORD": self.password,
            "TEST_PG_USER": self.account.pw_name if self.account else "",
        }

    def version(self) -> str:
        return subprocess.run(
            [str(self.bindir / "postgres"), "--version"], capture_output=True, text=True, check=False
        ).stdout.strip()

    # -- life cycle ----------------------------------------------------------------------------

    def _pg(self, program: str, *args: str, timeout: float = 120) -> str:
        """Run one of the server's programs as the server's account; raise with its output on failure."""
        kwargs: dict[str, object] = {}
        if self.account is not None:
            kwargs.update(user=self.account.pw_uid, group=self.account.pw_gid, extra_groups=[])
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "TZ": "UTC"}
        result = subprocess.run(
            [str(self.bindir / program), *args],
            cwd=self.base,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            **kwargs,  # type: ignore[arg-type]
        )
        if result.returncode != 0:
            log = self.logfile.read_text(errors="replace")[-4000:] if self.logfile.exists() else ""
            raise PostgresUnavailable(
                f"{program} {' '.join(args)} failed ({result.returncode}):\n{result.stdout}{result.stderr}{log}"
            )
        return result.stdout

    def start(self) -> None:
        options = " ".join(
            f"-c {key}={value!r}" if value == "" else f"-c {key}={value}"
            for key, value in {**SERVER_SETTINGS, "port": str(self.port)}.items()
        )
        self._pg("pg_ctl", "start", "-w", "-t", "60", "-D", str(self.datadir), "-l", str(self.logfile), "-o", options)
        self._wait_ready()

    def stop(self, mode: str = "fast") -> None:
        """Stop the server; ``fast`` ends every session at once (what a restart does to clients)."""
        self._pg("pg_ctl", "stop", "-w", "-t", "60", "-D", str(self.datadir), "-m", mode)

    def restart(self) -> None:
        self.stop()
        self.start()

    def running(self) -> bool:
        return (self.datadir / "postmaster.pid").exists()

    def _wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with socket.socket() as sock:
                sock.settimeout(1)
                if sock.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.1)
        raise PostgresUnavailable(f"the server did not listen on 127.0.0.1:{self.port} within {timeout:g}s")

    def create_database(self) -> None:
        """The database DATABASE_URL names (pytest-django creates test_<name> beside it)."""
        import psycopg

        with psycopg.connect(
            host="127.0.0.1", port=self.port, user=SUPERUSER, password=self.password, dbname="postgres",
            autocommit=True,
        ) as conn:  # fmt: skip
            conn.execute(f'CREATE DATABASE "{NAME}"')

    def leftover_sessions(self) -> list[str]:
        """Client sessions still connected (to any database but the one we ask from)."""
        import psycopg

        with psycopg.connect(
            host="127.0.0.1", port=self.port, user=SUPERUSER, password=self.password, dbname="postgres",
            autocommit=True,
        ) as conn:  # fmt: skip
            rows = conn.execute(
                "SELECT datname, application_name, state, left(query, 80) FROM pg_stat_activity "
                "WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()"
            ).fetchall()
        return [" | ".join(str(value) for value in row) for row in rows]

    def destroy(self) -> None:
        if self.running():
            try:
                self.stop("immediate")
            except PostgresUnavailable as exc:
                print(f"pgserver: could not stop the server: {exc}", file=sys.stderr)
        shutil.rmtree(self.base, ignore_errors=True)


def run(command: list[str]) -> int:
    """Start a server, run ``command`` against it, stop and delete the server; CMD's exit status."""
    try:
        server = PgServer.create()
        server.start()
        server.create_database()
    except PostgresUnavailable as exc:
        print(f"PostgreSQL UNAVAILABLE: {exc}", file=sys.stderr)
        return 3
    print(f"pgserver: {server.version()} on 127.0.0.1:{server.port} (data in {server.base})", flush=True)
    status = 1
    try:
        with subprocess.Popen(command, env={**os.environ, **server.env()}) as child:
            try:
                status = child.wait()
            except KeyboardInterrupt:
                child.send_signal(signal.SIGINT)
                status = child.wait()
        if server.running():
            leftovers = server.leftover_sessions()
            if leftovers:
                print("pgserver: sessions still connected after the tests:", *leftovers, sep="\n  ", file=sys.stderr)
                status = status or 4
    finally:
        server.destroy()
    print(f"pgserver: server on port {server.port} stopped and deleted", flush=True)
    return status


def main(argv: list[str]) -> int:
    if argv[:1] == ["check"]:
        try:
            bindir = find_bindir()
            server_account()
        except PostgresUnavailable as exc:
            print(f"PostgreSQL UNAVAILABLE: {exc}")
            return 3
        print(f"PostgreSQL binaries in {bindir}")
        return 0
    if argv[:1] == ["run"]:
        command = argv[1:]
        if command[:1] == ["--"]:
            command = command[1:]
        if not command:
            print("usage: python -m tests.pgserver run -- COMMAND...", file=sys.stderr)
            return 2
        return run(command)
    print("usage: python -m tests.pgserver check | run -- COMMAND...", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
