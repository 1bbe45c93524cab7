"""The study's offline augmentation of training hotspot images: 180° rotation, Gaussian blur, sharpening.

Defaults follow the MATLAB functions the study most likely used (it names the operations, not all
parameters):

* ``imgaussfilt(I)``: sigma 0.5, filter size ``2*ceil(2*sigma)+1`` (3x3), replicate padding.
* ``imsharpen(I)`` (unsharp masking ``I + Amount*(I - G*I)``): Radius is the Gaussian's sigma; the
  study states sigma 1.5 (MATLAB's default Radius is 1), Amount 0.8 and Threshold 0 are MATLAB's
  defaults, size ``2*ceil(2*sigma)+1`` (7x7), replicate padding.
* ``imrotate(I, 180)``: an exact flip of both axes (no interpolation).

All arithmetic is float64; results are rounded half up (MATLAB's uint8 conversion for non-negative
values) and clipped to [0, 255]. Each op takes one image (H, W, C) or a batch (N, H, W, C).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import numpy as np

from hotspot_jax.errors import ConfigError

#: Augmentation op names, in the order their copies are produced; ids get the suffix ``@<name>``.
AUGMENT_OPS: tuple[str, ...] = ("rot180", "gauss", "sharpen")
_PAD_MODES = {"replicate": "edge", "symmetric": "symmetric", "circular": "wrap", "zero": "constant"}


@dataclass(frozen=True)
class AugmentConfig:
    """Which offline augmentations to apply and their parameters (see the module docstring for defaults).

    ``gaussian_size``/``sharpen_size`` None mean ``2*ceil(2*sigma)+1`` like MATLAB; ``padding`` is
    MATLAB's boundary option (``replicate``, ``symmetric``, ``circular`` or ``zero``);
    ``sharpen_threshold`` is imsharpen's Threshold, a fraction of the 0..255 range below which
    high-pass values are left unsharpened.
    """

    rotate180: bool = True
    gaussian: bool = True
    gaussian_sigma: float = 0.5
    gaussian_size: int | None = None
    sharpen: bool = True
    sharpen_sigma: float = 1.5
    sharpen_amount: float = 0.8
    sharpen_threshold: float = 0.0
    sharpen_size: int | None = None
    padding: str = "replicate"

    def __post_init__(self) -> None:
        for name in ("gaussian_sigma", "sharpen_sigma"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"augment.{name} must be > 0, got {getattr(self, name)!r}")
        for name in ("gaussian_size", "sharpen_size"):
            size = getattr(self, name)
            if size is not None and (int(size) != size or size < 1 or size % 2 == 0):
                raise ConfigError(f"augment.{name} must be a positive odd integer or null, got {size!r}")
        if self.sharpen_amount < 0:
            raise ConfigError(f"augment.sharpen_amount must be >= 0, got {self.sharpen_amount!r}")
        if not 0 <= self.sharpen_threshold <= 1:
            raise ConfigError(f"augment.sharpen_threshold must be in [0, 1], got {self.sharpen_threshold!r}")
        if self.padding not in _PAD_MODES:
            raise ConfigError(f"augment.padding must be one of {', '.join(_PAD_MODES)}, got {self.padding!r}")

    @property
    def ops(self) -> tuple[str, ...]:
        """The enabled op names, in :data:`AUGMENT_OPS` order."""
        enabled = {"rot180": self.rotate180, "gauss": self.gaussian, "sharpen": self.sharpen}
        return tuple(op for op in AUGMENT_OPS if enabled[op])

    @property
    def copies_per_image(self) -> int:
        """Images per original after augmentation: the original plus one per enabled op (4 by default)."""
        return 1 + len(self.ops)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "AugmentConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ConfigError(f"unknown augmentation option(s): {', '.join(sorted(unknown))}")
        return cls(**d)


def default_size(sigma: float) -> int:
    """MATLAB's default Gaussian filter size for ``sigma``: ``2*ceil(2*sigma)+1``."""
    return 2 * math.ceil(2 * sigma) + 1


