"""End to end on synthetic data: a tiny real training run, then evaluate.py and predict.py on its checkpoint.

The evaluation must reproduce the files the training loop wrote for the same checkpoint, and predict.py on
the test images (as files and as a zip) must give the probabilities evaluate.py reported for them.
"""

from __future__ import annotations

import csv
import json
import zipfile

import numpy as np
import pytest

import test_train_tiny  # noqa: F401  (registers the tiny_cnn_test architecture)
from fixtures_data import ROOT as RELEASE_ROOT
from fixtures_data import make_synthetic_release
from hotspot_jax import predict
from hotspot_jax.cli import run_cli
from hotspot_jax.evaluate.cli import main as evaluate_main

COUNTS = {"Hot-Spot": 10, "Hot-Spot-Multi": 10, "No-Anomaly": 100, "Diode": 4}


def _rows(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.slow
def test_train_then_evaluate_and_predict(tmp_path, monkeypatch, capsys):
    from hotspot_jax.train.config import TrainConfig
    from hotspot_jax.train.loop import train

    monkeypatch.setenv("HOTSPOT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("HOTSPOT_DATA", raising=False)
    zpath = make_synthetic_release(tmp_path, COUNTS, seed=4)
    run = tmp_path / "run"
    cfg = TrainConfig(arch="tiny_cnn_test", data=str(zpath), epochs=2, batch_size=16, lr=0.05, image_size=16,
                      eval_batch_size=32, workdir=str(run), seed=1)
    train(cfg, progress=False, log=lambda m: None)
    trained = run / "evaluation"

    out = tmp_path / "eval"
    assert run_cli(evaluate_main, ["--workdir", str(run), "--out", str(out), "--no-progress",
                                   "--batch-size", "13"]) == 0
    stdout = capsys.readouterr().out
    assert "tiny_cnn_test at 16px" in stdout and "splits: the run's manifest.json" in stdout
    for split in ("test", "test_realistic"):
        mine, theirs = _rows(out / f"{split}_predictions.csv"), _rows(trained / f"{split}_predictions.csv")
        assert [(r["id"], r["label"]) for r in mine] == [(r["id"], r["label"]) for r in theirs]
        np.testing.assert_allclose([float(r["hotspot_probability"]) for r in mine],
                                   [float(r["hotspot_probability"]) for r in theirs], atol=2e-6)
        a = json.loads((out / f"{split}_metrics.json").read_text())
        b = json.loads((trained / f"{split}_metrics.json").read_text())
        assert a["confusion_matrix"] == b["confusion_matrix"] and a["n"] == b["n"]
        assert a["roc_auc"] == pytest.approx(b["roc_auc"], abs=1e-9)
    probs = {r["id"]: float(r["hotspot_probability"]) for r in _rows(out / "test_predictions.csv")}
    assert np.std(list(probs.values())) > 1e-4  # the trained model does not output a constant

    # the test images as files and as a zip, scored by predict.py through the real load_trained
    folder = tmp_path / "crops"
    folder.mkdir()
    crops_zip = tmp_path / "crops.zip"
    with zipfile.ZipFile(zpath) as src, zipfile.ZipFile(crops_zip, "w") as dst:
        for image_id in probs:
            data = src.read(f"{RELEASE_ROOT}/images/{image_id}.jpg")
            (folder / f"{image_id}.jpg").write_bytes(data)
            dst.writestr(f"inspection/{image_id}.jpg", data)
    best = next((run / "best").iterdir())
    csv_path = tmp_path / "pred.csv"
    assert run_cli(predict.main, ["--checkpoint", str(best), str(folder), str(crops_zip), "--out", str(csv_path),
                                  "--batch-size", "5", "--no-progress"]) == 0
    rows = _rows(csv_path)
    assert len(rows) == 2 * len(probs)
    for row in rows:
        image_id = row["image"].rsplit("/", 1)[-1].removesuffix(".jpg")
        assert float(row["hotspot_probability"]) == pytest.approx(probs[image_id], abs=2e-6), row["image"]
