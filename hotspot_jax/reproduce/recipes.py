"""Named training recipes: the study's settings (``paper``), the same at a CPU-sized input
(``paper-cpu``), this project's own recipe without ImageNet weights (``best``) and its 12-class counterpart
(``classes12``, issue 24).

A recipe maps (architecture, seed) to a :class:`~hotspot_jax.train.config.TrainConfig`; options that
the study did not have (schedule, online augmentation, more No-Anomaly images, in-domain pretraining)
are only passed when they differ from the defaults, so ``paper`` runs are plain ``scripts/train.py`` runs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any

from hotspot_jax.errors import ConfigError

# paper-cpu input size: 64 px (the training CLI's --profile cpu) was measured too slow for six networks x
# 3 seeds x 40 epochs on the 2-core CPU (docs/results.md, "paper-cpu and the CPU budget"); 32 px is about
# the source resolution (24 x 40), and AlexNet is raised to its minimum input of 63 px.
CPU_IMAGE_SIZE = 32
# best input size: measured on ShuffleNetV2 seed 0 (docs/results.md, levers): 32 px 0.885, 48 px 0.912,
# 64 px 0.919 test accuracy, at 2.1, 4.0 and ~8.5 min a run; 48 px keeps 18 runs inside the CPU budget.
BEST_IMAGE_SIZE = 48
# classes12: best's input, schedule, augmentation and lr (chosen on the hotspot task's validation split),
# without pretraining (a 12-class run would pretrain on its own task), 15,836 training images (14,000 originals,
# the rare classes x4); the epochs were chosen on the classes12 validation split (docs/results.md).
# best-v2: best plus the levers kept by rules written before their runs, each judged on the validation split's
# ROC AUC over five seeds (results/issue23/lever_rules.md): 40 shared pretraining epochs, 64 px, test-time flips
BEST_V2_PRETRAIN_EPOCHS = 40
BEST_V2_IMAGE_SIZE = 64
CLASSES12_EPOCHS = 40  # chosen on validation: 0.801 after 40 epochs, 0.749 after 15 (ShuffleNetV2, seed 0)


# the tasks a recipe can run (hotspot_jax.data.tasks; "own" data has no fixed split to reproduce)
RECIPE_TASKS = ("hotspot", "anomaly", "classes12")

# settings added after results were committed: left out of the fingerprint at these (default) values, so
# the committed runs of a recipe stay its finished runs
ADDED_LATER = {"label_smoothing": 0.0, "mixup_alpha": 0.0, "tta": "none", "aspect": "square", "task": "hotspot",
               "no_anomaly_pools": "study", "pretrain_pool": "seed", "ema_decay": 0.0, "distill_teachers": None,
               "distill_weight": 0.5, "distill_temperature": 2.0, "pretrain_augment": None,
               "pool_no_anomaly": 0, "formula_epochs": 0, "formula_classes": 100, "formula_per_class": 100,
               "ssl_epochs": 0, "ssl_lr": 0.1, "ssl_batch_size": 256, "ssl_projection_hidden": 0}
PRETRAIN_POOLS = ("seed", "shared")


@dataclasses.dataclass(frozen=True)
class Recipe:
    """Every setting of a recipe; ``image_size`` None means each network's own input size (227/224), a
    number is raised to a network's minimum input size where it is below it (AlexNet: 63)."""

    name: str
    description: str
    image_size: int | None = None
    epochs: int = 40
    batch_size: int = 32
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 1e-4
    # levers (defaults = the study)
    lr_schedule: str = "constant"  # constant | cosine (per step, after warmup_epochs of linear warmup)
    warmup_epochs: int = 0
    online_augment: str = "none"  # one of levers.ONLINE_AUGMENTS (random per image, inside the jitted step)
    no_anomaly_ratio: float = 1.0  # training No-Anomaly images per augmented training hotspot (study: 1)
    label_smoothing: float = 0.0
    mixup_alpha: float = 0.0
    ema_decay: float = 0.0  # the run (not its pretraining) validates and tests a moving average of its weights; 0: off
    tta: str = "none"  # none | flips: test-time augmentation of validation and test
    aspect: str = "square"  # square | source (5:3, image_size wide), pretraining and training
    pretrain_epochs: int = 0  # in-domain 12-class pretraining epochs (0: none); hotspot task only
    pretrain_lr: float = 0.01
    pretrain_augment: str | None = None  # the pretraining's online augmentation; None: online_augment
    task: str = "hotspot"  # hotspot | anomaly | classes12 (hotspot_jax.data.tasks)
    no_anomaly_pools: str = "study"  # study | fixed: the hotspot split's No-Anomaly pools (hotspot_jax.data.protocol)
    # fine-tuning negatives: this many No-Anomaly images of the fixed layout's pretraining pool join the pool each
    # epoch's No-Anomaly images are drawn from (the count per epoch stays the protocol's; hotspot_jax.train.levers)
    pool_no_anomaly: int = 0
    # seed: each seed pretrains on what its hotspot split trains on or leaves unused; shared (fixed pools only):
    # one pretraining per network, on what no seed validates or tests on, starts every seed's run
    pretrain_pool: str = "seed"
    # knowledge distillation (hotspot_jax.train.distill): "<recipe>:<arch>,<arch>,...", the runs of that recipe with
    # the same seed teach each run (reproduce.runner.distill_teacher_dirs); None: off
    distill_teachers: str | None = None
    distill_weight: float = 0.5  # used only with distill_teachers
    distill_temperature: float = 2.0
    # formula-driven pretraining before the in-domain one (hotspot_jax.data.fractaldb): epochs of an own-task run on
    # formula_classes x formula_per_class fractal images, one per network, which starts the in-domain pretraining
    # (or, without one, the run); 0: none
    formula_epochs: int = 0
    formula_classes: int = 100
    formula_per_class: int = 100
    # self-supervised contrastive pretraining before the in-domain one (hotspot_jax.train.contrastive): epochs of a
    # SimCLR run on the shared pretraining pool's images, labels unread, one per network, which starts the in-domain
    # pretraining (or, without one, the run); 0: none. lr and batch: SimCLR's SGD at batch 256, not tuned here
    ssl_epochs: int = 0
    ssl_lr: float = 0.1
    ssl_batch_size: int = 256
    ssl_projection_hidden: int = 0  # > 0: SimCLR's two-layer MLP projection of this hidden width; 0: a linear one

    def __post_init__(self):
        """ConfigError for a task that does not exist or cannot take the recipe's settings: the in-domain
        pretraining is a classes12 run that leaves out the *hotspot* split's held-out images, so it can only
        start a hotspot run (an anomaly or classes12 target's test images are in its training data, which
        the no-leak check refuses), and more No-Anomaly images is a lever of the hotspot split
        (tests/test_reproduce_tasks.py)."""
        if self.task not in RECIPE_TASKS:
            raise ConfigError(f"unknown recipe task {self.task!r}; use one of {', '.join(RECIPE_TASKS)} (recipes run on "
                              "InfraredSolarModules; your own images train with scripts/train.py --data)")
        if self.task != "hotspot" and self.pretrain_epochs:
            raise ConfigError(
                f"recipe {self.name!r} pretrains in-domain ({self.pretrain_epochs} epochs of classes12 leaving out the "
                f"hotspot split's held-out images), which can only start a hotspot run: for --task {self.task} use "
                f"--recipe classes12 or add --set pretrain_epochs=0")
        if self.pretrain_pool not in PRETRAIN_POOLS:
            raise ConfigError(f"unknown pretrain_pool {self.pretrain_pool!r}; use one of {', '.join(PRETRAIN_POOLS)}")
        if self.pretrain_pool == "shared" and self.no_anomaly_pools != "fixed":
            raise ConfigError("pretrain_pool=shared needs no_anomaly_pools=fixed: only the fixed pools keep images "
                              "out of every seed's hotspot split")
        if self.task != "hotspot" and self.no_anomaly_pools != "study":
            raise ConfigError(f"recipe {self.name!r}: no_anomaly_pools applies to the hotspot task, not {self.task}")
        if self.task != "hotspot" and self.no_anomaly_ratio != 1.0:
            raise ConfigError(f"recipe {self.name!r}: no_anomaly_ratio applies to the hotspot task, not {self.task}")
        if self.distill_teachers is not None:
            self.teacher_runs()  # checks the form
        if self.formula_epochs < 0 or self.formula_classes < 2 or self.formula_per_class < 4:
            raise ConfigError(f"recipe {self.name!r}: formula_epochs >= 0, formula_classes >= 2 and "
                              "formula_per_class >= 4 (each class is split 70/15/15)")
        if self.ssl_epochs < 0 or self.ssl_batch_size < 2 or (self.ssl_projection_hidden != 0
                                                              and self.ssl_projection_hidden < 2):
            raise ConfigError(f"recipe {self.name!r}: ssl_epochs >= 0, ssl_batch_size >= 2 and ssl_projection_hidden "
                              "0 (a linear projection) or >= 2")
        if self.ssl_projection_hidden and not self.ssl_epochs:
            raise ConfigError(f"recipe {self.name!r}: ssl_projection_hidden shapes the self-supervised pretraining: "
                              "give ssl_epochs too")
        if self.ssl_epochs and self.formula_epochs:
            raise ConfigError(f"recipe {self.name!r}: formula-driven and self-supervised pretraining both start the "
                              "in-domain one; use one of formula_epochs and ssl_epochs")
        if self.ssl_epochs and self.pretrain_pool != "shared":
            raise ConfigError(f"recipe {self.name!r}: ssl_epochs trains on the shared pretraining pool (the images no "
                              "seed's hotspot split validates or tests on): it needs pretrain_pool=shared and "
                              "no_anomaly_pools=fixed")
        if self.pretrain_augment is not None:
            from hotspot_jax.train.levers import ONLINE_AUGMENTS  # imports JAX: only for a recipe that sets it

            if self.pretrain_augment not in ONLINE_AUGMENTS:
                raise ConfigError(f"unknown pretrain_augment {self.pretrain_augment!r}; use one of "
                                  f"{', '.join(ONLINE_AUGMENTS)}")

    @property
    def pretrain_online_augment(self) -> str:
        """The online augmentation of the in-domain pretraining: ``pretrain_augment``, else the recipe's own."""
        return self.online_augment if self.pretrain_augment is None else self.pretrain_augment

    def teacher_runs(self) -> tuple[str, list[str]] | None:
        """``(teacher recipe, [architecture, ...])`` of ``distill_teachers`` (None without); ConfigError for a
        value not of the form ``<recipe>:<arch>,<arch>``."""
        if self.distill_teachers is None:
            return None
        recipe, sep, archs = str(self.distill_teachers).partition(":")
        names = [a.strip() for a in archs.split(",") if a.strip()]
        if not sep or not recipe.strip() or not names:
            raise ConfigError(f"distill_teachers={self.distill_teachers!r}: use <recipe>:<arch>[,<arch>...], e.g. "
                              "best-v2:shufflenet,squeezenet,mobilenet_v2")
        return recipe.strip(), names

    def fingerprint(self) -> str:
        """Short hash of every setting except name/description: a finished run of another fingerprint is stale."""
        d = {k: v for k, v in dataclasses.asdict(self).items() if k not in ("name", "description")
             and not (k in ADDED_LATER and v == ADDED_LATER[k])}
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:12]

    def lever_options(self) -> dict[str, Any]:
        """TrainConfig options of the levers that differ from the study's defaults."""
        defaults = Recipe(name="", description="")
        out = {}
        for key in ("lr_schedule", "warmup_epochs", "online_augment", "no_anomaly_ratio", "label_smoothing",
                    "mixup_alpha", "ema_decay", "tta", "aspect", "task", "no_anomaly_pools", "pool_no_anomaly"):
            if getattr(self, key) != getattr(defaults, key):
                out[key] = getattr(self, key)
        return out

    def input_size(self, arch: str) -> int | None:
        """The recipe's image size for ``arch``, never below the network's minimum input (AlexNet needs 63 px);
        None: the profile's."""
        import architectures

        if self.image_size is None:
            return None
        return max(self.image_size, architectures.get(arch).min_input_size)

    def pretrain_config(self, arch: str, seed: int, workdir: str, data: str | None = None,
                        init_from: str | None = None):
        """The TrainConfig of a run's in-domain pretraining: an ordinary classes12 run on the images the hotspot
        split of ``seed`` trains on or leaves unused (``leave_out="hotspot"``), or with ``pretrain_pool="shared"``
        on the images no seed's split validates or tests on (``leave_out="hotspot-any-seed"``, seed 0 for every
        seed); cosine schedule with one warmup epoch, the recipe's input and batch, and
        :attr:`pretrain_online_augment`; started from ``init_from`` (the formula-driven or self-supervised
        pretraining) if given."""
        from hotspot_jax.train.config import TrainConfig

        size = self.input_size(arch)
        return TrainConfig(
            arch=arch, data=data, epochs=self.pretrain_epochs, batch_size=self.batch_size, lr=self.pretrain_lr,
            momentum=self.momentum, weight_decay=self.weight_decay, image_size=size, profile="paper",
            seed=0 if self.pretrain_pool == "shared" else seed, workdir=workdir, task="classes12",
            leave_out="hotspot-any-seed" if self.pretrain_pool == "shared" else "hotspot",
            no_anomaly_pools=self.no_anomaly_pools, lr_schedule="cosine",
            warmup_epochs=1 if self.pretrain_epochs > 1 else 0, online_augment=self.pretrain_online_augment,
            aspect=self.aspect, keep=1, init_from=init_from,
        )

    def formula_config(self, arch: str, workdir: str, images: str):
        """The TrainConfig of a network's formula-driven pretraining: an ordinary ``own``-task run on the fractal
        image folder ``images``, with the in-domain pretraining's schedule, learning rate, augmentation and input
        (seed 0: one per network, shared by every seed)."""
        from hotspot_jax.train.config import TrainConfig

        size = self.input_size(arch)
        return TrainConfig(
            arch=arch, data=images, epochs=self.formula_epochs, batch_size=self.batch_size, lr=self.pretrain_lr,
            momentum=self.momentum, weight_decay=self.weight_decay, image_size=size, profile="paper", seed=0,
            workdir=workdir, task="own", lr_schedule="cosine", warmup_epochs=1 if self.formula_epochs > 1 else 0,
            online_augment=self.pretrain_online_augment, aspect=self.aspect, keep=1,
        )

    def ssl_config(self, arch: str, workdir: str, data: str | None = None):
        """The TrainConfig of a network's self-supervised pretraining: a contrastive run (SimCLR views,
        ``crop-flip-jitter``) on the shared pretraining pool's images (the classes12 split that leaves out every
        seed's hotspot split, labels unread), cosine schedule, the recipe's input (seed 0: one per network)."""
        from hotspot_jax.train.config import TrainConfig

        return TrainConfig(
            arch=arch, data=data, epochs=self.ssl_epochs, batch_size=self.ssl_batch_size, lr=self.ssl_lr,
            momentum=self.momentum, weight_decay=self.weight_decay, image_size=self.input_size(arch), profile="paper",
            seed=0, workdir=workdir, task="classes12", leave_out="hotspot-any-seed", no_anomaly_pools="fixed",
            lr_schedule="cosine", warmup_epochs=1 if self.ssl_epochs > 1 else 0, online_augment="crop-flip-jitter",
            objective="contrastive", projection_hidden=self.ssl_projection_hidden or None, aspect=self.aspect, keep=1,
        )

    def train_config(self, arch: str, seed: int, workdir: str, data: str | None = None,
                     pretrained: str | None = None, init_from: str | None = None,
                     distill_from: list[str] | None = None):
        """The TrainConfig of one run of this recipe (``distill_from``: its teachers' run directories)."""
        from hotspot_jax.train.config import TrainConfig

        size = self.input_size(arch)
        options = self.lever_options()
        if init_from:
            options["init_from"] = init_from
        if distill_from:
            options.update(distill_from=list(distill_from), distill_weight=self.distill_weight,
                           distill_temperature=self.distill_temperature)
        elif self.distill_teachers is not None:
            raise ConfigError(f"recipe {self.name!r} distils from {self.distill_teachers}: give the teachers' run "
                              "directories (reproduce.runner.distill_teacher_dirs)")
        unknown = [k for k in options if k not in {f.name for f in dataclasses.fields(TrainConfig)}]
        if unknown:
            raise ConfigError(f"recipe {self.name!r} needs training options this version lacks: {', '.join(unknown)}")
        return TrainConfig(
            arch=arch, data=data, pretrained=pretrained, epochs=self.epochs, batch_size=self.batch_size,
            lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay, image_size=size,
            profile="paper", seed=seed, workdir=workdir, **options,
        )

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "fingerprint": self.fingerprint()}


