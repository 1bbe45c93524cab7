"""The study's Figures 10-12 for a recipe, over all its seeds: confusion matrices of the six networks
(summed over seeds), bars of the five metrics with 95% t-interval error bars (the study's values as
markers), and ROC curves of the pooled balanced test predictions with the AUC in the legend."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from hotspot_jax.evaluate import plot_confusion, plot_roc, roc_points, save_figure
from hotspot_jax.evaluate.metrics import CLASS_NAMES as BINARY_NAMES
from hotspot_jax.reproduce.aggregate import pooled_scores
from hotspot_jax.reproduce.study import STUDY_METRICS, STUDY_TABLE3, display_name

_NAMES = {"accuracy": "Accuracy", "precision": "Precision", "sensitivity": "Sensitivity",
          "specificity": "Specificity", "f1": "F1"}


def confusion_grid(groups: dict[str, list[dict]], summaries: dict[str, dict], title: str,
                   class_names: tuple[str, str] | None = None) -> Figure:
    """Figure 10: one confusion matrix per architecture (counts summed over its seeds); ``class_names``
    replaces No-Anomaly / Hotspot (the anomaly task)."""
    n = len(groups)
    cols = min(3, max(n, 1))
    rows = max(1, math.ceil(n / cols))
    fig = Figure(figsize=(4.3 * cols, 4.3 * rows + 0.5), dpi=110, layout="constrained")
    fig.suptitle(title)
    for k, (arch, runs) in enumerate(groups.items()):
        ax = fig.add_subplot(rows, cols, k + 1)
        total = sum(summaries[arch]["n_per_run"])
        plot_confusion(ax, summaries[arch]["confusion_matrix"], class_names or BINARY_NAMES,
                       title=f"{display_name(arch)}\n{len(runs)} seed(s), {total} test images", fontsize=8)
    return fig


def metric_bars(groups: dict[str, list[dict]], summaries: dict[str, dict], title: str, study: bool = True,
                ylabel: str = "metric on the balanced test set") -> Figure:
    """Figure 11: the five metrics per architecture, mean over seeds with 95% t-interval error bars (and the
    study's values as markers with ``study``)."""
    fig = Figure(figsize=(11, 4.8), dpi=110, layout="constrained")
    ax = fig.add_subplot()
    archs = list(groups)
    width = 0.8 / len(STUDY_METRICS)
    x = np.arange(len(archs))
    lows = []
    for j, m in enumerate(STUDY_METRICS):
        means, errs = [], [[], []]
        for a in archs:
            s = summaries[a]["metrics"][m]["seeds"]
            mean = s["mean"] if s["mean"] is not None else np.nan
            lo, hi = s["ci95"]
            means.append(mean)
            errs[0].append(0 if lo is None else max(0.0, mean - lo))
            errs[1].append(0 if hi is None else max(0.0, hi - mean))
            lows.append(mean if lo is None else lo)
        pos = x - 0.4 + width * (j + 0.5)
        ax.bar(pos, means, width, yerr=errs, capsize=2, label=_NAMES[m])
        study_values = [STUDY_TABLE3.get(a, {}).get(m) if study else None for a in archs]
        sx = [p for p, v in zip(pos, study_values) if v is not None]
        sy = [v for v in study_values if v is not None]
        if sy:
            ax.plot(sx, sy, linestyle="none", marker="_", markersize=12, markeredgewidth=2.5, color="black",
                    label="study (1 run)" if j == 0 or not any(l.get_label() == "study (1 run)" for l in ax.lines) else None)
            lows.extend(sy)
    finite = [v for v in lows if v is not None and np.isfinite(v)]
    ax.set_ylim(max(0.0, min(finite, default=0.0) - 0.05), 1.005)
    ax.set_xticks(x, [display_name(a) for a in archs])
    ax.set_ylabel(ylabel)
    ax.grid(True, axis="y", color="0.9")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.08), ncols=6, fontsize=8)
    ax.set_title(title)
    return fig


def roc_curves(groups: dict[str, list[dict]], summaries: dict[str, dict], title: str) -> Figure:
    """Figure 12: ROC curve per architecture from the pooled balanced-test predictions of its seeds."""
    fig = Figure(figsize=(6.4, 6.2), dpi=110, layout="constrained")
    ax = fig.add_subplot()
    for arch, runs in groups.items():
        labels, probs = pooled_scores(runs)
        pts = roc_points(labels, probs)
        if pts is None:
            continue
        from sklearn.metrics import roc_auc_score

        auc = float(roc_auc_score(labels, probs))
        s = summaries[arch]["metrics"]["roc_auc"]["seeds"]
        per_seed = "" if s["sd"] is None else f", per seed {s['mean']:.4f} ± {s['sd']:.4f}"
        plot_roc(ax, pts[0], pts[1], auc, f"{display_name(arch)} ({len(runs)} seeds pooled{per_seed})", fontsize=8)
    ax.set_title(title)
    return fig


def write_figures(outdir: Path, groups: dict[str, list[dict]], summaries: dict[str, dict], recipe: str,
                  study: bool = True) -> dict[str, Path]:
    """Write fig10_confusion.png, fig11_metrics.png and fig12_roc.png into ``outdir``; return their paths.
    ``study`` False: an anomaly recipe (its one test set, anomaly = positive, no study markers)."""
    outdir.mkdir(parents=True, exist_ok=True)
    paths = {"fig10": outdir / "fig10_confusion.png", "fig11": outdir / "fig11_metrics.png",
             "fig12": outdir / "fig12_roc.png"}
    test = "balanced test set" if study else "anomaly vs No-Anomaly test set"
    save_figure(confusion_grid(groups, summaries, f"Figure 10 ({recipe}): {test}, summed over seeds",
                               None if study else ("No-Anomaly", "Anomaly")), paths["fig10"])
    save_figure(metric_bars(groups, summaries, f"Figure 11 ({recipe}): mean over seeds, 95% t-interval", study,
                            f"metric on the {test}"), paths["fig11"])
    save_figure(roc_curves(groups, summaries, f"Figure 12 ({recipe}): ROC, {test}"), paths["fig12"])
    return paths
