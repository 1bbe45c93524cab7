"""Gathers what the report shows while ``predict`` scores: each image and its Grad-CAM heat map."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

def check_task(tm: Any) -> tuple[str, str]:
    """(negative, positive) class names the report flags by: a two-class task's own, Rest/Hotspot for classes12
    (hotspot vs rest); ConfigError (one line) for a many-class task of one's own data, which has no positive class."""
    from hotspot_jax.errors import ConfigError

    task = tm.task
    if task.binary:
        return task.class_names[1 - task.positive], task.class_names[task.positive]
    if task.name == "classes12":
        return "Rest", "Hotspot"
    raise ConfigError(f"{tm.checkpoint} was trained for the {task.name!r} task with {task.num_classes} classes and "
                      "no positive class; the report flags the positive class of a two-class task or hotspots")


def positive_indices(task: Any) -> tuple[int, ...]:
    """The output indices whose probabilities add up to the flagged score (``tasks.positive_scores``)."""
    if task.binary:
        return (task.positive,)
    from hotspot_jax.data.classes import CLASS_NAMES, HOTSPOT_CLASSES

    return tuple(CLASS_NAMES.index(c) for c in HOTSPOT_CLASSES)


def report_labels(task: Any, labels: np.ndarray) -> np.ndarray:
    """A split's labels as 1 for the flagged (positive) class, 0 for the rest."""
    return np.isin(np.asarray(labels), positive_indices(task)).astype(np.int64)


class ReportCollector:
    """Called by ``predict`` with each batch of loaded images and their model input; keeps the images and
    Grad-CAM maps (uint8, at the network input size) in input order."""

    def __init__(self, tm: Any, batch_size: int):
        from hotspot_jax.explain import gradcam_layer, head_of, make_gradcam

        self.layer = gradcam_layer(tm.model, tm.variables, tm.input_hw, head_of(tm.arch))
        self._explain = make_gradcam(tm.model, tm.variables, self.layer, positive=positive_indices(tm.task))
        self._batch = max(1, batch_size)
        self.images: list[np.ndarray] = []
        self.maps: list[np.ndarray] = []

    @property
    def method(self) -> str:
        return (f"Grad-CAM on {self.layer} (the last convolutional stage) for the flagged class's log-odds, scaled to "
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
