"""The operating point of every network and of their ensemble, per seed, from the committed run summaries.

A network's operating point is the threshold its run chose on validation (hotspot_jax.evaluate.
decision_threshold). The ensemble of a seed is the mean hotspot probability of the networks run on it; its
threshold is chosen the same way on the mean of their validation scores, never on a test set. Both test sets
are then read at 0.5 (the study's rule) and at that threshold (what a crew acts on). Beside them, the realistic
test set's false alarms at the threshold that reaches the target sensitivity on that set itself: how well the
scores rank, apart from how well validation placed the threshold (never an operating point). Summaries made before
validation and realistic-test scores were kept (``val_predictions``) have no ensemble operating point.
Tested in tests/test_ensemble.py.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from hotspot_jax.errors import ConfigError

SCORED_SPLITS = ("val", "test", "test_realistic")
_KEEP = ("n", "accuracy", "sensitivity", "specificity", "false_alarms_per_1000", "tn", "fp", "fn", "tp", "threshold")


def _aligned(runs: list[dict[str, Any]], split: str) -> tuple[np.ndarray, np.ndarray] | None:
    """(labels, per-run probabilities [runs, images]) of ``split`` in one id order; None when a run lacks the
    split's scores or the runs scored different images (then they are not the same seed's split)."""
    preds = [r.get(f"{split}_predictions") for r in runs]
    if any(p is None for p in preds):
        return None
    ids = preds[0]["ids"]
    if any(sorted(p["ids"]) != sorted(ids) for p in preds[1:]):
        return None
    probs = np.array([[dict(zip(p["ids"], p["probs"]))[i] for i in ids] for p in preds], np.float64)
    return np.asarray(preds[0]["labels"], np.int64), probs


def ensemble_of_seed(runs: list[dict[str, Any]], target: float) -> dict[str, Any] | None:
    """The mean-probability ensemble of ``runs`` (one seed, two or more networks): its validation-chosen
    threshold and both test sets at 0.5 and at it; None when the summaries lack the scores it needs."""
    from hotspot_jax.evaluate import decision_threshold
    from hotspot_jax.evaluate.metrics import binary_metrics, false_alarms_at_sensitivity

    scored = {split: _aligned(runs, split) for split in SCORED_SPLITS}
    if any(v is None for v in scored.values()) or len(runs) < 2:
        return None
    labels, probs = scored["val"]
    try:
        point = decision_threshold.choose(labels, probs.mean(axis=0), target)
    except ConfigError:
        return None
    out: dict[str, Any] = {"seed": runs[0]["seed"], "archs": [r["arch"] for r in runs], "operating_point": point}
    for split in ("test", "test_realistic"):
        labels, probs = scored[split]
        mean = probs.mean(axis=0)
        out[split] = {k: v for k, v in binary_metrics(labels, mean, 0.5).items() if k in _KEEP}
        out[f"{split}_at_operating_point"] = {k: v for k, v in binary_metrics(labels, mean, point["threshold"]).items()
                                              if k in _KEEP}
    out["realistic_false_alarms_at_sensitivity"] = false_alarms_at_sensitivity(labels, mean, target)
    return out


def operating_points(groups: dict[str, list[dict[str, Any]]], target: float = 0.95) -> dict[str, Any]:
    """Per network (its runs' own thresholds) and per seed's ensemble: means over seeds of the realistic test
    set's sensitivity and false alarms per 1,000 healthy modules at 0.5 and at the operating point, and the
    balanced test accuracy at 0.5; plus the ensembles of every seed run by two or more networks."""
    rows = []
    for arch, runs in groups.items():
        rows.append(_mean_row(arch, [r for r in runs if r.get("test_realistic_at_operating_point")], target))
    by_seed: dict[int, list[dict[str, Any]]] = {}
    for runs in groups.values():
        for r in runs:
            by_seed.setdefault(r["seed"], []).append(r)
    ensembles = [e for seed in sorted(by_seed) if (e := ensemble_of_seed(by_seed[seed], target)) is not None]
    if ensembles:
        rows.append(_mean_row("ensemble", ensembles, target))
    return {"target_sensitivity": target, "rows": [r for r in rows if r["seeds"]], "ensembles": ensembles}


def _ranking(run: dict[str, Any], target: float) -> float | None:
    """A run's (or a seed ensemble's) realistic false alarms per 1,000 at the target sensitivity read on that set."""
    from hotspot_jax.evaluate.metrics import false_alarms_at_sensitivity

    if "realistic_false_alarms_at_sensitivity" in run:
        return run["realistic_false_alarms_at_sensitivity"]
    preds = run.get("test_realistic_predictions")
    return None if preds is None else false_alarms_at_sensitivity(preds["labels"], preds["probs"], target)


def _mean_row(name: str, runs: list[dict[str, Any]], target: float) -> dict[str, Any]:
    def mean(split: str, key: str) -> float | None:
        values = [r[split][key] for r in runs if r.get(split) and r[split].get(key) is not None]
        return float(np.mean(values)) if values else None

    ranking = [v for r in runs if (v := _ranking(r, target)) is not None]

    return {
        "name": name, "seeds": [r["seed"] for r in runs],
        "test_accuracy": mean("test", "accuracy"),
        "realistic_sensitivity_at_0.5": mean("test_realistic", "sensitivity"),
        "realistic_false_alarms_at_0.5": mean("test_realistic", "false_alarms_per_1000"),
        "threshold": float(np.mean([r["operating_point"]["threshold"] for r in runs])) if runs else None,
        "realistic_sensitivity_at_point": mean("test_realistic_at_operating_point", "sensitivity"),
        "realistic_false_alarms_at_point": mean("test_realistic_at_operating_point", "false_alarms_per_1000"),
        "test_accuracy_at_point": mean("test_at_operating_point", "accuracy"),
        "realistic_false_alarms_at_sensitivity": float(np.mean(ranking)) if len(ranking) == len(runs) and runs else None,
    }
