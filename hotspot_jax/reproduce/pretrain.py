"""In-domain pretraining: train the network on the 12-class task over every image of the dataset that
the binary split does not hold out (never a validation, test or realistic-test image), then start the
hotspot run from those weights with a new head.

The pool is: all images of the 10 other anomaly classes, the split's training hotspots and training
No-Anomaly images (originals, no offline copies). It is a pure function of (dataset, seed); the
invariant "no held-out image enters pretraining" is checked here at run time and by the tests.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable

import jax
import numpy as np
from tqdm.auto import tqdm

from hotspot_jax.errors import DataError

HELD_OUT = ("val", "test", "test_realistic")
NUM_CLASSES = 12
PROGRESS = "progress.npz"  # the state of an unfinished pretraining (epoch boundary or Ctrl-C)


def pretrain_pool(dataset, manifest) -> np.ndarray:
    """Row indices into ``dataset`` of the pretraining images of ``manifest``'s split (sorted)."""
    held = set()
    for name in HELD_OUT:
        held.update(manifest.splits.get(name, ()))
    keep = np.array([str(i) not in held for i in dataset.ids])
    idx = np.nonzero(keep)[0]
    check_disjoint(dataset.ids[idx], manifest)
    return idx


def check_disjoint(ids, manifest, splits: tuple[str, ...] = HELD_OUT) -> None:
    """DataError if any of ``ids`` (source ids, augmented copies ``id@op`` included) is in one of ``splits``."""
    held = set()
    for name in splits:
        held.update(manifest.splits.get(name, ()))
    leaked = sorted({str(i).split("@")[0] for i in ids} & held)
    if leaked:
        raise DataError(f"{len(leaked)} validation/test image(s) would enter training, e.g. {leaked[:3]}")


