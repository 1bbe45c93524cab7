"""Aggregate run summaries per architecture: mean, sd and t-interval over seeds, pooled counts with a
Wilson interval, summed confusion matrices, pooled ROC inputs, and paired comparisons between
architectures (same seed = same split and test images)."""

from __future__ import annotations

import itertools
from typing import Any, Sequence

import numpy as np

from hotspot_jax.reproduce.stats import mcnemar_exact, paired_t, pooled_view, t_interval

TABLE3_METRICS = ("accuracy", "precision", "sensitivity", "specificity", "f1", "roc_auc")
REALISTIC_METRICS = ("precision", "sensitivity", "specificity", "false_alarms_per_1000", "roc_auc")


def by_arch(runs: Sequence[dict[str, Any]], order: Sequence[str] = ()) -> dict[str, list[dict[str, Any]]]:
    """Runs grouped by architecture: the names in ``order`` first, then the others alphabetically."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in runs:
        groups.setdefault(r["arch"], []).append(r)
    names = [a for a in order if a in groups] + sorted(a for a in groups if a not in order)
    return {a: sorted(groups[a], key=lambda r: r["seed"]) for a in names}


def metric_bounds(metric: str) -> tuple[float, float]:
    """The range a metric can take, to which its seed interval is clipped."""
    return (0.0, 1000.0) if metric.endswith("_per_1000") else (0.0, 1.0)


def summarize(runs: Sequence[dict[str, Any]], split: str = "test",
              metrics: Sequence[str] = TABLE3_METRICS) -> dict[str, Any]:
    """Per metric: the over-seeds summary (``seeds``) and the pooled-count view (``pooled``) of ``split``."""
    out: dict[str, Any] = {"n_runs": len(runs), "seeds": [r["seed"] for r in runs], "metrics": {}}
    counts = [r[split] for r in runs]
    for m in metrics:
        out["metrics"][m] = {
            "values": [r[split].get(m) for r in runs],
            "seeds": t_interval([r[split].get(m) for r in runs], bounds=metric_bounds(m)).to_dict(),
            "pooled": pooled_view(counts, m),
        }
    cm = np.zeros((2, 2), np.int64)
    for r in runs:
        cm += np.asarray(r[split]["confusion_matrix"], np.int64)
    out["confusion_matrix"] = cm.tolist()
    out["n_per_run"] = [r[split]["n"] for r in runs]
    out["n_neg_per_run"] = [r[split].get("n_neg") for r in runs]
    return out


def pooled_scores(runs: Sequence[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
    """Labels and hotspot probabilities of the balanced test sets of all runs, concatenated."""
    labels = np.concatenate([np.asarray(r["test_predictions"]["labels"], np.int64) for r in runs])
    probs = np.concatenate([np.asarray(r["test_predictions"]["probs"], np.float64) for r in runs])
    return labels, probs


def _correct_by_id(run: dict[str, Any]) -> dict[str, bool]:
    p = run["test_predictions"]
    return {i: guess == lab for i, lab, guess in zip(p["ids"], p["labels"], p["pred"])}


def paired_comparisons(groups: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Every pair of architectures on their common seeds: accuracy difference (A - B) with a paired t
    interval over seeds, and an exact McNemar test on the pooled per-image disagreements."""
    out = []
    for a, b in itertools.combinations(groups, 2):
        ra = {r["seed"]: r for r in groups[a]}
        rb = {r["seed"]: r for r in groups[b]}
        common = sorted(set(ra) & set(rb))
        if not common:
            continue
        diffs = [ra[s]["test"]["accuracy"] - rb[s]["test"]["accuracy"] for s in common]
        only_a = only_b = 0
        for s in common:
            ca, cb = _correct_by_id(ra[s]), _correct_by_id(rb[s])
            for i in ca.keys() & cb.keys():
                only_a += ca[i] and not cb[i]
                only_b += cb[i] and not ca[i]
        out.append({"a": a, "b": b, "seeds": common, **{"diff_" + k: v for k, v in paired_t(diffs).items()},
                    "only_a_right": only_a, "only_b_right": only_b, "mcnemar_p": mcnemar_exact(only_a, only_b)})
    return out


def shared_errors(groups: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Per seed run by two or more architectures (same split, same test images): how many images exactly
    k of the n networks got wrong (k = 0..n), and the accuracy of the networks' mean-probability ensemble
    (threshold 0.5) against the best single network. Concentrated errors (most images right by all, a
    few wrong by most) mean the networks share their mistakes, so ensembling them cannot help much."""
    by_seed: dict[int, dict[str, dict[str, Any]]] = {}
    for arch, runs in groups.items():
        for r in runs:
            by_seed.setdefault(r["seed"], {})[arch] = r
    out = []
    for seed in sorted(by_seed):
        runs = by_seed[seed]
        if len(runs) < 2:
            continue
        correct = [_correct_by_id(r) for r in runs.values()]
        probs_by_id = [dict(zip(r["test_predictions"]["ids"], r["test_predictions"]["probs"])) for r in runs.values()]
        ids = sorted(set.intersection(*(set(c) for c in correct)))
        if not ids:
            continue
        first = next(iter(runs.values()))["test_predictions"]
        labels = np.array([dict(zip(first["ids"], first["labels"]))[i] for i in ids], np.int64)
        probs = np.array([[p[i] for i in ids] for p in probs_by_id], np.float64)
        wrong = ~np.array([[c[i] for i in ids] for c in correct])
        k = wrong.sum(axis=0)
        n_nets = len(runs)
        out.append({
            "seed": seed, "archs": list(runs), "n_images": len(ids),
            "wrong_by_k": np.bincount(k, minlength=n_nets + 1).tolist(),
            "wrong_by_majority": int((k > n_nets / 2).sum()),
            "wrong_by_majority_hotspots": int(((k > n_nets / 2) & (labels == 1)).sum()),
            "ensemble_accuracy": float(((probs.mean(axis=0) >= 0.5) == labels).mean()),
            "best_single_accuracy": float((~wrong).mean(axis=1).max()),
            "right_by_any": float((k < n_nets).mean()),
        })
    return out
