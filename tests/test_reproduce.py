"""Reproduction machinery on tiny fake runs: intervals, aggregation, paired tests, tables, figures, the
report regenerated from JSON alone, and the grid runner skipping finished runs."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from scipy import stats as st

from hotspot_jax.reproduce import aggregate, report, stats
from hotspot_jax.reproduce.recipes import RECIPES, Recipe, get_recipe
from hotspot_jax.reproduce.runner import RUN_FORMAT, is_finished, load_results, result_path, run_grid, summarize_run
from hotspot_jax.errors import ConfigError, DataError


# --------------------------------------------------------------------------------------------- fakes
def _metrics(tn, fp, fn, tp):
    n = tn + fp + fn + tp
    prec = tp / (tp + fp) if tp + fp else 0.0
    sens = tp / (tp + fn)
    return {"n": n, "accuracy": (tp + tn) / n, "precision": prec, "sensitivity": sens, "specificity": tn / (tn + fp),
            "f1": 2 * prec * sens / (prec + sens) if prec + sens else 0.0, "roc_auc": 0.9,
            "false_alarms_per_1000": 1000 * fp / (tn + fp), "confusion_matrix": [[tn, fp], [fn, tp]],
            "tn": tn, "fp": fp, "fn": fn, "tp": tp, "n_pos": tp + fn, "n_neg": tn + fp, "threshold": 0.5}


def fake_run(arch, seed, tn, fp, fn, tp, recipe=RECIPES["paper-cpu"], wrong_ids=None):
    """A run summary whose predictions agree with its confusion counts; ids are shared across archs per seed."""
    labels = [0] * (tn + fp) + [1] * (fn + tp)
    pred = [0] * tn + [1] * fp + [0] * fn + [1] * tp
    ids = [f"{seed}-{k}" for k in range(len(labels))]
    probs = [0.9 if p else 0.1 for p in pred]
    m = _metrics(tn, fp, fn, tp)
    return {
        "format": RUN_FORMAT, "recipe": recipe.to_dict(), "arch": arch, "seed": seed, "initialisation": "scratch",
        "train_config": {"image_size": 64}, "best_checkpoint": 3, "test": m,
        "test_realistic": _metrics(tn * 50, fp * 3, fn, tp),
        "test_predictions": {"ids": ids, "labels": labels, "probs": probs, "pred": pred},
        "history": [], "timing": {"epochs": 4, "train_seconds": 12.5, "images_per_second_median": 100.0},
        "machine": {"backend": "cpu", "device_kind": "cpu", "cpu": "fake", "cpu_count": 2},
    }


def write_runs(results: Path, runs):
    for r in runs:
        path = result_path(results, r["recipe"]["name"], r["arch"], r["seed"])
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(r))


GRID = [  # (arch, seed, tn, fp, fn, tp) on 20-image test sets
    ("squeezenet1_1", 0, 10, 0, 1, 9), ("squeezenet1_1", 1, 9, 1, 1, 9), ("squeezenet1_1", 2, 10, 0, 0, 10),
    ("alexnet", 0, 8, 2, 2, 8), ("alexnet", 1, 7, 3, 2, 8), ("alexnet", 2, 9, 1, 3, 7),
]


# --------------------------------------------------------------------------------------------- stats
def test_t_interval_matches_scipy_and_handles_few_values():
    xs = [0.95, 0.97, 0.92]
    s = stats.t_interval(xs)
    lo, hi = st.t.interval(0.95, 2, loc=np.mean(xs), scale=st.sem(xs))
    assert s.n == 3 and s.mean == pytest.approx(np.mean(xs)) and s.sd == pytest.approx(np.std(xs, ddof=1))
    assert (s.low, s.high) == (pytest.approx(lo), pytest.approx(hi))
    assert stats.t_interval([0.9]).to_dict() == {"n": 1, "mean": 0.9, "sd": None, "ci95": [None, None]}
    assert stats.t_interval([None]).mean is None


def test_seed_interval_is_clipped_to_the_metric_range():
    """Two seeds far apart: the raw t interval of a proportion reaches past 0 and 1; the reported one does not."""
    from hotspot_jax.reproduce.aggregate import metric_bounds

    raw = stats.t_interval([0.80, 0.99])
    assert raw.low < 0 and raw.high > 1
    clipped = stats.t_interval([0.80, 0.99], bounds=metric_bounds("accuracy"))
    assert (clipped.low, clipped.high) == (0.0, 1.0) and clipped.mean == raw.mean and clipped.sd == raw.sd
    assert metric_bounds("false_alarms_per_1000") == (0.0, 1000.0)
    inside = stats.t_interval([0.90, 0.91], bounds=(0.0, 1.0))
    assert (inside.low, inside.high) == (stats.t_interval([0.90, 0.91]).low, stats.t_interval([0.90, 0.91]).high)


def test_wilson_interval_known_values():
    # textbook values (Newcombe 1998 / Agresti-Coull): 0/10 -> [0, 0.2775], 5/10 -> [0.2366, 0.7634]
    assert stats.wilson_interval(0, 10) == (pytest.approx(0.0, abs=1e-12), pytest.approx(0.2775, abs=1e-4))
    lo, hi = stats.wilson_interval(5, 10)
    assert lo == pytest.approx(0.2366, abs=1e-4) and hi == pytest.approx(0.7634, abs=1e-4)
    lo, hi = stats.wilson_interval(146, 148)
    assert lo < 146 / 148 < hi <= 1.0 and hi - lo > 0.03  # two errors in 148: the study's AlexNet
    assert stats.wilson_interval(0, 0) is None
    with pytest.raises(ValueError):
        stats.wilson_interval(5, 4)


def test_mcnemar_exact_and_paired_t():
    assert stats.mcnemar_exact(0, 0) == 1.0
    assert stats.mcnemar_exact(0, 6) == pytest.approx(2 * 0.5 ** 6)
    assert stats.mcnemar_exact(3, 3) == 1.0
    p = stats.paired_t([0.02, 0.03, 0.01])
    assert p["mean"] == pytest.approx(0.02)
    assert p["p"] == pytest.approx(st.ttest_1samp([0.02, 0.03, 0.01], 0).pvalue)


# ----------------------------------------------------------------------------------------- aggregate
def test_aggregation_of_fake_runs():
    runs = [fake_run(*g) for g in GRID]
    groups = aggregate.by_arch(runs, ["alexnet", "squeezenet1_1"])
    assert list(groups) == ["alexnet", "squeezenet1_1"]
    s = aggregate.summarize(groups["squeezenet1_1"])
    acc = s["metrics"]["accuracy"]
    assert acc["values"] == [0.95, 0.9, 1.0]
    assert acc["seeds"]["mean"] == pytest.approx(0.95) and acc["seeds"]["sd"] == pytest.approx(0.05)
    half = st.t.ppf(0.975, 2) * 0.05 / math.sqrt(3)
    assert acc["seeds"]["ci95"] == [pytest.approx(0.95 - half), 1.0]  # 0.95 + half > 1: clipped to the range
    assert acc["pooled"]["k"] == 57 and acc["pooled"]["n"] == 60
    assert acc["pooled"]["ci95"] == pytest.approx(list(stats.wilson_interval(57, 60)))
    assert s["metrics"]["sensitivity"]["pooled"]["k"] == 28 and s["metrics"]["sensitivity"]["pooled"]["n"] == 30
    assert s["metrics"]["f1"]["pooled"] is None  # no binomial form
    assert s["confusion_matrix"] == [[29, 1], [2, 28]]
    real = aggregate.summarize(groups["alexnet"], "test_realistic", aggregate.REALISTIC_METRICS)
    fa = real["metrics"]["false_alarms_per_1000"]
    assert fa["pooled"]["k"] == 18 and fa["pooled"]["n"] == 8 * 50 + 7 * 50 + 9 * 50 + 18
    labels, probs = aggregate.pooled_scores(groups["alexnet"])
    assert labels.shape == probs.shape == (60,) and labels.sum() == 30


def test_paired_comparison_counts_disagreements_on_same_images():
    runs = [fake_run(*g) for g in GRID]
    (pair,) = aggregate.paired_comparisons(aggregate.by_arch(runs, ["squeezenet1_1", "alexnet"]))
    assert (pair["a"], pair["b"], pair["seeds"]) == ("squeezenet1_1", "alexnet", [0, 1, 2])
    assert pair["diff_mean"] == pytest.approx(np.mean([0.95 - 0.8, 0.9 - 0.75, 1.0 - 0.8]))
    # per seed, count images right for one and wrong for the other from the fake prediction layout
    def correct(tn, fp, fn, tp):
        return np.array([1] * tn + [0] * fp + [0] * fn + [1] * tp, bool)
    only_a = only_b = 0
    for s in range(3):
        ca, cb = correct(*GRID[s][2:]), correct(*GRID[3 + s][2:])
        only_a += int((ca & ~cb).sum())
        only_b += int((cb & ~ca).sum())
    assert (pair["only_a_right"], pair["only_b_right"]) == (only_a, only_b)
    assert pair["mcnemar_p"] == pytest.approx(stats.mcnemar_exact(only_a, only_b))


# -------------------------------------------------------------------------------- report and figures
def test_report_from_json_alone_writes_tables_figures_and_docs_block(tmp_path):
    results = tmp_path / "results"
    write_runs(results, [fake_run(*g) for g in GRID])
    docs = tmp_path / "results.md"
    docs.write_text("# Results\n\nhand-written text\n\n<!-- BEGIN generated:paper-cpu -->\nold\n<!-- END generated:paper-cpu -->\n\ntail\n")
    agg = report.build(results, "paper-cpu", docs=docs)
    out = results / "paper-cpu"
    for name in ("fig10_confusion.png", "fig11_metrics.png", "fig12_roc.png"):
        data = (out / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    md = (out / "report.md").read_text()
    assert "| SqueezeNet 1.1 | scratch | 3 | 0.9500 ± 0.0500" in md
    assert "↳ study (AlexNet) | ImageNet | 1 | 0.9865" in md
    assert "(57/60)" in md and "False alarms / 1000 healthy" in md
    text = docs.read_text()
    assert "hand-written text" in text and "tail" in text and "old" not in text and text.count("BEGIN generated") == 1
    assert "../" + (out / "fig12_roc.png").as_posix() in text
    assert agg["balanced"]["alexnet"]["confusion_matrix"] == [[24, 6], [7, 23]]
    # regenerating from the same JSON gives the same numbers
    again = report.build(results, "paper-cpu", docs=docs)
    assert json.dumps(again, sort_keys=True) == json.dumps(agg, sort_keys=True)


def test_time_to_accuracy_pays_a_shared_pretraining_once_and_takes_the_median_fine_tuning(tmp_path):
    from hotspot_jax.reproduce import tables

    runs = [fake_run(*g) for g in GRID]
    for i, r in enumerate(runs):  # squeezenet: shared 600 s pretraining; alexnet: 300 s per seed
        r["timing"].update(train_seconds=60.0 * (i % 3 + 1), pretrain_seconds=600.0 if i < 3 else 300.0 + 60 * i,
                           pretrain_shared_across_seeds=i < 3)
    write_runs(tmp_path, runs)
    rows = {r["arch"]: r for r in report.build(tmp_path, "paper-cpu")["time_to_accuracy"]}
    sq, ax = rows["squeezenet1_1"], rows["alexnet"]
    assert (sq["pretrain_minutes"], sq["finetune_minutes"], sq["pretrain_shared"]) == (10.0, 2.0, True)
    assert (ax["pretrain_minutes"], ax["finetune_minutes"], ax["pretrain_shared"]) == (9.0, 2.0, False)  # 480/540/600 s
    assert sq["test_accuracy"] == pytest.approx(0.95) and sq["seeds"] == 3
    table = tables.time_to_accuracy_table(list(rows.values()), target_minutes=22)
    assert "| 10.0 (shared by every seed) | 2.0 | 12.0 | 5.3 |" in table  # 10 / 3 seeds + 2
    assert "| 9.0 | 2.0 | 11.0 | 11.0 |" in table  # a per-seed pretraining is paid by every seed
    assert "23.0 (over the 22 min target) | 16.3 |" in table
    assert "23.0 (within the 30 min target)" in tables.time_to_accuracy_table(list(rows.values()), 30)
    assert "Time to accuracy" in (tmp_path / "paper-cpu" / "report.md").read_text()


def test_report_errors_name_the_problem(tmp_path):
    with pytest.raises(DataError, match="no finished runs of recipe 'best'"):
        report.build(tmp_path, "best")
    bad = tmp_path / "best" / "alexnet-s0.json"
    bad.parent.mkdir(parents=True)
    bad.write_text("{not json")
    with pytest.raises(DataError, match="alexnet-s0.json: unreadable run summary"):
        load_results(tmp_path, "best")
    with pytest.raises(ConfigError, match="unknown --recipe 'nope'"):
        get_recipe("nope")


def test_cli_report_only_trains_nothing(tmp_path, capsys):
    from hotspot_jax.cli import run_cli
    from hotspot_jax.reproduce.cli import main

    results = tmp_path / "results"
    write_runs(results, [fake_run(*g) for g in GRID])
    code = run_cli(main, ["--recipe", "paper-cpu", "--report-only", "--results-dir", str(results), "--docs", "none"])
    assert code == 0 and (results / "paper-cpu" / "report.md").is_file()
    code = run_cli(main, ["--recipe", "best", "--report-only", "--results-dir", str(results), "--docs", "none"])
    assert code == 2 and "error: no finished runs of recipe 'best'" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------- runner
def _fake_train_factory(calls):
    """A stand-in for hotspot_jax.train.loop.train that writes a finished run's files."""

    def fake_train(cfg, progress=True, log=print, dataset=None):
        calls.append((cfg.arch, cfg.seed))
        wd = Path(cfg.workdir)
        (wd / "evaluation").mkdir(parents=True, exist_ok=True)
        (wd / "config.json").write_text(json.dumps({"run": {**cfg.__dict__}, "initialisation": "scratch",
                                                    "steps_per_epoch": 3, "environment": {"backend": "cpu"}}))
        (wd / "manifest.json").write_text(json.dumps({"counts": {"test": {"Hotspot": 2, "No-Anomaly": 2}}}))
        (wd / "metrics.jsonl").write_text("".join(json.dumps({"epoch": e, "train_seconds": 2.0, "images_per_second": 50.0,
                                                              "val_accuracy": 0.5}) + "\n" for e in (1, 2)))
        m = _metrics(2, 0, 1, 1)
        (wd / "test_metrics.json").write_text(json.dumps({"checkpoint": {"epoch": 2}, "test": m,
                                                          "test_realistic": _metrics(20, 1, 1, 1)}))
        (wd / "evaluation" / "test_predictions.csv").write_text(
            "id,label,hotspot_probability,predicted\n1,No-Anomaly,0.1,No-Anomaly\n2,No-Anomaly,0.2,No-Anomaly\n"
            "3,Hotspot,0.3,No-Anomaly\n4,Hotspot,0.8,Hotspot\n")
        return SimpleNamespace(interrupted=False, workdir=wd)

    return fake_train


