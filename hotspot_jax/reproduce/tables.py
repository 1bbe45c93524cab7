"""Markdown tables of a recipe's results: Table 3 beside the study, the pooled-count view, the
realistic-prevalence test set, paired comparisons, and the timing/machine of every run."""

from __future__ import annotations

from typing import Any, Sequence

from hotspot_jax.reproduce.aggregate import REALISTIC_METRICS, TABLE3_METRICS
from hotspot_jax.reproduce.study import STUDY_TABLE3, display_name

NAMES = {"accuracy": "Accuracy", "precision": "Precision", "sensitivity": "Sensitivity",
         "specificity": "Specificity", "f1": "F1", "roc_auc": "ROC AUC",
         "false_alarms_per_1000": "False alarms / 1000 healthy"}


def fmt(x: float | None, digits: int = 4) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def cell(summary: dict[str, Any], digits: int = 4) -> str:
    """``mean ± sd [low, high]`` (or the single value when there is one seed)."""
    s = summary["seeds"]
    if s["mean"] is None:
        return "n/a"
    if s["sd"] is None:
        return f"{fmt(s['mean'], digits)} (1 seed)"
    lo, hi = s["ci95"]
    return f"{fmt(s['mean'], digits)} ± {fmt(s['sd'], digits)} [{fmt(lo, digits)}, {fmt(hi, digits)}]"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _init(runs: list[dict[str, Any]]) -> str:
    kinds = sorted({(r.get("initialisation") or "?").split(" (")[0] for r in runs})
    return ", ".join(kinds)


def table3(groups: dict[str, list[dict]], summaries: dict[str, dict], study: bool = True) -> str:
    """The study's Table 3 beside ours: per architecture, mean ± sd [95% t-interval over seeds]; without
    ``study`` (another task than the study's) our rows only."""
    header = ["Network", "Init", "Seeds"] + [NAMES[m] for m in TABLE3_METRICS]
    rows = []
    for arch, runs in groups.items():
        s = summaries[arch]["metrics"]
        rows.append([display_name(arch), _init(runs), str(len(runs))] + [cell(s[m]) for m in TABLE3_METRICS])
        published = STUDY_TABLE3.get(arch) if study else None
        if published is not None:
            rows.append([f"↳ study ({display_name(arch)})", "ImageNet", "1"]
                        + [fmt(published.get(m)) for m in TABLE3_METRICS])
    return _table(header, rows)


def pooled_table(groups: dict[str, list[dict]], summaries: dict[str, dict], split: str = "test") -> str:
    """Pooled counts over seeds with Wilson 95% intervals (the binomial view of the finite test sets)."""
    metrics = ("accuracy", "precision", "sensitivity", "specificity")
    header = ["Network", "Seeds"] + [f"{NAMES[m]} (k/n) [Wilson 95%]" for m in metrics]
    rows = []
    for arch, runs in groups.items():
        row = [display_name(arch), str(len(runs))]
        for m in metrics:
            p = summaries[arch]["metrics"][m]["pooled"] if m in summaries[arch]["metrics"] else None
            row.append("n/a" if p is None else f"{p['value']:.4f} ({p['k']}/{p['n']}) [{p['ci95'][0]:.4f}, {p['ci95'][1]:.4f}]")
        rows.append(row)
    return _table(header, rows)


