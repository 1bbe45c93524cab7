"""Training options beyond the study's recipe (all off by default): a learning-rate schedule, online
augmentation inside the jitted step and more No-Anomaly training images (in-domain pretraining is an
ordinary classes12 run that a run starts from with ``init_from``).

* ``lr_schedule``: ``constant`` (the study) or ``cosine``: linear warmup over ``warmup_epochs`` from 0,
  then cosine decay to 0 at the last step, per step.
* ``online_augment``: ``none``, ``flip`` (random horizontal and vertical flips, each with p = 0.5),
  ``flip-shift`` (flips plus a random translation of up to ``MAX_SHIFT`` pixels in each axis, edge pixels
  replicated) or ``flip-shift-jitter`` (then a random contrast factor in [1/MAX_CONTRAST, MAX_CONTRAST]
  about the image's mean and a brightness offset of up to ``MAX_BRIGHTNESS`` grey levels, clipped to 0-255)
  or ``flip-shift-erase`` (then, with probability ``ERASE_P``, random erasing (Zhong et al., 2017): one
  rectangle of ``ERASE_AREA`` of the image's area and aspect in ``ERASE_ASPECT`` set to the image's mean),
  or ``crop-flip-jitter`` (the views of a contrastive run, hotspot_jax.train.contrastive: a random crop of
  ``CROP_AREA`` of the image and relative aspect in ``CROP_ASPECT``, resized back to the image's size, bilinear,
  then flips and the jitter above), drawn per image from the step's dropout key, on the uint8 images before
  preprocessing.
* ``no_anomaly_ratio``: training No-Anomaly images per (augmented) training hotspot; above 1 the extra
  images come from the No-Anomaly images the split leaves unused, which therefore leave the
  realistic-prevalence test set (validation and the balanced test set do not change).
"""

from __future__ import annotations

import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from hotspot_jax.errors import ConfigError, DataError

SCHEDULES = ("constant", "cosine")
ONLINE_AUGMENTS = ("none", "flip", "flip-shift", "flip-shift-jitter", "flip-shift-erase", "crop-flip-jitter")
MAX_SHIFT = 3  # pixels (of the 40x24 source image)
MAX_CONTRAST = 1.25  # contrast factor drawn log-uniformly in [1/1.25, 1.25] (flip-shift-jitter)
MAX_BRIGHTNESS = 20.0  # grey levels (of 255) added or subtracted, uniformly (flip-shift-jitter)
ERASE_P = 0.5  # probability that an image gets an erased rectangle (flip-shift-erase; Zhong et al.'s default)
ERASE_AREA = (0.02, 0.2)  # the rectangle's share of the image area, uniform (Zhong et al.: up to 0.4; a hotspot is small)
ERASE_ASPECT = (0.3, 3.3)  # the rectangle's height / width, log-uniform (Zhong et al.'s)
CROP_AREA = (0.35, 1.0)  # crop-flip-jitter: the crop's share of the image area, uniform (SimCLR: 0.08-1 of a photo)
CROP_ASPECT = (3 / 4, 4 / 3)  # the crop's aspect relative to the image's, log-uniform (SimCLR's)


# ------------------------------------------------------------------------------------------ schedule
def make_schedule(lr: float, kind: str, steps_per_epoch: int, epochs: int, warmup_epochs: int = 0
                  ) -> float | optax.Schedule:
    """The learning rate: the constant ``lr``, or warmup + cosine decay over ``epochs * steps_per_epoch`` steps."""
    if kind == "constant":
        return lr
    if kind == "cosine":
        total = max(1, epochs * steps_per_epoch)
        warmup = min(total - 1, max(0, warmup_epochs * steps_per_epoch))
        if warmup:
            return optax.warmup_cosine_decay_schedule(0.0, lr, warmup, total, end_value=0.0)
        return optax.cosine_decay_schedule(lr, total)
    raise ConfigError(f"unknown --lr-schedule {kind!r}; use one of {', '.join(SCHEDULES)}")


