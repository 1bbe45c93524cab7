"""Host-side batching with fixed shapes: shuffled training batches and padded evaluation batches.

Training drops the last partial batch each epoch (as MATLAB's ``trainNetwork`` does); the order is
reshuffled every epoch from (seed, epoch), so no image is always left out and a resumed run sees the
same batches. Evaluation pads the last batch with copies of the first image and masks the padding.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np

from hotspot_jax.errors import ConfigError


def epoch_permutation(seed: int, epoch: int, n: int) -> np.ndarray:
    """The order of the ``n`` training images in ``epoch``: a function of (seed, epoch) only."""
    return np.random.default_rng([seed, epoch, 0x5EED]).permutation(n)


def steps_per_epoch(n: int, batch_size: int) -> int:
    """Full batches per epoch (the last partial batch is dropped)."""
    return n // batch_size


def train_batch_indices(seed: int, epoch: int, n: int, batch_size: int) -> np.ndarray:
    """``(steps, batch_size)`` indices of the epoch's full batches."""
    steps = steps_per_epoch(n, batch_size)
    if steps == 0:
        raise ConfigError(f"--batch-size {batch_size} is larger than the training set ({n} images)")
    return epoch_permutation(seed, epoch, n)[: steps * batch_size].reshape(steps, batch_size)


def resampled_batch_indices(seed: int, epoch: int, labels: np.ndarray, n_negatives: int,
                            batch_size: int) -> np.ndarray:
    """``(steps, batch_size)`` indices of an epoch that trains on every positive (label != 0) image and on
    ``n_negatives`` of the label-0 images, drawn without replacement from (seed, epoch) alone, then shuffled as
    :func:`train_batch_indices` shuffles (so a resumed run sees the same batches). tests/test_pool_no_anomaly.py."""
    labels = np.asarray(labels)
    pos, neg = np.flatnonzero(labels != 0), np.flatnonzero(labels == 0)
    if not 0 <= n_negatives <= len(neg):
        raise ConfigError(f"an epoch cannot draw {n_negatives} negatives from {len(neg)}")
    drawn = np.random.default_rng([seed, epoch, 0xBA1A]).choice(neg, n_negatives, replace=False)
    members = np.sort(np.concatenate([pos, drawn]))
    return members[train_batch_indices(seed, epoch, len(members), batch_size)]


def epoch_negatives(labels: np.ndarray, pool_extra: int) -> int | None:
    """How many label-0 images an epoch draws when ``pool_extra`` of them were added beyond the protocol's
    (``--pool-no-anomaly``): as many as the protocol gives; None when none were added (every image, every epoch)."""
    if not pool_extra:
        return None
    n = int((np.asarray(labels) == 0).sum()) - int(pool_extra)
    if n < 0:
        raise ConfigError(f"the training set has fewer No-Anomaly images than the {pool_extra} added to it")
    return n


def epoch_steps(labels: np.ndarray, pool_extra: int, batch_size: int) -> int:
    """Full batches per epoch of :func:`epoch_batches`."""
    n_neg = epoch_negatives(labels, pool_extra)
    n = len(labels) if n_neg is None else int((np.asarray(labels) != 0).sum()) + n_neg
    return steps_per_epoch(n, batch_size)


def epoch_batches(seed: int, epoch: int, labels: np.ndarray, pool_extra: int, batch_size: int) -> np.ndarray:
    """The epoch's ``(steps, batch_size)`` indices: every training image (:func:`train_batch_indices`), or with
    ``pool_extra`` images added, every positive and the protocol's number of negatives drawn afresh."""
    n_neg = epoch_negatives(labels, pool_extra)
    if n_neg is None:
        return train_batch_indices(seed, epoch, len(labels), batch_size)
    return resampled_batch_indices(seed, epoch, labels, n_neg, batch_size)


def check_divisible(batch_size: int, n_devices: int, option: str) -> None:
    """A batch must split evenly over the devices."""
    if batch_size <= 0:
        raise ConfigError(f"{option} must be positive, got {batch_size}")
    if batch_size % n_devices:
        raise ConfigError(
            f"{option} {batch_size} is not divisible by the number of devices ({n_devices}); "
            f"use a multiple of {n_devices}"
        )


def shard(x: np.ndarray, n_devices: int) -> np.ndarray:
    """Split the leading (batch) axis over devices: ``(B, ...) -> (D, B/D, ...)``."""
    return x.reshape(n_devices, x.shape[0] // n_devices, *x.shape[1:])


def padded_batches(n: int, batch_size: int) -> Iterator[tuple[np.ndarray, int]]:
    """``(indices, valid)`` for evaluation: every batch full, the last one padded with index 0."""
    for start in range(0, n, batch_size):
        idx = np.arange(start, min(start + batch_size, n))
        valid = len(idx)
        if valid < batch_size:
            idx = np.concatenate([idx, np.zeros(batch_size - valid, idx.dtype)])
        yield idx, valid
