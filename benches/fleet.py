"""The worker-fleet benchmark: ``python -m benches.fleet [--quick]`` (``make bench-fleet``; README, Scaling out).

Real processes on a throw-away PostgreSQL server (tests/pgserver.py): ``manage.py runscheduler`` with
``EXECUTOR`` = ``fleet`` (django-tasks-db's queue) and K ``manage.py db_worker`` processes, against the
same scheduler executing in-process with ``MAX_WORKERS`` = K threads.

- scaling: ``--tasks`` interval tasks at 1 s, phases spread over the second, each sleeping ``--sleep``
  seconds (so that K workers can run K at once on 2 cores: the scaling measured is the engine's, not
  the CPU's). Runs/s recorded in the window and lateness (scheduled -> started, where started is when
  the run began on its worker) per K.
- overhead: ``--noop-tasks`` no-op tasks, well below capacity: end to end lateness and scheduled ->
  finished, fleet against in-process, and the fleet's share of it: fire -> enqueued (the scheduler's
  claim, hand-off and enqueue), enqueued -> taken by a worker (its polling, ``--interval``), taken ->
  the record claimed; plus, with no worker up, the scheduler's claim -> enqueued alone.

Figures are medians over ``--repeats`` runs. Results go to ``--out`` (JSON, Markdown); a full run
rewrites the "Worker fleet" table of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from benches.run import (
    REPORT,
    ROOT,
    SETTLE,
    Database,
    Fire,
    Options,
    Workspace,
    analyse_fires,
    fmt,
    machine,
    percentile,
    publish,
    repeated,
    started,
    timestamp,
    wait_until,
)

BEGIN, END = "<!-- bench-fleet:begin -->", "<!-- bench-fleet:end -->"
WORKER_READY = r"Starting worker worker_id="


@dataclass
class FleetOptions:
    quick: bool = False
    repeats: int = 3
    workers: tuple[int, ...] = (1, 2, 4, 8)
    tasks: int = 30
    sleep: float = 0.2
    noop_tasks: int = 10
    noop_workers: int = 2
    interval: float = 0.1
    warmup: float = 3.0
    window: float = 8.0
    out: Path = ROOT / "benches" / "results" / "fleet"
    publish: bool = True
    command: str = ""

    @classmethod
    def quick_mode(cls) -> FleetOptions:
        return cls(quick=True, repeats=1, workers=(1, 2), tasks=4, noop_tasks=3, noop_workers=1, warmup=2.0,
                   window=3.0, publish=False)  # fmt: skip


class FleetWorkspace(Workspace):
    """The bench workspace, its databases migrated with django-tasks-db's tables too."""

    def env(self, database: Database, tasks: int = 0, interval: int = 1, djq: bool = False) -> dict[str, str]:
        return {**super().env(database, tasks, interval, djq), "BENCH_FLEET": "1"}


def ms(values: list[float]) -> dict[str, float | None]:
    return {"p50_ms": percentile(values, 0.5), "p99_ms": percentile(values, 0.99)}


def seconds_between(a: Any, b: Any) -> float | None:
    start, end = timestamp(a), timestamp(b)
    return None if start is None or end is None else (end - start)


def one_run(ws: Workspace, options: FleetOptions, *, executor: str, workers: int, tasks: int, sleep: float,
            window: float | None = None) -> dict[str, Any]:  # fmt: skip
    """One scheduler (and ``workers`` db_worker processes when ``executor`` is fleet): figures of the window."""
    database = ws.database("postgresql")
    env = {
        **ws.env(database, tasks, 1),
        "BENCH_EXECUTOR": executor,
        "BENCH_TASK_KIND": "sync",
        "BENCH_TASK_SLEEP": str(sleep),
        "BENCH_PHASES": "uniform",
        "BENCH_MAX_WORKERS": str(workers if executor == "local" else 20),
    }
    window = options.window if window is None else window
    try:
        with ExitStack() as stack:
            pool = []
            if executor == "fleet":
                for index in range(workers):
                    log_path = ws.dir / f"worker-{ws._count}-{index}.log"
                    args = ["manage.py", "db_worker", "--backend", "fleet", "--interval", f"{options.interval:g}",
                            "--no-startup-delay", "--no-reload", "--worker-id", f"bench-{index}"]  # fmt: skip
                    pool.append((stack.enter_context(started(args, env, log_path)), log_path))
                for process, log_path in pool:
                    wait_until(lambda p=log_path: WORKER_READY in p.read_text(errors="replace"), 180,
                               "db_worker to start", process, log_path)  # fmt: skip
            log_path = ws.dir / f"scheduler-{ws._count}.log"
            scheduler = stack.enter_context(started(["manage.py", "runscheduler"], env, log_path))
            wait_until(
                lambda: database.rows(
                    "SELECT 1 FROM scheduler_app_schedulerprocess WHERE pid = %s AND role = 'active'", (scheduler.pid,)
                ),
                180, "runscheduler to become active", scheduler, log_path,
            )  # fmt: skip
            time.sleep(options.warmup)
            w0 = time.time()
            time.sleep(window)
            w1 = time.time()
            time.sleep(SETTLE + sleep)
            for process in [scheduler, *(p for p, _ in pool)]:
                os.killpg(process.pid, signal.SIGKILL)
        return {**figures(database, executor, tasks, w0, w1, workers), "window_s": w1 - w0}
    finally:
        database.drop()


