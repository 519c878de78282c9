"""Profile a busy ``runscheduler`` with py-spy: ``python -m benches.profile --tasks 200 --seconds 10``.

Starts our scheduler with N generated 1 s tasks on a throw-away SQLite database (as the precision
scenario does), samples every thread with py-spy for the window, and prints where the time goes:
inclusive and self time per function, busiest first. The raw collapsed stacks are kept (``--out``)
for a flame graph.
"""

from __future__ import annotations

import argparse
import collections
import subprocess
import sys
import time
from pathlib import Path

from benches.run import ROOT, Options, Workspace, started, wait_until


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=200)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--rate", type=int, default=250)
    parser.add_argument("--top", type=int, default=45)
    parser.add_argument("--idle", action="store_true", help="include idle (waiting) samples")
    parser.add_argument("--postgres", action="store_true", help="a throw-away PostgreSQL server instead of SQLite")
    parser.add_argument("--kind", choices=["sync", "async"], default="sync", help="how the no-op tasks run")
    parser.add_argument("--out", type=Path, default=ROOT / "benches" / "results" / "profile.txt")
    args = parser.parse_args()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    ws = Workspace(Options())
    try:
        database = ws.database("postgresql" if args.postgres else "sqlite")
        log_path = ws.dir / "profile.log"
        env = {**ws.env(database, args.tasks, 1), "BENCH_TASK_KIND": args.kind}
        with started(["manage.py", "runscheduler"], env, log_path) as process:
            wait_until(
                lambda: database.rows(
                    "SELECT 1 FROM scheduler_app_schedulerprocess WHERE pid = %s AND role = 'active'", (process.pid,)
                ),
                180, "runscheduler to become active", process, log_path,
            )  # fmt: skip
            time.sleep(3)
            command = [str(Path(sys.executable).parent / "py-spy"), "record", "--pid", str(process.pid),
                       "--duration", str(args.seconds), "--rate", str(args.rate), "--format", "raw",
                       "--output", str(args.out), "--nonblocking"]  # fmt: skip
            if args.idle:
                command.append("--idle")
            subprocess.run(command, check=True, capture_output=True)
    finally:
        ws.close()
    inclusive: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    total = 0
    for line in args.out.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        n = int(count)
        total += n
        frames = [frame.split(" (")[0] + " (" + frame.split(" (")[-1].split(":")[0].split("/")[-1] + ")"
                  for frame in stack.split(";") if frame]  # fmt: skip
        for frame in set(frames):
            inclusive[frame] += n
        if frames:
            own[frames[-1]] += n
    print(f"{total} samples at {args.rate}/s over {args.seconds}s (all threads; CPU only unless --idle)")
    print("\ninclusive:")
    for frame, n in inclusive.most_common(args.top):
        print(f"{100 * n / total:6.1f}%  {frame}")
    print("\nself:")
    for frame, n in own.most_common(args.top // 2):
        print(f"{100 * n / total:6.1f}%  {frame}")


if __name__ == "__main__":
    main()
