"""The study's reported numbers (Açıkgöz et al., 2022, Table 3) and its architecture line-up.

The six test accuracies are the ones the project brief quotes from the paper; the paper itself is not
available on this project's machines, so its other Table 3 cells (precision, sensitivity, specificity,
F1) are ``None`` and show as "n/a" until someone copies them in.
The study evaluated one run per network on a 148-image test set (74 hotspot + 74 No-Anomaly).
"""

from __future__ import annotations

STUDY_TEST_SIZE = 148  # 74 hotspot + 74 No-Anomaly images: one image = 0.68 points of accuracy
STUDY_METRICS = ("accuracy", "precision", "sensitivity", "specificity", "f1")

#: The study's six networks, in the order of its Table 3, as this project's registry names.
STUDY_ARCHS: tuple[str, ...] = (
    "alexnet", "googlenet", "shufflenet_v2_x1_0", "squeezenet1_1", "resnet50", "mobilenet_v2",
)

#: Display names used in tables and figures.
DISPLAY_NAMES = {
    "alexnet": "AlexNet", "googlenet": "GoogLeNet", "shufflenet_v2_x1_0": "ShuffleNetV2",
    "squeezenet1_1": "SqueezeNet 1.1", "resnet50": "ResNet-50", "mobilenet_v2": "MobileNetV2",
}

#: Table 3 of the study (ImageNet-pretrained networks, MATLAB): metric -> value, None where not known here.
STUDY_TABLE3: dict[str, dict[str, float | None]] = {
    arch: {m: None for m in STUDY_METRICS} for arch in STUDY_ARCHS
}
for _arch, _accuracy in {
    "alexnet": 0.9865,  # 146/148: 2 errors
    "mobilenet_v2": 0.9730,  # 144/148: 4 errors
    "shufflenet_v2_x1_0": 0.9730,  # 144/148
    "googlenet": 0.9595,  # 142/148: 6 errors
    "squeezenet1_1": 0.9527,  # 141/148: 7 errors
    "resnet50": 0.9459,  # 140/148: 8 errors
}.items():
    STUDY_TABLE3[_arch]["accuracy"] = _accuracy


def display_name(arch: str) -> str:
    """The name a table shows for ``arch`` (the registry name when it is not one of the study's)."""
    return DISPLAY_NAMES.get(arch, arch)


#: 12-class test accuracies published on InfraredSolarModules, as quoted in issue 24 (the paper is not on
#: this project's machines): their split, input size and training may differ from ours.
LITERATURE_CLASSES12: tuple[tuple[str, float], ...] = (
    ("SolarAttnNet (Energies, 2025)", 0.921),
    ("ResNet-50, SolarAttnNet's baseline", 0.885),
)
