"""Frame-to-frame tracking and relative camera pose from SuperPoint features, without ROS.

The tracker node (:mod:`superpoint_ros.tracker_node`) and the offline runner
(:mod:`superpoint_ros.vo`) share this module, so both give the same tracks and poses:

1. optional bucketing: keep at most ``bucket_max_per_cell`` keypoints (best scores first) per cell
   of a ``bucket_rows`` x ``bucket_cols`` grid, so that matches spread over the image;
2. descriptor matching on the device (:func:`superpoint_training.model.matching.match_descriptors`:
   mutual nearest neighbours, Lowe's ratio test, an L2 distance bound);
3. tracks: a keypoint matched to the previous frame keeps that keypoint's track id, every other
   keypoint starts a new track; a previous keypoint left unmatched ends its track;
4. pose: matched points undistorted to normalised coordinates with the camera's distortion model
   (the ``sensor_msgs/CameraInfo`` names: ``plumb_bob``, ``rational_polynomial``, ``equidistant``),
   essential matrix with RANSAC (``cv2.findEssentialMat``), pose recovery with the cheirality check
   (``cv2.recoverPose``).

Pose convention (OpenCV's): ``R``, ``t`` map a point from the previous camera frame to the current
one, ``x_cur = R @ x_prev + t``, with ``|t| = 1`` (a monocular pair has no scale).
:attr:`RelativePose.T_prev_cur` is the current camera's pose in the previous camera frame, the step
that :class:`PoseAccumulator` chains into an odometry pose.

A frame is reported, never guessed: missing or zero intrinsics, too few matches or inliers, a
failed essential matrix and a gap in the stream each give a :class:`Status` with a reason and no
pose.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from superpoint_training.model.matching import match_descriptors

__all__ = [
    "Status",
    "CameraModel",
    "CameraError",
    "TrackerConfig",
    "RelativePose",
    "TrackingResult",
    "FrameTracker",
    "PoseAccumulator",
    "bucket_indices",
    "match_features",
    "estimate_relative_pose",
    "rotation_angle_deg",
    "angle_between_deg",
]


class Status:
    """What happened to a frame. ``OK`` and ``LOW_PARALLAX`` carry a pose step; the others do not."""

    OK = "ok"  # relative pose estimated
    FIRST_FRAME = "first_frame"  # first frame (or first after a reset): tracks start, pose is the origin
    LOW_PARALLAX = "low_parallax"  # matches barely moved: the camera is taken as still (identity step)
    TOO_FEW_MATCHES = "too_few_matches"
    TOO_FEW_INLIERS = "too_few_inliers"
    POSE_FAILED = "pose_failed"  # no essential matrix / pose passed the checks
    NO_INTRINSICS = "no_intrinsics"  # no camera model, or an unusable one (zero focal length, ...)
    GAP = "gap"  # stamp jumped forward more than max_frame_gap or went backwards: tracks restart

    LOST = frozenset({TOO_FEW_MATCHES, TOO_FEW_INLIERS, POSE_FAILED, NO_INTRINSICS, GAP})


class CameraError(ValueError):
    """A camera description that cannot be used (zero focal length, unknown distortion model, ...)."""


DISTORTION_MODELS = ("plumb_bob", "rational_polynomial", "equidistant", "none")
CHEIRALITY_DISTANCE = 1e6  # triangulated depth bound of the cheirality check, in baselines
_UNDISTORT_CRITERIA = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 40, 1e-10)


@dataclass(frozen=True)
class CameraModel:
    """Pinhole intrinsics ``K`` (3, 3) plus distortion coefficients in OpenCV's order.

    ``distortion_model``: ``plumb_bob`` (k1 k2 p1 p2 [k3]), ``rational_polynomial`` (k1 k2 p1 p2 k3
    k4 k5 k6), ``equidistant`` (fisheye k1 k2 k3 k4) or ``none``. ``image_size`` (H, W) is the size the
    intrinsics refer to, when known.
    """

    K: np.ndarray
    distortion: np.ndarray = field(default_factory=lambda: np.zeros(0))
    distortion_model: str = "plumb_bob"
    image_size: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "K", np.asarray(self.K, np.float64).reshape(3, 3))
        object.__setattr__(self, "distortion", np.asarray(self.distortion, np.float64).reshape(-1))

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
    def from_camera_info(cls, msg: Any) -> CameraModel:
        """From a ``sensor_msgs/CameraInfo`` (rclpy, rosbags or any object with its fields ``k``, ``d``, ...)."""
        size = (int(msg.height), int(msg.width)) if int(msg.height) > 0 and int(msg.width) > 0 else None
        model = str(msg.distortion_model) or "plumb_bob"
        return cls(np.asarray(msg.k, np.float64), np.asarray(msg.d, np.float64), model, size)

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
    def focal(self) -> float:
        return 0.5 * (float(self.K[0, 0]) + float(self.K[1, 1]))

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
        return None

    def undistort(self, points: np.ndarray) -> np.ndarray:
        """Pixel points (N, 2) to undistorted normalised image coordinates (N, 2) float64."""
        points = np.asarray(points, np.float64).reshape(-1, 1, 2)
        if points.shape[0] == 0:
            return np.zeros((0, 2))
        if self.distortion_model == "none" or not np.any(self.distortion):
            K = self.K
            out = (points[:, 0] - K[:2, 2]) / np.diag(K)[:2]
            out[:, 0] -= K[0, 1] / K[1, 1] * out[:, 1]  # skew, rare
            return out
        if self.distortion_model == "equidistant":
            return cv2.fisheye.undistortPoints(points, self.K, self.distortion, criteria=_UNDISTORT_CRITERIA)[:, 0]
        if hasattr(cv2, "undistortPointsIter"):  # OpenCV 4.x name of the overload with a stop criterion
            return cv2.undistortPointsIter(points, self.K, self.distortion, None, None, _UNDISTORT_CRITERIA)[:, 0]
        return cv2.undistortPoints(points, self.K, self.distortion, criteria=_UNDISTORT_CRITERIA)[:, 0]


@dataclass
class TrackerConfig:
    """Matching, bucketing, RANSAC and stream-check settings (the tracker node's parameters)."""

    # Matching defaults: hloc's "NN-superpoint" (mutual nearest neighbours, L2 distance at most 0.7,
    # the nn_thresh of Magic Leap's SuperPoint demo); RANSAC removes the remaining outliers.
    mutual: bool = True  # keep only mutual nearest neighbours
    ratio: float | None = None  # Lowe's ratio test on L2 distances (None: off)
    max_distance: float | None = 0.7  # L2 bound for unit descriptors, in [0, 2] (None: off)
    bucket_rows: int = 0  # bucketing grid; 0 rows, 0 cols or 0 per cell: off
    bucket_cols: int = 0
    bucket_max_per_cell: int = 0
    min_matches: int = 20  # fewer matches: TOO_FEW_MATCHES (and at least 5 for the 5-point solver)
    min_inliers: int = 15  # fewer RANSAC+cheirality inliers: TOO_FEW_INLIERS
    ransac_threshold_px: float = 1.0  # epipolar distance threshold, pixels (divided by the focal length)
    ransac_confidence: float = 0.999
    min_parallax_px: float = 0.5  # median match displacement below this: LOW_PARALLAX (0: off)
    max_frame_gap: float | None = 0.5  # seconds between frames beyond which tracks restart (None: off)

    def __post_init__(self) -> None:
        checks = {
            "ratio": self.ratio is None or 0.0 < self.ratio <= 1.0,
            "max_distance": self.max_distance is None or 0.0 < self.max_distance <= 2.0,
            "bucket_rows": self.bucket_rows >= 0,
            "bucket_cols": self.bucket_cols >= 0,
            "bucket_max_per_cell": self.bucket_max_per_cell >= 0,
            "min_matches": self.min_matches >= 5,
            "min_inliers": self.min_inliers >= 5,
            "ransac_threshold_px": self.ransac_threshold_px > 0,
            "ransac_confidence": 0.0 < self.ransac_confidence < 1.0,
            "min_parallax_px": self.min_parallax_px >= 0,
            "max_frame_gap": self.max_frame_gap is None or self.max_frame_gap > 0,
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise ValueError(f"invalid tracker settings: {', '.join(f'{n}={getattr(self, n)!r}' for n in bad)}")

    @property
    def bucketing(self) -> bool:
        return self.bucket_rows > 0 and self.bucket_cols > 0 and self.bucket_max_per_cell > 0


def bucket_indices(
    keypoints: torch.Tensor,
    scores: torch.Tensor | None,
    image_size: tuple[int, int],
    grid: tuple[int, int],
    max_per_cell: int,
) -> torch.Tensor:
    """Indices (ascending) of the keypoints (N, 2) kept by bucketing: the best ``max_per_cell`` per grid cell.

    Runs on the keypoints' device. Without scores the keypoints' order ranks them (the extractor
    sorts by score).
    """
    n = keypoints.shape[0]
    device = keypoints.device
    if n == 0:
        return torch.zeros(0, dtype=torch.long, device=device)
    rows, cols = grid
    height, width = image_size
    order = torch.argsort(scores, descending=True, stable=True) if scores is not None else torch.arange(n, device=device)
    xy = keypoints[order].float()
    col = ((xy[:, 0] + 0.5) * (cols / width)).floor().long().clamp_(0, cols - 1)
    row = ((xy[:, 1] + 0.5) * (rows / height)).floor().long().clamp_(0, rows - 1)
    cell, by_cell = torch.sort(row * cols + col, stable=True)  # stable: best first inside each cell
    counts = torch.bincount(cell, minlength=rows * cols)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.arange(n, device=device) - starts[cell]
    return order[by_cell[rank < max_per_cell]].sort().values


def match_features(
    descriptors0: torch.Tensor, descriptors1: torch.Tensor, config: TrackerConfig
) -> tuple[torch.Tensor, torch.Tensor]:
    """Match with the config's rule on the descriptors' device: (K, 2) index pairs and L2 distances."""
    return match_descriptors(
        descriptors0, descriptors1, mutual=config.mutual, ratio=config.ratio, max_distance=config.max_distance
    )


@dataclass
class RelativePose:
    """Outcome of :func:`estimate_relative_pose` for one image pair.

    ``R`` (3, 3), ``t`` (3,) unit: ``x_cur = R x_prev + t``; None unless the status carries a pose.
    ``inliers`` (K,) bool over the matches given. ``parallax_px``: median displacement of the
    undistorted matches, in pixels of the mean focal length.
    """

    status: str
    reason: str = ""
    R: np.ndarray | None = None
    t: np.ndarray | None = None
    inliers: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    num_matches: int = 0
    parallax_px: float = float("nan")

    @property
    def num_inliers(self) -> int:
        return int(self.inliers.sum())

    @property
    def has_pose(self) -> bool:
        return self.R is not None

    @property
    def T_prev_cur(self) -> np.ndarray:
        """4x4 pose of the current camera in the previous camera's frame (unit translation)."""
        if self.R is None or self.t is None:
            raise ValueError(f"no pose for status {self.status!r}")
        T = np.eye(4)
        T[:3, :3] = self.R.T
        T[:3, 3] = -self.R.T @ self.t
        return T


def estimate_relative_pose(
    points0: np.ndarray,
    points1: np.ndarray,
    camera: CameraModel | None,
    config: TrackerConfig,
    camera1: CameraModel | None = None,
) -> RelativePose:
    """Relative pose from matched pixel points (K, 2) of two frames (essential matrix + RANSAC + cheirality).

    ``camera1`` defaults to ``camera`` (one moving camera).
    """
    points0 = np.asarray(points0, np.float64).reshape(-1, 2)
    points1 = np.asarray(points1, np.float64).reshape(-1, 2)
    count = points0.shape[0]
    none = np.zeros(count, bool)
    camera1 = camera1 or camera
    for cam in (camera, camera1):
        problem = "no camera intrinsics" if cam is None else cam.problem()
        if problem:
            return RelativePose(Status.NO_INTRINSICS, problem, inliers=none, num_matches=count)
    if count < config.min_matches:
        return RelativePose(
            Status.TOO_FEW_MATCHES, f"{count} matches < min_matches {config.min_matches}", inliers=none, num_matches=count
        )
    normalised0, normalised1 = camera.undistort(points0), camera1.undistort(points1)
    focal = 0.5 * (camera.focal + camera1.focal)
    parallax = float(np.median(np.linalg.norm(normalised1 - normalised0, axis=1))) * focal
    if parallax < config.min_parallax_px:
        return RelativePose(
            Status.LOW_PARALLAX,
            f"median displacement {parallax:.2f} px < min_parallax_px {config.min_parallax_px:g}: camera taken as still",
            R=np.eye(3),
            t=np.zeros(3),
            inliers=np.ones(count, bool),
            num_matches=count,
            parallax_px=parallax,
        )
    E, mask = cv2.findEssentialMat(
        normalised0,
        normalised1,
        np.eye(3),
        method=cv2.RANSAC,
        prob=config.ransac_confidence,
        threshold=config.ransac_threshold_px / focal,
    )
    if E is None or E.shape[0] < 3 or mask is None:
        return RelativePose(Status.POSE_FAILED, "no essential matrix found", inliers=none, num_matches=count, parallax_px=parallax)
    # Several solutions may be stacked (3k x 3): the first is RANSAC's best. The cheirality check's
    # distance bound is in baselines; OpenCV's default (50) drops every point of a short-baseline pair
    # (2 cm between video frames, scene 1.5 m away), so points only need to lie in front of both cameras.
    _, R, t, mask, _ = cv2.recoverPose(
        E[:3], normalised0, normalised1, np.eye(3), distanceThresh=CHEIRALITY_DISTANCE, mask=mask.copy()
    )
    inliers = mask.reshape(-1) > 0
    if inliers.sum() < config.min_inliers:
        return RelativePose(
            Status.TOO_FEW_INLIERS,
            f"{int(inliers.sum())} inliers of {count} matches < min_inliers {config.min_inliers}",
            inliers=inliers,
            num_matches=count,
            parallax_px=parallax,
        )
    t = t.reshape(3)
    return RelativePose(Status.OK, "", R, t / max(np.linalg.norm(t), 1e-12), inliers, count, parallax)


@dataclass
class TrackingResult:
    """One frame's tracks, as the tracker returns them and as a Tracks message carries them.

    Track arrays (K entries, one per match with the previous frame): ``track_ids`` uint64,
    ``positions`` and ``previous_positions`` (K, 2) float32 pixels, ``lengths`` uint32 (frames
    observed, this one included), ``match_distances`` float32, ``inliers`` bool (RANSAC+cheirality
    inliers; all False when no geometry was tested, all True for LOW_PARALLAX). ``ended_track_ids``:
    tracks of the previous frame that ended here. ``stamp`` / ``previous_stamp``: seconds (None when
    unknown). From the tracker only: ``reason``, ``keypoint_track_ids`` (the id of every kept keypoint
    of this frame), ``num_keypoints``, ``pose``. From a message only (:func:`~.tracks_message.tracks_from_message`):
    ``image_size`` (H, W) and ``header``.
    """

    status: str
    track_ids: np.ndarray
    positions: np.ndarray
    previous_positions: np.ndarray
    lengths: np.ndarray
    match_distances: np.ndarray
    inliers: np.ndarray
    ended_track_ids: np.ndarray
    reason: str = ""
    keypoint_track_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint64))
    num_keypoints: int = 0
    pose: RelativePose | None = None
    stamp: float | None = None
    previous_stamp: float | None = None
    image_size: tuple[int, int] | None = None
    header: Any = None

    def __len__(self) -> int:
        return int(self.track_ids.shape[0])

    @property
    def lost(self) -> bool:
        return self.status in Status.LOST

    @property
    def num_matches(self) -> int:
        return int(self.track_ids.shape[0])

    @property
    def num_inliers(self) -> int:
        return int(self.inliers.sum())


