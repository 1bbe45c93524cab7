"""In-memory containers: the whole dataset (:class:`ModuleImages`) and one split (:class:`ArraySplit`)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from hotspot_jax.data.classes import CLASS_NAMES, IMAGE_SHAPE


def _check_arrays(images: np.ndarray, labels: np.ndarray, ids: np.ndarray, what: str) -> None:
    """Shared shape/dtype checks for the containers (programming errors, so plain ValueError)."""
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[3] != 1:
        raise ValueError(f"{what}.images must be uint8 (N, H, W, 1), got {images.dtype} {images.shape}")
    if labels.dtype != np.int32 or labels.shape != (images.shape[0],):
        raise ValueError(f"{what}.labels must be int32 ({images.shape[0]},), got {labels.dtype} {labels.shape}")
    if ids.shape != (images.shape[0],):
        raise ValueError(f"{what}.ids must have shape ({images.shape[0]},), got {ids.shape}")


@dataclass(frozen=True, eq=False)
class ModuleImages:
    """The whole dataset in memory, sorted by numeric image id.

    ``images`` uint8 (N, 40, 24, 1); ``labels`` int32 (N,) indexing ``class_names`` (:data:`CLASS_NAMES`
    for InfraredSolarModules); ``ids`` (N,) str (the release's ids, e.g. ``"13357"``, or one's own images'
    relative paths); ``metadata_sha256`` identifies the source (``module_metadata.json``, or one's own
    data's content) so manifests can say which dataset they were drawn from.
    """

    images: np.ndarray
    labels: np.ndarray
    ids: np.ndarray
    metadata_sha256: str = ""
    class_names: tuple[str, ...] = CLASS_NAMES  # what ``labels`` index: the 12 classes, or one's own data's
    own: bool = False  # one's own labelled images (hotspot_jax.data.own_data), not InfraredSolarModules
    _index: dict = field(default=None, repr=False, compare=False)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        _check_arrays(self.images, self.labels, self.ids, "ModuleImages")
        if self.images.shape[1:] != IMAGE_SHAPE:
            raise ValueError(f"ModuleImages.images must be (N, 40, 24, 1), got {self.images.shape}")
        object.__setattr__(self, "_index", {str(i): k for k, i in enumerate(self.ids)})
        if len(self._index) != len(self.ids):
            raise ValueError("ModuleImages.ids contains duplicates")

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def class_counts(self) -> dict[str, int]:
        """Number of images per class name, in :data:`CLASS_NAMES` order (zero counts included)."""
        counts = np.bincount(self.labels, minlength=len(self.class_names))
        return {name: int(c) for name, c in zip(self.class_names, counts)}

    def ids_of_class(self, *names: str) -> np.ndarray:
        """Ids (sorted as in the dataset) of the images whose class is one of ``names``."""
        wanted = np.array([list(self.class_names).index(n) for n in names], dtype=np.int32)
        return self.ids[np.isin(self.labels, wanted)]

    def indices(self, ids) -> np.ndarray:
        """Row indices of ``ids``; KeyError naming the first id that is not in the dataset."""
        out = np.empty(len(ids), dtype=np.int64)
        for k, i in enumerate(ids):
            try:
                out[k] = self._index[str(i)]
            except KeyError:
                raise KeyError(f"image id {i!r} is not in the dataset") from None
        return out


@dataclass(frozen=True, eq=False)
class ArraySplit:
    """One split ready for training or evaluation.

    ``images`` uint8 (N, 40, 24, 1); ``labels`` int32 (N,) indexing ``class_names`` (for the binary
    task :data:`BINARY_CLASS_NAMES`, 1 = hotspot); ``ids`` (N,) str, augmented copies named
    ``"<id>@rot180"``, ``"<id>@gauss"``, ``"<id>@sharpen"``.
    """

    images: np.ndarray
    labels: np.ndarray
    ids: np.ndarray
    class_names: tuple[str, ...] = CLASS_NAMES

    def __post_init__(self) -> None:
        _check_arrays(self.images, self.labels, self.ids, "ArraySplit")

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def class_counts(self) -> dict[str, int]:
        """Number of images per entry of ``class_names``."""
        counts = np.bincount(self.labels, minlength=len(self.class_names))
        return {name: int(c) for name, c in zip(self.class_names, counts)}
