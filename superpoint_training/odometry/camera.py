"""The camera a feature stream comes from, as ``sensor_msgs/CameraInfo`` describes it, without ROS:
what turns its pixels into normalised rays (undistortion for raw images, P and R for rectified
ones, binning and ROI undone). Shared by the tracker node, the offline VO runner and the
evaluation.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

__all__ = ["CameraError", "CameraModel", "DISTORTION_MODELS"]


class CameraError(ValueError):
    """A camera description that cannot be used (zero focal length, unknown distortion model, ...)."""


DISTORTION_MODELS = ("plumb_bob", "rational_polynomial", "equidistant", "none")
_UNDISTORT_CRITERIA = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 40, 1e-10)


@dataclass(frozen=True)
class CameraModel:
    """A camera as ``sensor_msgs/CameraInfo`` describes it: what turns its pixels into rays.

    ``K`` (3, 3) and ``distortion`` (OpenCV's order) describe the raw image: ``distortion_model``
    ``plumb_bob`` (k1 k2 p1 p2 [k3]), ``rational_polynomial`` (k1 k2 p1 p2 k3 k4 k5 k6), ``equidistant``
    (fisheye k1 k2 k3 k4) or ``none``. ``P`` (3, 4) and ``R`` (3, 3) describe the rectified image
    (``image_rect``): its pixels project with ``P[:, :3]`` in the rectified frame, which ``R`` turns
    from the camera frame. ``image_size`` (H, W) is the full-resolution size the matrices refer to;
    ``binning`` (x, y) and ``roi`` (x_offset, y_offset, width, height, full-resolution pixels; None:
    the whole image) say which part of it, at which resolution, the published image holds.

    Which matrix applies (:attr:`uses_projection`): a stream is rectified when ``rectified`` is set
    (the ``image_rect`` of a raw camera whose CameraInfo still carries D) or when its distortion is
    all zero or ``none`` (a camera or rectifier that publishes undistorted images); rectified pixels
    go through ``P`` and ``R`` (``K`` when P is all zero) and are never undistorted, raw pixels
    through ``K`` and ``distortion``: a stream is undistorted once, never twice.
    """

    K: np.ndarray
    distortion: np.ndarray = field(default_factory=lambda: np.zeros(0))
    distortion_model: str = "plumb_bob"
    image_size: tuple[int, int] | None = None
    P: np.ndarray | None = None
    R: np.ndarray | None = None
    binning: tuple[int, int] = (1, 1)
    roi: tuple[int, int, int, int] | None = None
    rectified: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "K", np.asarray(self.K, np.float64).reshape(3, 3))
        object.__setattr__(self, "distortion", np.asarray(self.distortion, np.float64).reshape(-1))
        if self.P is not None:
            object.__setattr__(self, "P", np.asarray(self.P, np.float64).reshape(3, 4))
        if self.R is not None:
            object.__setattr__(self, "R", np.asarray(self.R, np.float64).reshape(3, 3))
        object.__setattr__(self, "binning", tuple(max(1, int(b)) for b in self.binning))  # CameraInfo: 0 means 1
        if self.roi is not None and not any(self.roi):
            object.__setattr__(self, "roi", None)  # an all-zero ROI is the whole image

    @classmethod
    def from_intrinsics(
        cls,
        fx: float,
        fy: float,
        cx: float,
        cy: float,
        distortion: Any = (),
        distortion_model: str = "plumb_bob",
        image_size: tuple[int, int] | None = None,
    ) -> CameraModel:
        K = np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])
        return cls(K, np.asarray(distortion, np.float64), distortion_model, image_size)

    @classmethod
    def from_camera_info(cls, msg: Any, rectified: bool = False) -> CameraModel:
        """From a ``sensor_msgs/CameraInfo`` (rclpy, rosbags or any object with its fields ``k``, ``d``, ...).

        ``rectified``: the images of this stream are the rectified ones (``image_rect``).
        """
        size = (int(msg.height), int(msg.width)) if int(msg.height) > 0 and int(msg.width) > 0 else None
        model = str(msg.distortion_model) or "plumb_bob"
        P = np.asarray(getattr(msg, "p", np.zeros(12)), np.float64)
        R = np.asarray(getattr(msg, "r", np.zeros(9)), np.float64)
        roi = getattr(msg, "roi", None)
        box = None if roi is None else (int(roi.x_offset), int(roi.y_offset), int(roi.width), int(roi.height))
        binning = (int(getattr(msg, "binning_x", 1)), int(getattr(msg, "binning_y", 1)))
        return cls(
            np.asarray(msg.k, np.float64), np.asarray(msg.d, np.float64), model, size,
            P=P if P.size == 12 and np.any(P) else None, R=R if R.size == 9 and np.any(R) else None,
            binning=binning, roi=box, rectified=rectified,
        )  # fmt: skip

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> CameraModel:
        """Read ``fx fy cx cy [distortion...]`` text (``#`` comments) or a ROS camera-calibration YAML.

        The YAML is the ``camera_calibration`` / ``camera_info_manager`` format: ``camera_matrix.data``,
        ``distortion_model``, ``distortion_coefficients.data``, ``image_width``, ``image_height``.
        """
        path = Path(path)
        if not path.is_file():
            raise CameraError(f"camera file not found: {path}")
        if path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
            try:
                K = np.asarray(data["camera_matrix"]["data"], np.float64)
            except (KeyError, TypeError) as error:
                raise CameraError(f"{path}: no camera_matrix.data (ROS camera_info YAML expected)") from error
            dist = np.asarray((data.get("distortion_coefficients") or {}).get("data", []), np.float64)
            size = None
            if data.get("image_height") and data.get("image_width"):
                size = (int(data["image_height"]), int(data["image_width"]))
            return cls(K, dist, str(data.get("distortion_model", "plumb_bob")), size)
        values: list[float] = []
        for line in path.read_text(encoding="utf-8").splitlines():
            line = line.split("#", 1)[0].strip()
            if line:
                try:
                    values.extend(float(v) for v in line.replace(",", " ").split())
                except ValueError as error:
                    raise CameraError(f"{path}: expected numbers 'fx fy cx cy [k1 k2 p1 p2 [k3]]', got {line!r}") from error
        if len(values) < 4:
            raise CameraError(f"{path}: expected at least fx fy cx cy, found {len(values)} numbers")
        return cls.from_intrinsics(*values[:4], distortion=values[4:])

    @property
    def uses_projection(self) -> bool:
        """True: the pixels are rectified ones (``P``, ``R``, no undistortion); False: raw (``K``, distortion)."""
        return self.rectified or self.distortion_model == "none" or not np.any(self.distortion)

    @property
    def matrix(self) -> np.ndarray:
        """The 3x3 camera matrix of the full-resolution image the pixels belong to (``P[:, :3]`` or ``K``)."""
        if self.uses_projection and self.P is not None:
            return self.P[:, :3]
        return self.K

    @property
    def output_size(self) -> tuple[int, int] | None:
        """(H, W) of the published images: the ROI's (or the full image's) size divided by the binning."""
        if self.roi is not None:
            height, width = self.roi[3], self.roi[2]
        elif self.image_size is not None:
            height, width = self.image_size
        else:
            return None
        return height // self.binning[1], width // self.binning[0]

    @property
    def focal(self) -> float:
        """Mean focal length in pixels of the published (binned) image."""
        m = self.matrix
        return 0.5 * (float(m[0, 0]) / self.binning[0] + float(m[1, 1]) / self.binning[1])

    def to_full_resolution(self, points: np.ndarray) -> np.ndarray:
        """Pixels (N, 2) of the published image -> pixels of the full-resolution image the matrices describe.

        Pixel centres map to pixel centres ((0, 0) the centre of the top-left pixel): a binned pixel
        u covers full-resolution pixels b*u .. b*u + b - 1, whose centre is b*u + (b - 1) / 2, then
        the ROI's offset is added. (image_geometry uses b*u + offset, half a pixel apart for b = 2.)
        """
        points = np.asarray(points, np.float64).reshape(-1, 2)
        bx, by = self.binning
        if (bx, by) == (1, 1) and self.roi is None:
            return points
        x0, y0 = (self.roi[0], self.roi[1]) if self.roi is not None else (0, 0)
        return np.c_[bx * points[:, 0] + 0.5 * (bx - 1) + x0, by * points[:, 1] + 0.5 * (by - 1) + y0]

    def problem(self) -> str | None:
        """Why these intrinsics cannot be used, or None. An all-zero K is ROS's "uncalibrated"."""
        K = self.K
        if not np.all(np.isfinite(K)) or not np.all(np.isfinite(self.distortion)):
            return "intrinsics contain NaN or infinite values"
        if K[0, 0] <= 0 or K[1, 1] <= 0:
            return f"focal lengths must be positive (fx={K[0, 0]:g}, fy={K[1, 1]:g}; all zeros means uncalibrated)"
        if self.distortion_model not in DISTORTION_MODELS:
            return f"distortion model {self.distortion_model!r} is not one of {DISTORTION_MODELS}"
        n = self.distortion.size
        if self.distortion_model == "equidistant" and n not in (0, 4):
            return f"equidistant distortion needs 4 coefficients, got {n}"
        if self.distortion_model in ("plumb_bob", "rational_polynomial") and n not in (0, 4, 5, 8, 12, 14):
            return f"{self.distortion_model} distortion needs 4, 5, 8, 12 or 14 coefficients, got {n}"
        if self.uses_projection and self.P is not None:
            if not np.all(np.isfinite(self.P)) or self.P[0, 0] <= 0 or self.P[1, 1] <= 0:
                return f"projection P has no positive focal lengths (P[0,0]={self.P[0, 0]:g}, P[1,1]={self.P[1, 1]:g})"
        if self.uses_projection and self.R is not None:
            if not np.all(np.isfinite(self.R)) or not np.allclose(self.R @ self.R.T, np.eye(3), atol=1e-5):
                return "rectification R is not a rotation matrix"
        if self.roi is not None and self.image_size is not None:
            x, y, w, h = self.roi
            if w <= 0 or h <= 0 or x + w > self.image_size[1] or y + h > self.image_size[0]:
                return f"ROI {self.roi} (x, y, w, h) does not fit the {self.image_size[1]}x{self.image_size[0]} image"
        return None

    def undistort(self, points: np.ndarray) -> np.ndarray:
        """Pixel points (N, 2) of the published image to normalised coordinates (N, 2) float64 in the
        camera frame: undistorted through ``K`` for raw pixels, through ``P`` and back by ``R`` for
        rectified ones (:attr:`uses_projection`)."""
        points = self.to_full_resolution(points).reshape(-1, 1, 2)
        if points.shape[0] == 0:
            return np.zeros((0, 2))
        if self.uses_projection:
            m = self.matrix
            rays = np.c_[points[:, 0], np.ones(points.shape[0])] @ np.linalg.inv(m).T
            if self.P is not None and self.R is not None:
                rays = rays @ self.R  # rectified frame -> camera frame: R.T @ ray for each ray
            return rays[:, :2] / rays[:, 2:]
        if self.distortion_model == "equidistant":
            return cv2.fisheye.undistortPoints(points, self.K, self.distortion, criteria=_UNDISTORT_CRITERIA)[:, 0]
        if hasattr(cv2, "undistortPointsIter"):  # OpenCV 4.x name of the overload with a stop criterion
            return cv2.undistortPointsIter(points, self.K, self.distortion, None, None, _UNDISTORT_CRITERIA)[:, 0]
        return cv2.undistortPoints(points, self.K, self.distortion, criteria=_UNDISTORT_CRITERIA)[:, 0]