def make_optimizer(run: dict[str, Any], steps_per_epoch: int) -> optax.GradientTransformation:
    """The run's SGD (see :func:`hotspot_jax.train.optimizer.sgd_momentum`) with its schedule."""
    from hotspot_jax.train.optimizer import sgd_momentum

    lr = make_schedule(run["lr"], run.get("lr_schedule", "constant"), steps_per_epoch, run["epochs"],
                       run.get("warmup_epochs", 0))
    return sgd_momentum(lr, run["momentum"], run["weight_decay"])


def lr_at(run: dict[str, Any], steps_per_epoch: int, step: int) -> float:
    """The learning rate used at ``step`` (for the metrics log)."""
    lr = make_schedule(run["lr"], run.get("lr_schedule", "constant"), steps_per_epoch, run["epochs"],
                       run.get("warmup_epochs", 0))
    return float(lr(step)) if callable(lr) else float(lr)


# ------------------------------------------------------------------------------- online augmentation
def _flip_shift(image: jax.Array, key: jax.Array, shift: int) -> jax.Array:
    k1, k2, k3 = jax.random.split(key, 3)
    flips = jax.random.bernoulli(k1, 0.5, (2,))
    image = jnp.where(flips[0], image[:, ::-1], image)
    image = jnp.where(flips[1], image[::-1, :], image)
    if shift:
        h, w = image.shape[0], image.shape[1]
        padded = jnp.pad(image, ((shift, shift), (shift, shift), (0, 0)), mode="edge")
        dy = jax.random.randint(k2, (), 0, 2 * shift + 1)
        dx = jax.random.randint(k3, (), 0, 2 * shift + 1)
        image = jax.lax.dynamic_slice(padded, (dy, dx, 0), (h, w, image.shape[2]))
    return image


def _jitter(image: jax.Array, key: jax.Array) -> jax.Array:
    """A random contrast (about the image's mean) and brightness change of one uint8 image, rounded and
    clipped back to uint8: the relative brightness a hotspot is seen by survives, the absolute level does not."""
    k1, k2 = jax.random.split(key)
    log_c = jax.random.uniform(k1, (), minval=-math.log(MAX_CONTRAST), maxval=math.log(MAX_CONTRAST))
    offset = jax.random.uniform(k2, (), minval=-MAX_BRIGHTNESS, maxval=MAX_BRIGHTNESS)
    x = image.astype(jnp.float32)
    mean = jnp.mean(x)
    x = (x - mean) * jnp.exp(log_c) + mean + offset
    return jnp.clip(jnp.round(x), 0, 255).astype(image.dtype)


def _erase(image: jax.Array, key: jax.Array) -> jax.Array:
    """With probability ERASE_P, one random rectangle of the uint8 image set to the image's rounded mean (random
    erasing): the network must not rest on any one region. The rectangle lies inside the image (clipped)."""
    k_apply, k_area, k_aspect, k_y, k_x = jax.random.split(key, 5)
    h, w = image.shape[0], image.shape[1]
    area = jax.random.uniform(k_area, (), minval=ERASE_AREA[0], maxval=ERASE_AREA[1]) * h * w
    aspect = jnp.exp(jax.random.uniform(k_aspect, (), minval=math.log(ERASE_ASPECT[0]),
                                        maxval=math.log(ERASE_ASPECT[1])))
    eh = jnp.clip(jnp.round(jnp.sqrt(area * aspect)), 1, h).astype(jnp.int32)
    ew = jnp.clip(jnp.round(jnp.sqrt(area / aspect)), 1, w).astype(jnp.int32)
    y0 = jax.random.randint(k_y, (), 0, h - eh + 1)
    x0 = jax.random.randint(k_x, (), 0, w - ew + 1)
    ys = jnp.arange(h)[:, None, None]
    xs = jnp.arange(w)[None, :, None]
    inside = (ys >= y0) & (ys < y0 + eh) & (xs >= x0) & (xs < x0 + ew) & jax.random.bernoulli(k_apply, ERASE_P)
    fill = jnp.round(jnp.mean(image.astype(jnp.float32))).astype(image.dtype)
    return jnp.where(inside, fill, image)


