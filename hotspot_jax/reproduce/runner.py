"""Train a recipe's grid (architecture x seed) and keep one small JSON summary per finished run.

Work directories (checkpoints, full logs) go to ``<runs>/<recipe>/<arch>-s<seed>/`` and in-domain
pretrainings (ordinary ``classes12`` runs with ``leave_out="hotspot"``, which start the hotspot run with
``init_from``) to ``<runs>/pretrain/<arch>-s<seed>-<settings>/``, reused by every recipe with the same
pretraining settings (``runs/`` is git-ignored); the summary ``<results>/<recipe>/<arch>-s<seed>.json`` is written atomically after the
run's final test evaluation. A run whose summary exists with the recipe's fingerprint is skipped; an
unfinished work directory is resumed by the training loop, so the grid can be stopped and continued.
The summary holds the metrics of the recipe's task (:func:`summarize_run`: binary metrics for hotspot and
anomaly, the realistic test set for hotspot only; accuracy, macro-F1, per-class metrics and confusion
matrix for classes12), with per-image test predictions for paired comparisons.
"""

from __future__ import annotations

import csv
import json
import os
import platform
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable

from hotspot_jax.errors import ConfigError, DataError
from hotspot_jax.reproduce.recipes import Recipe

RUN_FORMAT = "hotspot_jax.reproduce_run/1"


def result_path(results_dir: str | Path, recipe: str, arch: str, seed: int) -> Path:
    """Where the summary of one run lives."""
    return Path(results_dir) / recipe / f"{arch}-s{seed}.json"


def run_dir(runs_dir: str | Path, recipe: str, arch: str, seed: int) -> Path:
    """The work directory of one run (checkpoints, logs; not committed)."""
    return Path(runs_dir) / recipe / f"{arch}-s{seed}"


def pretrain_dir(runs_dir: str | Path, recipe: Recipe, arch: str, seed: int) -> Path:
    """Where a run's in-domain pretraining lives: shared by every recipe with the same pretraining settings (and,
    with ``pretrain_pool="shared"``, by every seed)."""
    who = "shared" if recipe.pretrain_pool == "shared" else f"s{seed}"
    key = f"{arch}-{who}-classes12-{recipe.image_size or 'native'}px-e{recipe.pretrain_epochs}-lr{recipe.pretrain_lr:g}-{recipe.pretrain_online_augment}"
    if recipe.aspect != "square":
        key += f"-{recipe.aspect}"
    if recipe.no_anomaly_pools != "study":
        key += f"-{recipe.no_anomaly_pools}pools"
    if recipe.formula_epochs:
        key += f"-from-{formula_key(recipe)}"
    if recipe.ssl_epochs:
        key += f"-from-{ssl_key(recipe)}"
    return Path(runs_dir) / "pretrain" / key


def ssl_key(recipe: Recipe) -> str:
    """The settings of a self-supervised (SimCLR) pretraining, as they name its folders."""
    key = (f"simclr-{recipe.image_size or 'native'}px-e{recipe.ssl_epochs}-lr{recipe.ssl_lr:g}"
           f"-b{recipe.ssl_batch_size}")
    key += f"-mlp{recipe.ssl_projection_hidden}" if recipe.ssl_projection_hidden else ""
    return key + (f"-{recipe.aspect}" if recipe.aspect != "square" else "")


def ssl_dir(runs_dir: str | Path, recipe: Recipe, arch: str) -> Path:
    """Where a network's self-supervised pretraining run lives: one per network and settings, shared by every
    seed and recipe (its images are the shared pretraining pool's)."""
    return Path(runs_dir) / "pretrain" / f"{arch}-{ssl_key(recipe)}"


def formula_key(recipe: Recipe) -> str:
    """The settings of a formula-driven pretraining, as they name its folders."""
    key = (f"fractaldb-c{recipe.formula_classes}-n{recipe.formula_per_class}-{recipe.image_size or 'native'}px"
           f"-e{recipe.formula_epochs}-lr{recipe.pretrain_lr:g}-{recipe.pretrain_online_augment}")
    return key + (f"-{recipe.aspect}" if recipe.aspect != "square" else "")


