"""The training loop: data, model, resumable epochs, validation, checkpoint choice, final test metrics.

Every source of randomness is a function of (seed, epoch, step): the initial weights of ``seed``, the
batch order of (seed, epoch), dropout of (seed, step, device). A run resumed from any checkpoint
(epoch end, or mid-epoch after Ctrl-C) therefore ends with the same weights and metrics as an
uninterrupted one on the same machine.

Checkpoint rule: the best checkpoint is the epoch with the highest validation accuracy; ties go to the
lower validation loss, then to the earlier epoch. A run that keeps a weight average (``ema_decay > 0``)
validates, saves as best and tests the average (hotspot_jax.train.ema.evaluated_variables).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import signal
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Sequence

import jax
import numpy as np
from tqdm.auto import tqdm

from hotspot_jax.errors import ConfigError, DataError, HotspotError
from hotspot_jax.evaluate import decision_threshold
from hotspot_jax.train import batching, distributed, levers
from hotspot_jax.train.checkpoint import BEST_DIR, LATEST_DIR, RunCheckpoints
from hotspot_jax.train.config import TrainConfig, identity_differences
from hotspot_jax.train.ema import evaluated_variables
from hotspot_jax.train.files import write_json_atomic, write_jsonl_atomic
from hotspot_jax.train.state import create_state, init_variables, replace_head
from hotspot_jax.train.step import AXIS, make_eval_step, make_train_step

BEST_RULE = "highest validation accuracy; ties: lower validation loss, then earlier epoch"
BATCH_RULE = "last partial training batch dropped each epoch; order reshuffled each epoch from (seed, epoch)"
RUN_FILES = ("config.json", "manifest.json", "metrics.jsonl", "test_metrics.json", decision_threshold.FILE,
             "distill_targets.npz")  # hotspot_jax.train.distill.TARGETS_FILE
RUN_DIRS = (LATEST_DIR, BEST_DIR, "figures", "evaluation")
EVAL_SPLITS = ("test", "test_realistic")
STEP_DELAY_ENV = "HOTSPOT_TRAIN_STEP_DELAY"  # test hook: seconds to sleep after each step (interruption tests)


class TrainingError(HotspotError):
    """Training cannot go on (e.g. the loss became non-finite)."""


@dataclasses.dataclass
class RunResult:
    """What a call to :func:`train` did."""

    workdir: Path
    epochs_done: int
    best: dict[str, Any] | None
    interrupted: bool = False
    checkpoint: Path | None = None  # the checkpoint saved on interruption
    test_metrics: dict[str, Any] | None = None


def is_better(candidate: dict[str, Any], best: dict[str, Any] | None) -> bool:
    """The checkpoint rule: higher val accuracy wins; equal accuracy: lower val loss; else the earlier stays."""
    if best is None:
        return True
    if candidate["val_accuracy"] != best["val_accuracy"]:
        return candidate["val_accuracy"] > best["val_accuracy"]
    return candidate["val_loss"] < best["val_loss"]


# ----------------------------------------------------------------------------------------------- workdir
def environment() -> dict[str, Any]:
    """Library versions and devices, recorded in config.json."""
    import platform
    from importlib.metadata import PackageNotFoundError, version

    versions = {"python": platform.python_version()}
    for pkg in ("hotspot_jax", "jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy"):
        try:
            versions[pkg] = version(pkg)
        except PackageNotFoundError:
            versions[pkg] = None
    devices = jax.devices()  # every process's: the batch is split over all of them
    return {
        "versions": versions,
        "git_commit": _git_commit(),
        "platform": platform.platform(),
        "backend": jax.default_backend(),
        "process_count": jax.process_count(),  # > 1: a multi-process run (docs/scaling.md)
        "device_count": len(devices),
        "local_device_count": jax.local_device_count(),
        "device_kind": devices[0].device_kind,
        "devices": [str(d) for d in devices],
        "glibc_tunables": os.environ.get("GLIBC_TUNABLES", ""),  # huge pages or not: hotspot_jax/hugepages.py
    }


def _git_commit() -> str | None:
    """The commit of the code that ran (``+dirty`` with uncommitted changes), or None outside a git checkout."""
    import subprocess

    root = Path(__file__).resolve().parents[2]
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head.stdout.strip() + ("+dirty" if dirty else "")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def prepare_workdir(cfg: TrainConfig, resume: bool, overwrite: bool) -> dict[str, Any] | None:
    """Create/check the work directory; the stored config when it holds this same run, else None."""
    workdir = Path(cfg.workdir)
    try:
        workdir.mkdir(parents=True, exist_ok=True)
        probe = workdir / f".write-test-{os.getpid()}"
        probe.write_text("ok")
        probe.unlink()
    except OSError as err:
        raise ConfigError(f"work directory {workdir} is not writable ({err.strerror or err})") from None
    config_path = workdir / "config.json"
    if config_path.exists() and overwrite:
        clear_run(workdir)
        return None
    if config_path.exists():
        try:
            stored = json.loads(config_path.read_text())
            stored_run = stored["run"]
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise ConfigError(
                f"{config_path} is unreadable ({err}); use another --workdir, or --overwrite to replace it"
            ) from None
        diffs = identity_differences(stored_run, cfg)
        if diffs:
            raise ConfigError(
                f"work directory {workdir} holds another run's configuration ({'; '.join(diffs)}); "
                "use another --workdir, or --overwrite to replace that run"
            )
        return stored
    if resume:
        raise ConfigError(f"--resume: work directory {workdir} holds no run to resume (no config.json)")
    others = [p.name for p in workdir.iterdir() if not p.name.startswith(".")]
    if others and not overwrite:
        raise ConfigError(
            f"work directory {workdir} is not empty ({', '.join(sorted(others)[:3])}...) and holds no run; "
            "choose a new directory, or --overwrite to write the run beside those files"
        )
    return None


def clear_run(workdir: Path) -> None:
    """Remove a previous run's files (only the files a run writes; anything else stays)."""
    for name in RUN_FILES:
        (workdir / name).unlink(missing_ok=True)
    for name in RUN_DIRS:
        shutil.rmtree(workdir / name, ignore_errors=True)