def test_grid_skips_finished_runs_and_reruns_stale_ones(tmp_path):
    calls: list = []
    recipe = Recipe(name="tiny", description="test", image_size=32, epochs=2)
    kw = dict(runs_dir=tmp_path / "runs", results_dir=tmp_path / "results", dataset=object(), progress=False,
              log=lambda m: None, train_fn=_fake_train_factory(calls))
    rep = run_grid(recipe, ["squeezenet", "alexnet"], [0, 1], **kw)
    assert sorted(calls) == [("alexnet", 0), ("alexnet", 1), ("squeezenet1_1", 0), ("squeezenet1_1", 1)]
    assert len(rep["done"]) == 4 and rep["skipped"] == []
    summary = json.loads(result_path(tmp_path / "results", "tiny", "alexnet", 1).read_text())
    assert summary["test"]["accuracy"] == 0.75 and summary["test_predictions"]["pred"] == [0, 0, 0, 1]
    assert summary["timing"]["train_seconds"] == 4.0 and summary["machine"]["cpu_count"] >= 1
    assert "data" not in summary["train_config"] and summary["recipe"]["fingerprint"] == recipe.fingerprint()
    calls.clear()
    rep = run_grid(recipe, ["squeezenet1_1", "alexnet"], [0, 1, 2], **kw)
    assert sorted(calls) == [("alexnet", 2), ("squeezenet1_1", 2)] and len(rep["skipped"]) == 4
    # a changed recipe makes the stored summaries stale: they are redone
    changed = Recipe(name="tiny", description="test", image_size=32, epochs=3)
    assert not is_finished(result_path(tmp_path / "results", "tiny", "alexnet", 0), changed)
    calls.clear()
    run_grid(changed, ["alexnet"], [0], **kw)
    assert calls == [("alexnet", 0)]


