"""Grad-CAM (Selvaraju et al., 2017) for any registered architecture, without touching the model files.

The target layer is a direct child module of the network, found by running the model once abstractly
(``jax.eval_shape``) under ``flax.linen.intercept_methods``: the last child called that holds weights,
is not part of the classification head (``ArchSpec.classifier``) and returns a spatial feature map
``(N, h, w, C)`` (or SqueezeNet's channel parts of one). That is the last convolutional stage: ResNet's
last block, GoogLeNet's ``inception5b``, the last 1x1 conv's BatchNorm in MobileNetV2 and ShuffleNetV2,
AlexNet's last conv, SqueezeNet's last Fire module (``tests/test_explain.py`` pins each choice).

The gradient of the score with respect to that output is taken by adding a zero tensor to it inside
the same interceptor and differentiating with respect to the zero tensor. The score is the hotspot
log-odds, ``logit[1] - logit[0]`` for a two-class model (what the softmax probability is a monotone function
of), ``logsumexp`` over the positive and the other outputs for more classes. The map is
``relu(sum_c mean_hw(dscore/dA_c) * A_c)``, resized bilinearly to the network input and scaled to
[0, 1] per image (all zeros where nothing speaks for a hotspot). Test-time augmentation is not applied.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from hotspot_jax.errors import ConfigError


def _feature_map(out: Any) -> jax.Array | None:
    """A child's output as one (N, h, w, C) map: an array, or channel parts concatenated; None otherwise."""
    parts = out if isinstance(out, tuple) else (out,)
    if not parts or not all(hasattr(p, "shape") and len(p.shape) == 4 for p in parts):
        return None
    if any(p.shape[:3] != parts[0].shape[:3] for p in parts):
        return None
    return parts[0] if len(parts) == 1 else jnp.concatenate(parts, axis=-1)


def _child_name(context: Any) -> str | None:
    """The name of the module called when it is a direct child of the network, else None."""
    path = tuple(context.module.path)
    return path[0] if len(path) == 1 and context.method_name == "__call__" else None


def spatial_children(model: nn.Module, variables: dict[str, Any], input_shape: Sequence[int]) -> list[tuple[str, tuple[int, ...]]]:
    """``(name, (N, h, w, C))`` of every direct child returning a feature map, in call order (eval mode)."""
    calls: list[tuple[str, tuple[int, ...]]] = []

    def record(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        name = _child_name(context)
        fmap = None if name is None else _feature_map(out)
        if fmap is not None:
            calls.append((name, tuple(fmap.shape)))
        return out

    def run(variables, x):
        with nn.intercept_methods(record):
            return model.apply(variables, x, train=False)

    jax.eval_shape(run, variables, jax.ShapeDtypeStruct(tuple(input_shape), jnp.float32))
    return calls


def head_of(arch: str) -> tuple[str, ...]:
    """The head's child names of a registered architecture (``ArchSpec.classifier``); () for an unregistered one."""
    import architectures

    try:
        return tuple(architectures.get(arch).classifier)
    except ConfigError:
        return ()


def _holds_weights(variables: dict[str, Any], name: str) -> bool:
    return any(name in (variables.get(col) or {}) for col in ("params", "batch_stats"))


def gradcam_layer(model: nn.Module, variables: dict[str, Any], input_hw: Sequence[int],
                  head: Sequence[str] = ()) -> str:
    """The Grad-CAM target: the last weighted, non-head direct child that returns a feature map."""
    calls = spatial_children(model, variables, (1, *input_hw, 3))
    found = [name for name, _ in calls if name not in head and _holds_weights(variables, name)]
    if not found:
        raise ConfigError(f"{type(model).__name__} has no convolutional child module to compute Grad-CAM on")
    return found[-1]


def make_gradcam(model: nn.Module, variables: dict[str, Any], layer: str | None = None, *,
                 head: Sequence[str] = (), positive: Sequence[int] = (1,)) -> Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """A jitted ``f(x) -> (positive probabilities (N,), heat maps (N, H, W) in [0, 1])`` for preprocessed
    float32 ``x (N, H, W, 3)``; ``layer`` defaults to :func:`gradcam_layer`. One compilation per shape.

    The score explained is the log-odds of the ``positive`` outputs together (hotspot: output 1; a 12-class
    model: Hot-Spot and Hot-Spot-Multi), ``logsumexp(logits[positive]) - logsumexp(logits[rest])``."""
    pos = np.asarray(sorted(set(int(i) for i in positive)))

    def forward(delta, x, layer_name):
        seen: list[Any] = []

        def perturb(next_fun, args, kwargs, context):
            out = next_fun(*args, **kwargs)
            if _child_name(context) == layer_name:
                out = jax.tree.map(lambda o, d: o + d.astype(o.dtype), out, delta)
                seen.append(out)
            return out

        with nn.intercept_methods(perturb):
            logits = model.apply(variables, x, train=False).astype(jnp.float32)
        if len(seen) != 1:
            raise ConfigError(f"Grad-CAM layer {layer_name!r} was called {len(seen)} times, expected once")
        neg = np.setdiff1d(np.arange(logits.shape[-1]), pos)
        log_odds = jax.nn.logsumexp(logits[:, pos], axis=-1) - jax.nn.logsumexp(logits[:, neg], axis=-1)
        return jnp.sum(log_odds), (logits, seen[0])

    @jax.jit
    def explain(x):
        target = layer or gradcam_layer(model, variables, x.shape[1:3], head)
        shapes = _output_shapes(model, variables, x.shape, target)
        zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, jnp.float32), shapes)
        grads, (logits, acts) = jax.grad(forward, has_aux=True)(zeros, x, target)
        a = _feature_map(acts).astype(jnp.float32)
        g = _feature_map(grads).astype(jnp.float32)
        weights = jnp.mean(g, axis=(1, 2))  # (N, C): each channel's importance
        cam = jax.nn.relu(jnp.einsum("nhwc,nc->nhw", a, weights))
        cam = jax.image.resize(cam, (x.shape[0], *x.shape[1:3]), "bilinear")
        peak = jnp.max(cam, axis=(1, 2), keepdims=True)
        cam = jnp.where(peak > 0, cam / jnp.where(peak > 0, peak, 1.0), 0.0)
        return jax.nn.softmax(logits, axis=-1)[:, pos].sum(-1), cam

    return lambda x: tuple(np.asarray(a) for a in explain(jnp.asarray(x, jnp.float32)))


