"""Data foundation: the InfraredSolarModules TFDS dataset, the study's splits and augmentation, and
the model-input preprocessing. See docs/data.md."""

from hotspot_jax.data.arrays import ArraySplit, ModuleImages
from hotspot_jax.data.augment import (
    AUGMENT_OPS,
    AugmentConfig,
    augment_batch,
    augment_image,
    gaussian_filter,
    rotate180,
    unsharp_mask,
)
from hotspot_jax.data.classes import BINARY_CLASS_NAMES, CLASS_NAMES, HOTSPOT_CLASSES, IMAGE_SHAPE, NO_ANOMALY
from hotspot_jax.data.download import OFFICIAL_RELEASE, ReleaseSpec, download_release
from hotspot_jax.data.loading import CACHE_ENV, DATA_ENV, default_cache_dir, load_dataset
from hotspot_jax.data.preprocess import IMAGENET_MEAN, IMAGENET_STD, load_image_file, preprocess
from hotspot_jax.data.protocol import (
    ProtocolConfig,
    SplitManifest,
    make_binary_split,
    make_multiclass_split,
    materialize,
    split_counts,
)
from hotspot_jax.data.release import read_release

__all__ = [
    "AUGMENT_OPS", "ArraySplit", "AugmentConfig", "BINARY_CLASS_NAMES", "CACHE_ENV", "CLASS_NAMES", "DATA_ENV",
    "HOTSPOT_CLASSES", "IMAGENET_MEAN", "IMAGENET_STD", "IMAGE_SHAPE", "ModuleImages", "NO_ANOMALY",
    "OFFICIAL_RELEASE", "ProtocolConfig", "ReleaseSpec", "SplitManifest", "augment_batch", "augment_image",
    "default_cache_dir", "download_release", "gaussian_filter", "load_dataset", "load_image_file",
    "make_binary_split", "make_multiclass_split", "materialize", "preprocess", "read_release", "rotate180",
    "split_counts", "unsharp_mask",
]