# --------------------------------------------------------------------------------------------------- data
def _subset(split, n: int | None, seed: int, tag: int):
    """A seeded random subset of ``n`` rows (kept in their original order)."""
    from hotspot_jax.data import ArraySplit

    if n is None or n >= len(split):
        return split
    keep = np.sort(np.random.default_rng([seed, tag, 0xA11]).permutation(len(split))[:n])
    return ArraySplit(split.images[keep], split.labels[keep], split.ids[keep], split.class_names)


def load_data(cfg: TrainConfig, log: Callable[[str], None], dataset=None, progress: bool = True):
    """The split manifest of the run's task and the arrays of every split (counts printed)."""
    return load_run_data(cfg, log, dataset, progress)[1:]


def load_run_data(cfg: TrainConfig, log: Callable[[str], None], dataset=None, progress: bool = True):
    """``(dataset, manifest, arrays)``: :func:`load_data` with the dataset it read."""
    from hotspot_jax.data import load_dataset, materialize
    from hotspot_jax.data.tasks import get_task, make_split

    ds = dataset if dataset is not None else load_dataset(cfg.data, progress=progress)
    task = get_task(cfg.task, ds.class_names if ds.own else None)
    manifest = make_split(task, ds, cfg.seed, cfg.leave_out, cfg.no_anomaly_pools)
    if cfg.cv_fold is not None:  # fold k of K of the seed's training pool; its test split is the seed's validation
        from hotspot_jax.data.cv import make_fold_split

        manifest = make_fold_split(ds, manifest, cfg.cv_fold)
    if cfg.objective == "contrastive":  # its training images only, some to validate on (hotspot_jax.train.contrastive)
        from hotspot_jax.train.contrastive import unlabelled_split

        manifest = unlabelled_split(ds, manifest)
    arrays = dict(materialize(ds, manifest))
    if task.name == "hotspot":
        manifest, arrays = levers.add_no_anomaly(ds, manifest, arrays, cfg.no_anomaly_ratio, cfg.seed)
        manifest, arrays = levers.add_pool_no_anomaly(ds, manifest, arrays, cfg.pool_no_anomaly, cfg.seed)
    elif cfg.no_anomaly_ratio != 1.0:
        raise ConfigError(f"--no-anomaly-ratio applies to the hotspot task, not {task.name}")
    arrays = {k: v for k, v in arrays.items() if len(v) or k in ("train", "val")}  # a leave-out split has no test
    arrays["train"] = _subset(arrays["train"], cfg.limit_train, cfg.seed, 1)
    for k, name in enumerate(("val", *EVAL_SPLITS)):
        if name in arrays:
            arrays[name] = _subset(arrays[name], cfg.limit_eval, cfg.seed, 2 + k)
    log(f"data ({task.name}): " + ", ".join(f"{k} {len(v)}" for k, v in arrays.items()))
    if progress or task.name != "hotspot" or manifest.cv:
        log(manifest.summary())
    return ds, manifest, arrays


def write_manifest(manifest, workdir: Path, resuming: bool) -> None:
    """Write manifest.json; when resuming, refuse a split that differs from the one the run began with."""
    path = workdir / "manifest.json"
    tmp = workdir / ".manifest.json.new"
    manifest.to_json(tmp)
    if resuming and path.exists():
        same = json.loads(tmp.read_text()) == json.loads(path.read_text())
        tmp.unlink()
        if not same:
            raise DataError(
                f"the data split differs from the one recorded in {path} when this run started "
                "(another dataset?); use the original dataset, or --overwrite to start again"
            )
        return
    os.replace(tmp, path)


# -------------------------------------------------------------------------------------------------- model
def initial_variables(cfg: TrainConfig, model, key: jax.Array, task) -> dict[str, Any]:
    """Weights at step 0: from scratch (seeded), another run's checkpoint (``--init-from``: its BatchNorm
    statistics too; a new head from the seed when the class count differs), or converted torchvision
    weights with a new head."""
    import architectures

    from hotspot_jax.train.contrastive import ProjectedNetwork, with_projection

    # the network's weights as for any run (from scratch: the same as a linear projection's but its last layer),
    # the MLP projection drawn fresh (so --init-from another such run keeps its backbone, not its head or projection)
    if isinstance(model, ProjectedNetwork):
        return with_projection(initial_variables(cfg, model.network, key, task), init_variables(model, key, cfg.input_hw))
    head = architectures.get(cfg.arch).classifier
    outputs = head_outputs(cfg, task)
    if cfg.init_from_checkpoint is not None:
        return init_from_run(cfg, model, key, outputs)
    if cfg.pretrained is None:
        return init_variables(model, key, cfg.input_hw)
    try:
        from weights_convert import convert
    except ImportError as err:
        raise ConfigError(f"--pretrained needs the weights_convert package ({err})") from None
    try:
        converted = convert(cfg.arch, cfg.pretrained, num_classes=outputs, rng=key, input_size=cfg.image_size)
    except HotspotError:
        raise
    except Exception as err:  # torch unpickling and friends: a bad file, reported as such
        raise ConfigError(f"--pretrained {cfg.pretrained}: cannot convert it for {cfg.arch} ({err})") from None
    fresh = init_variables(model, key, cfg.input_hw)  # the new head, drawn from the run's seed
    return replace_head(converted, fresh, head, cfg.pretrained)


