"""The benchmark's input: one fixed synthetic batch of 40x24 uint8 grayscale images and binary labels."""

from __future__ import annotations

import dataclasses

import numpy as np

IMAGE_HW = (40, 24)  # InfraredSolarModules images: 40 high, 24 wide


@dataclasses.dataclass(frozen=True)
class SyntheticBatch:
    """A seeded batch shared by both frameworks, so both process the very same bytes."""

    images_nhwc: np.ndarray  # (B, 40, 24, 1) uint8
    labels: np.ndarray  # (B,) int64 in {0, 1}

    @classmethod
    def make(cls, batch_size: int, seed: int = 0) -> "SyntheticBatch":
        rng = np.random.default_rng([seed, 0xBE7C4])
        images = rng.integers(0, 256, (batch_size, *IMAGE_HW, 1), dtype=np.uint8)
        labels = rng.integers(0, 2, (batch_size,), dtype=np.int64)
        return cls(images, labels)

    @property
    def size(self) -> int:
        return int(self.images_nhwc.shape[0])
