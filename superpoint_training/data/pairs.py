"""Warped pairs for SuperPoint training, made on the device (the reference's ``warped_pair``).

Each batch of images with labels (``image`` (B, 1, H, W), ``keypoint_map`` (B, H, W), ``valid_mask``)
becomes a pair: the image is warped by a random homography (its keypoints moved, its valid mask
warped and eroded by ``valid_border_margin``), then each of the two images gets its own photometric
augmentation. The order is the reference's (``datasets/coco.py``): warp the clean image first, then
photometric changes on each image.

    pairs = WarpedPairs(data_config["warped_pair"], data_config["augmentation"]["photometric"])
    batch = pairs(batch)   # adds warped_image, warped_keypoint_map, warped_valid_mask, homography
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from .augmentation import PhotometricAugmentation
from .homographies import DEFAULT_CONFIG as HOMOGRAPHIC_DEFAULTS
from .homographies import (
    SAMPLER_DEFAULTS,
    HomographicAugmentation,
    compute_valid_mask,
    sample_homography,
    warp_images,
    warp_keypoint_maps,
)

# superpoint_coco.yaml's warped_pair section.
WARPED_PAIR: dict[str, Any] = {
    **HOMOGRAPHIC_DEFAULTS,
    "enable": True,
    "params": {
        **SAMPLER_DEFAULTS,
        "scaling_amplitude": 0.2,
        "perspective_amplitude_x": 0.2,
        "perspective_amplitude_y": 0.2,
        "patch_ratio": 0.85,
        "max_angle": 1.57,
        "allow_artifacts": True,
    },
    "valid_border_margin": 3,
}


def _finite_homographies(homography: torch.Tensor) -> torch.Tensor:
    """Replace non-finite or near-singular homographies by the identity (a NaN guard, no host sync)."""
    det = torch.linalg.det(homography.double()).abs()
    ok = torch.isfinite(homography).flatten(1).all(1) & (det > 1e-8)
    eye = torch.eye(3, device=homography.device, dtype=homography.dtype).expand_as(homography)
    return torch.where(ok[:, None, None], homography, eye)


class WarpedPairs:
    """See the module docstring. ``photometric`` None or disabled: no photometric changes."""

    def __init__(self, warped_pair: Mapping | None = None, photometric: Mapping | None = None):
        self.warp = HomographicAugmentation(dict(warped_pair or WARPED_PAIR), "warped_pair")
        self.photometric = PhotometricAugmentation(photometric) if photometric else None
        if self.photometric is not None and not self.photometric.enabled:
            self.photometric = None

    def __call__(self, batch: Mapping[str, torch.Tensor], generator: torch.Generator | None = None) -> dict:
        image = torch.nan_to_num(batch["image"].float(), nan=0.0).clamp_(0, 1)
        b, _, h, w = image.shape
        keypoint_map = batch["keypoint_map"]
        valid_mask = batch.get("valid_mask")
        if valid_mask is None:
            valid_mask = torch.ones((b, h, w), device=image.device)
        if self.warp.enabled:
            params = self.warp.config["params"]
            homography = _finite_homographies(sample_homography(b, (h, w), params, generator, image.device))
        else:
            homography = torch.eye(3, device=image.device).expand(b, 3, 3).clone()
        margin = self.warp.config["valid_border_margin"]
        warped = {
            "image": warp_images(image, homography),
            "keypoint_map": warp_keypoint_maps(keypoint_map, homography),
            "valid_mask": compute_valid_mask((h, w), homography, margin, valid_mask).to(valid_mask.dtype),
            "homography": homography,
        }
        out = dict(batch)
        both = torch.cat((image, warped["image"]))
        if self.photometric is not None:
            both = self.photometric(both, generator)
        out["image"], out["warped_image"] = both[:b], both[b:]
        out["keypoint_map"], out["valid_mask"] = keypoint_map, valid_mask
        out["warped_keypoint_map"] = warped["keypoint_map"]
        out["warped_valid_mask"] = warped["valid_mask"]
        out["homography"] = warped["homography"]
        return out