def head_outputs(cfg: TrainConfig, task) -> int:
    """The network's last layer's outputs: the task's classes, or a contrastive run's projection size (its MLP
    projection's hidden width with ``projection_hidden``)."""
    if cfg.objective == "contrastive":
        from hotspot_jax.train.contrastive import network_outputs

        return network_outputs(cfg.projection_dim, cfg.projection_hidden)
    return task.num_classes


def init_from_run(cfg: TrainConfig, model, key: jax.Array, num_classes: int) -> dict[str, Any]:
    """The variables of the ``--init-from`` checkpoint for ``model``: the same architecture, every layer
    carried over (BatchNorm statistics too); the head is drawn afresh from the seed when the source
    run's task has another class count or either run is contrastive (a projection is no classifier), and
    kept otherwise (tests/test_contrastive.py)."""
    import architectures

    from hotspot_jax.train.contrastive import network_variables
    from hotspot_jax.train.restore import load_trained

    source = load_trained(cfg.init_from_checkpoint)
    if source.arch != cfg.arch:
        raise ConfigError(f"--init-from {cfg.init_from}: a {source.arch} run cannot start a {cfg.arch} run")
    fresh = init_variables(model, key, cfg.input_hw)
    head = () if keeps_head(cfg, source.config, num_classes) else architectures.get(cfg.arch).classifier
    network = network_variables(source.config, source.variables)  # without an MLP projection's top layer
    return replace_head(network, fresh, head, f"--init-from {cfg.init_from_checkpoint}")


def keeps_head(cfg: TrainConfig, source_config: dict[str, Any], num_classes: int) -> bool:
    """True when an ``--init-from`` source's head carries over: the same class count, and neither run contrastive."""
    from hotspot_jax.data.tasks import task_of_config
    from hotspot_jax.train.restore import is_contrastive

    return (task_of_config(source_config).num_classes == num_classes and not is_contrastive(source_config)
            and cfg.objective != "contrastive")


def describe_initialisation(cfg: TrainConfig, num_classes: int) -> str:
    """How the weights were initialised, in words, for config.json and every result: ``cfg.initialisation``,
    or for ``--init-from`` the source run's name, task, epochs and own initialisation."""
    if cfg.init_from_checkpoint is None:
        return cfg.initialisation
    from hotspot_jax.data.tasks import task_of_config
    from hotspot_jax.train.restore import is_contrastive, read_config

    checkpoint = Path(cfg.init_from_checkpoint)
    source = read_config(checkpoint.parent.parent)
    run = source["run"]
    task = task_of_config(source)
    head = "its head kept" if keeps_head(cfg, source, num_classes) else "new head"
    left = {"hotspot": ", leaving out the hotspot split's held-out images",
            "hotspot-any-seed": ", leaving out every seed's hotspot split"}.get(run.get("leave_out"), "")
    where = "own images" if task.name == "own" else "in-domain"  # e.g. formula-driven (fractal) images
    if is_contrastive(source):
        where += ", self-supervised (contrastive, labels unread)"
    return (f"{where}: {task.name} run {checkpoint.parent.parent.name} ({run['arch']}, {run['epochs']} epochs{left}; "
            f"{source.get('initialisation', 'scratch')}), checkpoint {checkpoint.parent.name}/{checkpoint.name}, {head}")


def check_init_from_leak(cfg: TrainConfig, manifest) -> list:
    """The no-leak invariant of ``--init-from``: no image that trained or selected the source run, or any
    run it started from in turn, is a validation or test image of this run (tests/test_tasks.py).
    Returns the chain ``[(workdir, manifest), ...]``, source first (none without ``--init-from``)."""
    from hotspot_jax.data.tasks import check_no_leak

    chain = init_from_chain(cfg.init_from_checkpoint)
    check_no_leak(chain, manifest)
    return chain


def init_from_chain(checkpoint: str | None) -> list:
    """``[(where, manifest), ...]`` of the run of ``checkpoint``, every run it started from in turn
    (``--init-from``) and every teacher (``--distill-from``) of those runs, in turn: all of them shaped its weights;
    that run first; DataError for a run without manifest.json (tests/test_distill.py)."""
    from hotspot_jax.data import SplitManifest
    from hotspot_jax.train.restore import read_config

    chain, seen, todo = [], set(), [(checkpoint, None)]
    while todo:
        checkpoint, taught = todo.pop(0)
        if checkpoint is None or checkpoint in seen:
            continue
        seen.add(checkpoint)
        workdir = Path(checkpoint).parent.parent
        where = str(workdir) if taught is None else f"{workdir} (a --distill-from teacher of {taught})"
        path = workdir / "manifest.json"
        if not path.is_file():
            raise DataError(f"--init-from {where}: the run has no manifest.json, so its training images are "
                            "unknown; it cannot be checked for leaks")
        chain.append((where, SplitManifest.from_json(path)))
        run = read_config(workdir)["run"]
        todo.append((run.get("init_from_checkpoint"), None))
        todo += [(c, workdir) for c in run.get("distill_checkpoints") or ()]
    return chain


