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
