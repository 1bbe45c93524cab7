"""torchvision state_dicts -> Flax variables for the registered architectures, strictly checked.

>>> import weights_convert
>>> variables = weights_convert.convert("resnet50", "resnet50-0676ba61.pth", num_classes=12)
>>> weights_convert.save_variables("out/resnet50", variables, arch="resnet50", num_classes=12)

torch is imported only when a ``.pth`` file is read, so importing this package does not need it.
Command line: ``python -m weights_convert --help``.
"""

from weights_convert.checkpoint import load_meta, load_variables, save_variables
from weights_convert.convert import ConversionInfo, convert, convert_with_info, variable_shapes
from weights_convert.rules import OVERRIDES, Override, flax_path
from weights_convert.state_dict import file_sha256, load_state_dict

__all__ = [
    "ConversionInfo",
    "OVERRIDES",
    "Override",
    "convert",
    "convert_with_info",
    "file_sha256",
    "flax_path",
    "load_meta",
    "load_state_dict",
    "load_variables",
    "save_variables",
    "variable_shapes",
]
