"""binary_metrics against hand-computed values and scikit-learn, and its degenerate cases."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from sklearn import metrics as skm

from hotspot_jax.errors import ConfigError
from hotspot_jax.evaluate import binary_metrics, operating_point, predict_labels, roc_points
from hotspot_jax.evaluate.metrics import format_value

# A 10-sample case worked out by hand (threshold 0.5, hotspot = 1):
#   idx  label  score  pred  outcome
#   0    1      0.90   1     TP
#   1    1      0.80   1     TP
#   2    1      0.70   1     TP
#   3    1      0.40   0     FN
#   4    0      0.60   1     FP
#   5    0      0.30   0     TN
#   6    0      0.20   0     TN
#   7    0      0.10   0     TN
#   8    0      0.50   0     TN   (0.5 is not above the threshold: ties go to No-Anomaly, like argmax)
#   9    0      0.05   0     TN
# TP=3 FN=1 FP=1 TN=5: accuracy 8/10, precision 3/4, sensitivity 3/4, specificity 5/6,
# F1 = 2*3/(2*3+1+1) = 6/8, false alarms 1/6*1000.
# AUC = share of (pos, neg) pairs ranked correctly: positives 0.9, 0.8, 0.7 beat all 6 negatives (18),
# 0.4 beats 0.3, 0.2, 0.1, 0.05 (4) -> 22/24.
Y10 = [1, 1, 1, 1, 0, 0, 0, 0, 0, 0]
S10 = [0.9, 0.8, 0.7, 0.4, 0.6, 0.3, 0.2, 0.1, 0.5, 0.05]


def test_hand_computed_ten_samples():
    m = binary_metrics(Y10, S10)
    assert (m["tp"], m["fn"], m["fp"], m["tn"]) == (3, 1, 1, 5)
    assert m["confusion_matrix"] == [[5, 1], [1, 3]]
    assert m["confusion_labels"] == ["No-Anomaly", "Hotspot"]
    assert (m["n"], m["n_pos"], m["n_neg"]) == (10, 4, 6)
    assert m["accuracy"] == pytest.approx(0.8)
    assert m["precision"] == pytest.approx(0.75)
    assert m["sensitivity"] == pytest.approx(0.75)
    assert m["specificity"] == pytest.approx(5 / 6)
    assert m["f1"] == pytest.approx(0.75)
    assert m["roc_auc"] == pytest.approx(22 / 24)
    assert m["false_alarms_per_1000"] == pytest.approx(1000 / 6)
    assert m["threshold"] == 0.5


def test_threshold_moves_the_operating_point():
    m = binary_metrics(Y10, S10, threshold=0.6)  # 0.6 is not above 0.6: TN
    assert (m["tp"], m["fn"], m["fp"], m["tn"]) == (3, 1, 0, 6)
    m = binary_metrics(Y10, S10, threshold=0.4)  # 0.4 is not above 0.4: still FN; 0.5 becomes FP
    assert (m["tp"], m["fn"], m["fp"], m["tn"]) == (3, 1, 2, 4)
    m = binary_metrics(Y10, S10, threshold=0.65)
    assert (m["tp"], m["fn"], m["fp"], m["tn"]) == (3, 1, 0, 6)
    assert m["precision"] == 1.0 and m["specificity"] == 1.0 and m["false_alarms_per_1000"] == 0.0
    assert m["roc_auc"] == pytest.approx(22 / 24)  # threshold-free
    assert operating_point(m) == pytest.approx((0.0, 0.75))


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("threshold", [0.3, 0.5, 0.8])
def test_equals_scikit_learn_on_random_predictions(seed, threshold):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, size=257)
    s = np.clip(rng.normal(0.35 + 0.3 * y, 0.25), 0, 1)
    m = binary_metrics(y, s, threshold)
    pred = (s > threshold).astype(int)
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
    assert m["precision"] == pytest.approx(skm.precision_score(y, pred))
    assert m["sensitivity"] == pytest.approx(skm.recall_score(y, pred))
    assert m["specificity"] == pytest.approx(skm.recall_score(y, pred, pos_label=0))
    assert m["f1"] == pytest.approx(skm.f1_score(y, pred))
    assert m["roc_auc"] == pytest.approx(skm.roc_auc_score(y, s))
    assert m["confusion_matrix"] == skm.confusion_matrix(y, pred).tolist()
    # and against plain counting, independent of scikit-learn
    tp = int(((pred == 1) & (y == 1)).sum())
    fp = int(((pred == 1) & (y == 0)).sum())
    assert m["tp"] == tp and m["fp"] == fp
    assert m["false_alarms_per_1000"] == pytest.approx(fp / (y == 0).sum() * 1000)


def test_no_positive_prediction_gives_zero_precision_and_f1():
    m = binary_metrics([1, 1, 0, 0, 0], [0.1, 0.2, 0.1, 0.3, 0.0])
    assert m["tp"] == 0 and m["fp"] == 0
    assert m["precision"] == 0.0 and m["f1"] == 0.0 and m["sensitivity"] == 0.0
    assert m["specificity"] == 1.0
    assert m["roc_auc"] == pytest.approx(3.5 / 6)  # 0.2 beats 0.1 and 0.0; 0.1 ties 0.1 (half), beats 0.0


def test_single_class_all_healthy():
    m = binary_metrics([0, 0, 0, 0], [0.1, 0.7, 0.2, 0.3])
    assert m["roc_auc"] is None and m["sensitivity"] is None
    assert m["specificity"] == 0.75 and m["false_alarms_per_1000"] == 250.0
    assert m["precision"] == 0.0 and m["f1"] == 0.0
    assert roc_points([0, 0, 0, 0], [0.1, 0.7, 0.2, 0.3]) is None
    assert operating_point(m) is None


def test_single_class_all_hotspot():
    m = binary_metrics([1, 1, 1], [0.9, 0.2, 0.6])
    assert m["roc_auc"] is None and m["specificity"] is None and m["false_alarms_per_1000"] is None
    assert m["sensitivity"] == pytest.approx(2 / 3) and m["precision"] == 1.0
    assert m["confusion_matrix"] == [[0, 0], [1, 2]]


def test_json_serialisable_with_plain_types():
    for m in (binary_metrics(Y10, np.asarray(S10, dtype=np.float32)), binary_metrics([0, 0], [0.2, 0.9])):
        text = json.dumps(m, allow_nan=False)
        assert json.loads(text) == m
        for key, value in m.items():
            assert value is None or type(value) in (int, float, list, str), key


def test_roc_points_match_scikit_learn():
    fpr, tpr, thr = roc_points(Y10, S10)
    ref = skm.roc_curve(Y10, S10)
    np.testing.assert_allclose(fpr, ref[0])
    np.testing.assert_allclose(tpr, ref[1])
    assert fpr[0] == 0 and tpr[-1] == 1


def test_predict_labels_strict_threshold_matches_argmax():
    assert predict_labels([0.49, 0.5, 0.51], 0.5).tolist() == [0, 0, 1]
    logits = np.random.default_rng(0).normal(size=(200, 2)).astype(np.float32)
    logits[:5, 1] = logits[:5, 0]  # ties
    p = np.exp(logits[:, 1]) / np.exp(logits).sum(1)
    assert predict_labels(p, 0.5).tolist() == np.argmax(logits, axis=1).tolist()


@pytest.mark.parametrize(
    "y,s,msg",
    [
        ([0, 1], [0.5], "2 entries"),
        ([0, 2], [0.5, 0.5], "0 \\(No-Anomaly\\) or 1"),
        ([0, 1], [0.5, float("nan")], "non-finite"),
        ([], [], "no samples"),
    ],
)
def test_bad_arrays_raise(y, s, msg):
    with pytest.raises(ValueError, match=msg):
        binary_metrics(y, s)


@pytest.mark.parametrize("threshold", [-0.1, 1.5, float("nan"), "high"])
def test_bad_threshold_is_a_config_error(threshold):
    with pytest.raises(ConfigError, match="threshold"):
        binary_metrics(Y10, S10, threshold)


def test_format_value():
    assert format_value(None) == "n/a" and format_value(math.nan) == "n/a"
    assert format_value(0.123456) == "0.1235" and format_value(7) == "7"
