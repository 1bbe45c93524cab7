"""The operating point: a threshold chosen on validation data for a target sensitivity, stored with the best
checkpoint, used by evaluate.py and predict.py (hotspot_jax.evaluate.decision_threshold)."""

from __future__ import annotations

import json

import numpy as np
import pytest

import test_train_tiny  # noqa: F401  (registers the tiny_cnn_test architecture)
from fixtures_data import make_synthetic_release
from hotspot_jax.cli import run_cli
from hotspot_jax.errors import ConfigError
from hotspot_jax.evaluate import decision_threshold
from hotspot_jax.evaluate.metrics import binary_metrics


def test_the_highest_threshold_that_keeps_the_target_sensitivity():
    rng = np.random.default_rng(0)
    labels = np.r_[np.ones(74, int), np.zeros(74, int)]
    probs = np.r_[rng.beta(5, 2, 74), rng.beta(2, 5, 74)]
    point = decision_threshold.choose(labels, probs, 0.95)
    m = binary_metrics(labels, probs, point["threshold"])
    assert m["sensitivity"] >= 0.95 and point["validation_sensitivity"] == m["sensitivity"]
    assert point["validation_specificity"] == m["specificity"]
    k = int(np.ceil(0.95 * 74))
    kth = np.sort(probs[labels == 1])[::-1][k - 1]
    assert binary_metrics(labels, probs, kth)["sensitivity"] < 0.95  # one step higher loses the target
    assert point["threshold"] < kth and (probs[(probs < kth)] <= point["threshold"]).all()
    assert decision_threshold.choose(labels, probs, 0.5)["threshold"] > point["threshold"]


def test_every_hotspot_and_ties():
    labels = [1, 1, 1, 0, 0]
    probs = [0.9, 0.9, 0.2, 0.2, 0.1]
    point = decision_threshold.choose(labels, probs, 1.0)
    assert point["threshold"] == pytest.approx(0.15) and point["validation_sensitivity"] == 1.0
    assert point["validation_specificity"] == 0.5  # the healthy module tied with the weakest hotspot is flagged
    unreachable = decision_threshold.choose([1, 0, 1], [0.9, 0.0, 0.0], 1.0)  # a hotspot at probability 0
    assert unreachable["threshold"] == 0.0 and not unreachable["target_met"]
    assert unreachable["validation_sensitivity"] == 0.5
    assert decision_threshold.choose(labels, probs, 1.0)["target_met"]


@pytest.mark.parametrize("labels,probs,target", [([0, 0], [0.1, 0.2], 0.95), ([1, 1], [0.1, 0.2], 0.95),
                                                 ([1, 0], [0.9, 0.1], 0.0), ([1, 0], [0.9, 0.1], 1.5)])
def test_bad_inputs_are_one_clear_error(labels, probs, target):
    with pytest.raises(ConfigError):
        decision_threshold.choose(labels, probs, target)


def test_stored_for_one_checkpoint(tmp_path):
    point = decision_threshold.choose([1, 0], [0.8, 0.3], 0.95)
    decision_threshold.write(tmp_path, point, tmp_path / "best" / "12")
    assert decision_threshold.read(tmp_path)["threshold"] == point["threshold"]
    assert decision_threshold.read(tmp_path, "/elsewhere/run/best/12")["threshold"] == point["threshold"]  # moved run
    assert decision_threshold.read(tmp_path, tmp_path / "best" / "13") is None  # another checkpoint: stale
    assert decision_threshold.read(tmp_path / "absent") is None
    decision_threshold.write(tmp_path, point, tmp_path / "best" / "12", run_created="2026-12-06T10:00:00")
    assert decision_threshold.read(tmp_path, tmp_path / "best" / "12", "2026-12-06T10:00:00") is not None
    assert decision_threshold.read(tmp_path, tmp_path / "best" / "12", "2026-12-06T11:00:00") is None  # another run
    (tmp_path / decision_threshold.FILE).write_text("{not json")
    assert decision_threshold.read(tmp_path) is None