def _crop(image: jax.Array, key: jax.Array) -> jax.Array:
    """A random crop of the uint8 image (area share in CROP_AREA, aspect in CROP_ASPECT relative to the image's,
    inside the image) resized back to the image's size, bilinear, rounded to uint8 (SimCLR's random resized crop)."""
    k_area, k_aspect, k_y, k_x = jax.random.split(key, 4)
    h, w = image.shape[0], image.shape[1]
    area = jax.random.uniform(k_area, (), minval=CROP_AREA[0], maxval=CROP_AREA[1])
    aspect = jnp.exp(jax.random.uniform(k_aspect, (), minval=math.log(CROP_ASPECT[0]), maxval=math.log(CROP_ASPECT[1])))
    ch = jnp.clip(h * jnp.sqrt(area * aspect), 1.0, h)
    cw = jnp.clip(w * jnp.sqrt(area / aspect), 1.0, w)
    y0 = jax.random.uniform(k_y, ()) * (h - ch)
    x0 = jax.random.uniform(k_x, ()) * (w - cw)
    scale = jnp.stack([h / ch, w / cw])
    out = jax.image.scale_and_translate(image.astype(jnp.float32), image.shape, (0, 1), scale,
                                        -jnp.stack([y0, x0]) * scale, method="linear", antialias=False)
    return jnp.clip(jnp.round(out), 0, 255).astype(image.dtype)


def _crop_flip_jitter(image: jax.Array, key: jax.Array) -> jax.Array:
    k_crop, k_flip, k_jitter = jax.random.split(key, 3)
    return _jitter(_flip_shift(_crop(image, k_crop), k_flip, 0), k_jitter)


def online_augment_fn(kind: str) -> Callable[[jax.Array, jax.Array], jax.Array] | None:
    """``(images (N, H, W, C), key) -> images`` for ``kind``, or None for ``none`` (jit-able)."""
    if kind == "none":
        return None
    if kind not in ONLINE_AUGMENTS:
        raise ConfigError(f"unknown --online-augment {kind!r}; use one of {', '.join(ONLINE_AUGMENTS)}")
    shift = MAX_SHIFT if kind.startswith("flip-shift") else 0
    after = {"flip-shift-jitter": _jitter, "flip-shift-erase": _erase}.get(kind)

    def one(image: jax.Array, key: jax.Array) -> jax.Array:
        if kind == "crop-flip-jitter":
            return _crop_flip_jitter(image, key)
        if after is None:  # flip and flip-shift draw from the key itself, as their committed runs did
            return _flip_shift(image, key, shift)
        k_geometry, k_after = jax.random.split(key)
        return after(_flip_shift(image, k_geometry, shift), k_after)

    def augment(images: jax.Array, key: jax.Array) -> jax.Array:
        keys = jax.random.split(key, images.shape[0])
        return jax.vmap(one)(images, keys)

    return augment


