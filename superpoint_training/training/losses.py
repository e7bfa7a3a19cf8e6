"""SuperPoint's training losses (DeTone et al., 2018; the settings of rpautrat's reference code).

- :func:`detector_loss`: softmax cross-entropy over the 65 bins of each 8x8 cell. Labels come from
  the full-resolution keypoint map by space-to-depth, with a dustbin for cells without a keypoint;
  a cell with several keypoints is labelled with one of them picked at random. A cell counts only
  when all its 64 pixels are valid; the loss is the mean over valid cells.
- :func:`descriptor_loss`: the hinge loss over all pairs of cells of an image and its warp:
  ``lambda_d * s * max(0, m_p - d) + (1 - s) * max(0, d - m_n)`` with ``s = 1`` when the warped
  centre (8k + 4) of a cell of image 0 lies within 7.5 px of the centre of the cell of image 1;
  averaged over the valid area of image 1. ``d`` is, with ``similarity="cosine"``, the dot product
  of the L2-normalised descriptors (the paper, and the reference before 2019-11-25); with
  ``similarity="reference"`` (the reference's ``descriptor_loss`` since its commit "Normalization of
  descriptors in loss"), those dot products go through a ReLU, then the (Hc Wc) x (Hc Wc) tensor of
  each image is L2-normalised over the warped image's cells, then over the first image's cells
  (:func:`reference_similarity`). The reference's loss weights (lambda_d 800, lambda_loss 1 of the
  v6 weights; 0.05 / 10000 of its config) were tuned for the second.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..data.geometry import warp_points
from ..model.network import STRIDE

DUSTBIN = STRIDE**2


def space_to_depth(x: torch.Tensor, cell: int = STRIDE) -> torch.Tensor:
    """(B, H, W) to (B, cell*cell, H/cell, W/cell); channel ``c = dy * cell + dx`` (pixel_unshuffle order)."""
    return F.pixel_unshuffle(x[:, None], cell)


def detector_labels(keypoint_map: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """(B, H, W) 0/1 keypoint map to (B, H/8, W/8) int64 labels in [0, 64] (64 = dustbin, no keypoint).

    Ties between several keypoints of a cell are broken at random (uniform noise, as the reference).
    """
    cells = space_to_depth((keypoint_map > 0).to(torch.float32))
    b, _, hc, wc = cells.shape
    dustbin = torch.ones((b, 1, hc, wc), device=cells.device)
    scores = torch.cat((2 * cells, dustbin), dim=1)
    noise = torch.rand(scores.shape, device=cells.device, generator=generator)
    return (scores + 0.1 * noise).argmax(dim=1)


def cell_valid_mask(valid_mask: torch.Tensor | None, shape: tuple[int, int, int]) -> torch.Tensor:
    """(B, H, W) pixel mask to a (B, H/8, W/8) float cell mask: 1 where all 64 pixels are valid."""
    if valid_mask is None:
        return torch.ones(shape)
    return (space_to_depth((valid_mask > 0).to(torch.float32)).amin(dim=1) > 0).to(torch.float32)


def detector_loss(
    logits: torch.Tensor,
    keypoint_map: torch.Tensor,
    valid_mask: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Mean 65-bin cross-entropy over valid cells.

    logits (B, 65, Hc, Wc); keypoint_map (B, 8 Hc, 8 Wc) 0/1; valid_mask (B, 8 Hc, 8 Wc) or None.
    Returns a float32 scalar (0 when no cell is valid).
    """
    labels = detector_labels(keypoint_map, generator)
    b, hc, wc = labels.shape
    valid = cell_valid_mask(valid_mask, (b, hc, wc)).to(logits.device)
    per_cell = F.cross_entropy(logits.float(), labels, reduction="none")
    return (per_cell * valid).sum() / valid.sum().clamp(min=1.0)


def cell_centres(hc: int, wc: int, device: torch.device | str | None = None) -> torch.Tensor:
    """(Hc*Wc, 2) (x, y) pixel centres 8k + 4 of the cells, row-major (the reference's convention)."""
    ys, xs = torch.meshgrid(torch.arange(hc, device=device), torch.arange(wc, device=device), indexing="ij")
    return torch.stack((xs, ys), dim=-1).reshape(-1, 2).to(torch.float32) * STRIDE + STRIDE // 2


SIMILARITIES = ("cosine", "reference")


def tf_l2_normalize(x: torch.Tensor, dim: int | tuple[int, ...]) -> torch.Tensor:
    """``x / sqrt(max(sum(x^2), 1e-12))`` over ``dim``: TensorFlow's ``l2_normalize``, as the reference
    uses it (the floor is on the squared norm, where ``F.normalize`` floors the norm)."""
    return x * torch.rsqrt(x.pow(2).sum(dim=dim, keepdim=True).clamp(min=1e-12))


def reference_similarity(dot: torch.Tensor) -> torch.Tensor:
    """(B, N0, N1) cosines to the reference's similarities: ReLU, L2-normalise over the cells of
    image 1 (dim 2), then over the cells of image 0 (dim 1)."""
    return tf_l2_normalize(tf_l2_normalize(dot.clamp(min=0), dim=2), dim=1)


