"""Gathers what the report shows while ``predict`` scores: each image and its Grad-CAM heat map."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

BINARY_TASKS = (None, "hotspot")  # tasks whose 2-class head means No-Anomaly vs Hotspot


def check_task(tm: Any) -> str:
    """The run's task name; ConfigError (one line) for a checkpoint that does not tell hotspots apart."""
    from hotspot_jax.errors import ConfigError

    task = (tm.config.get("run") or {}).get("task")
    if task not in BINARY_TASKS:
        raise ConfigError(f"{tm.checkpoint} was trained for the {task!r} task; the report explains hotspot "
                          "models (No-Anomaly vs Hotspot) only")
    return task or "hotspot"


class ReportCollector:
    """Called by ``predict`` with each batch of loaded images and their model input; keeps the images and
    Grad-CAM maps (uint8, at the network input size) in input order."""

    def __init__(self, tm: Any, batch_size: int):
        from hotspot_jax.explain import gradcam_layer, head_of, make_gradcam

        self.layer = gradcam_layer(tm.model, tm.variables, tm.input_hw, head_of(tm.arch))
        self._explain = make_gradcam(tm.model, tm.variables, self.layer)
        self._batch = max(1, batch_size)
        self.images: list[np.ndarray] = []
        self.maps: list[np.ndarray] = []

    @property
    def method(self) -> str:
        return (f"Grad-CAM on {self.layer} (the last convolutional stage) for the hotspot log-odds, scaled to "
                "[0, 1] per image; computed without test-time augmentation")

    def __call__(self, images: Sequence[np.ndarray], x: np.ndarray) -> None:
        for start in range(0, len(images), self._batch):
            chunk = x[start:start + self._batch]
            n = chunk.shape[0]
            if n < self._batch:
                chunk = np.concatenate([chunk, np.repeat(chunk[:1], self._batch - n, axis=0)])
            _, maps = self._explain(chunk)
            self.maps.extend(np.round(maps[:n] * 255).astype(np.uint8))
        self.images.extend(images)

    def heat_maps(self) -> list[np.ndarray]:
        """The maps as float32 in [0, 1]."""
        return [m.astype(np.float32) / 255.0 for m in self.maps]