def formula_images_dir(runs_dir: str | Path, recipe: Recipe) -> Path:
    """Where the fractal images of a formula-driven pretraining are written (once; they are made from seed 0)."""
    return Path(runs_dir) / "formula" / f"fractaldb-c{recipe.formula_classes}-n{recipe.formula_per_class}-s0"


def formula_dir(runs_dir: str | Path, recipe: Recipe, arch: str) -> Path:
    """Where a network's formula-driven pretraining run lives: one per network and settings, shared by every
    seed and recipe."""
    return Path(runs_dir) / "pretrain" / f"{arch}-{formula_key(recipe)}"


def is_finished(path: Path, recipe: Recipe) -> bool:
    """True when ``path`` holds a readable summary made with this recipe's settings."""
    if not path.is_file():
        return False
    try:
        stored = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return stored.get("format") == RUN_FORMAT and stored.get("recipe", {}).get("fingerprint") == recipe.fingerprint()


def machine() -> dict[str, Any]:
    """The machine a run was made on: CPU model, cores, accelerator, load (the CPU may be shared)."""
    import jax

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    dev = jax.devices()  # every process's, in a multi-process run (docs/scaling.md)
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = None
    return {
        "hostname_hash": str(abs(hash(platform.node())) % 10**6),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "backend": jax.default_backend(),
        "device_kind": dev[0].device_kind,
        "device_count": len(dev),
        "process_count": jax.process_count(),
        "load_average": load,
    }


def read_predictions(path: Path) -> dict[str, list]:
    """ids, labels (1 = the positive class), positive-class probabilities and predicted labels from a two-class
    evaluation's predictions CSV; its probability column ``<positive class>_probability`` names the positive
    class (``hotspot_probability``: Hotspot; ``anomaly_probability``: Anomaly)."""
    ids, labels, probs, pred = [], [], [], []
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        column = next((c for c in reader.fieldnames or () if c.endswith("_probability")), None)
        if column is None:
            raise DataError(f"{path}: no <class>_probability column; not a two-class evaluation")
        for row in reader:
            ids.append(row["id"])
            labels.append(1 if row["label"].lower() + "_probability" == column else 0)
            probs.append(round(float(row[column]), 6))
            pred.append(1 if row["predicted"].lower() + "_probability" == column else 0)
    return {"ids": ids, "labels": labels, "probs": probs, "pred": pred}


_KEEP = ("n", "loss", "accuracy", "precision", "sensitivity", "specificity", "f1", "roc_auc",
         "false_alarms_per_1000", "confusion_matrix", "tn", "fp", "fn", "tp", "n_pos", "n_neg", "threshold")
_KEEP_MULTICLASS = ("n", "loss", "accuracy", "macro_f1", "per_class", "class_names", "confusion_matrix")


def read_multiclass_predictions(path: Path) -> dict[str, list]:
    """ids, true and predicted class indices (in the CSV's ``p_<class>`` column order, which is the task's
    class order) and the hotspot-vs-rest score P(Hot-Spot) + P(Hot-Spot-Multi) from a classes12
    evaluation's predictions CSV (4 decimals). The 12 probabilities per image stay in the work directory's
    CSV: 3,000 test images x 12 classes would make each committed summary ~200 kB."""
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        names = [c[2:] for c in reader.fieldnames or () if c.startswith("p_")]
        index = {c: k for k, c in enumerate(names)}
        hot = [c for c in ("Hot-Spot", "Hot-Spot-Multi") if c in index]
        ids, labels, pred, hot_probs = [], [], [], []
        for row in reader:
            ids.append(row["id"])
            labels.append(index[row["label"]])
            pred.append(index[row["predicted"]])
            hot_probs.append(round(sum(float(row[f"p_{c}"]) for c in hot), 4))
    return {"class_names": names, "ids": ids, "labels": labels, "pred": pred, "hotspot_probs": hot_probs}