BEST = Recipe(
    name="best",
    description=f"no ImageNet weights: in-domain 12-class pretraining on images outside the split's "
    f"validation and test sets, then fine-tuning with flips and shifts, cosine schedule; {BEST_IMAGE_SIZE} px",
    image_size=BEST_IMAGE_SIZE,
    epochs=12,
    lr=0.01,
    lr_schedule="cosine",
    warmup_epochs=1,
    online_augment="flip-shift",
    no_anomaly_ratio=1.0,
    pretrain_epochs=5,
    pretrain_lr=0.01,
)


RECIPES: dict[str, Recipe] = {
    "paper": Recipe(
        name="paper",
        description="the study's settings: each network's input size (227 AlexNet/SqueezeNet, 224 others), "
        "40 epochs, batch 32, SGD momentum 0.9, lr 1e-3 constant, weight decay 1e-4",
    ),
    "paper-cpu": Recipe(
        name="paper-cpu",
        description=f"the study's settings at {CPU_IMAGE_SIZE} px input (AlexNet: 63 px, its minimum)",
        image_size=CPU_IMAGE_SIZE,
    ),
    "best": BEST,
    # best + the kept levers (tests/test_reproduce_tasks.py: the same fingerprint as that --set)
    "best-v2": dataclasses.replace(
        BEST,
        name="best-v2",
        description=f"best with the levers kept on validation (issue 23, docs/results.md): one {BEST_V2_PRETRAIN_EPOCHS}-epoch "
        f"in-domain pretraining per network shared by every seed (fixed No-Anomaly pools), {BEST_V2_IMAGE_SIZE} px, "
        "test-time flips",
        image_size=BEST_V2_IMAGE_SIZE,
        pretrain_epochs=BEST_V2_PRETRAIN_EPOCHS,
        no_anomaly_pools="fixed",
        pretrain_pool="shared",
        tta="flips",
    ),
    "classes12": Recipe(
        name="classes12",
        description=f"all 12 classes, no ImageNet weights and no pretraining: best's settings ({BEST_IMAGE_SIZE} px, "
        f"flips and shifts, cosine schedule, lr 0.01) for {CLASSES12_EPOCHS} epochs",
        image_size=BEST_IMAGE_SIZE,
        epochs=CLASSES12_EPOCHS,
        lr=0.01,
        lr_schedule="cosine",
        warmup_epochs=1,
        online_augment="flip-shift",
        task="classes12",
    ),
}