def realistic_table(groups: dict[str, list[dict]], summaries: dict[str, dict]) -> str:
    """The realistic-prevalence test set: test hotspots among every No-Anomaly image not used for training
    or validation; false alarms per 1,000 healthy modules with the pooled Wilson interval too."""
    header = ["Network", "Seeds", "Images (hotspot / healthy)"] + [NAMES[m] for m in REALISTIC_METRICS] \
        + ["Pooled false alarms / 1000 [Wilson 95%]"]
    rows = []
    for arch, runs in groups.items():
        s = summaries[arch]["metrics"]
        sizes = {(r["test_realistic"].get("n_pos"), r["test_realistic"].get("n_neg")) for r in runs}
        size = "; ".join(f"{p} / {n:,}" for p, n in sorted(sizes)) if len(sizes) <= 2 else "varies"
        fa = s["false_alarms_per_1000"]["pooled"]
        pooled = "n/a" if fa is None else f"{fa['value']:.1f} ({fa['k']}/{fa['n']:,}) [{fa['ci95'][0]:.1f}, {fa['ci95'][1]:.1f}]"
        rows.append([display_name(arch), str(len(runs)), size]
                    + [cell(s[m], 1 if m == "false_alarms_per_1000" else 4) for m in REALISTIC_METRICS] + [pooled])
    return _table(header, rows)


def comparisons_table(pairs: list[dict]) -> str:
    """Paired differences in test accuracy (same seed, same test images)."""
    header = ["A", "B", "Seeds", "Accuracy A − B (mean [paired-t 95%])", "paired-t p", "Only A right / only B right",
              "McNemar exact p"]
    rows = []
    for p in pairs:
        lo, hi = p["diff_ci95"]
        ci = "" if lo is None else f" [{lo:+.4f}, {hi:+.4f}]"
        rows.append([display_name(p["a"]), display_name(p["b"]), str(len(p["seeds"])),
                     f"{p['diff_mean']:+.4f}{ci}", fmt(p["diff_p"], 3), f"{p['only_a_right']} / {p['only_b_right']}",
                     fmt(p["mcnemar_p"], 3)])
    return _table(header, rows)


def timing_table(runs: Sequence[dict]) -> str:
    """Wall time, throughput and machine of every run."""
    header = ["Run", "Init", "Size", "Epochs (best)", "Train s", "Pretrain s", "Images/s", "Machine"]
    rows = []
    for r in runs:
        t, m = r.get("timing", {}), r.get("machine", {})
        mach = f"{m.get('backend', '?')}: {m.get('device_kind', '?')}, {m.get('cpu', '?')} x{m.get('cpu_count', '?')}"
        if m.get("load_average"):
            mach += f", load {m['load_average'][0]}"
        rows.append([f"{display_name(r['arch'])} s{r['seed']}", (r.get("initialisation") or "?").split(" (")[0],
                     str(r["train_config"].get("image_size")), f"{t.get('epochs')} ({r.get('best_checkpoint')})",
                     fmt(t.get("train_seconds"), 0), fmt(t.get("pretrain_seconds"), 0),
                     fmt(t.get("images_per_second_median"), 0), mach])
    return _table(header, rows)