def gaussian_kernel_1d(sigma: float, size: int | None = None) -> np.ndarray:
    """Normalised 1-D Gaussian of ``size`` taps (the 2-D kernel is its outer product, as fspecial's)."""
    size = default_size(sigma) if size is None else int(size)
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2
    k = np.exp(-(x ** 2) / (2.0 * sigma ** 2))
    return k / k.sum()


def _to_uint8(x: np.ndarray) -> np.ndarray:
    """Round half up and clip to [0, 255] (MATLAB's conversion of non-negative doubles to uint8)."""
    return np.clip(np.floor(x + 0.5), 0, 255).astype(np.uint8)


def _blur(images: np.ndarray, sigma: float, size: int | None, padding: str) -> np.ndarray:
    """Separable Gaussian blur in float64 over the (H, W) axes of (..., H, W, C) with MATLAB padding."""
    k = gaussian_kernel_1d(sigma, size)
    r = (len(k) - 1) // 2
    x = images.astype(np.float64)
    lead = [(0, 0)] * (x.ndim - 3)
    x = np.pad(x, lead + [(r, r), (r, r), (0, 0)], mode=_PAD_MODES[padding])
    h, w = images.shape[-3], images.shape[-2]
    rows = sum(k[i] * x[..., i:i + h, :, :] for i in range(len(k)))
    return sum(k[j] * rows[..., :, j:j + w, :] for j in range(len(k)))


def _check(images: np.ndarray) -> np.ndarray:
    images = np.asarray(images)
    if images.ndim not in (3, 4):
        raise ValueError(f"expected an image (H, W, C) or a batch (N, H, W, C), got shape {images.shape}")
    return images


def rotate180(images: np.ndarray) -> np.ndarray:
    """Rotate by 180° (flip rows and columns): exact, same dtype and shape."""
    images = _check(images)
    return images[..., ::-1, ::-1, :].copy()


def gaussian_filter(images: np.ndarray, sigma: float = 0.5, size: int | None = None,
                    padding: str = "replicate") -> np.ndarray:
    """2-D Gaussian filtering as MATLAB ``imgaussfilt(I, sigma)``; uint8 in, uint8 out."""
    images = _check(images)
    return _to_uint8(_blur(images, sigma, size, padding))


def unsharp_mask(images: np.ndarray, sigma: float = 1.5, amount: float = 0.8, threshold: float = 0.0,
                 size: int | None = None, padding: str = "replicate") -> np.ndarray:
    """Sharpening by unsharp masking as MATLAB ``imsharpen``: ``I + amount * (I - gauss(I, sigma))``.

    With ``threshold`` > 0, pixels whose high-pass magnitude is at most ``threshold * 255`` are kept.
    """
    images = _check(images)
    x = images.astype(np.float64)
    high = x - _blur(images, sigma, size, padding)
    if threshold > 0:
        high = np.where(np.abs(high) > threshold * 255.0, high, 0.0)
    return _to_uint8(x + amount * high)


def augment_image(images: np.ndarray, op: str, config: AugmentConfig = AugmentConfig()) -> np.ndarray:
    """Apply the augmentation ``op`` (one of :data:`AUGMENT_OPS`) with ``config``'s parameters."""
    if op == "rot180":
        return rotate180(images)
    if op == "gauss":
        return gaussian_filter(images, config.gaussian_sigma, config.gaussian_size, config.padding)
    if op == "sharpen":
        return unsharp_mask(images, config.sharpen_sigma, config.sharpen_amount, config.sharpen_threshold,
                            config.sharpen_size, config.padding)
    raise ConfigError(f"unknown augmentation {op!r}; known: {', '.join(AUGMENT_OPS)}")


def augment_batch(images: np.ndarray, ids: np.ndarray, config: AugmentConfig = AugmentConfig()
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Originals followed by one block per enabled op; ids of copies are ``"<id>@<op>"``."""
    out_images = [images] + [augment_image(images, op, config) for op in config.ops]
    out_ids = [np.asarray(ids, dtype=str)] + [np.char.add(np.asarray(ids, dtype=str), f"@{op}") for op in config.ops]
    return np.concatenate(out_images), np.concatenate(out_ids)
