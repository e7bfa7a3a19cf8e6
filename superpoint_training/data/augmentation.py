"""Photometric augmentation: Gaussian noise, speckle, brightness, contrast, additive shade, motion blur.

Runs batched in torch on any device (the trainer applies it on the GPU), with per-image random
parameters and, like the reference, a random order of the operations per image. It also takes numpy
uint8 images, for use per sample in DataLoader workers (``SyntheticShapes`` does that by default).
Operations and parameter names follow rpautrat/SuperPoint
(``datasets/utils/photometric_augmentation.py``); values are on the 0-255 scale as there, although
the tensors are in [0, 1]. The code is our own.

    augment = PhotometricAugmentation(photometric_config("shapes"))
    images = augment(images)  # (B, C, H, W) float in [0, 1], same device; or numpy uint8 (H, W) / (B, H, W)

Config (the ``photometric`` section of a dataset config)::

    enable: true                # false: identity
    primitives: all             # or a list of the operation names below
    random_order: true          # a random order per image (else the listed order)
    params: {random_brightness: {max_abs_change: 75}, ...}
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..common.config import ConfigError, merge_strict

OPERATIONS: tuple[str, ...] = (
    "additive_gaussian_noise",
    "additive_speckle_noise",
    "random_brightness",
    "random_contrast",
    "additive_shade",
    "motion_blur",
)

# The reference functions' own defaults (used for anything a config leaves out).
DEFAULT_PARAMS: dict[str, dict[str, Any]] = {
    "additive_gaussian_noise": {"stddev_range": [5.0, 95.0]},
    "additive_speckle_noise": {"prob_range": [0.0, 0.005]},
    "random_brightness": {"max_abs_change": 50.0},
    "random_contrast": {"strength_range": [0.5, 1.5]},
    "additive_shade": {"nb_ellipses": 20, "transparency_range": [-0.5, 0.8], "kernel_size_range": [250, 350]},
    "motion_blur": {"max_kernel_size": 10},
}

# The reference configs: magic-point_shapes.yaml, magic-point_coco_train.yaml, superpoint_coco.yaml.
PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "shapes": {
        "random_brightness": {"max_abs_change": 75.0},
        "random_contrast": {"strength_range": [0.3, 1.8]},
        "additive_gaussian_noise": {"stddev_range": [0.0, 15.0]},
        "additive_speckle_noise": {"prob_range": [0.0, 0.0035]},
        "additive_shade": {"transparency_range": [-0.5, 0.8], "kernel_size_range": [50, 100]},
        "motion_blur": {"max_kernel_size": 7},
    },
    "magicpoint_coco": {
        "random_brightness": {"max_abs_change": 50.0},
        "random_contrast": {"strength_range": [0.3, 1.5]},
        "additive_gaussian_noise": {"stddev_range": [0.0, 10.0]},
        "additive_speckle_noise": {"prob_range": [0.0, 0.0035]},
        "additive_shade": {"transparency_range": [-0.5, 0.5], "kernel_size_range": [100, 150]},
        "motion_blur": {"max_kernel_size": 3},
    },
    "superpoint_coco": {
        "random_brightness": {"max_abs_change": 50.0},
        "random_contrast": {"strength_range": [0.5, 1.5]},
        "additive_gaussian_noise": {"stddev_range": [0.0, 10.0]},
        "additive_speckle_noise": {"prob_range": [0.0, 0.0035]},
        "additive_shade": {"transparency_range": [-0.5, 0.5], "kernel_size_range": [100, 150]},
        "motion_blur": {"max_kernel_size": 3},
    },
}

DEFAULT_CONFIG: dict[str, Any] = {
    "enable": True,
    "primitives": "all",
    "random_order": True,
    "params": DEFAULT_PARAMS,
}


def photometric_config(preset: str = "shapes", **overrides: Any) -> dict[str, Any]:
    """A full photometric config with the params of a reference preset (shapes, magicpoint_coco, superpoint_coco)."""
    if preset not in PRESETS:
        raise ConfigError(f"unknown photometric preset {preset!r} (known: {', '.join(PRESETS)})")
    config = {**copy.deepcopy(DEFAULT_CONFIG), **overrides}
    config["params"] = merge_strict(DEFAULT_PARAMS, PRESETS[preset], "params")
    return config


def parse_primitives(names: str | list | tuple, known: tuple[str, ...], path: str) -> list[str]:
    """``'all'``, one name or a list of names, checked against ``known``."""
    chosen = list(known) if names == "all" else [names] if isinstance(names, str) else list(names)
    unknown = [name for name in chosen if name not in known]
    if unknown:
        raise ConfigError(f"{path}: unknown primitive(s) {unknown} (known: {', '.join(known)}, or 'all')")
    return chosen


def merge_photometric_config(config: Mapping | None, path: str = "photometric") -> dict[str, Any]:
    """``config`` merged strictly over DEFAULT_CONFIG; unknown keys and primitives raise ConfigError."""
    config = dict(config or {})
    primitives = config.pop("primitives", "all")
    merged = merge_strict({k: v for k, v in DEFAULT_CONFIG.items() if k != "primitives"}, config, path)
    merged["primitives"] = parse_primitives(primitives, OPERATIONS, f"{path}.primitives")
    return merged


# --------------------------------------------------------------------------------------------------
# Random numbers from an optional generator, delivered on the images' device


def _uniform(shape, low, high, generator: torch.Generator | None, device) -> torch.Tensor:
    source = generator.device if generator is not None else device
    values = torch.rand(shape, generator=generator, device=source, dtype=torch.float32).to(device)
    return low + (high - low) * values


def _normal(shape, generator: torch.Generator | None, device) -> torch.Tensor:
    source = generator.device if generator is not None else device
    return torch.randn(shape, generator=generator, device=source, dtype=torch.float32).to(device)


def _randint(low, high, shape, generator: torch.Generator | None) -> torch.Tensor:
    """Ints in [low, high) on the CPU (parameters are tiny)."""
    gen_device = generator.device if generator is not None else "cpu"
    return torch.randint(int(low), int(high), shape, generator=generator, device=gen_device).cpu()


def _per_image(values: torch.Tensor) -> torch.Tensor:
    return values.view(-1, 1, 1, 1)


# --------------------------------------------------------------------------------------------------
# Operations on (b, C, H, W) float images on the 0-255 scale


def additive_gaussian_noise(x: torch.Tensor, generator=None, stddev_range=(5.0, 95.0)) -> torch.Tensor:
    stddev = _uniform((x.shape[0],), *stddev_range, generator, x.device)
    return (x + _per_image(stddev) * _normal(x.shape, generator, x.device)).clamp(0, 255)


def additive_speckle_noise(x: torch.Tensor, generator=None, prob_range=(0.0, 0.005)) -> torch.Tensor:
    prob = _per_image(_uniform((x.shape[0],), *prob_range, generator, x.device))
    sample = _uniform(x.shape, 0.0, 1.0, generator, x.device)
    x = torch.where(sample <= prob, torch.zeros_like(x), x)
    return torch.where(sample >= 1 - prob, torch.full_like(x, 255.0), x)


def random_brightness(x: torch.Tensor, generator=None, max_abs_change=50.0) -> torch.Tensor:
    delta = _uniform((x.shape[0],), -max_abs_change, max_abs_change, generator, x.device)
    return (x + _per_image(delta)).clamp(0, 255)


def random_contrast(x: torch.Tensor, generator=None, strength_range=(0.5, 1.5)) -> torch.Tensor:
    """(x - mean) * factor + mean per image and channel (tf.image.adjust_contrast)."""
    factor = _per_image(_uniform((x.shape[0],), *strength_range, generator, x.device))
    mean = x.mean(dim=(2, 3), keepdim=True)
    return ((x - mean) * factor + mean).clamp(0, 255)


def _gaussian_kernels(sizes: torch.Tensor, length: int) -> torch.Tensor:
    """(b, length) 1-D Gaussian kernels of odd ``sizes`` (sigma as OpenCV picks it), zero-padded, centred."""
    sigma = 0.3 * ((sizes.double() - 1) * 0.5 - 1) + 0.8
    offsets = torch.arange(length, dtype=torch.float64) - length // 2
    kernels = torch.exp(-(offsets[None] ** 2) / (2 * sigma[:, None] ** 2))
    kernels = kernels * (offsets[None].abs() <= (sizes[:, None] // 2))
    return (kernels / kernels.sum(1, keepdim=True)).float()


def _reflect101(index: torch.Tensor, n: int) -> torch.Tensor:
    """OpenCV's default border (``gfedcb|abcdefgh|gfedcba``), also for offsets beyond one reflection."""
    if n == 1:
        return torch.zeros_like(index)
    period = 2 * (n - 1)
    index = index % period
    return torch.where(index >= n, period - index, index)


