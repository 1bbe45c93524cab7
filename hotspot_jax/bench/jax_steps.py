"""The project's own JAX training and inference steps on a synthetic batch, ready to be timed.

Nothing here re-implements a step: the model, optimiser, state and steps come from the same library
functions ``scripts/train.py`` uses (``build_model``, ``sgd_momentum``, ``create_state``,
``make_train_step``, ``make_eval_step``, ``replicate``), fed host-side uint8 batches exactly as the
training loop feeds them. FLOPs come from XLA's cost analysis of the lowered steps.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from hotspot_jax.bench.batch import SyntheticBatch
from hotspot_jax.bench.timing import warm_up


def _flops(lowered) -> float | None:
    """FLOPs of one call of a lowered computation (XLA's HLO cost analysis), or None if unavailable."""
    try:
        cost = lowered.cost_analysis()
    except Exception:  # cost analysis is best-effort on some backends
        return None
    if isinstance(cost, (list, tuple)):
        cost = cost[0] if cost else None
    value = (cost or {}).get("flops")
    return float(value) if value is not None else None


class JaxWorkload:
    """One architecture's train and eval steps at one input size and global batch size."""

    framework = "jax"

    def __init__(self, arch: str, image_size: int, batch: SyntheticBatch, *, dtype: str = "float32",
                 lr: float = 1e-3, seed: int = 0, impl=None):
        from hotspot_jax.train import batching
        from hotspot_jax.train.loop import replicate
        from hotspot_jax.train.optimizer import sgd_momentum
        from hotspot_jax.train.restore import build_model
        from hotspot_jax.train.state import create_state, init_variables
        from hotspot_jax.train.step import AXIS, make_eval_step, make_train_step

        self.devices = jax.local_devices()
        n_dev = len(self.devices)
        batching.check_divisible(batch.size, n_dev, "--batch-size")
        self.image_size = image_size
        self.batch_size = batch.size
        self.model = build_model({"run": {"arch": arch, "dtype": dtype}}, bn_axis_name=AXIS, impl=impl)
        tx = sgd_momentum(lr)
        state = create_state(init_variables(self.model, jax.random.PRNGKey(seed), image_size), tx)
        self.state = replicate(state, self.devices)
        self.train_step = make_train_step(self.model, tx, image_size, self.devices)
        self.eval_step = make_eval_step(self.model, image_size, self.devices)
        self.key = jax.random.PRNGKey(seed + 1)
        self.images = batching.shard(batch.images_nhwc, n_dev)  # host numpy, as the loop passes them
        self.labels = batching.shard(batch.labels.astype(np.int32), n_dev)
        self.flops_train: float | None = None  # per step, every device together
        self.flops_infer: float | None = None
        self.warmup_seconds: list[float] = []

    def analyse(self) -> dict[str, Any]:
        """FLOPs of one train and one eval step (whole batch) from XLA's cost analysis, no compilation."""
        n_dev = len(self.devices)
        per_dev_train = _flops(self.train_step.lower(self.state, self.images, self.labels, self.key))
        per_dev_infer = _flops(self.eval_step.lower(self.state, self.images, self.labels))
        self.flops_train = per_dev_train * n_dev if per_dev_train is not None else None
        self.flops_infer = per_dev_infer * n_dev if per_dev_infer is not None else None
        return {"flops_train_step": self.flops_train, "flops_infer_step": self.flops_infer}

    def warm_up(self, train_steps: int = 2) -> list[float]:
        """Compile and run: the first calls' seconds (compilation included) are returned and kept."""
        return warm_up(self, train_steps)

    def train(self, steps: int) -> None:
        """``steps`` training steps on the batch, blocking until the last one is done."""
        metrics = None
        for _ in range(steps):
            self.state, metrics = self.train_step(self.state, self.images, self.labels, self.key)
        jax.block_until_ready(metrics)

    def infer(self, steps: int) -> None:
        """``steps`` evaluation (inference) steps on the batch, blocking until done."""
        out = None
        for _ in range(steps):
            out = self.eval_step(self.state, self.images, self.labels)
        jax.block_until_ready(out)
