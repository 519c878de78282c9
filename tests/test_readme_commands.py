"""Every shell command of README.md that is meant for the local setup, run exactly as written.

The commands run in order, in a copy of the project (tests/test_first_hour.py: its own database and
``var/``), from a user's environment (no DJANGO_* variables), against ``scripts/run.sh`` (what
``make run`` starts) serving that copy. One substitution: the README's ``http://127.0.0.1:8000`` is the
free port this test's server listens on, so that a developer's own ``make run`` on 8000 does not
matter. ``export`` lines carry over to the commands after them, as in one terminal. A Python block that
names its file in its first line (``# my_tasks.py, beside manage.py``) is written to that file first,
as a reader would. A command passes when it exits 0; a ``curl`` command also has to answer JSON that is
not an error (``{"detail", "code"}``).
"""

from __future__ import annotations

import json
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.processes import ROOT, free_port
from tests.test_first_hour import RunSh, project_copy, user_env

pytestmark = pytest.mark.process

# Commands and sections not run here, each with the reason.
SKIPPED_COMMANDS = {
    "make run": "long-running: this test starts scripts/run.sh itself, and test_first_hour.py tests make run",
    "make test": "the test suite itself",
}
SKIPPED_SECTIONS = {
    "Deployment on PostgreSQL": "production commands: a PostgreSQL server, gunicorn, more than one host",
    "Use it in your own project": "a host project's commands: tests/test_packaging.py runs them in a new project",
}
SHELL_FENCES = {"", "bash", "sh", "shell"}


@dataclass
class Block:
    section: str
    info: str
    lines: list[str]


def readme_blocks(text: str) -> list[Block]:
    blocks: list[Block] = []
    section = ""
    current: Block | None = None
    for line in text.splitlines():
        if current is not None:
            if line.startswith("```"):
                blocks.append(current)
                current = None
            else:
                current.lines.append(line)
        elif line.startswith("```"):
            current = Block(section, line[3:].strip(), [])
        elif match := re.match(r"#{2,3} (.+)", line):
            section = match.group(1).strip()
    return blocks


def commands(block: Block) -> list[str]:
    return [line.strip() for line in block.lines if line.strip() and not line.strip().startswith("#")]


def is_error_body(body: Any) -> bool:
    return isinstance(body, dict) and {"detail", "code"} <= set(body)


def test_readme_lists_its_commands() -> None:
    """The parser finds what the README shows: a check that the other test runs something."""
    blocks = readme_blocks((ROOT / "README.md").read_text())
    shell = [c for b in blocks if b.info in SHELL_FENCES for c in commands(b)]
    assert any(c.startswith("make run  ") for c in shell) and any(c.startswith("make test  ") for c in shell)
    assert 'make manage ARGS="trigger_task crawl_site"' in shell
    assert sum(c.startswith("curl ") for c in shell) >= 15


@pytest.mark.own_database
def test_readme_commands_work_as_written(tmp_path: Path) -> None:
    project = project_copy(tmp_path)
    (project / ".venv").symlink_to((ROOT / ".venv").resolve())  # `make manage` uses the project's venv
    port = free_port()
    server = RunSh(project, port, tmp_path / "run.log")
    try:
        server.wait_ready()
        ran, skipped = run_readme(project, port, server)
    finally:
        server.close()
    print("ran:", *ran, "skipped:", *skipped, sep="\n  ")
    assert len(ran) >= 20


def run_readme(project: Path, port: int, server: RunSh) -> tuple[list[str], list[str]]:
    exports: list[str] = []
    ran: list[str] = []
    skipped: list[str] = []
    for block in readme_blocks((project / "README.md").read_text()):
        if block.info == "python" and block.lines and (named := re.match(r"# (\S+\.py)\b", block.lines[0])):
            target = project / named.group(1)
            if not target.exists():
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text("\n".join(block.lines) + "\n")
            continue
        if block.info not in SHELL_FENCES:
            continue
        for command in commands(block):
            reason = SKIPPED_SECTIONS.get(block.section) or next(
                (why for start, why in SKIPPED_COMMANDS.items() if command.split("#")[0].strip() == start), None
            )
            if reason:
                skipped.append(f"{command}  ({reason})")
                continue
            run_one(project, port, server, exports, command)
            if command.startswith("export "):
                exports.append(command)
            ran.append(command)
    return ran, skipped


def run_one(project: Path, port: int, server: RunSh, exports: list[str], command: str) -> None:
    as_run = command.replace("http://127.0.0.1:8000", f"http://127.0.0.1:{port}")
    result = subprocess.run(
        ["bash", "-c", "\n".join([*exports, as_run])],
        cwd=project,
        env=user_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    where = f"README command failed:\n  {command}\nstatus {result.returncode}\nstdout: {result.stdout[-3000:]}\n"
    where += f"stderr: {result.stderr[-3000:]}\nserver:\n{server.output()[-3000:]}"
    assert result.returncode == 0, where
    if command.startswith("curl "):
        try:
            body = json.loads(result.stdout)
        except ValueError:
            raise AssertionError(f"not JSON: {where}") from None
        assert not is_error_body(body), where