def _filter_matrices(kernels: torch.Tensor, n: int) -> torch.Tensor:
    """(b, n, n) matrices M with M @ v = v filtered by each 1-D kernel (b, K), reflect-101 borders."""
    b, length = kernels.shape
    offsets = torch.arange(length) - length // 2
    columns = _reflect101(torch.arange(n)[:, None] + offsets[None], n)  # (n, K)
    matrices = torch.zeros(b, n, n, dtype=kernels.dtype)
    return matrices.scatter_add_(2, columns.expand(b, n, length), kernels[:, None].expand(b, n, length))


def gaussian_blur(images: torch.Tensor, sizes: torch.Tensor) -> torch.Tensor:
    """Blur each image of (b, C, H, W) with its own odd Gaussian kernel size, as ``cv2.GaussianBlur(k, 0)``.

    Done as two matrix products per image (fast for the large kernels of additive shade)."""
    b, c, h, w = images.shape
    kernels = _gaussian_kernels(sizes.cpu(), int(sizes.max()))
    rows = _filter_matrices(kernels, h).to(images.device, images.dtype)
    cols = _filter_matrices(kernels, w).to(images.device, images.dtype)
    out = rows[:, None] @ images @ cols[:, None].transpose(-1, -2)
    return out


def _depthwise(x: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
    """Filter each image of (b, C, H, W) with its own (b, kh, kw) kernel, reflecting borders (OpenCV's default)."""
    b, c, h, w = x.shape
    kh, kw = kernels.shape[1:]
    pad_h, pad_w = kh // 2, kw // 2
    mode = "reflect" if pad_h < h and pad_w < w else "replicate"
    x = F.pad(x.reshape(1, b * c, h, w), (pad_w, pad_w, pad_h, pad_h), mode=mode)
    weight = kernels.to(x.device, x.dtype).repeat_interleave(c, dim=0)[:, None]
    return F.conv2d(x, weight, groups=b * c).reshape(b, c, h, w)


def additive_shade(
    x: torch.Tensor, generator=None, nb_ellipses=20, transparency_range=(-0.5, 0.8), kernel_size_range=(250, 350)
) -> torch.Tensor:
    """Darken or brighten the image under a blurred mask of random ellipses."""
    b, _, h, w = x.shape
    device = x.device
    min_dim = min(h, w) / 4
    axes = torch.maximum(_uniform((b, nb_ellipses, 2), 0, 1, generator, "cpu") * min_dim,
                         torch.tensor(min_dim / 5)).floor().clamp(min=1)
    max_rad = axes.max(-1).values
    centre = torch.stack([max_rad + _uniform((b, nb_ellipses), 0, 1, generator, "cpu") * (w - 2 * max_rad),
                          max_rad + _uniform((b, nb_ellipses), 0, 1, generator, "cpu") * (h - 2 * max_rad)], -1).floor()
    angle = _uniform((b, nb_ellipses), 0, 90, generator, "cpu") * math.pi / 180
    transparency = _uniform((b,), *transparency_range, generator, "cpu")
    sizes = _randint(kernel_size_range[0], kernel_size_range[1], (b,), generator)
    sizes = sizes + (sizes % 2 == 0)  # odd, as in the reference

    # Inside an ellipse rotated by angle: a dx^2 + 2 c dx dy + d dy^2 <= 1. Tested on 2x2 pixel blocks
    # (4x cheaper): the mask is then blurred with sigma >= 7 px for the reference's kernel sizes.
    cos, sin = torch.cos(angle), torch.sin(angle)
    inv_x, inv_y = 1 / axes[..., 0] ** 2, 1 / axes[..., 1] ** 2
    a = (cos**2 * inv_x + sin**2 * inv_y).to(device)[..., None, None]
    c = (cos * sin * (inv_x - inv_y)).to(device)[..., None, None]
    d = (sin**2 * inv_x + cos**2 * inv_y).to(device)[..., None, None]
    xs = torch.arange(0, w, 2, device=device, dtype=torch.float32) + 0.5
    ys = torch.arange(0, h, 2, device=device, dtype=torch.float32)[:, None] + 0.5
    dx = xs - centre[..., 0, None, None].to(device)  # (b, n, 1, W/2)
    dy = ys - centre[..., 1, None, None].to(device)  # (b, n, H/2, 1)
    inside = (a * dx * dx + d * dy * dy) + (2 * c * dy) * dx <= 1  # (b, n, H/2, W/2)
    mask = inside.any(dim=1, keepdim=True).float()
    mask = mask.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)[..., :h, :w]
    mask = gaussian_blur(mask, sizes)
    shade = 1 - _per_image(transparency.to(device)) * mask
    return (x * shade).clamp(0, 255)


