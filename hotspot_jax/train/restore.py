"""Load a trained model for evaluation and prediction: ``load_trained(workdir or checkpoint dir)``.

A work directory resolves to its best checkpoint (``best/<step>``); a checkpoint directory
(``best/<step>``, ``checkpoints/<step>``, or ``checkpoints/`` / ``best/`` for their latest step) is
used as given. The model is rebuilt from the run's ``config.json``. A run with ``ema_decay > 0`` gives its
weight average, the variables its validation chose (hotspot_jax.train.ema; tests/test_ema.py).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from hotspot_jax.errors import ConfigError, DataError
from hotspot_jax.evaluate import decision_threshold
from hotspot_jax.train.checkpoint import BEST_DIR, LATEST_DIR, RunCheckpoints



@dataclasses.dataclass
class TrainedModel:
    """A trained network with its run configuration; ``predict_proba`` gives hotspot probabilities."""

    arch: str
    image_size: int
    config: dict[str, Any]
    manifest: Any  # SplitManifest | None
    model: nn.Module
    variables: dict[str, Any]
    checkpoint: Path  # the checkpoint directory the variables came from
    epoch: int | None = None  # epochs trained when the checkpoint was written
    operating_point: dict[str, Any] | None = None  # the validation-chosen threshold stored for this checkpoint
    _predict: Any = dataclasses.field(default=None, repr=False)

    @property
    def task(self):
        """The run's :class:`~hotspot_jax.data.tasks.Task` (hotspot for runs made before tasks existed)."""
        from hotspot_jax.data.tasks import task_of_config

        return task_of_config(self.config)

    @property
    def input_hw(self) -> tuple[int, int]:
        """The network input's (height, width): ``image_size`` square, or the run's ``aspect``."""
        from hotspot_jax.data.preprocess import input_hw

        return input_hw(self.image_size, self.config["run"].get("aspect", "square"))

    @property
    def initialisation(self) -> str:
        return self.config.get("initialisation", "unknown")

    def with_tta(self, mode: str) -> "TrainedModel":
        """The same weights predicting with test-time augmentation ``mode`` (``none`` or ``flips``)."""
        run = {**self.config["run"], "tta": mode}
        return dataclasses.replace(self, config={**self.config, "run": run}, _predict=None)

    def predict_proba(self, images: np.ndarray, batch_size: int = 256, progress: bool = False) -> np.ndarray:
        """The positive class's probability (hotspot; anomaly; for classes12 P(Hot-Spot) + P(Hot-Spot-Multi))
        for uint8 images ``(N, H, W[, 1])`` of any H x W."""
        from hotspot_jax.data.tasks import positive_scores

        return positive_scores(self.task, self.predict_class_proba(images, batch_size, progress))

    def predict_class_proba(self, images: np.ndarray, batch_size: int = 256, progress: bool = False) -> np.ndarray:
        """Softmax probabilities ``(N, classes)`` for uint8 images ``(N, H, W[, 1])`` of any H x W.

        Runs jitted on fixed-shape batches (the last one padded), so one compilation serves any N.
        """
        images = np.asarray(images)
        if images.ndim == 3:
            images = images[..., None]
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 1:
            raise DataError(
                f"predict_proba expects uint8 grayscale images (N, H, W) or (N, H, W, 1), "
                f"got {images.dtype} {images.shape}"
            )
        n = images.shape[0]
        if n == 0:
            return np.zeros((0, self.task.num_classes), np.float32)
        if batch_size < 1:
            raise ConfigError(f"batch size must be positive, got {batch_size}")
        batch = min(batch_size, n)
        if self._predict is None:
            self._predict = jax.jit(_predict_fn(self.model, self.input_hw, self.config["run"].get("tta", "none")))
        out = np.empty((n, self.task.num_classes), np.float32)
        starts = range(0, n, batch)
        for start in tqdm(starts, desc="predict", disable=not progress, unit="batch"):
            chunk = images[start : start + batch]
            valid = chunk.shape[0]
            if valid < batch:
                chunk = np.concatenate([chunk, np.repeat(chunk[:1], batch - valid, axis=0)])
            out[start : start + valid] = np.asarray(self._predict(self.variables, chunk))[:valid]
        return out