def pretrain(arch: str, seed: int, dataset, manifest, *, image_size: int, epochs: int, lr: float,
             batch_size: int = 32, online_augment: str = "flip-shift", outdir: Path, aspect: str = "square",
             progress: bool = True, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Train ``arch`` (12 classes, from scratch) on the pretraining pool; write ``variables.msgpack`` and
    ``summary.json`` into ``outdir``. Reuses a finished pretraining with the same settings and continues an
    unfinished one from its last epoch or Ctrl-C; returns ``{"interrupted": True}`` after a Ctrl-C."""
    import architectures
    from hotspot_jax.train import batching
    from hotspot_jax.train.levers import make_schedule, online_augment_fn, save_variables
    from hotspot_jax.train.loop import InterruptFlag, replicate, unreplicate
    from hotspot_jax.train.optimizer import sgd_momentum
    from hotspot_jax.train.state import create_state, init_variables
    from hotspot_jax.train.step import AXIS, make_train_step

    from hotspot_jax.data.preprocess import input_hw

    settings = {"arch": arch, "seed": seed, "image_size": image_size, "epochs": epochs, "lr": lr,
                "batch_size": batch_size, "online_augment": online_augment, "schedule": "cosine, 1 warmup epoch",
                "classes": NUM_CLASSES, "dataset_sha256": manifest.dataset_sha256}
    if aspect != "square":  # stored settings of square pretrainings stay as they were
        settings["aspect"] = aspect
    hw = input_hw(image_size, aspect)
    outdir = Path(outdir)
    summary_path, weights = outdir / "summary.json", outdir / "variables.msgpack"
    if summary_path.is_file() and weights.is_file():
        stored = json.loads(summary_path.read_text())
        if stored.get("settings") == settings:
            log(f"pretraining: reusing {weights}")
            return {"weights": weights, "summary": stored}
    outdir.mkdir(parents=True, exist_ok=True)
    idx = pretrain_pool(dataset, manifest)
    images, labels = dataset.images[idx], dataset.labels[idx].astype(np.int32)
    counts = {int(k): int(v) for k, v in zip(*np.unique(labels, return_counts=True))}
    log(f"pretraining {arch}: {len(idx)} images, 12 classes, {epochs} epochs")
    model = architectures.create(arch, num_classes=NUM_CLASSES, bn_axis_name=AXIS)
    steps = batching.steps_per_epoch(len(idx), batch_size)
    tx = sgd_momentum(make_schedule(lr, "cosine", steps, epochs, warmup_epochs=1 if epochs > 1 else 0))
    root = jax.random.fold_in(jax.random.PRNGKey(seed), 11)
    state = create_state(init_variables(model, jax.random.fold_in(root, 1), hw), tx)
    devices = jax.local_devices()
    step_fn = make_train_step(model, tx, hw, devices, augment=online_augment_fn(online_augment))
    position = load_progress(outdir / PROGRESS, settings, state)
    if position is not None:
        state = position.pop("state")
        log(f"pretraining: continuing at epoch {position['epoch'] + 1}, batch {position['batch']}")
    else:
        position = {"epoch": 0, "batch": 0, "loss": 0.0, "accuracy": 0.0, "history": [], "seconds": 0.0}
    rep = replicate(state, devices)
    n_dev = len(devices)
    history = position["history"]
    t_start = time.perf_counter() - position["seconds"]

    def keep(**where) -> None:  # the state after the last step taken, and where the next one starts
        save_progress(outdir / PROGRESS, settings, unreplicate(rep), history=history,
                      seconds=time.perf_counter() - t_start, **where)

    with InterruptFlag() as stop:
        for epoch in range(position["epoch"], epochs):
            order = batching.train_batch_indices(seed + 100_003, epoch, len(idx), batch_size)
            first = position["batch"] if epoch == position["epoch"] else 0
            loss, acc = (position["loss"], position["accuracy"]) if first else (0.0, 0.0)
            t0 = time.perf_counter()
            b = first
            for b in tqdm(range(first, steps), desc=f"pretrain {epoch + 1}/{epochs}", disable=not progress,
                          leave=False, initial=first, total=steps):
                sel = order[b]
                rep, m = step_fn(rep, batching.shard(images[sel], n_dev), batching.shard(labels[sel], n_dev),
                                 jax.random.fold_in(root, 2))
                m = jax.device_get(jax.tree.map(lambda x: x[0], m))
                loss += float(m["loss"])
                acc += float(m["accuracy"])
                if stop.requested:
                    break
            if stop.requested and b + 1 < steps:  # mid-epoch: keep the position and the partial sums
                keep(epoch=epoch, batch=b + 1, loss=loss, accuracy=acc)
                log(f"pretraining interrupted at epoch {epoch + 1}, batch {b + 1}/{steps}; progress saved")
                return {"interrupted": True}
            history = history + [{"epoch": epoch + 1, "train_loss": loss / steps, "train_accuracy": acc / steps,
                                  "seconds": round(time.perf_counter() - t0, 1)}]
            log(f"pretrain epoch {epoch + 1}/{epochs}: loss {loss / steps:.4f} acc {acc / steps:.4f}")
            if epoch + 1 < epochs:
                keep(epoch=epoch + 1, batch=0, loss=0.0, accuracy=0.0)
                if stop.requested:
                    log(f"pretraining interrupted after epoch {epoch + 1}; progress saved")
                    return {"interrupted": True}
    host = unreplicate(rep)
    save_variables(weights, {"params": host["params"], "batch_stats": host["batch_stats"]})
    summary = {
        "settings": settings,
        "images": int(len(idx)),
        "class_counts": counts,
        "history": history,
        "train_seconds": round(time.perf_counter() - t_start, 1),
        "initialisation": f"in-domain 12-class pretraining ({epochs} epochs on {len(idx)} images outside "
        f"the split's validation/test sets), new head",
    }
    from hotspot_jax.train.files import write_json_atomic

    write_json_atomic(summary_path, summary)
    (outdir / PROGRESS).unlink(missing_ok=True)
    return {"weights": weights, "summary": summary}


def save_progress(path: Path, settings: dict[str, Any], state, **position) -> None:
    """Write the pretraining state and its position (epoch, batch, running sums, history) as one .npz file,
    atomically, so that an interrupted pretraining continues where it stopped."""
    from hotspot_jax.train.files import write_atomic

    leaves = [np.asarray(x) for x in jax.tree.leaves(jax.device_get(state))]
    meta = json.dumps({"settings": settings, **position})
    arrays = {f"leaf{i:04d}": x for i, x in enumerate(leaves)}

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, meta=np.array(meta), **arrays)

    write_atomic(path, write)


def load_progress(path: Path, settings: dict[str, Any], like) -> dict[str, Any] | None:
    """The saved position with ``state`` (shaped like ``like``) when ``path`` holds progress of these
    ``settings``; None when there is none, it is of other settings, or it is unreadable (start afresh)."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            leaves = [z[f"leaf{i:04d}"] for i in range(len(z.files) - 1)]
    except (OSError, ValueError, KeyError):
        return None
    template, treedef = jax.tree.flatten(like)
    if meta.pop("settings", None) != settings or len(leaves) != len(template) or any(
            np.shape(a) != np.shape(b) or np.asarray(a).dtype != np.asarray(b).dtype for a, b in zip(leaves, template)):
        return None
    return dict(meta, state=jax.tree.unflatten(treedef, leaves))


def pretrain_for_run(recipe, arch: str, seed: int, dataset, outdir: Path, *, progress: bool = True,
                     log: Callable[[str], None] = print) -> dict[str, Any]:
    """The pretraining a ``recipe`` run needs (on the binary split of ``seed``)."""
    import architectures
    from hotspot_jax.data import ProtocolConfig, make_binary_split

    manifest = make_binary_split(dataset, ProtocolConfig(seed=seed))
    spec = architectures.get(arch)
    size = max(recipe.image_size, spec.min_input_size) if recipe.image_size else spec.input_size
    return pretrain(arch, seed, dataset, manifest, image_size=size, epochs=recipe.pretrain_epochs,
                    lr=recipe.pretrain_lr, batch_size=recipe.batch_size, online_augment=recipe.online_augment
                    if recipe.online_augment != "none" else "none", outdir=outdir, progress=progress, log=log,
                    aspect=recipe.aspect)