def time_to_accuracy(groups: dict[str, list[dict]]) -> list[dict[str, Any]]:
    """Per network: the training time one seed costs (pretraining + the median fine-tuning over seeds) beside
    its mean test accuracy; a shared pretraining (``pretrain_shared_across_seeds``) is paid once per network,
    so it is listed apart from the per-seed time. Epoch time only: compilation and scoring are not in
    ``train_seconds`` (tests/test_reproduce.py)."""
    rows = []
    for arch, runs in groups.items():
        fine = sorted(r.get("timing", {}).get("train_seconds") or 0.0 for r in runs)
        pre = [r.get("timing", {}).get("pretrain_seconds") for r in runs]
        pre = [p for p in pre if p]
        shared = any(r.get("timing", {}).get("pretrain_shared_across_seeds") for r in runs)
        accs = [r["test"]["accuracy"] for r in runs if r.get("test")]
        rows.append({"arch": arch, "seeds": len(runs), "test_accuracy": sum(accs) / len(accs) if accs else None,
                     "pretrain_minutes": (sorted(pre)[len(pre) // 2] / 60) if pre else 0.0,
                     "pretrain_shared": shared, "finetune_minutes": fine[len(fine) // 2] / 60 if fine else None})
    return rows


def time_to_accuracy_table(rows: list[dict[str, Any]], target_minutes: float = 90.0) -> str:
    """:func:`time_to_accuracy` as a table, with one seed of every network (its pretraining included) against
    ``target_minutes``; beside it, what a seed costs when the seeds of the grid share the pretraining (the
    pretraining divided by the seeds, plus a fine-tuning), which is not what the target counts."""
    header = ["Network", "Seeds", "Mean test accuracy", "Pretraining min", "Fine-tuning min (median)",
              "One seed, min", "Per seed when the seeds share it, min"]
    body, total, total_shared = [], 0.0, 0.0
    for r in rows:
        fine = r["finetune_minutes"] or 0.0
        one = r["pretrain_minutes"] + fine
        each = r["pretrain_minutes"] / r["seeds"] + fine if r["pretrain_shared"] else one
        total, total_shared = total + one, total_shared + each
        pre = fmt(r["pretrain_minutes"], 1) + (" (shared by every seed)" if r["pretrain_shared"] else "")
        body.append([display_name(r["arch"]), str(r["seeds"]), fmt(r["test_accuracy"]), pre,
                     fmt(r["finetune_minutes"], 1), fmt(one, 1), fmt(each, 1)])
    verdict = "within" if total <= target_minutes else "over"
    body.append(["all of the above, one seed", "", "", "", "", f"{total:.1f} ({verdict} the {target_minutes:.0f} "
                 "min target)", fmt(total_shared, 1)])
    return _table(header, body)


def shared_errors_table(rows: list[dict[str, Any]]) -> str:
    """Per seed: images wrong by k of the n networks, wrong by a majority, and the ensemble's accuracy."""
    n_max = max(len(r["archs"]) for r in rows)
    header = (["Seed", "Networks", "Images"] + [f"wrong by {k}" for k in range(n_max + 1)]
              + ["wrong by a majority (hotspots)", "mean-probability ensemble", "best single network",
                 "right by at least one"])
    body = []
    for r in rows:
        counts = r["wrong_by_k"] + [None] * (n_max + 1 - len(r["wrong_by_k"]))
        body.append([str(r["seed"]), str(len(r["archs"])), str(r["n_images"])]
                    + ["—" if c is None else str(c) for c in counts]
                    + [f"{r['wrong_by_majority']} ({r['wrong_by_majority_hotspots']})", fmt(r["ensemble_accuracy"]),
                       fmt(r["best_single_accuracy"]), fmt(r["right_by_any"])])
    return _table(header, body)


def operating_point_table(points: dict[str, Any]) -> str:
    """Each network, and the seeds' ensembles, at 0.5 and at the validation-chosen threshold (means over seeds), and
    the false alarms at the target sensitivity read on the realistic set itself (ranking quality; "n/a" for
    summaries without realistic scores)."""
    target = points["target_sensitivity"]
    header = ["Network", "Seeds", "Balanced test accuracy (0.5)", "Realistic sensitivity (0.5)",
              "False alarms / 1000 (0.5)", f"Threshold (val sensitivity >= {target:g})", "Realistic sensitivity (threshold)",
              "False alarms / 1000 (threshold)", f"False alarms / 1000 at realistic sensitivity {target:g} (ranking)"]
    rows = []
    for r in points["rows"]:
        name = (f"ensemble (mean probability of {len(points['ensembles'][0]['archs'])} networks)"
                if r["name"] == "ensemble" else display_name(r["name"]))
        rows.append([name, str(len(r["seeds"])), fmt(r["test_accuracy"]), fmt(r["realistic_sensitivity_at_0.5"], 3),
                     fmt(r["realistic_false_alarms_at_0.5"], 1), fmt(r["threshold"], 3),
                     fmt(r["realistic_sensitivity_at_point"], 3), fmt(r["realistic_false_alarms_at_point"], 1),
                     fmt(r.get("realistic_false_alarms_at_sensitivity"), 1)])
    return _table(header, rows)