def _predict_fn(model: nn.Module, image_size: int | tuple[int, int], tta: str = "none"):
    """Class probabilities of uint8 images, as the run's evaluation computed them (its ``tta`` too)."""
    from hotspot_jax.train.step import class_probabilities

    def predict(variables, images):
        return class_probabilities(model, variables, images, image_size, tta)

    return predict


def read_config(workdir: Path) -> dict[str, Any]:
    """A run's ``config.json``; ConfigError naming the file when missing or unreadable."""
    path = workdir / "config.json"
    try:
        config = json.loads(path.read_text())
        config["run"]["arch"], config["run"]["image_size"]
    except FileNotFoundError:
        raise ConfigError(f"{workdir} is not a training work directory (no config.json)") from None
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ConfigError(f"{path} is not a valid run configuration ({err})") from None
    return config


def build_model(config: dict[str, Any], bn_axis_name: str | None = None, impl: Any = None) -> nn.Module:
    """The run's architecture with its task's head (2 classes, 12, or an own-data run's ``classes``; a contrastive
    run's projection, hotspot_jax.train.contrastive), in the run's compute dtype (``impl``: architectures.ops.impl;
    None: the backend's default)."""
    import architectures

    from hotspot_jax.data.tasks import task_of_config

    run = config["run"]
    dtype = jnp.bfloat16 if run.get("dtype") == "bfloat16" else jnp.float32
    if not is_contrastive(config):
        return architectures.create(run["arch"], num_classes=task_of_config(config).num_classes,
                                    bn_axis_name=bn_axis_name, dtype=dtype, impl=impl)
    from hotspot_jax.train.contrastive import ProjectedNetwork, network_outputs

    hidden = run.get("projection_hidden")
    network = architectures.create(run["arch"], num_classes=network_outputs(run["projection_dim"], hidden),
                                   bn_axis_name=bn_axis_name, dtype=dtype, impl=impl)
    if hidden is None:
        return network
    return ProjectedNetwork(network=network, projection_dim=run["projection_dim"])


def is_contrastive(config: dict[str, Any]) -> bool:
    """True for a self-supervised contrastive run (hotspot_jax.train.contrastive): its head is a projection with
    ``projection_dim`` outputs, not a classifier."""
    return config["run"].get("objective", "supervised") == "contrastive"


def require_classifier(tm: "TrainedModel", use: str) -> None:
    """ConfigError, one line, when ``tm`` is a contrastive run, whose head is no classifier and so cannot ``use``."""
    if is_contrastive(tm.config):
        raise ConfigError(f"{tm.checkpoint.parent.parent} is a self-supervised contrastive run: its head projects, it "
                          f"does not classify, so it cannot {use}; start a run from it with --init-from")


def abstract_variables(model: nn.Module, image_size: int | tuple[int, int]) -> dict[str, Any]:
    """Shapes and dtypes of ``{"params", "batch_stats"}`` (no computation)."""
    from hotspot_jax.data.preprocess import size_hw

    dummy = jax.ShapeDtypeStruct((1, *size_hw(image_size), 3), jnp.float32)
    shapes = jax.eval_shape(
        lambda x: model.init({"params": jax.random.PRNGKey(0), "dropout": jax.random.PRNGKey(0)}, x, train=False),
        dummy,
    )
    return {"params": shapes["params"], "batch_stats": shapes.get("batch_stats", {})}


def resolve_checkpoint(path: Path, option: str) -> Path:
    """The checkpoint directory a user path names: a work directory's best checkpoint (its latest when it has
    no best), ``best``/``checkpoints`` for their latest step, or a ``<kind>/<step>`` directory as given."""
    if not path.exists():
        raise ConfigError(f"{option} {path} does not exist")
    try:
        workdir, kind, step = _resolve(path)
    except ConfigError as err:
        raise ConfigError(f"{option}: {err}") from None
    if step is not None:
        return workdir / kind / str(step)
    ckpts = RunCheckpoints(workdir, read_only=True)
    try:
        if kind in ("", BEST_DIR) and ckpts.best_step() is not None:
            return workdir / BEST_DIR / str(ckpts.best_step())
        if kind in ("", LATEST_DIR) and ckpts.latest_step() is not None:
            return workdir / LATEST_DIR / str(ckpts.latest_step())
    finally:
        ckpts.close()
    raise ConfigError(f"{option} {path}: that run has no checkpoint yet")