def _output_shapes(model: nn.Module, variables: dict[str, Any], input_shape: Sequence[int], layer: str) -> Any:
    """The abstract output (a pytree of ShapeDtypeStruct) of child ``layer`` for an input of ``input_shape``."""
    found: list[Any] = []

    def record(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        if _child_name(context) == layer:
            found.append(out)
        return out

    def run(variables, x):
        with nn.intercept_methods(record):
            model.apply(variables, x, train=False)
        return found[0]

    if not any(name == layer for name, _ in spatial_children(model, variables, input_shape)):
        raise ConfigError(f"{type(model).__name__} has no child {layer!r} returning a feature map")
    return jax.eval_shape(run, variables, jax.ShapeDtypeStruct(tuple(input_shape), jnp.float32))


@dataclasses.dataclass
class GradCamResult:
    """Hotspot probabilities ``(N,)`` and heat maps ``(N, H, W)`` in [0, 1] at the network input size."""

    probs: np.ndarray
    maps: np.ndarray
    layer: str


def explain_images(tm: Any, x: np.ndarray, batch_size: int = 64, positive: Sequence[int] = (1,)) -> GradCamResult:
    """Grad-CAM of a trained model (``train.restore.TrainedModel``) on preprocessed ``x (N, H, W, 3)``, in
    fixed-size batches (the last one padded) so the model compiles once."""
    layer = gradcam_layer(tm.model, tm.variables, x.shape[1:3], head_of(tm.arch))
    fn = make_gradcam(tm.model, tm.variables, layer, positive=positive)
    n = x.shape[0]
    batch = max(1, min(batch_size, n))
    probs = np.empty((n,), np.float32)
    maps = np.empty((n, *x.shape[1:3]), np.float32)
    for start in range(0, n, batch):
        chunk = x[start:start + batch]
        valid = chunk.shape[0]
        if valid < batch:
            chunk = np.concatenate([chunk, np.repeat(chunk[:1], batch - valid, axis=0)])
        p, m = fn(chunk)
        probs[start:start + valid], maps[start:start + valid] = p[:valid], m[:valid]
    return GradCamResult(probs, maps, layer)