def note_pixel_twins(dataset, manifest, chain, log: Callable[[str], None]) -> list[dict]:
    """The run's validation/test images whose pixel-identical twin (another id) is in its training split or
    trained or selected a run of its ``--init-from`` chain: one note line, and the list for config.json. Not
    an error: committed runs have such twins (InfraredSolarModules, docs/data.md); tests/test_duplicates.py."""
    from hotspot_jax.data.duplicates import training_twins, twin_note

    twins = training_twins(dataset, manifest, chain)
    note = twin_note(twins)
    if note:
        log(note)
    return [t.to_dict() for t in twins]


def replicate(tree: Any, devices) -> Any:
    """Copy a host pytree onto every device along a leading axis (the pmap layout).

    The mesh axis is named like the steps' pmap axis, so the copy has the very sharding the train
    step returns: another layout would make the first two train steps compile once each. Of a
    multi-process pmap's devices, only this process's own get a copy (what the step takes and returns).
    """
    devices = distributed.local_devices(devices)
    mesh = jax.sharding.Mesh(np.array(devices), (AXIS,))
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(AXIS))
    return jax.tree.map(lambda x: jax.device_put(np.stack([np.asarray(x)] * len(devices)), sharding), tree)


def unreplicate(tree: Any) -> Any:
    """The first device's copy, on the host."""
    return jax.device_get(jax.tree.map(lambda x: x[0], tree))


# ------------------------------------------------------------------------------------------------- epochs
class InterruptFlag:
    """Ctrl-C sets a flag that the loop checks between steps; a second Ctrl-C interrupts at once."""

    def __init__(self):
        self.requested = False
        self._previous = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
        return False


@dataclasses.dataclass
class EpochSums:
    """Running sums of the per-step metrics (float64, in step order, so resumed sums are exact)."""

    loss: float = 0.0
    total_loss: float = 0.0
    accuracy: float = 0.0
    steps: int = 0

    def add(self, m: dict[str, Any]) -> None:
        self.loss += float(m["loss"])
        self.total_loss += float(m["total_loss"])
        self.accuracy += float(m["accuracy"])
        self.steps += 1


def evaluate_split(eval_step, rep_state, split, batch_size: int, n_devices: int | Sequence[jax.Device], desc: str,
                   progress: bool):
    """Class probabilities ``class_probs`` (N, K), the positive class's ``probs`` (N,) of a two-class task
    (else None), mean loss and accuracy of ``split`` (padded last batch, masked).

    ``n_devices``: the device count of a single-process run, or the pmap's devices (all processes'): each
    process then feeds the rows of its own devices and every process gets every output.
    """
    devices = None if isinstance(n_devices, int) else list(n_devices)
    n_local = n_devices if devices is None else len(distributed.local_devices(devices))
    n = len(split)
    k = len(split.class_names)
    class_probs = np.empty((n, k), np.float32)
    losses = np.empty((n,), np.float32)
    correct = np.empty((n,), np.float32)
    batches = list(batching.padded_batches(n, batch_size))
    for idx, valid in tqdm(batches, desc=desc, leave=False, disable=not progress, unit="batch"):
        start = int(idx[0])
        if devices is not None:
            idx = distributed.local_rows(idx, devices)
        p, l, c = eval_step(
            rep_state, batching.shard(split.images[idx], n_local), batching.shard(split.labels[idx], n_local)
        )
        if devices is not None:
            p, l, c = (distributed.global_outputs(x, devices) for x in (p, l, c))
        class_probs[start : start + valid] = np.asarray(p).reshape(-1, k)[:valid]
        losses[start : start + valid] = np.asarray(l).reshape(-1)[:valid]
        correct[start : start + valid] = np.asarray(c).reshape(-1)[:valid]
    return {
        "class_probs": class_probs,
        "probs": class_probs[:, 1] if k == 2 else None,
        "loss": float(np.mean(losses, dtype=np.float64)),
        "accuracy": int(correct.sum()) / n,
    }


def _check_finite(m: dict[str, Any], where: str, ckpts: RunCheckpoints) -> None:
    if not all(math.isfinite(float(v)) for v in m.values()):
        last = ckpts.latest_step()
        kept = f"the last good checkpoint is {ckpts.latest_dir / str(last)}" if last is not None else "no checkpoint was saved"
        raise TrainingError(
            f"the training loss became non-finite ({float(m['loss'])}) at {where}; stopped without saving; "
            f"{kept}. Lower --lr or check the data; to rerun with another --lr, add --overwrite (this run is "
            "replaced) or use a new --workdir"
        )


def _val_extras(split, res: dict[str, Any]) -> dict[str, Any]:
    """More validation metrics: ROC AUC, F1, precision, sensitivity, specificity of a two-class task;
    macro-F1 of a many-class one."""
    if res["probs"] is None:
        from hotspot_jax.evaluate.multiclass import multiclass_metrics

        return {"val_macro_f1": multiclass_metrics(split.labels, res["class_probs"], split.class_names)["macro_f1"]}
    from hotspot_jax.evaluate import binary_metrics

    m = binary_metrics(split.labels, res["probs"])
    return {f"val_{k}": v for k, v in m.items() if k in ("roc_auc", "f1", "precision", "sensitivity", "specificity")}


