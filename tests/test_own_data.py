"""One's own labelled images: an image folder or CSV (8- and 16-bit, grey or RGB, any size) through the
TFDS cache into the ``own`` task, fine-tuned with ``--init-from`` a tiny InfraredSolarModules-like run and
predicted; every bad input is one clear DataError."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from PIL import Image

from hotspot_jax.data.own_data import MIN_PER_CLASS, convert_image, is_own_data, read_own_data
from hotspot_jax.errors import DataError
from test_train_tiny import fast_compile  # noqa: F401  (fixture)


def _save(path, kind: str, rng, size=(30, 18)):
    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = size
    if kind == "tif16":  # a radiometric 16-bit TIFF
        Image.fromarray(rng.integers(20000, 30000, size=(h, w)).astype(np.uint16)).save(path)
    elif kind == "png8":
        Image.fromarray(rng.integers(0, 256, size=(h, w)).astype(np.uint8), mode="L").save(path)
    else:  # rgb png
        Image.fromarray(rng.integers(0, 256, size=(h, w, 3)).astype(np.uint8), mode="RGB").save(path)
    return path


def make_folder(root, per_class=8, seed=0):
    """Three classes; 16-bit TIFFs and 8-bit PNGs of two sizes (plus an RGB one)."""
    rng = np.random.default_rng(seed)
    for c, name in enumerate(("Hot-Spot", "No-Anomaly", "Soiling")):
        for k in range(per_class):
            kind = ("tif16", "png8", "rgb")[(k + c) % 3]
            size = (60, 36) if k % 2 else (40, 24)
            _save(root / name / f"m{k}.{'tif' if kind == 'tif16' else 'png'}", kind, rng, size)
    return root


def test_conversion_rule(tmp_path):
    rng = np.random.default_rng(1)
    a, how = convert_image(_save(tmp_path / "a.tif", "tif16", rng, (40, 24)))
    assert a.shape == (40, 24, 1) and a.dtype == np.uint8 and "16-bit scaled per image" in how
    assert a.min() == 0 and a.max() == 255  # per-image min..max -> 0..255
    big, how = convert_image(_save(tmp_path / "b.png", "rgb", rng, (80, 48)))
    assert big.shape == (40, 24, 1) and how.startswith("RGB 48x80")  # any size and mode -> 40 x 24 grey
    flat = tmp_path / "flat.png"
    Image.fromarray(np.full((40, 24), 1234, np.uint16)).save(flat)
    assert convert_image(flat)[0].max() == 0  # a constant 16-bit image is 0, not a division by zero
    g, _ = convert_image(_save(tmp_path / "g.png", "png8", rng, (40, 24)))
    np.testing.assert_array_equal(g[..., 0], np.asarray(Image.open(tmp_path / "g.png")))  # 8-bit 40x24 untouched


def test_folder_and_csv_read_the_same_images(tmp_path):
    root = make_folder(tmp_path / "crops")
    assert is_own_data(root) and not is_own_data(tmp_path / "nothing")
    data = read_own_data(root, progress=False)
    assert data.own and data.class_names == ("Hot-Spot", "No-Anomaly", "Soiling") and len(data) == 24
    assert data.ids[0] == "Hot-Spot/m0.tif" and data.images.shape == (24, 40, 24, 1)
    rows = [("path", "label")] + [(f"crops/{i}", i.split("/")[0]) for i in data.ids]
    with open(tmp_path / "labels.csv", "w", newline="") as fh:
        csv.writer(fh).writerows(rows)
    from_csv = read_own_data(tmp_path / "labels.csv", progress=False)
    assert from_csv.class_names == data.class_names
    np.testing.assert_array_equal(from_csv.images, data.images)


@pytest.mark.parametrize("damage, message", [
    ("empty_class", "empty class folder"),
    ("zero_bytes", r"m0.png: empty file \(0 bytes\)"),
    ("unreadable", "cannot read the image"),
    ("too_few", f"too few images to split 70/15/15 \\(at least {MIN_PER_CLASS}"),
    ("csv_missing", "line 3: crops/Hot-Spot/nope.png does not exist"),
])
def test_bad_own_data_is_one_clear_error(tmp_path, damage, message):
    root = make_folder(tmp_path / "crops", per_class=5)
    target = root
    if damage == "empty_class":
        (root / "Vegetation").mkdir()
    elif damage == "zero_bytes":
        (root / "Soiling" / "m0.png").write_bytes(b"")
    elif damage == "unreadable":
        (root / "Soiling" / "m0.png").write_bytes(b"not a png at all")
    elif damage == "too_few":
        for f in sorted((root / "Soiling").iterdir())[:2]:
            f.unlink()
    elif damage == "csv_missing":
        target = tmp_path / "labels.csv"
        target.write_text("path,label\ncrops/Hot-Spot/m0.tif,Hot-Spot\ncrops/Hot-Spot/nope.png,Hot-Spot\n")
    with pytest.raises(DataError, match=message):
        read_own_data(target, progress=False)


@pytest.mark.slow
def test_fine_tune_own_folder_from_a_tiny_run_and_predict_it(tmp_path, monkeypatch, fast_compile):
    """The issue's scenario: a tiny InfraredSolarModules-like run, then one epoch on an own image folder with
    --init-from it (through the TFDS cache and the CLI), then predict.py on that folder."""
    from test_tasks import fake_dataset
    from test_train_tiny import TINY

    from hotspot_jax.predict import main as predict_main
    from hotspot_jax.train.cli import main as train_main
    from hotspot_jax.train.config import TrainConfig
    from hotspot_jax.train.loop import train

    data = fake_dataset({"Hot-Spot": 20, "Hot-Spot-Multi": 20, "No-Anomaly": 200}, seed=3)
    train(TrainConfig(arch=TINY, image_size=16, batch_size=16, epochs=1, workdir=str(tmp_path / "tiny")),
          progress=False, log=lambda m: None, dataset=data)
    root = make_folder(tmp_path / "crops", per_class=12)
    monkeypatch.setenv("HOTSPOT_CACHE_DIR", str(tmp_path / "cache"))
    argv = ["--arch", TINY, "--data", str(root), "--image-size", "16", "--batch-size", "8", "--epochs", "1",
            "--init-from", str(tmp_path / "tiny"), "--workdir", str(tmp_path / "own"), "--no-progress"]
    assert train_main(argv) == 0
    config = json.loads((tmp_path / "own" / "config.json").read_text())
    assert config["run"]["task"] == "own" and config["classes"] == ["Hot-Spot", "No-Anomaly", "Soiling"]
    assert config["initialisation"].startswith("in-domain: hotspot run tiny (") and "new head" in config["initialisation"]
    assert list((tmp_path / "cache" / "own").iterdir())  # built through TFDS once
    tm = json.loads((tmp_path / "own" / "test_metrics.json").read_text())
    assert tm["task"] == "own" and set(tm["test"]["per_class"]) == {"Hot-Spot", "No-Anomaly", "Soiling"}
    assert tm["test"]["n"] == 3 * 2  # 15% of 12 per class, rounded half up
    out = tmp_path / "pred.csv"
    assert predict_main([str(root), "--checkpoint", str(tmp_path / "own"), "--out", str(out), "--no-progress"]) == 0
    rows = list(csv.DictReader(open(out)))
    assert len(rows) == 36 and list(rows[0]) == ["image", "probability", "predicted", "p_Hot-Spot", "p_No-Anomaly",
                                                 "p_Soiling", "input_note"]
    assert all(r["input_note"] == "" for r in rows)  # converted by the own-data rule, as its training images were
    assert all(r["predicted"] in ("Hot-Spot", "No-Anomaly", "Soiling") for r in rows)


def test_two_classes_with_a_negative_one_are_a_binary_task(tmp_path):
    from hotspot_jax.data.tasks import own_task
    from hotspot_jax.predict import write_predictions

    rng = np.random.default_rng(4)
    for name in ("Bypass-Diode", "healthy"):
        for k in range(4):
            _save(tmp_path / "crops" / name / f"{k}.png", "png8", rng)
    data = read_own_data(tmp_path / "crops", progress=False)
    assert data.class_names == ("healthy", "Bypass-Diode")  # the negative class is label 0, as No-Anomaly is
    task = own_task(data.class_names)
    assert task.binary and task.positive == 1
    assert not own_task(("A", "B")).binary and not own_task(("healthy", "A", "B")).binary
    write_predictions(tmp_path / "p.csv", ["x.png"], np.array([0.7]), 0.5, task, np.array([[0.3, 0.7]]))
    assert (tmp_path / "p.csv").read_text().splitlines() == ["image,bypass-diode_probability,predicted,input_note",
                                                             "x.png,0.700000,Bypass-Diode,"]
