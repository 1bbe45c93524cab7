"""Offline augmentation: exact rotation, Gaussian filter and unsharp masking against reference
computations written out independently (explicit 2-D kernels, per-pixel loops)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from hotspot_jax.data import AugmentConfig, augment_batch, augment_image, gaussian_filter, rotate180, unsharp_mask
from hotspot_jax.errors import ConfigError


def _images(n=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(n, 40, 24, 1), dtype=np.uint8)


def _reference_filter(img2d: np.ndarray, kernel2d: np.ndarray) -> np.ndarray:
    """Per-pixel correlation with replicate (clamped-index) borders, float64, no numpy padding helpers."""
    h, w = img2d.shape
    r = kernel2d.shape[0] // 2
    out = np.zeros((h, w))
    for y in range(h):
        for x in range(w):
            acc = 0.0
            for dy in range(-r, r + 1):
                for dx in range(-r, r + 1):
                    yy = min(max(y + dy, 0), h - 1)
                    xx = min(max(x + dx, 0), w - 1)
                    acc += kernel2d[dy + r, dx + r] * float(img2d[yy, xx])
            out[y, x] = acc
    return out


def _fspecial_gaussian(size: int, sigma: float) -> np.ndarray:
    """MATLAB fspecial('gaussian', size, sigma) written out: exp(-(x^2+y^2)/(2 sigma^2)), sum 1."""
    r = (size - 1) / 2
    k = np.array([[math.exp(-((x - r) ** 2 + (y - r) ** 2) / (2 * sigma * sigma)) for x in range(size)]
                  for y in range(size)])
    return k / k.sum()


def _round_uint8(x: np.ndarray) -> np.ndarray:
    return np.array([[min(255, max(0, math.floor(v + 0.5))) for v in row] for row in x], dtype=np.uint8)


def test_rotate180_is_exact_and_involutive():
    imgs = _images()
    rot = rotate180(imgs)
    assert rot.dtype == np.uint8 and rot.shape == imgs.shape
    for n in range(len(imgs)):
        for y in range(40):
            for x in range(24):
                assert rot[n, y, x, 0] == imgs[n, 39 - y, 23 - x, 0]
    np.testing.assert_array_equal(rotate180(rot), imgs)
    np.testing.assert_array_equal(rotate180(imgs[0]), rot[0])  # single image (H, W, C)


def test_gaussian_filter_matches_explicit_convolution():
    imgs = _images(2, seed=1)
    out = gaussian_filter(imgs, sigma=0.5)  # MATLAB default size 2*ceil(2*0.5)+1 = 3
    assert out.dtype == np.uint8 and out.shape == imgs.shape
    k = _fspecial_gaussian(3, 0.5)
    for n in range(2):
        ref = _round_uint8(_reference_filter(imgs[n, :, :, 0], k))
        np.testing.assert_array_equal(out[n, :, :, 0], ref)
    # the kernel written out: centre weight of the 3x3 sigma 0.5 Gaussian
    e = math.exp(-2.0)  # exp(-1/(2*0.25))
    assert k[1, 1] == pytest.approx(1 / (1 + 4 * e + 4 * e * e))


def test_gaussian_filter_other_sigma_and_size():
    img = _images(1, seed=2)[0]
    out = gaussian_filter(img, sigma=1.2, size=5)
    ref = _round_uint8(_reference_filter(img[:, :, 0], _fspecial_gaussian(5, 1.2)))
    np.testing.assert_array_equal(out[:, :, 0], ref)


def test_unsharp_mask_matches_direct_formula():
    imgs = _images(2, seed=3)
    out = unsharp_mask(imgs, sigma=1.5, amount=0.8)  # 7x7 kernel
    assert out.dtype == np.uint8 and out.shape == imgs.shape
    g = _fspecial_gaussian(7, 1.5)
    for n in range(2):
        x = imgs[n, :, :, 0].astype(np.float64)
        ref = _round_uint8(x + 0.8 * (x - _reference_filter(imgs[n, :, :, 0], g)))
        np.testing.assert_array_equal(out[n, :, :, 0], ref)


def test_unsharp_mask_threshold_keeps_small_differences():
    img = np.full((40, 24, 1), 100, np.uint8)
    img[10:12, 10:12] = 103  # tiny bump: |high-pass| < 0.05*255
    img[30, 5] = 200         # big spike
    out = unsharp_mask(img, threshold=0.05)
    np.testing.assert_array_equal(out[10:12, 10:12], img[10:12, 10:12])
    assert out[30, 5, 0] > 200
    flat = np.full((40, 24, 1), 77, np.uint8)
    np.testing.assert_array_equal(unsharp_mask(flat), flat)  # a constant image is unchanged


def test_augmentation_keeps_dtype_shape_range_and_clips():
    imgs = np.zeros((2, 40, 24, 1), np.uint8)
    imgs[:, 20, 12] = 255
    for op in ("rot180", "gauss", "sharpen"):
        out = augment_image(imgs, op)
        assert out.dtype == np.uint8 and out.shape == imgs.shape
        assert out.min() >= 0 and out.max() <= 255
    sharp = unsharp_mask(imgs)
    assert sharp[0, 20, 12, 0] == 255 and sharp[0, 20, 13, 0] == 0  # clipped both ways


def test_augment_batch_ids_and_order():
    imgs = _images(2)
    out, ids = augment_batch(imgs, np.array(["7", "9"]))
    assert list(ids) == ["7", "9", "7@rot180", "9@rot180", "7@gauss", "9@gauss", "7@sharpen", "9@sharpen"]
    np.testing.assert_array_equal(out[:2], imgs)
    np.testing.assert_array_equal(out[2:4], rotate180(imgs))
    cfg = AugmentConfig(gaussian=False)
    assert cfg.ops == ("rot180", "sharpen") and cfg.copies_per_image == 3
    assert len(augment_batch(imgs, np.array(["7", "9"]), cfg)[0]) == 6


def test_augment_config_validation_and_roundtrip():
    cfg = AugmentConfig(gaussian_sigma=0.7, sharpen_amount=1.2)
    assert AugmentConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError, match="gaussian_sigma"):
        AugmentConfig(gaussian_sigma=0)
    with pytest.raises(ConfigError, match="odd"):
        AugmentConfig(sharpen_size=4)
    with pytest.raises(ConfigError, match="padding"):
        AugmentConfig(padding="mirror")
    with pytest.raises(ConfigError, match="unknown augmentation option"):
        AugmentConfig.from_dict({"sigma": 1})
    with pytest.raises(ConfigError, match="unknown augmentation"):
        augment_image(_images(1), "flip")
