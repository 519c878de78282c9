"""Kill ratio per module from mutmut's results (``make mutate`` prints it; README, Tests, quotes it).

A survivor is a mutant no test noticed: kill it with a test, or, when it cannot change behaviour
(an equivalent mutant), mark its line ``# pragma: no mutate`` with the reason beside it.
"""

from __future__ import annotations

import subprocess
import sys
from collections import Counter, defaultdict


def main() -> int:
    listing = subprocess.run(
        [sys.executable, "-m", "mutmut", "results", "--all", "true"], capture_output=True, text=True, check=True
    ).stdout
    by_module: dict[str, Counter[str]] = defaultdict(Counter)
    survivors: list[str] = []
    for line in listing.splitlines():
        name, _, status = line.strip().rpartition(": ")
        if not name:
            continue
        module = name.split(".x")[0].split(".xǁ")[0]
        by_module[module][status] += 1
        if status in ("survived", "no tests"):
            survivors.append(f"{name} ({status})")
    print(f"{'module':40} {'mutants':>8} {'killed':>8} {'survived':>9} {'no tests':>9} {'other':>6} {'kill ratio':>10}")
    total: Counter[str] = Counter()
    for module in sorted(by_module):
        counts = by_module[module]
        total.update(counts)
        print(_row(module, counts))
    print(_row("all", total))
    if survivors:
        print("\nsurvivors (`.venv/bin/mutmut show NAME` shows the change):")
        print("\n".join(f"  {name}" for name in survivors))
    return 0


def _row(label: str, counts: Counter[str]) -> str:
    # A mutant no fast test reaches ("no tests") is as unkilled as a survivor; "other" (not checked,
    # suspicious, skipped) is left out of the ratio.
    killed = counts["killed"] + counts["timeout"]
    judged = killed + counts["survived"] + counts["no tests"]
    other = sum(counts.values()) - judged
    ratio = f"{100 * killed / judged:.1f} %" if judged else "-"
    return (
        f"{label:40} {sum(counts.values()):>8} {killed:>8} {counts['survived']:>9} {counts['no tests']:>9}"
        f" {other:>6} {ratio:>10}"
    )


if __name__ == "__main__":
    sys.exit(main())