def run_task(run: dict[str, Any]) -> str:
    """The task of a run summary (summaries from before tasks existed are hotspot runs)."""
    return (run.get("recipe") or {}).get("task") or (run.get("train_config") or {}).get("task") or "hotspot"


def _test_metrics(tm: dict[str, Any], task: str, workdir: Path) -> dict[str, Any]:
    """The task's part of a summary: test metrics and per-image test predictions (classes12: class indices
    and the hotspot-vs-rest view; hotspot: also the realistic test set; both two-class tasks: the operating
    point and the test sets at it)."""
    predictions = workdir / "evaluation" / "test_predictions.csv"
    if task == "classes12":
        test = tm["test"]
        return {"test": {k: test.get(k) for k in _KEEP_MULTICLASS if k in test},
                "hotspot_vs_rest": {k: v for k, v in (test.get("hotspot_vs_rest") or {}).items() if k in _KEEP},
                "test_predictions": read_multiclass_predictions(predictions)}
    splits = [s for s in ("test", "test_realistic") if s in tm]
    return {
        **{split: {k: tm[split].get(k) for k in _KEEP if k in tm[split]} for split in splits},
        # the validation-chosen threshold (hotspot_jax.evaluate.decision_threshold) and both test sets at it
        "operating_point": tm.get("operating_point"),
        **{f"{split}_at_operating_point": {k: tm[f"{split}_at_operating_point"].get(k) for k in _KEEP
                                           if k in tm[f"{split}_at_operating_point"]}
           for split in splits if f"{split}_at_operating_point" in tm},
        "test_predictions": read_predictions(predictions),
        # validation and realistic-test scores: an ensemble chooses its own threshold on the former
        # (hotspot_jax.reproduce.ensemble); runs made before they were kept have neither
        **{f"{split}_predictions": _scores(workdir / "evaluation" / f"{split}_predictions.csv")
           for split in ("val", "test_realistic") if (workdir / "evaluation" / f"{split}_predictions.csv").is_file()},
    }


def _scores(path: Path) -> dict[str, list]:
    """ids, labels and positive-class probabilities (4 decimals: 8,600 realistic-test images stay ~100 KB)."""
    p = read_predictions(path)
    return {"ids": p["ids"], "labels": p["labels"], "probs": [round(x, 4) for x in p["probs"]]}


