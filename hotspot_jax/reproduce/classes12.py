"""The report of a ``classes12`` recipe (issue 24): per architecture over seeds, test accuracy and macro-F1
(mean ± sd [95% t-interval], pooled accuracy with a Wilson interval) beside the published 12-class numbers,
per-class recall, the hotspot-vs-rest view of the same predictions, paired comparisons, timing, and two
figures (confusion matrices summed over seeds; accuracy and macro-F1 bars with the published numbers).

Everything is computed from the committed run summaries alone (``results/<recipe>/<arch>-s<seed>.json``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from matplotlib.figure import Figure

from hotspot_jax.errors import DataError
from hotspot_jax.evaluate import save_figure
from hotspot_jax.reproduce import tables
from hotspot_jax.reproduce.aggregate import metric_bounds, paired_comparisons, summarize
from hotspot_jax.reproduce.stats import t_interval, wilson_interval
from hotspot_jax.reproduce.study import LITERATURE_CLASSES12, display_name

HOTSPOT_VS_REST = ("sensitivity", "specificity", "precision", "roc_auc")

METHOD = (
    "Intervals: *mean ± sd [95% interval]* over seeds, where each seed draws a new split (70/15/15 within each "
    "class) and a new initialisation; Student's t on the seed values (sd with ddof=1), clipped to 0-1. The pooled "
    "accuracy adds the test counts of all seeds with a Wilson score interval (binomial noise of the finite test "
    "sets only; seeds' test sets share images, so it is narrower than the seed interval). Macro-F1 is the mean "
    "F1 over the 12 classes, each class weighing alike. Hotspot vs rest scores each test image by "
    "P(Hot-Spot) + P(Hot-Spot-Multi) at 0.5, against all 11 other classes. Paired comparisons use the same seeds "
    "(same split and test images) for both networks: a paired t interval on the accuracy differences and an "
    "exact McNemar test on the pooled per-image disagreements (right class or not)."
)
LITERATURE_NOTE = (
    "The published rows are single numbers as quoted in issue 24 (the papers are not on this project's "
    "machines): their split, input size, initialisation (ImageNet weights or not) and training may differ from ours, so they "
    "place our numbers, they are not a paired comparison."
)


def check_runs(runs: Sequence[dict[str, Any]]) -> list[str]:
    """The class names shared by every run; DataError naming a run of other classes (a folder mixing tasks)."""
    names = runs[0]["test"].get("class_names")
    for r in runs:
        if r["test"].get("class_names") != names or "per_class" not in r["test"]:
            raise DataError(f"{r.get('_path', r['arch'])}: not a classes12 run summary with the classes of the others")
    return list(names)


def summarize_classes12(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One architecture over its seeds: accuracy (seed interval and pooled Wilson view), macro-F1, per-class
    recall/precision/F1 over seeds, test images per class and seed, the confusion matrix summed over seeds,
    and the hotspot-vs-rest metrics (:func:`hotspot_jax.reproduce.aggregate.summarize`)."""
    names = check_runs(runs)
    correct = sum(int(np.trace(np.asarray(r["test"]["confusion_matrix"]))) for r in runs)
    total = sum(int(r["test"]["n"]) for r in runs)
    ci = wilson_interval(correct, total)
    out: dict[str, Any] = {"n_runs": len(runs), "seeds": [r["seed"] for r in runs], "class_names": names,
                           "n_per_run": [r["test"]["n"] for r in runs], "metrics": {}}
    for m in ("accuracy", "macro_f1"):
        values = [r["test"].get(m) for r in runs]
        out["metrics"][m] = {"values": values, "seeds": t_interval(values, bounds=metric_bounds(m)).to_dict()}
    out["metrics"]["accuracy"]["pooled"] = None if ci is None else {"k": correct, "n": total, "value": correct / total,
                                                                    "ci95": list(ci)}
    out["per_class"] = {
        c: {"support": [r["test"]["per_class"][c]["support"] for r in runs],
            **{m: t_interval([r["test"]["per_class"][c][m] for r in runs], bounds=(0.0, 1.0)).to_dict()
               for m in ("recall", "precision", "f1")}}
        for c in names
    }
    cm = np.zeros((len(names), len(names)), np.int64)
    for r in runs:
        cm += np.asarray(r["test"]["confusion_matrix"], np.int64)
    out["confusion_matrix"] = cm.tolist()
    if all(r.get("hotspot_vs_rest") for r in runs):
        out["hotspot_vs_rest"] = summarize(runs, "hotspot_vs_rest", HOTSPOT_VS_REST)
    return out


