"""The GPU check (scripts/gpu_check.sh) runs to its end on the CPU at toy sizes, and reports what each stage did."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fixtures_data import make_synthetic_release
from hotspot_jax.gpu_check import runner, summary
from hotspot_jax.gpu_check.stages import Stage

ROOT = Path(__file__).resolve().parents[1]
COUNTS = {"Hot-Spot": 10, "Hot-Spot-Multi": 10, "No-Anomaly": 100}


@pytest.mark.slow
def test_tiny_check_runs_every_stage(tmp_path):
    data = make_synthetic_release(tmp_path, COUNTS, seed=3)
    out = tmp_path / "check"
    env = {**os.environ, "PYTHON": sys.executable, "HOTSPOT_CACHE_DIR": str(tmp_path / "cache")}
    done = subprocess.run(["bash", "scripts/gpu_check.sh", "--no-install", str(out), "--data", str(data), "--tiny",
                           "--budget-s", "900"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)
    result = json.loads((out / "summary.json").read_text())
    statuses = {s["name"]: s["status"] for s in result["stages"]}
    assert statuses == dict.fromkeys(("environment", "train", "parity", "depthwise", "benchmark"), "ok"), done.stdout
    assert done.returncode == 0
    assert result["environment"]["jax_backend"] == "cpu"
    assert 0.0 <= result["train"]["test_metrics"]["test"]["accuracy"] <= 1.0
    assert result["parity"]["tests"] > 0 and result["parity"]["failures"] == 0
    assert len(result["depthwise"]["layers"]) == 2 and result["depthwise"]["total_ms"]["lax.conv"] > 0
    bench = json.loads((out / "benchmark.json").read_text())
    assert {c["dtype"] for c in bench["cases"]} == {"float32", "bfloat16"}
    page = (out / "summary.md").read_text()
    assert "| train | ok |" in page and "Parity tests" in page and "MobileNetV2 total" in page


def test_a_failing_or_slow_stage_is_recorded_and_the_next_still_runs(tmp_path):
    stages = [Stage("fails", (sys.executable, "-c", "import sys; print('boom'); sys.exit(3)"), 30),
              Stage("slow", (sys.executable, "-c", "import time; time.sleep(30)"), 2),
              Stage("fine", (sys.executable, "-c", "print('ok')"), 30)]
    said = []
    results = runner.run_stages(stages, tmp_path, ROOT, budget_s=60, say=said.append)
    assert [r["status"] for r in results] == ["failed", "timed out", "ok"]
    assert results[0]["returncode"] == 3 and "boom" in "\n".join(said)
    assert results[1]["seconds"] < 10
    assert (tmp_path / "fine.log").read_text().strip() == "ok"


def test_stages_past_the_budget_are_skipped(tmp_path):
    stages = [Stage("first", (sys.executable, "-c", "import time; time.sleep(3)"), 30),
              Stage("second", (sys.executable, "-c", "print(1)"), 30)]
    results = runner.run_stages(stages, tmp_path, ROOT, budget_s=runner.MIN_STAGE_S + 1, say=lambda m: None)
    assert results[0]["status"] == "ok" and results[1]["status"] == "skipped"


def test_summary_reads_junit_counts_and_names_failures(tmp_path):
    (tmp_path / "parity.xml").write_text(
        '<testsuites><testsuite tests="3" failures="1" errors="0" skipped="1">'
        '<testcase classname="tests.test_a" name="test_x"><failure message="no"/></testcase>'
        '<testcase classname="tests.test_a" name="test_y"/></testsuite></testsuites>')
    counts = summary.parity_counts(tmp_path / "parity.xml")
    assert counts["tests"] == 3 and counts["failures"] == 1 and counts["failed_tests"] == ["tests.test_a::test_x"]
    assert summary.parity_counts(tmp_path / "absent.xml") is None
    page = summary.markdown(summary.collect(tmp_path, [{"name": "parity", "status": "failed", "seconds": 1.0}]))
    assert "| parity | failed | 1.0 |" in page and "failed: tests.test_a::test_x" in page


def test_bad_input_is_one_line(tmp_path):
    done = subprocess.run([sys.executable, "-m", "hotspot_jax.gpu_check", "--out", str(tmp_path / "o"),
                           "--data", str(tmp_path / "missing.zip")], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "dataset was not found" in done.stderr
    done = subprocess.run(["bash", "scripts/gpu_check.sh", "--no-install"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 2 and "usage:" in done.stderr


def test_results_of_an_earlier_run_are_never_read_as_this_ones(tmp_path):
    (tmp_path / "stale.json").write_text('{"old": true}')
    (tmp_path / "environment.json").write_text('{"jax_backend": "old"}')
    stages = [Stage("writes", (sys.executable, "-c", "print(1)"), 30, outputs=("stale.json",)),
              Stage("environment", (sys.executable, "-c", "print(1)"), 30, outputs=("environment.json",))]
    results = runner.run_stages(stages[:1], tmp_path, ROOT, budget_s=60, say=lambda m: None)
    assert not (tmp_path / "stale.json").exists() and results[0]["status"] == "ok"
    # a stage that did not run contributes nothing to the summary, whatever its folder holds
    assert summary.collect(tmp_path, results)["environment"] is None