def with_overrides(recipe: Recipe, items: list[str]) -> Recipe:
    """``recipe`` with ``KEY=VALUE`` settings replaced (for measuring one lever); the name records them,
    e.g. ``best+pretrain_epochs=0`` or ``paper-cpu+task=classes12``, so its results go to their own folder."""
    if not items:
        return recipe
    fields = {f.name: f for f in dataclasses.fields(Recipe) if f.name not in ("name", "description")}
    changes: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or key not in fields:
            raise ConfigError(f"--set expects KEY=VALUE with KEY one of {', '.join(fields)}; got {item!r}")
        default = getattr(recipe, key)
        try:
            if key == "image_size":
                changes[key] = None if value.lower() == "none" else int(value)
            elif isinstance(default, bool):
                changes[key] = value.lower() in ("1", "true", "yes")
            elif isinstance(default, int):
                changes[key] = int(value)
            elif isinstance(default, float):
                changes[key] = float(value)
            else:
                changes[key] = value
        except ValueError:
            raise ConfigError(f"--set {key}: {value!r} is not a valid {type(default).__name__}") from None
    name = recipe.name + "".join(f"+{k}={v}" for k, v in sorted(changes.items()))
    return dataclasses.replace(recipe, name=name, description=recipe.description + " | changed: "
                               + ", ".join(f"{k}={v}" for k, v in sorted(changes.items())), **changes)


def get_recipe(name: str) -> Recipe:
    """The recipe called ``name``; ConfigError listing the known ones otherwise."""
    if name not in RECIPES:
        raise ConfigError(f"unknown --recipe {name!r}; use one of {', '.join(RECIPES)}")
    return RECIPES[name]