def _resolve(path: Path) -> tuple[Path, str, int | None]:
    """(work directory, which checkpoint kind, step or None for the default) for a user path."""
    if (path / "config.json").is_file():
        return path, "", None
    if path.name in (LATEST_DIR, BEST_DIR) and (path.parent / "config.json").is_file():
        return path.parent, path.name, None
    if path.name.isdigit() and path.parent.name in (LATEST_DIR, BEST_DIR):
        if (path.parent.parent / "config.json").is_file():
            return path.parent.parent, path.parent.name, int(path.name)
    raise ConfigError(
        f"{path} is neither a training work directory (with config.json) nor a checkpoint inside one "
        f"({BEST_DIR}/<step> or {LATEST_DIR}/<step>)"
    )


def load_trained(path: str | Path) -> TrainedModel:
    """Load the model of a work directory (its best checkpoint) or of a checkpoint directory inside one."""
    path = Path(path).expanduser()
    if not path.exists():
        raise ConfigError(f"{path} does not exist")
    workdir, kind, step = _resolve(path)
    config = read_config(workdir)
    model = build_model(config)
    image_size = int(config["run"]["image_size"])
    target = abstract_variables(model, image_size)
    ckpts = RunCheckpoints(workdir, read_only=True)
    try:
        if kind == "":
            kind = BEST_DIR if ckpts.best_step() is not None else LATEST_DIR
        if kind == BEST_DIR:
            step = ckpts.best_step() if step is None else step
            if step is None or step not in ckpts.best.all_steps():
                raise ConfigError(f"{workdir / BEST_DIR} holds no checkpoint{'' if step is None else f' {step}'}")
            variables, meta = ckpts.restore_best(target, step)
        else:
            step = ckpts.latest_step() if step is None else step
            if step is None or step not in ckpts.latest.all_steps():
                raise ConfigError(f"{workdir / LATEST_DIR} holds no checkpoint{'' if step is None else f' {step}'}")
            variables, meta = _restore_variables_from_state(ckpts, step, model, config, target)
    except (ValueError, KeyError, OSError) as err:
        raise ConfigError(f"cannot restore checkpoint {step} of {workdir / kind}: {err}") from None
    finally:
        ckpts.close()
    return TrainedModel(
        arch=config["run"]["arch"],
        image_size=image_size,
        config=config,
        manifest=_load_manifest(workdir),
        model=model,
        variables=variables,
        checkpoint=workdir / kind / str(step),
        epoch=meta.get("epochs_done"),
        operating_point=decision_threshold.read(workdir, workdir / kind / str(step), config.get("created")),
    )


def _restore_variables_from_state(ckpts, step, model, config, target):
    """The variables to evaluate of an epoch checkpoint's full state: its weight average when the run keeps one
    (``ema_decay``), else its weights (hotspot_jax.train.ema.evaluated_variables)."""
    from hotspot_jax.train.ema import evaluated_variables
    from hotspot_jax.train.levers import make_optimizer
    from hotspot_jax.train.state import create_state

    run = config["run"]
    tx = make_optimizer(run, int(config.get("steps_per_epoch") or 1))  # a schedule adds a step count to opt_state
    full = jax.eval_shape(lambda v: create_state(v, tx, run.get("ema_decay", 0.0)), target)
    state, meta = ckpts.restore(step, full)
    return evaluated_variables(state), meta


def _load_manifest(workdir: Path):
    path = workdir / "manifest.json"
    if not path.is_file():
        return None
    from hotspot_jax.data import SplitManifest

    return SplitManifest.from_json(path)
