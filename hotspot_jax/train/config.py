"""A training run's configuration: the study's defaults, profiles, validation and run identity.

Two runs are "the same run" (so a work directory may be resumed) when every field in
:data:`IDENTITY_FIELDS` matches; ``epochs``, ``keep``, ``eval_batch_size`` and the data path may change.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from pathlib import Path
from typing import Any

from hotspot_jax.errors import ConfigError

PROFILES = {"paper": None, "cpu": 64}  # image size: None = the architecture's input_size
DTYPES = ("float32", "bfloat16")
TTA_MODES = ("none", "flips")  # test-time augmentation (hotspot_jax.train.step.tta_views)
IDENTITY_FIELDS = (
    "arch", "image_size", "batch_size", "lr", "momentum", "weight_decay", "seed", "dtype",
    "pretrained_sha256", "limit_train", "limit_eval",
    # levers beyond the study (hotspot_jax.train.levers); a stored config without them had the defaults
    "epochs_schedule", "lr_schedule", "warmup_epochs", "online_augment", "no_anomaly_ratio",
    "label_smoothing", "mixup_alpha", "aspect", "ema_decay",
    # tasks and starting points (hotspot_jax.data.tasks); a stored config without them is a hotspot run from its init
    "task", "leave_out", "init_from_checkpoint", "no_anomaly_pools", "pool_no_anomaly",
    # a cross-validation fold of the hotspot training pool (hotspot_jax.data.cv); None: the seed's own split
    "cv_fold",
    # knowledge distillation (hotspot_jax.train.distill); None: off
    "distill_checkpoints", "distill_weight", "distill_temperature",
    # self-supervised contrastive runs (hotspot_jax.train.contrastive); supervised: the labels' cross-entropy
    "objective", "projection_dim", "contrastive_temperature", "projection_hidden",
)


@dataclasses.dataclass
class TrainConfig:
    """Every option of a training run; defaults are the study's (SGD-momentum, lr 1e-3, batch 32, 40 epochs)."""

    arch: str
    data: str | None = None  # dataset zip/folder; None: $HOTSPOT_DATA
    pretrained: str | None = None  # torchvision .pth file; None: from scratch
    epochs: int = 40
    batch_size: int = 32
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 1e-4
    image_size: int | None = None  # None: from the profile
    profile: str = "paper"
    seed: int = 0
    eval_batch_size: int = 256
    keep: int = 3
    dtype: str = "float32"
    limit_train: int | None = None  # train on a seeded random subset of this many images (tests, smoke runs)
    limit_eval: int | None = None  # evaluate on the first N images of each evaluation split
    workdir: str | None = None  # None: runs/<arch>-s<seed>-<size>px
    pretrained_sha256: str | None = None  # filled by resolve()
    # levers beyond the study, all off by default (see hotspot_jax.train.levers)
    lr_schedule: str = "constant"  # constant | cosine (warmup_epochs of linear warmup, then cosine to 0)
    warmup_epochs: int = 0
    online_augment: str = "none"  # none | flip | flip-shift, random per image inside the jitted step
    no_anomaly_ratio: float = 1.0  # training No-Anomaly images per training hotspot (extra ones from unused)
    init_from: str | None = None  # a run directory or checkpoint to start from (a new head if the classes differ)
    init_from_checkpoint: str | None = None  # filled by resolve(): the checkpoint directory it names
    label_smoothing: float = 0.0  # target (1 - s) on the class and s / K on every class (hotspot_jax.train.step)
    mixup_alpha: float = 0.0  # mixup inside each batch, lam ~ Beta(alpha, alpha); 0: off
    ema_decay: float = 0.0  # evaluate a moving average of the weights with this decay (hotspot_jax.train.ema); 0: off
    tta: str = "none"  # test-time augmentation of every evaluation and prediction: none | flips
    aspect: str = "square"  # network input: image_size square, or "source": the images' 5:3 shape, image_size wide
    # the operating point: the threshold chosen on validation for this sensitivity (hotspot_jax.evaluate.decision_threshold)
    target_sensitivity: float = 0.95
    task: str | None = None  # hotspot | anomaly | classes12 | own (hotspot_jax.data.tasks); None: own for one's
    # own images (--data a folder of class folders or a CSV), else hotspot
    leave_out: str | None = None  # "hotspot": split only images the hotspot split of this seed trains on or leaves unused;
    # "hotspot-any-seed": only images no hotspot split of any seed validates or tests on (fixed pools)
    no_anomaly_pools: str = "study"  # the hotspot split's No-Anomaly pools: study | fixed (hotspot_jax.data.protocol)
    # No-Anomaly images of the fixed layout's pretraining pool added to the training negatives; each epoch still
    # trains on the protocol's number of No-Anomaly images, drawn afresh (hotspot_jax.train.levers.add_pool_no_anomaly)
    pool_no_anomaly: int = 0
    cv_fold: str | None = None  # "k/K": fold k of K of the seed's training pool (hotspot_jax.data.cv); None: off
    # knowledge distillation (hotspot_jax.train.distill): teacher runs (run or checkpoint directories); None: off
    distill_from: list[str] | None = None
    distill_checkpoints: list[str] | None = None  # filled by resolve(): the checkpoint directory each teacher names
    distill_weight: float | None = None  # A in (1 - A) * hard loss + A * T^2 * KL; None: 0.5 with teachers
    distill_temperature: float | None = None  # T; None: 2.0 with teachers
    # supervised (the labels' cross-entropy) | contrastive (SimCLR's NT-Xent on two views, labels unread;
    # hotspot_jax.train.contrastive): the head then has projection_dim outputs
    objective: str = "supervised"
    projection_dim: int | None = None  # None: 128 for a contrastive run
    contrastive_temperature: float | None = None  # None: 0.2 for a contrastive run
    projection_hidden: int | None = None  # a contrastive run's MLP projection width; None: a linear projection

    @property
    def epochs_schedule(self) -> int | None:
        """The epoch count a schedule depends on (part of the identity only when there is a schedule)."""
        return None if self.lr_schedule == "constant" else self.epochs

    def resolve(self) -> "TrainConfig":
        """Canonical architecture name, image size from the profile, checked numbers, default workdir."""
        import architectures

        spec = architectures.get(self.arch)  # ConfigError listing valid names
        if self.profile not in PROFILES:
            raise ConfigError(f"unknown --profile {self.profile!r}; use one of {', '.join(PROFILES)}")
        size = self.image_size or PROFILES[self.profile] or spec.input_size
        if size < spec.min_input_size:
            raise ConfigError(
                f"--image-size {size} is below {spec.name}'s minimum input size {spec.min_input_size}"
            )
        if self.dtype not in DTYPES:
            raise ConfigError(f"unknown --dtype {self.dtype!r}; use one of {', '.join(DTYPES)}")
        for option, value in (("--epochs", self.epochs), ("--keep", self.keep)):
            if value < 1:
                raise ConfigError(f"{option} must be at least 1, got {value}")
        for option, value in (("--lr", self.lr), ("--momentum", self.momentum), ("--weight-decay", self.weight_decay)):
            if not (value >= 0 and value < float("inf")):
                raise ConfigError(f"{option} must be a finite non-negative number, got {value}")
        for option, value in (("--limit-train", self.limit_train), ("--limit-eval", self.limit_eval)):
            if value is not None and value < 1:
                raise ConfigError(f"{option} must be at least 1, got {value}")
        pretrained, sha = None, None
        if self.pretrained and self.pretrained.lower() != "none":
            path = Path(self.pretrained).expanduser()
            if not path.is_file():
                raise ConfigError(f"--pretrained file {path} does not exist")
            pretrained, sha = str(path.resolve()), file_sha256(path)
        from hotspot_jax.train.levers import ONLINE_AUGMENTS, SCHEDULES

        if self.lr_schedule not in SCHEDULES:
            raise ConfigError(f"unknown --lr-schedule {self.lr_schedule!r}; use one of {', '.join(SCHEDULES)}")
        if self.online_augment not in ONLINE_AUGMENTS:
            raise ConfigError(f"unknown --online-augment {self.online_augment!r}; use one of {', '.join(ONLINE_AUGMENTS)}")
        if self.warmup_epochs < 0:
            raise ConfigError(f"--warmup-epochs must be at least 0, got {self.warmup_epochs}")
        if not (self.no_anomaly_ratio >= 1 and self.no_anomaly_ratio < float("inf")):
            raise ConfigError(f"--no-anomaly-ratio must be a finite number >= 1, got {self.no_anomaly_ratio}")
        from hotspot_jax.evaluate.decision_threshold import check_target

        check_target(self.target_sensitivity)
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ConfigError(f"--label-smoothing must be in [0, 1), got {self.label_smoothing}")
        if not (0.0 <= self.mixup_alpha < float("inf")):
            raise ConfigError(f"--mixup-alpha must be a finite number >= 0, got {self.mixup_alpha}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ConfigError(f"--ema-decay must be in [0, 1) (0: off; e.g. 0.99 or 0.999), got {self.ema_decay}")
        from hotspot_jax.data.preprocess import ASPECTS

        if self.aspect not in ASPECTS:
            raise ConfigError(f"unknown --aspect {self.aspect!r}; use one of {', '.join(ASPECTS)}")
        if self.tta not in TTA_MODES:
            raise ConfigError(f"unknown --tta {self.tta!r}; use one of {', '.join(TTA_MODES)}")
        from hotspot_jax.data.tasks import TASK_NAMES

        own = _is_own_data(self.data)
        task_name = self.task or ("own" if own else "hotspot")
        if task_name not in TASK_NAMES:
            raise ConfigError(f"unknown --task {task_name!r}; use one of {', '.join(TASK_NAMES)}")
        if own and task_name != "own":
            raise ConfigError(f"--data {self.data or '$HOTSPOT_DATA'} holds one's own labelled images: their task is "
                              f"their own classes (--task own, the default for them), not {task_name}")
        from hotspot_jax.data.protocol import NO_ANOMALY_POOL_LAYOUTS
        from hotspot_jax.data.tasks import LEAVE_OUTS

        if self.leave_out is not None and self.leave_out not in LEAVE_OUTS:
            raise ConfigError(f"--leave-out {self.leave_out!r}: use one of {', '.join(LEAVE_OUTS)}")
        if self.leave_out and task_name not in ("anomaly", "classes12"):
            raise ConfigError(f"--leave-out {self.leave_out} is for an anomaly or classes12 run that will start a "
                              "hotspot run")
        if self.no_anomaly_pools not in NO_ANOMALY_POOL_LAYOUTS:
            raise ConfigError(f"unknown --no-anomaly-pools {self.no_anomaly_pools!r}; use one of "
                              f"{', '.join(NO_ANOMALY_POOL_LAYOUTS)}")
        if self.no_anomaly_pools != "study" and not (task_name == "hotspot" or self.leave_out):
            raise ConfigError(f"--no-anomaly-pools {self.no_anomaly_pools} applies to the hotspot task or to a run "
                              "that leaves the hotspot split out (--leave-out)")
        if self.leave_out == "hotspot-any-seed" and self.no_anomaly_pools != "fixed":
            raise ConfigError("--leave-out hotspot-any-seed needs --no-anomaly-pools fixed")
        if self.no_anomaly_pools != "study" and self.no_anomaly_ratio != 1.0:
            raise ConfigError("--no-anomaly-ratio above 1 takes its images from the realistic test set of the study's "
                              "layout; it is not available with --no-anomaly-pools fixed")
        if isinstance(self.pool_no_anomaly, bool) or not isinstance(self.pool_no_anomaly, int) or self.pool_no_anomaly < 0:
            raise ConfigError(f"--pool-no-anomaly must be a whole number >= 0, got {self.pool_no_anomaly!r}")
        if self.pool_no_anomaly and (task_name != "hotspot" or self.no_anomaly_pools != "fixed"):
            raise ConfigError("--pool-no-anomaly takes its images from the pretraining pool of the fixed No-Anomaly "
                              "layout: it needs the hotspot task and --no-anomaly-pools fixed")
        if self.pool_no_anomaly and self.limit_train:
            raise ConfigError("--pool-no-anomaly and --limit-train together are not supported: a subset would not keep "
                              "the added images apart from the protocol's; use one or the other")
        if self.pool_no_anomaly and self.distill_from:
            raise ConfigError("--pool-no-anomaly and distillation together are not supported: the teachers' targets "
                              "cover the protocol's training images only; use one or the other")
        cv_fold = None
        if self.cv_fold is not None:
            from hotspot_jax.data.cv import fold_label, parse_cv_fold

            cv_fold = fold_label(*parse_cv_fold(self.cv_fold))
            if task_name != "hotspot":
                raise ConfigError(f"--cv-fold splits the hotspot task's training pool; it does not apply to --task {task_name}")
            if self.no_anomaly_ratio != 1.0:
                raise ConfigError("--cv-fold with --no-anomaly-ratio: the extra No-Anomaly images come from the realistic "
                                  "test set, which a cross-validation fold does not have; use one or the other")
        if pretrained and self.init_from:
            raise ConfigError("--pretrained and --init-from both give initial weights; use one")
        init_from, init_checkpoint = None, None
        if self.init_from:
            from hotspot_jax.train.restore import resolve_checkpoint

            init_checkpoint = str(resolve_checkpoint(Path(self.init_from).expanduser(), "--init-from").resolve())
            init_from = str(Path(self.init_from).expanduser().resolve())
        distill = _resolve_distill(self.distill_from, self.distill_weight, self.distill_temperature)
        contrastive = self._resolve_contrastive(distill)
        suffix = "" if task_name == "hotspot" else f"-{task_name}"
        fold = "-cv{}of{}".format(*cv_fold.split("/")) if cv_fold else ""
        workdir = self.workdir or os.path.join("runs", f"{spec.name}{suffix}-s{self.seed}-{size}px{fold}")
        if Path(workdir).expanduser().exists() and not Path(workdir).expanduser().is_dir():
            raise ConfigError(f"--workdir {workdir} is a file, not a directory; give a directory (new or a run's)")
        return dataclasses.replace(
            self, arch=spec.name, image_size=size, pretrained=pretrained, pretrained_sha256=sha, workdir=workdir,
            init_from=init_from, init_from_checkpoint=init_checkpoint, task=task_name, data=resolve_data(self.data),
            cv_fold=cv_fold, **distill, **contrastive,
        )

    def _resolve_contrastive(self, distill: dict[str, Any]) -> dict[str, Any]:
        """``projection_dim`` and ``contrastive_temperature`` of a resolved config (their defaults for a contrastive
        run, None otherwise; ``projection_hidden`` stays as given, None for a linear projection); ConfigError for a
        setting a contrastive run cannot take (tests/test_contrastive.py)."""
        from hotspot_jax.train.contrastive import OBJECTIVES, PROJECTION_DIM, TEMPERATURE

        if self.objective not in OBJECTIVES:
            raise ConfigError(f"unknown --objective {self.objective!r}; use one of {', '.join(OBJECTIVES)}")
        if self.objective == "supervised":
            for option, value in (("--projection-dim", self.projection_dim),
                                  ("--contrastive-temperature", self.contrastive_temperature),
                                  ("--projection-hidden", self.projection_hidden)):
                if value is not None:
                    raise ConfigError(f"{option} is for a contrastive run (--objective contrastive)")
            return {}
        dim = PROJECTION_DIM if self.projection_dim is None else self.projection_dim
        temperature = TEMPERATURE if self.contrastive_temperature is None else float(self.contrastive_temperature)
        for option, value in (("--projection-dim", dim), ("--projection-hidden", self.projection_hidden)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 2):
                raise ConfigError(f"{option} must be a whole number >= 2, got {value!r}")
        if not (0.0 < temperature < float("inf")):
            raise ConfigError(f"--contrastive-temperature must be a finite number > 0, got {temperature}")
        if self.online_augment == "none":
            raise ConfigError("--objective contrastive compares two augmented views of each image: give --online-augment "
                              "(crop-flip-jitter is made for it)")
        refused = [option for option, on in (("--label-smoothing", self.label_smoothing), ("--mixup-alpha", self.mixup_alpha),
                                             ("--distill-from", distill["distill_from"]),
                                             ("--tta", self.tta != "none")) if on]
        if refused:
            raise ConfigError(f"--objective contrastive reads no labels and has no classes: {', '.join(refused)} "
                              "does not apply")
        refused = [option for option, on in (("--no-anomaly-ratio", self.no_anomaly_ratio != 1.0),
                                             ("--pool-no-anomaly", self.pool_no_anomaly),
                                             ("--cv-fold", self.cv_fold is not None)) if on]
        if refused:
            raise ConfigError(f"--objective contrastive trains on its split's training images alone: {', '.join(refused)} "
                              "(which draws or splits them by label) does not apply")
        if self.batch_size < 2:
            raise ConfigError("--objective contrastive needs --batch-size >= 2: the other images of a batch are the "
                              "negatives")
        return {"projection_dim": dim, "contrastive_temperature": temperature}  # projection_hidden: as given

    @property
    def input_hw(self) -> tuple[int, int]:
        """The network input's (height, width) (after :meth:`resolve`, which fixes ``image_size``)."""
        from hotspot_jax.data.preprocess import input_hw

        return input_hw(self.image_size, self.aspect)

    @property
    def initialisation(self) -> str:
        """How the weights were initialised, as recorded in the config and every result."""
        if self.init_from_checkpoint is not None:
            return f"from run:{self.init_from_checkpoint}"
        if self.pretrained is None:
            return "scratch"
        return f"torchvision:{Path(self.pretrained).name} (sha256 {self.pretrained_sha256[:12]}), new head"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def identity(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in IDENTITY_FIELDS}


_LEVER_DEFAULTS = {"epochs_schedule": None, "lr_schedule": "constant", "warmup_epochs": 0, "online_augment": "none",
                   "no_anomaly_ratio": 1.0, "task": "hotspot", "leave_out": None, "init_from_checkpoint": None,
                   "no_anomaly_pools": "study", "pool_no_anomaly": 0, "ema_decay": 0.0, "cv_fold": None, "distill_checkpoints": None,
                   "distill_weight": None, "distill_temperature": None, "objective": "supervised",
                   "projection_dim": None, "contrastive_temperature": None, "projection_hidden": None}


def identity_differences(stored: dict[str, Any], new: TrainConfig) -> list[str]:
    """``field: stored -> new`` for every identity field that differs (levers missing from an older
    stored config count as their defaults)."""
    def old(k: str) -> Any:
        if k == "epochs_schedule":
            return None if stored.get("lr_schedule", "constant") == "constant" else stored.get("epochs")
        return stored.get(k, _LEVER_DEFAULTS.get(k))

    return [f"{k}: {old(k)!r} -> {getattr(new, k)!r}" for k in IDENTITY_FIELDS if old(k) != getattr(new, k)]


DISTILL_WEIGHT = 0.5  # --distill-weight when teachers are given without one
DISTILL_TEMPERATURE = 2.0  # --distill-temperature likewise


def _resolve_distill(teachers, weight, temperature) -> dict[str, Any]:
    """The distillation fields of a resolved config: absolute teacher directories, their checkpoints, weight and
    temperature (defaults with teachers); all None without teachers. ConfigError for a bad value."""
    if not teachers:
        for option, value in (("--distill-weight", weight), ("--distill-temperature", temperature)):
            if value is not None:
                raise ConfigError(f"{option} needs teacher runs (--distill-from RUN_DIR ...)")
        return {"distill_from": None, "distill_checkpoints": None, "distill_weight": None, "distill_temperature": None}
    if isinstance(teachers, str):
        teachers = [teachers]
    weight = DISTILL_WEIGHT if weight is None else float(weight)
    temperature = DISTILL_TEMPERATURE if temperature is None else float(temperature)
    if not 0.0 <= weight <= 1.0:
        raise ConfigError(f"--distill-weight must be in [0, 1] (the soft targets' share of the loss), got {weight}")
    if not (0.0 < temperature < float("inf")):
        raise ConfigError(f"--distill-temperature must be a finite number > 0, got {temperature}")
    from hotspot_jax.train.checkpoint import BEST_DIR
    from hotspot_jax.train.restore import resolve_checkpoint

    dirs, checkpoints = [], []
    for teacher in teachers:
        path = Path(teacher).expanduser()
        checkpoint = resolve_checkpoint(path, "--distill-from").resolve()
        if (path / "config.json").is_file() and checkpoint.parent.name != BEST_DIR:  # restore.py fell back to latest
            raise ConfigError(f"--distill-from {path}: that run has no best checkpoint (interrupted in its first "
                              "epoch?); finish it, or name a checkpoint directory (checkpoints/<step>) to use that one")
        checkpoints.append(str(checkpoint))
        dirs.append(str(path.resolve()))
    if len(set(checkpoints)) != len(checkpoints):
        raise ConfigError("--distill-from names the same teacher checkpoint twice")
    return {"distill_from": dirs, "distill_checkpoints": checkpoints, "distill_weight": weight,
            "distill_temperature": temperature}


def _is_own_data(data: str | None) -> bool:
    """True when the run's data (``data``, else $HOTSPOT_DATA) is one's own image folder or CSV."""
    from hotspot_jax.data.loading import DATA_ENV
    from hotspot_jax.data.own_data import is_own_data

    path = data or os.environ.get(DATA_ENV, "").strip()
    return bool(path) and is_own_data(path)


def resolve_data(data: str | None) -> str | None:
    """The dataset path a run uses, absolute, so config.json records it: ``data``, else ``$HOTSPOT_DATA``,
    else None (the built dataset cache); a DataError when the given path does not exist."""
    from hotspot_jax.errors import DataError

    source = "--data"
    if not data:
        data, source = os.environ.get("HOTSPOT_DATA", "").strip() or None, "$HOTSPOT_DATA"
    if data is None:
        return None
    path = Path(data).expanduser()
    if not path.exists():
        raise DataError(f"{source} {data} does not exist; give the InfraredSolarModules zip or its folder, or one's own images (docs/tasks.md)")
    return str(path.resolve())


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
