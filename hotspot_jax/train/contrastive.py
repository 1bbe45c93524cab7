"""Self-supervised contrastive pretraining (SimCLR, Chen et al. 2020), the second ImageNet substitute issue 23 lists.

A contrastive run (``TrainConfig.objective == "contrastive"``) is an ordinary run of the one training loop whose
labels are never read: each training image is seen as two views drawn by the run's online augmentation
(``crop-flip-jitter``, :mod:`hotspot_jax.train.levers`), the network's head (``projection_dim`` outputs, the
projection) maps both, and the NT-Xent loss asks each view to pick its partner out of every other view of the
batch. Validation reads the same loss and the share of views whose nearest view is their partner (``accuracy``),
on views drawn with fixed keys, so epochs compare (views depend on the device count, as training's do: compare runs
on one device count). The best checkpoint is the epoch with the highest retrieval accuracy (ties: lower loss),
the loop's rule. The projection is the network's own last linear layer, or with ``projection_hidden`` SimCLR's
two-layer MLP (:class:`ProjectedNetwork`: the network's last layer gives ``projection_hidden`` outputs, then ReLU and
a linear layer to ``projection_dim``; SimCLR found it better than a linear one). What a later run keeps is the
backbone: ``--init-from`` a contrastive run always draws a new head (hotspot_jax.train.loop.init_from_run). Tested in
tests/test_contrastive.py.
"""

from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

OBJECTIVES = ("supervised", "contrastive")
PROJECTION_DIM = 128  # SimCLR's projection output size
TEMPERATURE = 0.2  # NT-Xent's tau (SimCLR: 0.1-0.5 by batch size; 0.2 for batches of a few hundred)
VIEW_KEY = 17  # validation views are drawn from fold_in(PRNGKey(VIEW_KEY), batch index): the same every epoch
VAL_FRACTION = 0.15  # of the task split's training images, set aside to validate a contrastive run on
NETWORK = "network"  # where a ProjectedNetwork keeps the network's variables


class ProjectedNetwork(nn.Module):
    """SimCLR's MLP projection on a network: the network (its last linear layer giving the hidden width), ReLU, then
    a linear layer ``projection`` to ``projection_dim`` outputs, float32. Its variables are the network's under
    :data:`NETWORK` plus ``projection`` (:func:`network_variables` takes the network's back out)."""

    network: nn.Module
    projection_dim: int

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        h = nn.relu(self.network(x, train=train))
        return nn.Dense(self.projection_dim, name="projection")(h.astype(jnp.float32))


def network_outputs(projection_dim: int, projection_hidden: int | None) -> int:
    """A contrastive run's network's last-layer outputs: the MLP projection's hidden width, or with a linear
    projection (``projection_hidden`` None) the projection itself. The one rule both the loop and
    hotspot_jax.train.restore.build_model build by."""
    return projection_hidden or projection_dim


def network_variables(config: dict[str, Any], variables: dict[str, Any]) -> dict[str, Any]:
    """The network's own variables out of those of the run of ``config`` (config.json): taken out of
    :data:`NETWORK` for a contrastive run with an MLP projection, unchanged otherwise."""
    from hotspot_jax.train.restore import is_contrastive

    if not (is_contrastive(config) and config["run"].get("projection_hidden")):
        return variables
    return {collection: tree.get(NETWORK, {}) for collection, tree in variables.items()}


def with_projection(network: dict[str, Any], fresh: dict[str, Any]) -> dict[str, Any]:
    """A :class:`ProjectedNetwork`'s variables: the network's ``network`` under :data:`NETWORK`, everything else
    (the projection) from ``fresh``, that model's initial variables, whose tree it keeps: a collection the network
    does not have (``batch_stats`` of a network without BatchNorm) stays empty (tests/test_contrastive.py)."""
    return {collection: ({**tree, NETWORK: network[collection]} if NETWORK in tree else tree)
            for collection, tree in fresh.items()}


