"""``reproduce.py --cv K``: a recipe's (architecture, seed) runs as K cross-validation fold runs inside each seed's
training pool (:mod:`hotspot_jax.data.cv`), their out-of-fold (OOF) validation metrics, and paired comparisons
of two recipes on them: a validation reading over every training hotspot (~347 + as many No-Anomaly per seed
instead of 74 + 74) for choosing levers, with the test sets never read.

Each fold is an ordinary run of the one training loop with the recipe's settings and ``cv_fold="k/K"``,
started (``init_from``) from the recipe's shared pretraining, which is trained once and reused, never per fold.
Work directories: ``<runs>/<recipe>/<arch>-s<seed>-cv<k>of<K>/``; fold summaries (the normal run summary, its
``test`` being the seed's validation split, plus the fold's validation predictions at 6 decimals):
``<results>/<recipe>/cv<K>/<arch>-s<seed>-f<k>.json``, skipped when finished with the recipe's fingerprint.
When the K folds of an (arch, seed) are done, ``<arch>-s<seed>-oof.json`` holds the metrics of their
concatenated validation predictions, and ``cv_summary.json``/``.md`` the means over seeds per network and overall.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from hotspot_jax.errors import ConfigError, DataError
from hotspot_jax.reproduce.recipes import Recipe

CV_FORMAT = "hotspot_jax.reproduce_cv/1"
TARGET_SENSITIVITY = 0.95  # the OOF specificity is read at the highest threshold with OOF sensitivity >= this
#: OOF metrics compared between recipes: (key, name in tables, higher is better)
OOF_METRICS = (("roc_auc", "OOF ROC AUC", True), ("accuracy", "OOF accuracy at 0.5", True),
               ("log_loss", "OOF log loss", False),
               ("specificity_at_sensitivity_0.95", "OOF specificity at sensitivity >= 0.95", True))
#: the same OOF metrics from each fold's last-epoch checkpoint: no checkpoint choice saw these scores (the best
#: checkpoint is chosen on the fold's own validation images, which inflates the OOF accuracy read at it)
OOF_LAST = "oof_last_epoch"
#: the seed's validation split (each fold's "test"), mean over the folds
VAL_SPLIT_METRICS = (("roc_auc", "val split ROC AUC (fold mean)", True), ("accuracy", "val split accuracy (fold mean)", True))


def cv_dir(results_dir: str | Path, recipe: str, folds: int) -> Path:
    return Path(results_dir) / recipe / f"cv{folds}"


def fold_result_path(results_dir: str | Path, recipe: str, arch: str, seed: int, k: int, folds: int) -> Path:
    return cv_dir(results_dir, recipe, folds) / f"{arch}-s{seed}-f{k}.json"


def oof_path(results_dir: str | Path, recipe: str, arch: str, seed: int, folds: int) -> Path:
    return cv_dir(results_dir, recipe, folds) / f"{arch}-s{seed}-oof.json"


def fold_run_dir(runs_dir: str | Path, recipe: str, arch: str, seed: int, k: int, folds: int) -> Path:
    return Path(runs_dir) / recipe / f"{arch}-s{seed}-cv{k}of{folds}"


def check_cv_recipe(recipe: Recipe, folds: int, archs: Iterable[str] = (), pretrained: dict | None = None) -> None:
    """ConfigError in one line when ``recipe`` cannot be cross-validated leak-free: fewer than 2 folds, another
    task than hotspot, extra No-Anomaly images (they come from the realistic test set), or an in-domain
    pretraining per seed (it trained on the seed's training pool, which the folds validate on)."""
    if isinstance(folds, bool) or not isinstance(folds, int) or folds < 2:
        raise ConfigError(f"--cv K: K must be an integer of at least 2 (K folds of the training pool), got {folds!r}")
    if recipe.task != "hotspot":
        raise ConfigError(f"--cv: cross-validation splits the hotspot training pool; recipe {recipe.name!r} is for "
                          f"the {recipe.task} task")
    if recipe.no_anomaly_ratio != 1.0:
        raise ConfigError(f"--cv: recipe {recipe.name!r} has no_anomaly_ratio={recipe.no_anomaly_ratio:g}, whose extra "
                          "No-Anomaly images come from the realistic test set, which a fold does not have")
    per_seed = [a for a in archs if not (pretrained or {}).get(a)] if archs else ["any"]
    if recipe.pretrain_epochs and recipe.pretrain_pool == "seed" and per_seed:
        raise ConfigError(f"--cv: recipe {recipe.name!r} pretrains per seed (pretrain_pool=seed) on the seed's training "
                          "pool, which the folds validate on: not leak-free; use a shared pretraining "
                          "(--set no_anomaly_pools=fixed pretrain_pool=shared) or no pretraining")


def _full_val_predictions(workdir: Path) -> dict[str, list]:
    """The fold's validation predictions at the CSV's 6 decimals (the normal summary keeps 4), for the OOF log loss."""
    from hotspot_jax.reproduce.runner import read_predictions

    p = read_predictions(workdir / "evaluation" / "val_predictions.csv")
    return {"ids": p["ids"], "labels": p["labels"], "probs": p["probs"]}


def _last_epoch_val_predictions(workdir: Path, dataset) -> dict[str, Any]:
    """The fold's validation predictions from its last-epoch checkpoint (the run's test-time augmentation, 6
    decimals, the epoch recorded): scores that chose nothing, unlike the best checkpoint's (tests/test_cv.py)."""
    from hotspot_jax.data import SplitManifest, materialize
    from hotspot_jax.train.checkpoint import LATEST_DIR
    from hotspot_jax.train.restore import load_trained

    manifest = SplitManifest.from_json(Path(workdir) / "manifest.json")
    val = materialize(dataset, dataclasses.replace(manifest, splits={"val": manifest.splits["val"]}))["val"]
    tm = load_trained(Path(workdir) / LATEST_DIR)
    probs = tm.predict_proba(val.images, progress=False)
    return {"epoch": tm.epoch, "ids": [str(i) for i in val.ids], "labels": [int(y) for y in val.labels],
            "probs": [round(float(p), 6) for p in probs]}


def run_cv_grid(recipe: Recipe, archs: Iterable[str], seeds: Iterable[int], folds: int, *, data: str | None = None,
                dataset=None, runs_dir: str | Path = "runs/reproduce", results_dir: str | Path = "results",
                pretrained: dict[str, str] | None = None, progress: bool = True, log: Callable[[str], None] = print,
                train_fn: Callable | None = None) -> dict[str, Any]:
    """Train every unfinished fold of every (arch, seed) of ``recipe`` (resumable), write each (arch, seed)'s OOF
    summary once its K folds are done, then the recipe's cv summary; returns the folds done, skipped and
    interrupted, and under ``summary`` the recipe's cv summary (None before any (arch, seed) has its K folds).
    ``train_fn`` replaces the training loop (tests)."""
    import architectures

    from hotspot_jax.reproduce.runner import (INTERRUPTED, is_finished, result_line, start_run,
                                              set_aside_stale_workdir, summarize_run, write_json)
    from hotspot_jax.train.checkpoint import LATEST_DIR

    if train_fn is None:
        from hotspot_jax.train.loop import train as train_fn
    archs = [architectures.get(a).name for a in archs]
    seeds = list(seeds)
    check_cv_recipe(recipe, folds, archs, pretrained)
    report: dict[str, Any] = {"done": [], "skipped": [], "interrupted": []}
    grid = [(a, s, k) for s in seeds for a in archs for k in range(1, folds + 1)]
    todo = [(a, s, k) for a, s, k in grid if not is_finished(fold_result_path(results_dir, recipe.name, a, s, k, folds), recipe)]
    for a, s, k in grid:
        if (a, s, k) not in todo:
            report["skipped"].append(f"{a}-s{s}-f{k}")
            log(f"skip {recipe.name}/cv{folds}/{a}-s{s}-f{k}: finished")
    # finished folds written before the last-epoch predictions were recorded: add them from the fold's run
    backfill = [(a, s, k) for a, s, k in grid if (a, s, k) not in todo
                and "val_predictions_last" not in json.loads(fold_result_path(results_dir, recipe.name, a, s, k,
                                                                                 folds).read_text())
                and (fold_run_dir(runs_dir, recipe.name, a, s, k, folds) / LATEST_DIR).is_dir()]
    if (todo or backfill) and dataset is None:
        from hotspot_jax.data import load_dataset

        dataset = load_dataset(data, progress=progress)
    for a, s, k in backfill:
        path = fold_result_path(results_dir, recipe.name, a, s, k, folds)
        summary = json.loads(path.read_text())
        summary["val_predictions_last"] = _last_epoch_val_predictions(fold_run_dir(runs_dir, recipe.name, a, s, k, folds),
                                                                      dataset)
        write_json(path, summary, compact_lists=True)
        log(f"added the last-epoch validation predictions to {path}")
    for n, (arch, seed, k) in enumerate(todo):
        name = f"{arch}-s{seed}-f{k}"
        workdir = fold_run_dir(runs_dir, recipe.name, arch, seed, k, folds)
        log(f"[{n + 1}/{len(todo)}] {recipe.name}/{arch}-s{seed} fold {k} of {folds} -> {workdir}")
        start = time.perf_counter()
        extra, weights, init_from = start_run(recipe, arch, seed, name, report, pretrained=pretrained,
                                              runs_dir=runs_dir, data=data, dataset=dataset, progress=progress,
                                              log=log, train_fn=train_fn)
        if init_from is INTERRUPTED:
            break
        cfg = dataclasses.replace(recipe.train_config(arch, seed, str(workdir), data, pretrained=weights,
                                                      init_from=init_from), cv_fold=f"{k}/{folds}")
        set_aside_stale_workdir(workdir, cfg, log)
        if train_fn(cfg, progress=progress, log=log, dataset=dataset).interrupted:
            report["interrupted"].append(name)
            log(f"interrupted {recipe.name}/{name}; rerun the same command to continue")
            break
        extra["timing"]["wall_seconds_last_session"] = round(time.perf_counter() - start, 1)
        extra["cv_fold"] = {"fold": k, "folds": folds,
                            "test_is": "the seed's validation split (the test sets are not read)"}
        extra["val_predictions"] = _full_val_predictions(workdir)
        extra["val_predictions_last"] = _last_epoch_val_predictions(workdir, dataset)
        summary = summarize_run(workdir, recipe, arch, seed, extra)
        out = fold_result_path(results_dir, recipe.name, arch, seed, k, folds)
        write_json(out, summary, compact_lists=True)
        report["done"].append(name)
        log(f"wrote {out}: fold validation accuracy {summary['operating_point']['validation_at_0.5']['accuracy']:.4f}"
            if summary.get("operating_point") else f"wrote {out}: {result_line(summary)}")
    report["summary"] = summarize_cv(recipe, archs, seeds, folds, results_dir, log)
    return report


def summarize_cv(recipe: Recipe, archs: Iterable[str], seeds: Iterable[int], folds: int, results_dir: str | Path,
                 log: Callable[[str], None] = print) -> dict[str, Any] | None:
    """(Re)write the OOF summary of every (arch, seed) whose K fold summaries are finished, then the recipe's
    cv summary; returns the latter (None when no (arch, seed) has all its folds yet)."""
    from hotspot_jax.reproduce.runner import is_finished, write_json

    for arch, seed in [(a, s) for s in seeds for a in archs]:
        paths = [fold_result_path(results_dir, recipe.name, arch, seed, k, folds) for k in range(1, folds + 1)]
        if not all(is_finished(p, recipe) for p in paths):
            continue
        oof = oof_summary([json.loads(p.read_text()) for p in paths])
        write_json(oof_path(results_dir, recipe.name, arch, seed, folds), oof, compact_lists=True)
        m = oof["oof"]
        log(f"{recipe.name}/{arch}-s{seed}: OOF over {m['n']} images: ROC AUC {_f(m['roc_auc'])}, accuracy "
            f"{_f(m['accuracy'])}, log loss {_f(m['log_loss'])}, specificity at sensitivity >= "
            f"{TARGET_SENSITIVITY:g} {_f(m['specificity_at_sensitivity_0.95'])}")
    if not list(cv_dir(results_dir, recipe.name, folds).glob("*-oof.json")):
        return None
    return write_cv_summary(results_dir, recipe.name, folds)


def _f(x: float | None, digits: int = 4) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def oof_summary(fold_summaries: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The OOF metrics of one (arch, seed): its K folds' validation predictions concatenated (each image once;
    DataError otherwise) and scored as one set (ROC AUC, accuracy at 0.5, log loss, specificity at the highest
    threshold with sensitivity >= 0.95, all from the project's metric functions), plus the mean over folds of
    their "test" metrics, i.e. of the seed's validation split."""
    from hotspot_jax.evaluate import decision_threshold
    from hotspot_jax.evaluate.metrics import binary_metrics, log_loss

    if not fold_summaries:
        raise DataError("no fold summaries to combine")
    folds = sorted(fold_summaries, key=lambda s: s["cv_fold"]["fold"])
    first = folds[0]
    n_folds = first["cv_fold"]["folds"]
    if [s["cv_fold"]["fold"] for s in folds] != list(range(1, n_folds + 1)) or \
            {(s["arch"], s["seed"], s["cv_fold"]["folds"]) for s in folds} != {(first["arch"], first["seed"], n_folds)}:
        raise DataError(f"the fold summaries of {first['arch']}-s{first['seed']} are not folds 1 to {n_folds} of one run")
    starts = {tuple((s.get("train_config") or {}).get(k) for k in ("init_from_checkpoint", "image_size", "tta")) for s in folds}
    if len(starts) > 1:  # e.g. a pretraining rerun between folds: the OOF set would mix two models' starting points
        raise DataError(f"the folds of {first['arch']}-s{first['seed']} differ in starting checkpoint, input size or "
                        f"test-time augmentation: {sorted(map(str, starts))}")
    def pooled(key):
        ids, labels, probs = [], [], []
        for s in folds:
            p = s[key]
            ids += p["ids"]
            labels += p["labels"]
            probs += p["probs"]
        if len(set(ids)) != len(ids):
            raise DataError(f"{first['arch']}-s{first['seed']}: an image is in the validation of two folds")
        m = binary_metrics(labels, probs, 0.5)
        point = decision_threshold.choose(labels, probs, TARGET_SENSITIVITY)
        oof = {"n": m["n"], "n_pos": m["n_pos"], "n_neg": m["n_neg"], "roc_auc": m["roc_auc"], "accuracy": m["accuracy"],
               "log_loss": log_loss(labels, probs), "sensitivity": m["sensitivity"], "specificity": m["specificity"],
               "specificity_at_sensitivity_0.95": point["validation_specificity"],
               "threshold_at_sensitivity_0.95": point["threshold"]}
        return ids, labels, probs, oof

    ids, labels, probs, oof = pooled("val_predictions")
    last = None
    if all("val_predictions_last" in s for s in folds):
        last_ids, last_labels, _, last = pooled("val_predictions_last")
        if sorted(zip(last_ids, last_labels)) != sorted(zip(ids, labels)):
            raise DataError(f"{first['arch']}-s{first['seed']}: the last-epoch and best-checkpoint validation "
                            "predictions are not of the same images")
        last["epochs"] = [s["val_predictions_last"].get("epoch") for s in folds]
    keys = ("accuracy", "roc_auc", "loss", "sensitivity", "specificity")
    test_mean = {k: _mean([s["test"].get(k) for s in folds]) for k in keys}
    return {
        "format": CV_FORMAT,
        "recipe": first["recipe"],
        "arch": first["arch"],
        "seed": first["seed"],
        "folds": n_folds,
        "oof": oof,
        OOF_LAST: last,  # None when a fold summary predates the last-epoch predictions
        "val_split_fold_mean": test_mean,  # each fold's "test": the seed's validation split
        "per_fold": [{"fold": s["cv_fold"]["fold"], "best_checkpoint": s.get("best_checkpoint"),
                      "val": {k: (s.get("operating_point") or {}).get("validation_at_0.5", {}).get(k)
                              for k in ("n", "accuracy", "roc_auc")},
                      "val_split": {k: s["test"].get(k) for k in ("n", "accuracy", "roc_auc")}} for s in folds],
        "train_seconds": round(sum(float(s.get("timing", {}).get("train_seconds") or 0) for s in folds), 1),
        "oof_predictions": {"ids": ids, "labels": labels, "probs": probs},
    }


def _mean(values: Sequence[float | None]) -> float | None:
    vals = [float(v) for v in values if v is not None]
    return float(np.mean(vals)) if vals and len(vals) == len(values) else None


def load_oof(results_dir: str | Path, folder: str, folds: int) -> list[dict[str, Any]]:
    """The OOF summaries of results folder ``folder`` (a recipe or variant) for K = ``folds``, sorted by (arch, seed)."""
    out = []
    for path in sorted(cv_dir(results_dir, folder, folds).glob("*-oof.json")):
        try:
            d = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            raise DataError(f"{path}: unreadable OOF summary ({err})") from None
        if d.get("format") != CV_FORMAT:
            raise DataError(f"{path}: not an OOF summary (format {d.get('format')!r}, expected {CV_FORMAT!r})")
        out.append(d)
    return sorted(out, key=lambda d: (d["arch"], d["seed"]))


def cv_summary(results_dir: str | Path, folder: str, folds: int) -> dict[str, Any]:
    """Means of the OOF metrics and of the validation split's fold means: per network over its seeds, and
    ``overall`` over every (network, seed)."""
    runs = load_oof(results_dir, folder, folds)
    if not runs:
        raise DataError(f"no OOF summaries under {cv_dir(results_dir, folder, folds)}")

    def means(rs):
        return {"seeds": sorted(r["seed"] for r in rs), "n_runs": len(rs),
                "oof": {k: _mean([r["oof"].get(k) for r in rs]) for k, _, _ in OOF_METRICS},
                OOF_LAST: {k: _mean([(r.get(OOF_LAST) or {}).get(k) for r in rs]) for k, _, _ in OOF_METRICS},
                "val_split_fold_mean": {k: _mean([r["val_split_fold_mean"].get(k) for r in rs])
                                        for k, _, _ in VAL_SPLIT_METRICS}}

    archs = sorted({r["arch"] for r in runs})
    return {"format": CV_FORMAT, "recipe": folder, "folds": folds,
            "per_arch": {a: means([r for r in runs if r["arch"] == a]) for a in archs}, "overall": means(runs)}


def cv_table(summary: dict[str, Any]) -> str:
    """Markdown: one row per network and one for all, the means of :func:`cv_summary`."""
    from hotspot_jax.reproduce.study import display_name
    from hotspot_jax.reproduce.tables import _table

    header = ["Network", "Seeds"] + [name for _, name, _ in OOF_METRICS] + ["OOF ROC AUC, last epoch"] + \
        [name for _, name, _ in VAL_SPLIT_METRICS]
    rows = []
    for label, m in [*((display_name(a), m) for a, m in summary["per_arch"].items()), ("All", summary["overall"])]:
        rows.append([label, " ".join(map(str, m["seeds"])) if label != "All" else str(m["n_runs"]) + " runs",
                     *(_f(m["oof"][k]) for k, _, _ in OOF_METRICS), _f((m.get(OOF_LAST) or {}).get("roc_auc")),
                     *(_f(m["val_split_fold_mean"][k]) for k, _, _ in VAL_SPLIT_METRICS)])
    return (f"`{summary['recipe']}`, {summary['folds']}-fold cross-validation inside each seed's training pool "
            "(means over seeds; OOF = the folds' validation predictions concatenated):\n\n" + _table(header, rows))


def write_cv_summary(results_dir: str | Path, folder: str, folds: int) -> dict[str, Any]:
    """Write ``cv_summary.json`` and ``cv_summary.md`` into the recipe's cv<K> folder; return the summary."""
    from hotspot_jax.reproduce.runner import write_json
    from hotspot_jax.train.files import write_text_atomic

    summary = cv_summary(results_dir, folder, folds)
    out = cv_dir(results_dir, folder, folds)
    write_json(out / "cv_summary.json", summary)
    write_text_atomic(out / "cv_summary.md", cv_table(summary) + "\n")
    return summary


def cv_folds_of(results_dir: str | Path, folder: str) -> list[int]:
    """The K of every cv<K> folder of a results folder that holds OOF summaries."""
    base = Path(results_dir) / folder
    out = []
    for d in base.glob("cv*"):
        if d.is_dir() and d.name[2:].isdigit() and any(d.glob("*-oof.json")):
            out.append(int(d.name[2:]))
    return sorted(out)


def cv_compare(results_dir: str | Path, folder_a: str, folder_b: str, folds: int | None = None) -> str:
    """Markdown: recipe ``folder_b`` against ``folder_a`` on the (arch, seed) pairs both have OOF summaries for:
    each one's mean OOF metrics, the mean paired difference (B - A) and in how many pairs B is better (log loss:
    lower is better), then one row per pair. ``folds`` picks the K when a folder has several."""
    from hotspot_jax.reproduce.study import display_name
    from hotspot_jax.reproduce.tables import _table

    if folds is None:
        common = sorted(set(cv_folds_of(results_dir, folder_a)) & set(cv_folds_of(results_dir, folder_b)))
        if not common:
            raise DataError(f"no cross-validation results shared by {folder_a} and {folder_b} under {results_dir} "
                            "(run reproduce.py --cv K for both first)")
        if len(common) > 1:
            raise ConfigError(f"{folder_a} and {folder_b} both have cross-validation with K in {common}; choose one "
                              "with --cv K")
        folds = common[0]
    a = {(r["arch"], r["seed"]): r for r in load_oof(results_dir, folder_a, folds)}
    b = {(r["arch"], r["seed"]): r for r in load_oof(results_dir, folder_b, folds)}
    pairs = sorted(a.keys() & b.keys())
    if not pairs:
        raise DataError(f"{folder_a} and {folder_b} have no (network, seed) with {folds}-fold OOF summaries in common")
    for p in pairs:  # a paired comparison: both recipes' OOF predictions are of the very same images
        ids_a, ids_b = (sorted(r[p].get("oof_predictions", {}).get("ids", ())) for r in (a, b))
        if ids_a != ids_b:
            raise DataError(f"{display_name(p[0])} seed {p[1]}: {folder_a} and {folder_b} have out-of-fold predictions "
                            "of different images (other folds); they cannot be compared pair by pair")
    metrics = [("oof", k, name, up) for k, name, up in OOF_METRICS] + \
              [(OOF_LAST, k, name + ", last epoch", up) for k, name, up in OOF_METRICS] + \
              [("val_split_fold_mean", k, name, up) for k, name, up in VAL_SPLIT_METRICS]
    rows = []
    for group, key, name, up in metrics:
        va = [(a[p].get(group) or {}).get(key) for p in pairs]
        vb = [(b[p].get(group) or {}).get(key) for p in pairs]
        if any(v is None for v in va + vb):
            rows.append([name, "n/a", "n/a", "n/a", "n/a"])
            continue
        diff = np.asarray(vb, float) - np.asarray(va, float)
        better = int((diff > 0).sum() if up else (diff < 0).sum())
        rows.append([name + ("" if up else " (lower is better)"), _f(float(np.mean(va))), _f(float(np.mean(vb))),
                     f"{float(np.mean(diff)):+.4f}", f"{better} of {len(pairs)}"])
    head = (f"{folds}-fold cross-validation: `{folder_b}` (B) against `{folder_a}` (A) over {len(pairs)} (network, "
            f"seed) pairs: {', '.join(f'{display_name(x)} s{s}' for x, s in pairs)}")
    summary = _table(["Metric", "A mean", "B mean", "Mean paired difference (B - A)", "Pairs where B is better"], rows)
    per_pair = []
    for p in pairs:
        per_pair.append([display_name(p[0]), str(p[1])] + [
            f"{_f(a[p]['oof'].get(k))} → {_f(b[p]['oof'].get(k))}" for k, _, _ in OOF_METRICS])
    detail = _table(["Network", "Seed"] + [f"{name} (A → B)" for _, name, _ in OOF_METRICS], per_pair)
    return head + "\n\n" + summary + "\n\n" + detail
