"""Where a fire's lateness goes: ``python -m benches.trace --tasks 200 --phases spread100 --kind async``.

A sampling profiler says where CPU goes; lateness is mostly waiting (a lock, a queue, the GIL), so
this times each fire's steps instead. A real ``runscheduler`` (in ``child`` mode: Django set up, a
few methods wrapped to note the time, then the command itself) runs N generated 1 s tasks on a
throw-away SQLite database, with a web process beside it; after the window it writes what it noted.
The parent prints, per step, the p50/p99 of the time each fire spent in it:

- aps: scheduled -> handed to our dispatcher (APScheduler's own thread);
- queue: handed -> the dispatcher took it (it was busy with the fires before);
- lock: the dispatcher waited for the process's write lock (``db.write_transaction``);
- tx: the claim transaction (``records.begin_scheduled`` and its commit) for the fire's batch;
- pool: handed to the worker pool -> a worker started the code (``started_at``);
- total: scheduled -> started, the lateness the benchmarks report;

and every write transaction by thread (dispatcher, finisher): count, lock wait and hold times.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import threading
import time
from collections import defaultdict
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from benches.run import Options, Workspace, percentile, started, wait_until, web_beside


def child() -> None:
    import django

    django.setup()
    from django.core.management import call_command

    from scheduler_app import dispatch, execution, ledger, runner

    out = os.environ["BENCH_TRACE_OUT"]
    handed: list[tuple[str, float, float]] = []  # task, scheduled, handed
    batches: list[tuple[float, float, int]] = []  # taken, done, fires
    begins: list[tuple[list[tuple[str, float]], float, float]] = []  # fires, entered, left
    pool: dict[str, float] = {}
    starts: list[tuple[str, float, float, float]] = []  # task, handed to the pool, started, ended
    transactions: list[tuple[str, float, float, float]] = []  # thread, asked, locked, done
    phases: list[tuple[str, float, float, float, float]] = []  # thread, asked, begin, body, commit (s)

    def wrap(owner: Any, name: str, before: Any) -> None:
        original = getattr(owner, name)

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            return before(original, *args, **kwargs)

        setattr(owner, name, wrapper)

    def queue_fires(original: Any, self: Any, name: str, run_times: list, jitter: Any = None) -> Any:
        now = time.time()
        handed.extend((name, at.timestamp(), now) for at in run_times)
        return original(self, name, run_times, jitter)

    def run_fires(original: Any, self: Any, batch: list) -> Any:
        taken = time.time()
        try:
            return original(self, batch)
        finally:
            batches.append((taken, time.time(), sum(len(times) for _, times, _ in batch)))

    def begin_fires(original: Any, self: Any, fires: list) -> Any:
        entered = time.time()
        try:
            return original(self, fires)
        finally:
            begins.append(([(f.config.name, f.scheduled_at.timestamp()) for f in fires], entered, time.time()))

    def pool_submit_many(original: Any, self: Any, runs: list, *args: Any, **kwargs: Any) -> Any:
        now = time.time()
        for run, _ in runs:
            pool[run.task.name] = now
        return original(self, runs, *args, **kwargs)

    def execute(original: Any, self: Any, run: Any) -> Any:
        try:
            return original(self, run)
        finally:
            if run.started_at is not None:
                name = run.task.name
                starts.append((name, pool.get(name, 0.0), run.started_at.timestamp(), time.time()))

    wrap(dispatch.Dispatcher, "queue_fires", queue_fires)
    wrap(dispatch.Dispatcher, "run_fires", run_fires)
    wrap(ledger.Ledger, "record_fires", begin_fires)
    wrap(execution.WorkerPool, "submit_many", pool_submit_many)
    wrap(execution._Worker, "_execute", execute)
    from django.db import transaction

    from scheduler_app import db

    @contextmanager
    def timed_transaction(using: str = "default") -> Any:
        # db.write_transaction, with the time it waited for the process's write lock noted.
        asked = time.time()
        with db._writer:
            locked = time.time()
            atomic = transaction.atomic(using=using)
            atomic.__enter__()
            begun = time.time()
            try:
                yield
            except BaseException as exc:
                if not atomic.__exit__(type(exc), exc, exc.__traceback__):
                    raise
            else:
                body = time.time()
                atomic.__exit__(None, None, None)
                phases.append(
                    (threading.current_thread().name, asked, begun - locked, body - begun, time.time() - body)
                )
        transactions.append((threading.current_thread().name, asked, locked, time.time()))

    ledger.write_transaction = timed_transaction
    from scheduler_app import jobstore

    jobstore.write_transaction = timed_transaction
    original_flush = jobstore.CachedDjangoJobStore.flush

    def timed_flush(self: Any) -> int:
        # The whole flush (pickling included), noted as a "transaction" of its own row.
        began = time.time()
        try:
            return original_flush(self)
        finally:
            transactions.append(("job store flush, whole", began, began, time.time()))

    jobstore.CachedDjangoJobStore.flush = timed_flush
    from scheduler_app import leadership, scheduler

    def timed(owner: Any, name: str, label: str) -> None:
        # A step of the control loop's tick, noted as a "transaction" row of its own.
        original = getattr(owner, name)

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            began = time.time()
            try:
                return original(*args, **kwargs)
            finally:
                transactions.append((label, began, began, time.time()))

        setattr(owner, name, wrapper)

    timed(leadership.Leadership, "renew", "tick: renew")
    timed(scheduler.TaskScheduler, "tick", "tick, whole")

    import gc

    collecting: dict[int, float] = {}

    def timed_collection(phase: str, info: dict[str, int]) -> None:
        # Each garbage collection, as a "transaction" row of its generation: every thread waits meanwhile.
        generation = info.get("generation", -1)
        if phase == "start":
            collecting[generation] = time.time()
        elif generation in collecting:
            began = collecting.pop(generation)
            transactions.append((f"gc generation {generation}", began, began, time.time()))

    gc.callbacks.append(timed_collection)

    # Experiments (--env), each a change to try before making it in the code:
    if os.environ.get("BENCH_EXP_PLAIN_LOOP"):
        # The worker's loop as it was: asyncio's default, polling on every turn.
        original_init = execution.AsyncRuntime.__init__

        def plain_loop_init(self: Any, name: str) -> None:
            original_init(self, name)
            self.loop.close()
            self.loop = asyncio.new_event_loop()

        execution.AsyncRuntime.__init__ = plain_loop_init
    if gather := os.environ.get("BENCH_EXP_GATHER"):
        # The finisher's batch window (runner.FINISH_BATCH_SECONDS), e.g. 0 to see what it saves.
        runner.FINISH_BATCH_SECONDS = float(gather)

    if quiet := os.environ.get("BENCH_EXP_FINISH_QUIET"):
        # The finisher waits for the dispatcher's quiet (``claimed_lately``, not only ``claims_waiting``),
        # at most this many seconds (runner.FINISH_MAX_DEFER_SECONDS).
        runner.FINISH_MAX_DEFER_SECONDS = float(quiet)
        original_start = dispatch.Dispatcher.start

        def start_quiet(self: Any) -> None:
            original_start(self)
            self.runner.claims_waiting = self.claimed_lately

        dispatch.Dispatcher.start = start_quiet

    if os.environ.get("BENCH_EXP_NO_GC"):
        # No automatic garbage collection at all (an upper bound of what the collector costs the fires).
        gc.disable()
        original_freeze = gc.freeze

        def freeze_and_disable() -> None:
            original_freeze()
            gc.disable()

        gc.freeze = freeze_and_disable

    # CPU seconds per thread at the window's start (SIGUSR2), for the share of each kind of thread.
    thread_cpu_at_start: dict[int, float] = {}

    def thread_kind(name: str) -> str:
        # Workers by kind (task-worker-3 -> task-worker; a run renames its worker), their watchdog apart.
        worker = name.startswith(("task-worker", "task:")) and not name.endswith("watchdog")
        return "task-worker" if worker else name.rstrip("0123456789-")

    def switches() -> dict[str, list[int]]:
        # Context switches by thread (voluntary, involuntary), from /proc: GIL hand-offs show here.
        native = {thread.native_id: thread.name for thread in threading.enumerate()}
        counts: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        for task in Path("/proc/self/task").iterdir():
            kind = thread_kind(native.get(int(task.name), "?"))
            for line in (task / "status").read_text().splitlines():
                if line.startswith("voluntary_ctxt_switches"):
                    counts[kind][0] += int(line.split()[1])
                elif line.startswith("nonvoluntary_ctxt_switches"):
                    counts[kind][1] += int(line.split()[1])
        return counts

    switches_at_start: dict[str, list[int]] = {}

    def thread_cpu() -> dict[int, tuple[str, float]]:
        seconds = {}
        for thread in threading.enumerate():
            try:
                seconds[thread.ident] = (thread.name, time.clock_gettime(time.pthread_getcpuclockid(thread.ident)))
            except (OSError, TypeError):
                continue
        return seconds

    profile = os.environ.get("BENCH_TRACE_PROFILE")
    if profile:
        # CPU time per function over all threads (yappi, measurement only: not a requirement).
        import yappi

        yappi.set_clock_type("cpu")
        yappi.start()

    def window_starts(signum: int, frame: Any) -> None:
        thread_cpu_at_start.update({ident: cpu for ident, (_, cpu) in thread_cpu().items()})
        switches_at_start.update(switches())
        if profile:
            yappi.clear_stats()

    signal.signal(signal.SIGUSR2, window_starts)

    def dump(signum: int, frame: Any) -> None:
        if profile:
            yappi.stop()
            with open(profile, "w") as handle:
                stats = sorted(yappi.get_func_stats(), key=lambda f: f.ttot, reverse=True)
                for f in stats[:400]:
                    handle.write(f"{f.ttot * 1000:10.1f} {f.tsub * 1000:10.1f} {f.ncall:8d}  {f.full_name[-110:]}\n")
        by_kind: dict[str, float] = defaultdict(float)
        for ident, (name, cpu) in thread_cpu().items():
            kind = thread_kind(name)
            by_kind[kind] += cpu - thread_cpu_at_start.get(ident, cpu)
        now_switches = switches()
        switched = {kind: [v - switches_at_start.get(kind, [0, 0])[0], i - switches_at_start.get(kind, [0, 0])[1]]
                    for kind, (v, i) in now_switches.items()}  # fmt: skip
        data = {"phases": phases, "switches": switched, "handed": handed, "batches": batches, "begins": begins,
                "starts": starts, "transactions": transactions, "thread_cpu": by_kind}  # fmt: skip
        Path(out).write_text(json.dumps(data))
        os._exit(0)

    signal.signal(signal.SIGUSR1, dump)
    call_command("runscheduler")


def analyse(data: dict[str, Any], w0: float, w1: float) -> dict[str, dict[str, float | None]]:
    steps: dict[str, list[float]] = defaultdict(list)
    fires: dict[tuple[str, float], dict[str, float]] = defaultdict(dict)
    for name, scheduled, at in data["handed"]:
        fires[(name, round(scheduled, 3))]["handed"] = at
    for batch, entered, left in data["begins"]:
        for name, scheduled in batch:
            fire = fires[(name, round(scheduled, 3))]
            fire.update(entered=entered, left=left, batch=len(batch))
    last_fire: dict[str, list[tuple[float, dict[str, float]]]] = defaultdict(list)
    for (name, scheduled), fire in fires.items():
        last_fire[name].append((scheduled, fire))
    for name, pooled, began, ended in data["starts"]:
        candidates = [(s, f) for s, f in last_fire[name] if s <= began + 0.001 and "started" not in f]
        if candidates:
            scheduled, fire = max(candidates, key=lambda c: c[0])
            fire.update(pooled=pooled, started=began, ended=ended)
    batch_sizes = []
    for (_name, scheduled), fire in fires.items():
        if not (w0 <= scheduled < w1) or "started" not in fire:
            continue
        steps["total"].append(fire["started"] - scheduled)
        if "handed" in fire:
            steps["aps"].append(fire["handed"] - scheduled)
        if "entered" in fire and "handed" in fire:
            steps["queue"].append(fire["entered"] - fire["handed"])
            steps["claim (lock + tx)"].append(fire["left"] - fire["entered"])
            batch_sizes.append(fire["batch"])
        if fire.get("pooled"):
            steps["pool"].append(fire["started"] - fire["pooled"])
        steps["run"].append(fire["ended"] - fire["started"])
    out: dict[str, dict[str, float | None]] = {}
    for step, values in steps.items():
        ms = [v * 1000 for v in values]
        out[step] = {"n": len(ms), "p50_ms": percentile(ms, 0.5), "p99_ms": percentile(ms, 0.99),
                     "mean_ms": sum(ms) / len(ms) if ms else None}  # fmt: skip
    out["batch size per fire"] = {"n": len(batch_sizes), "p50_ms": percentile(batch_sizes, 0.5),
                                  "p99_ms": percentile(batch_sizes, 0.99), "mean_ms": None}  # fmt: skip
    by_thread: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for thread, asked, locked, done in data["transactions"]:
        if w0 <= asked < w1:
            by_thread[thread.split("-")[0] if thread.startswith("run-finisher") else thread].append(
                (locked - asked, done - locked)
            )
    for thread, values in by_thread.items():
        waits, holds = [v[0] * 1000 for v in values], [v[1] * 1000 for v in values]
        out[f"tx {thread}: lock wait"] = {
            "n": len(waits),
            "p50_ms": percentile(waits, 0.5),
            "p99_ms": percentile(waits, 0.99),
            "mean_ms": sum(waits) / len(waits),
        }
        out[f"tx {thread}: held"] = {"n": len(holds), "p50_ms": percentile(holds, 0.5),
                                     "p99_ms": percentile(holds, 0.99), "mean_ms": sum(holds) / len(holds)}  # fmt: skip
    # How long each other thread's write transactions (and the whole job-store flush) ran while the
    # dispatcher claimed fires: the writes a burst had to share the process with.
    claims = [(taken, done) for taken, done, _ in data["batches"] if w0 <= taken < w1]
    amid: dict[str, list[float]] = defaultdict(list)
    for thread, asked, _locked, done in data["transactions"]:
        if not (w0 <= asked < w1) or thread == "fire-dispatcher":
            continue
        overlap = sum(max(0.0, min(done, c1) - max(asked, c0)) for c0, c1 in claims)
        amid[thread.split("-")[0] if thread.startswith("run-finisher") else thread].append(overlap * 1000)
    for thread, overlaps in amid.items():
        out[f"amid claims: {thread}"] = {"n": sum(1 for o in overlaps if o > 0), "ms_per_s": sum(overlaps) / (w1 - w0)}
    return out


def main() -> None:
    if sys.argv[1:2] == ["child"]:
        child()
        return
    parser = argparse.ArgumentParser(prog="python -m benches.trace", description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=200)
    parser.add_argument("--phases", default="spread100")
    parser.add_argument("--kind", choices=["sync", "async"], default="async")
    parser.add_argument("--seconds", type=float, default=6.0, help="the window measured, after a warm-up")
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--no-web", action="store_true")
    parser.add_argument("--env", action="append", default=[], help="NAME=VALUE for the scheduler (experiments)")
    parser.add_argument("--profile", type=Path, help="also write CPU ms per function (ttot, tsub, calls) here (yappi)")
    parser.add_argument("--keep", type=Path, help="also copy the raw trace (JSON, with the window's bounds) here")
    args = parser.parse_args()
    ws = Workspace(Options())
    try:
        database = ws.database("sqlite")
        env = {**ws.env(database, args.tasks, 1), "BENCH_TASK_KIND": args.kind, "BENCH_PHASES": args.phases}
        env.update(dict(item.split("=", 1) for item in args.env))
        out = ws.dir / "trace.json"
        log_path = ws.dir / "trace.log"
        child_env = {**env, "BENCH_TRACE_OUT": str(out)}
        if args.profile:
            child_env["BENCH_TRACE_PROFILE"] = str(args.profile.resolve())
        beside = ExitStack()
        if not args.no_web:
            beside.enter_context(web_beside(ws, env))
        with (
            beside,
            started(["-m", "benches.trace", "child"], child_env, log_path) as process,
        ):
            wait_until(
                lambda: database.rows(
                    "SELECT 1 FROM scheduler_app_schedulerprocess WHERE pid = %s AND role = 'active'", (process.pid,)
                ),
                180, "runscheduler to become active", process, log_path,
            )  # fmt: skip
            time.sleep(args.warmup)
            os.kill(process.pid, signal.SIGUSR2)
            w0 = time.time()
            spy = None
            if os.environ.get("BENCH_PYSPY"):
                import subprocess

                spy = subprocess.Popen(
                    [
                        "py-spy",
                        "record",
                        "--pid",
                        str(process.pid),
                        "--threads",
                        "--gil",
                        "--nonblocking",
                        "-r",
                        "1000",
                        "-d",
                        str(int(args.seconds)),
                        "--format",
                        "raw",
                        "-o",
                        os.environ["BENCH_PYSPY"],
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            time.sleep(args.seconds)
            if spy is not None:
                spy.wait()
            w1 = time.time()
            time.sleep(1.0)
            os.kill(process.pid, signal.SIGUSR1)
            process.wait(timeout=60)
        data = json.loads(out.read_text())
        result = analyse(data, w0, w1)
        if args.keep:
            args.keep.write_text(json.dumps({**data, "window": [w0, w1]}))
    finally:
        ws.close()
    print(f"{args.tasks} tasks, phases {args.phases}, kind {args.kind}, {args.seconds:g} s window, "
          f"web {'no' if args.no_web else 'yes'} {' '.join(args.env)}")  # fmt: skip
    print(f"{'step':32} {'n':>6} {'p50 ms':>8} {'p99 ms':>8} {'mean ms':>8}")
    steps = {step: fig for step, fig in result.items() if not step.startswith("amid claims")}
    for step, fig in steps.items():
        cells = [f"{fig[k]:8.2f}" if fig[k] is not None else f"{'-':>8}" for k in ("p50_ms", "p99_ms", "mean_ms")]
        print(f"{step:32} {fig['n']:6d} " + " ".join(cells))
    print("other writes while the dispatcher claimed fires (transactions overlapping, ms per second):")
    for step, fig in result.items():
        if step.startswith("amid claims"):
            print(f"  {step.removeprefix('amid claims: '):30} {fig['n']:6d} tx {fig['ms_per_s']:8.2f} ms/s")
    print("context switches per second of the window, by thread (voluntary, involuntary):")
    for kind, (voluntary, involuntary) in sorted(data.get("switches", {}).items(), key=lambda item: -sum(item[1])):
        if voluntary + involuntary:
            print(f"  {kind:30} {voluntary / args.seconds:8.0f} {involuntary / args.seconds:8.0f}")
    print("CPU ms per second of the window, by thread (from the window's start to the dump):")
    for kind, seconds in sorted(data.get("thread_cpu", {}).items(), key=lambda item: -item[1]):
        if seconds > 0.0005:
            print(f"  {kind:30} {seconds * 1000 / args.seconds:8.1f}")


if __name__ == "__main__":
    main()