# ------------------------------------------------------------------------------ more No-Anomaly images
def add_no_anomaly(dataset, manifest, arrays: dict, ratio: float, seed: int):
    """Move ``round((ratio - 1) * hotspots_in_train)`` unused No-Anomaly images into training.

    Returns ``(manifest, arrays)`` with ``train`` grown and ``test_realistic`` shrunk by the same ids;
    ``val`` and ``test`` are untouched. The images are drawn with ``default_rng([seed, 0xA0])`` from the
    No-Anomaly ids in ``test_realistic`` but not in ``test`` (never a validation or test image).
    """
    from dataclasses import replace

    from hotspot_jax.data import ArraySplit

    if ratio == 1.0:
        return manifest, arrays
    if not ratio >= 1.0 or not math.isfinite(ratio):
        raise ConfigError(f"--no-anomaly-ratio must be a finite number >= 1, got {ratio}")
    train = arrays["train"]
    n_hot = int((train.labels == 1).sum())
    want = int(math.floor((ratio - 1.0) * n_hot + 0.5))
    test_ids = set(manifest.splits["test"])
    pool = np.array([i for i in manifest.splits["test_realistic"] if i not in test_ids], dtype=str)
    if want > len(pool):
        raise ConfigError(f"--no-anomaly-ratio {ratio} needs {want} more No-Anomaly images; only {len(pool)} are unused")
    extra = np.sort(pool[np.random.default_rng([seed, 0xA0]).permutation(len(pool))[:want]])
    new_train = _with_no_anomaly(dataset, train, extra)
    extra_set = set(extra.tolist())
    keep = np.array([i not in extra_set for i in arrays["test_realistic"].ids])
    tr = arrays["test_realistic"]
    new_real = ArraySplit(tr.images[keep], tr.labels[keep], tr.ids[keep], tr.class_names)
    splits = dict(manifest.splits)
    splits["train"] = tuple(sorted(set(splits["train"]) | extra_set, key=_id_key))
    splits["test_realistic"] = tuple(i for i in splits["test_realistic"] if i not in extra_set)
    counts = {k: dict(v) for k, v in manifest.counts.items()}
    for key in ("train", "train_augmented"):
        counts[key]["No-Anomaly"] = counts[key].get("No-Anomaly", 0) + want
    counts["test_realistic"]["No-Anomaly"] = counts["test_realistic"].get("No-Anomaly", 0) - want
    out = dict(arrays, train=new_train, test_realistic=new_real)
    return replace(manifest, splits=splits, counts=counts), out


def add_pool_no_anomaly(dataset, manifest, arrays: dict, n: int, seed: int):
    """Add ``n`` No-Anomaly images of the fixed layout's pretraining pool to ``train`` (drawn with
    ``default_rng([seed, 0xA1])``); ``(manifest, arrays)`` with nothing else changed.

    No split of any seed validates or tests on that pool (hotspot_jax.data.protocol.no_anomaly_pools), so the
    images can join training without a leak; the loop still trains each epoch on the protocol's number of
    No-Anomaly images, drawn afresh from the larger pool (:func:`hotspot_jax.train.batching.resampled_batch_indices`),
    so the classes stay balanced and an epoch costs what it did. tests/test_pool_no_anomaly.py."""
    from dataclasses import replace

    from hotspot_jax.data.protocol import no_anomaly_pools

    if n == 0:
        return manifest, arrays
    if manifest.config.no_anomaly_pools != "fixed":
        raise ConfigError("--pool-no-anomaly needs --no-anomaly-pools fixed (the pool it draws from)")
    pool = np.asarray(no_anomaly_pools(dataset, "fixed")["pretrain"], dtype=str)
    if n > len(pool):
        raise ConfigError(f"--pool-no-anomaly {n}: the pretraining pool has {len(pool)} No-Anomaly images")
    extra = np.sort(pool[np.random.default_rng([seed, 0xA1]).permutation(len(pool))[:n]])
    used = {i for name, ids in manifest.splits.items() for i in ids}
    if used & set(extra.tolist()):  # the pools are disjoint by construction; never let a split image in twice
        raise DataError("--pool-no-anomaly: a pretraining-pool image is already in the run's split")
    new_train = _with_no_anomaly(dataset, arrays["train"], extra)
    splits = dict(manifest.splits)
    splits["train"] = tuple(sorted(set(splits["train"]) | set(extra.tolist()), key=_id_key))
    counts = {k: dict(v) for k, v in manifest.counts.items()}
    for key in ("train", "train_augmented"):
        counts[key]["No-Anomaly"] = counts[key].get("No-Anomaly", 0) + n
    return replace(manifest, splits=splits, counts=counts), dict(arrays, train=new_train)


def _with_no_anomaly(dataset, train, extra: np.ndarray):
    """``train`` with the No-Anomaly images ``extra`` (ids) appended, label 0."""
    from hotspot_jax.data import ArraySplit

    idx = dataset.indices(extra)
    return ArraySplit(images=np.concatenate([train.images, dataset.images[idx]]),
                      labels=np.concatenate([train.labels, np.zeros(len(idx), np.int32)]),
                      ids=np.concatenate([train.ids, extra]), class_names=train.class_names)


def _id_key(i: str):
    return (0, int(i), "") if str(i).isdigit() else (1, 0, str(i))
