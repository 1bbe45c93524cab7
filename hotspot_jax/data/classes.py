"""The dataset's 12 class names and the hotspot-vs-No-Anomaly task's class names (fixed orders)."""

from __future__ import annotations

#: The 12 ``anomaly_class`` values of InfraredSolarModules, in alphabetical order (Python string sort).
#: Label ``i`` of :class:`ModuleImages` means ``CLASS_NAMES[i]``; the order never changes.
CLASS_NAMES: tuple[str, ...] = (
    "Cell",
    "Cell-Multi",
    "Cracking",
    "Diode",
    "Diode-Multi",
    "Hot-Spot",
    "Hot-Spot-Multi",
    "No-Anomaly",
    "Offline-Module",
    "Shadowing",
    "Soiling",
    "Vegetation",
)

#: The classes that together form the study's "hotspot" class (249 + 246 = 495 images).
HOTSPOT_CLASSES: tuple[str, ...] = ("Hot-Spot", "Hot-Spot-Multi")

#: The class that the study compares hotspots with (10,000 images).
NO_ANOMALY: str = "No-Anomaly"

#: Class names of the binary task; binary label 1 = hotspot, the positive class.
BINARY_CLASS_NAMES: tuple[str, ...] = ("No-Anomaly", "Hotspot")

#: Class names of the anomaly task; label 1 = any of the 11 anomaly classes, the positive class.
ANOMALY_CLASS_NAMES: tuple[str, ...] = ("No-Anomaly", "Anomaly")

#: Image geometry of the release: 40 px high, 24 px wide, one channel.
IMAGE_SHAPE: tuple[int, int, int] = (40, 24, 1)

#: Expected number of images per class in the official release (from module_metadata.json).
OFFICIAL_CLASS_COUNTS: dict[str, int] = {
    "No-Anomaly": 10000,
    "Cell": 1877,
    "Vegetation": 1639,
    "Diode": 1499,
    "Cell-Multi": 1288,
    "Shadowing": 1056,
    "Cracking": 940,
    "Offline-Module": 827,
    "Hot-Spot": 249,
    "Hot-Spot-Multi": 246,
    "Soiling": 204,
    "Diode-Multi": 175,
}

assert tuple(sorted(CLASS_NAMES)) == CLASS_NAMES and set(OFFICIAL_CLASS_COUNTS) == set(CLASS_NAMES)


def class_index(name: str) -> int:
    """Index of ``name`` in :data:`CLASS_NAMES` (ValueError if unknown)."""
    return CLASS_NAMES.index(name)
