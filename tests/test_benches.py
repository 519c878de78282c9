"""Smoke run of the benchmark suite (``python -m benches.run --quick``): every scenario yields its figures.

The quick mode runs only our own processes at tiny sizes (the baselines and the plot need the
benchmark-only packages of benches/requirements.txt, which the test suite does not install), so
this test needs nothing beyond requirements-dev.txt. It checks that figures exist and make sense,
never how fast anything is: the machine is shared.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = [pytest.mark.process]


@pytest.mark.own_database
def test_quick_benchmark_produces_every_scenarios_figures(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "benches.run", "--quick", "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-5000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["errors"] == {}, results["errors"]
    scenarios = results["scenarios"]
    assert set(scenarios) == {"precision", "throughput", "idle", "api"}

    precision = scenarios["precision"]["ours"]["5"]
    assert "error" not in precision, precision
    # 5 tasks at 1 s over a 2 s window: about 10 fires, all run, each with a lateness.
    assert 5 <= precision["fires_expected"] <= 15
    assert precision["fires_run"] == precision["fires_expected"] - precision["fires_missed"]
    assert precision["fires_run"] > 0
    assert 0 <= precision["lateness_p50_ms"] <= precision["lateness_p99_ms"] <= precision["lateness_max_ms"]

    throughput = scenarios["throughput"]["ours"]["20"]
    assert "error" not in throughput, throughput
    assert throughput["runs_per_s"] > 0

    idle = scenarios["idle"]["ours"]
    assert "error" not in idle, idle
    assert idle["startup_s"] > 0 and idle["rss_mb"] > 10 and idle["cpu_percent"] >= 0

    api = scenarios["api"]["ours"]
    assert "error" not in api, api
    for page in ("status", "task_list", "history"):
        assert api[f"{page}.status"] == 200, page
        assert api[f"{page}.p50_ms"] > 0 and api[f"{page}.queries"] >= 1

    table = (tmp_path / "results.md").read_text()
    for heading in ("Fire precision", "Throughput", "Idle", "API"):
        assert heading in table


def test_phase_offsets_spread_tasks_over_the_interval() -> None:
    from benches.jobs import phase_offset

    assert {phase_offset(i, 4, "aligned") for i in range(4)} == {0.0}
    assert [phase_offset(i, 4, "spread100") for i in range(4)] == pytest.approx([0.0, 0.025, 0.05, 0.075])
    assert [phase_offset(i, 4, "uniform", 2.0) for i in range(4)] == pytest.approx([0.0, 0.5, 1.0, 1.5])
    with pytest.raises(ValueError, match="unknown phases"):
        phase_offset(0, 4, "sometimes")


def test_phase_and_kind_options_are_checked() -> None:
    from benches.run import parse

    options = parse(["--scenarios", "phases", "--phases", "uniform", "--kind", "async", "--phase-sizes", "7"])
    assert (options.phases, options.kinds, options.phase_sizes, options.web) == (("uniform",), ("async",), (7,), True)
    for bad in (["--phases", "sideways"], ["--kind", "threaded"], ["--scenarios", "phase"]):
        with pytest.raises(SystemExit):
            parse(bad)


@pytest.mark.own_database
def test_quick_phase_matrix_runs_ours_and_bare_apscheduler_with_the_phases_asked(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "benches.run", "--quick", "--scenarios", "phases", "--phases", "spread100,uniform",
         "--kind", "async", "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-5000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["errors"] == {}, results["errors"]
    cells = results["scenarios"]["phases"]
    assert set(cells) == {"spread100/async/5", "uniform/async/5"}
    # 5 tasks: phases 0, 20 ... 80 ms of each second (spread100) or 0, 200 ... 800 ms (uniform).
    spans = {"spread100": (60, 100), "uniform": (600, 1000)}
    for cell in cells.values():
        low, high = spans[cell["phases"]]
        for setup in ("ours", "apscheduler"):
            figures = cell[setup]
            assert "error" not in figures, (setup, figures)
            assert low <= figures["phase_span_ms"] < high, (setup, cell["phases"], figures["phase_span_ms"])
            assert 5 <= figures["fires_expected"] <= 15 and figures["fires_run"] > 0, (setup, figures)
            assert 0 <= figures["lateness_p50_ms"] <= figures["lateness_p99_ms"], (setup, figures)
        # The web process beside ours answered the dashboard's polls.
        assert cell["ours"]["web_polls"] > 0 and cell["ours"]["web_polls_failed"] == 0
    table = (tmp_path / "results.md").read_text()
    assert "Lateness by phase distribution" in table and "| spread100 | async | 5 |" in table


@pytest.mark.postgres
@pytest.mark.fleet
def test_quick_fleet_benchmark_measures_workers_against_in_process(tmp_path: Path) -> None:
    """``python -m benches.fleet --quick``: real runscheduler and db_worker processes on its own PostgreSQL."""
    result = subprocess.run(
        [sys.executable, "-m", "benches.fleet", "--quick", "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=420,
    )
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-5000:]
    results = json.loads((tmp_path / "results.json").read_text())
    for k in (1, 2):
        for executor in ("fleet", "local"):
            figures = results["scaling"][f"{executor}/{k}"]
            assert "error" not in figures, (executor, k, figures)
            assert figures["fires_run"] > 0 and figures["runs_per_s"] > 0, (executor, k, figures)
            assert 0 <= figures["lateness_p50_ms"] <= figures["lateness_p99_ms"], (executor, k, figures)
    overhead = results["overhead"]
    fleet, local, handoff = overhead["fleet"], overhead["local"], overhead["handoff"]
    assert "error" not in fleet and "error" not in local and "error" not in handoff, overhead
    # The fleet's lateness decomposes into the queue's own timestamps, each measured.
    for part in ("fire_to_enqueued", "enqueued_to_taken", "taken_to_claimed"):
        assert fleet[f"{part}_p50_ms"] is not None and fleet[f"{part}_p50_ms"] >= 0, (part, fleet)
    assert local.get("fire_to_enqueued_p50_ms") is None  # in-process runs are never enqueued
    assert handoff["samples"] >= 3 and handoff["claim_to_enqueued_p50_ms"] >= 0, handoff
    table = (tmp_path / "results.md").read_text()
    assert "| 1 |" in table and "| 2 |" in table and "claim -> enqueued" in table


def test_fleet_benchmark_options_are_checked() -> None:
    from benches.fleet import parse

    options = parse(["--workers", "1,3", "--tasks", "12", "--sleep", "0.5"])
    assert (options.workers, options.tasks, options.sleep, options.repeats) == ((1, 3), 12, 0.5, 3)
    for bad in (["--workers", "two"], ["--workers", "0,2"], ["--sleep", "long"]):
        with pytest.raises(SystemExit):
            parse(bad)


@pytest.mark.parametrize("held", [False, True], ids=["written", "until-started"])
def test_fire_cpu_measures_every_round_of_the_dispatch_path(held: bool) -> None:
    args = [sys.executable, "-m", "benches.fire_cpu", "--tasks", "20", "--rounds", "2"]
    result = subprocess.run(
        args + (["--until-started"] if held else []), cwd=ROOT, capture_output=True, text=True, timeout=240
    )
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-5000:]
    rounds = [line for line in result.stdout.splitlines() if line.startswith("round ")]
    assert len(rounds) == 2 and all(" us CPU per fire, " in line for line in rounds), result.stdout
    what = "until the runs ended, outcomes held" if held else "until the outcomes were written"
    assert f"(20 tasks, sync, {what})" in result.stdout.splitlines()[-1]
    # Every fire ran and was recorded: the runs' lines are in the log (the tool drains before it ends).
    assert result.stderr.count(" success in ") == 20 * 3, result.stderr[-3000:]


def test_trace_counts_other_threads_writes_that_overlapped_the_claims() -> None:
    from benches.trace import analyse

    data = {
        "handed": [],
        "begins": [],
        "starts": [],
        "batches": [(10.0, 10.1, 50), (10.5, 10.6, 50)],  # the dispatcher claimed twice
        "transactions": [
            ("MainThread", 10.05, 10.05, 10.2),  # 50 ms inside the first claim
            ("run-finisher", 10.2, 10.2, 10.4),  # between the claims: none
            ("fire-dispatcher", 10.0, 10.0, 10.1),  # the claims' own transaction is not counted
            ("MainThread", 10.45, 10.45, 10.55),  # 50 ms inside the second
        ],
    }
    amid = {step: fig for step, fig in analyse(data, 10.0, 12.0).items() if step.startswith("amid claims")}
    assert set(amid) == {"amid claims: MainThread", "amid claims: run"}
    assert amid["amid claims: MainThread"]["n"] == 2
    assert amid["amid claims: MainThread"]["ms_per_s"] == pytest.approx(100 / 2.0)
    assert amid["amid claims: run"] == {"n": 0, "ms_per_s": 0.0}
