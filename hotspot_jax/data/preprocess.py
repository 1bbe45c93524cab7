"""Model input: 40x24 grayscale uint8 -> resized, 3-channel, ImageNet-normalised NHWC float32 (jax.numpy,
usable inside a jitted step), and a host-side loader for arbitrary image files.

Resizing uses ``jax.image.resize`` (half-pixel centres, like torch ``interpolate(align_corners=False)``
and MATLAB ``imresize``); bilinear by default. ``antialias`` defaults to False, as torch's bilinear
``interpolate``: it changes nothing when upsampling (24x40 -> 224 or 227, jax only antialiases when
downscaling) and keeps downscaled experiments comparable with torch.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image, UnidentifiedImageError

from hotspot_jax.errors import DataError

#: torchvision's ImageNet statistics (RGB), for inputs scaled to [0, 1].
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


SOURCE_HW = (40, 24)  # InfraredSolarModules images: 40 high, 24 wide
ASPECTS = ("square", "source")


def input_hw(image_size: int, aspect: str = "square") -> tuple[int, int]:
    """The network input (height, width) for a run's ``image_size`` and ``aspect``: ``square`` is
    ``image_size`` x ``image_size`` (the study's); ``source`` keeps the images' 5:3 shape with ``image_size``
    as the width (48 -> 80 x 48), so no axis is stretched more than the other."""
    if aspect == "square":
        return int(image_size), int(image_size)
    if aspect == "source":
        return int(round(image_size * SOURCE_HW[0] / SOURCE_HW[1])), int(image_size)
    raise ValueError(f"unknown aspect {aspect!r}; use one of {', '.join(ASPECTS)}")


def size_hw(size: int | Sequence[int]) -> tuple[int, int]:
    """``(size, size)`` for an int, else the ``(height, width)`` pair as ints."""
    if isinstance(size, (int, np.integer)):
        return int(size), int(size)
    h, w = (int(s) for s in size)
    return h, w


def preprocess(images, size: int | Sequence[int], *, method: str = "bilinear", antialias: bool = False,
               mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> jax.Array:
    """Grayscale uint8 images (N, H, W, 1) or (N, H, W) -> float32 (N, size_h, size_w, 3) network input.

    Scales to [0, 1], resizes with ``jax.image.resize(method)`` (``size`` an int for square or
    (height, width)), repeats the channel to RGB and normalises with ImageNet mean/std. Accepts numpy
    or jax arrays; jit-able with ``size``/``method`` static (they are Python values).
    """
    x = jnp.asarray(images)
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4 or x.shape[-1] != 1:
        raise ValueError(f"preprocess expects grayscale images (N, H, W, 1) or (N, H, W), got shape {x.shape}")
    h, w = size_hw(size)
    if h < 1 or w < 1:
        raise ValueError(f"preprocess size must be positive, got {size!r}")
    x = x.astype(jnp.float32) / 255.0
    if (h, w) != tuple(x.shape[1:3]):
        x = jax.image.resize(x, (x.shape[0], h, w, 1), method=method, antialias=antialias)
    mean_a = jnp.asarray(mean, dtype=jnp.float32)
    std_a = jnp.asarray(std, dtype=jnp.float32)
    return (jnp.broadcast_to(x, x.shape[:3] + (3,)) - mean_a) / std_a


def load_image_file(path: str | os.PathLike) -> np.ndarray:
    """Any image file Pillow reads (any size; L, LA, P, RGB, RGBA, CMYK, 1, 16-bit) -> uint8 (H, W, 1).

    Colour is converted to luma (ITU-R 601, Pillow's ``convert("L")``); alpha is dropped; 16-bit
    images are scaled by 1/257 to 0..255. DataError naming the file if it is missing or unreadable.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such image file")
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in ("I;16", "I;16B", "I;16L", "I;16N"):
                arr = np.asarray(im).astype(np.float64) / 257.0
                return np.clip(np.floor(arr + 0.5), 0, 255).astype(np.uint8)[..., None]
            if im.mode in ("I", "F"):
                raise DataError(f"{path}: {im.mode} images (32-bit) are not supported; save it as 8- or "
                                f"16-bit grayscale or RGB")
            gray = im.convert("L") if im.mode != "L" else im
            return np.asarray(gray, dtype=np.uint8)[..., None].copy()
    except DataError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise DataError(f"{path}: cannot read the image ({err})") from None
