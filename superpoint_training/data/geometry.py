"""Homography geometry shared by the demo, augmentation, adaptation and evaluation.

Conventions: points are (x, y) pixels, (0, 0) the centre of the top-left pixel (OpenCV's); a
homography H maps points of image 0 to image 1 (x1 ~ H x0).
"""

from __future__ import annotations

import cv2
import numpy as np
import torch


def warp_points(points: np.ndarray | torch.Tensor, homography: np.ndarray | torch.Tensor):
    """Apply a 3x3 homography to (..., N, 2) points (numpy or torch; batched H (..., 3, 3) for torch)."""
    if isinstance(points, torch.Tensor):
        H = torch.as_tensor(homography, dtype=points.dtype, device=points.device)
        homogeneous = torch.cat((points, torch.ones_like(points[..., :1])), dim=-1)
        warped = homogeneous @ H.transpose(-1, -2)
        return warped[..., :2] / warped[..., 2:]
    points = np.asarray(points, dtype=np.float64)
    homogeneous = np.concatenate((points, np.ones_like(points[..., :1])), axis=-1)
    warped = homogeneous @ np.asarray(homography, dtype=np.float64).T
    return warped[..., :2] / warped[..., 2:]


def image_corners(height: int, width: int) -> np.ndarray:
    """The four image corners (x, y) as used by the reference's homography-correctness metric."""
    return np.array([[0, 0], [width - 1, 0], [0, height - 1], [width - 1, height - 1]], dtype=np.float64)


def corner_error(estimated: np.ndarray | None, truth: np.ndarray, image_size: tuple[int, int]) -> float:
    """Mean distance between the four image corners warped by the estimated and true homographies."""
    if estimated is None:
        return float("inf")
    corners = image_corners(*image_size)
    return float(np.linalg.norm(warp_points(corners, estimated) - warp_points(corners, truth), axis=1).mean())


def random_homography(
    image_size: tuple[int, int],
    rng: np.random.Generator,
    max_angle: float = 0.35,
    scale_range: tuple[float, float] = (0.8, 1.2),
    perspective: float = 0.15,
    translation: float = 0.1,
) -> np.ndarray:
    """A random homography that keeps most of an image of (H, W) in view: rotation and scale about
    the centre, translation and a perspective distortion of the corners (fractions of the size)."""
    h, w = image_size
    corners = image_corners(h, w).astype(np.float32)
    jitter = rng.uniform(-perspective, perspective, size=(4, 2)) * np.array([w, h]) / 2
    centre = np.array([(w - 1) / 2, (h - 1) / 2])
    angle = rng.uniform(-max_angle, max_angle)
    scale = rng.uniform(*scale_range)
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    shift = rng.uniform(-translation, translation, size=2) * np.array([w, h])
    target = (corners + jitter - centre) @ rotation.T * scale + centre + shift
    return cv2.getPerspectiveTransform(corners, target.astype(np.float32)).astype(np.float64)


def warp_image(image: np.ndarray, homography: np.ndarray, size: tuple[int, int] | None = None) -> np.ndarray:
    """Warp an image by H (image 0 to image 1); ``size`` (H, W) of the output, default the input's."""
    h, w = size or image.shape[:2]
    return cv2.warpPerspective(image, homography, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
