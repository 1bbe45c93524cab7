"""Metrics and files of a many-class evaluation (the classes12 task): accuracy, macro-F1, per-class
precision/recall/F1, the confusion matrix (JSON and a PNG with class names), per-image predictions,
and the hotspot-vs-rest view of the same predictions (P(Hot-Spot) + P(Hot-Spot-Multi) as the score).
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from matplotlib.figure import Figure

from hotspot_jax.evaluate.atomic import atomic_open, ensure_dir
from hotspot_jax.evaluate.figures import save_figure
from hotspot_jax.evaluate.metrics import binary_metrics


def _ratio(num: float, den: float) -> float | None:
    return None if den == 0 else float(num / den)


def multiclass_metrics(y_true: Sequence[int], probs: np.ndarray, class_names: Sequence[str]) -> dict[str, Any]:
    """Accuracy, macro-F1 (over classes present in ``y_true``), per-class metrics and the confusion matrix
    (rows true class, columns predicted) of the argmax of ``probs`` (N, K)."""
    y = np.asarray(y_true, dtype=np.int64)
    probs = np.asarray(probs, dtype=np.float64)
    k = len(class_names)
    if probs.ndim != 2 or probs.shape != (y.size, k):
        raise ValueError(f"probabilities of shape {probs.shape} for {y.size} labels and {k} classes")
    pred = probs.argmax(-1)
    cm = np.zeros((k, k), np.int64)
    np.add.at(cm, (y, pred), 1)
    per_class, f1s = {}, []
    for i, name in enumerate(class_names):
        tp, support, predicted = int(cm[i, i]), int(cm[i].sum()), int(cm[:, i].sum())
        precision, recall = _ratio(tp, predicted), _ratio(tp, support)
        f1 = None if precision is None or recall is None or precision + recall == 0 else 2 * precision * recall / (precision + recall)
        if support and f1 is None:
            f1 = 0.0
        per_class[name] = {"precision": precision, "recall": recall, "f1": f1, "support": support}
        if support:
            f1s.append(f1)
    return {
        "n": int(y.size),
        "accuracy": _ratio(int(np.trace(cm)), int(y.size)),
        "macro_f1": float(np.mean(f1s)) if f1s else None,
        "per_class": per_class,
        "class_names": list(class_names),
        "confusion_matrix": cm.tolist(),
    }


def hotspot_vs_rest(y_true: Sequence[int], probs: np.ndarray, class_names: Sequence[str],
                    positive: Sequence[str] = ("Hot-Spot", "Hot-Spot-Multi")) -> dict[str, Any]:
    """Binary metrics at 0.5 of hotspot (any class of ``positive``) against every other class."""
    cols = [list(class_names).index(c) for c in positive]
    y = np.isin(np.asarray(y_true), cols).astype(np.int32)
    return binary_metrics(y, np.asarray(probs)[:, cols].sum(-1), 0.5)


def draw_confusion(ax, cm: Sequence[Sequence[int]], class_names: Sequence[str], title: str, *,
                   count_size: float = 8, label_size: float = 8, axis_size: float | None = None,
                   title_size: float = 10, count_format: str = "{}") -> None:
    """Draw a K x K confusion matrix (rows true class) on ``ax``: rows shaded by their share (recall on the
    diagonal), counts in the cells, class names on both axes."""
    cm = np.asarray(cm)
    k = len(class_names)
    share = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for i in range(k):
        for j in range(k):
            if cm[i, j]:
                ax.text(j, i, count_format.format(cm[i, j]), ha="center", va="center", fontsize=count_size,
                        color="white" if share[i, j] > 0.6 else "black")
    ax.set_xticks(range(k), class_names, rotation=60, ha="right", fontsize=label_size)
    ax.set_yticks(range(k), class_names, fontsize=label_size)
    ax.set_xlabel("predicted class", fontsize=axis_size)
    ax.set_ylabel("true class", fontsize=axis_size)
    ax.set_title(title, fontsize=title_size)


MAX_NAMED_CLASSES = 40  # above this a confusion matrix is drawn as shading alone, at a fixed size


def confusion_matrix_figure(cm: Sequence[Sequence[int]], class_names: Sequence[str], title: str) -> Figure:
    """A K x K confusion matrix with class names, counts, and rows shaded by recall; with more than
    :data:`MAX_NAMED_CLASSES` classes (e.g. a formula-driven run's 1,000) the shading alone on a fixed 8 x 8 inch
    figure, as names and counts would not fit (and the figure would not fit in memory; the counts are in the CSV)."""
    k = len(class_names)
    if k > MAX_NAMED_CLASSES:
        fig = Figure(figsize=(8, 8), dpi=110, layout="constrained")
        ax = fig.add_subplot()
        cm = np.asarray(cm)
        ax.imshow(cm / np.maximum(cm.sum(1, keepdims=True), 1), cmap="Blues", vmin=0, vmax=1, interpolation="nearest")
        ax.set_xlabel("predicted class (index)")
        ax.set_ylabel("true class (index)")
        ax.set_title(f"{title}\n{k} classes: rows shaded by their share; counts in the predictions CSV", fontsize=10)
        return fig
    fig = Figure(figsize=(1.0 + 0.62 * k, 0.8 + 0.55 * k), dpi=110, layout="constrained")
    draw_confusion(fig.add_subplot(), cm, class_names, title)
    return fig


def write_multiclass_evaluation(outdir: str | os.PathLike, name: str, y_true: Sequence[int], probs: np.ndarray,
                                ids: Sequence[Any], class_names: Sequence[str]) -> dict[str, Any]:
    """Write ``<name>_predictions.csv`` (id, label, predicted, one probability column per class) and
    ``<name>_confusion.png`` into ``outdir``; return the metrics with the hotspot-vs-rest view."""
    outdir = ensure_dir(outdir)
    metrics = multiclass_metrics(y_true, probs, class_names)
    if all(c in class_names for c in ("Hot-Spot", "Hot-Spot-Multi")):
        metrics["hotspot_vs_rest"] = hotspot_vs_rest(y_true, probs, class_names)
    pred = np.asarray(probs).argmax(-1)
    with atomic_open(Path(outdir) / f"{name}_predictions.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["id", "label", "predicted", *(f"p_{c}" for c in class_names)])
        for i, label, guess, row in zip(ids, y_true, pred, np.asarray(probs)):
            writer.writerow([i, class_names[int(label)], class_names[int(guess)], *(f"{p:.6f}" for p in row)])
    acc = metrics["accuracy"]
    title = f"{name}: accuracy {acc:.4f}, macro-F1 {metrics['macro_f1']:.4f} (n = {metrics['n']:,})" \
        if acc is not None and metrics["macro_f1"] is not None else name
    save_figure(confusion_matrix_figure(metrics["confusion_matrix"], class_names, title),
                Path(outdir) / f"{name}_confusion.png")
    return metrics