@pytest.mark.slow
def test_training_stores_it_and_evaluate_and_predict_use_it(tmp_path, monkeypatch, capsys):
    from hotspot_jax.evaluate.cli import main as evaluate_main
    from hotspot_jax.predict import main as predict_main
    from hotspot_jax.train.config import TrainConfig
    from hotspot_jax.train.loop import train
    from hotspot_jax.train.restore import load_trained

    monkeypatch.setenv("HOTSPOT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("HOTSPOT_DATA", raising=False)
    zpath = make_synthetic_release(tmp_path, {"Hot-Spot": 10, "Hot-Spot-Multi": 10, "No-Anomaly": 100}, seed=5)
    run = tmp_path / "run"
    cfg = TrainConfig(arch="tiny_cnn_test", data=str(zpath), epochs=2, batch_size=16, lr=0.05, image_size=16,
                      eval_batch_size=32, workdir=str(run), seed=1, target_sensitivity=0.9)
    train(cfg, progress=False, log=lambda m: None)

    stored = json.loads((run / decision_threshold.FILE).read_text())
    manifest = json.loads((run / "manifest.json").read_text())
    # chosen on the validation split and nothing else: its counts are the validation split's
    assert stored["validation_n_pos"] + stored["validation_n_neg"] == len(manifest["splits"]["val"])
    assert stored["target_sensitivity"] == 0.9 and stored["validation_sensitivity"] >= 0.9
    tm = load_trained(run)
    assert tm.operating_point["threshold"] == stored["threshold"]
    metrics = json.loads((run / "test_metrics.json").read_text())
    for split in ("test", "test_realistic"):
        assert metrics[f"{split}_at_operating_point"]["threshold"] == stored["threshold"]
    assert metrics["test"]["threshold"] == 0.5  # the study's table stays at 0.5

    out = tmp_path / "eval"
    assert run_cli(evaluate_main, ["--workdir", str(run), "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "At the operating point (stored with the checkpoint)" in printed
    evaluation = json.loads((out / "evaluation.json").read_text())
    assert evaluation["metrics_at_operating_point"]["test_realistic"] == metrics["test_realistic_at_operating_point"]
    assert run_cli(evaluate_main, ["--workdir", str(run), "--out", str(out), "--no-progress",
                                   "--target-sensitivity", "1.0"]) == 0
    assert "chosen now on the run's validation split" in capsys.readouterr().out
    assert run_cli(evaluate_main, ["--workdir", str(run), "--threshold", "0.3", "--target-sensitivity", "0.9"]) == 2
    # other test-time augmentation, other probabilities: the stored threshold is not reused
    assert run_cli(evaluate_main, ["--workdir", str(run), "--out", str(out), "--no-progress", "--tta", "flips"]) == 0
    assert "chosen now on the run's validation split" in capsys.readouterr().out
    assert json.loads((out / "evaluation.json").read_text())["tta"] == "flips"

    crops = tmp_path / "crops"
    crops.mkdir()
    import zipfile
    with zipfile.ZipFile(zpath) as z:
        for name in [n for n in z.namelist() if n.endswith(".jpg")][:5]:
            (crops / name.rsplit("/", 1)[1]).write_bytes(z.read(name))
    assert run_cli(predict_main, ["--checkpoint", str(run), str(crops), "--out", str(tmp_path / "p.csv"),
                                  "--no-progress"]) == 0
    assert f"probability > {stored['threshold']:.4g}, the checkpoint's operating point" in capsys.readouterr().out


def test_a_validation_split_of_one_class_leaves_the_run_at_0_5(tmp_path, monkeypatch):
    from hotspot_jax.train.config import TrainConfig
    from hotspot_jax.train.loop import train
    from hotspot_jax.train.restore import load_trained

    monkeypatch.setenv("HOTSPOT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("HOTSPOT_DATA", raising=False)
    zpath = make_synthetic_release(tmp_path, {"Hot-Spot": 10, "Hot-Spot-Multi": 10, "No-Anomaly": 100}, seed=6)
    said = []
    cfg = TrainConfig(arch="tiny_cnn_test", data=str(zpath), epochs=1, batch_size=16, image_size=16,
                      eval_batch_size=8, workdir=str(tmp_path / "run"), limit_train=32, limit_eval=1)
    train(cfg, progress=False, log=said.append)
    assert any(line.startswith("operating point: not chosen") for line in said)
    metrics = json.loads((tmp_path / "run" / "test_metrics.json").read_text())
    assert metrics["operating_point"] is None and "test_at_operating_point" not in metrics
    assert load_trained(tmp_path / "run").operating_point is None
