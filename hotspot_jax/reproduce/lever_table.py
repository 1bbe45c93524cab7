"""One table of single runs across recipe variants (the lever measurements), each compared with a
baseline run of the same architecture and seed (so the same 148 test images) by an exact McNemar test.

Rows come from the committed run summaries in ``results/<recipe variant>/``; nothing is retrained.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from hotspot_jax.errors import DataError
from hotspot_jax.reproduce.aggregate import _correct_by_id
from hotspot_jax.reproduce.runner import load_results, run_task
from hotspot_jax.reproduce.stats import mcnemar_exact
from hotspot_jax.reproduce.study import display_name
from hotspot_jax.reproduce.tables import _table, fmt

#: recipe settings shown in the table (those a lever changes)
SETTINGS = ("image_size", "epochs", "lr", "lr_schedule", "online_augment", "no_anomaly_ratio", "pretrain_epochs",
            "label_smoothing", "mixup_alpha", "ema_decay", "tta", "aspect")


def _settings(run: dict[str, Any]) -> str:
    rec = run.get("recipe", {})
    cfg = run.get("train_config", {})
    size = cfg.get("image_size") or rec.get("image_size")
    parts = [f"{size} px", f"{rec.get('epochs')} ep", f"lr {rec.get('lr'):g}"]
    if rec.get("lr_schedule", "constant") != "constant":
        parts.append(rec["lr_schedule"])
    if rec.get("online_augment", "none") != "none":
        parts.append(rec["online_augment"])
    if rec.get("no_anomaly_ratio", 1.0) != 1.0:
        parts.append(f"{rec['no_anomaly_ratio']:g}x No-Anomaly")
    if rec.get("pool_no_anomaly"):
        parts.append(f"+{rec['pool_no_anomaly']} pool No-Anomaly (resampled)")
    if rec.get("label_smoothing"):
        parts.append(f"label smoothing {rec['label_smoothing']:g}")
    if rec.get("mixup_alpha"):
        parts.append(f"mixup {rec['mixup_alpha']:g}")
    if rec.get("ema_decay"):
        parts.append(f"EMA {rec['ema_decay']:g}")
    if rec.get("distill_teachers"):
        parts.append(f"distilled from {rec['distill_teachers']} (A {rec.get('distill_weight', 0.5):g}, "
                     f"T {rec.get('distill_temperature', 2.0):g})")
    if rec.get("tta", "none") != "none":
        parts.append(f"TTA {rec['tta']}")
    if rec.get("aspect", "square") != "square":
        parts.append("5:3 input")
    if rec.get("formula_epochs"):  # formula-driven pretraining, before any in-domain one
        parts.append(f"fractals {rec.get('formula_classes', 100)} x {rec.get('formula_per_class', 100)} "
                     f"{rec['formula_epochs']} ep")
    if rec.get("ssl_epochs"):  # self-supervised pretraining, before any in-domain one
        mlp = f", MLP {rec['ssl_projection_hidden']}" if rec.get("ssl_projection_hidden") else ""
        parts.append(f"SimCLR {rec['ssl_epochs']} ep (lr {rec.get('ssl_lr', 0.1):g}, batch "
                     f"{rec.get('ssl_batch_size', 256)}{mlp})")
    if rec.get("pretrain_epochs"):
        pre = f"pretrain {rec['pretrain_epochs']} ep"
        if rec.get("pretrain_lr", 0.01) != 0.01:
            pre += f" lr {rec['pretrain_lr']:g}"
        if rec.get("pretrain_augment") is not None:
            pre += f" {rec['pretrain_augment']}"
        parts.append(pre)
    elif not (rec.get("formula_epochs") or rec.get("ssl_epochs")):
        parts.append("scratch")
    if rec.get("task", "hotspot") != "hotspot":
        parts.insert(0, f"task {rec['task']}")
    return ", ".join(parts)


def _one_kind(rows: Sequence[tuple[str, dict[str, Any]]]) -> bool:
    """True when the rows are classes12 runs, False when two-class ones; DataError when they mix (their
    metrics differ, and a McNemar test needs the same test images)."""
    kinds = {run_task(r) == "classes12" for _, r in rows}
    if len(kinds) > 1:
        raise DataError("the lever table mixes classes12 runs with two-class ones; give folders of one kind")
    return kinds == {True}


def lever_runs(results_dir: str | Path, folders: Sequence[str]) -> list[tuple[str, dict[str, Any]]]:
    """(folder, run summary) for every run in ``folders`` of ``results_dir``, in the given folder order."""
    out = []
    for folder in folders:
        runs = load_results(results_dir, folder)
        if not runs:
            raise DataError(f"no run summaries under {Path(results_dir) / folder}")
        out += [(folder, r) for r in runs]
    return out


def lever_table(results_dir: str | Path, folders: Sequence[str], baseline: str | None = None) -> str:
    """Markdown: one row per run, with test metrics, realistic false alarms, time, and McNemar against the
    baseline run of the same network and seed: the one in ``baseline`` if given, else the first row of that
    network and seed in ``folders`` order."""
    rows_in = lever_runs(results_dir, folders)
    base: dict[tuple[str, int], dict[str, Any]] = {}
    if baseline:  # its runs of the networks and seeds the levers have come first, as reference rows
        keys = {(r["arch"], r["seed"]) for _, r in rows_in}
        base = {(r["arch"], r["seed"]): r for r in load_results(results_dir, baseline) if (r["arch"], r["seed"]) in keys}
        rows_in = [(baseline, base[k]) for k in sorted(base)] + rows_in
    else:
        for _, r in rows_in:
            base.setdefault((r["arch"], r["seed"]), r)
    base_name = f"`{baseline}`" if baseline else "the first row of the same network and seed"
    multiclass = _one_kind(rows_in)
    versus_name = f"vs {base_name}: only this / only that right, McNemar p"
    if multiclass:  # classes12: accuracy, macro-F1 and the hotspot-vs-rest view of the 12-class predictions
        header = ["Results folder", "Network", "Seed", "Settings", "Accuracy", "Macro-F1", "Hotspot vs rest: sensitivity",
                  "specificity", "Minutes", versus_name]
    else:
        header = ["Results folder", "Network", "Seed", "Settings", "Accuracy", "Sensitivity", "Specificity", "ROC AUC",
                  "False alarms / 1000 (realistic)", "Minutes", versus_name]
    rows = []
    for folder, r in rows_in:
        t, rt, timing = r["test"], r.get("test_realistic", {}), r.get("timing", {})
        minutes = ((timing.get("train_seconds") or 0) + (timing.get("pretrain_seconds") or 0)) / 60
        ref = base.get((r["arch"], r["seed"]))
        if ref is None or ref is r:
            versus = "—"
        else:
            mine, theirs = _correct_by_id(r), _correct_by_id(ref)
            common = mine.keys() & theirs.keys()
            b = sum(mine[i] and not theirs[i] for i in common)
            c = sum(theirs[i] and not mine[i] for i in common)
            versus = f"{b} / {c}, p = {mcnemar_exact(b, c):.3f}"
        if multiclass:
            hvr = r.get("hotspot_vs_rest") or {}
            metrics = [fmt(t.get("macro_f1")), fmt(hvr.get("sensitivity"), 3), fmt(hvr.get("specificity"), 3)]
        else:
            metrics = [fmt(t["sensitivity"], 3), fmt(t["specificity"], 3), fmt(t.get("roc_auc"), 3),
                       fmt(rt.get("false_alarms_per_1000"), 1)]
        rows.append([f"`{folder}`", display_name(r["arch"]), str(r["seed"]), _settings(r), fmt(t["accuracy"]),
                     *metrics, f"{minutes:.1f}", versus])
    return _table(header, rows)


def validation_lever_table(results_dir: str | Path, folders: Sequence[str]) -> str:
    """Markdown: one row per run with what settings are chosen on, the validation split at the best checkpoint
    (accuracy, sensitivity and specificity at 0.5, ROC AUC) and the validation-chosen operating point; no test
    number. Runs summarised before validation metrics were stored show n/a; a classes12 run (no operating
    point) shows the validation accuracy of its best epoch."""
    header = ["Results folder", "Network", "Seed", "Settings", "Val accuracy", "Val sensitivity", "Val specificity",
              "Val ROC AUC", "Threshold (val sens >= target)", "Val specificity at it", "Minutes"]
    rows = []
    for folder, r in lever_runs(results_dir, folders):
        point = r.get("operating_point") or {}
        val = point.get("validation_at_0.5") or {}
        if run_task(r) == "classes12":  # no operating point: the validation accuracy of the best checkpoint
            best = [h for h in r.get("history", []) if h.get("epoch") == r.get("best_checkpoint")]
            val = {"accuracy": best[0].get("val_accuracy")} if best else {}
        timing = r.get("timing", {})
        minutes = ((timing.get("train_seconds") or 0) + (timing.get("pretrain_seconds") or 0)) / 60
        rows.append([f"`{folder}`", display_name(r["arch"]), str(r["seed"]), _settings(r), fmt(val.get("accuracy")),
                     fmt(val.get("sensitivity"), 3), fmt(val.get("specificity"), 3), fmt(val.get("roc_auc"), 3),
                     fmt(point.get("threshold"), 4), fmt(point.get("validation_specificity"), 3), f"{minutes:.1f}"])
    return _table(header, rows)