# ------------------------------------------------------------------------------------------------- tables
def accuracy_table(groups: dict[str, list[dict]], summaries: dict[str, dict]) -> str:
    """Accuracy and macro-F1 per architecture over seeds, pooled accuracy, then the published numbers."""
    header = ["Network", "Init", "Seeds", "Accuracy", "Macro-F1", "Pooled accuracy (k/n) [Wilson 95%]"]
    rows = []
    for arch, runs in groups.items():
        s = summaries[arch]["metrics"]
        p = s["accuracy"]["pooled"]
        pooled = "n/a" if p is None else f"{p['value']:.4f} ({p['k']:,}/{p['n']:,}) [{p['ci95'][0]:.4f}, {p['ci95'][1]:.4f}]"
        rows.append([display_name(arch), tables._init(runs), str(len(runs)), tables.cell(s["accuracy"]),
                     tables.cell(s["macro_f1"]), pooled])
    for name, accuracy in LITERATURE_CLASSES12:
        rows.append([f"↳ published: {name}", "n/a", "1", tables.fmt(accuracy), "n/a", "n/a"])
    return tables._table(header, rows)


def per_class_table(groups: dict[str, list[dict]], summaries: dict[str, dict], metric: str = "recall") -> str:
    """Rows the 12 classes (with their test images per seed), columns the architectures: ``metric`` mean ± sd
    over seeds."""
    first = next(iter(summaries.values()))
    header = ["Class", "Test images per seed"] + [display_name(a) for a in groups]
    rows = []
    for c in first["class_names"]:
        support = sorted(set(first["per_class"][c]["support"]))
        row = [c, " / ".join(str(n) for n in support)]
        for arch in groups:
            s = summaries[arch]["per_class"][c][metric]
            if s["mean"] is None:
                row.append("n/a")
            else:
                row.append(f"{s['mean']:.3f}" + ("" if s["sd"] is None else f" ± {s['sd']:.3f}"))
        rows.append(row)
    return tables._table(header, rows)


def hotspot_vs_rest_table(groups: dict[str, list[dict]], summaries: dict[str, dict]) -> str:
    """The binary view of the same predictions: hotspot (either hotspot class) against the 11 others."""
    header = ["Network", "Seeds"] + [tables.NAMES[m] for m in HOTSPOT_VS_REST] + ["Hotspots / others per seed"]
    rows = []
    for arch, runs in groups.items():
        s = summaries[arch].get("hotspot_vs_rest")
        if s is None:
            continue
        sizes = sorted({(r["hotspot_vs_rest"].get("n_pos"), r["hotspot_vs_rest"].get("n_neg")) for r in runs})
        rows.append([display_name(arch), str(len(runs))] + [tables.cell(s["metrics"][m]) for m in HOTSPOT_VS_REST]
                    + ["; ".join(f"{p} / {n:,}" for p, n in sizes)])
    return tables._table(header, rows)


# ------------------------------------------------------------------------------------------------ figures
def _plot_confusion(ax, cm: np.ndarray, names: Sequence[str], title: str) -> None:
    from hotspot_jax.evaluate.multiclass import draw_confusion

    draw_confusion(ax, cm, names, title, count_size=5.5, label_size=6.5, axis_size=8, title_size=9,
                   count_format="{:,}")


def confusion_grid(groups: dict[str, list[dict]], summaries: dict[str, dict], title: str) -> Figure:
    """One 12 x 12 confusion matrix per architecture: counts summed over seeds, cells shaded by row share
    (the recall of the true class on the diagonal)."""
    n = len(groups)
    cols = min(3, max(n, 1))
    rows = max(1, math.ceil(n / cols))
    fig = Figure(figsize=(6.2 * cols, 6.0 * rows + 0.4), dpi=100, layout="constrained")
    fig.suptitle(title)
    for k, (arch, runs) in enumerate(groups.items()):
        s = summaries[arch]
        acc = s["metrics"]["accuracy"]["seeds"]["mean"]
        _plot_confusion(fig.add_subplot(rows, cols, k + 1), np.asarray(s["confusion_matrix"]), s["class_names"],
                        f"{display_name(arch)}: {len(runs)} seed(s), {sum(s['n_per_run']):,} test images, "
                        f"mean accuracy {tables.fmt(acc)}")
    return fig


