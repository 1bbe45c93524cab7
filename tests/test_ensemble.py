"""The operating points of a recipe's networks and of their per-seed ensemble (hotspot_jax.reproduce.ensemble):
the ensemble's threshold comes from validation scores only, and both test sets are read at 0.5 and at it."""

from __future__ import annotations

import json

import numpy as np
import pytest

from hotspot_jax.evaluate import decision_threshold
from hotspot_jax.evaluate.metrics import binary_metrics, false_alarms_at_sensitivity
from hotspot_jax.reproduce import report
from hotspot_jax.reproduce.ensemble import ensemble_of_seed, operating_points
from test_reproduce import fake_run, write_runs


def _scores(rng, n_pos, n_neg, prefix, shift):
    labels = [1] * n_pos + [0] * n_neg
    probs = np.clip(np.array(labels) * 0.5 + rng.uniform(0, 0.5, len(labels)) + shift, 0, 1).round(4).tolist()
    ids = [f"{prefix}{k}" for k in range(len(labels))]
    order = rng.permutation(len(labels))  # each run lists the images in its own order
    return {"ids": [ids[k] for k in order], "labels": [labels[k] for k in order], "probs": [probs[k] for k in order]}


def scored_run(arch, seed, shift, grid=(9, 1, 1, 9)):
    """A fake summary with validation, test and realistic-test scores (the same ids per seed)."""
    run = fake_run(arch, seed, *grid)
    rng = np.random.default_rng([seed, int(round(shift * 100)) + 50])
    for split, (n_pos, n_neg) in {"val": (20, 20), "test": (20, 20), "test_realistic": (20, 400)}.items():
        run[f"{split}_predictions"] = _scores(rng, n_pos, n_neg, f"{seed}{split}-", shift)
    test = run["test_predictions"]
    test["pred"] = [int(p >= 0.5) for p in test["probs"]]
    point = decision_threshold.choose(run["val_predictions"]["labels"], run["val_predictions"]["probs"], 0.95)
    run["operating_point"] = point
    for split in ("test", "test_realistic"):
        p = run[f"{split}_predictions"]
        run[split] = binary_metrics(p["labels"], p["probs"], 0.5)
        run[f"{split}_at_operating_point"] = binary_metrics(p["labels"], p["probs"], point["threshold"])
    return run


def test_ensemble_threshold_is_chosen_on_the_mean_validation_scores_only():
    runs = [scored_run("alexnet", 0, 0.0), scored_run("squeezenet1_1", 0, -0.1)]
    e = ensemble_of_seed(runs, 0.95)
    by_id = [dict(zip(r["val_predictions"]["ids"], r["val_predictions"]["probs"])) for r in runs]
    ids = runs[0]["val_predictions"]["ids"]
    mean = [(by_id[0][i] + by_id[1][i]) / 2 for i in ids]
    assert e["operating_point"]["threshold"] == pytest.approx(
        decision_threshold.choose(runs[0]["val_predictions"]["labels"], mean, 0.95)["threshold"])
    assert e["operating_point"]["validation_sensitivity"] >= 0.95
    # its realistic-test numbers are the mean scores read at that threshold
    real = [dict(zip(r["test_realistic_predictions"]["ids"], r["test_realistic_predictions"]["probs"])) for r in runs]
    rid = runs[0]["test_realistic_predictions"]["ids"]
    expect = binary_metrics(runs[0]["test_realistic_predictions"]["labels"], [(real[0][i] + real[1][i]) / 2 for i in rid],
                            e["operating_point"]["threshold"])
    assert e["test_realistic_at_operating_point"]["fp"] == expect["fp"] and e["test_realistic"]["threshold"] == 0.5
    # changing test scores never moves the threshold; changing validation scores does
    moved = json.loads(json.dumps(runs))
    moved[0]["test_predictions"]["probs"] = [1 - p for p in moved[0]["test_predictions"]["probs"]]
    assert ensemble_of_seed(moved, 0.95)["operating_point"] == e["operating_point"]
    moved[0]["val_predictions"]["probs"] = [p / 2 for p in moved[0]["val_predictions"]["probs"]]
    assert ensemble_of_seed(moved, 0.95)["operating_point"]["threshold"] != e["operating_point"]["threshold"]


def test_false_alarms_at_sensitivity_is_the_fewest_of_any_threshold_reaching_it():
    """FPR at the target TPR (x 1,000): compared with a brute force over every threshold, ties included."""
    rng = np.random.default_rng(4)
    for _ in range(20):
        n_pos, n_neg = rng.integers(1, 30), rng.integers(1, 200)
        labels = np.array([1] * n_pos + [0] * n_neg)
        scores = rng.integers(0, 12, n_pos + n_neg) / 11.0  # coarse: many ties
        for target in (0.5, 0.9, 0.95, 1.0):
            alarms = [scores >= u for u in np.unique(scores)]  # every distinct set of alarms a threshold can give
            best = min(1000.0 * np.sum(a & (labels == 0)) / n_neg for a in alarms
                       if np.sum(a & (labels == 1)) >= target * n_pos - 1e-9)
            assert false_alarms_at_sensitivity(labels, scores, target) == pytest.approx(best)
    assert false_alarms_at_sensitivity([1, 1, 0, 0], [0.9, 0.2, 0.3, 0.1], 0.5) == 0.0
    assert false_alarms_at_sensitivity([1, 1, 0, 0], [0.9, 0.2, 0.3, 0.1], 1.0) == 500.0
    assert false_alarms_at_sensitivity([1, 1], [0.9, 0.2], 0.95) is None


def test_no_ensemble_without_scores_or_across_different_images():
    a, b = scored_run("alexnet", 0, 0.0), scored_run("squeezenet1_1", 0, 0.0)
    old = {k: v for k, v in b.items() if k != "val_predictions"}  # a summary from before scores were kept
    assert ensemble_of_seed([a, old], 0.95) is None
    other = scored_run("squeezenet1_1", 1, 0.0)  # another seed's images
    assert ensemble_of_seed([a, other], 0.95) is None
    assert ensemble_of_seed([a], 0.95) is None


def test_report_has_the_operating_point_table_with_the_ensemble(tmp_path):
    runs = [scored_run(a, s, shift) for s in (0, 1) for a, shift in (("alexnet", 0.0), ("squeezenet1_1", -0.05))]
    write_runs(tmp_path, runs)
    agg = report.build(tmp_path, "paper-cpu")
    points = agg["operating_points"]
    assert [r["name"] for r in points["rows"]] == ["alexnet", "squeezenet1_1", "ensemble"]
    assert [e["seed"] for e in points["ensembles"]] == [0, 1]
    alex = points["rows"][0]
    assert alex["realistic_false_alarms_at_point"] == pytest.approx(
        np.mean([r["test_realistic_at_operating_point"]["false_alarms_per_1000"] for r in runs if r["arch"] == "alexnet"]))
    preds = [r["test_realistic_predictions"] for r in runs if r["arch"] == "alexnet"]
    assert alex["realistic_false_alarms_at_sensitivity"] == pytest.approx(
        np.mean([false_alarms_at_sensitivity(p["labels"], p["probs"], 0.95) for p in preds]))
    md = (tmp_path / "paper-cpu" / "report.md").read_text()
    assert "(ranking)" in md
    assert "At the operating point a crew acts on" in md and "ensemble (mean probability of 2 networks)" in md
