"""Manual-run pickup: ``python -m benches.pickup [--count 30] [--repeats 3] [--no-postgres]``.

A real ``runscheduler`` with one task that runs 50 ms every 2 s, on a throw-away database (SQLite,
and PostgreSQL from ``tests/pgserver.py``); beside it a process posts manual triggers through the
API at random gaps (``--gap``, default 0.25-0.75 s) (``benches/pickup_probe.py``). Per database: request -> started
latency p50/p99/max of the accepted runs (``started_at``, when the task's code began, minus the
moment the request was sent), and how many accepted runs ended ``skipped`` (a phase collision) or
did not run. Prints a Markdown table; BENCHMARKS.md quotes it.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from typing import Any

from benches.run import ROOT, Options, Workspace, log, median, percentile, started, wait_until


def run_once(ws: Workspace, engine: str, count: int, seed: int, gap: str) -> dict[str, Any]:
    database = ws.database(engine)
    env = {**ws.env(database, tasks=1, interval=2), "BENCH_TASK_KIND": "sync", "BENCH_TASK_SLEEP": "0.05"}
    log_path = ws.dir / f"pickup-{ws._count}.log"
    try:
        with started(["manage.py", "runscheduler"], env, log_path) as process:
            wait_until(
                lambda: database.rows(
                    "SELECT 1 FROM scheduler_app_schedulerprocess WHERE pid = %s AND role = 'active'", (process.pid,)
                ),
                120,
                "runscheduler to become active",
                process,
                log_path,
            )
            probe = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "benches.pickup_probe",
                    "trigger",
                    "--count",
                    str(count),
                    "--seed",
                    str(seed),
                    "--gap",
                    gap,
                ],
                cwd=ROOT,
                env=env,
                capture_output=True,
                text=True,
                timeout=600,
            )
            if probe.returncode != 0:
                raise RuntimeError(f"probe failed:\n{probe.stderr[-3000:]}")
        runs = json.loads(probe.stdout.strip().splitlines()[-1])["runs"]
    finally:
        database.drop()
    accepted = [run for run in runs if run["http"] == 202]
    latency = [run["latency_ms"] for run in accepted if "latency_ms" in run]
    pickup = [run["pickup_ms"] for run in accepted if "pickup_ms" in run]
    return {
        "triggers": len(runs),
        "accepted": len(accepted),
        "refused_409": sum(1 for run in runs if run["http"] == 409),
        "skipped": sum(1 for run in accepted if run.get("status") == "skipped"),
        "not_run": sum(1 for run in accepted if run.get("status") in ("pending", "running", None)),
        "latency_p50_ms": percentile(latency, 0.50),
        "latency_p99_ms": percentile(latency, 0.99),
        "latency_max_ms": max(latency) if latency else None,
        "pickup_p50_ms": percentile(pickup, 0.50),
        "pickup_p99_ms": percentile(pickup, 0.99),
        "latencies_ms": sorted(round(value, 1) for value in latency),
        "skip_messages": sorted({run.get("message", "") for run in accepted if run.get("status") == "skipped"}),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m benches.pickup", description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=30, help="manual triggers per run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--gap", default="0.25,0.75", help="min,max seconds between two triggers")
    parser.add_argument("--no-postgres", action="store_true")
    args = parser.parse_args(argv)
    ws = Workspace(Options(repeats=args.repeats))
    engines = ["sqlite"] + ([] if args.no_postgres else ["postgresql"])
    results: dict[str, Any] = {}
    try:
        for engine in engines:
            runs = []
            for attempt in range(args.repeats):
                log(f"pickup {engine} ({attempt + 1}/{args.repeats})")
                try:
                    runs.append(run_once(ws, engine, args.count, seed=attempt + 1, gap=args.gap))
                except Exception as exc:
                    log(f"pickup {engine} failed: {exc}")
            keys = ("latency_p50_ms", "latency_p99_ms", "latency_max_ms", "pickup_p50_ms", "pickup_p99_ms")
            results[engine] = {
                **{key: median([run[key] for run in runs]) for key in keys},
                **{key: sum(run[key] for run in runs) for key in ("triggers", "accepted", "refused_409", "skipped")},
                "not_run": sum(run["not_run"] for run in runs),
                "runs": runs,
            }
    finally:
        ws.close()
    print("| database | triggers | accepted (202) | refused (409) | accepted, then skipped | accepted, not run "
          "| request -> started p50 ms | p99 ms | max ms | queued -> started p50 ms | p99 ms |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for engine, fig in results.items():
        cells = [fig["triggers"], fig["accepted"], fig["refused_409"], fig["skipped"], fig["not_run"]]
        cells += [f"{fig[key]:.1f}" if fig[key] is not None else "-" for key in keys]
        print(f"| {engine} | " + " | ".join(str(cell) for cell in cells) + " |")
    print(json.dumps(results, default=str))
    return results


if __name__ == "__main__":
    main()
