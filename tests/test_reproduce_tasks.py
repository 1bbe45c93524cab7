"""``scripts/reproduce.py --task``: recipes of a task (the ``classes12`` recipe, ``--task`` naming its own
results folder, pretraining refused for a non-hotspot target), per-task run summaries, and the classes12
report (accuracy and macro-F1 over seeds beside the published numbers, per-class recall, confusion
figures) from fake summaries and from a real tiny grid."""

from __future__ import annotations

import json

import numpy as np
import pytest

from hotspot_jax.data import CLASS_NAMES
from hotspot_jax.errors import ConfigError, DataError
from hotspot_jax.evaluate.multiclass import hotspot_vs_rest, multiclass_metrics
from hotspot_jax.reproduce import report
from hotspot_jax.reproduce.classes12 import summarize_classes12
from hotspot_jax.reproduce.recipes import RECIPES, Recipe, with_overrides
from hotspot_jax.reproduce.runner import RUN_FORMAT, result_path, run_grid, run_task
from test_train_tiny import fast_compile  # noqa: F401  (fixture)

C12 = RECIPES["classes12"]


# ------------------------------------------------------------------------------------------------ recipes
def test_task_is_a_recipe_setting_that_leaves_hotspot_fingerprints_alone():
    assert RECIPES["best"].fingerprint() == "8c3bb5354740"  # the committed results/best/ runs stay finished
    assert RECIPES["paper-cpu"].fingerprint() == "62d8891cd3b9"
    assert RECIPES["best"].task == "hotspot" and C12.task == "classes12" and C12.pretrain_epochs == 0
    assert C12.fingerprint() != with_overrides(C12, ["task=hotspot"]).fingerprint()
    cfg = C12.train_config("shufflenet", 1, "/tmp/x").resolve()
    assert (cfg.task, cfg.image_size, cfg.epochs, cfg.lr, cfg.lr_schedule, cfg.online_augment, cfg.init_from) == \
        ("classes12", 48, 40, 0.01, "cosine", "flip-shift", None)
    assert C12.train_config("alexnet", 0, "/tmp/x").resolve().image_size == 63
    assert "task" not in RECIPES["best"].lever_options()
    variant = with_overrides(RECIPES["paper-cpu"], ["task=anomaly"])
    assert variant.name == "paper-cpu+task=anomaly" and variant.train_config("squeezenet", 0, "/x").task == "anomaly"


def test_best_v2_is_best_with_the_levers_kept_on_validation_and_reuses_their_shared_pretraining():
    """best-v2 must be exactly best + the kept levers (results/issue23/lever_rules.md), so its runs are those of
    that --set, and its pretraining the one the 64 px lever runs made (tta changes evaluation, not pretraining)."""
    kept = ["pretrain_epochs=40", "no_anomaly_pools=fixed", "pretrain_pool=shared", "image_size=64", "tta=flips"]
    v2 = RECIPES["best-v2"]
    assert v2.fingerprint() == with_overrides(RECIPES["best"], kept).fingerprint()
    lever64 = with_overrides(RECIPES["best"], kept[:-1])
    assert v2.fingerprint() != lever64.fingerprint()
    for arch in ("shufflenet", "alexnet"):
        assert v2.pretrain_config(arch, 3, "/x") == lever64.pretrain_config(arch, 3, "/x")
    cfg = v2.train_config("shufflenet", 2, "/x").resolve()
    assert (cfg.image_size, cfg.tta, cfg.no_anomaly_pools, cfg.epochs) == (64, "flips", "fixed", 12)


def test_a_task_that_cannot_take_the_recipe_is_one_clear_error(capsys):
    with pytest.raises(ConfigError, match="can only start a hotspot run: for --task classes12 use --recipe classes12"):
        with_overrides(RECIPES["best"], ["task=classes12"])
    with pytest.raises(ConfigError, match="can only start a hotspot run"):
        Recipe(name="x", description="", task="anomaly", pretrain_epochs=2)
    with pytest.raises(ConfigError, match="no_anomaly_ratio applies to the hotspot task"):
        Recipe(name="x", description="", task="classes12", no_anomaly_ratio=2.0)
    for task in ("colour", "own"):
        with pytest.raises(ConfigError, match=f"unknown recipe task '{task}'; use one of hotspot, anomaly, classes12"):
            Recipe(name="x", description="", task=task)
    from hotspot_jax.cli import run_cli
    from hotspot_jax.reproduce.cli import main

    assert run_cli(main, ["--recipe", "best", "--task", "classes12", "--report-only", "--docs", "none"]) == 2
    err = capsys.readouterr().err
    assert "error: recipe 'best+task=classes12' pretrains in-domain" in err and "Traceback" not in err
    assert run_cli(main, ["--recipe", "paper", "--task", "anomaly", "--set", "task=classes12", "--report-only"]) == 2
    assert "give the task once" in capsys.readouterr().err


