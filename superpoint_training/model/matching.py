"""Descriptor matching on the device: mutual nearest neighbours, ratio test, distance threshold."""

from __future__ import annotations

import torch


def match_descriptors(
    descriptors0: torch.Tensor,
    descriptors1: torch.Tensor,
    *,
    mutual: bool = True,
    ratio: float | None = None,
    max_distance: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Match L2-normalised descriptors (N, D) and (M, D).

    Returns ``matches`` (K, 2) long indices into both sets and their L2 distances (K,). ``ratio``
    keeps matches whose distance is below ``ratio`` times the second-nearest distance (Lowe);
    ``max_distance`` bounds the L2 distance (in [0, 2] for unit descriptors).
    """
    device = descriptors0.device
    if descriptors0.shape[0] == 0 or descriptors1.shape[0] == 0:
        return torch.zeros(0, 2, dtype=torch.long, device=device), torch.zeros(0, device=device)
    similarity = descriptors0.float() @ descriptors1.float().t()
    distance = (2.0 - 2.0 * similarity).clamp_(min=0.0).sqrt_()
    k = 2 if ratio is not None and distance.shape[1] > 1 else 1
    nearest, index = distance.topk(k, dim=1, largest=False)
    keep = torch.ones(distance.shape[0], dtype=torch.bool, device=device)
    if mutual:
        back = distance.argmin(dim=0)
        keep &= back[index[:, 0]] == torch.arange(distance.shape[0], device=device)
    if k == 2:
        keep &= nearest[:, 0] < ratio * nearest[:, 1]
    if max_distance is not None:
        keep &= nearest[:, 0] <= max_distance
    rows = keep.nonzero()[:, 0]
    return torch.stack((rows, index[rows, 0]), dim=1), nearest[rows, 0]
