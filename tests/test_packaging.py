"""The app as an installable package: its wheel, its declared dependencies, and a host project.

The main test builds the wheel, installs it into a fresh virtual environment, makes a project with
``django-admin startproject``, applies the README's "Use it in your own project" blocks, migrates, and
sees ``runscheduler`` run a task of that project and the API answer under ``/ops/scheduler/``. The
fresh environment borrows the running one's packages (a ``.pth`` file) so that no download is needed;
a static test checks that every package the app imports is a declared dependency.
"""

from __future__ import annotations

import ast
import base64
import json
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import sysconfig
import textwrap
import tomllib
import urllib.request
import zipfile
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
from django.contrib import admin
from django.contrib.auth.models import User
from django.test import Client, override_settings
from django.urls import include, path

from scheduler_app.tasks.crawl_site import CrawlSiteTask
from tests.processes import ROOT, ManagedProcess, free_port, wait_for

APP = ROOT / "scheduler_app"


# -- the wheel -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel, built without network from a copy of what it is made of (the tree stays clean)."""
    work = tmp_path_factory.mktemp("wheel")
    src = work / "src"
    shutil.copytree(APP, src / "scheduler_app", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(work / "dist"), str(src)])
    [built] = (work / "dist").glob("django_task_scheduler-*-py3-none-any.whl")
    return built


