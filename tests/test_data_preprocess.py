"""Model input preprocessing (against a numpy bilinear resize written out) and image-file loading."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from hotspot_jax.data import IMAGENET_MEAN, IMAGENET_STD, load_image_file, preprocess
from hotspot_jax.errors import DataError


def _bilinear_reference(img: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """Half-pixel-centre bilinear upsampling with clamped borders (torch align_corners=False), per pixel."""
    h, w = img.shape
    out = np.zeros((out_h, out_w))
    for oy in range(out_h):
        sy = min(max((oy + 0.5) * h / out_h - 0.5, 0.0), h - 1)
        y0 = int(np.floor(sy)); y1 = min(y0 + 1, h - 1); fy = sy - y0
        for ox in range(out_w):
            sx = min(max((ox + 0.5) * w / out_w - 0.5, 0.0), w - 1)
            x0 = int(np.floor(sx)); x1 = min(x0 + 1, w - 1); fx = sx - x0
            top = img[y0, x0] * (1 - fx) + img[y0, x1] * fx
            bot = img[y1, x0] * (1 - fx) + img[y1, x1] * fx
            out[oy, ox] = top * (1 - fy) + bot * fy
    return out


def _images(n=2):
    return np.random.default_rng(0).integers(0, 256, size=(n, 40, 24, 1), dtype=np.uint8)


@pytest.mark.parametrize("size", [64, (56, 48)])
def test_preprocess_matches_reference(size):
    imgs = _images()
    out = np.asarray(preprocess(imgs, size))
    h, w = (size, size) if isinstance(size, int) else size
    assert out.shape == (2, h, w, 3) and out.dtype == np.float32
    for n in range(2):
        ref = _bilinear_reference(imgs[n, :, :, 0].astype(np.float64) / 255.0, h, w)
        for c in range(3):
            np.testing.assert_allclose(out[n, :, :, c], (ref - IMAGENET_MEAN[c]) / IMAGENET_STD[c], atol=1e-5)


def test_preprocess_is_jittable_on_uint8_device_arrays():
    imgs = _images(3)
    step = jax.jit(lambda x: preprocess(x, 96).mean(axis=(1, 2)))
    got = step(jnp.asarray(imgs))
    want = np.asarray(preprocess(imgs, 96)).mean(axis=(1, 2))
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-5)
    for size in (224, 227):  # the study's sizes, shape-checked without computing
        out = jax.eval_shape(lambda x: preprocess(x, size), jax.ShapeDtypeStruct(imgs.shape, jnp.uint8))
        assert out.shape == (3, size, size, 3) and out.dtype == jnp.float32


def test_preprocess_same_size_and_constant_image():
    imgs = np.full((1, 40, 24, 1), 255, np.uint8)
    out = np.asarray(preprocess(imgs, (40, 24)))
    np.testing.assert_allclose(out[0, 0, 0], [(1 - m) / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD)], rtol=1e-6)
    out2 = np.asarray(preprocess(imgs[..., 0], 16))  # (N, H, W) also accepted; downsampling works
    assert out2.shape == (1, 16, 16, 3)
    np.testing.assert_allclose(out2, np.broadcast_to(out[0, 0, 0], out2.shape), rtol=1e-5)
    with pytest.raises(ValueError, match="grayscale"):
        preprocess(np.zeros((1, 40, 24, 3), np.uint8), 32)


@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA", "P", "LA"])
def test_load_image_file_modes(tmp_path, mode):
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, size=(33, 57, 3), dtype=np.uint8)
    im = Image.fromarray(rgb).convert(mode)
    path = tmp_path / f"x_{mode}.png"
    im.save(path)
    got = load_image_file(path)
    assert got.shape == (33, 57, 1) and got.dtype == np.uint8
    if mode in ("RGB", "RGBA"):  # ITU-R 601 luma, computed independently
        rgb = rgb.astype(np.int64)
        luma = (rgb[..., 0] * 299 + rgb[..., 1] * 587 + rgb[..., 2] * 114) / 1000
        assert np.abs(got[..., 0].astype(float) - luma).max() <= 1.0


def test_load_image_file_16bit_and_errors(tmp_path):
    arr = np.array([[0, 257 * 100, 65535]], dtype=np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(arr).save(path)
    np.testing.assert_array_equal(load_image_file(path)[..., 0], [[0, 100, 255]])
    with pytest.raises(DataError, match=r"missing\.png: no such image file"):
        load_image_file(tmp_path / "missing.png")
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 not really")
    with pytest.raises(DataError, match=r"broken\.jpg: cannot read the image"):
        load_image_file(tmp_path / "broken.jpg")
