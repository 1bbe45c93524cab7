"""A tiny convolutional stand-in for a trained model, for the report tests: ``predict.py --report`` runs
Grad-CAM on it as on a registered architecture (its last convolutional child is ``features``)."""

from __future__ import annotations

import io
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from hotspot_jax.train.restore import TrainedModel


class SpotNet(nn.Module):
    """conv -> relu (child ``features``) -> global max -> dense ``fc``: bright pixels raise the hotspot logit."""

    @nn.compact
    def __call__(self, x, *, train: bool):
        a = nn.relu(nn.Conv(2, (3, 3), padding="SAME", name="features")(x))
        return nn.Dense(2, name="fc")(jnp.max(a, axis=(1, 2)))


def fake_conv_trained(workdir: Path, image_size: int = 16, task: str | None = None,
                      classes: list[str] | None = None) -> TrainedModel:
    """A TrainedModel of SpotNet with fixed weights, as if loaded from ``<workdir>/best/7``."""
    model = SpotNet()
    variables = model.init(jax.random.PRNGKey(0), jnp.zeros((1, image_size, image_size, 3)), train=False)
    variables["params"]["features"]["kernel"] = jnp.full((3, 3, 3, 2), 0.2)
    variables["params"]["features"]["bias"] = jnp.asarray([-0.5, -0.5])
    variables["params"]["fc"]["kernel"] = jnp.asarray([[-1.0, 2.0], [-1.0, 2.0]])
    variables["params"]["fc"]["bias"] = jnp.asarray([0.0, -1.5])
    run = {"arch": "spotnet", "image_size": image_size, "seed": 0, "data": None}
    if task is not None:
        run["task"] = task
    config = {"run": run, "initialisation": "scratch", **({"classes": classes} if classes else {})}
    return TrainedModel(arch="spotnet", image_size=image_size, config=config,
                        manifest=None, model=model, variables=variables, checkpoint=Path(workdir) / "best" / "7",
                        epoch=3)


def png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def crops_folder(folder: Path, n: int = 9, seed: int = 0) -> list[Path]:
    """``n`` 40x24 grey crops, some with a bright spot, plus one file that is not an image; returns the good ones."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k in range(n):
        arr = rng.integers(20, 90, (40, 24), dtype=np.uint8)
        if k % 3 == 0:
            r, c = rng.integers(4, 36), rng.integers(4, 20)
            arr[r - 3:r + 3, c - 3:c + 3] = 250 - 10 * k
        path = folder / f"module_{k:02d}.png"
        path.write_bytes(png(arr))
        paths.append(path)
    (folder / "zz_broken.jpg").write_bytes(b"not a jpeg")
    return paths