def test_task_option_names_the_results_folder(tmp_path, capsys):
    """--task of the recipe's own task is the recipe itself; another one reads results/<recipe>+task=<task>/."""
    from hotspot_jax.cli import run_cli
    from hotspot_jax.reproduce.cli import main

    args = ["--report-only", "--results-dir", str(tmp_path), "--docs", "none"]
    assert run_cli(main, ["--recipe", "classes12", "--task", "classes12", *args]) == 2
    assert f"no finished runs of recipe 'classes12' under {tmp_path / 'classes12'}" in capsys.readouterr().err
    assert run_cli(main, ["--recipe", "paper-cpu", "--task", "classes12", *args]) == 2
    assert "no finished runs of recipe 'paper-cpu+task=classes12'" in capsys.readouterr().err


# ----------------------------------------------------------------------------------- fake summaries
def fake_c12_run(arch: str, seed: int, skill: float, recipe: Recipe = C12, n_per_class: int = 10) -> dict:
    """A classes12 run summary whose metrics are computed from its own per-image predictions: each image is
    right with probability ``skill`` (wrong ones go to No-Anomaly, or to Cell for No-Anomaly images)."""
    rng = np.random.default_rng(100 * seed + int(skill * 1000))
    k = len(CLASS_NAMES)
    labels = np.repeat(np.arange(k), n_per_class)
    right = rng.random(labels.size) < skill
    na, cell = CLASS_NAMES.index("No-Anomaly"), CLASS_NAMES.index("Cell")
    pred = np.where(right, labels, np.where(labels == na, cell, na))
    probs = np.full((labels.size, k), 0.02)
    probs[np.arange(labels.size), pred] = 1 - 0.02 * (k - 1)
    test = multiclass_metrics(labels, probs, CLASS_NAMES)
    hvr = hotspot_vs_rest(labels, probs, CLASS_NAMES)
    hot = [CLASS_NAMES.index(c) for c in ("Hot-Spot", "Hot-Spot-Multi")]
    return {
        "format": RUN_FORMAT, "recipe": recipe.to_dict(), "arch": arch, "seed": seed, "initialisation": "scratch",
        "train_config": {"image_size": recipe.image_size, "task": "classes12"}, "best_checkpoint": 2, "test": test,
        "hotspot_vs_rest": hvr,
        "test_predictions": {"class_names": list(CLASS_NAMES), "ids": [f"{seed}-{i}" for i in range(labels.size)],
                             "labels": labels.tolist(), "pred": pred.tolist(),
                             "hotspot_probs": probs[:, hot].sum(1).round(6).tolist()},
        "history": [], "timing": {"epochs": 3, "train_seconds": 60.0, "images_per_second_median": 100.0},
        "machine": {"backend": "cpu", "device_kind": "cpu", "cpu": "fake", "cpu_count": 2},
    }


def _write(results, runs):
    for r in runs:
        path = result_path(results, r["recipe"]["name"], r["arch"], r["seed"])
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(r))