def motion_blur(x: torch.Tensor, generator=None, max_kernel_size=10) -> torch.Tensor:
    """A horizontal, vertical or diagonal line kernel of odd size up to ``max_kernel_size``, Gaussian-weighted."""
    b = x.shape[0]
    modes = _randint(0, 4, (b,), generator)
    sizes = _randint(0, (max_kernel_size + 1) // 2, (b,), generator) * 2 + 1
    length = int(sizes.max())
    centre = length // 2
    offsets = torch.arange(length) - centre
    rows, cols = offsets[:, None].expand(length, length), offsets[None, :].expand(length, length)
    lines = torch.stack([rows == 0, cols == 0, rows == cols, rows == -cols])  # h, v, diag_down, diag_up
    kernels = lines[modes].double()
    inside = (rows.abs()[None] <= sizes[:, None, None] // 2) & (cols.abs()[None] <= sizes[:, None, None] // 2)
    var = (sizes.double() ** 2 / 16)[:, None, None]
    kernels = kernels * inside * torch.exp(-(rows[None] ** 2 + cols[None] ** 2) / (2 * var))
    kernels = kernels / kernels.sum(dim=(1, 2), keepdim=True)
    return _depthwise(x, kernels.float())


_FUNCTIONS = {
    "additive_gaussian_noise": additive_gaussian_noise,
    "additive_speckle_noise": additive_speckle_noise,
    "random_brightness": random_brightness,
    "random_contrast": random_contrast,
    "additive_shade": additive_shade,
    "motion_blur": motion_blur,
}


class PhotometricAugmentation:
    """Random photometric changes per image, batched on the images' device.

    Call with a float tensor (B, C, H, W) or (C, H, W) in [0, 1] (returns the same shape, float in
    [0, 1]), or a numpy uint8 image (H, W) / batch (B, H, W) (returns uint8). ``generator`` (a
    ``torch.Generator``, on the CPU or the images' device) makes the result reproducible.
    """

    def __init__(self, config: Mapping | None = None):
        self.config = merge_photometric_config(config)
        self.operations = self.config["primitives"]
        self.params = {name: self.config["params"][name] for name in self.operations}

    @property
    def enabled(self) -> bool:
        return bool(self.config["enable"]) and len(self.operations) > 0

    def __call__(self, images, generator: torch.Generator | None = None):
        if isinstance(images, np.ndarray):
            return self._numpy(images, generator)
        if not torch.is_floating_point(images):
            raise TypeError(f"expected float images in [0, 1], got {images.dtype}")
        if images.dim() == 3:
            return self(images[None], generator)[0]
        if images.dim() != 4:
            raise ValueError(f"expected images (B, C, H, W), got shape {tuple(images.shape)}")
        if not self.enabled or images.shape[0] == 0:
            return images
        x = images.float() * 255
        n = len(self.operations)
        if self.config["random_order"]:
            order = torch.argsort(_uniform((x.shape[0], n), 0, 1, generator, "cpu"), dim=1)
        else:
            order = torch.arange(n).expand(x.shape[0], n)
        order = order.numpy()
        for step in range(n):
            for index in np.unique(order[:, step]):
                name = self.operations[index]
                selected = np.flatnonzero(order[:, step] == index)
                if len(selected) == len(x):  # the whole batch: no gather / scatter
                    x = _FUNCTIONS[name](x, generator, **self.params[name])
                    continue
                selected = torch.from_numpy(selected).to(x.device)
                x[selected] = _FUNCTIONS[name](x[selected], generator, **self.params[name])
        return (x / 255).to(images.dtype)

    def _numpy(self, images: np.ndarray, generator) -> np.ndarray:
        if images.dtype != np.uint8 or images.ndim not in (2, 3):
            raise ValueError(f"expected uint8 (H, W) or (B, H, W), got {images.dtype} {images.shape}")
        batch = torch.from_numpy(np.ascontiguousarray(images)).float().div(255)
        batch = batch.reshape(-1, 1, *images.shape[-2:])
        out = self(batch, generator).mul(255).round().clamp(0, 255).to(torch.uint8).numpy()
        return out.reshape(images.shape)

    def __repr__(self) -> str:
        return f"PhotometricAugmentation(operations={self.operations}, enabled={self.enabled})"

