"""``scripts/evaluate.py``: a trained run's metrics, figures and per-image predictions on the test splits.

The splits are rebuilt from the run's ``manifest.json`` (or, if absent, from its seed) and the dataset,
so the numbers are those of exactly the images the run never trained or validated on.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path
from typing import Any, Sequence

from hotspot_jax.errors import ConfigError, DataError
from hotspot_jax.evaluate import decision_threshold
from hotspot_jax.evaluate.metrics import binary_metrics, check_threshold

SPLIT_TITLES = {
    "test": "balanced test",
    "test_realistic": "realistic-prevalence test",
    "val": "validation",
}
DEFAULT_SPLITS = "test,test_realistic"  # the hotspot task's; other tasks: test (val when the split has no test)


class DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Appends ``(default: X)`` to every option's help (``(required)`` for required ones), except where
    the help already states its default."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default:" in text:
            return text
        if action.required:
            return f"{text} (required)"
        return super()._get_help_string(action)


def positive_int(option: str, value: int) -> int:
    """``value`` if >= 1, else ConfigError naming ``option``."""
    if value < 1:
        raise ConfigError(f"{option} must be at least 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The evaluation options, each listed with its default."""
    p = argparse.ArgumentParser(
        prog="evaluate.py",
        formatter_class=DefaultsHelpFormatter,
        description="Evaluate a trained run on the balanced test split and the realistic-prevalence test set: "
        "accuracy, precision, sensitivity, specificity, F1 (hotspot = positive class), ROC AUC, confusion "
        "matrix; writes <split>_metrics.json, <split>_predictions.csv, <split>_confusion.png, <split>_roc.png "
        "and evaluation.json, and prints a table.",
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--workdir", metavar="DIR", help="training work directory; its best checkpoint is used (default: none; give --workdir or "
                     "--checkpoint)")
    src.add_argument("--checkpoint", metavar="DIR",
                     help="a checkpoint inside a work directory: best/<step> or checkpoints/<step> (default: none; "
                     "give --workdir or --checkpoint)")
    p.add_argument("--data", metavar="PATH",
                   help="InfraredSolarModules zip or folder (default: $HOTSPOT_DATA, else the path recorded in "
                   "the run if it still exists, else the dataset already built in the cache)")
    p.add_argument("--out", metavar="DIR", help="output folder (default: <workdir>/evaluation)")
    p.add_argument("--batch-size", type=int, default=256, metavar="N", help="images per inference batch")
    p.add_argument("--threshold", type=float, metavar="P",
                   help="a module is predicted Hotspot when its hotspot probability is above this (default: 0.5, "
                   "the study's, and a second table at the run's operating point)")
    p.add_argument("--target-sensitivity", type=float, metavar="S",
                   help="choose the operating point now, on the run's validation split, for sensitivity >= S "
                   "(default: the one stored with the checkpoint; else chosen for 0.95)")
    p.add_argument("--tta", choices=("none", "flips"),
                   help="test-time augmentation: the mean of the image and its flips, or none (default: the run's own)")
    p.add_argument("--splits", metavar="LIST",
                   help="comma-separated splits of the run's manifest to evaluate (test, test_realistic, val) "
                   f"(default: {DEFAULT_SPLITS} for a hotspot run, test for the other tasks)")
    from hotspot_jax.data.tasks import TASK_NAMES

    p.add_argument("--task", choices=TASK_NAMES,
                   help="the task the run must have been trained for; another one is an error (default: the run's own)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    return p


def parse_splits(text: str) -> list[str]:
    """``"test,test_realistic"`` -> ``["test", "test_realistic"]`` (ConfigError for unknown names)."""
    names = [s.strip() for s in text.split(",") if s.strip()]
    if not names:
        raise ConfigError("--splits is empty; use e.g. test,test_realistic")
    bad = [s for s in names if s not in SPLIT_TITLES]
    if bad:
        raise ConfigError(f"--splits: unknown split(s) {', '.join(bad)}; choose from {', '.join(SPLIT_TITLES)}")
    return list(dict.fromkeys(names))


def resolve_data(option: str | None, config: dict[str, Any]) -> str | None:
    """Where the dataset comes from: --data, $HOTSPOT_DATA, the run's recorded path if it exists, else None."""
    from hotspot_jax.data import DATA_ENV

    if option:
        if not Path(option).expanduser().exists():
            raise DataError(f"--data {option} does not exist")
        return option
    env = os.environ.get(DATA_ENV, "").strip()
    if env:
        return env
    recorded = (config.get("run") or {}).get("data")
    if recorded and Path(recorded).expanduser().exists():
        return recorded
    return None


def run_workdir(tm: Any, given: Path) -> Path:
    """The work directory a loaded model came from (``<workdir>/<kind>/<step>``)."""
    checkpoint = getattr(tm, "checkpoint", None)
    if checkpoint is not None:
        return Path(checkpoint).parent.parent
    return given


def load_split_arrays(tm: Any, data: str | None, splits: Sequence[str], progress: bool) -> tuple[dict, str]:
    """Arrays of ``splits`` (binary labels) rebuilt from the run's manifest (or seed) and the dataset."""
    from hotspot_jax.data import ProtocolConfig, load_dataset, make_binary_split, materialize

    dataset = load_dataset(data, download=False, progress=progress)
    manifest = tm.manifest
    if manifest is None:
        run = tm.config.get("run") or {}
        seed = int(run.get("seed", 0))
        manifest = make_binary_split(dataset, ProtocolConfig(seed=seed, no_anomaly_pools=run.get("no_anomaly_pools", "study")))
        origin = f"rebuilt from seed {seed} (the run has no manifest.json)"
    else:
        origin = "the run's manifest.json"
    if manifest.task != tm.task.manifest_task:
        raise DataError(f"the run's split manifest is for the {manifest.task} split, not its task {tm.task.name}")
    missing = [s for s in splits if s not in manifest.splits]
    if missing:
        raise ConfigError(f"--splits: the run's manifest has no split {', '.join(missing)} "
                          f"(it has {', '.join(manifest.splits)})")
    wanted = dataclasses.replace(manifest, splits={s: manifest.splits[s] for s in splits})
    return materialize(dataset, wanted), origin


def main(argv: Sequence[str] | None = None) -> int:
    """Load the run, rebuild its test splits, score them, write the files and print the table."""
    args = build_parser().parse_args(argv)
    threshold = 0.5 if args.threshold is None else check_threshold(args.threshold, "--threshold")
    if args.target_sensitivity is not None:
        decision_threshold.check_target(args.target_sensitivity)
        if args.threshold is not None:
            raise ConfigError("--threshold and --target-sensitivity both set the threshold; give one")
    batch_size = positive_int("--batch-size", args.batch_size)
    splits = parse_splits(args.splits) if args.splits is not None else None  # bad names fail before loading
    option, given = ("--workdir", args.workdir) if args.workdir else ("--checkpoint", args.checkpoint)
    path = Path(given).expanduser()
    if not path.exists():
        raise ConfigError(f"{option} {path} does not exist")
    if not path.is_dir():
        raise ConfigError(f"{option} {path} is not a directory")
    progress = not args.no_progress

    from hotspot_jax.evaluate.report import format_metrics_table, output_paths, write_evaluation, write_json
    from hotspot_jax.train.restore import load_trained, require_classifier

    tm = load_trained(path)
    require_classifier(tm, "be evaluated")
    if args.task is not None and args.task != tm.task.name:
        raise ConfigError(f"{path} is a {tm.task.name} run, not {args.task}; evaluate it without --task or with "
                          f"--task {tm.task.name}")
    if splits is not None:
        pass
    elif tm.task.name == "hotspot" and tm.manifest is not None and tm.manifest.cv:
        splits = ["test"]  # a cross-validation fold (hotspot_jax.data.cv): its test is the seed's validation split
        print(f"cross-validation fold {tm.manifest.cv['fold']} of {tm.manifest.cv['folds']}: evaluating its 'test' split, "
              "the seed's validation split (a fold run has no realistic test set)", file=sys.stderr)
    elif tm.task.name == "hotspot":
        splits = parse_splits(DEFAULT_SPLITS)
    else:
        splits = ["test"] if tm.manifest is None or tm.manifest.splits.get("test") else ["val"]
    other_tta = args.tta is not None and args.tta != tm.config["run"].get("tta", "none")
    if other_tta:  # the same weights with another test-time augmentation: the stored threshold does not apply
        tm = tm.with_tta(args.tta)
    workdir = run_workdir(tm, path)
    out = Path(args.out).expanduser() if args.out else workdir / "evaluation"
    data = resolve_data(args.data, tm.config)
    if not tm.task.binary:
        return evaluate_many_classes(tm, data, splits, out, batch_size, progress)
    point, point_origin = tm.operating_point, "stored with the checkpoint"
    at_point = args.threshold is None
    choose_now = at_point and (point is None or args.target_sensitivity is not None or other_tta)
    arrays, origin = load_split_arrays(tm, data, [*splits, "val"] if choose_now and "val" not in splits else splits,
                                       progress)
    if choose_now:
        target = args.target_sensitivity or decision_threshold.DEFAULT_TARGET_SENSITIVITY
        val_probs = tm.predict_proba(arrays["val"].images, batch_size=batch_size, progress=progress)
        try:
            point = decision_threshold.choose(arrays["val"].labels, val_probs, target)
            point_origin = "chosen now on the run's validation split"
        except ConfigError as err:  # a validation split without both classes: the 0.5 table alone
            print(f"no operating point: {err}", file=sys.stderr)
            at_point = False

    initialisation = tm.config.get("initialisation", "unknown")
    results: dict[str, dict[str, Any]] = {}
    at_point_results: dict[str, dict[str, Any]] = {}
    written: list[Path] = []
    for split in splits:
        arr = arrays[split]
        probs = tm.predict_proba(arr.images, batch_size=batch_size, progress=progress)
        title = f"{tm.arch} ({tm.image_size}px) - {SPLIT_TITLES[split]}"
        results[split] = write_evaluation(out, split, arr.labels, probs, list(arr.ids), title=title,
                                          threshold=threshold, class_names=arr.class_names)
        written.extend(output_paths(out, split).values())
        if at_point:
            at_point_results[split] = binary_metrics(arr.labels, probs, point["threshold"])

    summary = {
        "arch": tm.arch,
        "image_size": tm.image_size,
        "initialisation": initialisation,
        "checkpoint": str(getattr(tm, "checkpoint", path)),
        "epoch": getattr(tm, "epoch", None),
        "data": data or "dataset cache",
        "splits_from": origin,
        "threshold": threshold,
        "tta": tm.config["run"].get("tta", "none"),
        "metrics": results,
    }
    if at_point:
        summary["operating_point"] = {**point, "origin": point_origin}
        summary["metrics_at_operating_point"] = at_point_results
    write_json(out / "evaluation.json", summary)
    written.append(out / "evaluation.json")

    epoch = summary["epoch"]
    print(f"{tm.arch} at {tm.image_size}px, initialisation: {initialisation}")
    print(f"checkpoint: {summary['checkpoint']}" + (f" (epoch {epoch})" if epoch is not None else ""))
    print(f"splits: {origin}")
    print()
    print(format_metrics_table({SPLIT_TITLES[s]: results[s] for s in splits}))
    print()
    if at_point:
        print(f"At the operating point ({point_origin}): threshold {point['threshold']:.4g}, the highest with "
              f"validation sensitivity >= {point['target_sensitivity']:g}")
        print(format_metrics_table({SPLIT_TITLES[s]: at_point_results[s] for s in splits}))
        print()
    print(f"wrote {len(written)} files to {out}")
    sys.stdout.flush()
    return 0


def evaluate_many_classes(tm: Any, data: str | None, splits: Sequence[str], out: Path, batch_size: int,
                          progress: bool) -> int:
    """classes12: accuracy, macro-F1, per-class precision/recall, confusion PNG and the hotspot-vs-rest
    view per split (hotspot_jax.evaluate.multiclass); prints a per-class table."""
    from hotspot_jax.evaluate.metrics import format_value
    from hotspot_jax.evaluate.multiclass import write_multiclass_evaluation
    from hotspot_jax.evaluate.report import write_json

    arrays, origin = load_split_arrays(tm, data, splits, progress)
    results = {}
    print(f"{tm.arch} at {tm.image_size}px, task {tm.task.name}, initialisation: {tm.initialisation}")
    print(f"checkpoint: {tm.checkpoint}; splits: {origin}")
    for split in splits:
        arr = arrays[split]
        probs = tm.predict_class_proba(arr.images, batch_size=batch_size, progress=progress)
        m = write_multiclass_evaluation(out, split, arr.labels, probs, list(arr.ids), arr.class_names)
        results[split] = m
        print(f"\n{'validation' if split == 'val' else split}: accuracy {format_value(m['accuracy'])}, macro-F1 {format_value(m['macro_f1'])} "
              f"({m['n']} images)")
        width = max(len(c) for c in arr.class_names)
        print(f"{'class'.ljust(width)}  precision  recall  support")
        for name, c in m["per_class"].items():
            print(f"{name.ljust(width)}  {format_value(c['precision']).rjust(9)}  {format_value(c['recall']).rjust(6)}  "
                  f"{c['support']:>7}")
        vs = m.get("hotspot_vs_rest")
        if vs:
            print(f"hotspot vs rest (P(Hot-Spot) + P(Hot-Spot-Multi) > 0.5): sensitivity {format_value(vs['sensitivity'])}, "
                  f"specificity {format_value(vs['specificity'])}")
    write_json(out / "evaluation.json", {"arch": tm.arch, "task": tm.task.name, "image_size": tm.image_size,
                                         "initialisation": tm.initialisation, "checkpoint": str(tm.checkpoint),
                                         "epoch": tm.epoch, "data": data or "dataset cache", "splits_from": origin,
                                         "metrics": results})
    print(f"\nwrote {2 * len(splits) + 1} files to {out}")
    sys.stdout.flush()
    return 0