def metric_bars(groups: dict[str, list[dict]], summaries: dict[str, dict], title: str) -> Figure:
    """Accuracy and macro-F1 per architecture, mean over seeds with 95% t-interval error bars; the published
    accuracies as dashed lines."""
    fig = Figure(figsize=(10, 4.8), dpi=110, layout="constrained")
    ax = fig.add_subplot()
    archs = list(groups)
    x = np.arange(len(archs))
    lows = []
    for j, (m, label) in enumerate((("accuracy", "Accuracy"), ("macro_f1", "Macro-F1"))):
        means, errs = [], [[], []]
        for a in archs:
            s = summaries[a]["metrics"][m]["seeds"]
            mean = np.nan if s["mean"] is None else s["mean"]
            lo, hi = s["ci95"]
            means.append(mean)
            errs[0].append(0 if lo is None else max(0.0, mean - lo))
            errs[1].append(0 if hi is None else max(0.0, hi - mean))
            lows.append(mean if lo is None else lo)
        ax.bar(x - 0.2 + 0.4 * j, means, 0.4, yerr=errs, capsize=3, label=label)
    for (name, value), style in zip(LITERATURE_CLASSES12, ("--", ":")):
        ax.axhline(value, color="black", linestyle=style, linewidth=1.2, label=f"{name}: {value:.3f} (split may differ)")
        lows.append(value)
    finite = [v for v in lows if v is not None and np.isfinite(v)]
    ax.set_ylim(max(0.0, min(finite, default=0.0) - 0.05), 1.005)
    ax.set_xticks(x, [display_name(a) for a in archs])
    ax.set_ylabel("12-class test set")
    ax.grid(True, axis="y", color="0.9")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.08), ncols=2, fontsize=8)
    ax.set_title(title)
    return fig


def write_figures(outdir: Path, groups: dict[str, list[dict]], summaries: dict[str, dict], recipe: str) -> dict[str, Path]:
    """Write classes12_confusion.png and classes12_metrics.png into ``outdir``; return their paths."""
    outdir.mkdir(parents=True, exist_ok=True)
    paths = {"confusion": outdir / "classes12_confusion.png", "metrics": outdir / "classes12_metrics.png"}
    save_figure(confusion_grid(groups, summaries, f"{recipe}: 12-class test sets, confusion summed over seeds"),
                paths["confusion"])
    save_figure(metric_bars(groups, summaries, f"{recipe}: 12-class test accuracy and macro-F1, mean over seeds, "
                            "95% t-interval"), paths["metrics"])
    return paths


# ------------------------------------------------------------------------------------------------- report
def report_body(recipe: str, desc: str, runs: list[dict], groups: dict[str, list[dict]], outdir: Path,
                rel: str) -> tuple[str, dict[str, Any]]:
    """The markdown body (shared by report.md and the docs block) and the aggregate of a classes12 recipe."""
    summaries = {a: summarize_classes12(rs) for a, rs in groups.items()}
    pairs = paired_comparisons(groups)
    figs = write_figures(outdir, groups, summaries, recipe)
    sizes = sorted({r["test"]["n"] for r in runs})
    aggregate = {"recipe": recipe, "task": "classes12", "runs": [Path(r["_path"]).name for r in runs],
                 "method": METHOD, "summaries": summaries, "pairs": pairs,
                 "literature": [{"name": n, "accuracy": v} for n, v in LITERATURE_CLASSES12]}
    body = "\n\n".join([
        f"**Recipe `{recipe}`**: {desc}. Runs: {len(runs)} ({', '.join(f'{a} x{len(r)}' for a, r in groups.items())}).",
        METHOD,
        (f"12-class test set ({' / '.join(f'{n:,}' for n in sizes)} images per seed, 15% of each class), beside the "
         "published 12-class accuracies:"),
        accuracy_table(groups, summaries),
        LITERATURE_NOTE,
        "Recall per class (mean ± sd over seeds):",
        per_class_table(groups, summaries, "recall"),
        "Precision per class (mean ± sd over seeds):",
        per_class_table(groups, summaries, "precision"),
        "Hotspot vs rest, the same predictions (hotspot = Hot-Spot or Hot-Spot-Multi, at 0.5):",
        hotspot_vs_rest_table(groups, summaries),
        "Paired comparisons of test accuracy:",
        tables.comparisons_table(pairs) if pairs else "(fewer than two architectures)",
        "Wall time, throughput and machine of every run:",
        tables.timing_table(runs),
        (f"![12-class accuracy and macro-F1]({rel}/{figs['metrics'].name})\n\n"
         f"![12-class confusion matrices]({rel}/{figs['confusion'].name})"),
    ])
    return body, aggregate
