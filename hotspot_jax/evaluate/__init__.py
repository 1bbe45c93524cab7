"""Evaluation: the study's binary metrics, confusion/ROC figures and the files an evaluation writes."""

from hotspot_jax.evaluate.figures import confusion_figure, plot_confusion, plot_roc, roc_figure, save_figure
from hotspot_jax.evaluate.metrics import (
    CLASS_NAMES,
    METRIC_KEYS,
    binary_metrics,
    operating_point,
    predict_labels,
    roc_points,
)
from hotspot_jax.evaluate.report import format_metrics_table, output_paths, read_metrics, write_evaluation

__all__ = [
    "CLASS_NAMES",
    "METRIC_KEYS",
    "binary_metrics",
    "confusion_figure",
    "format_metrics_table",
    "operating_point",
    "output_paths",
    "plot_confusion",
    "plot_roc",
    "predict_labels",
    "read_metrics",
    "roc_figure",
    "roc_points",
    "save_figure",
    "write_evaluation",
]
