"""PNG data URIs for the report: nearest-neighbour thumbnails, Grad-CAM overlays and matplotlib figures.

Everything is inlined (``data:image/png;base64,...``) so the page is one file that opens from file://.
"""

from __future__ import annotations

import base64
import io
import math

import numpy as np
from PIL import Image

THUMB_HEIGHT = 80  # a module crop (40 px high) is shown 2x, each pixel a visible block
THUMB_MAX = 160  # larger crops are shrunk to fit this box
OVERLAY_ALPHA = 0.45  # weight of the heat map over the image


def png_data_uri(image: Image.Image) -> str:
    """``image`` as a base64 PNG data URI."""
    buf = io.BytesIO()
    image.save(buf, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def thumbnail_size(height: int, width: int) -> tuple[int, int]:
    """(width, height) of the thumbnail: an integer upscale to about THUMB_HEIGHT, or a shrink into THUMB_MAX."""
    if max(height, width) > THUMB_MAX:
        scale = THUMB_MAX / max(height, width)
    else:
        scale = max(1, math.ceil(THUMB_HEIGHT / height))
        scale = min(scale, max(1, THUMB_MAX // max(height, width)))
    return max(1, round(width * scale)), max(1, round(height * scale))


def grey_thumbnail(image: np.ndarray) -> Image.Image:
    """A uint8 ``(H, W[, 1])`` grayscale image scaled with nearest-neighbour, so pixels stay visible."""
    grey = np.asarray(image, np.uint8).reshape(image.shape[0], image.shape[1])
    return Image.fromarray(grey, "L").resize(thumbnail_size(*grey.shape), Image.NEAREST)


def heat_overlay(image: np.ndarray, heat: np.ndarray) -> Image.Image:
    """The thumbnail with a heat map (values in [0, 1], any size, resized bilinearly) blended over it (jet)."""
    from matplotlib import colormaps

    base = grey_thumbnail(image).convert("RGB")
    heat = np.clip(np.nan_to_num(np.asarray(heat, np.float32)), 0.0, 1.0)
    resized = Image.fromarray(heat, "F").resize(base.size, Image.BILINEAR)
    colours = colormaps["jet"](np.clip(np.asarray(resized), 0.0, 1.0))[..., :3]
    out = (1 - OVERLAY_ALPHA) * np.asarray(base, np.float32) / 255.0 + OVERLAY_ALPHA * colours
    return Image.fromarray(np.round(np.clip(out, 0, 1) * 255).astype(np.uint8), "RGB")


def figure_data_uri(fig) -> str:
    """A matplotlib Figure as a PNG data URI."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
