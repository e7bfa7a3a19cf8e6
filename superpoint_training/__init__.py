"""SuperPoint in PyTorch: model, feature extraction, training, homographic adaptation, evaluation.

Imports nothing from ROS. The public API::

    from superpoint_training import Extractor
    features = Extractor(weights="default", device="auto")(image)

The names below are imported on first use, not with the package: importing the package (as every
command ``python -m superpoint_training.X`` does) stays light.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from .common.no_telemetry import block_telemetry

block_telemetry()  # before anything can import openvino: see common/no_telemetry.py

if TYPE_CHECKING:  # for type checkers and editors; at run time each name loads on first use
    from .model.extractor import Extractor, Features
    from .model.keypoints import DetectionConfig
    from .model.loading import LoadedWeights, WeightsError, load_superpoint
    from .model.matching import match_descriptors
    from .model.network import ModelConfig, SuperPoint

# public name -> the module that defines it
_EXPORTS = {
    "DetectionConfig": "model.keypoints",
    "Extractor": "model.extractor",
    "Features": "model.extractor",
    "LoadedWeights": "model.loading",
    "ModelConfig": "model.network",
    "SuperPoint": "model.network",
    "WeightsError": "model.loading",
    "load_superpoint": "model.loading",
    "match_descriptors": "model.matching",
}

__all__ = [
    "DetectionConfig",
    "Extractor",
    "Features",
    "LoadedWeights",
    "ModelConfig",
    "SuperPoint",
    "WeightsError",
    "load_superpoint",
    "match_descriptors",
]
assert sorted(_EXPORTS) == __all__
__version__ = "0.1.0"


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
