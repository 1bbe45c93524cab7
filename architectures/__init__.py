"""ImageNet CNNs (the study's six and EfficientNet-B0) written from scratch in Flax, behind one registry.

>>> import architectures
>>> model = architectures.create("squeezenet1_1", num_classes=2)
>>> architectures.names()   # every registered architecture
"""

from architectures.registry import ArchSpec, WeightSpec, aliases, create, get, names, register, weight_spec

# Importing each file registers its architectures. Add a new file here (see docs/architectures.md).
import importlib as _importlib

for _mod in ("alexnet", "efficientnet", "googlenet", "mobilenet_v2", "resnet", "shufflenet_v2", "squeezenet"):
    try:
        _importlib.import_module(f"architectures.{_mod}")
    except ModuleNotFoundError as _err:  # pragma: no cover - only while an architecture is being written
        if _err.name != f"architectures.{_mod}":
            raise

__all__ = ["ArchSpec", "WeightSpec", "aliases", "create", "get", "names", "register", "weight_spec"]
