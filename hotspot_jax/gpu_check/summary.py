"""The GPU check's summary: each stage's status and the headline numbers its files hold (summary.json, .md)."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from hotspot_jax.gpu_check.stages import TRAIN_ARCH

METRICS = ("accuracy", "precision", "sensitivity", "specificity", "f1", "roc_auc", "false_alarms_per_1000")


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def parity_counts(path: Path) -> dict | None:
    """Tests, failures, errors and skips from pytest's JUnit XML; None if absent or unreadable."""
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError):
        return None
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    if suite is None:
        return None
    counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    counts["failed_tests"] = [f"{case.get('classname')}::{case.get('name')}" for case in suite.iter("testcase")
                              if case.find("failure") is not None or case.find("error") is not None]
    return counts


def collect(out: Path, results: list[dict]) -> dict:
    """Stage results with what the output files of the stages that ran (not skipped) say."""
    ran = {r["name"] for r in results if r["status"] != "skipped"}
    train_dir = out / f"train_{TRAIN_ARCH}"
    parts = {
        "environment": lambda: _json(out / "environment.json"),
        "train": lambda: {"test_metrics": _json(train_dir / "test_metrics.json"),
                          "config": _json(train_dir / "config.json")},
        "parity": lambda: parity_counts(out / "parity.xml"),
        "depthwise": lambda: _json(out / "depthwise.json"),
        "benchmark": lambda: benchmark_table(out / "benchmark.json"),
    }
    return {"stages": results, **{name: read() if name in ran else None for name, read in parts.items()}}


def benchmark_table(path: Path) -> str | None:
    """The benchmark's own markdown table of its JSON file, or None if absent or unreadable."""
    if not path.is_file():
        return None
    from hotspot_jax.bench import report

    try:
        return report.markdown_table([report.read_result(str(path))])
    except Exception as err:  # a partial or foreign file: say so on the page rather than fail the summary
        return f"(benchmark.json unreadable: {err})"


def _metric_line(name: str, metrics: Any) -> str | None:
    if not isinstance(metrics, dict):
        return None
    values = [f"{k} {metrics[k]:.4f}" for k in METRICS if isinstance(metrics.get(k), (int, float))]
    return f"- {name}: " + ", ".join(values) if values else None


def markdown(summary: dict) -> str:
    """A page a person reads first: stages, device, training result, parity counts, depthwise, benchmark."""
    lines = ["# GPU check", "", "| stage | status | seconds |", "|---|---|---:|"]
    for s in summary["stages"]:
        lines.append(f"| {s['name']} | {s['status']} | {s.get('seconds', '')} |")
    env = summary.get("environment") or {}
    if env:
        lines += ["", f"Device: {env.get('nvidia_smi') or env.get('jax_devices')}; JAX backend "
                  f"{env.get('jax_backend')}; packages: "
                  + ", ".join(f"{k} {v}" for k, v in (env.get("packages") or {}).items() if v)]
    tm = (summary.get("train") or {}).get("test_metrics")
    if isinstance(tm, dict):
        run = ((summary.get("train") or {}).get("config") or {}).get("run") or {}
        seconds = next((s.get("seconds") for s in summary["stages"] if s["name"] == "train"), None)
        lines += ["", f"## {TRAIN_ARCH}, the study's protocol, from random weights", "",
                  f"{run.get('image_size')} px, {run.get('epochs')} epochs, batch {run.get('batch_size')}, lr "
                  f"{run.get('lr')}, {run.get('dtype')}, seed {run.get('seed')}, initialisation "
                  f"{tm.get('initialisation')}; {seconds} s for the whole stage (dataset build, training, tests)", ""]
        for key, value in tm.items():
            line = _metric_line(key, value)
            if line:
                lines.append(line)
    parity = summary.get("parity")
    if parity:
        lines += ["", f"Parity tests (JAX on this device vs torch on the CPU): {parity['tests']} run, "
                  f"{parity['failures']} failed, {parity['errors']} errors, {parity['skipped']} skipped"]
        lines += [f"- failed: {t}" for t in parity["failed_tests"]]
    dw = summary.get("depthwise")
    if isinstance(dw, dict) and dw.get("table"):
        lines += ["", "## Depthwise convolution: shifted sums vs lax.conv (fwd + bwd)", "", *dw["table"]]
    bench = summary.get("benchmark")
    if bench:
        lines += ["", "## JAX vs PyTorch on this device (images/s, batch 32)", "", bench]
    return "\n".join(lines) + "\n"


def write(out: Path, summary: dict) -> None:
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    (out / "summary.md").write_text(markdown(summary))