def figures(database: Database, executor: str, tasks: int, w0: float, w1: float, workers: int) -> dict[str, Any]:
    rows = database.rows(
        "SELECT id, task_name, status, scheduled_at, started_at, finished_at FROM scheduler_app_taskexecutionrecord"
        " WHERE trigger = 'scheduled'"
    )
    ran = {"success", "failed", "timeout", "running", "interrupted"}
    fires = [
        Fire(name, timestamp(sched), *((timestamp(start), timestamp(end)) if status in ran else (None, None)))
        for _, name, status, sched, start, end in rows
    ]
    result: dict[str, Any] = analyse_fires(fires, tasks, 1, w0, w1)
    result["workers"] = workers
    done = [f for f in fires if w0 <= f.scheduled < w1 and f.finished is not None]
    result.update({f"end_to_end_{k}": v for k, v in ms([(f.finished - f.scheduled) * 1000 for f in done]).items()})
    if executor == "fleet":
        # The queue's own timestamps, joined to our records by the run id the task carries.
        queue = database.rows("SELECT args_kwargs, enqueued_at, started_at FROM django_tasks_database_dbtaskresult")
        by_record = {}
        for args_kwargs, enqueued, taken in queue:
            data = args_kwargs if isinstance(args_kwargs, dict) else json.loads(args_kwargs)
            by_record[data["args"][0]] = (enqueued, taken)
        fire_to_enqueued, enqueued_to_taken, taken_to_claimed = [], [], []
        for record_id, _, status, sched, start, _ in rows:
            if record_id not in by_record or not (w0 <= timestamp(sched) < w1):
                continue
            enqueued, taken = by_record[record_id]
            fire_to_enqueued.append(seconds_between(sched, enqueued))
            if taken is not None and status in ran:
                enqueued_to_taken.append(seconds_between(enqueued, taken))
                taken_to_claimed.append(seconds_between(taken, start))
        for name, values in (("fire_to_enqueued", fire_to_enqueued), ("enqueued_to_taken", enqueued_to_taken),
                             ("taken_to_claimed", taken_to_claimed)):  # fmt: skip
            present = [v * 1000 for v in values if v is not None]
            result.update({f"{name}_{k}": v for k, v in ms(present).items()})
    return result


def handoff_only(ws: Workspace, options: FleetOptions) -> dict[str, Any]:
    """No worker up: every run stays queued, its started_at still the scheduler's claim; claim -> enqueued."""
    database = ws.database("postgresql")
    env = {**ws.env(database, options.noop_tasks * 2, 1), "BENCH_EXECUTOR": "fleet", "BENCH_TASK_KIND": "sync",
           "BENCH_PHASES": "uniform"}  # fmt: skip
    try:
        log_path = ws.dir / f"scheduler-{ws._count}.log"
        with started(["manage.py", "runscheduler"], env, log_path) as scheduler:
            expected = options.noop_tasks * 2
            wait_until(
                lambda: database.rows("SELECT COUNT(*) FROM django_tasks_database_dbtaskresult")[0][0] >= expected,
                180, "every task's first run to be enqueued", scheduler, log_path,
            )  # fmt: skip
            os.killpg(scheduler.pid, signal.SIGKILL)
        rows = database.rows(
            "SELECT r.started_at, q.enqueued_at FROM scheduler_app_taskexecutionrecord r"
            " JOIN django_tasks_database_dbtaskresult q ON (q.args_kwargs->'args'->>0)::bigint = r.id"
            " WHERE r.status = 'queued'"
        )
        values = [seconds_between(claimed, enqueued) * 1000 for claimed, enqueued in rows]
        return {f"claim_to_enqueued_{k}": v for k, v in ms(values).items()} | {"samples": len(values)}
    finally:
        database.drop()