def unlabelled_split(dataset, manifest):
    """The split a contrastive run uses: its task split's training images only, originals (no class gets the offline
    augmentation: a copy of a module would be a false negative of it), a seeded :data:`VAL_FRACTION` of them set
    aside to validate on, no test. The task split's own validation and test images are not read, so a
    supervised run of the same split can start from it and still choose its checkpoint on images the contrastive
    run never saw (the no-leak check, hotspot_jax.data.tasks.check_no_leak; tests/test_contrastive.py)."""
    import dataclasses

    import numpy as np

    from hotspot_jax.data.protocol import _count, _sorted_ids, task_labels

    ids = list(manifest.splits["train"])
    order = np.random.default_rng([manifest.seed, 0x551]).permutation(len(ids))
    n_val = max(1, int(round(VAL_FRACTION * len(ids))))
    splits = {"train": _sorted_ids(ids[i] for i in order[n_val:]), "val": _sorted_ids(ids[i] for i in order[:n_val]),
              "test": ()}
    names = tuple(manifest.class_names)
    counts = {name: _count(task_labels(manifest.task, dataset.labels[dataset.indices(s)]), len(names), names)
              for name, s in splits.items()}
    counts["train_augmented"] = dict(counts["train"])  # no offline copy: one would be a false negative of its original
    where = f"{manifest.left_out}; " if manifest.left_out else ""
    return dataclasses.replace(manifest, splits=splits, counts=counts,
                               config=dataclasses.replace(manifest.config, augment_classes=()),
                               left_out=f"{where}contrastive: the split's training images only, "
                                        f"{VAL_FRACTION:g} of them to validate")


