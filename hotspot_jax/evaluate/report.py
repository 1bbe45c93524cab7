"""Evaluation outputs: metrics JSON, per-image predictions CSV, confusion and ROC PNGs, a text table."""

from __future__ import annotations

import csv
import json
import os
import re
from pathlib import Path
from typing import Any, Mapping, Sequence

from hotspot_jax.evaluate.atomic import atomic_open, ensure_dir
from hotspot_jax.evaluate.figures import confusion_figure, roc_figure, save_figure
from hotspot_jax.evaluate.metrics import (
    CLASS_NAMES,
    METRIC_KEYS,
    as_label_score_arrays,
    binary_metrics,
    format_value,
    predict_labels,
    roc_points,
)

PREDICTION_COLUMNS = ("id", "label", "hotspot_probability", "predicted")
"""Columns of ``<name>_predictions.csv``; label and predicted are class names (No-Anomaly/Hotspot)."""

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def output_paths(outdir: str | os.PathLike, name: str) -> dict[str, Path]:
    """The four files :func:`write_evaluation` writes for ``name``."""
    outdir = Path(outdir)
    return {
        "metrics": outdir / f"{name}_metrics.json",
        "predictions": outdir / f"{name}_predictions.csv",
        "confusion": outdir / f"{name}_confusion.png",
        "roc": outdir / f"{name}_roc.png",
    }


def write_json(path: str | os.PathLike, data: Any) -> None:
    """Write ``data`` as indented JSON, atomically (NaN is refused: undefined values are null)."""
    with atomic_open(path, "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=2, allow_nan=False)
        handle.write("\n")


def write_predictions_csv(
    path: str | os.PathLike, ids: Sequence[Any], y_true: Sequence[int], y_score: Sequence[float],
    threshold: float = 0.5, class_names: Sequence[str] = CLASS_NAMES,
) -> None:
    """Write one row per sample: id, true class name, the positive class's probability (6 decimals; the
    column is ``hotspot_probability`` for the study's classes, else ``<positive class>_probability``),
    predicted class."""
    labels, scores = as_label_score_arrays(y_true, y_score)
    if len(ids) != labels.size:
        raise ValueError(f"{len(ids)} ids for {labels.size} samples")
    pred = predict_labels(scores, threshold)
    with atomic_open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        columns = list(PREDICTION_COLUMNS)
        if tuple(class_names) != CLASS_NAMES:
            columns[2] = f"{class_names[1].lower()}_probability"
        writer.writerow(columns)
        for sample_id, label, score, guess in zip(ids, labels, scores, pred):
            writer.writerow([sample_id, class_names[label], f"{score:.6f}", class_names[guess]])


def write_evaluation(
    outdir: str | os.PathLike,
    name: str,
    y_true: Sequence[int],
    y_score: Sequence[float],
    ids: Sequence[Any],
    *,
    title: str | None = None,
    threshold: float = 0.5,
    class_names: Sequence[str] = CLASS_NAMES,
) -> dict[str, Any]:
    """Compute :func:`binary_metrics` and write ``<name>_metrics.json``, ``_predictions.csv``,
    ``_confusion.png`` and ``_roc.png`` into ``outdir`` (created if needed); return the metrics.

    Every file is written to a temporary name and renamed, so none is ever half-written.
    """
    if not _NAME_RE.match(name):
        raise ValueError(f"evaluation name {name!r} must be a plain file-name stem")
    metrics = binary_metrics(y_true, y_score, threshold)
    metrics["confusion_labels"] = list(class_names)  # label 0, label 1 (the positive class)
    labels, scores = as_label_score_arrays(y_true, y_score)
    paths = output_paths(ensure_dir(outdir), name)

    write_predictions_csv(paths["predictions"], ids, labels, scores, metrics["threshold"], class_names)
    shown = title or name
    fig = confusion_figure(metrics, title=f"{shown}\n(n = {metrics['n']:,}, threshold {metrics['threshold']:g})")
    save_figure(fig, paths["confusion"])
    roc = roc_points(labels, scores)
    fpr, tpr = (None, None) if roc is None else roc[:2]
    save_figure(roc_figure(fpr, tpr, metrics, title=shown, label=name), paths["roc"])
    write_json(paths["metrics"], {"name": name, "title": shown, **metrics})
    return metrics


_ROW_NAMES = {
    "accuracy": "Accuracy",
    "precision": "Precision",
    "sensitivity": "Sensitivity (recall)",
    "specificity": "Specificity",
    "f1": "F1 score",
    "roc_auc": "ROC AUC",
    "false_alarms_per_1000": "False alarms / 1000 healthy",
}


def format_metrics_table(results: Mapping[str, Mapping[str, Any]], digits: int = 4) -> str:
    """A fixed-width text table, one column per evaluated set (e.g. balanced / realistic test)."""
    columns = list(results)
    rows: list[tuple[str, list[str]]] = []
    for key in METRIC_KEYS:
        rows.append((_ROW_NAMES[key], [format_value(results[c].get(key), 2 if key.startswith("false") else digits)
                                       for c in columns]))
    rows.append(("Samples (hotspot / healthy)", [f"{results[c]['n']} ({results[c]['n_pos']} / {results[c]['n_neg']})"
                                                 for c in columns]))
    for key, text in (("tp", "TP"), ("fn", "FN"), ("fp", "FP"), ("tn", "TN")):
        rows.append((text, [str(results[c][key]) for c in columns]))
    thresholds = {results[c]["threshold"] for c in columns}
    head_w = max(len(r[0]) for r in rows)
    widths = [max(len(c), *(len(r[1][i]) for r in rows)) for i, c in enumerate(columns)]
    lines = ["  ".join([" " * head_w, *(c.rjust(w) for c, w in zip(columns, widths))])]
    lines.append("  ".join(["-" * head_w, *("-" * w for w in widths)]))
    for label, cells in rows:
        lines.append("  ".join([label.ljust(head_w), *(v.rjust(w) for v, w in zip(cells, widths))]))
    lines.append(f"Hotspot = positive class; predicted Hotspot when probability > "
                 f"{', '.join(f'{t:g}' for t in sorted(thresholds))}.")
    return "\n".join(lines)


def read_metrics(path: str | os.PathLike) -> dict[str, Any]:
    """Load a ``*_metrics.json`` written by :func:`write_evaluation`."""
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)

