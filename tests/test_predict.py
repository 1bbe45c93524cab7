"""Prediction: image discovery (files, folders, zips), scoring of odd-sized images, the CSV and the CLI."""

from __future__ import annotations

import csv
import io
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from evaluate_fakes import brightness_probability, fake_trained
from hotspot_jax import predict
from hotspot_jax.cli import run_cli
from hotspot_jax.data import load_image_file, preprocess
from hotspot_jax.errors import DataError

ROOT = Path(__file__).resolve().parents[1]
SIZES = [(40, 24), (41, 23), (80, 48), (17, 33), (40, 24), (64, 64), (39, 25)]


def _png(array: np.ndarray, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format=fmt)
    return buf.getvalue()


@pytest.fixture()
def images(tmp_path):
    """A folder tree and a zip of synthetic crops of odd sizes (gray and RGB), plus non-images to ignore."""
    rng = np.random.default_rng(0)
    folder = tmp_path / "inspection"
    (folder / "row2" / "deep").mkdir(parents=True)
    (folder / ".hidden").mkdir()
    arrays = {}
    for k, (h, w) in enumerate(SIZES):
        arr = rng.integers(0, rng.integers(40, 256), (h, w), dtype=np.uint8)  # brightness varies
        rel = ["", "row2/", "row2/deep/"][k % 3] + f"m{k}" + [".png", ".PNG", ".bmp"][k % 3]
        (folder / rel).write_bytes(_png(arr, "PNG" if k % 3 < 2 else "BMP"))
        arrays[str(folder / rel)] = arr
    rgb = rng.integers(0, 256, (40, 24, 3), dtype=np.uint8)
    (folder / "colour.tiff").write_bytes(_png(rgb, "TIFF"))
    arrays[str(folder / "colour.tiff")] = None  # grayscale via load_image_file
    (folder / "notes.txt").write_text("not an image")
    (folder / ".hidden" / "x.png").write_bytes(_png(rgb))
    zpath = tmp_path / "crops.zip"
    with zipfile.ZipFile(zpath, "w") as z:
        for k, (h, w) in enumerate([(40, 24), (55, 31), (12, 70)]):
            arr = rng.integers(0, rng.integers(40, 256), (h, w), dtype=np.uint8)
            z.writestr(f"crops/c{k}.png", _png(arr))
            arrays[f"{zpath}:crops/c{k}.png"] = arr
        z.writestr("crops/", b"")
        z.writestr("__MACOSX/crops/._c0.png", b"junk")
        z.writestr("readme.md", b"ignored")
    return folder, zpath, arrays


def test_collect_images(images, tmp_path):
    folder, zpath, arrays = images
    found = predict.collect_images([folder, zpath])
    names = [s.name for s in found]
    assert sorted(names) == sorted(arrays)
    assert names == sorted(names[:8]) + sorted(names[8:])  # folder first, each input sorted
    single = tmp_path / "one.dat"  # a file named explicitly is read whatever its ending
    single.write_bytes(b"x")
    assert [s.name for s in predict.collect_images([single])] == [str(single)]


@pytest.mark.parametrize("make, msg", [
    (lambda p: p / "missing", "does not exist"),
    (lambda p: (p / "empty").mkdir() or p / "empty", "no images found"),
])
def test_collect_images_errors(tmp_path, make, msg):
    with pytest.raises(DataError, match=msg):
        predict.collect_images([make(tmp_path)])


def test_bad_zip_is_named(tmp_path):
    bad = tmp_path / "broken.zip"
    bad.write_bytes(b"PK\x03\x04 not really")
    with pytest.raises(DataError, match="broken.zip: cannot read the zip"):
        predict.collect_images([bad])


def test_scores_match_independent_computation(images, tmp_path):
    folder, zpath, arrays = images
    tm = fake_trained(tmp_path, image_size=12)
    sources = predict.collect_images([folder, zpath])
    res = predict.predict_sources(tm, sources, batch_size=4, progress=False)
    assert res.names == [s.name for s in sources] and not res.skipped
    w, b = 3.0, -0.6  # fake_trained's defaults
    for name, prob in zip(res.names, res.probs):
        if arrays[name] is not None:
            img = arrays[name][..., None]
        else:
            img = load_image_file(name)
        x = np.asarray(preprocess(img[None], 12))  # the training preprocessing, one image at a time
        assert prob == pytest.approx(brightness_probability(x, w, b)[0], abs=1e-5), name
    assert res.probs.std() > 0.01  # the fake really separates images


