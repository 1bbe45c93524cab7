"""Matplotlib figures in the style of the study's Figures 10 and 12: confusion matrix and ROC curve.

``plot_confusion`` and ``plot_roc`` draw on a given Axes so a reproduction script can compose a grid
of six models; ``confusion_figure``/``roc_figure`` make a single-panel figure and ``save_figure``
writes it atomically. Figures are built with :class:`matplotlib.figure.Figure` (Agg), never pyplot,
so no global backend or GUI is involved.
"""

from __future__ import annotations

import os
from typing import Any, Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from hotspot_jax.evaluate.atomic import atomic_path
from hotspot_jax.evaluate.metrics import CLASS_NAMES, operating_point

# MATLAB plotconfusion's palette: correct cells green, wrong red, per-class summaries grey, total blue.
_GREEN, _RED, _GREY, _BLUE = "#bfe3c4", "#f2b8b5", "#e6e6e6", "#c6dbef"
_GOOD_TEXT, _BAD_TEXT = "#1a7a2e", "#b3261e"


def _pct(num: float, den: float) -> str:
    return "n/a" if den == 0 else f"{100.0 * num / den:.1f}%"


def plot_confusion(
    ax: Axes,
    cm: Sequence[Sequence[int]] | np.ndarray,
    class_names: Sequence[str] = CLASS_NAMES,
    *,
    title: str | None = None,
    summary: bool = True,
    fontsize: float = 10.0,
) -> Axes:
    """Draw confusion matrix ``cm`` (rows true class, columns predicted) with counts and % of total.

    With ``summary`` a MATLAB-style extra column gives each true class's recall (specificity,
    sensitivity), an extra row each predicted class's precision (NPV, precision), and the corner
    the overall accuracy: correct share in green, wrong share in red.
    """
    cm = np.asarray(cm, dtype=np.int64)
    k = cm.shape[0]
    if cm.shape != (k, k) or len(class_names) != k:
        raise ValueError(f"confusion matrix shape {cm.shape} does not match {len(class_names)} class names")
    total = int(cm.sum())
    size = k + 1 if summary else k

    for i in range(k):  # true class -> row (top to bottom)
        for j in range(k):  # predicted class -> column
            count = int(cm[i, j])
            ax.add_patch(Rectangle((j, i), 1, 1, facecolor=_GREEN if i == j else _RED, edgecolor="white", lw=2))
            ax.text(j + 0.5, i + 0.42, f"{count:,}", ha="center", va="center", fontsize=fontsize * 1.3,
                    fontweight="bold")
            ax.text(j + 0.5, i + 0.68, _pct(count, total), ha="center", va="center", fontsize=fontsize)

    if summary:
        cells = []
        for i in range(k):  # per true class: recall
            cells.append(((k, i), int(cm[i, i]), int(cm[i].sum()), _GREY))
        for j in range(k):  # per predicted class: precision
            cells.append(((j, k), int(cm[j, j]), int(cm[:, j].sum()), _GREY))
        cells.append(((k, k), int(np.trace(cm)), total, _BLUE))
        for (x, y), good, den, colour in cells:
            ax.add_patch(Rectangle((x, y), 1, 1, facecolor=colour, edgecolor="white", lw=2))
            ax.text(x + 0.5, y + 0.4, _pct(good, den), ha="center", va="center", fontsize=fontsize,
                    color=_GOOD_TEXT, fontweight="bold")
            ax.text(x + 0.5, y + 0.66, _pct(den - good, den), ha="center", va="center", fontsize=fontsize,
                    color=_BAD_TEXT)
        ax.text(k + 0.5, k + 0.14, "accuracy", ha="center", va="center", fontsize=fontsize * 0.8, color="0.35")

    ax.set_xlim(0, size)
    ax.set_ylim(size, 0)
    ax.set_aspect("equal")
    ticks = np.arange(size) + 0.5
    xlabels, ylabels = list(class_names), list(class_names)
    if summary:
        xlabels.append("Recall")
        ylabels.append("Precision")
    ax.set_xticks(ticks, labels=xlabels, fontsize=fontsize)
    ax.set_yticks(ticks, labels=ylabels, fontsize=fontsize, rotation=90, va="center")
    ax.set_xlabel("Predicted class", fontsize=fontsize)
    ax.set_ylabel("True class", fontsize=fontsize)
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    if title:
        ax.set_title(title, fontsize=fontsize * 1.1)
    return ax


