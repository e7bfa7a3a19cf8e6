"""The one device function: whole image -> network -> post-processing -> coordinates back.

:class:`SuperPointPipeline` is what the Extractor (``extract_batch``), homographic adaptation
(``dense_scores``), the ONNX export and training validation run. As in the publishers' code
(SuperGlue's ``superpoint.py``, rpautrat's ``superpoint_pytorch.py``) the network sees the whole
image, unpadded: its max-pools floor, so the score map covers the first 8*floor(H/8) rows and
8*floor(W/8) columns and no keypoint comes from the strip beyond them; descriptors are sampled
with the normalisation of that descriptor map.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .corner_refinement import refine_corners
from .keypoints import DetectionConfig, detect, logits_to_scores, merge_levels, sample_level_descriptors
from .network import STRIDE

GRAY_WEIGHTS = (0.299, 0.587, 0.114)  # ITU-R BT.601, as rpautrat's port converts RGB
# image (B, 1, H, W) -> (logits (B, 65, H/8, W/8), raw dense descriptors (B, D, H/8, W/8) or None)
Network = Callable[..., tuple[torch.Tensor, torch.Tensor | None]]


def covered_size(height: int, width: int) -> tuple[int, int]:
    """The part of an (H, W) image that the score map covers: (8*floor(H/8), 8*floor(W/8))."""
    return STRIDE * (int(height) // STRIDE), STRIDE * (int(width) // STRIDE)


def scaled_size(size: tuple[int, int], factor: float) -> tuple[int, int]:
    """(H, W) times ``factor``, rounded, at least one pixel per side (``size`` itself at 1: a traced
    export keeps its shapes symbolic)."""
    if factor == 1.0:
        return tuple(size)
    return tuple(max(1, round(int(side) * factor)) for side in size)


def resample(batch: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(B, C, H, W) at ``size`` (antialiased bilinear: no aliasing when shrinking); the batch itself at its size."""
    if tuple(batch.shape[-2:]) == tuple(size):
        return batch
    return F.interpolate(batch, size=size, mode="bilinear", align_corners=False, antialias=True)


def to_input_pixels(keypoints: torch.Tensor, level_size: tuple[int, int], input_size: tuple[int, int]) -> torch.Tensor:
    """Keypoints (B, K, 2) of an image of ``level_size`` (H, W) in the pixels of ``input_size``:
    pixel centres scale about the image's corner."""
    height, width = level_size
    if tuple(input_size) == (height, width):
        return keypoints
    factor = keypoints.new_tensor([input_size[1] / width, input_size[0] / height], dtype=torch.float32)
    return (keypoints + 0.5) * factor - 0.5


