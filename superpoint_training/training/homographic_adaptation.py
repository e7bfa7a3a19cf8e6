"""Homographic Adaptation (DeTone et al., 2018), batched on the device.

For each image, the detector runs on the image and on ``num - 1`` random warps of it; each warped
probability map is warped back and the maps are aggregated. As in rpautrat's reference
(``models/homographies.py::homography_adaptation``, MIT; the code here is our own):

- homography 0 is the identity: the plain detection, counted everywhere;
- for the others, the detection on the warped image is multiplied by the warped image's valid
  mask, warped back (bilinear), and multiplied by the count mask: the original pixels that are
  visible in the warp. Both masks are eroded by ``valid_border_margin`` with an elliptical kernel of
  size ``2 * margin`` (TensorFlow's SAME placement of an even kernel; outside the image counts as
  valid), which drops detections on the artificial border of the warp;
- ``aggregation: sum`` is the sum of the maps divided by the counts (so, in effect, the mean over
  the warps that see the pixel), ``max`` the maximum; ``filter_counts`` zeroes pixels seen fewer
  times.

Speed: all ``B * (num - 1)`` warps go through ``grid_sample`` in chunks of ``chunk_size`` images
(one network call per chunk). The sampling grids come from one batched matrix product with a cached
pixel grid; the masks are computed from the grids without a warp; the per-image sums use
``index_add_``. There is no Python loop over homographies.

    adaptation = HomographicAdaptation(extractor, {"num": 100, "aggregation": "sum"})
    out = adaptation(images)          # images (B, 1, H, W) in [0, 1] on the extractor's device
    out["prob"], out["counts"]        # (B, H, W)
    points = adaptation.select(out["prob"], detection_threshold=0.015, nms_radius=4)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import cv2
import torch
import torch.nn.functional as F

from ..common.config import ConfigError, merge_strict
from ..data.homographies import SAMPLER_DEFAULTS, sample_homography
from ..model.keypoints import nms, remove_border_scores, top_k_keypoints

AGGREGATIONS = ("sum", "max")

# magic-point_coco_export.yaml's homography_adaptation section (the reference's settings).
DEFAULT_CONFIG: dict[str, Any] = {
    "num": 100,
    "aggregation": "sum",
    "filter_counts": 0,
    "valid_border_margin": 3,
    "homographies": {
        **SAMPLER_DEFAULTS,
        "scaling_amplitude": 0.2,
        "perspective_amplitude_x": 0.2,
        "perspective_amplitude_y": 0.2,
        "allow_artifacts": True,
        "patch_ratio": 0.85,
    },
}

ScoreFunction = Callable[[torch.Tensor], torch.Tensor]


def merge_config(config: Mapping | None, path: str = "homography_adaptation") -> dict[str, Any]:
    """``config`` merged strictly over :data:`DEFAULT_CONFIG` and checked; errors name the key."""
    merged = merge_strict(DEFAULT_CONFIG, config, path)
    if merged["num"] < 1:
        raise ConfigError(f"{path}.num: must be >= 1 (1 = the plain detection), got {merged['num']}")
    if merged["aggregation"] not in AGGREGATIONS:
        raise ConfigError(f"{path}.aggregation: must be one of {AGGREGATIONS}, got {merged['aggregation']!r}")
    if merged["valid_border_margin"] < 0 or merged["filter_counts"] < 0:
        raise ConfigError(f"{path}: valid_border_margin and filter_counts must be >= 0")
    return merged


def border_kernel(margin: int) -> torch.Tensor | None:
    """The reference's erosion kernel: an ellipse of size 2*margin (None for margin 0)."""
    if margin <= 0:
        return None
    size = 2 * margin
    return torch.from_numpy(cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size))).float()


def erode(mask: torch.Tensor, kernel: torch.Tensor | None) -> torch.Tensor:
    """Erode 0/1 masks (N, H, W) by ``kernel`` (k, k); pixels outside the image count as valid.

    An even kernel is placed as TensorFlow's SAME padding does: (k-1)//2 before, k//2 after.
    """
    if kernel is None:
        return mask
    k = kernel.shape[-1]
    before, after = (k - 1) // 2, k // 2
    invalid = F.pad((1 - mask)[:, None], (before, after, before, after))
    hits = F.conv2d(invalid, kernel.to(mask)[None, None])
    return (hits[:, 0] < 0.5).to(mask.dtype)


