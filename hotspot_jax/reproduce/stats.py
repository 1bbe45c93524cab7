"""Intervals and tests for a handful of seeds: t-interval over seeds, Wilson interval on pooled counts,
paired comparisons of two architectures that were evaluated on the same splits.

Two views of uncertainty, stated in every report:

* **over seeds** (the main one): each seed draws a new split and a new initialisation; the mean of a
  metric over ``k`` seeds gets Student's t interval ``mean ± t(0.975, k-1) · sd / sqrt(k)`` with the
  sample standard deviation (``ddof=1``). It covers split and training noise together.
* **pooled counts**: the test counts of all seeds added up (e.g. correct / images for accuracy) with a
  Wilson score interval. It only covers the finite test set (binomial noise), and pooled test sets of
  different seeds share images, so it is narrower than the truth; it is shown as a second view.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

from scipy import stats as _st


@dataclass(frozen=True)
class SeedSummary:
    """Mean, sample standard deviation and t-interval of one metric over seeds (None where undefined)."""

    n: int
    mean: float | None
    sd: float | None
    low: float | None
    high: float | None

    def to_dict(self) -> dict:
        return {"n": self.n, "mean": self.mean, "sd": self.sd, "ci95": [self.low, self.high]}


def t_interval(values: Sequence[float | None], confidence: float = 0.95,
               bounds: tuple[float, float] | None = None) -> SeedSummary:
    """Student-t interval of the mean of ``values`` (None entries are ignored), clipped to ``bounds``
    (e.g. (0, 1) for a proportion: with two or three seeds the raw interval easily reaches past 1).

    One value: mean only (sd and interval None); no values: everything None.
    """
    xs = [float(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    n = len(xs)
    if n == 0:
        return SeedSummary(0, None, None, None, None)
    mean = sum(xs) / n
    if n == 1:
        return SeedSummary(1, mean, None, None, None)
    sd = math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1))
    half = float(_st.t.ppf(0.5 + confidence / 2, n - 1)) * sd / math.sqrt(n)
    low, high = mean - half, mean + half
    if bounds is not None:
        low, high = max(low, bounds[0]), min(high, bounds[1])
    return SeedSummary(n, mean, sd, low, high)


def wilson_interval(k: int, n: int, confidence: float = 0.95) -> tuple[float, float] | None:
    """Wilson score interval for a proportion ``k / n`` (None when ``n`` is 0)."""
    if n <= 0:
        return None
    if not 0 <= k <= n:
        raise ValueError(f"wilson_interval needs 0 <= k <= n, got k={k}, n={n}")
    z = float(_st.norm.ppf(0.5 + confidence / 2))
    p = k / n
    den = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return max(0.0, centre - half), min(1.0, centre + half)


#: metric -> (numerator, denominator) as functions of pooled tn, fp, fn, tp; F1 has no binomial form.
COUNT_RATIOS = {
    "accuracy": (lambda tn, fp, fn, tp: tp + tn, lambda tn, fp, fn, tp: tn + fp + fn + tp),
    "precision": (lambda tn, fp, fn, tp: tp, lambda tn, fp, fn, tp: tp + fp),
    "sensitivity": (lambda tn, fp, fn, tp: tp, lambda tn, fp, fn, tp: tp + fn),
    "specificity": (lambda tn, fp, fn, tp: tn, lambda tn, fp, fn, tp: tn + fp),
}


def pooled_view(counts: Sequence[dict], metric: str, confidence: float = 0.95) -> dict | None:
    """The pooled-count estimate and Wilson interval of ``metric`` over runs' ``tn/fp/fn/tp`` dicts.

    ``false_alarms_per_1000`` is 1000 x the pooled false-positive rate (FP / healthy); F1 and AUC have no
    binomial form and give None.
    """
    if not counts:
        return None
    tn, fp, fn, tp = (sum(int(c[k]) for c in counts) for k in ("tn", "fp", "fn", "tp"))
    if metric == "false_alarms_per_1000":
        ci = wilson_interval(fp, tn + fp, confidence)
        if ci is None:
            return None
        return {"k": fp, "n": tn + fp, "value": 1000 * fp / (tn + fp), "ci95": [1000 * ci[0], 1000 * ci[1]]}
    if metric not in COUNT_RATIOS:
        return None
    num_f, den_f = COUNT_RATIOS[metric]
    k, n = num_f(tn, fp, fn, tp), den_f(tn, fp, fn, tp)
    ci = wilson_interval(k, n, confidence)
    if ci is None:
        return None
    return {"k": k, "n": n, "value": k / n, "ci95": list(ci)}


def paired_t(diffs: Sequence[float], confidence: float = 0.95) -> dict:
    """Mean difference of paired values (same seed = same split), its t-interval and two-sided p-value."""
    s = t_interval(diffs, confidence, bounds=(-1.0, 1.0))  # differences of proportions
    p = None
    if s.n >= 2 and s.sd is not None:
        if s.sd == 0:
            p = 1.0 if s.mean == 0 else 0.0
        else:
            tstat = s.mean / (s.sd / math.sqrt(s.n))
            p = float(2 * _st.t.sf(abs(tstat), s.n - 1))
    return {"n": s.n, "mean": s.mean, "ci95": [s.low, s.high], "p": p}


def mcnemar_exact(b: int, c: int) -> float:
    """Exact two-sided McNemar p-value from the discordant counts ``b`` (only A right) and ``c`` (only B right)."""
    n = b + c
    if n == 0:
        return 1.0
    return float(min(1.0, 2 * _st.binom.cdf(min(b, c), n, 0.5)))
