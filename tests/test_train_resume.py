"""Kill-and-resume: a run interrupted by Ctrl-C mid-epoch, resumed, SIGKILLed mid-epoch, and resumed again
ends with exactly the weights and metrics of an uninterrupted run (CPU, same seed)."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

import test_train_tiny  # noqa: F401  (registers tiny_cnn_test for load_trained)
from subprocess_lines import LineReader

TESTS = Path(__file__).resolve().parent
RUNNER = (
    f"import sys; sys.path.insert(0, {str(TESTS)!r}); import test_train_tiny; "
    "from hotspot_jax.cli import run_cli; from hotspot_jax.train.cli import main; sys.exit(run_cli(main))"
)
ARGS = ["--arch", "tiny_cnn_test", "--image-size", "16", "--limit-train", "64", "--limit-eval", "32",
        "--batch-size", "8", "--eval-batch-size", "16", "--epochs", "3", "--lr", "0.05", "--seed", "3",
        "--no-progress"]
TIMING_KEYS = ("train_seconds", "images_per_second")


class Run(LineReader):
    """A training subprocess whose output lines are collected by a thread (so we can wait for one)."""

    def __init__(self, workdir: Path, env: dict, delay: float = 0.0):
        env = dict(env, HOTSPOT_TRAIN_STEP_DELAY=str(delay))
        super().__init__([sys.executable, "-c", RUNNER, *ARGS, "--workdir", str(workdir)], env)

    def wait_for(self, text: str, timeout: float = 180) -> float:
        return super().wait_for(text, timeout)

    def finish(self, timeout: float = 300) -> int:
        return super().finish(timeout)


def _meta(workdir: Path, step: int) -> dict:
    return json.loads((workdir / "checkpoints" / str(step) / "meta" / "metadata").read_text())


def _steps(workdir: Path) -> list[int]:
    return sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())


def _rows(workdir: Path) -> list[dict]:
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in rows]


def _leaves(path: Path) -> list[np.ndarray]:
    from hotspot_jax.train.restore import load_trained

    tm = load_trained(path)
    return [np.asarray(x) for x in jax.tree.leaves(tm.variables)]


@pytest.mark.needs_data
@pytest.mark.slow
def test_interrupted_and_killed_run_resumes_to_identical_weights_and_metrics(real_data_path, tmp_path):
    env = dict(os.environ, HOTSPOT_DATA=str(real_data_path), JAX_PLATFORMS="cpu",
               JAX_DISABLE_MOST_OPTIMIZATIONS="true")
    env.pop("XLA_FLAGS", None)
    straight, broken = tmp_path / "straight", tmp_path / "broken"

    a = Run(straight, env)
    assert a.finish() == 0, a.output

    # 1) Ctrl-C during epoch 1: saves a mid-epoch checkpoint, exits 130 without a traceback
    b1 = Run(broken, env, delay=0.3)
    b1.wait_for("train step compiled")
    b1.proc.send_signal(signal.SIGINT)
    assert b1.finish() == 130, b1.output
    assert "interrupted: saved" in b1.output and "Traceback" not in b1.output
    (step,) = _steps(broken)
    assert 1 <= step < 8 and _meta(broken, step)["batch_in_epoch"] == step  # mid-epoch 1

    # 2) resume; SIGKILL in the middle of epoch 2 (after epoch 1's checkpoint, before epoch 2's)
    b2 = Run(broken, env, delay=0.3)
    b2.wait_for("epoch 1/3:")
    time.sleep(0.8)  # an epoch takes 8 steps x 0.3 s
    b2.proc.send_signal(signal.SIGKILL)
    b2.finish()
    assert "resuming from" in b2.output and "epoch 2/3:" not in b2.output, b2.output
    assert max(_steps(broken)) == 8 and len(_rows(broken)) == 1
    assert not any(p.name.startswith(".") or "tmp" in p.name for p in (broken / "checkpoints").iterdir())

    # 3) the same command again finishes the run
    b3 = Run(broken, env)
    assert b3.finish() == 0, b3.output
    assert "resuming from" in b3.output

    assert _steps(straight) == _steps(broken) and max(_steps(straight)) == 24
    assert _rows(straight) == _rows(broken)
    for x, y in zip(_leaves(straight / "checkpoints" / "24"), _leaves(broken / "checkpoints" / "24")):
        np.testing.assert_array_equal(x, y)
    for x, y in zip(_leaves(straight), _leaves(broken)):  # the chosen (best) checkpoint
        np.testing.assert_array_equal(x, y)
    ta, tb = (json.loads((d / "test_metrics.json").read_text()) for d in (straight, broken))
    ta["checkpoint"].pop("path"), tb["checkpoint"].pop("path")
    assert ta == tb
    assert len(json.loads((broken / "config.json").read_text())["resumed"]) == 2