@dataclass
class _Frame:
    keypoints: np.ndarray  # (N, 2) float32
    descriptors: torch.Tensor  # (N, D) on the tracker's device
    track_ids: np.ndarray  # (N,) uint64
    lengths: np.ndarray  # (N,) uint32
    stamp: float | None


def _as_tensor(values: Any, device: torch.device) -> torch.Tensor:
    if isinstance(values, torch.Tensor):
        return values.to(device)
    array = np.ascontiguousarray(values, np.float32)
    if not array.flags.writeable:  # e.g. a view of a message's buffer: torch wants memory it may write
        array = array.copy()
    return torch.from_numpy(array).to(device)


class FrameTracker:
    """Tracks keypoints frame to frame and estimates each step's relative pose.

    Example::

        tracker = FrameTracker(TrackerConfig(), device="cpu")
        for image, stamp in frames:
            f = extractor(image)
            result = tracker.process(f.keypoints, f.descriptors, camera, stamp=stamp, scores=f.scores,
                                     image_size=f.image_size)
            result.track_ids, result.positions, result.pose.T_prev_cur (when result.pose.has_pose)
    """

    def __init__(self, config: TrackerConfig | None = None, device: str | torch.device = "cpu"):
        self.config = config or TrackerConfig()
        self.device = torch.device(device)
        self._previous: _Frame | None = None
        self._next_id = 0

    def reset(self) -> None:
        """End every track; the next frame starts afresh (track ids keep increasing)."""
        self._previous = None

    def _new_ids(self, count: int) -> np.ndarray:
        ids = np.arange(self._next_id, self._next_id + count, dtype=np.uint64)
        self._next_id += count
        return ids

    def process(
        self,
        keypoints: Any,
        descriptors: Any,
        camera: CameraModel | None,
        stamp: float | None = None,
        scores: Any = None,
        image_size: tuple[int, int] | None = None,
    ) -> TrackingResult:
        """Add a frame: keypoints (N, 2) pixels, L2-normalised descriptors (N, D), numpy or torch.

        ``stamp`` in seconds enables the gap check; ``scores`` and ``image_size`` (H, W) are needed
        for bucketing (the image size defaults to the keypoints' extent).
        """
        config = self.config
        descriptors_t = _as_tensor(descriptors, self.device)
        keypoints_t = _as_tensor(keypoints, self.device).reshape(-1, 2)
        if descriptors_t.ndim != 2 or descriptors_t.shape[0] != keypoints_t.shape[0]:
            raise ValueError(
                f"descriptors {tuple(descriptors_t.shape)} do not match {keypoints_t.shape[0]} keypoints"
            )
        if descriptors_t.shape[1] == 0:
            raise ValueError("the features carry no descriptors (descriptor_dim 0, e.g. MagicPoint weights): nothing to match")
        if config.bucketing and keypoints_t.shape[0] > 0:
            if image_size is None:
                extent = keypoints_t.max(0).values
                image_size = (int(extent[1]) + 1, int(extent[0]) + 1)
            scores_t = None if scores is None else _as_tensor(scores, self.device).reshape(-1)
            keep = bucket_indices(
                keypoints_t, scores_t, image_size, (config.bucket_rows, config.bucket_cols), config.bucket_max_per_cell
            )
            keypoints_t, descriptors_t = keypoints_t[keep], descriptors_t[keep]
        current_keypoints = keypoints_t.cpu().numpy()
        count = current_keypoints.shape[0]
        previous = self._previous
        status, reason = Status.OK, ""
        if previous is not None and stamp is not None and previous.stamp is not None and config.max_frame_gap:
            gap = stamp - previous.stamp
            if gap <= 0 or gap > config.max_frame_gap:
                status = Status.GAP
                reason = f"stamp jumped by {gap:+.3f} s (allowed: 0 to max_frame_gap {config.max_frame_gap:g} s)"
        if previous is None or status == Status.GAP:
            ended = previous.track_ids.copy() if previous is not None else np.zeros(0, np.uint64)
            ids = self._new_ids(count)
            self._previous = _Frame(current_keypoints, descriptors_t, ids, np.ones(count, np.uint32), stamp)
            return TrackingResult(
                status=status if previous is not None else Status.FIRST_FRAME,
                reason=reason or "first frame: tracks start here",
                track_ids=np.zeros(0, np.uint64),
                positions=np.zeros((0, 2), np.float32),
                previous_positions=np.zeros((0, 2), np.float32),
                lengths=np.zeros(0, np.uint32),
                match_distances=np.zeros(0, np.float32),
                inliers=np.zeros(0, bool),
                ended_track_ids=ended,
                keypoint_track_ids=ids,
                num_keypoints=count,
                stamp=stamp,
                previous_stamp=None if previous is None else previous.stamp,
            )
        matches_t, distances_t = match_features(previous.descriptors, descriptors_t, config)
        matches = matches_t.cpu().numpy()
        distances = distances_t.float().cpu().numpy()
        i0, i1 = matches[:, 0], matches[:, 1]
        ids = np.zeros(count, np.uint64)
        lengths = np.ones(count, np.uint32)
        ids[i1] = previous.track_ids[i0]
        lengths[i1] = previous.lengths[i0] + 1
        fresh = np.ones(count, bool)
        fresh[i1] = False
        ids[fresh] = self._new_ids(int(fresh.sum()))
        matched_previous = np.zeros(previous.track_ids.shape[0], bool)
        matched_previous[i0] = True
        pose = estimate_relative_pose(previous.keypoints[i0], current_keypoints[i1], camera, config)
        self._previous = _Frame(current_keypoints, descriptors_t, ids, lengths, stamp)
        return TrackingResult(
            status=pose.status,
            reason=pose.reason,
            track_ids=ids[i1],
            positions=current_keypoints[i1],
            previous_positions=previous.keypoints[i0],
            lengths=lengths[i1],
            match_distances=distances,
            inliers=pose.inliers,
            ended_track_ids=previous.track_ids[~matched_previous],
            keypoint_track_ids=ids,
            num_keypoints=count,
            pose=pose,
            stamp=stamp,
            previous_stamp=previous.stamp,
        )


class PoseAccumulator:
    """Chains relative steps into the camera's pose in the odometry frame (4x4 ``T_odom_cam``).

    A monocular step has unit length; ``scale`` sets its length (metres) when a scale source knows it.
    """

    def __init__(self) -> None:
        self.pose = np.eye(4)
        self.steps = 0

    def reset(self) -> None:
        self.pose = np.eye(4)
        self.steps = 0

    def step(self, relative: RelativePose, scale: float = 1.0) -> np.ndarray:
        step = relative.T_prev_cur.copy()
        step[:3, 3] *= scale
        self.pose = self.pose @ step
        self.steps += 1
        return self.pose


def rotation_angle_deg(R: np.ndarray) -> float:
    """Angle of a rotation matrix in degrees (robust near 0 and 180)."""
    cos = np.clip((np.trace(R) - 1.0) / 2.0, -1.0, 1.0)
    return math.degrees(math.acos(cos))


def angle_between_deg(a: np.ndarray, b: np.ndarray) -> float:
    """Angle between two 3-vectors in degrees (NaN when either is zero)."""
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na < 1e-12 or nb < 1e-12:
        return float("nan")
    return math.degrees(math.acos(float(np.clip(np.dot(a, b) / (na * nb), -1.0, 1.0))))
