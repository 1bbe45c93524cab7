"""write_evaluation's files (JSON, CSV, PNG), the plotting helpers and the text table."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from matplotlib.figure import Figure
from PIL import Image

from hotspot_jax.errors import HotspotError
from hotspot_jax.evaluate import (
    binary_metrics,
    format_metrics_table,
    output_paths,
    plot_confusion,
    plot_roc,
    read_metrics,
    roc_points,
    write_evaluation,
)
from hotspot_jax.evaluate.figures import save_figure


def _scores(n_pos=40, n_neg=60, seed=0):
    rng = np.random.default_rng(seed)
    y = np.r_[np.ones(n_pos, int), np.zeros(n_neg, int)]
    s = np.clip(rng.normal(0.3 + 0.4 * y, 0.2), 0, 1)
    return y, s


def test_write_evaluation_files(tmp_path):
    y, s = _scores()
    ids = [f"img{i:05d}" for i in range(y.size)]
    out = tmp_path / "new" / "eval"
    m = write_evaluation(out, "balanced_test", y, s, ids, title="tiny - balanced", threshold=0.45)
    paths = output_paths(out, "balanced_test")
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in paths.values())  # no temp files

    saved = read_metrics(paths["metrics"])
    assert saved["name"] == "balanced_test" and saved["title"] == "tiny - balanced"
    assert {k: saved[k] for k in m} == m
    assert m == binary_metrics(y, s, 0.45)

    with open(paths["predictions"], newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["id", "label", "hotspot_probability", "predicted"]
    assert [r["id"] for r in rows] == ids
    assert [r["label"] for r in rows] == ["Hotspot" if v else "No-Anomaly" for v in y]
    probs = np.array([float(r["hotspot_probability"]) for r in rows])
    np.testing.assert_allclose(probs, s, atol=5e-7)
    assert [r["predicted"] for r in rows] == ["Hotspot" if v > 0.45 else "No-Anomaly" for v in s]

    for key in ("confusion", "roc"):
        with Image.open(paths[key]) as img:
            img.verify()
        with Image.open(paths[key]) as img:
            assert img.format == "PNG"
            assert img.width >= 500 and img.height >= 500
            # not blank: a real figure has many colours
            assert len(img.convert("RGB").getcolors(maxcolors=1 << 20)) > 50


def test_write_evaluation_single_class_writes_null_auc(tmp_path):
    m = write_evaluation(tmp_path, "healthy_only", [0, 0, 0], [0.2, 0.6, 0.1], ["a", "b", "c"])
    text = (tmp_path / "healthy_only_metrics.json").read_text()
    assert m["roc_auc"] is None and '"roc_auc": null' in text and "NaN" not in text
    with Image.open(tmp_path / "healthy_only_roc.png") as img:
        assert img.format == "PNG"


def test_write_evaluation_rejects_bad_input(tmp_path):
    y, s = _scores()
    with pytest.raises(ValueError, match="ids"):
        write_evaluation(tmp_path, "x", y, s, ["only-one"])
    with pytest.raises(ValueError, match="file-name stem"):
        write_evaluation(tmp_path, "../escape", y, s, list(range(y.size)))
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(HotspotError, match="not a directory"):
        write_evaluation(blocker, "x", y, s, list(range(y.size)))
    assert not list(tmp_path.glob("x_*"))


def test_failed_write_leaves_previous_file(tmp_path):
    y, s = _scores()
    write_evaluation(tmp_path, "run", y, s, list(range(y.size)))
    before = (tmp_path / "run_predictions.csv").read_bytes()

    class Boom:  # an id whose str() fails half-way through the CSV
        def __str__(self):
            raise RuntimeError("boom")

    ids = list(range(y.size - 1)) + [Boom()]
    with pytest.raises(RuntimeError, match="boom"):
        write_evaluation(tmp_path, "run", y, s, ids)
    assert (tmp_path / "run_predictions.csv").read_bytes() == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_plot_helpers_compose_a_grid(tmp_path):
    fig = Figure(figsize=(12, 8))
    axes = fig.subplots(2, 3).ravel()
    roc_ax = Figure().add_subplot()
    for i, ax in enumerate(axes):
        y, s = _scores(seed=i)
        m = binary_metrics(y, s)
        plot_confusion(ax, m["confusion_matrix"], title=f"model {i}")
        fpr, tpr, _ = roc_points(y, s)
        plot_roc(roc_ax, fpr, tpr, m["roc_auc"], f"model {i}")
    # each confusion panel shows the four counts and the accuracy
    texts = [t.get_text() for t in axes[0].texts]
    m0 = binary_metrics(*_scores(seed=0))
    for count in np.ravel(m0["confusion_matrix"]):
        assert f"{count:,}" in texts
    assert f"{100 * m0['accuracy']:.1f}%" in texts
    # one chance line for six curves, six legend entries with the AUC
    assert sum(line.get_gid() == "chance" for line in roc_ax.get_lines()) == 1
    legend = [t.get_text() for t in roc_ax.get_legend().get_texts()]
    assert len(legend) == 6 and all("AUC = 0." in t for t in legend)
    save_figure(fig, tmp_path / "grid.png")
    with Image.open(tmp_path / "grid.png") as img:
        assert img.size == (1200, 800)


def test_format_metrics_table():
    m1 = binary_metrics([1, 1, 1, 1, 0, 0, 0, 0, 0, 0], [0.9, 0.8, 0.7, 0.4, 0.6, 0.3, 0.2, 0.1, 0.5, 0.05])
    m2 = binary_metrics([0, 0], [0.1, 0.2])
    table = format_metrics_table({"balanced test": m1, "healthy": m2})
    lines = table.splitlines()
    assert "balanced test" in lines[0] and "healthy" in lines[0]
    row = {line[:28].strip(): line[28:].split() for line in lines[2:-1]}
    assert row["Accuracy"] == ["0.8000", "1.0000"]
    assert row["Precision"] == ["0.7500", "0.0000"]
    assert row["Sensitivity (recall)"] == ["0.7500", "n/a"]
    assert row["ROC AUC"] == ["0.9167", "n/a"]
    assert row["False alarms / 1000 healthy"] == ["166.67", "0.00"]
    assert row["TP"] == ["3", "0"] and row["FP"] == ["1", "0"]
    json.dumps(table)