class SuperPointPipeline(nn.Module):
    """(B, 1, H, W) gray (or (B, 3, H, W) RGB) float in [0, 1] -> batched keypoints.

    ``network``: a :class:`~superpoint_training.model.network.SuperPoint` or any callable with its
    signature (an inference backend). ``dtype`` / ``channels_last``: how the image is handed to a
    torch network (its precision and memory layout); post-processing always runs in float32.
    ``resize``: resize so that the longer side has that many pixels before the network; keypoints
    come back in the input's pixels.
    """

    def __init__(
        self,
        network: Network,
        config: DetectionConfig,
        *,
        resize: int | None = None,
        dtype: torch.dtype = torch.float32,
        channels_last: bool = False,
        descriptor_dim: int | None = None,
    ):
        super().__init__()
        self.network = network
        self.config = config
        self.resize = resize
        self.dtype = dtype
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.descriptor_dim = network.config.descriptor_dim if descriptor_dim is None else descriptor_dim

    def to_gray(self, batch: torch.Tensor) -> torch.Tensor:
        if batch.ndim != 4 or batch.shape[1] not in (1, 3):
            raise ValueError(f"expected a (B, 1 or 3, H, W) batch, got {tuple(batch.shape)}")
        if batch.shape[1] == 3:
            weights = batch.new_tensor(GRAY_WEIGHTS).view(1, 3, 1, 1)
            batch = (batch * weights).sum(1, keepdim=True)
        return batch

    def run_network(self, batch: torch.Tensor, with_descriptors: bool = True):
        """The network on the whole (B, 1, H, W) image (no padding; H, W >= 8)."""
        image = batch.to(self.dtype).contiguous(memory_format=self.memory_format)
        return self.network(image, with_descriptors=with_descriptors)

    def forward(self, batch: torch.Tensor) -> dict[str, torch.Tensor]:
        """Returns the dict of :func:`superpoint_training.model.keypoints.detect`: keypoints (B, K, 2)
        (x, y) in the input's pixels, scores (B, K), valid (B, K), descriptors (B, K, D)."""
        gray = batch = self.to_gray(batch)
        input_size = tuple(batch.shape[-2:])
        if self.resize is not None and max(input_size) != self.resize:
            batch = resample(batch, scaled_size(input_size, self.resize / max(input_size)))
        levels = self.pyramid(batch)
        if not levels:
            return self.empty(batch.shape[0], batch.device)
        if len(levels) == 1:
            output = self.detect_level(levels[0][1], input_size)
        else:
            output = self.detect_pyramid(levels, input_size)
        if self.config.subpixel == "corner":  # on the input's own pixels, whatever level found the point
            output["keypoints"] = refine_corners(gray, output["keypoints"])
        return output

    def pyramid(self, batch: torch.Tensor) -> list[tuple[float, torch.Tensor]]:
        """(scale, the batch at that scale) for each of ``config.scales`` (antialiased bilinear; the
        batch itself at scale 1); levels under one cell left out."""
        sizes = [(factor, scaled_size(batch.shape[-2:], factor)) for factor in self.config.scales]
        return [(factor, resample(batch, size)) for factor, size in sizes if min(size) >= STRIDE]

    def detect_level(self, level: torch.Tensor, input_size: tuple[int, int]) -> dict[str, torch.Tensor]:
        """Network and post-processing on one image size; keypoints in the pixels of ``input_size``."""
        logits, dense = self.run_network(level)
        output = detect(logits, dense, self.config, image=level)  # a learned refinement may read the image
        output["keypoints"] = to_input_pixels(output["keypoints"], level.shape[-2:], input_size)
        return output

    def detect_pyramid(self, levels: list[tuple[float, torch.Tensor]], input_size: tuple[int, int]) -> dict[str, torch.Tensor]:
        """:meth:`detect_level` on every level, merged (:func:`merge_levels`). Descriptors are sampled
        after the merge, each from its level's map, for the points kept only: the merge keeps
        ``max_keypoints`` of the levels' ``max_keypoints`` each, so sampling every level's points
        did the work of three levels for one's worth of descriptors."""
        outputs, dense_maps = [], []
        for index, (_, level) in enumerate(levels):
            logits, dense = self.run_network(level)
            output = detect(logits, None, self.config, image=level)  # descriptors: after the merge
            output["level_keypoints"] = output["keypoints"]
            output["level"] = torch.full_like(output["valid"], index, dtype=torch.int32)
            output["keypoints"] = to_input_pixels(output["keypoints"], level.shape[-2:], input_size)
            outputs.append(output)
            dense_maps.append(dense)
        merged = merge_levels(outputs, self.config.max_keypoints, weights=[factor for factor, _ in levels])
        level_keypoints, level = merged.pop("level_keypoints"), merged.pop("level")
        if dense_maps[0] is not None:
            merged["descriptors"] = sample_level_descriptors(dense_maps, level_keypoints, level,
                                                             self.config.descriptor_sampling)
        return merged

    def dense_scores(self, batch: torch.Tensor) -> torch.Tensor:
        """Keypoint probabilities before NMS, (B, 1, H, W) -> (B, H, W) float32 (softmax, dustbin
        dropped, depth-to-space); zero outside the covered 8*floor(H/8) x 8*floor(W/8) area.
        No resize: homographic adaptation aggregates these maps at the input's size."""
        if batch.ndim != 4 or batch.shape[1] != 1:
            raise ValueError(f"expected a (B, 1, H, W) batch, got {tuple(batch.shape)}")
        height, width = batch.shape[-2:]
        if min(height, width) < STRIDE:
            return batch.new_zeros((batch.shape[0], height, width), dtype=torch.float32)
        logits, _ = self.run_network(batch, with_descriptors=False)
        scores = logits_to_scores(logits)
        return F.pad(scores, (0, width - scores.shape[-1], 0, height - scores.shape[-2]))

    def empty(self, batch_size: int, device: torch.device | str) -> dict[str, torch.Tensor]:
        """The output for images smaller than one cell: no keypoint (K zero entries in fixed-K mode)."""
        k = self.config.max_keypoints if self.config.fixed_keypoints else 0
        zeros = torch.zeros(batch_size, k, device=device)
        return {
            "keypoints": zeros[..., None].expand(-1, -1, 2).contiguous(),
            "scores": zeros,
            "valid": zeros.bool(),
            "descriptors": torch.zeros(batch_size, k, self.descriptor_dim, device=device),
        }
