"""Sub-pixel keypoints from the image's gradients: ``subpixel="corner"``.

The score map locates a corner to about a pixel (the detector head scores 8x8 cells, and the
parabola fits of :func:`~superpoint_training.model.keypoints.refine_keypoints` read five of its
values); the image itself says where the corner is. At a corner q, the gradient g at every nearby
point x is orthogonal to x - q (on an edge through q the gradient is normal to the edge; in a flat
area it is zero), so q minimises sum_x w(x) (g(x)^T (x - q))^2: the weighted least-squares meeting
point of the edge lines in a window (Foerstner and Guelch, 1987; OpenCV's ``cornerSubPix`` iterates
the same equations). Each iteration solves the 2x2 system (sum w g g^T) q = sum w g g^T x around the
current position and moves there. A ridge (a lone edge) leaves its direction along the edge
undetermined: a small damping term, relative to the window's gradient energy, keeps the point where
it was along that direction. Where noise or low contrast outweigh the corner, the solution wanders
differently in each image of a pair: a second damping term, the gradient energy of a window of pure
noise (``noise``: its standard deviation on intensities in [0, 1]), makes each iteration take only
a fraction of such a step. Every point stays within ``max_shift`` pixels of where the network put it.

It runs in the post-processing on the device of the image, for all keypoints of the batch at once:
the gradient products once per image, then per iteration one ``grid_sample`` of them at the
(2r+1)^2 window of every keypoint, one small matrix product and a closed-form 2x2 solve. The
defaults: a 7x7 window, 5 iterations, moves up to 3 px (the window's half side), measured on the
demo's photo (``benchmarks/bench_localisation.py``); ``noise`` 0.06, the smallest floor that kept
homography estimation under illumination changes level with the Gaussian fit on warped pairs of
training photos (without it, e=3 under illumination changes fell from 0.84 to 0.68). HISTORY.md of
the weights has the figures. Any image size; traced by the ONNX export like
the rest of post-processing (``grid_sample`` is already there for the descriptors), so every
backend gets it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

CORNER_DEFAULTS = {"radius": 3, "iterations": 5, "max_shift": 3.0, "damping": 0.02, "noise": 0.06}


def _window_offsets(radius: int, device: torch.device) -> torch.Tensor:
    """(S, S, 2) (dx, dy) offsets of the (2r+1)^2 window around a point."""
    steps = torch.arange(-radius, radius + 1, device=device, dtype=torch.float32)
    dy, dx = torch.meshgrid(steps, steps, indexing="ij")
    return torch.stack((dx, dy), dim=-1)


def gradient_products(image: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) gx^2, gx gy, gy^2 of a (B, 1, H, W) image: central differences, zero on the
    outermost rows and columns (where one neighbour is missing)."""
    image = image.float()[:, 0]
    products = image.new_empty((image.shape[0], 3, *image.shape[-2:]))  # one buffer: no padded copies
    gx = 0.5 * (image[..., :, 2:] - image[..., :, :-2])  # (B, H, W - 2)
    gy = 0.5 * (image[..., 2:, :] - image[..., :-2, :])  # (B, H - 2, W)
    products[:, 0, :, 1:-1] = gx * gx
    products[:, 1, 1:-1, 1:-1] = gx[:, 1:-1] * gy[..., 1:-1]
    products[:, 2, 1:-1, :] = gy * gy
    height, width = products.shape[-2:]
    products[:, :2, :, 0::max(width - 1, 1)] = 0  # gx is zero on the outermost columns
    products[:, 1:, 0::max(height - 1, 1), :] = 0  # gy on the outermost rows
    return products


def _sample_windows(maps: torch.Tensor, centres: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """Bilinear samples of (B, C, H, W) maps at the (N, 2) pixel ``offsets`` around (B, K, 2)
    ``centres`` (pixel centres at integers), edges repeated: (B, C, K, N). The grid is built in
    ``grid_sample``'s [-1, 1] units directly: one addition over the (B, K, N) points."""
    h, w = maps.shape[-2:]
    scale = 2 / centres.new_tensor([w, h])
    grid = ((centres + 0.5) * scale - 1)[:, :, None] + offsets * scale
    return F.grid_sample(maps, grid, mode="bilinear", padding_mode="border", align_corners=False)


def refine_corners(image: torch.Tensor, keypoints: torch.Tensor, radius: int = CORNER_DEFAULTS["radius"],
                   iterations: int = CORNER_DEFAULTS["iterations"], max_shift: float = CORNER_DEFAULTS["max_shift"],
                   damping: float = CORNER_DEFAULTS["damping"], noise: float = CORNER_DEFAULTS["noise"]) -> torch.Tensor:
    """Keypoints (B, K, 2) moved to the meeting point of the image's edge lines around them.

    ``image``: the (B, 1, H, W) image the keypoints are in, intensities in [0, 1] (with ``noise`` 0
    the solve is invariant to their scale). ``radius``: half side of the window (3: 7x7, Gaussian-weighted). The gradient
    products g g^T are computed once per pixel and interpolated bilinearly at the window's points.
    ``max_shift``: the largest move from the input position on each axis. ``damping``: the fraction
    of the window's gradient energy added to the system's diagonal, so that a direction with little
    gradient (along an edge, a flat patch) does not move. ``noise``: the standard deviation of the
    image's noise, on intensities in [0, 1] (what the network sees); windows whose gradient energy is
    near that of pure noise move only part of the way. Returns the same dtype as ``keypoints``.
    """
    if radius < 1 or iterations < 0 or not max_shift > 0 or damping < 0:
        raise ValueError(f"corner refinement needs radius >= 1, iterations >= 0, max_shift > 0, damping >= 0; "
                         f"got {radius}, {iterations}, {max_shift}, {damping}")
    if image.ndim != 4 or image.shape[1] != 1 or image.shape[0] != keypoints.shape[0]:
        raise ValueError(f"expected a (B, 1, H, W) image for keypoints of batch {keypoints.shape[0]}, "
                         f"got {tuple(image.shape)}")
    if keypoints.shape[1] == 0 or iterations == 0:
        return keypoints
    products = gradient_products(image)
    start = keypoints.float()
    offsets = _window_offsets(radius, image.device).reshape(-1, 2)  # (N, 2)
    sigma = 0.5 * (radius + 1)
    weight = torch.exp(-(offsets ** 2).sum(-1) / (2 * sigma * sigma))  # (N,)
    # per window point: its weight, and its weight times its offset (for the right-hand side)
    weights = torch.stack((weight, weight * offsets[:, 0], weight * offsets[:, 1]), dim=-1)  # (N, 3)
    floor = weight.sum() * noise * noise + 1e-12  # the gradient energy of a window of pure noise
    position = start
    for _ in range(iterations):
        sampled = _sample_windows(products, position, offsets)  # (B, 3, K, N)
        sums = sampled @ weights  # (B, 3, K, 3): [product][w, w dx, w dy]
        wxx, wxy, wyy = sums[:, 0, :, 0], sums[:, 1, :, 0], sums[:, 2, :, 0]
        # right-hand side relative to the current position: sum w g g^T (x - position)
        bx = sums[:, 0, :, 1] + sums[:, 1, :, 2]
        by = sums[:, 1, :, 1] + sums[:, 2, :, 2]
        ridge = damping * (wxx + wyy) + floor
        axx, ayy = wxx + ridge, wyy + ridge
        det = axx * ayy - wxy * wxy
        step = torch.stack(((ayy * bx - wxy * by) / det, (axx * by - wxy * bx) / det), dim=-1)
        position = start + (position + step - start).clamp(-max_shift, max_shift)
    return position.to(keypoints.dtype)
