"""An exponential moving average (EMA) of the weights, the ``ema_decay`` lever (off at 0, the study's).

With ``ema_decay = d > 0`` the training state carries ``"ema": {"params", "batch_stats"}``, started at the
run's initial variables and, after every optimiser step ``t`` (0-based, the step count before the update),
moved towards the new variables with ``d_t = min(d, (1 + t) / (10 + t))``: the warmup keeps the early average
from being dominated by the (random or pretrained) starting weights. The average never feeds back into
training; it is what validation, the best checkpoint, the final test and prediction evaluate
(:func:`evaluated_variables`, the one place that decides; tests/test_ema.py).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp


def decay_at(decay: float, step: jax.Array | int) -> jax.Array:
    """The decay used by the update after step ``step``: ``min(decay, (1 + step) / (10 + step))`` (float32)."""
    s = jnp.asarray(step, jnp.float32)
    return jnp.minimum(jnp.float32(decay), (1.0 + s) / (10.0 + s))


def init(variables: dict[str, Any]) -> dict[str, Any]:
    """The average at step 0: a copy of ``{"params", "batch_stats"}`` (own buffers, so donating the state is safe)."""
    return jax.tree.map(lambda x: jnp.array(x, copy=True),
                        {"params": variables["params"], "batch_stats": variables.get("batch_stats", {})})


def update(ema: dict[str, Any], new: dict[str, Any], decay: float, step: jax.Array | int) -> dict[str, Any]:
    """``d_t * ema + (1 - d_t) * new`` leaf by leaf (``d_t``: :func:`decay_at`), in each leaf's dtype."""
    d = decay_at(decay, step)
    return jax.tree.map(lambda e, n: (d.astype(e.dtype) * e + (1 - d).astype(e.dtype) * n).astype(e.dtype), ema, new)


def evaluated_variables(state: dict[str, Any]) -> dict[str, Any]:
    """The ``{"params", "batch_stats"}`` to evaluate of a training state (or of a variables tree): the EMA when
    the state has one, else the trained variables themselves."""
    if "ema" in state:
        return state["ema"]
    return {"params": state["params"], "batch_stats": state["batch_stats"]}
