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