def nt_xent(z: jax.Array, temperature: float, valid: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """Per-view NT-Xent loss and retrieval hit of ``z`` (2B, d): rows ``i`` and ``i + B`` are the two views of one
    image. ``loss[i] = -log softmax_j(cos(z_i, z_j) / temperature)[partner(i)]`` over every ``j != i``; ``hit[i]``:
    the partner is the most similar view. ``valid`` (B,) bool: images whose views take part at all (padding is not
    a negative; rows of invalid images get loss 0 and hit 0). In float32."""
    z = z.astype(jnp.float32)
    n = z.shape[0]
    b = n // 2
    z = z * jax.lax.rsqrt(jnp.maximum(jnp.sum(z * z, axis=-1, keepdims=True), 1e-24))  # no NaN gradient at 0
    sim = z @ z.T / temperature
    partner = (jnp.arange(n) + b) % n
    keep = ~jnp.eye(n, dtype=bool)
    if valid is not None:
        rows = jnp.concatenate([valid, valid])
        keep = keep & rows[None, :]
    sim = jnp.where(keep, sim, -jnp.inf)
    log_p = jax.nn.log_softmax(sim, axis=-1)
    loss = -jnp.take_along_axis(log_p, partner[:, None], axis=-1)[:, 0]
    hit = (jnp.argmax(sim, axis=-1) == partner).astype(jnp.float32)
    if valid is not None:
        loss, hit = jnp.where(rows, loss, 0.0), jnp.where(rows, hit, 0.0)
    return loss, hit


def two_views(images: jax.Array, key: jax.Array, augment: Callable[[jax.Array, jax.Array], jax.Array]) -> jax.Array:
    """``[augment(images, k1); augment(images, k2)]`` (2B, H, W, C) with two independent keys of ``key``."""
    return jnp.concatenate([augment(images, jax.random.fold_in(key, 1)), augment(images, jax.random.fold_in(key, 2))])


def global_views(z: jax.Array, axis: str) -> tuple[jax.Array, jax.Array]:
    """The views of the whole batch in NT-Xent's order and the rows of this device's own: ``z`` is this device's
    (2b, d) [first views; second views]; with D devices the result is (2Db, d) [every device's first views; every
    device's second views], so the negatives are the global batch's, whatever the device count."""
    d = jax.lax.axis_size(axis)
    if d == 1:
        return z, jnp.arange(z.shape[0])
    b = z.shape[0] // 2
    everyone = jax.lax.all_gather(z, axis)  # (D, 2b, dim)
    first, second = everyone[:, :b].reshape(d * b, -1), everyone[:, b:].reshape(d * b, -1)
    me = jax.lax.axis_index(axis)
    own = jnp.concatenate([me * b + jnp.arange(b), d * b + me * b + jnp.arange(b)])
    return jnp.concatenate([first, second]), own


def contrastive_loss(z: jax.Array, temperature: float, axis: str) -> tuple[jax.Array, jax.Array]:
    """This device's mean NT-Xent loss and retrieval accuracy over its own views, against the global batch."""
    everyone, own = global_views(z, axis)
    loss, hit = nt_xent(everyone, temperature)
    return jnp.mean(loss[own]), jnp.mean(hit[own])


def eval_step_fn(model: Any, image_size: Any, temperature: float, axis: str,
                 augment: Callable[[jax.Array, jax.Array], jax.Array]) -> Callable:
    """Per-device ``(state, images_u8, valid, key) -> (loss, hit)`` of this device's views (2b,): both views of each
    image drawn with ``key`` (the caller's, fixed per batch), the negatives every valid image's views in the global
    batch, as in training (padding rows, ``valid`` False, take no part and read 0)."""
    from hotspot_jax.train import ema
    from hotspot_jax.train.step import _preprocess

    def step(state, images, valid, key):
        variables = ema.evaluated_variables(state)
        key = jax.random.fold_in(key, jax.lax.axis_index(axis))  # each device's images get their own views
        x = _preprocess(two_views(images, key, augment), image_size)
        z = model.apply(variables, x, train=False)
        everyone, own = global_views(z, axis)
        valid_all = valid if jax.lax.axis_size(axis) == 1 else jax.lax.all_gather(valid, axis).reshape(-1)
        loss, hit = nt_xent(everyone, temperature, valid_all)
        return loss[own], hit[own]

    return step


def make_eval_step(model: Any, image_size: Any, temperature: float, augment: Callable, devices=None) -> Callable:
    """The pmapped :func:`eval_step_fn` over a replicated state (the key is shared, not sharded)."""
    from hotspot_jax.train.step import AXIS

    return jax.pmap(eval_step_fn(model, image_size, temperature, AXIS, augment), axis_name=AXIS,
                    in_axes=(0, 0, 0, None), devices=devices)


def evaluate_views(eval_step, rep_state, split, batch_size: int, devices, desc: str, progress: bool) -> dict[str, Any]:
    """Mean NT-Xent ``loss`` and retrieval ``accuracy`` over every view of ``split``, in batches of ``batch_size``
    (the training batch: the negatives a view meets are as many as in training; the last batch has fewer), views
    drawn with fixed keys (:data:`VIEW_KEY`), so two epochs are read on the same views."""
    import numpy as np
    from tqdm.auto import tqdm

    from hotspot_jax.train import batching, distributed

    n_local = len(distributed.local_devices(devices))
    losses, hits = [], []
    root = jax.random.PRNGKey(VIEW_KEY)
    batches = list(batching.padded_batches(len(split), batch_size))
    for b, (idx, valid) in enumerate(tqdm(batches, desc=desc, leave=False, disable=not progress, unit="batch")):
        mask = np.arange(batch_size) < valid
        rows = distributed.local_rows(np.arange(batch_size), devices)
        loss, hit = eval_step(rep_state, batching.shard(split.images[idx[rows]], n_local),
                              batching.shard(mask[rows], n_local), jax.random.fold_in(root, b))
        loss, hit = (distributed.global_outputs(x, devices) for x in (loss, hit))
        # per device (first views; second views) of its rows: the valid rows' views, in any order
        d = np.asarray(loss).shape[0]
        per_device_mask = np.tile(mask.reshape(d, -1), 2)
        losses.append(np.asarray(loss, np.float64)[per_device_mask])
        hits.append(np.asarray(hit, np.float64)[per_device_mask])
    loss, hit = np.concatenate(losses), np.concatenate(hits)
    return {"loss": float(loss.mean()), "accuracy": float(hit.mean()), "views": int(loss.size)}
