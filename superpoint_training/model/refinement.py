"""A learned sub-pixel refinement of keypoints: ``subpixel="learned"``.

The network scores every pixel, and the shape of the score map around a maximum says where the
point lies within its pixel; the parabola fits of :func:`~superpoint_training.model.keypoints.refine_keypoints`
read only the maximum and its four neighbours and assume a symmetric peak. This module reads a
(2r+1)^2 window of the log-scores around each keypoint (relative to the maximum), the position of
the keypoint within its 8x8 cell (the detector head scores each cell with its own softmax, so its
errors depend on that position), optionally a window of the image itself (``image_radius``: the
score map alone is a blurred trace of where the corner is), and the Gaussian fit's offset; a
perceptron with two hidden layers predicts a correction of that offset. Trained with the network frozen, from the known homography of image
pairs (:mod:`superpoint_training.training.refinement`); its last layer starts at zero, so an
untrained refinement is the Gaussian fit.

It runs in the post-processing, after the network, on the score map's device: one gather of the
windows and three small matrix products for all keypoints of the batch, any image size, traced by
the ONNX export like the rest of post-processing; the inference backends (ONNX Runtime, OpenVINO)
only run the network, so every backend gets it.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from .network import STRIDE

LOG_FLOOR = 1e-6  # scores are softmax probabilities; log(1e-6) = -13.8 bounds the window's inputs


class SubpixelRefinement(nn.Module):
    """Offsets of integer keypoints (B, K, 2) from the (B, H, W) score map before NMS.

    ``radius``: half side of the score window (3: 7x7). ``max_shift``: the largest move from the
    Gaussian fit on each axis (tanh-bounded), so a point never jumps to another maximum.
    """

    def __init__(self, radius: int = 3, hidden: int = 32, max_shift: float = 1.0, image_radius: int = 0):
        super().__init__()
        self.radius = int(radius)
        self.image_radius = int(image_radius)
        self.hidden = int(hidden)
        self.max_shift = float(max_shift)
        if self.radius < 1 or self.hidden < 1 or not self.max_shift > 0 or self.image_radius < 0:
            raise ValueError(f"refinement needs radius >= 1, hidden >= 1, max_shift > 0, got "
                             f"{radius}, {hidden}, {max_shift}")
        side = 2 * self.radius + 1
        self.mlp = nn.Sequential(
            nn.Linear(side * side + 2 * STRIDE + (2 * self.image_radius + 1) ** 2 * bool(self.image_radius) + 2,
                      self.hidden), nn.ReLU(),
            nn.Linear(self.hidden, self.hidden), nn.ReLU(),
            nn.Linear(self.hidden, 2),
        )
        nn.init.zeros_(self.mlp[-1].weight)
        nn.init.zeros_(self.mlp[-1].bias)

    def config(self) -> dict:
        config = {"radius": self.radius, "hidden": self.hidden, "max_shift": self.max_shift}
        return {**config, "image_radius": self.image_radius} if self.image_radius else config

    def features(self, scores: torch.Tensor, keypoints: torch.Tensor, image: torch.Tensor | None = None) -> torch.Tensor:
        """(B, K, F) inputs of the perceptron: the log-score window minus the log-score at the
        keypoint, the one-hot column and row within the cell, with ``image_radius`` the image window
        (zero mean, unit contrast), and last the Gaussian fit's offset."""
        from .keypoints import refine_keypoints  # keypoints imports this module

        x = keypoints[..., 0].long().clamp(0, scores.shape[-1] - 1)
        y = keypoints[..., 1].long().clamp(0, scores.shape[-2] - 1)
        logs = windows(scores.float(), x, y, self.radius).clamp(min=LOG_FLOOR).log()
        logs = logs - logs[..., logs.shape[-1] // 2 :][..., :1]
        parts = [logs, torch.cat((F.one_hot(x % STRIDE, STRIDE), F.one_hot(y % STRIDE, STRIDE)), dim=-1).to(logs.dtype)]
        if self.image_radius:
            if image is None:
                raise ValueError("this refinement reads the image: pass the network's input image")
            patch = windows(image.reshape(image.shape[0], *image.shape[-2:]).float(), x, y, self.image_radius)
            patch = patch - patch.mean(-1, keepdim=True)
            parts.append(patch / (patch.pow(2).mean(-1, keepdim=True).sqrt() + 0.02))
        parts.append(refine_keypoints(scores.float(), keypoints.float(), "gaussian") - keypoints.float())
        return torch.cat(parts, dim=-1)

    def offsets(self, features: torch.Tensor) -> torch.Tensor:
        """(…, F) features to (…, 2) offsets from the integer pixel: the Gaussian fit plus the
        learned correction (at most ``max_shift`` per axis)."""
        return features[..., -2:] + self.max_shift * torch.tanh(self.mlp(features))

    def forward(self, scores: torch.Tensor, keypoints: torch.Tensor, image: torch.Tensor | None = None) -> torch.Tensor:
        """Refined keypoints (B, K, 2), same dtype as ``keypoints``."""
        if keypoints.shape[1] == 0:
            return keypoints
        return keypoints + self.offsets(self.features(scores, keypoints, image)).to(keypoints.dtype)


def windows(values: torch.Tensor, x: torch.Tensor, y: torch.Tensor, radius: int) -> torch.Tensor:
    """The (2r+1)^2 windows of (B, H, W) ``values`` around integer pixels (x, y) (B, K), row-major,
    edges repeated: (B, K, (2r+1)^2). One gather, no loop."""
    b, h, w = values.shape
    r = int(radius)
    padded = F.pad(values[:, None], (r, r, r, r), mode="replicate")[:, 0].reshape(b, -1)
    row = w + 2 * r
    steps = torch.arange(-r, r + 1, device=values.device)
    offsets = (steps[:, None] * row + steps[None, :]).reshape(-1)
    centre = (y + r) * row + (x + r)
    return padded.gather(1, (centre[..., None] + offsets).reshape(b, -1)).reshape(*centre.shape, offsets.numel())


def refinement_to_dict(refinement: SubpixelRefinement) -> dict:
    """What a weights file stores: the configuration and the parameters (on the CPU)."""
    return {"config": refinement.config(), "state": {k: v.detach().cpu() for k, v in refinement.state_dict().items()}}


def refinement_from_dict(stored: Mapping) -> SubpixelRefinement:
    """The refinement a weights file stores (:func:`refinement_to_dict`), in eval mode."""
    refinement = SubpixelRefinement(**stored["config"])
    refinement.load_state_dict(stored["state"])
    return refinement.eval().requires_grad_(False)
