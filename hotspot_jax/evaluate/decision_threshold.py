"""The decision threshold a maintenance crew acts on, chosen on the validation split for a target sensitivity.

The study reports every metric at a probability of 0.5. A crew instead fixes how many real hotspots it may
miss (default: at most 5%, sensitivity 0.95) and wants as few false alarms as that allows. The threshold is
chosen on the validation split only, never on a test set: the highest one whose validation sensitivity is at
least the target. A module is flagged when its probability is above the threshold (``metrics.predict_labels``);
the threshold lies halfway between the k-th highest hotspot probability (k = ceil(target x hotspots)) and the
next lower validation probability, so that a small shift in scores does not move the count.
It is stored beside the run's best checkpoint (``operating_point.json``), naming that checkpoint, and read by
``load_trained``, ``evaluate.py`` and ``predict.py``. Tested in tests/test_decision_threshold.py.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from hotspot_jax.errors import ConfigError

FILE = "operating_point.json"
DEFAULT_TARGET_SENSITIVITY = 0.95


def check_target(target: float, option: str = "--target-sensitivity") -> float:
    """``target`` as a float in (0, 1], or a ConfigError in one line."""
    try:
        value = float(target)
    except (TypeError, ValueError):
        raise ConfigError(f"{option} must be a number in (0, 1], got {target!r}") from None
    if not 0.0 < value <= 1.0:
        raise ConfigError(f"{option} must be in (0, 1], got {target!r}")
    return value


def choose(labels: Sequence[int], probs: Sequence[float], target: float = DEFAULT_TARGET_SENSITIVITY) -> dict[str, Any]:
    """The highest threshold with validation sensitivity >= ``target``, and what it gives on validation."""
    target = check_target(target, "target sensitivity")
    y = np.asarray(labels, dtype=np.int64)
    p = np.asarray(probs, dtype=np.float64)
    pos = np.sort(p[y == 1])[::-1]
    if pos.size == 0 or (y == 0).sum() == 0:
        raise ConfigError("the operating point needs hotspot and No-Anomaly images in the validation split")
    k = math.ceil(target * pos.size - 1e-9)
    kth = pos[k - 1]
    lower = p[p < kth]
    threshold = float((kth + lower.max()) / 2.0) if lower.size else float(kth / 2.0)
    flagged = p > threshold
    sensitivity = float(flagged[y == 1].mean())
    return {
        "threshold": threshold,
        "target_sensitivity": target,
        # False only when the k-th hotspot's probability is 0: no threshold in [0, 1] flags it
        "target_met": sensitivity >= target - 1e-12,
        "chosen_on": "validation",
        "validation_sensitivity": sensitivity,
        "validation_specificity": float((~flagged[y == 0]).mean()),
        "validation_n_pos": int(pos.size),
        "validation_n_neg": int((y == 0).sum()),
    }


def write(workdir: str | Path, point: dict[str, Any], checkpoint: str | Path, run_created: str | None = None) -> Path:
    """Store ``point`` beside the run's checkpoints, naming the checkpoint it was chosen for and the run
    (its config's ``created`` time, so that a later run in the same folder never reads it) (atomic)."""
    from hotspot_jax.train.files import write_json_atomic

    path = Path(workdir) / FILE
    write_json_atomic(path, {**point, "checkpoint": str(checkpoint), "run_created": run_created})
    return path


def _tail(path: str | Path) -> tuple[str, str]:
    """``("best", "12")`` for ``.../best/12``: a run's checkpoint, wherever its folder has moved."""
    path = Path(path)
    return path.parent.name, path.name


def read(workdir: str | Path, checkpoint: str | Path | None = None, run_created: str | None = None
         ) -> dict[str, Any] | None:
    """The stored operating point, or None if absent, unreadable, or chosen for another checkpoint or run."""
    try:
        point = json.loads((Path(workdir) / FILE).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(point, dict) or not isinstance(point.get("threshold"), (int, float)):
        return None
    if checkpoint is not None and _tail(point.get("checkpoint", "")) != _tail(checkpoint):
        return None
    if run_created is not None and point.get("run_created") != run_created:
        return None
    return point
