"""Homographic augmentation: the reference's random homography sampler and batched warps on the device.

``sample_homography`` follows rpautrat/SuperPoint (``models/homographies.py::sample_homography``, MIT):
a patch of the image (``patch_ratio`` of each side, centred) is perturbed in perspective, scaled
(``n_scales`` truncated-normal scales tried), translated and rotated (``n_angles`` angles tried);
without ``allow_artifacts`` only candidates that keep the patch inside the image are kept. The
warped image is that patch stretched to the full image. Truncated normals have std = amplitude / 2
and are cut at two standard deviations (TensorFlow's ``truncated_normal``). The code is our own.

Conventions (as in ``geometry.py``): points are (x, y) pixels with (0, 0) the centre of the top-left
pixel; the returned H maps ORIGINAL image points to WARPED image points (x_w ~ H x), the inverse of
the reference's (which maps output to input as ``tf.contrib.image.transform`` wants). The unit square
of the reference maps to the image's outer edges, [-0.5, W - 0.5] x [-0.5, H - 0.5]. As in the
reference, the patch is perturbed in those normalised coordinates, so a "rotation" of a non-square
image is a rotation plus a slight anisotropic stretch in pixels.

    H = sample_homography(64, (120, 160), {"patch_ratio": 0.8}, device="cuda")
    warped = warp_images(images, H)                      # (B, C, H, W)
    batch = HomographicAugmentation(config)(batch)       # image, keypoint_map, valid_mask (+ homography)
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import cv2
import torch
import torch.nn.functional as F

from ..common.config import merge_strict
from .geometry import warp_points

# The reference function's defaults.
SAMPLER_DEFAULTS: dict[str, Any] = {
    "translation": True,
    "rotation": True,
    "scaling": True,
    "perspective": True,
    "n_scales": 5,
    "n_angles": 25,
    "scaling_amplitude": 0.1,
    "perspective_amplitude_x": 0.1,
    "perspective_amplitude_y": 0.1,
    "patch_ratio": 0.5,
    "max_angle": math.pi / 2,
    "allow_artifacts": False,
    "translation_overflow": 0.0,
    # Not in the reference: the share of samples whose rotation is drawn from +-pi instead of
    # +-max_angle. A mix keeps upright views in training while the descriptors learn full turns.
    "full_rotation_probability": 0.0,
}

# magic-point_shapes.yaml's homographic section.
SHAPES_HOMOGRAPHIC: dict[str, Any] = {
    "enable": True,
    "params": {
        **SAMPLER_DEFAULTS,
        "scaling_amplitude": 0.2,
        "perspective_amplitude_x": 0.2,
        "perspective_amplitude_y": 0.2,
        "patch_ratio": 0.8,
        "max_angle": 1.57,
        "allow_artifacts": True,
        "translation_overflow": 0.05,
    },
    "valid_border_margin": 2,
}

DEFAULT_CONFIG: dict[str, Any] = {"enable": True, "params": SAMPLER_DEFAULTS, "valid_border_margin": 0}


def _truncated_normal(shape, mean: float, std: float, generator: torch.Generator | None) -> torch.Tensor:
    """Normal samples cut at +-2 std (inverse-CDF sampling, float64 on the CPU)."""
    if std == 0:
        return torch.full(shape, float(mean), dtype=torch.float64)
    low = 0.5 * (1 + math.erf(-2 / math.sqrt(2)))
    u = torch.rand(shape, generator=generator, dtype=torch.float64, device=_gen_device(generator)).cpu()
    u = low + u * (1 - 2 * low)
    return mean + std * math.sqrt(2) * torch.erfinv(2 * u - 1)


def _gen_device(generator: torch.Generator | None):
    return generator.device if generator is not None else "cpu"


def _uniform(shape, generator: torch.Generator | None) -> torch.Tensor:
    return torch.rand(shape, generator=generator, dtype=torch.float64, device=_gen_device(generator)).cpu()


def _pick(valid: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """A random index among the True entries of each row of ``valid`` (B, K); index 0 if none is."""
    scores = (_uniform(valid.shape, generator) + 1) * valid
    return scores.argmax(dim=1)


def _inside(points: torch.Tensor) -> torch.Tensor:
    """Whether all points (..., 4, 2) lie in the unit square [0, 1)."""
    return ((points >= 0) & (points < 1)).flatten(-2).all(-1)


def homography_from_points(src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
    """The (B, 3, 3) homographies mapping 4 points src (B, 4, 2) to dst (B, 4, 2) exactly."""
    src, dst = src.double(), dst.double()
    zeros, ones = torch.zeros_like(src[..., 0]), torch.ones_like(src[..., 0])
    sx, sy, dx, dy = src[..., 0], src[..., 1], dst[..., 0], dst[..., 1]
    rows_x = torch.stack([sx, sy, ones, zeros, zeros, zeros, -sx * dx, -sy * dx], -1)
    rows_y = torch.stack([zeros, zeros, zeros, sx, sy, ones, -sx * dy, -sy * dy], -1)
    a = torch.cat([rows_x, rows_y], dim=1)  # (B, 8, 8)
    b = torch.cat([dx, dy], dim=1)
    h = torch.linalg.solve(a, b)
    return torch.cat([h, torch.ones_like(h[:, :1])], dim=1).reshape(-1, 3, 3)


def merge_sampler_config(config: Mapping | None, path: str = "params") -> dict[str, Any]:
    return merge_strict(SAMPLER_DEFAULTS, config, path)


def sample_homography(
    batch_size: int,
    shape: tuple[int, int],
    config: Mapping | None = None,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """``batch_size`` random homographies (B, 3, 3) float32 for images of ``shape`` (H, W).

    ``config``: the sampler parameters (keys of SAMPLER_DEFAULTS; unknown keys raise). The random
    numbers come from ``generator`` (any device; sampling itself runs on the CPU in float64), the
    result is put on ``device``. H maps original image points to warped image points.
    """
    c = merge_sampler_config(config)
    b = int(batch_size)
    patch = c["patch_ratio"]
    margin = (1 - patch) / 2
    # Patch corners in the unit square: top-left, bottom-left, bottom-right, top-right (x, y).
    pts = margin + torch.tensor([[0, 0], [0, patch], [patch, patch], [patch, 0]], dtype=torch.float64)
    pts = pts.expand(b, 4, 2).clone()

    if c["perspective"]:
        amp_x, amp_y = c["perspective_amplitude_x"], c["perspective_amplitude_y"]
        if not c["allow_artifacts"]:
            amp_x, amp_y = min(amp_x, margin), min(amp_y, margin)
        d_y = _truncated_normal((b,), 0.0, amp_y / 2, generator)
        d_left = _truncated_normal((b,), 0.0, amp_x / 2, generator)
        d_right = _truncated_normal((b,), 0.0, amp_x / 2, generator)
        pts += torch.stack([torch.stack([d_left, d_y], -1), torch.stack([d_left, -d_y], -1),
                            torch.stack([d_right, d_y], -1), torch.stack([d_right, -d_y], -1)], dim=1)

    if c["scaling"]:
        # Candidate 0 is scale 1, the fallback when no sampled scale keeps the patch inside.
        scales = torch.cat([torch.ones(b, 1, dtype=torch.float64),
                            _truncated_normal((b, c["n_scales"]), 1.0, c["scaling_amplitude"] / 2, generator)], 1)
        centre = pts.mean(dim=1, keepdim=True)
        scaled = (pts - centre)[:, None] * scales[..., None, None] + centre[:, None]  # (B, S+1, 4, 2)
        valid = _inside(scaled)
        if c["allow_artifacts"]:
            valid = torch.ones_like(valid)
            valid[:, 0] = False
        pts = scaled[torch.arange(b), _pick(valid, generator)]

    if c["translation"]:
        t_min, t_max = pts.min(dim=1).values, (1 - pts).min(dim=1).values
        if c["allow_artifacts"]:
            t_min, t_max = t_min + c["translation_overflow"], t_max + c["translation_overflow"]
        shift = -t_min + _uniform((b, 2), generator) * (t_max + t_min)
        pts += shift[:, None]

    if c["rotation"]:
        max_angle = torch.full((b, 1), float(c["max_angle"]), dtype=torch.float64)
        if c["full_rotation_probability"] > 0:  # no draw otherwise: the reference's random stream stays
            full = _uniform((b, 1), generator) < c["full_rotation_probability"]
            max_angle = torch.where(full, torch.full_like(max_angle, math.pi), max_angle)
        steps = torch.linspace(-1, 1, c["n_angles"], dtype=torch.float64)
        angles = torch.cat([torch.zeros(b, 1, dtype=torch.float64), max_angle * steps], 1)  # (B, A+1)
        cos, sin = torch.cos(angles), torch.sin(angles)
        rotations = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)  # (B, A+1, 2, 2)
        centre = pts.mean(dim=1, keepdim=True)
        rotated = (pts - centre)[:, None] @ rotations.transpose(-1, -2) + centre[:, None]  # (B, A+1, 4, 2)
        valid = _inside(rotated)
        if c["allow_artifacts"]:
            valid = torch.ones_like(valid)
            valid[:, 0] = False
        pts = rotated[torch.arange(b), _pick(valid, generator)]

    h, w = shape
    size = torch.tensor([w, h], dtype=torch.float64)
    corners = torch.tensor([[0, 0], [0, 1], [1, 1], [1, 0]], dtype=torch.float64).expand(b, 4, 2)
    homography = homography_from_points(pts * size - 0.5, corners * size - 0.5)
    return homography.to(device=device or "cpu", dtype=torch.float32)


def _source_grid(homography: torch.Tensor, in_shape: tuple[int, int], out_shape: tuple[int, int]) -> torch.Tensor:
    """For each output pixel, where it comes from in the input, normalised for grid_sample (B, h, w, 2)."""
    device = homography.device
    h_out, w_out = out_shape
    h_in, w_in = in_shape
    ys, xs = torch.meshgrid(torch.arange(h_out, device=device, dtype=torch.float64),
                            torch.arange(w_out, device=device, dtype=torch.float64), indexing="ij")
    pixels = torch.stack([xs, ys], -1).reshape(1, -1, 2)
    source = warp_points(pixels, torch.linalg.inv(homography.double()))  # (B, h*w, 2)
    scale = torch.tensor([2.0 / w_in, 2.0 / h_in], device=device, dtype=torch.float64)
    grid = (source + 0.5) * scale - 1  # align_corners=False: -1 is the outer edge of pixel 0
    return grid.reshape(-1, h_out, w_out, 2).float()


def warp_images(
    images: torch.Tensor,
    homography: torch.Tensor,
    out_shape: tuple[int, int] | None = None,
    mode: str = "bilinear",
) -> torch.Tensor:
    """Warp images (B, C, H, W) by H (B, 3, 3) (original to warped) into ``out_shape`` (default (H, W)).

    Outside the original image is 0. Integer images are warped as float and rounded back.
    """
    if images.dim() != 4:
        raise ValueError(f"expected images (B, C, H, W), got shape {tuple(images.shape)}")
    homography = homography.to(images.device).reshape(-1, 3, 3)
    out_shape = tuple(out_shape) if out_shape is not None else tuple(images.shape[-2:])
    return _sample(images, _source_grid(homography, tuple(images.shape[-2:]), out_shape), mode)


def _sample(images: torch.Tensor, grid: torch.Tensor, mode: str) -> torch.Tensor:
    source = images if torch.is_floating_point(images) else images.float()
    warped = F.grid_sample(source, grid.to(source.dtype), mode=mode, padding_mode="zeros", align_corners=False)
    if not torch.is_floating_point(images):
        warped = warped.round().to(images.dtype)
    return warped


def warp_keypoint_maps(keypoint_maps: torch.Tensor, homography: torch.Tensor) -> torch.Tensor:
    """Move every non-zero pixel of keypoint maps (B, H, W) by H, round, drop those that leave the image."""
    b, h, w = keypoint_maps.shape
    homography = homography.to(keypoint_maps.device).reshape(-1, 3, 3)
    index = torch.nonzero(keypoint_maps)
    out = torch.zeros_like(keypoint_maps)
    if len(index) == 0:
        return out
    points = index[:, [2, 1]].double()[:, None]  # (K, 1, 2) xy
    warped = warp_points(points, homography[index[:, 0]].double())[:, 0].round()
    inside = (warped[:, 0] >= 0) & (warped[:, 0] <= w - 1) & (warped[:, 1] >= 0) & (warped[:, 1] <= h - 1)
    warped, index = warped[inside].long(), index[inside]
    out[index[:, 0], warped[:, 1], warped[:, 0]] = keypoint_maps[index[:, 0], index[:, 1], index[:, 2]]
    return out


def erode_mask(mask: torch.Tensor, radius: int) -> torch.Tensor:
    """Erode masks (B, H, W) with a disc of ``radius`` pixels; beyond the image border counts as valid
    (as TensorFlow's erosion2d with SAME padding in the reference)."""
    if radius <= 0:
        return mask
    disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    kernel = torch.as_tensor(disc, dtype=torch.float32, device=mask.device)[None, None]
    invalid = F.conv2d((mask <= 0.5).float()[:, None], kernel, padding=radius)[:, 0] > 0.5
    return mask * ~invalid


def compute_valid_mask(
    shape: tuple[int, int],
    homography: torch.Tensor,
    erosion_radius: int = 0,
    source_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Where a warped image of ``shape`` (H, W) has content: (B, H, W) float 0/1 on H's device.

    The original's pixels (or ``source_mask`` (B, H, W), default all ones) are warped by H with nearest
    sampling and the result is eroded by ``erosion_radius`` (the reference's valid border margin).
    """
    homography = homography.reshape(-1, 3, 3)
    grid = _source_grid(homography, tuple(shape), tuple(shape))
    return _valid_mask_from_grid(grid, erosion_radius, source_mask)


def _valid_mask_from_grid(grid: torch.Tensor, erosion_radius: int, source_mask: torch.Tensor | None) -> torch.Tensor:
    if source_mask is None:  # all ones: inside the original image, as nearest sampling of ones would give
        inside = (grid > -1) & (grid < 1)
        warped = (inside[..., 0] & inside[..., 1]).float()
    else:
        warped = _sample(source_mask[:, None].float().to(grid.device), grid, "nearest")[:, 0]
    return erode_mask(warped, int(erosion_radius))


class HomographicAugmentation:
    """Warp a batch {"image", "keypoint_map", "valid_mask"} by random homographies, on its device.

    ``config`` is the reference's ``homographic`` section: ``enable``, ``params`` (sampler
    parameters) and ``valid_border_margin``. Returns a new dict with the warped entries (other
    entries are kept) and ``homography`` (B, 3, 3), original to warped (identity when disabled).
    """

    def __init__(self, config: Mapping | None = None, path: str = "homographic"):
        self.config = merge_strict(DEFAULT_CONFIG, config, path)

    @property
    def enabled(self) -> bool:
        return bool(self.config["enable"])

    def __call__(self, batch: Mapping[str, torch.Tensor], generator: torch.Generator | None = None) -> dict:
        image = batch["image"]
        b, _, h, w = image.shape
        out = dict(batch)
        if not self.enabled:
            out["homography"] = torch.eye(3, device=image.device).expand(b, 3, 3).clone()
            return out
        homography = sample_homography(b, (h, w), self.config["params"], generator, image.device)
        grid = _source_grid(homography, (h, w), (h, w))
        out["image"] = _sample(image, grid, "bilinear")
        if "keypoint_map" in batch:
            out["keypoint_map"] = warp_keypoint_maps(batch["keypoint_map"], homography)
        source_mask = batch.get("valid_mask")
        out["valid_mask"] = _valid_mask_from_grid(grid, self.config["valid_border_margin"], source_mask).to(
            batch["valid_mask"].dtype if "valid_mask" in batch else torch.float32)
        out["homography"] = homography
        return out

    def __repr__(self) -> str:
        return f"HomographicAugmentation({self.config})"