# ---------------------------------------------------------------------------------------------- the run
def train(
    cfg: TrainConfig,
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    log: Callable[[str], None] = print,
    dataset=None,
) -> RunResult:
    """Run (or continue) the training described by ``cfg``; see the module docstring for the rules.

    ``dataset`` (a ModuleImages) replaces loading ``cfg.data``, for library use and tests.

    In a multi-process run (:mod:`hotspot_jax.train.distributed`, docs/scaling.md) every process calls this
    with the same ``cfg``; the batch is split over the devices of all processes, and only process 0 writes
    files, logs and shows progress.
    """
    if dataset is not None and dataset.own and cfg.task is None:
        cfg = dataclasses.replace(cfg, task="own")
    cfg = cfg.resolve()
    primary = distributed.is_primary()
    if not primary:
        log, progress = (lambda msg: None), False
    devices = jax.devices()  # every process's devices (this process's alone in a single-process run)
    n_dev = len(devices)
    batching.check_divisible(cfg.batch_size, n_dev, "--batch-size")
    batching.check_divisible(cfg.eval_batch_size, n_dev, "--eval-batch-size")
    workdir = Path(cfg.workdir)
    from hotspot_jax.data.tasks import task_of_manifest
    from hotspot_jax.train.restore import build_model

    stored = distributed.on_primary(lambda: prepare_workdir(cfg, resume, overwrite), "workdir")
    # the data before the weights: bad data, or a source run that would leak, fails in seconds, before
    # anything of the run is written (train.cli removes a work directory it made); process 0 first, as it
    # may build the dataset cache the others then read
    ds, manifest, arrays = distributed.primary_first(lambda: load_run_data(cfg, log, dataset, progress), "data")
    task = task_of_manifest(manifest)
    chain = check_init_from_leak(cfg, manifest) if cfg.init_from_checkpoint is not None else []
    teachers = None
    if cfg.distill_checkpoints is not None:  # the same invariant for every teacher (hotspot_jax.train.distill)
        from hotspot_jax.train.distill import check_teachers

        teachers = check_teachers(cfg, manifest, task)
    twins = note_pixel_twins(ds, manifest, chain, log)
    model = build_model({"run": cfg.to_dict(), "classes": list(task.class_names)}, bn_axis_name=AXIS)
    root = jax.random.PRNGKey(cfg.seed)
    dropout_key = jax.random.fold_in(root, 2)
    fresh = None if stored else initial_variables(cfg, model, jax.random.fold_in(root, 1), task)  # unused when resuming
    distributed.on_primary(lambda: write_manifest(manifest, workdir, resuming=stored is not None), "manifest")
    train_split = arrays["train"]
    steps = batching.epoch_steps(train_split.labels, cfg.pool_no_anomaly, cfg.batch_size)
    if steps == 0:
        raise ConfigError(f"--batch-size {cfg.batch_size} is larger than the training set ({len(train_split)} images)")
    tx = levers.make_optimizer(cfg.to_dict(), steps)  # the study's SGD; a schedule needs the steps per epoch

    config = {
        "run": cfg.to_dict(),
        "classes": list(task.class_names),
        "initialisation": describe_initialisation(cfg, task.num_classes),
        "checkpoint_rule": BEST_RULE,
        "batching": BATCH_RULE,
        "steps_per_epoch": steps,
        "dataset_sha256": manifest.dataset_sha256,  # the release's metadata sha256, as in manifest.json
        # validation/test images with a pixel-identical twin in training data (not in manifest.json, which a
        # resumed run compares with the one it began with)
        "pixel_twins": twins,
        "environment": environment(),
        "created": stored["created"] if stored else _now(),
        "resumed": (stored.get("resumed", []) + [_now()]) if stored else [],
    }
    if teachers is not None:
        from hotspot_jax.train.distill import TARGETS_FILE

        config["distillation"] = {"teachers": teachers, "weight": cfg.distill_weight,
                                  "temperature": cfg.distill_temperature, "targets": TARGETS_FILE,
                                  "targets_of": "the un-augmented training images (mean of the teachers' "
                                                "softmax(logits / T), plain forward pass)"}
    if primary:
        write_json_atomic(workdir / "config.json", config)
    soft = None
    if teachers is not None:  # once, before training; a resumed run reads them back (process 0 first)
        from hotspot_jax.train.distill import teacher_targets

        soft = distributed.primary_first(lambda: teacher_targets(cfg, train_split, log, progress), "distill")

    ckpts = RunCheckpoints(workdir, keep=cfg.keep)  # orbax: every process saves and restores together
    try:
        meta = {"epochs_done": 0, "batch_in_epoch": 0, "partial": None, "history": [], "best": None}
        resumed = None
        if stored:  # the newest checkpoint that restores; damaged ones are set aside and named (checkpoint.py)
            from hotspot_jax.train.restore import abstract_variables

            variables_target = abstract_variables(model, cfg.input_hw)
            target = jax.eval_shape(lambda v: create_state(v, tx, cfg.ema_decay), variables_target)
            resumed = ckpts.restore_newest(target, log)
            ckpts.check_best(variables_target, resumed[0] if resumed else 0, target, BEST_RULE, log)
        if resumed is not None:
            latest, state, meta = resumed
            log(f"resuming from {ckpts.latest_dir / str(latest)} ({resume_position(meta, cfg.epochs, steps)})")
        else:
            if fresh is None:  # a config without checkpoints (killed before the first save)
                fresh = initial_variables(cfg, model, jax.random.fold_in(root, 1), task)
            state = create_state(fresh, tx, cfg.ema_decay)  # the weight average (if any) starts at these weights
            processes = distributed.process_count()
            log(f"{cfg.arch} at {cfg.image_size}px, initialisation: {cfg.initialisation}, {n_dev} device(s)"
                + (f" in {processes} processes" if processes > 1 else ""))
        if primary:
            _write_history(workdir, meta["history"])
        result = _run_epochs(cfg, model, tx, state, meta, arrays, ckpts, devices, dropout_key, steps, progress, log,
                             soft)
        if result.interrupted:
            return result
        result.test_metrics = final_evaluation(cfg, arrays, devices, progress, log)
        return result
    finally:
        ckpts.close()


