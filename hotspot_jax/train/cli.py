"""``scripts/train.py``: train one architecture on the binary hotspot task (see docs/training.md)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
from pathlib import Path
from typing import Sequence

from hotspot_jax.errors import ConfigError, HotspotError
from hotspot_jax.train.config import DTYPES, PROFILES, TTA_MODES, TrainConfig

_D = {f.name: f.default for f in dataclasses.fields(TrainConfig) if f.default is not dataclasses.MISSING}


def build_parser() -> argparse.ArgumentParser:
    """Every option with its default in the help text (defaults are applied after parsing, see main)."""
    p = argparse.ArgumentParser(
        prog="train.py",
        description="Train a CNN (from scratch, from another run, or from torchvision ImageNet weights) on "
        "infrared images of PV modules: hotspot vs No-Anomaly with the study's protocol (the default), any "
        "anomaly vs No-Anomaly, or all 12 classes. Rerunning the same command on the same work directory "
        "resumes it.",
    )
    arg = p.add_argument
    arg("--arch", help="architecture or alias, e.g. squeezenet, shufflenet, mobilenetv2, resnet50, alexnet, "
        "googlenet (required unless --resume with --workdir)")
    arg("--data", help="InfraredSolarModules zip or folder, or one's own labelled images: a folder of class folders "
        "or a CSV of path,label (docs/tasks.md) (default: $HOTSPOT_DATA)")
    arg("--pretrained", metavar="FILE.pth|none",
        help="torchvision ImageNet checkpoint to start from; its head is replaced (default: none = from scratch)")
    arg("--epochs", type=int, help=f"epochs (default: {_D['epochs']})")
    arg("--batch-size", type=int, help=f"global mini-batch, split over the devices (default: {_D['batch_size']})")
    arg("--lr", type=float, help=f"SGD learning rate (default: {_D['lr']:g})")
    arg("--momentum", type=float, help=f"SGD momentum (default: {_D['momentum']})")
    arg("--weight-decay", type=float, help=f"L2 weight decay (default: {_D['weight_decay']:g})")
    arg("--image-size", type=int, help="square input size (default: from --profile)")
    arg("--profile", choices=tuple(PROFILES),
        help=f"paper: the architecture's input size (227 or 224); cpu: {PROFILES['cpu']} px for fast CPU runs "
        f"(default: {_D['profile']})")
    arg("--seed", type=int, help=f"seed of the split, the initialisation, the batch order and dropout (default: {_D['seed']})")
    arg("--workdir", help="run directory (default: runs/<arch>-s<seed>-<size>px)")
    arg("--resume", action="store_true", help="continue the run in --workdir (rerunning the same command does too)")
    arg("--overwrite", action="store_true", help="replace the run in --workdir instead of refusing")
    arg("--keep", type=int, help=f"epoch checkpoints to keep besides the best (default: {_D['keep']})")
    arg("--eval-batch-size", type=int, help=f"batch size for validation and test (default: {_D['eval_batch_size']})")
    arg("--dtype", choices=DTYPES, help=f"compute dtype; params stay float32 (default: {_D['dtype']})")
    arg("--limit-train", type=int, metavar="N", help="train on a seeded subset of N images (default: all)")
    arg("--limit-eval", type=int, metavar="N", help="evaluate on a seeded subset of N images per split (default: all)")
    from hotspot_jax.train.levers import ONLINE_AUGMENTS, SCHEDULES

    arg("--lr-schedule", choices=SCHEDULES, help=f"learning-rate schedule (default: {_D['lr_schedule']}, the study)")
    arg("--warmup-epochs", type=int, help=f"linear warmup epochs before a cosine schedule (default: {_D['warmup_epochs']})")
    arg("--online-augment", choices=ONLINE_AUGMENTS,
        help="random flips (and shifts; and contrast and brightness with -jitter) per image inside the training "
             f"step (default: {_D['online_augment']})")
    arg("--no-anomaly-ratio", type=float,
        help="training No-Anomaly images per training hotspot; extra ones come from unused No-Anomaly images "
        f"and leave the realistic test set (default: {_D['no_anomaly_ratio']:g}, the study)")
    arg("--pool-no-anomaly", type=int, metavar="N",
        help="add N No-Anomaly images of the fixed layout's pretraining pool (which no split validates or tests on) "
        "to the training negatives; each epoch still trains on the protocol's number of No-Anomaly images, drawn "
        f"afresh from the larger pool (needs --no-anomaly-pools fixed) (default: {_D['pool_no_anomaly']})")
    from hotspot_jax.data.tasks import TASK_NAMES

    arg("--task", choices=TASK_NAMES,
        help="hotspot: Hot-Spot(-Multi) vs No-Anomaly, the study's split; anomaly: any anomaly vs No-Anomaly; "
        "classes12: all 12 classes; own: the classes of one's own images, given as --data DIR/<class>/*.png|jpg|tif "
        "or a CSV of path,label (splits: docs/tasks.md) (default: own for one's own images, else hotspot)")
    from hotspot_jax.data.protocol import NO_ANOMALY_POOL_LAYOUTS
    from hotspot_jax.data.tasks import LEAVE_OUTS

    arg("--leave-out", choices=LEAVE_OUTS,
        help="anomaly/classes12 only: hotspot = draw the split from the images the hotspot split of the same --seed "
        "trains on or leaves unused (85%% train, 15%% validation, no test), so that this run can start a hotspot run "
        "with --init-from without leaking; hotspot-any-seed (with --no-anomaly-pools fixed) = only from images no "
        "hotspot split of any seed validates or tests on (no hotspots), so one run can start every seed's (default: none)")
    arg("--no-anomaly-pools", choices=NO_ANOMALY_POOL_LAYOUTS,
        help="the hotspot split's No-Anomaly images: study = each seed draws from all 10,000 and the realistic test "
        "set is every one left unused; fixed = a seed-independent partition: 4,000 realistic-test, 3,000 for "
        "pretraining only, 3,000 to draw from (docs/tasks.md) (default: study)")
    arg("--cv-fold", metavar="k/K",
        help="hotspot task only: cross-validation inside the seed's training pool, for choosing settings. Validate on "
        "fold k of K of the training hotspots (their augmented copies stay with them, stratified by class) and as many "
        "of its No-Anomaly images, train on the other folds; the final 'test' evaluation reads the seed's validation "
        "split, never the test sets. Leak-free only from a start that never saw the training pool (a shared "
        "--leave-out hotspot-any-seed pretraining; checked) (default: none = the seed's own split)")
    arg("--init-from", metavar="RUN_DIR|CHECKPOINT",
        help="start from another run's weights (its best checkpoint, or the checkpoint directory given), BatchNorm "
        "statistics included; a new head when its task has another class count. No image that trained that run may "
        "be a validation or test image of this one (checked) (default: none)")
    arg("--label-smoothing", type=float, metavar="S",
        help=f"label smoothing of the training targets (default: {_D['label_smoothing']}, the study's none)")
    arg("--mixup-alpha", type=float, metavar="A",
        help=f"mixup inside each batch with lam ~ Beta(A, A); 0 is off (default: {_D['mixup_alpha']})")
    arg("--ema-decay", type=float, metavar="D",
        help="keep an exponential moving average of the weights (and BatchNorm statistics), updated after every step "
        "with decay min(D, (1 + step) / (10 + step)); validation, the best checkpoint, the test and prediction then use "
        f"the average, not the last weights. D in [0, 1), e.g. 0.99 or 0.999; 0 is off (default: {_D['ema_decay']:g})")
    arg("--aspect", choices=("square", "source"),
        help="network input shape: --image-size square (the study), or 'source': the images' 5:3 (height:width) "
        f"shape with --image-size as the width, e.g. 80 x 48 (default: {_D['aspect']})")
    arg("--tta", choices=TTA_MODES,
        help=f"test-time augmentation of validation, test and prediction: the mean of the image and its flips "
        f"(default: {_D['tta']})")
    arg("--target-sensitivity", type=float, metavar="S",
        help="the operating point: after training, the threshold is chosen on the validation split as the highest "
        f"one with sensitivity >= S, stored beside the best checkpoint (default: {_D['target_sensitivity']})")
    from hotspot_jax.train.config import DISTILL_TEMPERATURE, DISTILL_WEIGHT

    arg("--distill-from", nargs="+", metavar="RUN_DIR",
        help="knowledge distillation: teacher runs (work directories: their best checkpoints; or checkpoint "
        "directories) of this run's task. Before training, each training image gets the mean of the teachers' "
        "softmax(logits / T) on it (each teacher at its own input size, no test-time flips), saved as "
        "distill_targets.npz; the loss becomes (1 - A) * hard loss + A * T^2 * KL(teachers || student). No image that "
        "trained a teacher (or the runs it started or learnt from) may be a validation or test image of this run "
        "(checked) "
        "(default: none = off)")
    arg("--distill-weight", type=float, metavar="A",
        help=f"the teachers' share A of the loss, in [0, 1] (default with --distill-from: {DISTILL_WEIGHT})")
    arg("--distill-temperature", type=float, metavar="T",
        help=f"the softmax temperature T > 0 of teachers and student in the distillation term (default with "
        f"--distill-from: {DISTILL_TEMPERATURE})")
    from hotspot_jax.train.contrastive import OBJECTIVES, PROJECTION_DIM, TEMPERATURE

    arg("--objective", choices=OBJECTIVES,
        help="supervised: the labels' cross-entropy; contrastive: self-supervised pretraining (SimCLR's NT-Xent): each "
        "training image seen as two --online-augment views (crop-flip-jitter is made for it), the labels never read, "
        "the head a projection; validation reads the loss and how often a view's nearest view is its partner, and no "
        f"test split is read. Start a run from it with --init-from (a new head) (default: {_D['objective']})")
    arg("--projection-dim", type=int, metavar="N",
        help=f"a contrastive run's projection size, its head's outputs (default: {PROJECTION_DIM})")
    arg("--projection-hidden", type=int, metavar="N",
        help="a contrastive run's projection as SimCLR's two-layer MLP: the network's last layer gives N outputs, then "
        "ReLU and a linear layer to --projection-dim (default: none, the network's last layer is the projection)")
    arg("--contrastive-temperature", type=float, metavar="T",
        help=f"a contrastive run's NT-Xent temperature (default: {TEMPERATURE})")
    arg("--no-progress", action="store_true", help="no progress bars (default: show them)")
    from hotspot_jax.train import distributed

    distributed.add_options(p)
    return p


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """TrainConfig from parsed options; with --resume --workdir, missing options come from the stored run."""
    given = {
        f.name: getattr(args, f.name)
        for f in dataclasses.fields(TrainConfig)
        if hasattr(args, f.name) and getattr(args, f.name) is not None
    }
    base: dict = {}
    if args.resume and args.workdir:
        path = Path(args.workdir) / "config.json"
        if path.is_file():
            try:
                base = dict(json.loads(path.read_text())["run"])
            except (OSError, ValueError, KeyError, TypeError) as err:
                raise ConfigError(f"{path} is not a valid run configuration ({err})") from None
            base.pop("pretrained_sha256", None)
            base.pop("init_from_checkpoint", None)
            base.pop("distill_checkpoints", None)  # resolved again from distill_from
            base.pop("init_weights", None), base.pop("init_weights_sha256", None)  # runs made before --init-from
            base.pop("data", None)  # the dataset may have moved: take --data / $HOTSPOT_DATA
    merged = {**base, **given}
    if "arch" not in merged:
        raise ConfigError("--arch is required (or --resume with the --workdir of an existing run)")
    return TrainConfig(**merged)


def _workdir_of(cfg: TrainConfig) -> Path | None:
    """The work directory ``train(cfg)`` writes to (``--workdir`` or the default one), None if unknown yet."""
    if cfg.workdir:
        return Path(cfg.workdir)
    try:
        return Path(dataclasses.replace(cfg, pretrained=None, init_from=None, distill_from=None,
                                       distill_weight=None, distill_temperature=None, data=None).resolve().workdir)
    except HotspotError:
        return None


def _first_missing(path: Path) -> Path | None:
    """The topmost of ``path`` and its parents that does not exist yet (None if ``path`` exists)."""
    path = path.expanduser().absolute()
    if path.exists():
        return None
    while not path.parent.exists() and path.parent != path:
        path = path.parent
    return path


def main(argv: Sequence[str] | None = None) -> int:
    """Parse options, run the training, report where everything was written."""
    args = build_parser().parse_args(argv)
    from hotspot_jax.train import distributed

    launch = distributed.launch_from_args(args)
    cfg = config_from_args(args)
    distributed.initialize(launch)  # before JAX computes anything; nothing without the multi-process options
    from hotspot_jax.train.loop import train

    primary = distributed.is_primary()  # process 0 prints; the others only their errors

    def log(msg: str) -> None:
        if primary:
            print(msg, file=sys.stderr, flush=True)

    workdir = _workdir_of(cfg)
    made = _first_missing(workdir) if workdir is not None and primary else None  # what train() will create
    try:
        with distributed.failing_together(launch):
            result = train(cfg, resume=args.resume, overwrite=args.overwrite, progress=not args.no_progress, log=log)
    except BaseException:
        if made is not None and made.is_dir() and not (workdir / "config.json").exists():
            shutil.rmtree(made, ignore_errors=True)  # made by this call, which failed before the run began
        raise
    if launch is not None:
        distributed.shutdown()  # every process got here (an agreed interruption too): leave together
    if result.interrupted:
        log(f"interrupted: saved {result.checkpoint}; rerun the same command to resume")
        return 130
    best = result.best or {}
    log(
        f"done: {result.epochs_done} epochs in {result.workdir}; chosen checkpoint: epoch {best.get('epoch')} "
        f"(val accuracy {best.get('val_accuracy', float('nan')):.4f})"
    )
    return 0