def descriptor_loss(
    descriptors: torch.Tensor,
    warped_descriptors: torch.Tensor,
    homography: torch.Tensor,
    warped_valid_mask: torch.Tensor | None = None,
    lambda_d: float = 250.0,
    positive_margin: float = 1.0,
    negative_margin: float = 0.2,
    positive_distance: float = STRIDE - 0.5,
    similarity: str = "cosine",
) -> torch.Tensor:
    """Hinge loss between the dense descriptors of an image and of its warp.

    descriptors, warped_descriptors (B, D, Hc, Wc) raw head outputs (normalised here);
    homography (B, 3, 3) maps (x, y) pixels of image 0 to image 1 (:mod:`..data.geometry`);
    warped_valid_mask (B, H, W) of image 1 or None; ``similarity`` one of :data:`SIMILARITIES`
    (module docstring). Returns a float32 scalar.
    Memory grows as (Hc Wc)^2 per image: 90 MB for a batch of 2 at 240x320 in float32.
    """
    if similarity not in SIMILARITIES:
        raise ValueError(f"similarity must be one of {SIMILARITIES}, got {similarity!r}")
    b, _, hc, wc = descriptors.shape
    centres = cell_centres(hc, wc, descriptors.device)  # (N, 2)
    warped = warp_points(centres[None].expand(b, -1, -1), homography.to(torch.float32))  # (B, N, 2)
    distance = torch.cdist(warped, centres[None].expand(b, -1, -1))  # (B, N0, N1)
    s = (distance <= positive_distance).to(torch.float32)
    normalize = tf_l2_normalize if similarity == "reference" else F.normalize
    d0 = normalize(descriptors.float().flatten(2), dim=1)  # (B, D, N0)
    d1 = normalize(warped_descriptors.float().flatten(2), dim=1)  # (B, D, N1)
    dot = d0.transpose(1, 2) @ d1  # (B, N0, N1)
    if similarity == "reference":
        dot = reference_similarity(dot)
    loss = lambda_d * s * (positive_margin - dot).clamp(min=0) + (1 - s) * (dot - negative_margin).clamp(min=0)
    valid = cell_valid_mask(warped_valid_mask, (b, hc, wc)).to(loss.device).reshape(b, 1, hc * wc)
    normalization = valid.sum() * (hc * wc)
    return (loss * valid).sum() / normalization.clamp(min=1.0)


def sample_correspondences(
    keypoint_map: torch.Tensor,
    homography: torch.Tensor,
    warped_valid_mask: torch.Tensor,
    num_samples: int,
    keypoint_fraction: float = 0.75,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Points of image 0 and their warps in image 1, for :func:`sampled_descriptor_loss`.

    ``num_samples`` points per image, drawn without replacement: about ``keypoint_fraction`` of them
    among the labelled keypoints (where descriptors are used), the rest anywhere in the image.
    Returns points0, points1 (B, N, 2) (x, y) pixels and valid (B, N) bool: the warped point lies in
    the valid area of image 1.
    """
    b, h, w = keypoint_map.shape
    flat = (keypoint_map > 0).flatten(1).float()  # (B, H*W)
    n_keypoints = flat.sum(1, keepdim=True).clamp(min=1.0)
    # weights: the labelled pixels share keypoint_fraction of the mass, the others the rest
    weights = flat * keypoint_fraction / n_keypoints + (1 - flat) * (1 - keypoint_fraction) / (h * w)
    index = torch.multinomial(weights, num_samples, replacement=False, generator=generator)  # (B, N)
    points0 = torch.stack(((index % w).float(), torch.div(index, w, rounding_mode="floor").float()), dim=-1)
    points1 = warp_points(points0, homography.to(torch.float32))
    rounded = points1.round().long()
    inside = (rounded[..., 0] >= 0) & (rounded[..., 0] < w) & (rounded[..., 1] >= 0) & (rounded[..., 1] < h)
    clamped_x = rounded[..., 0].clamp(0, w - 1)
    clamped_y = rounded[..., 1].clamp(0, h - 1)
    in_mask = warped_valid_mask.flatten(1).gather(1, clamped_y * w + clamped_x) > 0
    return points0, points1, inside & in_mask


def sampled_descriptor_loss(
    descriptors: torch.Tensor,
    warped_descriptors: torch.Tensor,
    points0: torch.Tensor,
    points1: torch.Tensor,
    valid: torch.Tensor,
    temperature: float = 0.1,
    min_distance: float = 4.0,
) -> torch.Tensor:
    """Contrastive (InfoNCE) loss over sampled correspondences; a faster-converging alternative.

    Not the reference's loss: each sampled point of image 0 must pick its own warp among all sampled
    points of image 1 (and the other way round), by softmax over descriptor similarities divided by
    ``temperature``. Descriptors are sampled bilinearly where the points lie, as at inference, so the
    loss trains the sub-cell positions the extractor uses, on a few hundred points instead of all
    (Hc Wc)^2 pairs of cells. Points of image 1 closer than ``min_distance`` pixels to the positive are
    not counted as negatives. Returns a float32 scalar (0 when fewer than two points are valid).
    """
    from ..model.keypoints import sample_descriptors

    d0 = sample_descriptors(descriptors.float(), points0, "cell")  # (B, N, D)
    d1 = sample_descriptors(warped_descriptors.float(), points1, "cell")
    logits = d0 @ d1.transpose(1, 2) / temperature  # (B, N, N)
    n = logits.shape[-1]
    eye = torch.eye(n, dtype=torch.bool, device=logits.device)
    close = (torch.cdist(points1, points1) < min_distance) & ~eye  # same place in image 1: not a negative
    pair_valid = valid[:, :, None] & valid[:, None, :]
    masked = logits.masked_fill(close | ~pair_valid, float("-inf"))
    masked = torch.where(eye & pair_valid, logits, masked)
    target = torch.arange(n, device=logits.device).expand(logits.shape[0], n)
    rows = torch.where(valid, F.cross_entropy(masked.transpose(1, 2).nan_to_num(neginf=-1e4), target,
                                              reduction="none"), 0.0)
    cols = torch.where(valid, F.cross_entropy(masked.nan_to_num(neginf=-1e4), target, reduction="none"), 0.0)
    count = valid.sum().clamp(min=1).float()
    return 0.5 * (rows.sum() + cols.sum()) / count
