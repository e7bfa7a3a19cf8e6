"""Evaluation presets: this project's protocol (the default) and the reference's.

``--preset project`` (default) is the project's own protocol, unchanged: SuperPoint with its
weights' detection threshold and border removal, the max-pool NMS of radius 4 (detector) / 8
(descriptor), 3000 / 5000 points per image kept at export.

``--preset reference`` is the protocol of rpautrat/SuperPoint's evaluation
(``superpoint_hpatches.yaml``, ``magic-point_repeatability.yaml``, ``models/utils.py::box_nms``):
detection threshold 0.001, the box NMS of size 4 (detector) / 8 (descriptor) with IoU 0.1
(:func:`superpoint_training.model.keypoints.box_nms`), no border removal, keypoints at integer
pixels (no sub-pixel refinement), one scale (no pyramid), the best 1000 points per image at export, images resized keeping
the aspect ratio and centre-cropped to 240x320 / 480x640. Descriptor sampling stays the weights'
(how they were trained). The classical baselines keep their own NMS in both presets.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch

from ..model.keypoints import box_nms, remove_border_scores
from ..training.detector_metrics import DetectorMetricsAccumulator
from .methods import PROTOCOLS, Protocol


@dataclass(frozen=True)
class EvaluationPreset:
    """What a preset fixes; None keeps the weights' own default."""

    name: str
    summary: str
    protocols: dict[str, Protocol]
    detection_threshold: float | None = None
    remove_borders: int | None = None
    subpixel: str | None = None  # "none": integer pixels, as the reference
    scales: tuple[float, ...] | None = None  # (1.0,): one scale, as the reference
    box_nms: bool = False  # SuperPoint: box NMS of side protocol.nms_radius instead of the max-pool
    nms_iou: float = 0.1

    def superpoint_line(self, detection_threshold: float | None) -> str:
        """The report's line on SuperPoint's detection settings under this preset."""
        threshold = detection_threshold if detection_threshold is not None else self.detection_threshold
        if threshold is None:
            return ("SuperPoint: detection threshold and border from the weights' defaults (see the method lines "
                    "above), descriptors stored as float16 in the cache")
        border = "the weights' border removal" if self.remove_borders is None else (
            "no border removal" if self.remove_borders == 0 else f"border removal {self.remove_borders} px")
        position = "the weights' sub-pixel setting" if self.subpixel is None else f"sub-pixel {self.subpixel}"
        position += ", the weights' scales" if self.scales is None else f", scales {list(self.scales)}"
        return (f"SuperPoint: detection threshold {threshold:g}, {border}, {position}, descriptor sampling from the "
                "weights; descriptors stored as float16 in the cache")

    def nms_line(self, protocol: Protocol) -> str:
        """The report's line on the NMS and point counts of ``protocol`` under this preset."""
        if not self.box_nms:
            return (f"{protocol.name} protocol: max-pool NMS with radius {protocol.nms_radius} for SuperPoint, FAST, "
                    f"Harris and Shi-Tomasi; the reference used a box NMS of that size; top {protocol.top_k} points "
                    f"in the shared view; at most {protocol.export_max} points per image kept in the cache")
        return (f"{protocol.name} protocol: SuperPoint with the reference's box NMS (boxes of side "
                f"{protocol.nms_radius} px on every point at or above the threshold, IoU > {self.nms_iou:g} "
                f"suppresses, greedy by score), then its best {protocol.export_max} points per image (the "
                f"reference's top_k at export); FAST, Harris and Shi-Tomasi keep the max-pool NMS of radius "
                f"{protocol.nms_radius}; top {protocol.top_k} points in the shared view")


PRESETS: dict[str, EvaluationPreset] = {
    "project": EvaluationPreset(
        "project",
        "this project's protocol (the default): the weights' threshold and border removal, max-pool NMS, "
        "3000 / 5000 points per image at export",
        PROTOCOLS,
    ),
    "reference": EvaluationPreset(
        "reference",
        "rpautrat/SuperPoint's evaluation protocol: threshold 0.001, box NMS 4 / 8 with IoU 0.1, no border "
        "removal, integer keypoints at one scale, the best 1000 points per image at export, aspect-preserving resize and "
        "centre crop",
        {
            "detector": dataclasses.replace(PROTOCOLS["detector"], export_max=1000),
            "descriptor": dataclasses.replace(PROTOCOLS["descriptor"], export_max=1000),
        },
        detection_threshold=0.001,
        remove_borders=0,
        subpixel="none",
        scales=(1.0,),
        box_nms=True,
    ),
}
# The detector (Synthetic Shapes) metrics under the reference preset: its threshold, box NMS of size 4.
REFERENCE_DETECTOR_BOX = 4


@dataclass
class BoxNMSDetectorMetrics(DetectorMetricsAccumulator):
    """:class:`DetectorMetricsAccumulator` with the reference's box NMS (boxes of side ``box_size``,
    IoU ``nms_iou``, on the points at or above ``min_score``) in place of the max-pool."""

    box_size: int = REFERENCE_DETECTOR_BOX
    nms_iou: float = 0.1

    def add_scores(self, scores: torch.Tensor, keypoint_map: torch.Tensor) -> None:
        suppressed = box_nms(scores.float(), self.box_size, self.nms_iou, self.min_score)
        scores = remove_border_scores(suppressed, self.remove_borders)
        for prob, gt in zip(scores.cpu().numpy(), keypoint_map.cpu().numpy(), strict=True):
            self.add_image(prob, np.argwhere(gt > 0)[:, ::-1].astype(np.float64))


@torch.no_grad()
def evaluate_detector_with(metrics: DetectorMetricsAccumulator, model: torch.nn.Module, batches,
                           device: torch.device | str) -> dict[str, float]:
    """``model`` in eval mode over batches of ``{"image", "keypoint_map"}`` into ``metrics``."""
    was_training = model.training
    model.eval()
    try:
        for batch in batches:
            logits, _ = model(batch["image"].to(device, non_blocking=True))
            metrics.add_logits(logits, batch["keypoint_map"])
    finally:
        model.train(was_training)
    return metrics.compute()