def test_same_as_trained_model_predict_proba(tmp_path):
    """For dataset-sized images the batched path equals TrainedModel.predict_proba (one source of truth)."""
    rng = np.random.default_rng(1)
    imgs = (rng.integers(0, 256, (11, 40, 24, 1)) * rng.uniform(0.2, 1, (11, 1, 1, 1))).astype(np.uint8)
    folder = tmp_path / "same"
    folder.mkdir()
    for k, img in enumerate(imgs):
        (folder / f"{k:02d}.png").write_bytes(_png(img[..., 0]))
    tm = fake_trained(tmp_path, image_size=16)
    res = predict.predict_sources(tm, predict.collect_images([folder]), batch_size=4, progress=False)
    np.testing.assert_allclose(res.probs, tm.predict_proba(imgs, batch_size=5), atol=1e-6)


def test_unreadable_image_stops_or_is_skipped(images, tmp_path):
    folder, zpath, _ = images
    (folder / "row2" / "broken.jpg").write_bytes(b"\xff\xd8 truncated")
    with zipfile.ZipFile(zpath, "a") as z:
        z.writestr("crops/bad.png", b"nope")
    tm = fake_trained(tmp_path)
    sources = predict.collect_images([folder, zpath])
    with pytest.raises(DataError, match="broken.jpg"):
        predict.predict_sources(tm, sources, progress=False)
    res = predict.predict_sources(tm, sources, skip_bad=True, progress=False)
    assert [n for n, _ in res.skipped] == [str(folder / "row2" / "broken.jpg"), f"{zpath}:crops/bad.png"]
    assert "crops.zip:crops/bad.png" in res.skipped[1][1]
    assert len(res.names) == len(sources) - 2 and res.probs.shape == (len(sources) - 2,)