def resume_position(meta: dict[str, Any], epochs: int, steps: int) -> str:
    """Where a resumed run stands, e.g. "1 of 2 epochs done; epoch 2 goes on from batch 31 of 64"."""
    done = f"{meta['epochs_done']} of {epochs} epochs done"
    if not meta["batch_in_epoch"]:
        return done
    return f"{done}; epoch {meta['epochs_done'] + 1} goes on from batch {meta['batch_in_epoch'] + 1} of {steps}"


def _write_history(workdir: Path, history: list[dict[str, Any]]) -> None:
    write_jsonl_atomic(workdir / "metrics.jsonl", history)
    if history:
        from hotspot_jax.train.curves import plot_training_curves

        (workdir / "figures").mkdir(exist_ok=True)
        plot_training_curves(history, workdir / "figures" / "training_curves.png")


def _run_epochs(cfg, model, tx, state, meta, arrays, ckpts, devices, dropout_key, steps, progress, log,
                soft=None) -> RunResult:
    """The epoch loop from the position in ``meta``; saves a checkpoint every epoch and on Ctrl-C. ``soft``: the
    teachers' targets of the training images (distillation), batched and sharded like the labels."""
    n_local = len(distributed.local_devices(devices))  # all of them in a single-process run
    primary = distributed.is_primary()
    workdir = Path(cfg.workdir)
    train_split, val_split = arrays["train"], arrays["val"]
    augment = levers.online_augment_fn(cfg.online_augment)
    train_step = make_train_step(model, tx, cfg.input_hw, devices, augment=augment,
                                 label_smoothing=cfg.label_smoothing, mixup_alpha=cfg.mixup_alpha,
                                 ema_decay=cfg.ema_decay, distill_weight=cfg.distill_weight,
                                 distill_temperature=cfg.distill_temperature or 2.0,
                                 contrastive_temperature=cfg.contrastive_temperature)
    validate = _validation(cfg, model, augment, devices, progress)
    rep = replicate(state, devices)
    history, best = meta["history"], meta["best"]
    delay = float(os.environ.get(STEP_DELAY_ENV, "0") or 0)
    compiled = False
    with InterruptFlag() as stop:
        # one process's Ctrl-C stops all after the same step (a single process reads its own flag)
        vote = distributed.StopVote(stop, devices, AXIS) if distributed.process_count() > 1 else None
        for epoch in range(meta["epochs_done"], cfg.epochs):
            first = meta["batch_in_epoch"] if epoch == meta["epochs_done"] else 0
            sums = EpochSums(**meta["partial"]) if first and meta["partial"] else EpochSums()
            order = batching.epoch_batches(cfg.seed, epoch, train_split.labels, cfg.pool_no_anomaly, cfg.batch_size)
            bar = tqdm(total=steps, initial=first, desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not progress,
                       unit="step", dynamic_ncols=True)
            t0 = time.perf_counter()
            pending, b = None, first
            for b in range(first, steps):
                idx = distributed.local_rows(order[b], devices)  # this process's devices' rows
                batch = (batching.shard(train_split.images[idx], n_local),
                         batching.shard(train_split.labels[idx], n_local))
                if soft is not None:
                    batch += (batching.shard(soft[idx], n_local),)
                rep, metrics = train_step(rep, *batch, dropout_key)
                if vote is not None:
                    vote.cast()
                if pending is not None:  # fetch the previous step's metrics: no pipeline stall
                    _take(pending, sums, epoch, b - 1, ckpts, bar)
                elif not compiled:
                    jax.block_until_ready(metrics)
                    compiled = True
                    with tqdm.external_write_mode():
                        log(f"train step compiled and run in {time.perf_counter() - t0:.1f}s")
                pending = metrics
                if delay:
                    time.sleep(delay)
                if vote.agreed() if vote is not None else stop.requested:
                    break
            _take(pending, sums, epoch, b, ckpts, bar)
            bar.close()
            seconds = time.perf_counter() - t0
            if b + 1 < steps:  # interrupted mid-epoch: save the position and the partial sums
                step = epoch * steps + b + 1
                meta = dict(meta, epochs_done=epoch, batch_in_epoch=b + 1, partial=dataclasses.asdict(sums))
                ckpts.save(step, unreplicate(rep), meta)
                return RunResult(workdir, epoch, best, interrupted=True, checkpoint=ckpts.latest_dir / str(step))

            val = validate(rep, val_split)
            step = (epoch + 1) * steps
            record = {
                "epoch": epoch + 1,
                "step": step,
                "lr": levers.lr_at(cfg.to_dict(), steps, step - 1),
                "train_loss": sums.loss / sums.steps,
                "train_total_loss": sums.total_loss / sums.steps,
                "train_accuracy": sums.accuracy / sums.steps,
                "val_loss": val["loss"],
                "val_accuracy": val["accuracy"],
                **(_val_extras(val_split, val) if cfg.objective == "supervised" else {}),
                "train_seconds": round(seconds, 3),
                "images_per_second": round((steps - first) * cfg.batch_size / max(seconds, 1e-9), 1),
            }
            record["best"] = is_better(record, best)
            host_state = unreplicate(rep)
            if record["best"]:
                best = {k: record[k] for k in ("epoch", "step", "val_accuracy", "val_loss")}
                variables = evaluated_variables(host_state)  # what was just validated: the EMA, if the run keeps one
                ckpts.save_best(step, variables, {"epochs_done": epoch + 1, "best": best, "rule": BEST_RULE})
            history = history + [record]
            meta = {"epochs_done": epoch + 1, "batch_in_epoch": 0, "partial": None, "history": history, "best": best}
            ckpts.save(step, host_state, meta)
            if primary:
                _write_history(workdir, history)
            log(
                f"epoch {epoch + 1}/{cfg.epochs}: train loss {record['train_loss']:.4f} acc "
                f"{record['train_accuracy']:.4f} | val loss {val['loss']:.4f} acc {val['accuracy']:.4f}"
                f"{' (best)' if record['best'] else ''} | {seconds:.1f}s"
            )
            if vote.now() if vote is not None else stop.requested:
                return RunResult(workdir, epoch + 1, best, interrupted=True, checkpoint=ckpts.latest_dir / str(step))
    return RunResult(workdir, meta["epochs_done"], best)


