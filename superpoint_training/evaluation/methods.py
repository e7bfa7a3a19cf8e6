"""The evaluated methods (SuperPoint weights, OpenCV baselines) and the reference's two protocols."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..model.extractor import Extractor
from ..model.loading import load_superpoint
from . import baselines

ALL_METHODS = ("superpoint", "sift", "orb", "fast", "harris", "shi")


@dataclass(frozen=True)
class Protocol:
    """One of the reference's evaluation settings."""

    name: str
    size: tuple[int, int]
    nms_radius: int
    top_k: int
    export_max: int  # points kept per image in the cache (best scores first)
    distance: float = 3.0
    short_side: int | None = None  # for --resize short_side: the side length used (default: size[0])
    ransac_orders: int = 1  # homography correctness averaged over this many match orders (1: the reference)


PROTOCOLS = {
    "detector": Protocol("detector", (240, 320), nms_radius=4, top_k=300, export_max=3000),
    "descriptor": Protocol("descriptor", (480, 640), nms_radius=8, top_k=1000, export_max=5000),
}


@dataclass
class Method:
    """A method as evaluated: its report label, what it is and the settings that key its cache."""

    label: str
    family: str  # "superpoint" or a name of baselines.METHODS
    settings: dict
    extractor: Extractor | None = field(default=None, repr=False)

    @property
    def has_descriptors(self) -> bool:
        if self.family == "superpoint":
            return self.extractor is not None and self.extractor.descriptor_dim > 0  # MagicPoint: none
        return self.family in baselines.DESCRIPTORS

    @property
    def norm(self) -> str:
        return "unit" if self.family == "superpoint" else baselines.NORMS[self.family]

    def supports(self, protocol: Protocol) -> bool:
        return protocol.name == "detector" or self.has_descriptors

    def skip_reason(self, protocol: Protocol) -> str:
        """Why this method is left out of ``protocol`` (only called when it does not support it)."""
        if self.family == "superpoint":
            return (f"{self.label}: {self.settings['weights']} have no descriptor head (detector only), "
                    f"so the {protocol.name} protocol is skipped")
        return f"{self.label}: a detector without descriptors, not in the {protocol.name} protocol"


def weights_fingerprint(model: torch.nn.Module) -> str:
    """A short hash of the weights' values, so that retrained weights at the same path miss the cache."""
    digest = hashlib.sha1()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:12]


def build_methods(names: list[str], weights: list[str], device: str, detection_threshold: float | None,
                  remove_borders: int | None = None, box_nms_iou: float | None = None,
                  subpixel: str | None = None, scales: tuple[float, ...] | None = None) -> list[Method]:
    """Methods in the order given; ``superpoint`` expands to one method per weights.

    ``detection_threshold``, ``remove_borders``, ``subpixel`` and ``scales`` None keep the weights' defaults; ``box_nms_iou``
    set: SuperPoint uses the reference's box NMS (of side the protocol's ``nms_radius``) with that IoU.
    """
    methods = []
    for name in names:
        if name not in ALL_METHODS:
            raise ValueError(f"unknown method {name!r}; choose from {', '.join(ALL_METHODS)}")
        if name != "superpoint":
            methods.append(Method(name, name, {"method": name, "opencv": opencv_version()}))
            continue
        for weight in weights:
            loaded = load_superpoint(weight)
            extractor = Extractor(loaded, device=device, detection_threshold=detection_threshold,
                                  remove_borders=remove_borders, subpixel=subpixel, scales=scales, warmup=False)
            label = "superpoint" if len(weights) == 1 else f"superpoint[{Path(str(weight)).stem}]"
            settings = {
                "method": "superpoint",
                "weights": loaded.description,
                "fingerprint": weights_fingerprint(loaded.model),
                "detection_threshold": extractor.config.detection_threshold,
                "remove_borders": extractor.config.remove_borders,
                "descriptor_sampling": extractor.config.descriptor_sampling,
                "subpixel": extractor.config.subpixel,
            }
            if box_nms_iou is not None:  # the max-pool's keys stay as they were (caches stay valid)
                settings["nms"] = "box"
                settings["nms_iou"] = box_nms_iou
            if extractor.config.scales != (1.0,):  # single-scale keys stay as they were (caches stay valid)
                settings["scales"] = list(extractor.config.scales)
                settings["pyramid_ranking"] = "score x level scale"
            methods.append(Method(label, "superpoint", settings, extractor))
    return methods


def opencv_version() -> str:
    import cv2

    return cv2.__version__
