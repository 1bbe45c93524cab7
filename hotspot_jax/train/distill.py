"""Knowledge distillation of trained runs (the teachers, e.g. an ensemble) into the run being trained.

The teachers' targets are computed once, before the first step, for every image of the run's training arrays
(the offline-augmented training set it trains on, never a validation or test image): the mean over teachers of
``softmax(teacher_logits / T)``, each teacher's best checkpoint (its weight average if it kept one) at its own
input size and aspect, one plain forward pass (a teacher's test-time flips are not used). They are saved in
``distill_targets.npz`` in the work directory, so a resumed run reuses them exactly. Online augmentation (flips,
shifts) changes the student's input only: the target of an image is the teacher's on the un-augmented image.
The loss is in :func:`hotspot_jax.train.step.train_step_fn`; tests/test_distill.py holds every rule here.

No-leak invariant (:func:`check_teachers`): no image that trained a teacher (its training split), a teacher of a
teacher, in turn, or a run of their ``--init-from`` chains (training and validation splits, as ``--init-from``
itself, whose chain includes its runs' teachers: loop.init_from_chain) is a validation or test image of this run,
and every teacher has this run's task and classes. A teacher's checkpoint was chosen on its own
validation split, which is this run's when it shares the seed and split (docs/training.md, Distillation).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from hotspot_jax.errors import ConfigError, DataError

TARGETS_FILE = "distill_targets.npz"


def check_teachers(cfg, manifest, task) -> list[dict[str, Any]]:
    """Refuse (one DataError/ConfigError line) a teacher of another task or classes, without a manifest, of another
    dataset, whose training data holds a validation or test image of this run (``manifest``), or whose validation
    split (which chose its checkpoint) holds a test image of this run; the teachers of a
    teacher (its own ``--distill-from``), in turn, likewise; returns what config.json records of each teacher."""
    from hotspot_jax.data.tasks import HELD_OUT

    held = {i for name in HELD_OUT for i in manifest.splits.get(name, ())}
    out, seen = [], set()
    todo = [(str(c), None) for c in cfg.distill_checkpoints]
    while todo:
        checkpoint, taught = todo.pop(0)
        if checkpoint in seen:
            continue
        seen.add(checkpoint)
        config = _check_teacher(checkpoint, taught, manifest, task, held)
        todo += [(str(c), Path(checkpoint).parent.parent) for c in config["run"].get("distill_checkpoints") or ()]
        if taught is None:
            out.append({"workdir": str(Path(checkpoint).parent.parent), "checkpoint": checkpoint,
                        "arch": config["run"]["arch"], "image_size": config["run"]["image_size"],
                        "seed": config["run"].get("seed")})
    return out


def _check_teacher(checkpoint: str, taught: Path | None, manifest, task, held: set[str]) -> dict[str, Any]:
    """The rules of :func:`check_teachers` for one teacher (``taught``: the teacher it taught, None for this run's
    own); returns its config.json."""
    from hotspot_jax.data import SplitManifest
    from hotspot_jax.data.tasks import HELD_OUT, check_no_leak, source_ids, task_of_config
    from hotspot_jax.train.loop import init_from_chain
    from hotspot_jax.train.restore import is_contrastive, read_config

    workdir = Path(checkpoint).parent.parent
    name = f"--distill-from {workdir}" + ("" if taught is None else f" (a teacher of --distill-from teacher {taught})")
    config = read_config(workdir)
    if is_contrastive(config):
        raise ConfigError(f"{name}: a self-supervised contrastive run has no classes to teach")
    teacher_task = task_of_config(config)
    if teacher_task.name != task.name or list(teacher_task.class_names) != list(task.class_names):
        raise ConfigError(f"{name}: a {teacher_task.name} run with {teacher_task.num_classes} "
                          f"classes cannot teach a {task.name} run with {task.num_classes} classes")
    path = workdir / "manifest.json"
    if not path.is_file():
        raise DataError(f"{name}: the run has no manifest.json, so its training images are "
                        "unknown; it cannot be checked for leaks")
    teacher = SplitManifest.from_json(path)
    if teacher.dataset_sha256 != manifest.dataset_sha256:
        raise DataError(f"{name}: that run was trained on another dataset (metadata sha256 "
                        f"{str(teacher.dataset_sha256)[:12]}, this run's {str(manifest.dataset_sha256)[:12]}); "
                        "its training images cannot be checked for leaks")
    leaked = sorted(source_ids(teacher.splits.get("train", ())) & held, key=lambda i: (len(i), i))
    if leaked:
        raise DataError(
            f"{name}: {len(leaked)} image(s) that trained that teacher are validation or test "
            f"images of this run (e.g. {', '.join(leaked[:3])}); use teachers trained on this run's split (the "
            "same --seed, --task and --no-anomaly-pools)")
    tests = {i for split in HELD_OUT if split != "val" for i in manifest.splits.get(split, ())}
    chose = sorted(source_ids(teacher.splits.get("val", ())) & tests, key=lambda i: (len(i), i))
    if chose:  # they chose the teacher's checkpoint (and threshold): what it teaches would carry them
        raise DataError(
            f"{name}: {len(chose)} image(s) that chose that teacher's checkpoint (its validation split) are test "
            f"images of this run (e.g. {', '.join(chose[:3])}); use teachers of this run's split (the same --seed, "
            "--task and --no-anomaly-pools)")
    start = config["run"].get("init_from_checkpoint")
    if start is not None:
        teacher_of = f"--distill-from teacher {workdir}" + ("" if taught is None else f" of {taught}")
        chain = [(f"{where} (the start of {teacher_of})", m) for where, m in init_from_chain(start)]
        check_no_leak(chain, manifest)
    return config


def tempered_probabilities(tm, images: np.ndarray, temperature: float, batch_size: int = 256,
                           desc: str = "teacher", progress: bool = False) -> np.ndarray:
    """``softmax(logits / T)`` ``(N, K)`` float32 of a trained model (restore.TrainedModel) on uint8 ``images``
    ``(N, H, W, 1)``, at the model's own input size (one compiled shape: the last batch is padded)."""
    from hotspot_jax.train.step import _preprocess

    model, hw = tm.model, tm.input_hw

    @jax.jit
    def probs(variables, x):
        logits = model.apply(variables, _preprocess(x, hw), train=False).astype(jnp.float32)
        return jax.nn.softmax(logits / temperature, -1)

    n = len(images)
    batch = max(1, min(batch_size, n))
    out = np.empty((n, tm.task.num_classes), np.float32)
    for start in tqdm(range(0, n, batch), desc=desc, disable=not progress, unit="batch", leave=False):
        chunk = images[start : start + batch]
        valid = len(chunk)
        if valid < batch:
            chunk = np.concatenate([chunk, np.repeat(chunk[:1], batch - valid, axis=0)])
        out[start : start + valid] = np.asarray(probs(tm.variables, chunk))[:valid]
    return out


