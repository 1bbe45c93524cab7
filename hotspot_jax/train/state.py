"""Training state as a plain pytree (step, params, batch_stats, opt_state) and its initialisation.

A plain dict keeps the state trivially saveable by orbax and replicable over ``pmap`` devices; the
model and optimiser stay outside it (static in the jitted step).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from hotspot_jax.errors import ConfigError

TrainState = dict  # {"step": int32 scalar, "params": ..., "batch_stats": ..., "opt_state": ...[, "ema": ...]}


def init_variables(model: nn.Module, key: jax.Array, image_size: int | tuple[int, int]) -> dict[str, Any]:
    """Fresh ``{"params", "batch_stats"}`` of ``model`` for ``(1, size, size, 3)`` inputs, or ``(1, h, w, 3)``
    for a ``(h, w)`` size (CPU-cheap)."""
    params_key, dropout_key = jax.random.split(key)
    from hotspot_jax.data.preprocess import size_hw

    dummy = jnp.zeros((1, *size_hw(image_size), 3), jnp.float32)
    variables = jax.jit(lambda k1, k2: model.init({"params": k1, "dropout": k2}, dummy, train=False))(
        params_key, dropout_key
    )
    return {"params": variables["params"], "batch_stats": variables.get("batch_stats", {})}


def replace_head(
    pretrained: dict[str, Any], fresh: dict[str, Any], classifier: tuple[str, ...], source: str
) -> dict[str, Any]:
    """Pretrained variables with the classifier params ``classifier`` taken from ``fresh`` (a new head).

    Every other leaf must exist in both trees with the same shape; a mismatch means the checkpoint
    belongs to another architecture or width, reported as a ConfigError naming ``source``.
    """
    out = {}
    for collection in ("params", "batch_stats"):
        fresh_c = dict(fresh.get(collection, {}))
        pre_c = dict(pretrained.get(collection, {}))
        for name in classifier:
            if name in fresh_c:
                pre_c[name] = fresh_c[name]
        fresh_flat = {jax.tree_util.keystr(p): v for p, v in jax.tree_util.tree_leaves_with_path(fresh_c)}
        pre_flat = {jax.tree_util.keystr(p): v for p, v in jax.tree_util.tree_leaves_with_path(pre_c)}
        missing = sorted(set(fresh_flat) - set(pre_flat))
        extra = sorted(set(pre_flat) - set(fresh_flat))
        bad = [k for k in fresh_flat if k in pre_flat and np.shape(pre_flat[k]) != np.shape(fresh_flat[k])]
        if missing or extra or bad:
            detail = "; ".join(
                f"{what}: {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''}"
                for what, keys in (("missing", missing), ("unexpected", extra), ("shape mismatch", bad))
                if keys
            )
            raise ConfigError(f"pretrained weights {source} do not fit the model ({collection} {detail})")
        out[collection] = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), pre_c)
    return out


def create_state(variables: dict[str, Any], tx: optax.GradientTransformation, ema_decay: float = 0.0) -> TrainState:
    """Step-0 training state from model variables and an optimiser; with ``ema_decay > 0`` also ``"ema"``, the
    weight average started at these variables (hotspot_jax.train.ema); without, no ``"ema"`` key at all."""
    params = variables["params"]
    state = {
        "step": jnp.zeros((), jnp.int32),
        "params": params,
        "batch_stats": variables.get("batch_stats", {}),
        "opt_state": tx.init(params),
    }
    if ema_decay > 0:
        from hotspot_jax.train import ema

        state["ema"] = ema.init(variables)
    return state
