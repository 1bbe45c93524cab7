"""One registry for every architecture: how to build it, what input it wants, which weights exist.

Each architecture file calls :func:`register` at import time with an :class:`ArchSpec`;
``architectures/__init__.py`` imports them all. Weight sets are named timm-style ``arch.tag``
(``resnet50.tv_in1k``) and carry torchvision's published claims (file name, ImageNet top-1,
eval transform) as data, so that a claim can be checked rather than trusted.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import flax.linen as nn

from architectures.errors import ConfigError
from architectures.ops.impl import Impl, resolve

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclasses.dataclass(frozen=True)
class WeightSpec:
    """A published torchvision ImageNet weight set and the transform it was evaluated with."""

    name: str  # "resnet50.tv_in1k"
    torchvision_enum: str  # "ResNet50_Weights.IMAGENET1K_V1"
    file_name: str  # "resnet50-0676ba61.pth" (torchvision's download file name)
    acc1: float  # ImageNet top-1 reported by torchvision
    num_params: int
    resize: int = 256  # eval: resize the short side to this ...
    crop: int = 224  # ... then center-crop this
    interpolation: str = "bilinear"
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD


@dataclasses.dataclass(frozen=True)
class ArchSpec:
    """How to build one architecture variant and what it expects."""

    name: str  # registry key, equal to the torchvision builder name ("resnet50")
    constructor: Callable[..., nn.Module]  # called as constructor(num_classes=..., **options)
    input_size: int  # the study's / torchvision's default square input size
    min_input_size: int  # smallest square input that torchvision's model accepts
    torchvision_builder: str  # name of the builder in torchvision.models
    num_params: int  # with num_classes=1000 (torchvision's count; GoogLeNet without aux heads)
    classifier: tuple[str, ...]  # top-level Flax param names of the head, replaced for transfer learning
    first_conv: str  # Flax param path of the first conv ("conv1", "features_0")
    weights: tuple[WeightSpec, ...] = ()
    aliases: tuple[str, ...] = ()  # short names accepted by the scripts ("squeezenet")
    description: str = ""


_REGISTRY: dict[str, ArchSpec] = {}
_ALIASES: dict[str, str] = {}


def register(spec: ArchSpec) -> ArchSpec:
    """Add ``spec`` to the registry (its name and aliases must be new)."""
    for key in (spec.name, *spec.aliases):
        if key in _REGISTRY or key in _ALIASES:
            raise ValueError(f"architecture name {key!r} registered twice")
    _REGISTRY[spec.name] = spec
    for alias in spec.aliases:
        _ALIASES[alias] = spec.name
    return spec


def names() -> list[str]:
    """Registered architecture names (torchvision builder names), sorted."""
    return sorted(_REGISTRY)


def aliases() -> dict[str, str]:
    """Short aliases and the architecture each stands for."""
    return dict(sorted(_ALIASES.items()))


def get(name: str) -> ArchSpec:
    """The spec for ``name`` or one of its aliases; a ConfigError listing valid names otherwise."""
    key = _ALIASES.get(name, name)
    if key not in _REGISTRY:
        valid = ", ".join(names())
        short = ", ".join(f"{a} ({n})" for a, n in aliases().items())
        raise ConfigError(f"unknown architecture {name!r}; valid names: {valid}; aliases: {short}")
    return _REGISTRY[key]


def weight_spec(weights: str) -> WeightSpec:
    """Look up a weight set by its ``arch.tag`` name (``resnet50.tv_in1k``)."""
    arch = weights.split(".", 1)[0]
    spec = get(arch)
    for w in spec.weights:
        if w.name == weights:
            return w
    known = ", ".join(w.name for s in _REGISTRY.values() for w in s.weights)
    raise ConfigError(f"unknown weight set {weights!r}; known: {known}")


def create(name: str, num_classes: int = 1000, impl: Impl | str | None = None, **options: Any) -> nn.Module:
    """Build the Flax module registered as ``name`` (or an alias) with ``num_classes`` outputs, its ops computed
    as ``impl`` says (:mod:`architectures.ops.impl`; None: ``"cpu"`` on JAX's CPU backend, else ``"reference"``)."""
    try:
        impl = resolve(impl)
    except (TypeError, ValueError) as err:
        raise ConfigError(str(err)) from None
    return get(name).constructor(num_classes=num_classes, impl=impl, **options)