@pytest.mark.process
@pytest.mark.own_database
def test_the_wheel_holds_the_app_and_nothing_else(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    tops = {name.split("/", 1)[0] for name in names}
    assert tops == {"scheduler_app", wheel.name.split("-py3")[0] + ".dist-info"}, tops
    shipped = {name for name in names if name.startswith("scheduler_app/")}
    expected = {
        str(file.relative_to(ROOT))
        for file in APP.rglob("*")
        if file.is_file() and "__pycache__" not in file.parts and file.suffix != ".pyc"
    }
    assert shipped == expected, f"missing: {sorted(expected - shipped)}, extra: {sorted(shipped - expected)}"
    # The parts a pure-Python package list would miss.
    assert "scheduler_app/migrations/0001_initial.py" in shipped
    assert any(name.startswith("scheduler_app/templates/admin/") for name in shipped)
    assert "scheduler_app/static/scheduler_app/task_preview.js" in shipped
    meta = zipfile.ZipFile(wheel).read(f"{wheel.name.split('-py3')[0]}.dist-info/METADATA").decode()
    assert "Requires-Python: >=3.11" in meta
    assert re.search(r"^Requires-Dist: Django<7,>=5\.2$", meta, re.M), meta


def test_every_imported_package_is_a_declared_dependency() -> None:
    """What the app imports must come with it: a host project has only the wheel's dependencies."""
    declared = {normalize(re.split(r"[\s<>=!~;\[]", spec, maxsplit=1)[0]) for spec in pyproject_dependencies()}
    # psycopg is the 'postgres' extra: only code that runs on PostgreSQL (the NOTIFY listener) imports it.
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    optional = {
        normalize(re.split(r"[\s<>=!~;\[]", spec, maxsplit=1)[0]) for specs in extras.values() for spec in specs
    }
    owners = metadata.packages_distributions()
    missing = set()
    for module in third_party_imports():
        distributions = {normalize(name) for name in owners.get(module, [module])}
        if not distributions & (declared | optional):
            missing.add(f"{module} ({', '.join(sorted(distributions))})")
    assert not missing, f"imported by scheduler_app but not in pyproject.toml's dependencies: {sorted(missing)}"
    # The project's own choices stay out of the app.
    assert not {"dj-database-url", "gunicorn", "psycopg"} & declared


def test_dependency_ranges_admit_the_pinned_versions() -> None:
    """requirements.txt pins this repository's set; the wheel's ranges must include every pin."""
    from packaging.requirements import Requirement

    pins = requirement_pins(ROOT / "requirements.txt")
    for spec in pyproject_dependencies():
        requirement = Requirement(spec)
        pinned = pins.get(normalize(requirement.name))
        if pinned is not None:
            assert requirement.specifier.contains(pinned), f"{spec} excludes the pinned {pinned}"


# requirements-dev.txt's engines of the fleet tests (tests/test_executors.py): django-tasks-db, and RQ.
FLEET_ENGINE_PACKAGES = (
    "django-tasks-db",
    "django-stubs-ext",
    "django-tasks-rq",
    "django-tasks",
    "django-rq",
    "rq",
    "rq-scheduler",
    "redis",
    "crontab",
    "freezegun",
)


def test_the_django52_requirements_follow_the_pins() -> None:
    """requirements-django52.txt is requirements(-dev).txt with Django 5.2: the same pins otherwise."""
    pins = {**requirement_pins(ROOT / "requirements.txt"), **requirement_pins(ROOT / "requirements-dev.txt")}
    lts = requirement_pins(ROOT / "requirements-django52.txt")
    assert lts.pop("django").startswith("5.2.")
    pins.pop("django")
    pins.pop("ruff", None)  # lint runs once, in the main environment
    pins.pop("mutmut", None)  # so does mutation testing (make mutate)
    # The fleet's test engines need django.tasks (Django >= 6.0): the 5.2 pass leaves the fleet tests out.
    for engine_package in FLEET_ENGINE_PACKAGES:
        pins.pop(engine_package, None)
    assert lts == pins


# -- no assumption that the app owns the site ---------------------------------------------------


def test_the_app_changes_no_setting_environment_or_logging_when_loaded() -> None:
    """Django set up with the app, and every module of it imported, in a fresh interpreter."""
    script = textwrap.dedent(
        """
        import json, logging, os, pkgutil, importlib
        import django
        from django.conf import settings

        settings.configure(
            INSTALLED_APPS=["django.contrib.admin", "django.contrib.auth", "django.contrib.contenttypes",
                            "django.contrib.sessions", "django.contrib.messages", "django.contrib.staticfiles",
                            "rest_framework", "drf_spectacular", "django_apscheduler", "scheduler_app"],
            DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
            ROOT_URLCONF="scheduler_app.api.urls", SECRET_KEY="x", USE_TZ=True,
            LOGGING_CONFIG=None,  # Django configures no logging: whatever is configured came from imports
        )

        def snapshot():
            loggers = {"": logging.getLogger()}
            known = logging.Logger.manager.loggerDict.items()
            loggers.update((n, l) for n, l in known if isinstance(l, logging.Logger))
            return {
                "settings": {n: repr(getattr(settings, n)) for n in dir(settings) if n.isupper()},
                "environ": dict(os.environ),
                "logging": {n: [l.level, len(l.handlers), l.propagate, l.disabled] for n, l in loggers.items()},
            }

        from django.db import connections
        connections.settings  # Django completes DATABASES with its defaults (not a change of ours)
        before = snapshot()
        django.setup()
        import scheduler_app
        for module in pkgutil.walk_packages(scheduler_app.__path__, "scheduler_app."):
            importlib.import_module(module.name)
        from django.core import checks
        checks.run_checks()
        after = snapshot()
        print(json.dumps({"before": before, "after": after}))
        """
    )
    result = run([sys.executable, "-c", script], cwd=ROOT, env=clean_env())
    before, after = json.loads(result.stdout.splitlines()[-1]).values()
    assert after["settings"] == before["settings"]
    assert after["environ"] == before["environ"]
    # The root logger and the loggers of the app and of the frameworks it builds on are the host's to
    # configure (libraries such as urllib3 give their own loggers a NullHandler: their convention).
    hosts = ("", "scheduler_app", "django", "apscheduler", "django_apscheduler", "rest_framework", "drf_spectacular")
    untouched = [0, 0, True, False]
    changed = {
        name: state
        for name, state in after["logging"].items()
        if name.split(".", 1)[0] in hosts and state != before["logging"].get(name, untouched)
    }
    assert changed == {}, "loggers given a level or handlers on import"
    assert any(name.startswith("scheduler_app.") for name in after["logging"]), "the app's loggers were seen"


def test_loggers_are_named_under_scheduler_app() -> None:
    names = []
    for file in APP.rglob("*.py"):
        for node in ast.walk(ast.parse(file.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "getLogger":
                arg = node.args[0] if node.args else None
                names.append(arg.value if isinstance(arg, ast.Constant) else ast.unparse(node))
    assert names and all(re.fullmatch(r"scheduler_app(\.\w+)*", name) for name in names), names


# Mounted where a host project might put it: the API under /ops/scheduler/, the admin under /control/.
urlpatterns = [
    path("ops/scheduler/", include("scheduler_app.api.urls")),
    path("control/", admin.site.urls),
]


@pytest.mark.django_db
def test_api_admin_and_docs_under_another_prefix(settings: Any) -> None:
    superuser = User.objects.create_superuser("root", password="root-pw")
    client = Client()
    client.force_login(superuser)
    default_schema = client.get("/scheduler/schema").json()
    settings.REST_FRAMEWORK = {}  # a host that configured nothing for DRF
    with override_settings(ROOT_URLCONF=__name__):
        status = client.get("/ops/scheduler/status")
        assert status.status_code == 200 and status.json()["task_count"] >= 1
        answer = client.post("/ops/scheduler/tasks/tick/trigger")
        assert answer.status_code == 202 and answer["Location"].startswith("/ops/scheduler/history/")
        assert client.get("/scheduler/status").status_code == 404

        schema = client.get("/ops/scheduler/schema").json()
        assert "/ops/scheduler/status" in schema["paths"]
        assert not [p for p in schema["paths"] if p.startswith("/scheduler")]
        # The same document, but for the prefix: paths, operation ids, tags.
        assert set(schema["paths"]) == {f"/ops{p}" for p in default_schema["paths"]}
        assert operations(schema) == operations(default_schema)
        assert "/scheduler/docs" not in default_schema["paths"], "the docs page is not an API endpoint"

        docs = client.get("/ops/scheduler/docs").content.decode()
        assert '"/ops/scheduler/schema' in docs

        page = client.get("/control/scheduler_app/taskconfig/tick/change/").content.decode()
        links = re.findall(r'(?:href|action|data-url)="(/[^"]*)"', page)
        assert links and not [link for link in links if link.startswith(("/admin/", "/scheduler/"))], links
        assert "/control/scheduler_app/taskconfig/tick/" in " ".join(links)

        task = CrawlSiteTask()
        assert task.start_paths[1:] == ("/control/login/", "/ops/scheduler/docs")
        assert task.skip_prefixes == ("/control/logout/",)


def test_sqlite_without_the_recommended_options_is_a_check_warning() -> None:
    from scheduler_app.checks import sqlite_option_warnings

    sqlite = "django.db.backends.sqlite3"
    [warning] = sqlite_option_warnings({"default": {"ENGINE": sqlite, "OPTIONS": {}}})
    assert warning.id == "scheduler.W051" and "IMMEDIATE" in warning.msg and "WAL" in warning.msg
    recommended = {"transaction_mode": "IMMEDIATE", "init_command": "PRAGMA journal_mode = WAL;"}
    assert sqlite_option_warnings({"default": {"ENGINE": sqlite, "OPTIONS": recommended}}) == []
    assert sqlite_option_warnings({"default": {"ENGINE": "django.db.backends.postgresql"}}) == []
    from django.conf import settings

    assert sqlite_option_warnings(settings.DATABASES) == [], "this project's settings follow the advice"


# -- a host project --------------------------------------------------------------------------------

HOST_TASK = """
from scheduler_app.tasks.base import BaseTask, ScheduleType, TaskResult, TaskSchedule


class BeatTask(BaseTask):
    name = "host_beat"
    description = "A task of the host project"
    schedule = TaskSchedule(schedule_type=ScheduleType.INTERVAL, interval_seconds=1)

    def run(self) -> TaskResult:
        from django.conf import settings

        return TaskResult.success("beat", project=settings.ROOT_URLCONF)
"""


@pytest.fixture
def host(tmp_path: Path, wheel: Path) -> Iterator[HostProject]:
    project = HostProject(tmp_path, wheel)
    try:
        yield project
    finally:
        project.close()


@pytest.mark.process
@pytest.mark.own_database
def test_wheel_in_a_fresh_project_runs_its_tasks_and_serves_the_api(host: HostProject) -> None:
    assert host.python("-c", "import scheduler_app; print(scheduler_app.__file__)").startswith(str(host.venv))
    check = host.manage("check")
    assert "scheduler." not in check, check  # no W050/W051 for a project set up as the README says
    host.manage("migrate", "--noinput", "-v0")
    host.manage("createsuperuser", "--noinput", "--username", "ops", "--email", "ops@example.com")

    scheduler = host.start("runscheduler")
    sql = "SELECT data FROM scheduler_app_taskexecutionrecord WHERE task_name = 'host_beat' AND status = 'success'"
    beats = wait_for(lambda: host.query(sql) or scheduler_died(scheduler), timeout=60, message="a run of host_beat")
    assert json.loads(beats[0][0]) == {"project": "host.urls"}

    port = free_port()
    web = host.start("runserver", "--noreload", f"127.0.0.1:{port}")
    base = f"http://127.0.0.1:{port}/ops/scheduler"
    status = wait_for(lambda: host.get(f"{base}/status"), timeout=60, message=f"the API; log:\n{web.output()}")
    assert status["running"] is True
    assert [task["name"] for task in status["tasks"]] == ["host_beat"]
    history = host.get(f"{base}/tasks/host_beat/history")
    # The newest record may be the next beat, still running: the history shows the one that succeeded.
    assert "success" in [run["status"] for run in history["results"]], history
    docs = host.get_text(f"{base}/docs")
    assert "/static/drf_spectacular_sidecar/swagger-ui-dist/" in docs and "/ops/scheduler/schema" in docs

    assert scheduler.stop(signal.SIGTERM) == 0, scheduler.output()
    web.stop(signal.SIGTERM)


def scheduler_died(process: ManagedProcess) -> None:
    assert process.alive(), f"runscheduler exited:\n{process.output()}"


class HostProject:
    """A project made by ``startproject`` in a virtual environment that has the wheel installed."""

    def __init__(self, tmp_path: Path, wheel: Path) -> None:
        self.tmp_path = tmp_path
        self.venv = tmp_path / "venv"
        self.dir = tmp_path / "site"
        self.processes: list[ManagedProcess] = []
        run([sys.executable, "-m", "venv", "--without-pip", str(self.venv)])
        site_packages = Path(self.python("-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"))
        # The packages of the running environment, visible but not installed: no download needed.
        shared = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
        (site_packages / "borrowed.pth").write_text("\n".join(sorted(shared)) + "\n")
        # pip resolves the wheel's dependencies against those packages; --no-index: nothing is fetched.
        pip = [sys.executable, "-m", "pip", "--python", str(self.bin("python")), "--disable-pip-version-check"]
        run([*pip, "install", "--no-index", "-q", str(wheel)])
        self.dir.mkdir()
        self.python("-m", "django", "startproject", "host", str(self.dir))
        blocks = readme_blocks()
        (self.dir / "jobs.py").write_text(HOST_TASK)
        settings = self.dir / "host" / "settings.py"
        settings.write_text(
            settings.read_text()
            + "\n\n"
            + blocks["settings.py"]
            + '\nSCHEDULER = {**SCHEDULER, "TASKS": ["jobs.BeatTask"], "POLL_INTERVAL": 0.25, "LEASE_SECONDS": 3}\n'
        )
        urls = self.dir / "host" / "urls.py"
        urls.write_text(urls.read_text() + "\n\n" + blocks["urls.py"])

    def bin(self, name: str) -> Path:
        return self.venv / "bin" / name

    def env(self) -> dict[str, str]:
        return {**clean_env(), "DJANGO_SUPERUSER_PASSWORD": "ops-pw", "PYTHONUNBUFFERED": "1"}

    def python(self, *args: str) -> str:
        return run([str(self.bin("python")), *args], cwd=self.tmp_path, env=self.env()).stdout.strip()

    def manage(self, *args: str) -> str:
        result = run([str(self.bin("python")), str(self.dir / "manage.py"), *args], cwd=self.dir, env=self.env())
        return result.stdout + result.stderr

    def start(self, *args: str) -> ManagedProcess:
        command = [str(self.bin("python")), str(self.dir / "manage.py"), *args]
        log = self.tmp_path / f"{args[0]}.log"
        process = ManagedProcess(command, self.env(), log, args[0])
        self.processes.append(process)
        return process

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        with sqlite3.connect(self.dir / "db.sqlite3", timeout=30) as connection:
            try:
                return connection.execute(sql).fetchall()
            except sqlite3.OperationalError as exc:
                if "no such table" in str(exc):
                    return []  # not migrated yet
                raise

    def _open(self, url: str) -> bytes:
        credentials = base64.b64encode(b"ops:ops-pw").decode()
        request = urllib.request.Request(url, headers={"Authorization": f"Basic {credentials}"})
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.read()

    def get(self, url: str) -> Any:
        try:
            return json.loads(self._open(url))
        except OSError:
            return None

    def get_text(self, url: str) -> str:
        return self._open(url).decode()

    def close(self) -> None:
        for process in self.processes:
            process.close()


# -- helpers ---------------------------------------------------------------------------------------


def run(args: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(args, capture_output=True, text=True, timeout=300, **kwargs)
    assert result.returncode == 0, f"{args} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
    return result


def clean_env() -> dict[str, str]:
    """This environment without the test suite's Django settings and database."""
    import os

    drop = {"DJANGO_SETTINGS_MODULE", "DATABASE_URL", "PYTHONPATH"}
    return {key: value for key, value in os.environ.items() if key not in drop and not key.startswith("TEST_")}


def readme_blocks() -> dict[str, str]:
    """The README's "Use it in your own project" code blocks, by the file their first line names."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Use it in your own project", 1)[1].split("\n## ", 1)[0]
    blocks = {}
    for block in re.findall(r"```python\n(.*?)```", section, re.S):
        first, _, body = block.partition("\n")
        blocks[first.lstrip("# ").strip()] = body
    assert {"settings.py", "urls.py"} <= set(blocks), blocks
    return blocks


def pyproject_dependencies() -> list[str]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_pins(file: Path) -> dict[str, str]:
    """name -> pinned version, following ``-r`` includes."""
    pins: dict[str, str] = {}
    for line in file.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line.startswith("-r "):
            pins.update(requirement_pins(file.parent / line[3:].strip()))
        elif "==" in line:
            name, version = line.split("==", 1)
            pins[normalize(name.split("[", 1)[0])] = version.strip()
    return pins


def third_party_imports() -> set[str]:
    modules = set()
    for file in APP.rglob("*.py"):
        for node in ast.walk(ast.parse(file.read_text())):
            if isinstance(node, ast.Import):
                modules.update(alias.name.split(".", 1)[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules.add(node.module.split(".", 1)[0])
    return {m for m in modules if m not in sys.stdlib_module_names and m not in {"scheduler_app", "__future__"}}


def operations(schema: dict[str, Any]) -> set[tuple[str, tuple[str, ...]]]:
    return {
        (operation["operationId"], tuple(operation.get("tags", ())))
        for item in schema["paths"].values()
        for operation in item.values()
        if isinstance(operation, dict) and "operationId" in operation
    }
