"""The ``infrared_solar_modules`` TFDS builder: array_record files of numpy features, no TensorFlow needed.

Features: ``image`` uint8 (40, 24, 1) stored as a raw tensor (decoded once with Pillow at build
time), ``label`` a ClassLabel over :data:`CLASS_NAMES`, ``image_id`` the release's id. One split,
``train``, holding all 20,000 images in numeric id order (shuffling disabled: the study's splits are
made by :mod:`hotspot_jax.data.protocol`, not by TFDS). Read back with ``as_data_source()``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from hotspot_jax.data.classes import CLASS_NAMES, IMAGE_SHAPE
from hotspot_jax.data.download import OFFICIAL_RELEASE, ReleaseSpec, download_release
from hotspot_jax.data.release import read_release

_CITATION = """@inproceedings{millendorf2020infrared,
  title={Infrared Solar Module Dataset for Anomaly Detection},
  author={Millendorf, Matthew and Otth, Edward and Vadhavkar, Nikhil},
  booktitle={ICLR 2020 Workshop on AI for Earth Sciences},
  year={2020}
}"""


class InfraredSolarModules(tfds.core.GeneratorBasedBuilder):
    """TFDS builder over the InfraredSolarModules release (zip or folder given as ``source``).

    Without ``source`` the official release is downloaded (content-checked) into
    ``<data_dir>/downloads``. Build with ``download_and_prepare()``; use ``file_format="array_record"``.
    """

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "All 20,000 images of the 2020-02-14 release, decoded to uint8 tensors."}

    # TFDS 4.9.10 finds a builder's source file through `importlib_resources`, a package it only
    # declares for Python < 3.9; naming the file directly avoids that import.
    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls) -> epath.Path:
        return epath.Path(__file__)

    def __init__(self, *, source: str | os.PathLike | None = None, release: ReleaseSpec = OFFICIAL_RELEASE,
                 progress: bool = True, **kwargs) -> None:
        self._source = source
        self._release = release
        self._progress = progress
        kwargs.setdefault("file_format", "array_record")
        super().__init__(**kwargs)

    # TFDS prints "Downloading and preparing dataset ..." and "... Subsequent calls will reuse this data." to
    # stdout whatever its progress bars do; quiet builds (progress=False: --quiet, --no-progress) print neither
    def _log_download_bytes(self) -> None:
        if self._progress:
            super()._log_download_bytes()

    def _log_download_done(self) -> None:
        if self._progress:
            super()._log_download_done()

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description="Infrared images (24x40, one channel) of PV modules with 12 anomaly classes "
                        "(Raptor Maps, 2020).",
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Tensor(shape=IMAGE_SHAPE, dtype=np.uint8, encoding=tfds.features.Encoding.BYTES),
                "label": tfds.features.ClassLabel(names=list(CLASS_NAMES)),
                "image_id": tfds.features.Text(),
            }),
            supervised_keys=("image", "label"),
            homepage="https://github.com/RaptorMaps/InfraredSolarModules",
            citation=_CITATION,
            disable_shuffling=True,
            license="MIT",
        )

    def _split_generators(self, dl_manager):
        source = self._source
        if source is None:
            source = download_release(Path(self.data_dir_root) / "downloads", self._release, progress=self._progress)
        # Read and validate everything before TFDS writes a single record.
        data = read_release(source, progress=self._progress)
        return {"train": self._generate_examples(data)}

    def _generate_examples(self, data):
        for image, label, image_id in zip(data.images, data.labels, data.ids):
            yield str(image_id), {"image": image, "label": int(label), "image_id": str(image_id)}
