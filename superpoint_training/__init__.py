"""SuperPoint in PyTorch: model, feature extraction, training, homographic adaptation, evaluation.

Imports nothing from ROS. The public API::

    from superpoint_training import Extractor
    features = Extractor(weights="superpoint_v6_from_tf", device="auto")(image)
"""

from .extractor import Extractor, Features
from .keypoints import DetectionConfig
from .matching import match_descriptors
from .model import ModelConfig, SuperPoint
from .weights import LoadedWeights, WeightsError, load_superpoint

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
__version__ = "0.1.0"