def test_classes12_report_from_summaries_alone(tmp_path):
    results = tmp_path / "results"
    runs = [fake_c12_run("shufflenet_v2_x1_0", s, 0.9) for s in (0, 1, 2)] + \
           [fake_c12_run("resnet50", s, 0.7) for s in (0, 1, 2)]
    _write(results, runs)
    docs = tmp_path / "results.md"
    docs.write_text("# Results\n\nintro\n\n<!-- BEGIN generated:best -->\nkept\n<!-- END generated:best -->\n")
    agg = report.build(results, "classes12", docs=docs)
    out = results / "classes12"
    # the table's numbers are the mean and sd of the runs' own accuracies
    acc = [r["test"]["accuracy"] for r in runs[:3]]
    s = agg["summaries"]["shufflenet_v2_x1_0"]
    assert s["metrics"]["accuracy"]["seeds"]["mean"] == pytest.approx(np.mean(acc))
    assert s["metrics"]["accuracy"]["seeds"]["sd"] == pytest.approx(np.std(acc, ddof=1))
    assert s["metrics"]["accuracy"]["pooled"]["n"] == 3 * 120
    assert s["metrics"]["accuracy"]["pooled"]["k"] == round(sum(acc) * 120)
    assert np.sum(s["confusion_matrix"]) == 360 and len(s["confusion_matrix"]) == 12
    recall = [r["test"]["per_class"]["Soiling"]["recall"] for r in runs[:3]]
    assert s["per_class"]["Soiling"]["recall"]["mean"] == pytest.approx(np.mean(recall))
    md = (out / "report.md").read_text()
    mean, sd = np.mean(acc), np.std(acc, ddof=1)
    assert f"| ShuffleNetV2 | scratch | 3 | {mean:.4f} ± {sd:.4f}" in md
    assert "↳ published: SolarAttnNet (Energies, 2025) | n/a | 1 | 0.9210" in md
    assert "↳ published: ResNet-50, SolarAttnNet's baseline | n/a | 1 | 0.8850" in md
    assert "split, input size, initialisation (ImageNet weights or not) and training may differ" in md
    soiling = f"| Soiling | 10 | {np.mean(recall):.3f} ± {np.std(recall, ddof=1):.3f} |"
    assert soiling in md and "Hotspot vs rest" in md and "| ShuffleNetV2 | ResNet-50 | 3 |" in md
    assert "](./classes12_confusion.png)" in md and "Table 3" not in md
    for name in ("classes12_confusion.png", "classes12_metrics.png"):
        data = (out / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000
    pair = agg["pairs"][0]
    diff = np.mean([a["test"]["accuracy"] - b["test"]["accuracy"] for a, b in zip(runs[:3], runs[3:])])
    assert (pair["a"], pair["b"]) == ("shufflenet_v2_x1_0", "resnet50") and pair["diff_mean"] == pytest.approx(diff)
    text = docs.read_text()
    assert "kept" in text and "<!-- BEGIN generated:classes12 -->" in text and "0.9210" in text
    assert "../" + (out / "classes12_metrics.png").as_posix() in text
    again = report.build(results, "classes12", docs=docs)
    assert json.dumps(again, sort_keys=True) == json.dumps(agg, sort_keys=True)


def test_a_results_folder_mixing_tasks_is_refused(tmp_path):
    from test_reproduce import fake_run

    hot = fake_run("alexnet", 0, 10, 0, 1, 9, recipe=C12)  # a hotspot summary filed under classes12
    hot["recipe"]["task"] = "hotspot"
    _write(tmp_path, [hot, fake_c12_run("alexnet", 1, 0.8)])
    assert run_task(hot) == "hotspot" and run_task({"recipe": {}}) == "hotspot"
    with pytest.raises(DataError, match="mixes runs of the tasks classes12, hotspot"):
        report.build(tmp_path, "classes12")
    odd = fake_c12_run("alexnet", 2, 0.8)
    odd["test"]["class_names"] = odd["test"]["class_names"][::-1]
    with pytest.raises(DataError, match="not a classes12 run summary with the classes of the others"):
        summarize_classes12([fake_c12_run("alexnet", 1, 0.8), odd])


# ------------------------------------------------------------------------------ real tiny grids
@pytest.mark.slow
def test_tiny_classes12_and_anomaly_grids_end_to_end(tmp_path, fast_compile):
    """A classes12 and an anomaly recipe through the grid runner with the real training loop on a tiny CNN:
    each summary holds its task's metrics and per-image predictions that agree with them; the reports
    build; a rerun skips the finished runs."""
    from test_reproduce_levers import fake_dataset
    from test_train_tiny import TINY  # registers the test-only tiny CNN

    data = fake_dataset({"Hot-Spot": 40, "Hot-Spot-Multi": 40, "No-Anomaly": 120, "Cell": 40, "Diode": 40,
                         "Soiling": 20}, seed=5)
    kw = dict(runs_dir=tmp_path / "runs", results_dir=tmp_path / "results", dataset=data, progress=False,
              log=lambda m: None)
    c12 = Recipe(name="tiny-c12", description="test", image_size=16, epochs=1, batch_size=16, lr=0.01,
                 task="classes12")
    assert run_grid(c12, [TINY], [0, 1], **kw)["done"] == [f"{TINY}-s0", f"{TINY}-s1"]
    text = result_path(tmp_path / "results", "tiny-c12", TINY, 1).read_text()
    s = json.loads(text)
    test, pred = s["test"], s["test_predictions"]
    assert f'"pred": {json.dumps(pred["pred"])}' in text  # one line per list of the per-image predictions
    assert test["n"] == 45 == len(pred["ids"]) and s["train_config"]["task"] == "classes12"
    assert set(test["per_class"]) == set(CLASS_NAMES) and pred["class_names"] == list(CLASS_NAMES)
    cm = np.zeros((12, 12), np.int64)
    np.add.at(cm, (pred["labels"], pred["pred"]), 1)
    assert cm.tolist() == test["confusion_matrix"] and "macro_f1" in test
    hot = np.isin(pred["labels"], [CLASS_NAMES.index("Hot-Spot"), CLASS_NAMES.index("Hot-Spot-Multi")])
    assert s["hotspot_vs_rest"]["n_pos"] == int(hot.sum()) == 12 and "test_realistic" not in s
    assert "operating_point" not in s
    agg = report.build(tmp_path / "results", "tiny-c12")
    assert agg["summaries"][TINY]["n_runs"] == 2
    assert (tmp_path / "results" / "tiny-c12" / "classes12_confusion.png").is_file()
    assert run_grid(c12, [TINY], [0, 1], **kw)["skipped"] == [f"{TINY}-s0", f"{TINY}-s1"]

    anomaly = Recipe(name="tiny-anomaly", description="test", image_size=16, epochs=1, batch_size=16, lr=0.01,
                     task="anomaly")
    assert run_grid(anomaly, [TINY], [0], **kw)["done"] == [f"{TINY}-s0"]
    s = json.loads(result_path(tmp_path / "results", "tiny-anomaly", TINY, 0).read_text())
    assert s["test"]["n"] == 45 and s["test"]["n_pos"] == 27 and "test_realistic" not in s
    p = s["test_predictions"]
    assert sum(p["labels"]) == 27 and s["operating_point"] is not None
    assert sum(y and q for y, q in zip(p["labels"], p["pred"])) == s["test"]["tp"]  # per-image agrees with counts
    assert sum(q and not y for y, q in zip(p["labels"], p["pred"])) == s["test"]["fp"]
    report.build(tmp_path / "results", "tiny-anomaly")
    md = (tmp_path / "results" / "tiny-anomaly" / "report.md").read_text()
    assert "27 anomalies + 18 No-Anomaly per seed" in md and "study" not in md and "Realistic" not in md


def test_lever_tables_of_classes12_runs(tmp_path):
    """The lever tables take classes12 folders (accuracy, macro-F1, hotspot vs rest; McNemar on the same
    test images; the best epoch's validation accuracy) and refuse a mix with two-class runs."""
    from hotspot_jax.reproduce.lever_table import lever_table, validation_lever_table
    from test_reproduce import fake_run

    bigger = with_overrides(C12, ["image_size=64"])
    base, lever = fake_c12_run("shufflenet_v2_x1_0", 0, 0.7), fake_c12_run("shufflenet_v2_x1_0", 0, 0.9, bigger)
    lever["history"] = [{"epoch": 1, "val_accuracy": 0.5}, {"epoch": 2, "val_accuracy": 0.8125}]
    _write(tmp_path, [base, lever])
    table = lever_table(tmp_path, ["classes12", "classes12+image_size=64"])
    mine = {i for i, y, p in zip(*(lever["test_predictions"][k] for k in ("ids", "labels", "pred"))) if y == p}
    theirs = {i for i, y, p in zip(*(base["test_predictions"][k] for k in ("ids", "labels", "pred"))) if y == p}
    row = [line for line in table.splitlines() if "image_size=64" in line][0]
    assert f"| {lever['test']['accuracy']:.4f} | {lever['test']['macro_f1']:.4f} |" in row
    assert f"{len(mine - theirs)} / {len(theirs - mine)}, p = " in row and f"task classes12, 64 px, {C12.epochs} ep" in row
    assert "Macro-F1" in table and "False alarms" not in table
    assert "| 0.8125 |" in validation_lever_table(tmp_path, ["classes12+image_size=64"])
    _write(tmp_path, [fake_run("alexnet", 0, 10, 0, 1, 9, recipe=RECIPES["paper-cpu"])])
    with pytest.raises(DataError, match="mixes classes12 runs with two-class ones"):
        lever_table(tmp_path, ["classes12", "paper-cpu"])
