"""Evaluation: the study's binary metrics, confusion/ROC figures and the files an evaluation writes.

Names are imported lazily (PEP 562), so ``--help`` and option errors of the scripts do not pay for
importing scikit-learn and matplotlib.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "CLASS_NAMES": "metrics",
    "METRIC_KEYS": "metrics",
    "binary_metrics": "metrics",
    "operating_point": "metrics",
    "predict_labels": "metrics",
    "roc_points": "metrics",
    "confusion_figure": "figures",
    "plot_confusion": "figures",
    "plot_roc": "figures",
    "roc_figure": "figures",
    "save_figure": "figures",
    "format_metrics_table": "report",
    "output_paths": "report",
    "read_metrics": "report",
    "write_evaluation": "report",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