def _run_main(argv, capsys):
    code = run_cli(predict.main, [str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_writes_csv(images, tmp_path, monkeypatch, capsys):
    folder, zpath, arrays = images
    tm = fake_trained(tmp_path, image_size=12)
    monkeypatch.setattr("hotspot_jax.train.restore.load_trained", lambda path: tm)
    out = tmp_path / "pred.csv"
    code, stdout, err = _run_main(["--checkpoint", tmp_path, folder, zpath, "--out", out, "--batch-size", 3,
                                   "--threshold", 0.6, "--no-progress"], capsys)
    assert code == 0, err
    with open(out, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["image", "hotspot_probability", "predicted", "input_note"]
    assert sorted(r["image"] for r in rows) == sorted(arrays)
    notes = {r["image"]: r["input_note"] for r in rows}
    assert notes[str(folder / "m0.png")] == ""  # 40x24 grayscale: a crop like the training ones
    assert notes[str(folder / "colour.tiff")] == "RGB colour converted to grayscale (luma)"
    assert notes[f"{zpath}:crops/c1.png"].startswith("31x55 px, not 24x40: resized to the network's 12x12")
    probs = np.array([float(r["hotspot_probability"]) for r in rows])
    assert [r["predicted"] for r in rows] == ["Hotspot" if p > 0.6 else "No-Anomaly" for p in probs]
    assert f"{len(rows)} images scored" in stdout and f"{int((probs > 0.6).sum())} predicted Hotspot" in stdout
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".pred.csv")]


def test_cli_bad_image_leaves_no_csv(images, tmp_path, monkeypatch, capsys):
    folder, _, _ = images
    (folder / "zz_broken.png").write_bytes(b"garbage")
    tm = fake_trained(tmp_path)
    monkeypatch.setattr("hotspot_jax.train.restore.load_trained", lambda path: tm)
    out = tmp_path / "pred.csv"
    code, _, err = _run_main(["--checkpoint", tmp_path, folder, "--out", out, "--no-progress"], capsys)
    assert code == 2 and "zz_broken.png" in err and err.startswith("error: ") and "Traceback" not in err
    assert not out.exists() and not list(tmp_path.glob(".pred.csv*"))
    code, _, err = _run_main(["--checkpoint", tmp_path, folder, "--out", out, "--no-progress", "--skip-bad"],
                             capsys)
    assert code == 0 and "skipped: " in err and "zz_broken.png" in err
    assert "zz_broken" not in out.read_text()


@pytest.mark.parametrize("argv, msg", [
    (["--checkpoint", "{tmp}/nowhere", "{img}"], "--checkpoint {tmp}/nowhere does not exist"),
    (["--checkpoint", "{tmp}", "{tmp}/nothing.png"], "nothing.png does not exist"),
    (["--checkpoint", "{tmp}", "{empty}"], "no images found in"),
    (["--checkpoint", "{tmp}", "{img}", "--threshold", "1.5"], "--threshold must be in [0, 1]"),
    (["--checkpoint", "{tmp}", "{img}", "--batch-size", "0"], "--batch-size must be at least 1"),
    (["--checkpoint", "{tmp}", "{img}", "--out", "{tmp}/no/such/dir/p.csv"], "does not exist"),
    (["--checkpoint", "{tmp}", "{img}", "--out", "{tmp}"], "is a directory"),
    (["--checkpoint", "{img}", "{img}"], "is neither a training work directory"),
])
def test_cli_bad_input(tmp_path, capsys, argv, msg):
    img = tmp_path / "one.png"
    img.write_bytes(_png(np.zeros((40, 24), np.uint8)))
    (tmp_path / "empty").mkdir()
    fill = {"tmp": tmp_path, "img": img, "empty": tmp_path / "empty"}
    code, out, err = _run_main([a.format(**fill) for a in argv], capsys)
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("error: ") and msg.format(**fill) in err


def test_script_help_and_error_line(tmp_path):
    script = str(ROOT / "scripts" / "predict.py")
    env = {**os.environ, "COLUMNS": "250"}  # no line wrapping inside "(default: ...)"
    help_text = subprocess.run([sys.executable, script, "--help"], capture_output=True, text=True, check=True,
                               env=env).stdout
    for option in ("--checkpoint", "--out", "--batch-size", "--threshold", "--skip-bad", "--no-progress"):
        assert option in help_text
    assert "(default: 256)" in help_text and "(default: predictions.csv)" in help_text
    assert "(default: the operating point stored with the checkpoint" in help_text and "0.5 if it has none" in help_text
    run = subprocess.run([sys.executable, script, "--checkpoint", str(tmp_path / "missing"), str(tmp_path)],
                         capture_output=True, text=True)
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert run.stderr.strip().splitlines() == [f"error: --checkpoint {tmp_path / 'missing'} does not exist"]


def test_inputs_unlike_the_training_crops_are_named_with_their_conversion(tmp_path, monkeypatch, capsys):
    """An RGB 100x100 PNG and a 16-bit PNG: scored, and said so in the CSV's input_note and on stderr."""
    folder = tmp_path / "odd"
    folder.mkdir()
    Image.fromarray(np.full((100, 100, 3), 90, np.uint8)).save(folder / "rgb.png")
    Image.fromarray(np.full((40, 24), 40000, np.uint16)).save(folder / "deep.png")
    Image.fromarray(np.full((40, 24), 120, np.uint8)).save(folder / "plain.png")
    tm = fake_trained(tmp_path, image_size=12)
    monkeypatch.setattr("hotspot_jax.train.restore.load_trained", lambda path: tm)
    out = tmp_path / "pred.csv"
    code, _, err = _run_main(["--checkpoint", tmp_path, folder, "--out", out, "--no-progress"], capsys)
    assert code == 0, err
    with open(out, newline="") as handle:
        notes = {Path(r["image"]).name: r["input_note"] for r in csv.DictReader(handle)}
    assert notes["plain.png"] == ""
    assert notes["deep.png"] == "16-bit values scaled to 8-bit (divided by 257)"
    assert notes["rgb.png"] == ("RGB colour converted to grayscale (luma); 100x100 px, not 24x40: resized to the "
                                "network's 12x12 like the training crops, but its detail differs")
    assert "note: 2 of 3 images are not like the training crops (24x40 8-bit grayscale)" in err
    assert f"{folder / 'rgb.png'}: RGB colour" in err and f"{folder / 'deep.png'}: 16-bit" in err
    assert "plain.png" not in err
