"""The flagged-modules report: one self-contained HTML page (``scripts/predict.py --report DIR``).

>>> from hotspot_jax.report import ReportData, write_report
>>> write_report("report/", ReportData(names, probs, images, maps, threshold, source_text, model_info))
"""

from hotspot_jax.report.collect import ReportCollector, check_task, positive_indices, report_labels
from hotspot_jax.report.page import ReportData, render, write_report

__all__ = ["ReportCollector", "ReportData", "check_task", "positive_indices", "render", "report_labels", "write_report"]