class HomographicAdaptation:
    """Aggregate a dense detector over random homographies; see the module docstring.

    ``detector``: an :class:`~superpoint_training.model.extractor.Extractor` (its ``dense_scores``, the
    project's one inference path) or any function (B, 1, H, W) -> (B, H, W) probabilities.
    ``chunk_size``: warped images per detector call (0: 256 on CUDA, 8 on the CPU).
    """

    def __init__(self, detector: Any, config: Mapping | None = None, chunk_size: int = 0):
        self.score: ScoreFunction = detector.dense_scores if hasattr(detector, "dense_scores") else detector
        self.config = merge_config(config)
        self.chunk_size = int(chunk_size)
        self.kernel = border_kernel(self.config["valid_border_margin"])
        self._pixels: dict[tuple, torch.Tensor] = {}

    def _pixel_grid(self, shape: tuple[int, int], device: torch.device) -> torch.Tensor:
        """(H*W, 3) homogeneous (x, y, 1) pixel centres, cached per shape and device."""
        key = (shape, str(device))
        if key not in self._pixels:
            h, w = shape
            ys, xs = torch.meshgrid(
                torch.arange(h, device=device, dtype=torch.float32),
                torch.arange(w, device=device, dtype=torch.float32),
                indexing="ij",
            )
            self._pixels[key] = torch.stack((xs, ys, torch.ones_like(xs)), dim=-1).reshape(-1, 3)
        return self._pixels[key]

    def _map(self, homography: torch.Tensor, shape: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Where each pixel goes under homography (N, 3, 3): grid_sample grids (N, H, W, 2) and
        the nearest-sampling validity (N, H, W) (the target pixel lies in the image)."""
        h, w = shape
        points = self._pixel_grid(shape, homography.device) @ homography.transpose(1, 2)  # (N, HW, 3)
        z = points[..., 2:]
        z = torch.where(z.abs() < 1e-8, torch.full_like(z, 1e-8), z)
        xy = points[..., :2] / z
        inside = (xy[..., 0] >= -0.5) & (xy[..., 0] < w - 0.5) & (xy[..., 1] >= -0.5) & (xy[..., 1] < h - 0.5)
        inside &= points[..., 2] > 0  # points behind the camera never come back
        scale = xy.new_tensor([2.0 / w, 2.0 / h])
        grid = ((xy + 0.5) * scale - 1).clamp(-2, 2)  # align_corners=False; clamp keeps far points finite
        return grid.reshape(-1, h, w, 2), inside.reshape(-1, h, w).float()

    def sample(self, batch_size: int, shape: tuple[int, int], device, generator=None) -> torch.Tensor:
        """(B, num - 1, 3, 3) random homographies (original to warped) with the configured sampler."""
        n = self.config["num"] - 1
        homographies = sample_homography(batch_size * n, shape, self.config["homographies"], generator, device)
        return homographies.reshape(batch_size, n, 3, 3)

    @torch.inference_mode()
    def __call__(
        self,
        images: torch.Tensor,
        generator: torch.Generator | None = None,
        homographies: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Aggregate over homographies. images (B, 1, H, W) float in [0, 1] on the detector's device.

        ``homographies`` (B, num - 1, 3, 3), original to warped, replaces the random ones (tests).
        Returns ``prob`` (B, H, W) the aggregated map, ``counts`` (B, H, W) how many warps saw each
        pixel (the identity included).
        """
        if images.ndim != 4 or images.shape[1] != 1:
            raise ValueError(f"expected images (B, 1, H, W), got {tuple(images.shape)}")
        b, _, h, w = images.shape
        device = images.device
        prob = self.score(images).float()
        counts = torch.ones_like(prob)
        use_max = self.config["aggregation"] == "max"
        total = peak = prob.clone()
        if homographies is None and self.config["num"] > 1:
            homographies = self.sample(b, (h, w), device, generator)
        if homographies is not None and homographies.shape[1] > 0:
            flat = homographies.to(device, torch.float64).reshape(-1, 3, 3)
            inverse = torch.linalg.inv(flat).float()  # one batched call, in float64 for accuracy
            flat = flat.float()
            owner = torch.arange(b, device=device).repeat_interleave(homographies.shape[1])
            chunk = self.chunk_size or (256 if device.type == "cuda" else 8)
            for start in range(0, flat.shape[0], chunk):
                index = owner[start : start + chunk]
                forward = flat[start : start + chunk]
                source_grid, source_ok = self._map(inverse[start : start + chunk], (h, w))
                warped = F.grid_sample(images[index], source_grid, mode="bilinear", align_corners=False)
                mask = erode(source_ok, self.kernel)
                warped_prob = self.score(warped).float() * mask
                back_grid, count = self._map(forward, (h, w))
                count = erode(count, self.kernel)
                projected = F.grid_sample(warped_prob[:, None], back_grid, mode="bilinear", align_corners=False)
                projected = projected[:, 0] * count
                counts.index_add_(0, index, count)
                if use_max:
                    flat_index = index[:, None].expand(-1, h * w)
                    peak.view(b, -1).scatter_reduce_(0, flat_index, projected.reshape(-1, h * w), "amax")
                else:
                    total.index_add_(0, index, projected)
        prob = peak if use_max else total / counts
        if self.config["filter_counts"]:
            prob = torch.where(counts >= self.config["filter_counts"], prob, torch.zeros_like(prob))
        return {"prob": prob, "counts": counts}

    @staticmethod
    def select(
        prob: torch.Tensor,
        detection_threshold: float = 0.015,
        nms_radius: int = 4,
        remove_borders: int = 0,
        top_k: int = 0,
    ) -> dict[str, torch.Tensor]:
        """Keypoints of aggregated maps (B, H, W): max-pool NMS, border removal, threshold, top-k
        (0: all). Returns keypoints (B, K, 2) xy, scores (B, K), valid (B, K) (a prefix per row)."""
        scores = remove_border_scores(nms(prob.float(), nms_radius), remove_borders)
        keypoints, values, valid = top_k_keypoints(scores, detection_threshold, top_k or None)
        return {"keypoints": keypoints, "scores": values, "valid": valid}


__all__ = ["DEFAULT_CONFIG", "HomographicAdaptation", "border_kernel", "erode", "merge_config"]