def run_all(options: FleetOptions, ws: Workspace) -> dict[str, Any]:
    scaling: dict[str, Any] = {}
    for k in options.workers:
        # Alternating, so that both see the same load of the machine.
        for executor in ("fleet", "local"):
            scaling[f"{executor}/{k}"] = repeated(
                options, f"scaling {executor} K={k}",
                lambda e=executor, k=k: one_run(ws, options, executor=e, workers=k, tasks=options.tasks,
                                                sleep=options.sleep),
            )  # fmt: skip
    overhead: dict[str, Any] = {}
    for executor in ("fleet", "local"):
        overhead[executor] = repeated(
            options, f"overhead {executor}",
            lambda e=executor: one_run(ws, options, executor=e, workers=options.noop_workers,
                                       tasks=options.noop_tasks, sleep=0.0),
        )  # fmt: skip
    overhead["handoff"] = repeated(options, "claim -> enqueued, no worker", lambda: handoff_only(ws, options))
    return {"scaling": scaling, "overhead": overhead}


def markdown(results: dict[str, Any]) -> str:
    m, o = results["machine"], results["options"]
    out = [
        f"Command: `{results['command']}`  ",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['os']}, Python {m['python']}, PostgreSQL (throw-away, "
        f"fsync off); load average {m['loadavg_start']:.2f} at start, {m.get('loadavg_end', 0):.2f} at end; "
        f"commit {m['commit']}; {m['date']}; {results['elapsed_s']:.0f} s.  ",
        f"Medians over {o['repeats']} repeat(s) of a {o['window']:g} s window. Scaling: {o['tasks']} interval tasks "
        f"at 1 s (offered {o['tasks']} runs/s), phases spread over the second, each sleeping {o['sleep']:g} s; "
        f"db_worker `--interval {o['interval']:g}`; in-process with `MAX_WORKERS` = K.",
        "",
        "| K | fleet runs/s | in-process runs/s | fleet lateness p50 / p99 ms | in-process lateness p50 / p99 ms "
        "| fleet fires run / expected | in-process fires run / expected |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    s = results.get("scaling", {})
    for k in o["workers"]:
        fleet, local = s.get(f"fleet/{k}", {}), s.get(f"local/{k}", {})
        out.append(
            f"| {k} | {fmt(fleet.get('runs_per_s'))} | {fmt(local.get('runs_per_s'))} | "
            f"{fmt(fleet.get('lateness_p50_ms'), 0)} / {fmt(fleet.get('lateness_p99_ms'), 0)} | "
            f"{fmt(local.get('lateness_p50_ms'), 0)} / {fmt(local.get('lateness_p99_ms'), 0)} | "
            f"{fmt(fleet.get('fires_run'), 0)} / {fmt(fleet.get('fires_expected'), 0)} | "
            f"{fmt(local.get('fires_run'), 0)} / {fmt(local.get('fires_expected'), 0)} |"
        )
    ov = results.get("overhead", {})
    fleet, local, handoff = ov.get("fleet", {}), ov.get("local", {}), ov.get("handoff", {})
    out += [
        "",
        f"Overhead per run: {o['noop_tasks']} no-op tasks at 1 s, fleet of {o['noop_workers']} db_worker(s) against "
        "in-process (ms, p50 / p99):",
        "",
        "| | fleet | in-process | fleet - in-process (p50) |",
        "|---|---:|---:|---:|",
    ]
    for key, title in (("lateness", "lateness (scheduled -> started)"),
                       ("end_to_end", "scheduled -> finished")):  # fmt: skip
        p50 = f"{key}_p50_ms"
        diff = None if fleet.get(p50) is None or local.get(p50) is None else fleet[p50] - local[p50]
        out.append(
            f"| {title} | {fmt(fleet.get(p50))} / {fmt(fleet.get(f'{key}_p99_ms'))} | {fmt(local.get(p50))} / "
            f"{fmt(local.get(f'{key}_p99_ms'))} | {fmt(diff)} |"
        )
    for key, title in (("fire_to_enqueued", "fleet: scheduled -> enqueued (claim, hand-off, enqueue)"),
                       ("enqueued_to_taken", "fleet: enqueued -> taken by a worker (its polling)"),
                       ("taken_to_claimed", "fleet: taken -> record claimed on the worker")):  # fmt: skip
        out.append(f"| {title} | {fmt(fleet.get(f'{key}_p50_ms'))} / {fmt(fleet.get(f'{key}_p99_ms'))} | | |")
    out.append(
        f"| scheduler only, no worker up: claim -> enqueued ({fmt(handoff.get('samples'), 0)} runs) | "
        f"{fmt(handoff.get('claim_to_enqueued_p50_ms'))} / {fmt(handoff.get('claim_to_enqueued_p99_ms'))} | | |"
    )
    errors = [f"{name}: {fig['error'][:300]}" for part in (s, ov) for name, fig in part.items() if "error" in fig]
    out += [f"- failed: {e}" for e in errors]
    return "\n".join(out) + "\n"


def parse(argv: list[str]) -> FleetOptions:
    parser = argparse.ArgumentParser(prog="python -m benches.fleet", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one repeat, no publishing (smoke run)")
    parser.add_argument("--workers", help="comma-separated worker counts K (default 1,2,4,8)")
    parser.add_argument("--tasks", type=int, help="scaling: interval tasks at 1 s (default 30)")
    parser.add_argument("--sleep", type=float, help="scaling: seconds each run sleeps (default 0.2)")
    parser.add_argument("--noop-tasks", type=int, help="overhead: no-op tasks at 1 s (default 10)")
    parser.add_argument("--noop-workers", type=int, help="overhead: db_worker processes (default 2)")
    parser.add_argument("--interval", type=float, help="db_worker --interval, seconds (default 0.1)")
    parser.add_argument("--window", type=float, help="seconds measured per run (default 8)")
    parser.add_argument("--repeats", type=int)
    parser.add_argument("--no-publish", action="store_true", help="do not rewrite BENCHMARKS.md")
    parser.add_argument("--out", type=Path, help="folder for results.json / results.md")
    args = parser.parse_args(argv)
    options = FleetOptions.quick_mode() if args.quick else FleetOptions()
    options.command = "python -m benches.fleet " + " ".join(argv)
    if args.workers:
        try:
            options.workers = tuple(int(n) for n in args.workers.split(","))
        except ValueError:
            parser.error(f"--workers: expected comma-separated counts, got {args.workers!r}")
        if not options.workers or min(options.workers) < 1:
            parser.error("--workers: each count must be at least 1")
    for key in ("tasks", "sleep", "noop_tasks", "noop_workers", "interval", "window", "repeats"):
        if getattr(args, key) is not None:
            setattr(options, key, getattr(args, key))
    options.publish = options.publish and not args.no_publish
    if args.out:
        options.out = args.out
    return options


def main(argv: list[str] | None = None) -> dict[str, Any]:
    options = parse(sys.argv[1:] if argv is None else argv)
    started_at = time.time()
    results: dict[str, Any] = {"command": options.command, "machine": machine()}
    results["options"] = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(options).items()}
    ws = FleetWorkspace(Options(quick=options.quick))
    try:
        if ws.postgres() is None:
            raise SystemExit(f"the fleet benchmark needs PostgreSQL: {ws.pg_error}")
        results.update(run_all(options, ws))
    finally:
        ws.close()
    results["elapsed_s"] = time.time() - started_at
    results["machine"]["loadavg_end"] = os.getloadavg()[0]
    table = markdown(results)
    options.out.mkdir(parents=True, exist_ok=True)
    (options.out / "results.json").write_text(json.dumps(results, indent=2, default=str))
    (options.out / "results.md").write_text(table)
    if options.publish:
        publish(results, table, BEGIN, END, figure=False)
        REPORT.write_text(
            REPORT.read_text().replace(
                f"{BEGIN}\n<!-- generated by `python -m benches.run`",
                f"{BEGIN}\n<!-- generated by `python -m benches.fleet`",
            )
        )
    print(table)
    return results


if __name__ == "__main__":
    main()
