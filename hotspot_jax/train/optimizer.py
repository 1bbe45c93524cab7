"""The study's optimiser: SGD with momentum and L2 weight decay, with torch.optim.SGD's semantics.

torch adds ``weight_decay * p`` to the gradient before the momentum buffer
(``buf = momentum * buf + g``; ``p -= lr * buf``), which is exactly
``add_decayed_weights`` followed by ``optax.sgd(momentum=...)``. MATLAB's ``trainingOptions``
default L2 regularisation is 1e-4, which the study most likely kept.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import optax


def decay_mask_fn(mode: str) -> Callable[[Any], Any] | None:
    """Which parameters get weight decay: ``all`` (torch and MATLAB) or ``kernels`` (big_vision)."""
    if mode == "all":
        return None
    if mode == "kernels":
        return lambda params: jax.tree_util.tree_map_with_path(
            lambda path, _: getattr(path[-1], "key", None) == "kernel", params
        )
    raise ValueError(f"unknown weight-decay mask {mode!r}; use 'all' or 'kernels'")


def sgd_momentum(
    learning_rate: float | optax.Schedule,
    momentum: float = 0.9,
    weight_decay: float = 1e-4,
    decay_mask: str = "all",
    nesterov: bool = False,
) -> optax.GradientTransformation:
    """SGD with momentum and coupled L2 weight decay, step for step equal to torch.optim.SGD."""
    parts = []
    if weight_decay:
        parts.append(optax.add_decayed_weights(weight_decay, mask=decay_mask_fn(decay_mask)))
    parts.append(optax.sgd(learning_rate, momentum=momentum or None, nesterov=nesterov))
    return optax.chain(*parts)