def teacher_targets(cfg, train_split, log: Callable[[str], None], progress: bool = True) -> np.ndarray:
    """The per-image targets ``(N, K)`` of the run's training arrays: read from ``distill_targets.npz`` when it
    holds these teachers, temperature and training images (a resumed run), else computed and saved atomically."""
    from hotspot_jax.train import distributed
    from hotspot_jax.train.restore import load_trained

    path = Path(cfg.workdir) / TARGETS_FILE
    ids = np.asarray(train_split.ids).astype(str)
    stored = read_targets(path)
    if stored is not None:
        same = (stored["teachers"].tolist() == list(cfg.distill_checkpoints)
                and float(stored["temperature"]) == float(cfg.distill_temperature)
                and stored["train_ids"].tolist() == ids.tolist())
        if same:
            log(f"distillation: the teachers' targets of {len(ids)} training images read from {path}")
            return stored["targets"]
        log(f"distillation: {path} holds other teachers, temperature or training images; computing them again")
    total = np.zeros((len(ids), len(train_split.class_names)), np.float64)
    steps = []
    for k, checkpoint in enumerate(cfg.distill_checkpoints):
        tm = load_trained(checkpoint)
        log(f"distillation: teacher {k + 1}/{len(cfg.distill_checkpoints)} {tm.arch} ({checkpoint}) at "
            f"{tm.image_size}px, T={cfg.distill_temperature:g}, on {len(ids)} training images")
        total += tempered_probabilities(tm, train_split.images, cfg.distill_temperature, cfg.eval_batch_size,
                                        desc=f"teacher {k + 1}", progress=progress)
        steps.append(int(Path(checkpoint).name))
    targets = (total / len(cfg.distill_checkpoints)).astype(np.float32)
    if distributed.is_primary():
        tmp = path.with_name(f".{TARGETS_FILE}.new.npz")
        np.savez(tmp, targets=targets, train_ids=ids, teachers=np.asarray(cfg.distill_checkpoints, dtype=str),
                 teacher_steps=np.asarray(steps, np.int64), temperature=np.float64(cfg.distill_temperature))
        os.replace(tmp, path)
        log(f"distillation: wrote {path}")
    return targets


def read_targets(path: Path) -> dict[str, np.ndarray] | None:
    """The arrays of a ``distill_targets.npz`` (None when it is missing or unreadable)."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as f:
            return {k: f[k] for k in ("targets", "train_ids", "teachers", "teacher_steps", "temperature")}
    except (OSError, ValueError, KeyError):
        return None