def _ensure_roc_frame(ax: Axes, fontsize: float) -> None:
    """Axis labels, limits, grid and the chance diagonal, drawn once per Axes."""
    if any(line.get_gid() == "chance" for line in ax.get_lines()):
        return
    ax.plot([0, 1], [0, 1], linestyle="--", color="0.6", lw=1, gid="chance", label="_chance")
    ax.set_xlim(-0.01, 1.01)
    ax.set_ylim(-0.01, 1.01)
    ax.set_aspect("equal")
    ax.grid(True, color="0.9")
    ax.set_xlabel("False positive rate (1 - specificity)", fontsize=fontsize)
    ax.set_ylabel("True positive rate (sensitivity)", fontsize=fontsize)


def plot_roc(
    ax: Axes,
    fpr: Sequence[float] | np.ndarray,
    tpr: Sequence[float] | np.ndarray,
    auc: float | None,
    label: str,
    *,
    point: tuple[float, float] | None = None,
    threshold: float | None = None,
    color: Any = None,
    fontsize: float = 10.0,
) -> Axes:
    """Draw one ROC curve labelled ``label (AUC = ...)``, optionally with its operating ``point``.

    Call repeatedly on the same Axes to compare models; the chance line is drawn only once.
    """
    _ensure_roc_frame(ax, fontsize)
    auc_text = "n/a" if auc is None or not np.isfinite(auc) else f"{auc:.4f}"
    (line,) = ax.plot(fpr, tpr, lw=2, color=color, label=f"{label} (AUC = {auc_text})")
    if point is not None:
        at = "" if threshold is None else f" at threshold {threshold:g}"
        ax.plot([point[0]], [point[1]], marker="o", markersize=8, color=line.get_color(),
                markeredgecolor="black", linestyle="none",
                label=f"operating point{at} (FPR {point[0]:.3f}, TPR {point[1]:.3f})")
    ax.legend(loc="lower right", fontsize=fontsize * 0.85)
    return ax


def confusion_figure(metrics: dict[str, Any], title: str | None = None) -> Figure:
    """A one-panel figure of ``metrics['confusion_matrix']`` (from :func:`binary_metrics`)."""
    fig = Figure(figsize=(5.6, 5.2), dpi=120, layout="constrained")
    ax = fig.add_subplot()
    plot_confusion(ax, metrics["confusion_matrix"], metrics.get("confusion_labels", CLASS_NAMES), title=title)
    return fig


def roc_figure(
    fpr: np.ndarray | None, tpr: np.ndarray | None, metrics: dict[str, Any], title: str | None = None,
    label: str = "model",
) -> Figure:
    """A one-panel ROC figure with the AUC in the legend and the operating point at the threshold.

    When the ROC is undefined (one class only) ``fpr``/``tpr`` are None and the panel says so.
    """
    fig = Figure(figsize=(5.6, 5.4), dpi=120, layout="constrained")
    ax = fig.add_subplot()
    if fpr is None or tpr is None:
        _ensure_roc_frame(ax, 10.0)
        ax.text(0.5, 0.5, "ROC undefined:\nthe set holds a single class", ha="center", va="center")
    else:
        plot_roc(ax, fpr, tpr, metrics.get("roc_auc"), label, point=operating_point(metrics),
                 threshold=metrics.get("threshold"))
    if title:
        ax.set_title(title)
    return fig


def save_figure(fig: Figure, path: str | os.PathLike) -> None:
    """Write ``fig`` as PNG to ``path`` atomically."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