def test_recipes_are_the_study_settings():
    paper, cpu = RECIPES["paper"], RECIPES["paper-cpu"]
    cfg = paper.train_config("alexnet", 3, "/tmp/x").resolve()
    assert (cfg.image_size, cfg.epochs, cfg.batch_size, cfg.lr, cfg.momentum, cfg.seed) == (227, 40, 32, 1e-3, 0.9, 3)
    assert paper.train_config("resnet50", 0, "/tmp/x").resolve().image_size == 224
    assert cpu.train_config("googlenet", 0, "/tmp/x").resolve().image_size == cpu.image_size == 32
    assert cpu.train_config("alexnet", 0, "/tmp/x").resolve().image_size == 63  # AlexNet's minimum input
    assert paper.lever_options() == {} and cpu.lever_options() == {}
    assert paper.fingerprint() != cpu.fingerprint()


def test_overrides_make_a_named_variant_of_a_recipe():
    from hotspot_jax.reproduce.recipes import with_overrides

    best = RECIPES["best"]
    v = with_overrides(best, ["pretrain_epochs=0", "lr=0.001", "online_augment=none"])
    assert v.name == "best+lr=0.001+online_augment=none+pretrain_epochs=0"
    assert (v.pretrain_epochs, v.lr, v.online_augment, v.epochs) == (0, 0.001, "none", best.epochs)
    assert v.fingerprint() != best.fingerprint() and with_overrides(best, []) is best
    assert with_overrides(best, ["image_size=none"]).image_size is None
    with pytest.raises(ConfigError, match="--set expects KEY=VALUE"):
        with_overrides(best, ["colour=red"])
    with pytest.raises(ConfigError, match="--set epochs: 'many' is not a valid int"):
        with_overrides(best, ["epochs=many"])