def summarize_run(workdir: Path, recipe: Recipe, arch: str, seed: int, extra: dict[str, Any] | None = None
                  ) -> dict[str, Any]:
    """The committed summary of a finished run: settings, initialisation, test metrics of its task (with the
    test set's per-image predictions for ROC curves and paired tests), history, timing and machine."""
    config = json.loads((workdir / "config.json").read_text())
    tm = json.loads((workdir / "test_metrics.json").read_text())
    history = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    manifest = json.loads((workdir / "manifest.json").read_text())
    run = dict(config["run"])
    run.pop("data", None)
    run.pop("workdir", None)
    train_seconds = sum(float(h.get("train_seconds", 0.0)) for h in history)
    speeds = sorted(float(h["images_per_second"]) for h in history if h.get("images_per_second"))
    task = run.get("task") or "hotspot"
    if task != recipe.task:
        raise DataError(f"{workdir}: a {task} run, but recipe {recipe.name!r} is for the {recipe.task} task")
    out = {
        "format": RUN_FORMAT,
        "recipe": recipe.to_dict(),
        "arch": arch,
        "seed": seed,
        "initialisation": (extra or {}).get("initialisation", config.get("initialisation")),
        "train_config": run,
        "split_counts": manifest.get("counts"),
        # validation/test images whose pixel twin trained or selected the run (hotspot_jax.data.duplicates)
        **({"pixel_twins": config["pixel_twins"]} if config.get("pixel_twins") else {}),
        "best_checkpoint": tm.get("checkpoint", {}).get("epoch"),
        **_test_metrics(tm, task, workdir),
        "history": [
            {k: h.get(k) for k in ("epoch", "lr", "train_loss", "train_accuracy", "val_loss", "val_accuracy")}
            for h in history
        ],
        "timing": {
            "epochs": len(history),
            "train_seconds": round(train_seconds, 1),
            "images_per_second_median": speeds[len(speeds) // 2] if speeds else None,
            "steps_per_epoch": config.get("steps_per_epoch"),
        },
        "environment": config.get("environment"),
        "machine": machine(),
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    for key, value in (extra or {}).items():
        if key == "timing":
            out["timing"].update(value)
        elif key != "initialisation":
            out[key] = value
    return out


def result_line(summary: dict[str, Any]) -> str:
    """The one-line outcome of a finished run that the grid prints."""
    test = summary["test"]
    if run_task(summary) == "classes12":
        f1 = test.get("macro_f1")
        return f"test accuracy {test['accuracy']:.4f}, macro-F1 {'n/a' if f1 is None else f'{f1:.4f}'}"
    line = f"test accuracy {test['accuracy']:.4f}"
    if "test_realistic" in summary:
        line += f", realistic false alarms/1000 {summary['test_realistic'].get('false_alarms_per_1000')}"
    else:
        line += f", false alarms/1000 No-Anomaly {test.get('false_alarms_per_1000')}"
    return line


def write_json(path: Path, obj: Any, compact_lists: bool = False) -> None:
    """Atomic JSON write (temporary file + rename), indented; with ``compact_lists`` a list of numbers or
    strings stays on one line (a run summary's per-image scores, up to 8,600 images: a few lines, not 35,000)."""
    from hotspot_jax.train.files import write_json_atomic, write_text_atomic

    path.parent.mkdir(parents=True, exist_ok=True)
    if compact_lists:
        write_text_atomic(path, _dumps_compact_lists(obj) + "\n")
    else:
        write_json_atomic(path, obj)


def _dumps_compact_lists(obj: Any, pad: str = "") -> str:
    """``json.dumps(obj, indent=2)`` except that lists without a dict or list inside are written on one line."""
    inner = pad + "  "
    if isinstance(obj, dict) and obj:
        items = [f"{inner}{json.dumps(str(k))}: {_dumps_compact_lists(v, inner)}" for k, v in obj.items()]
        return "{\n" + ",\n".join(items) + "\n" + pad + "}"
    if isinstance(obj, (list, tuple)) and any(isinstance(v, (dict, list, tuple)) for v in obj):
        return "[\n" + ",\n".join(inner + _dumps_compact_lists(v, inner) for v in obj) + "\n" + pad + "]"
    return json.dumps(obj)


def run_grid(
    recipe: Recipe,
    archs: Iterable[str],
    seeds: Iterable[int],
    *,
    data: str | None = None,
    dataset=None,
    runs_dir: str | Path = "runs/reproduce",
    results_dir: str | Path = "results",
    pretrained: dict[str, str] | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
    train_fn: Callable | None = None,
) -> dict[str, list[str]]:
    """Train every unfinished (arch, seed) of ``recipe``; return the runs done, skipped and interrupted.

    ``pretrained`` maps architecture -> torchvision .pth file (ImageNet weights, when the user has them);
    ``train_fn`` replaces :func:`hotspot_jax.train.loop.train` (tests).
    """
    import architectures

    if train_fn is None:
        from hotspot_jax.train.loop import train as train_fn
    archs = [architectures.get(a).name for a in archs]
    seeds = list(seeds)
    report: dict[str, list[str]] = {"done": [], "skipped": [], "interrupted": []}
    from hotspot_jax.train import distributed

    # multi-process: process 0 reads and writes the shared folders, the others follow its decisions
    primary = distributed.is_primary()
    todo = [tuple(x) for x in distributed.on_primary(
        lambda: [(a, s) for s in seeds for a in archs if not is_finished(result_path(results_dir, recipe.name, a, s), recipe)],
        "todo")]
    for a, s in [(a, s) for s in seeds for a in archs if (a, s) not in todo]:
        report["skipped"].append(f"{a}-s{s}")
        log(f"skip {recipe.name}/{a}-s{s}: finished ({result_path(results_dir, recipe.name, a, s)})")
    # every teacher of every run to do, before any training: a missing one is one line, not a failure hours in
    teachers = {s: distill_teacher_dirs(recipe, s, runs_dir) for s in sorted({s for _, s in todo})}
    if todo and dataset is None:
        from hotspot_jax.data import load_dataset

        dataset = distributed.primary_first(lambda: load_dataset(data, progress=progress and primary), "dataset")
    for k, (arch, seed) in enumerate(todo):
        workdir = run_dir(runs_dir, recipe.name, arch, seed)
        log(f"[{k + 1}/{len(todo)}] {recipe.name}/{arch}-s{seed} -> {workdir}")
        start = time.perf_counter()
        extra, weights, init_from = start_run(recipe, arch, seed, f"{arch}-s{seed}", report, pretrained=pretrained,
                                              runs_dir=runs_dir, data=data, dataset=dataset, progress=progress,
                                              log=log, train_fn=train_fn)
        if init_from is INTERRUPTED:
            break
        cfg = recipe.train_config(arch, seed, str(workdir), data, pretrained=weights, init_from=init_from,
                                  distill_from=teachers[seed])
        distributed.on_primary(lambda: bool(set_aside_stale_workdir(workdir, cfg, log)), "stale-run")
        result = train_fn(cfg, progress=progress, log=log, dataset=dataset)
        if result.interrupted:
            report["interrupted"].append(f"{arch}-s{seed}")
            log(f"interrupted {recipe.name}/{arch}-s{seed}; rerun the same command to continue")
            break
        if not primary:
            report["done"].append(f"{arch}-s{seed}")
            continue
        extra["timing"]["wall_seconds_last_session"] = round(time.perf_counter() - start, 1)
        summary = summarize_run(workdir, recipe, arch, seed, extra)
        out = result_path(results_dir, recipe.name, arch, seed)
        write_json(out, summary, compact_lists=True)  # per-image scores: a few lines each, not thousands
        report["done"].append(f"{arch}-s{seed}")
        log(f"wrote {out}: {result_line(summary)}")
    return report


def distill_teacher_dirs(recipe: Recipe, seed: int, runs_dir: str | Path) -> list[str] | None:
    """The teacher run directories of a run of ``recipe`` with ``seed``: ``<runs>/<teacher recipe>/<arch>-s<seed>``
    for each architecture of ``distill_teachers`` (None without it); ConfigError, one line, when one is missing or
    unfinished (no test_metrics.json, which a run writes last)."""
    import architectures

    spec = recipe.teacher_runs()
    if spec is None:
        return None
    teacher_recipe, archs = spec
    dirs = [run_dir(runs_dir, teacher_recipe, architectures.get(a).name, seed) for a in archs]
    missing = [str(d) for d in dirs if not (d / "test_metrics.json").is_file()]
    if missing:
        raise ConfigError(f"recipe {recipe.name!r} distils from {recipe.distill_teachers}, but teacher run(s) "
                          f"{', '.join(missing)} are missing or unfinished; run --recipe {teacher_recipe} for seed "
                          f"{seed} first (with the same --runs-dir)")
    return [str(d) for d in dirs]


INTERRUPTED = "interrupted"  # what ensure_pretraining returns when the pretraining run was interrupted


def start_run(recipe: Recipe, arch: str, seed: int, label: str, report: dict[str, list], *, pretrained, runs_dir,
              data, dataset, progress: bool, log: Callable[[str], None], train_fn: Callable
              ) -> tuple[dict[str, Any], str | None, str | None]:
    """What a grid or fold run of ``recipe`` starts from: ``(extra, weights, init_from)``, its summary's record,
    its ImageNet weights (if any) and its pretraining run (trained first if needed, :func:`ensure_pretraining`).
    ``init_from`` is :data:`INTERRUPTED` when that pretraining was interrupted; ``report`` and the log then say
    so under ``label``."""
    extra: dict[str, Any] = {"timing": {}}
    weights = (pretrained or {}).get(arch)
    init_from = ensure_pretraining(recipe, arch, seed, extra, runs_dir=runs_dir, data=data, dataset=dataset,
                                   weights=weights, progress=progress, log=log, train_fn=train_fn)
    if init_from is INTERRUPTED:
        report["interrupted"].append(label)
        log(f"interrupted {recipe.name}/{label} in pretraining; rerun the same command to continue")
    return extra, weights, init_from


def ensure_pretraining(recipe: Recipe, arch: str, seed: int, extra: dict[str, Any], *, runs_dir, data, dataset,
                       weights: str | None, progress: bool, log: Callable[[str], None], train_fn: Callable) -> str | None:
    """The ``init_from`` of a run of ``recipe``: its in-domain pretraining run directory, trained first unless it
    has finished (a shared one is trained once and reused by every seed and fold), started from the formula-driven
    pretraining with ``formula_epochs`` (:func:`ensure_formula_pretraining`) or the self-supervised one with
    ``ssl_epochs`` (:func:`ensure_ssl_pretraining`; that run itself without in-domain pretraining), or None without
    any (or with ImageNet ``weights``); :data:`INTERRUPTED` when a pretraining was
    interrupted. Records the pretraining in ``extra`` (the run summary's ``pretraining`` and timing)."""
    from hotspot_jax.train import distributed

    if not (recipe.pretrain_epochs or recipe.formula_epochs or recipe.ssl_epochs) or weights:
        return None
    formula = None  # the run before the in-domain pretraining: formula-driven or self-supervised
    if recipe.formula_epochs or recipe.ssl_epochs:
        before = ensure_formula_pretraining if recipe.formula_epochs else ensure_ssl_pretraining
        formula = before(recipe, arch, extra, runs_dir=runs_dir, progress=progress, log=log, train_fn=train_fn,
                         data=data, dataset=dataset)
        if formula is INTERRUPTED or not recipe.pretrain_epochs:
            if distributed.is_primary() and formula is not INTERRUPTED:  # one such run serves every seed
                extra["timing"].update(pretrain_seconds=_first_stage_seconds(extra),
                                       pretrain_shared_across_seeds=True)
            return formula
    pre_dir = pretrain_dir(runs_dir, recipe, arch, seed)
    pre_cfg = recipe.pretrain_config(arch, seed, str(pre_dir), data, init_from=formula)
    distributed.on_primary(lambda: bool(set_aside_stale_workdir(pre_dir, pre_cfg, log)), "stale-pretraining")
    # a run writes it last; shared, not redone
    finished = distributed.on_primary(lambda: (pre_dir / "test_metrics.json").is_file(), "pretrained")
    what = ("every seed's hotspot split" if recipe.pretrain_pool == "shared"
            else "the hotspot split's held-out images")
    log(f"in-domain pretraining: reusing {pre_dir}" if finished else
        f"in-domain pretraining (classes12, leaving out {what}) -> {pre_dir}")
    if not finished and train_fn(pre_cfg, progress=progress, log=log, dataset=dataset).interrupted:
        return INTERRUPTED
    if distributed.is_primary():
        extra["pretraining"] = pretraining_summary(pre_dir)
        # the formula-driven pretraining before it counts as pretraining too (formula_seconds: its part)
        extra["timing"]["pretrain_seconds"] = extra["pretraining"]["train_seconds"] + _first_stage_seconds(extra)
        if recipe.pretrain_pool == "shared":  # one pretraining serves every seed: count it once, not per seed
            extra["timing"]["pretrain_shared_across_seeds"] = True
    return str(pre_dir)


def _first_stage_seconds(extra: dict[str, Any]) -> float:
    """The training time of the formula-driven or self-supervised run before the in-domain pretraining (0: none)."""
    return extra["timing"].get("formula_seconds", 0.0) + extra["timing"].get("ssl_seconds", 0.0)


def ensure_ssl_pretraining(recipe: Recipe, arch: str, extra: dict[str, Any], *, runs_dir, progress: bool,
                           log: Callable[[str], None], train_fn: Callable, data=None, dataset=None) -> str:
    """The self-supervised pretraining run of ``arch`` (:meth:`Recipe.ssl_config`) on the dataset's shared
    pretraining pool, through :func:`_ensure_first_stage` (``ssl_pretraining``, ``ssl_seconds``)."""
    work = ssl_dir(runs_dir, recipe, arch)
    return _ensure_first_stage(
        "ssl", work, recipe.ssl_config(arch, str(work), data), extra, dataset=dataset,
        starting=f"self-supervised pretraining (SimCLR, {recipe.ssl_epochs} epochs on the shared pretraining pool, "
                 f"labels unread) -> {work}",
        reusing=f"self-supervised pretraining: reusing {work}", progress=progress, log=log, train_fn=train_fn)


def ensure_formula_pretraining(recipe: Recipe, arch: str, extra: dict[str, Any], *, runs_dir,
                               progress: bool, log: Callable[[str], None], train_fn: Callable, data=None,
                               dataset=None) -> str:
    """The formula-driven pretraining run of ``arch`` (:meth:`Recipe.formula_config`), its fractal images written
    first, through :func:`_ensure_first_stage` (``formula_pretraining``, ``formula_seconds``). ``data`` and
    ``dataset`` (the dataset's) are not read: the fractal images are its data."""
    from hotspot_jax.data.fractaldb import write_fractaldb

    images = formula_images_dir(runs_dir, recipe)
    work = formula_dir(runs_dir, recipe, arch)

    def make_images() -> bool:
        if not (images / "fractaldb.json").is_file():
            log(f"formula images: {recipe.formula_classes} fractal classes x {recipe.formula_per_class} -> {images}")
        write_fractaldb(images, recipe.formula_classes, recipe.formula_per_class, seed=0)
        return True

    return _ensure_first_stage(
        "formula", work, recipe.formula_config(arch, str(work), str(images)), extra, dataset=None,
        prepare=make_images, starting=f"formula-driven pretraining ({recipe.formula_epochs} epochs on {images.name}) "
                                      f"-> {work}",
        reusing=f"formula-driven pretraining: reusing {work}", progress=progress, log=log, train_fn=train_fn)


def _ensure_first_stage(kind: str, work: Path, cfg, extra: dict[str, Any], *, dataset, starting: str, reusing: str,
                        progress: bool, log: Callable[[str], None], train_fn: Callable,
                        prepare: Callable[[], bool] | None = None) -> str:
    """The run before the in-domain pretraining (``kind``: ``formula`` or ``ssl``) in ``work``: reused when finished;
    a run of other settings (batch, momentum, weight decay: not in the folder name) is set aside first, finished or
    not (the in-domain pretraining it started differs in the same settings, so it is set aside too); otherwise
    ``prepare`` (on process 0) and ``cfg`` trained. :data:`INTERRUPTED` when interrupted. Records it in ``extra`` as
    ``<kind>_pretraining`` and its time as ``<kind>_seconds``, which ``pretrain_seconds`` includes."""
    from hotspot_jax.train import distributed

    distributed.on_primary(lambda: bool(set_aside_stale_workdir(work, cfg, log)), f"stale-{kind}")
    finished = distributed.on_primary(lambda: (work / "test_metrics.json").is_file(), f"{kind}-pretrained")
    if not finished:
        if prepare is not None:
            distributed.on_primary(prepare, f"{kind}-prepare")
        log(starting)
        if train_fn(cfg, progress=progress, log=log, dataset=dataset).interrupted:
            return INTERRUPTED
    else:
        log(reusing)
    if distributed.is_primary():
        extra[f"{kind}_pretraining"] = pretraining_summary(work)
        extra["timing"][f"{kind}_seconds"] = extra[f"{kind}_pretraining"]["train_seconds"]
    return str(work)


def pretraining_summary(workdir: Path) -> dict[str, Any]:
    """What a hotspot run's summary records of its in-domain pretraining run: settings, images, history, time."""
    config = json.loads((Path(workdir) / "config.json").read_text())
    manifest = json.loads((Path(workdir) / "manifest.json").read_text())
    history = [json.loads(line) for line in (Path(workdir) / "metrics.jsonl").read_text().splitlines() if line.strip()]
    tm = json.loads((Path(workdir) / "test_metrics.json").read_text())
    run = {k: v for k, v in config["run"].items() if k not in ("data", "workdir")}
    return {
        "settings": run,
        "left_out": manifest.get("left_out"),
        "split_counts": manifest.get("counts"),
        # validation/test images whose pixel twin trained or selected the run (hotspot_jax.data.duplicates)
        **({"pixel_twins": config["pixel_twins"]} if config.get("pixel_twins") else {}),
        "best_checkpoint": tm.get("checkpoint", {}).get("epoch"),
        "validation": {k: tm.get("val", {}).get(k) for k in ("accuracy", "macro_f1", "n")},
        "history": [{k: h.get(k) for k in ("epoch", "train_loss", "train_accuracy", "val_accuracy")} for h in history],
        "train_seconds": round(sum(float(h.get("train_seconds", 0.0)) for h in history), 1),
    }


def set_aside_stale_workdir(workdir: Path, cfg, log: Callable[[str], None] = print) -> Path | None:
    """Rename ``workdir`` to ``<name>.stale-<time>`` when it holds a run of other settings (the recipe was
    changed since), so the grid starts this run afresh instead of stopping; returns the new path, if any.
    Its stale summary was already not counted as finished (fingerprint); nothing is deleted."""
    from hotspot_jax.train.config import identity_differences

    config_path = Path(workdir) / "config.json"
    if not config_path.is_file():
        return None
    try:
        stored = json.loads(config_path.read_text())["run"]
    except (OSError, ValueError, KeyError, TypeError):
        return None  # unreadable: the training loop reports it
    diffs = identity_differences(stored, cfg.resolve())
    if not diffs:
        return None
    target = Path(workdir).with_name(f"{Path(workdir).name}.stale-{time.strftime('%Y%m%dT%H%M%S')}")
    Path(workdir).rename(target)
    log(f"{workdir} held a run of other settings ({'; '.join(diffs)}): moved to {target}, starting afresh")
    return target


def load_results(results_dir: str | Path, recipe: str) -> list[dict[str, Any]]:
    """Every run summary of ``recipe`` under ``results_dir`` (sorted by arch, seed); DataError on a bad file."""
    folder = Path(results_dir) / recipe
    out = []
    for path in sorted(folder.glob("*-s*.json")):
        try:
            d = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            raise DataError(f"{path}: unreadable run summary ({err})") from None
        if d.get("format") != RUN_FORMAT:
            raise DataError(f"{path}: not a run summary (format {d.get('format')!r}, expected {RUN_FORMAT!r})")
        d["_path"] = str(path)
        out.append(d)
    return sorted(out, key=lambda d: (d["arch"], d["seed"]))


def check_archs(archs: Iterable[str]) -> list[str]:
    """Canonical names of ``archs`` (ConfigError on an unknown one)."""
    import architectures

    try:
        return [architectures.get(a).name for a in archs]
    except KeyError as err:  # registry raises ConfigError already; this is a guard
        raise ConfigError(str(err)) from None
