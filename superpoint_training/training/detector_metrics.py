"""Detector metrics against ground-truth corners (Synthetic Shapes), after rpautrat's
``evaluations/detector_evaluation.py``.

Per image, the predictions are the points of the NMS-ed probability map above ``min_score``.
Taken in decreasing score, a prediction is a true positive when an unmatched ground-truth corner
lies within ``distance_threshold`` pixels (it takes the nearest such corner); otherwise it is a false
positive. Over the whole set:

- the precision-recall curve sweeps the score threshold; ``mAP`` is the area under it
  (``sum(precision[i] * (recall[i] - recall[i-1]))``, the reference's ``compute_mAP``);
- ``precision`` / ``recall`` are read at ``detection_threshold``;
- ``localization_error`` is the mean distance to the nearest ground-truth corner of the
  predictions above ``detection_threshold`` that lie within ``distance_threshold`` (NaN if none).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ..model.keypoints import logits_to_scores, nms, remove_border_scores


@dataclass
class DetectorMetricsAccumulator:
    """Collects per-image matches; :meth:`compute` gives the set's metrics."""

    distance_threshold: float = 4.0
    detection_threshold: float = 0.015
    nms_radius: int = 4
    remove_borders: int = 0
    min_score: float = 1e-3
    _scores: list = field(default_factory=list)
    _tp: list = field(default_factory=list)
    _distances: list = field(default_factory=list)
    _num_gt: int = 0
    _num_images: int = 0

    def add_scores(self, scores: torch.Tensor, keypoint_map: torch.Tensor) -> None:
        """Probability maps (B, H, W) (before NMS) and ground-truth keypoint maps (B, H, W)."""
        scores = remove_border_scores(nms(scores.float(), self.nms_radius), self.remove_borders)
        for prob, gt in zip(scores.cpu().numpy(), keypoint_map.cpu().numpy(), strict=True):
            self.add_image(prob, np.argwhere(gt > 0)[:, ::-1].astype(np.float64))

    def add_logits(self, logits: torch.Tensor, keypoint_map: torch.Tensor) -> None:
        """Detector logits (B, 65, Hc, Wc) and ground-truth keypoint maps (B, 8 Hc, 8 Wc)."""
        self.add_scores(logits_to_scores(logits), keypoint_map)

    def add_image(self, prob: np.ndarray, gt_xy: np.ndarray) -> None:
        """One NMS-ed (H, W) probability map and its ground-truth corners (N, 2) (x, y)."""
        ys, xs = np.nonzero(prob > self.min_score)
        scores = prob[ys, xs]
        order = np.argsort(-scores, kind="stable")
        pred = np.stack((xs, ys), axis=1)[order].astype(np.float64)
        scores = scores[order]
        tp = np.zeros(len(pred), dtype=bool)
        nearest = np.full(len(pred), np.inf)
        if len(gt_xy) and len(pred):
            dist = np.linalg.norm(pred[:, None] - gt_xy[None], axis=-1)
            nearest = dist.min(axis=1)
            free = np.ones(len(gt_xy), dtype=bool)
            for i in range(len(pred)):
                candidates = np.where(free & (dist[i] <= self.distance_threshold))[0]
                if len(candidates):
                    j = candidates[np.argmin(dist[i, candidates])]
                    free[j] = False
                    tp[i] = True
        self._scores.append(scores)
        self._tp.append(tp)
        above = (scores > self.detection_threshold) & (nearest <= self.distance_threshold)
        self._distances.append(nearest[above])
        self._num_gt += len(gt_xy)
        self._num_images += 1

    def compute(self) -> dict[str, float]:
        scores = np.concatenate(self._scores) if self._scores else np.zeros(0)
        tp = np.concatenate(self._tp) if self._tp else np.zeros(0, dtype=bool)
        order = np.argsort(-scores, kind="stable")
        scores, tp = scores[order], tp[order]
        tp_cum = np.cumsum(tp)
        fp_cum = np.cumsum(~tp)
        n_gt = max(self._num_gt, 1)
        precision_curve = tp_cum / np.maximum(tp_cum + fp_cum, 1)
        recall_curve = tp_cum / n_gt
        recall_prev = np.concatenate(([0.0], recall_curve[:-1]))
        m_ap = float(np.sum(precision_curve * (recall_curve - recall_prev)))
        n_above = int(np.sum(scores > self.detection_threshold))
        tp_above = int(tp_cum[n_above - 1]) if n_above else 0
        distances = np.concatenate(self._distances) if self._distances else np.zeros(0)
        return {
            "precision": tp_above / n_above if n_above else 0.0,
            "recall": tp_above / n_gt,
            "mAP": m_ap,
            "localization_error": float(distances.mean()) if len(distances) else float("nan"),
            "detections_per_image": n_above / max(self._num_images, 1),
            "corners_per_image": self._num_gt / max(self._num_images, 1),
            "num_images": float(self._num_images),
        }


@torch.no_grad()
def evaluate_detector(
    model: torch.nn.Module,
    batches,
    device: torch.device | str,
    distance_threshold: float = 4.0,
    detection_threshold: float = 0.015,
    nms_radius: int = 4,
    remove_borders: int = 0,
    min_score: float = 1e-3,
    max_batches: int | None = None,
) -> dict[str, float]:
    """Run ``model`` (returning ``(logits, descriptors)``) in eval mode over batches of
    ``{"image", "keypoint_map"}`` and return :meth:`DetectorMetricsAccumulator.compute`."""
    metrics = DetectorMetricsAccumulator(distance_threshold, detection_threshold, nms_radius, remove_borders, min_score)
    was_training = model.training
    model.eval()
    try:
        for i, batch in enumerate(batches):
            if max_batches is not None and i >= max_batches:
                break
            logits, _ = model(batch["image"].to(device, non_blocking=True))
            metrics.add_logits(logits, batch["keypoint_map"])
    finally:
        model.train(was_training)
    return metrics.compute()