def test_study_accuracies_are_whole_images_of_its_148_test_set():
    from hotspot_jax.reproduce.study import STUDY_ARCHS, STUDY_TABLE3, STUDY_TEST_SIZE

    for arch in STUDY_ARCHS:
        acc = STUDY_TABLE3[arch]["accuracy"]
        assert acc is not None, arch
        correct = round(acc * STUDY_TEST_SIZE)
        assert round(correct / STUDY_TEST_SIZE, 4) == acc, arch  # a 4-decimal rounding of k/148


def test_lever_table_compares_each_run_with_the_baseline_on_the_same_images(tmp_path, capsys):
    from hotspot_jax.reproduce.cli import main
    from hotspot_jax.reproduce.recipes import with_overrides

    results = tmp_path / "results"
    base, lever = RECIPES["best"], with_overrides(RECIPES["best"], ["image_size=32"])
    # same seed, so the same test ids: the lever gets 2 images right that the base missed, loses none
    runs = [fake_run("shufflenet_v2_x1_0", 0, 9, 1, 3, 7, recipe=base),
            fake_run("shufflenet_v2_x1_0", 0, 10, 0, 2, 8, recipe=lever)]
    for run, recipe in zip(runs, (base, lever)):
        run["train_config"]["image_size"] = recipe.image_size  # the size the run trained at
    write_runs(results, runs)
    docs = tmp_path / "results.md"
    docs.write_text("intro\n")
    assert main(["--lever-table", "best", lever.name, "--results-dir", str(results), "--docs", str(docs)]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| `")]
    assert len(rows) == 2
    assert "| 48 px, 12 ep, lr 0.01, cosine, flip-shift, pretrain 5 ep | 0.8000 |" in rows[0] and rows[0].endswith("| — |")
    assert "32 px" in rows[1] and "| 0.9000 |" in rows[1]
    assert f"2 / 0, p = {stats.mcnemar_exact(2, 0):.3f}" in rows[1]
    assert "<!-- BEGIN generated:levers -->" in docs.read_text()
    # an explicit baseline: its run of the same network and seed comes first, as the reference row
    write_runs(results, [fake_run("shufflenet_v2_x1_0", 0, 8, 2, 3, 7), fake_run("alexnet", 0, 8, 2, 3, 7)])
    assert main(["--lever-table", lever.name, "--lever-baseline", "paper-cpu", "--results-dir", str(results),
                 "--docs", "none"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| `")]
    assert len(rows) == 2 and rows[0].startswith("| `paper-cpu` | ShuffleNetV2 |") and rows[0].endswith("| — |")
    assert f"3 / 0, p = {stats.mcnemar_exact(3, 0):.3f}" in rows[1]
    with pytest.raises(DataError, match="no run summaries"):
        main(["--lever-table", "best+nothing", "--results-dir", str(results), "--docs", "none"])


def test_a_stale_work_directory_is_set_aside_not_fatal(tmp_path):
    from hotspot_jax.reproduce.runner import set_aside_stale_workdir

    recipe = RECIPES["paper-cpu"]
    workdir = tmp_path / "runs" / "paper-cpu" / "squeezenet1_1-s0"
    cfg = recipe.train_config("squeezenet1_1", 0, str(workdir))
    assert set_aside_stale_workdir(workdir, cfg) is None  # nothing there yet
    workdir.mkdir(parents=True)
    (workdir / "config.json").write_text(json.dumps({"run": cfg.resolve().to_dict()}))
    assert set_aside_stale_workdir(workdir, cfg) is None and workdir.is_dir()  # the same run: resumed later
    old = {**cfg.resolve().to_dict(), "image_size": 64}  # the recipe changed since
    (workdir / "config.json").write_text(json.dumps({"run": old}))
    messages = []
    moved = set_aside_stale_workdir(workdir, cfg, messages.append)
    assert moved is not None and moved.name.startswith("squeezenet1_1-s0.stale-") and (moved / "config.json").is_file()
    assert not workdir.exists() and "image_size: 64 -> 32" in messages[0]


def test_shared_errors_count_images_wrong_by_k_networks_and_score_the_ensemble():
    runs = [fake_run(*g) for g in GRID]
    rows = aggregate.shared_errors(aggregate.by_arch(runs, ["squeezenet1_1", "alexnet"]))
    assert [r["seed"] for r in rows] == [0, 1, 2] and all(r["n_images"] == 20 for r in rows)
    # seed 0: squeezenet wrong on image 10 (a missed hotspot); alexnet wrong on 8, 9 (false alarms), 10, 11
    assert rows[0]["wrong_by_k"] == [16, 3, 1] and rows[0]["wrong_by_majority"] == 1
    assert rows[0]["wrong_by_majority_hotspots"] == 1
    assert rows[0]["best_single_accuracy"] == pytest.approx(0.95) and rows[0]["right_by_any"] == pytest.approx(0.95)
    # the fake probabilities are 0.9/0.1, so the mean is 0.5 (a hotspot call) where the two disagree
    assert rows[0]["ensemble_accuracy"] == pytest.approx((20 - 1 - 2) / 20)
    assert aggregate.shared_errors({"alexnet": runs[3:4]}) == []
    md = report.tables.shared_errors_table(rows)
    assert "| 0 | 2 | 20 | 16 | 3 | 1 | 1 (1) | 0.8500 | 0.9500 | 0.9500 |" in md
