"""A tiny stand-in for a trained model, for the evaluate/predict tests: a real ``TrainedModel`` whose
network scores an image by its mean brightness, so probabilities vary and can be recomputed by hand."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from hotspot_jax.train.restore import TrainedModel


class BrightnessNet(nn.Module):
    """logits ``[0, w * (mean(x) - b)]``: hotspot probability = sigmoid(w * (mean(x) - b))."""

    num_classes: int = 2

    @nn.compact
    def __call__(self, x, *, train: bool):
        w = self.param("w", lambda key: jnp.asarray(1.0, jnp.float32))
        b = self.param("b", lambda key: jnp.asarray(0.0, jnp.float32))
        m = jnp.mean(x.astype(jnp.float32), axis=(1, 2, 3))
        return jnp.stack([jnp.zeros_like(m), w * (m - b)], axis=-1)


def brightness_probability(x: np.ndarray, w: float, b: float) -> np.ndarray:
    """The probability BrightnessNet gives to preprocessed input ``x`` (N, S, S, 3), in float64 numpy."""
    m = np.asarray(x, dtype=np.float64).mean(axis=(1, 2, 3))
    return 1.0 / (1.0 + np.exp(-w * (m - b)))


def fake_trained(workdir: Path, *, image_size: int = 12, w: float = 3.0, b: float = -0.6,
                 manifest: Any = None, seed: int = 0, data: str | None = None) -> TrainedModel:
    """A TrainedModel with BrightnessNet, as if loaded from ``<workdir>/best/7``."""
    variables = {"params": {"w": jnp.asarray(w, jnp.float32), "b": jnp.asarray(b, jnp.float32)}}
    return TrainedModel(
        arch="brightnessnet",
        image_size=image_size,
        config={"run": {"arch": "brightnessnet", "image_size": image_size, "seed": seed, "data": data},
                "initialisation": "scratch"},
        manifest=manifest,
        model=BrightnessNet(),
        variables=variables,
        checkpoint=Path(workdir) / "best" / "7",
        epoch=3,
    )