def _validation(cfg, model, augment, devices, progress: bool) -> Callable:
    """``(replicated state, split) -> {"loss", "accuracy", ...}``: the class predictions of a supervised run
    (:func:`evaluate_split`), or a contrastive run's NT-Xent loss and retrieval accuracy on fixed views
    (hotspot_jax.train.contrastive.evaluate_views)."""
    if cfg.objective == "contrastive":
        from hotspot_jax.train import contrastive

        step = contrastive.make_eval_step(model, cfg.input_hw, cfg.contrastive_temperature, augment, devices)
        return lambda rep, split: contrastive.evaluate_views(step, rep, split, cfg.batch_size, devices, "validate",
                                                             progress)
    step = make_eval_step(model, cfg.input_hw, devices, tta=cfg.tta)
    return lambda rep, split: evaluate_split(step, rep, split, cfg.eval_batch_size, devices, "validate", progress)


def _take(metrics, sums: EpochSums, epoch: int, batch: int, ckpts: RunCheckpoints, bar) -> None:
    """Fetch one step's metrics, stop on a non-finite loss, add them to the epoch sums and the bar."""
    m = jax.device_get(jax.tree.map(lambda x: x[0], metrics))
    _check_finite(m, f"epoch {epoch + 1}, batch {batch + 1}", ckpts)
    sums.add(m)
    bar.update(1)
    bar.set_postfix(loss=f"{sums.loss / sums.steps:.4f}", acc=f"{sums.accuracy / sums.steps:.3f}", refresh=False)


# ------------------------------------------------------------------------------------------- final test
def _choose_operating_point(cfg, val_split, eval_step, rep, devices, checkpoint, run_created, progress, log
                            ) -> dict[str, Any] | None:
    """The best checkpoint's threshold for the target sensitivity, chosen on the validation split and stored,
    with the validation metrics at 0.5 (ROC AUC among them: what levers are compared on); None, said in the
    log, when the validation split lacks a class (tiny smoke runs with --limit-eval)."""
    from hotspot_jax.evaluate.metrics import binary_metrics

    primary = distributed.is_primary()
    if primary:
        (Path(cfg.workdir) / decision_threshold.FILE).unlink(missing_ok=True)  # never one of an earlier run
    res = evaluate_split(eval_step, rep, val_split, cfg.eval_batch_size, devices, "val", progress)
    try:
        point = decision_threshold.choose(val_split.labels, res["probs"], cfg.target_sensitivity)
    except ConfigError as err:
        log(f"operating point: not chosen ({err}); predictions use 0.5")
        return None
    point["validation_at_0.5"] = binary_metrics(val_split.labels, res["probs"], 0.5)
    if primary:
        decision_threshold.write(cfg.workdir, point, checkpoint, run_created)
        from hotspot_jax.evaluate.report import write_predictions_csv

        # the scores the threshold was chosen on: what an ensemble's own operating point is chosen on later
        write_predictions_csv(Path(cfg.workdir) / "evaluation" / "val_predictions.csv", val_split.ids,
                              val_split.labels, res["probs"], point["threshold"], val_split.class_names)
    log(f"operating point: threshold {point['threshold']:.4g} for validation sensitivity >= "
        f"{point['target_sensitivity']:g} (validation: sensitivity {point['validation_sensitivity']:.3f}, "
        f"specificity {point['validation_specificity']:.3f})"
        + ("" if point["target_met"] else "; the target is not reachable: a validation hotspot scores 0"))
    return point


