"""The ``own_module_images`` TFDS builder: one's own labelled module crops (hotspot_jax.data.own_data),
converted to 40x24 grey uint8, as array_record files of numpy features (no TensorFlow needed)."""

from __future__ import annotations

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from hotspot_jax.data.classes import IMAGE_SHAPE


class OwnModuleImages(tfds.core.GeneratorBasedBuilder):
    """Features ``image``, ``label`` (a ClassLabel over the data's own class names), ``image_id`` (the
    file's relative path); one split, ``train``, in the order read (the splits are made by
    hotspot_jax.data.tasks). Build with :meth:`prepare_from` (a ModuleImages of own data)."""

    VERSION = tfds.core.Version("1.0.0")

    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls) -> epath.Path:  # see tfds_builder.InfraredSolarModules.code_path
        return epath.Path(__file__)

    def __init__(self, *, class_names: tuple[str, ...], **kwargs) -> None:
        self._class_names = tuple(class_names)
        self._data = None
        kwargs.setdefault("file_format", "array_record")
        super().__init__(**kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description="Labelled infrared module crops, converted to 40x24 grey uint8.",
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Tensor(shape=IMAGE_SHAPE, dtype=np.uint8, encoding=tfds.features.Encoding.BYTES),
                "label": tfds.features.ClassLabel(names=list(self._class_names)),
                "image_id": tfds.features.Text(),
            }),
            disable_shuffling=True,
        )

    def prepare_from(self, data) -> None:
        """Write ``data`` (already read and checked) as this dataset, TFDS's progress bars off."""
        from tensorflow_datasets.core.utils import tqdm_utils

        self._data = data
        shown = tqdm_utils._active
        tqdm_utils.display_progress_bar(False)
        try:
            self.download_and_prepare()
        finally:
            tqdm_utils.display_progress_bar(shown)

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples()}

    def _generate_examples(self):
        d = self._data
        for image, label, image_id in zip(d.images, d.labels, d.ids):
            yield str(image_id), {"image": image, "label": int(label), "image_id": str(image_id)}
