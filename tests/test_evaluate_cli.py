"""scripts/evaluate.py: splits rebuilt from the run's manifest, files written, table printed, bad input."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from evaluate_fakes import fake_trained
from fixtures_data import ROOT as RELEASE_ROOT
from fixtures_data import make_synthetic_release
from hotspot_jax.cli import run_cli
from hotspot_jax.data import CLASS_NAMES, ProtocolConfig, load_dataset, make_binary_split, preprocess
from hotspot_jax.evaluate import binary_metrics
from hotspot_jax.evaluate.cli import main

REPO = Path(__file__).resolve().parents[1]
COUNTS = {"Hot-Spot": 10, "Hot-Spot-Multi": 10, "No-Anomaly": 100, "Cell": 3}


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    """A synthetic release, its TFDS build in a module cache, and the dataset in memory."""
    root = tmp_path_factory.mktemp("eval_release")
    zpath = make_synthetic_release(root, COUNTS, seed=3)
    cache = root / "cache"
    dataset = load_dataset(zpath, cache_dir=cache, progress=False)
    with zipfile.ZipFile(zpath) as z:
        meta = json.loads(z.read(f"{RELEASE_ROOT}/module_metadata.json"))
    truth = {i: int(v["anomaly_class"] in ("Hot-Spot", "Hot-Spot-Multi")) for i, v in meta.items()}
    return zpath, cache, dataset, truth


@pytest.fixture()
def env(release, monkeypatch, tmp_path):
    zpath, cache, dataset, truth = release
    monkeypatch.setenv("HOTSPOT_CACHE_DIR", str(cache))
    monkeypatch.delenv("HOTSPOT_DATA", raising=False)
    workdir = tmp_path / "run"
    workdir.mkdir()
    return workdir


def _run(argv, capsys):
    code = run_cli(main, [str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def _read_csv(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_evaluates_both_test_splits(release, env, monkeypatch, capsys, tmp_path):
    zpath, _, dataset, truth = release
    manifest = make_binary_split(dataset, ProtocolConfig(seed=5))
    # synthetic hotspots are darker than No-Anomaly: a steep negative weight centred on the darkest fifth
    # of No-Anomaly, so that some healthy modules are false alarms
    brightness = np.asarray(preprocess(dataset.images, 12)).mean(axis=(1, 2, 3))
    centre = float(np.quantile(brightness[dataset.labels == CLASS_NAMES.index("No-Anomaly")], 0.2))
    tm = fake_trained(env, manifest=manifest, seed=5, w=-100.0, b=centre)
    monkeypatch.setattr("hotspot_jax.train.restore.load_trained", lambda path: tm)
    out = tmp_path / "eval"
    code, stdout, err = _run(["--workdir", env, "--data", zpath, "--out", out, "--threshold", 0.4,
                              "--batch-size", 7, "--no-progress"], capsys)
    assert code == 0, err

    summary = json.loads((out / "evaluation.json").read_text())
    assert summary["arch"] == "brightnessnet" and summary["threshold"] == 0.4 and summary["epoch"] == 3
    assert summary["splits_from"] == "the run's manifest.json"
    for split in ("test", "test_realistic"):
        rows = _read_csv(out / f"{split}_predictions.csv")
        ids = [r["id"] for r in rows]
        assert ids == list(manifest.ids(split))  # exactly the manifest's images
        labels = np.array([truth[i] for i in ids])  # from the release's metadata, not from the code
        assert [r["label"] for r in rows] == ["Hotspot" if v else "No-Anomaly" for v in labels]
        expected = tm.predict_proba(dataset.images[dataset.indices(ids)])
        probs = np.array([float(r["hotspot_probability"]) for r in rows])
        np.testing.assert_allclose(probs, expected, atol=2e-5)  # batch size differs; w = -100 amplifies
        metrics = json.loads((out / f"{split}_metrics.json").read_text())
        ref = binary_metrics(labels, expected, 0.4)
        for key in ("accuracy", "precision", "sensitivity", "specificity", "f1", "roc_auc"):
            assert metrics[key] == pytest.approx(ref[key], abs=1e-6), key
        assert metrics["confusion_matrix"] == ref["confusion_matrix"]
        assert 0 < metrics["tp"] + metrics["fp"] < len(ids)  # a real mix of predictions
        assert summary["metrics"][split]["n"] == len(ids)
        for png in ("confusion", "roc"):
            assert (out / f"{split}_{png}.png").stat().st_size > 10_000
    n_test = len(manifest.ids("test"))
    n_real = len(manifest.ids("test_realistic"))
    assert n_real > n_test  # realistic prevalence: many more healthy modules
    assert summary["metrics"]["test_realistic"]["fp"] > 0 and summary["metrics"]["test_realistic"]["tn"] > 0
    assert "balanced test" in stdout and "realistic-prevalence test" in stdout
    acc = summary["metrics"]["test_realistic"]["accuracy"]
    assert f"{acc:.4f}" in next(line for line in stdout.splitlines() if line.startswith("Accuracy"))
    assert f"wrote 9 files to {out}" in stdout


def test_default_out_rebuilt_split_and_split_choice(release, env, monkeypatch, capsys):
    zpath, _, dataset, _ = release
    tm = fake_trained(env, manifest=None, seed=2, data=str(zpath))  # no manifest: rebuilt from the seed
    monkeypatch.setattr("hotspot_jax.train.restore.load_trained", lambda path: tm)
    code, stdout, err = _run(["--checkpoint", env, "--splits", "test", "--no-progress"], capsys)
    assert code == 0, err
    out = env / "evaluation"  # <workdir>/evaluation, workdir taken from the checkpoint path
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["evaluation.json", "test_metrics.json", "test_predictions.csv", "test_confusion.png", "test_roc.png"])
    ids = [r["id"] for r in _read_csv(out / "test_predictions.csv")]
    assert ids == list(make_binary_split(dataset, ProtocolConfig(seed=2)).ids("test"))
    assert "rebuilt from seed 2" in stdout
    assert json.loads((out / "evaluation.json").read_text())["data"] == str(zpath)  # the run's recorded path


def test_dataset_must_match_the_manifest(release, env, monkeypatch, capsys, tmp_path):
    _, _, dataset, _ = release
    tm = fake_trained(env, manifest=make_binary_split(dataset, ProtocolConfig(seed=0)))
    monkeypatch.setattr("hotspot_jax.train.restore.load_trained", lambda path: tm)
    other = make_synthetic_release(tmp_path, {"Hot-Spot": 4, "Hot-Spot-Multi": 4, "No-Anomaly": 60}, seed=9)
    monkeypatch.setenv("HOTSPOT_CACHE_DIR", str(tmp_path / "other_cache"))
    code, _, err = _run(["--workdir", env, "--data", other, "--no-progress"], capsys)
    assert code == 2 and err.startswith("error: ") and "metadata sha256" in err
    assert not (env / "evaluation").exists()


@pytest.mark.parametrize("argv, msg", [
    (["--workdir", "{tmp}/missing"], "--workdir {tmp}/missing does not exist"),
    (["--checkpoint", "{tmp}/file.txt"], "--checkpoint {tmp}/file.txt is not a directory"),
    (["--workdir", "{tmp}"], "is neither a training work directory"),
    (["--workdir", "{unfinished}"], "holds no checkpoint"),
    (["--workdir", "{tmp}", "--threshold", "-1"], "--threshold must be in [0, 1]"),
    (["--workdir", "{tmp}", "--batch-size", "0"], "--batch-size must be at least 1"),
    (["--workdir", "{tmp}", "--splits", "test,train"], "--splits: unknown split(s) train"),
])
def test_bad_input(tmp_path, capsys, argv, msg):
    (tmp_path / "file.txt").write_text("")
    unfinished = tmp_path / "unfinished"  # a run that never finished an epoch: config, no checkpoint
    unfinished.mkdir()
    (unfinished / "config.json").write_text(json.dumps({"run": {"arch": "squeezenet1_1", "image_size": 32}}))
    fill = {"tmp": tmp_path, "unfinished": unfinished}
    code, _, err = _run([a.format(**fill) for a in argv], capsys)
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("error: ") and msg.format(**fill) in err, err


def test_missing_data_path(release, env, monkeypatch, capsys, tmp_path):
    tm = fake_trained(env)
    monkeypatch.setattr("hotspot_jax.train.restore.load_trained", lambda path: tm)
    code, _, err = _run(["--workdir", env, "--data", tmp_path / "nope.zip"], capsys)
    assert code == 2 and f"--data {tmp_path / 'nope.zip'} does not exist" in err


def test_script_help_lists_every_option_with_default(tmp_path):
    script = str(REPO / "scripts" / "evaluate.py")
    env = {**os.environ, "COLUMNS": "250"}
    text = subprocess.run([sys.executable, script, "--help"], capture_output=True, text=True, check=True,
                          env=env).stdout
    for option, default in [("--workdir", "default: none"), ("--checkpoint", "default: none"),
                            ("--data", "default: $HOTSPOT_DATA"), ("--out", "default: <workdir>/evaluation"),
                            ("--batch-size", "default: 256"), ("--threshold", "default: 0.5"),
                            ("--splits", "default: test,test_realistic"), ("--no-progress", "default: False")]:
        line = next(line for line in text.splitlines() if line.strip().startswith(option))
        assert default in line, line
    both = subprocess.run([sys.executable, script, "--workdir", "a", "--checkpoint", "b"], capture_output=True,
                          text=True, env=env)
    assert both.returncode == 2 and "not allowed with argument" in both.stderr and "Traceback" not in both.stderr