def _contrastive_evaluation(cfg, tm, arrays, devices, progress: bool, log) -> dict[str, Any]:
    """A contrastive run's test_metrics.json: its best checkpoint's validation reading (NT-Xent loss, retrieval
    accuracy); no test split is read, as a projection predicts no class."""
    from hotspot_jax.train import contrastive

    augment = levers.online_augment_fn(cfg.online_augment)
    step = contrastive.make_eval_step(tm.model, tm.input_hw, cfg.contrastive_temperature, augment, devices)
    rep = replicate({"params": tm.variables["params"], "batch_stats": tm.variables["batch_stats"]}, devices)
    val = contrastive.evaluate_views(step, rep, arrays["val"], cfg.batch_size, devices, "val", progress)
    out = {"arch": cfg.arch, "task": tm.task.name, "objective": "contrastive", "image_size": cfg.image_size,
           "initialisation": tm.initialisation,
           "checkpoint": {"path": str(tm.checkpoint), "epoch": tm.epoch, "rule": BEST_RULE},
           "val": {"n": len(arrays["val"]), **val}}
    log(f"contrastive run: validation NT-Xent loss {val['loss']:.4f}, retrieval accuracy {val['accuracy']:.4f} "
        f"({val['views']} views); no test split is read (a projection has no classes): start a run from it with "
        "--init-from")
    if distributed.is_primary():
        write_json_atomic(Path(cfg.workdir) / "test_metrics.json", out)
    return out


def final_evaluation(cfg, arrays, devices, progress: bool, log) -> dict[str, Any]:
    """Evaluate the best checkpoint (through the restore API) on the test splits; write test_metrics.json.

    Two-class tasks get the operating point and the binary metrics at 0.5 and at it; classes12 the
    many-class metrics, a confusion matrix PNG and the hotspot-vs-rest view (hotspot_jax.evaluate.multiclass).
    In a multi-process run every process evaluates (its devices' rows); process 0 writes the files and
    returns every metric, the others only loss and accuracy.
    """
    from hotspot_jax.evaluate.metrics import binary_metrics, format_value
    from hotspot_jax.train.restore import load_trained

    workdir = Path(cfg.workdir)
    tm = load_trained(workdir)
    distributed.barrier("loaded")  # every process has read the run's files before process 0 rewrites them
    if cfg.objective == "contrastive":
        return _contrastive_evaluation(cfg, tm, arrays, devices, progress, log)
    eval_step = make_eval_step(tm.model, tm.input_hw, devices, tta=cfg.tta)
    rep = replicate({"params": tm.variables["params"], "batch_stats": tm.variables["batch_stats"]}, devices)
    out: dict[str, Any] = {
        "arch": cfg.arch,
        "task": tm.task.name,
        "image_size": cfg.image_size,
        "initialisation": tm.initialisation,
        "checkpoint": {"path": str(tm.checkpoint), "epoch": tm.epoch, "rule": BEST_RULE},
    }
    evaluation_dir = workdir / "evaluation"
    primary = distributed.is_primary()  # the others evaluate with it (their devices' rows) and write nothing
    if primary:
        evaluation_dir.mkdir(exist_ok=True)
    splits = [name for name in EVAL_SPLITS if name in arrays]
    if cfg.cv_fold is not None:
        out["cv_fold"] = cfg.cv_fold
        log(f"cross-validation fold {cfg.cv_fold}: 'test' below is the seed's validation split; the balanced and "
            "realistic test sets are not read (no realistic-prevalence evaluation)")
    if not splits:
        log("no test split (the run's split leaves its test images out): validation metrics only")
        splits = ["val"]
    if not tm.task.binary:
        from hotspot_jax.evaluate.multiclass import write_multiclass_evaluation

        for name in splits:
            split = arrays[name]
            res = evaluate_split(eval_step, rep, split, cfg.eval_batch_size, devices, name, progress)
            if not primary:
                continue
            m = write_multiclass_evaluation(evaluation_dir, name, split.labels, res["class_probs"], split.ids,
                                            split.class_names)
            out[name] = {"loss": res["loss"], **m}
            vs = m.get("hotspot_vs_rest") or {}
            log(f"{name}: accuracy {res['accuracy']:.4f}, macro-F1 {format_value(m['macro_f1'], 4)} on {len(split)} "
                f"images; hotspot vs rest: sensitivity {format_value(vs.get('sensitivity'), 3)}, "
                f"specificity {format_value(vs.get('specificity'), 3)}")
        if primary:
            write_json_atomic(workdir / "test_metrics.json", out)
        return out
    point = _choose_operating_point(cfg, arrays["val"], eval_step, rep, devices, tm.checkpoint,
                                    tm.config.get("created"), progress, log)
    out["operating_point"] = point
    for name in splits:
        split = arrays[name]
        res = evaluate_split(eval_step, rep, split, cfg.eval_batch_size, devices, name, progress)
        metrics = {"n": len(split), "loss": res["loss"], "accuracy": res["accuracy"]}
        if not primary:
            out[name] = metrics
            continue
        from hotspot_jax.evaluate import write_evaluation

        metrics.update(write_evaluation(evaluation_dir, name, split.labels, res["probs"], split.ids,
                                        class_names=split.class_names))
        out[name] = metrics
        if point is None:
            log(f"{name}: accuracy {res['accuracy']:.4f} on {len(split)} images")
            continue
        at_point = binary_metrics(split.labels, res["probs"], point["threshold"])
        out[f"{name}_at_operating_point"] = at_point
        log(f"{name}: accuracy {res['accuracy']:.4f} on {len(split)} images; at the operating point: "
            f"sensitivity {format_value(at_point['sensitivity'], 3)}, "
            f"{format_value(at_point['false_alarms_per_1000'], 1)} false alarms per 1,000 "
            f"{'healthy modules' if tm.task.name == 'hotspot' else 'No-Anomaly modules'}")
    if primary:
        write_json_atomic(workdir / "test_metrics.json", out)
    return out
