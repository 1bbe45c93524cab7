"""The study's binary metrics (hotspot = positive class 1), computed with scikit-learn.

Conventions for degenerate inputs (stated so that reports are unambiguous):

* a sample is predicted *Hotspot* when its probability is ``> threshold`` (strictly): at 0.5 this is
  the argmax of the two logits with ties going to No-Anomaly, as in training's accuracy;
* precision and F1 follow scikit-learn's ``zero_division=0``: 0.0 when nothing is predicted
  positive (precision) or when there are no positives at all and none predicted (F1);
* sensitivity is ``None`` when there are no positives, specificity and false alarms per 1,000
  healthy modules are ``None`` when there are no negatives (nothing to measure);
* ROC AUC is ``None`` when ``y_true`` holds a single class (undefined).

``None`` becomes ``null`` in JSON.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from hotspot_jax.errors import ConfigError

CLASS_NAMES: tuple[str, str] = ("No-Anomaly", "Hotspot")
"""Binary class names, index = label (0 healthy, 1 hotspot)."""

METRIC_KEYS: tuple[str, ...] = (
    "accuracy",
    "precision",
    "sensitivity",
    "specificity",
    "f1",
    "roc_auc",
    "false_alarms_per_1000",
)
"""The scalar metrics, in the order reports show them (the study's five first)."""


def check_threshold(threshold: float, option: str = "threshold") -> float:
    """Return ``threshold`` as a float, or raise ConfigError if it is not a probability in [0, 1]."""
    try:
        value = float(threshold)
    except (TypeError, ValueError):
        raise ConfigError(f"{option} must be a number in [0, 1], got {threshold!r}") from None
    if not 0.0 <= value <= 1.0:  # also rejects NaN
        raise ConfigError(f"{option} must be in [0, 1], got {threshold!r}")
    return value


def as_label_score_arrays(y_true: Sequence[int], y_score: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Validate and convert labels (0/1) and scores (finite floats) to 1-D numpy arrays of equal length."""
    labels = np.asarray(y_true)
    scores = np.asarray(y_score, dtype=np.float64)
    if labels.ndim != 1 or scores.ndim != 1:
        raise ValueError(f"y_true and y_score must be 1-D, got shapes {labels.shape} and {scores.shape}")
    if labels.shape != scores.shape:
        raise ValueError(f"y_true has {labels.size} entries but y_score has {scores.size}")
    if labels.size == 0:
        raise ValueError("no samples to evaluate")
    bad = ~np.isin(labels, (0, 1))
    if bad.any():
        raise ValueError(f"y_true must hold 0 (No-Anomaly) or 1 (Hotspot); found {labels[bad][0]!r}")
    nonfinite = int((~np.isfinite(scores)).sum())
    if nonfinite:
        raise ValueError(f"y_score holds {nonfinite} non-finite value(s) (NaN or inf)")
    return labels.astype(np.int64), scores


def predict_labels(y_score: Sequence[float] | np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """Hard labels from hotspot probabilities: 1 where ``score > threshold`` (argmax at 0.5)."""
    return (np.asarray(y_score, dtype=np.float64) > threshold).astype(np.int64)


def _ratio(num: int, den: int) -> float | None:
    return None if den == 0 else num / den


def binary_metrics(y_true: Sequence[int], y_score: Sequence[float], threshold: float = 0.5) -> dict[str, Any]:
    """The study's five metrics, ROC AUC, the confusion matrix and counts, as a JSON-serialisable dict.

    Keys: accuracy, precision, sensitivity, specificity, f1, roc_auc, false_alarms_per_1000,
    confusion_matrix ``[[TN, FP], [FN, TP]]`` (rows true, columns predicted), confusion_labels,
    tn, fp, fn, tp, n, n_pos, n_neg, threshold, zero_division. See the module docstring for ``None``.
    """
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_score, recall_score, roc_auc_score

    threshold = check_threshold(threshold)
    labels, scores = as_label_score_arrays(y_true, y_score)
    pred = predict_labels(scores, threshold)

    cm = confusion_matrix(labels, pred, labels=[0, 1])
    tn, fp, fn, tp = (int(v) for v in cm.ravel())
    n_pos, n_neg = tp + fn, tn + fp

    sensitivity = specificity = roc_auc = None
    if n_pos:
        sensitivity = float(recall_score(labels, pred, pos_label=1, zero_division=0))
    if n_neg:
        specificity = float(recall_score(labels, pred, pos_label=0, zero_division=0))
    if n_pos and n_neg:
        roc_auc = float(roc_auc_score(labels, scores))
    false_alarms = _ratio(fp * 1000, n_neg)

    return {
        "accuracy": float(accuracy_score(labels, pred)),
        "precision": float(precision_score(labels, pred, pos_label=1, zero_division=0)),
        "sensitivity": sensitivity,
        "specificity": specificity,
        "f1": float(f1_score(labels, pred, pos_label=1, zero_division=0)),
        "roc_auc": roc_auc,
        "false_alarms_per_1000": None if false_alarms is None else float(false_alarms),
        "confusion_matrix": [[tn, fp], [fn, tp]],
        "confusion_labels": list(CLASS_NAMES),
        "tn": tn,
        "fp": fp,
        "fn": fn,
        "tp": tp,
        "n": int(labels.size),
        "n_pos": n_pos,
        "n_neg": n_neg,
        "threshold": threshold,
        "zero_division": 0,
    }


def false_alarms_at_sensitivity(y_true: Sequence[int], y_score: Sequence[float], target: float) -> float | None:
    """False alarms per 1,000 negatives at the threshold that reaches sensitivity ``target`` on these images
    themselves (FPR at a TPR, times 1,000): a measure of the ranking, not an operating point, since the threshold
    is read off the same labels. The fewest of any threshold: negatives scoring at least the k-th highest
    positive, k = ceil(target * positives). None without both classes (tests/test_ensemble.py)."""
    labels, scores = as_label_score_arrays(y_true, y_score)
    pos, neg = np.sort(scores[labels == 1])[::-1], scores[labels == 0]
    if not len(pos) or not len(neg):
        return None
    k = max(1, math.ceil(round(target * len(pos), 9)))
    return float(1000.0 * np.mean(neg >= pos[k - 1]))


def log_loss(y_true: Sequence[int], y_score: Sequence[float], eps: float = 1e-6) -> float:
    """Mean binary cross-entropy (natural log) of hotspot probabilities, each clipped to [eps, 1 - eps]: the
    stored predictions have 6 decimals, so a probability written as 0 or 1 counts as eps away from it."""
    labels, scores = as_label_score_arrays(y_true, y_score)
    p = np.clip(scores, eps, 1.0 - eps)
    return float(-np.mean(np.where(labels == 1, np.log(p), np.log1p(-p))))


def roc_points(y_true: Sequence[int], y_score: Sequence[float]) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """scikit-learn's ROC curve ``(fpr, tpr, thresholds)``, or None when y_true holds a single class."""
    from sklearn.metrics import roc_curve

    labels, scores = as_label_score_arrays(y_true, y_score)
    if labels.min() == labels.max():
        return None
    fpr, tpr, thresholds = roc_curve(labels, scores, pos_label=1)
    return fpr, tpr, thresholds


def operating_point(metrics: dict[str, Any]) -> tuple[float, float] | None:
    """The threshold's point ``(1 - specificity, sensitivity)`` on the ROC plane, or None if undefined."""
    spec, sens = metrics.get("specificity"), metrics.get("sensitivity")
    if spec is None or sens is None:
        return None
    return 1.0 - spec, sens


def format_value(value: Any, digits: int = 4) -> str:
    """A metric as text: ``n/a`` for None/NaN, fixed decimals for floats, plain ints."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)
