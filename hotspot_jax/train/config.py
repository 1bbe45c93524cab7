"""A training run's configuration: the study's defaults, profiles, validation and run identity.

Two runs are "the same run" (so a work directory may be resumed) when every field in
:data:`IDENTITY_FIELDS` matches; ``epochs``, ``keep``, ``eval_batch_size`` and the data path may change.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from pathlib import Path
from typing import Any

from hotspot_jax.errors import ConfigError

PROFILES = {"paper": None, "cpu": 64}  # image size: None = the architecture's input_size
DTYPES = ("float32", "bfloat16")
IDENTITY_FIELDS = (
    "arch", "image_size", "batch_size", "lr", "momentum", "weight_decay", "seed", "dtype",
    "pretrained_sha256", "limit_train", "limit_eval",
)


@dataclasses.dataclass
class TrainConfig:
    """Every option of a training run; defaults are the study's (SGD-momentum, lr 1e-3, batch 32, 40 epochs)."""

    arch: str
    data: str | None = None  # dataset zip/folder; None: $HOTSPOT_DATA
    pretrained: str | None = None  # torchvision .pth file; None: from scratch
    epochs: int = 40
    batch_size: int = 32
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 1e-4
    image_size: int | None = None  # None: from the profile
    profile: str = "paper"
    seed: int = 0
    eval_batch_size: int = 256
    keep: int = 3
    dtype: str = "float32"
    limit_train: int | None = None  # train on a seeded random subset of this many images (tests, smoke runs)
    limit_eval: int | None = None  # evaluate on the first N images of each evaluation split
    workdir: str | None = None  # None: runs/<arch>-s<seed>-<size>px
    pretrained_sha256: str | None = None  # filled by resolve()

    def resolve(self) -> "TrainConfig":
        """Canonical architecture name, image size from the profile, checked numbers, default workdir."""
        import architectures

        spec = architectures.get(self.arch)  # ConfigError listing valid names
        if self.profile not in PROFILES:
            raise ConfigError(f"unknown --profile {self.profile!r}; use one of {', '.join(PROFILES)}")
        size = self.image_size or PROFILES[self.profile] or spec.input_size
        if size < spec.min_input_size:
            raise ConfigError(
                f"--image-size {size} is below {spec.name}'s minimum input size {spec.min_input_size}"
            )
        if self.dtype not in DTYPES:
            raise ConfigError(f"unknown --dtype {self.dtype!r}; use one of {', '.join(DTYPES)}")
        for option, value in (("--epochs", self.epochs), ("--keep", self.keep)):
            if value < 1:
                raise ConfigError(f"{option} must be at least 1, got {value}")
        for option, value in (("--lr", self.lr), ("--momentum", self.momentum), ("--weight-decay", self.weight_decay)):
            if not (value >= 0 and value < float("inf")):
                raise ConfigError(f"{option} must be a finite non-negative number, got {value}")
        for option, value in (("--limit-train", self.limit_train), ("--limit-eval", self.limit_eval)):
            if value is not None and value < 1:
                raise ConfigError(f"{option} must be at least 1, got {value}")
        pretrained, sha = None, None
        if self.pretrained and self.pretrained.lower() != "none":
            path = Path(self.pretrained).expanduser()
            if not path.is_file():
                raise ConfigError(f"--pretrained file {path} does not exist")
            pretrained, sha = str(path.resolve()), file_sha256(path)
        workdir = self.workdir or os.path.join("runs", f"{spec.name}-s{self.seed}-{size}px")
        return dataclasses.replace(
            self, arch=spec.name, image_size=size, pretrained=pretrained, pretrained_sha256=sha, workdir=workdir
        )

    @property
    def initialisation(self) -> str:
        """How the weights were initialised, as recorded in the config and every result."""
        if self.pretrained is None:
            return "scratch"
        return f"torchvision:{Path(self.pretrained).name} (sha256 {self.pretrained_sha256[:12]}), new head"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def identity(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in IDENTITY_FIELDS}


def identity_differences(stored: dict[str, Any], new: TrainConfig) -> list[str]:
    """``field: stored -> new`` for every identity field that differs."""
    return [
        f"{k}: {stored.get(k)!r} -> {getattr(new, k)!r}" for k in IDENTITY_FIELDS if stored.get(k) != getattr(new, k)
    ]


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
