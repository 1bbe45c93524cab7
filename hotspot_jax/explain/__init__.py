"""Where the network looked: Grad-CAM heat maps for any registered architecture.

>>> from hotspot_jax.explain import gradcam_layer, make_gradcam
>>> explain = make_gradcam(model, variables)          # jitted, batched
>>> probs, maps = explain(x)                           # x: preprocessed (N, H, W, 3) float32
"""

from hotspot_jax.explain.gradcam import (
    GradCamResult,
    explain_images,
    gradcam_layer,
    head_of,
    make_gradcam,
    spatial_children,
)

__all__ = ["GradCamResult", "explain_images", "gradcam_layer", "head_of", "make_gradcam", "spatial_children"]
