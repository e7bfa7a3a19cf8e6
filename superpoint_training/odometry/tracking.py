"""Frame-to-frame tracking and relative camera pose from SuperPoint features, without ROS.

The tracker node (:mod:`superpoint_ros.tracker_node`), the offline runner
(``python -m superpoint_ros.vo``) and the VO evaluation share this module, so both give the same tracks and poses:

1. optional bucketing: keep at most ``bucket_max_per_cell`` keypoints (best scores first) per cell
   of a ``bucket_rows`` x ``bucket_cols`` grid, so that matches spread over the image;
2. descriptor matching on the device (:func:`superpoint_training.model.matching.match_descriptors`:
   mutual nearest neighbours, Lowe's ratio test, an L2 distance bound);
3. tracks: a keypoint matched to the previous frame keeps that keypoint's track id, every other
   keypoint starts a new track; a previous keypoint left unmatched ends its track;
4. pose: matched points turned into normalised coordinates once by :class:`CameraModel` (raw
   images undistorted with the ``sensor_msgs/CameraInfo`` model: ``plumb_bob``,
   ``rational_polynomial``, ``equidistant``; rectified ones through P and R; binning and ROI undone),
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
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
import torch

from ..common.geometry_guard import call_opencv, usable_points
from ..model.matching import match_descriptors
from .camera import CameraModel

__all__ = [
    "Status",
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


FRAME_PERIOD_WINDOW = 21  # stamp steps whose median is the stream's frame period
CHEIRALITY_DISTANCE = 1e6  # triangulated depth bound of the cheirality check, in baselines


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
    # A gap (tracks restart) is a stamp step beyond max_frame_gap seconds, or, when that is None,
    # beyond frame_gap_periods x the median of the last FRAME_PERIOD_WINDOW stamp steps (the stream's
    # own rate: 2.5 s at 2 Hz, 0.17 s at 30 Hz); both None: only stamps going backwards are gaps.
    max_frame_gap: float | None = None
    frame_gap_periods: float | None = 5.0

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
            "frame_gap_periods": self.frame_gap_periods is None or self.frame_gap_periods > 1,
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

    ``camera1`` defaults to ``camera`` (one moving camera). Degenerate input (NaN points, one point,
    one line, a pure rotation) gives a failure status with its reason, never an exception: OpenCV 5
    raises ``cv2.error`` on some sets where 4.x returned no solution.
    """
    points0 = np.asarray(points0, np.float64).reshape(-1, 2)
    points1 = np.asarray(points1, np.float64).reshape(-1, 2)
    count = points0.shape[0]
    prepared = _normalised_matches(points0, points1, camera, camera1 or camera, config)
    if isinstance(prepared, RelativePose):
        return prepared
    rows, normalised0, normalised1, focal = prepared
    parallax = float(np.median(np.linalg.norm(normalised1 - normalised0, axis=1))) * focal
    inliers = np.zeros(count, bool)
    if parallax < config.min_parallax_px:
        inliers[rows] = True
        return RelativePose(
            Status.LOW_PARALLAX,
            f"median displacement {parallax:.2f} px < min_parallax_px {config.min_parallax_px:g}: camera taken as still",
            R=np.eye(3), t=np.zeros(3), inliers=inliers, num_matches=count, parallax_px=parallax,
        )  # fmt: skip
    R, t, used, problem = _essential_pose(normalised0, normalised1, focal, config)
    if problem:
        return RelativePose(Status.POSE_FAILED, problem, inliers=inliers, num_matches=count, parallax_px=parallax)
    inliers[rows] = used
    if inliers.sum() < config.min_inliers:
        return RelativePose(
            Status.TOO_FEW_INLIERS, f"{int(inliers.sum())} inliers of {count} matches < min_inliers {config.min_inliers}",
            inliers=inliers, num_matches=count, parallax_px=parallax,
        )  # fmt: skip
    # A pure rotation fits every essential matrix [t]x R, so the direction of t is then noise (OpenCV
    # 4.x returns one, 5.1 raises): what the best rotation alone leaves of the inliers' displacement
    # measures the translation.
    translation_parallax = _rotation_residual(normalised0[used], normalised1[used]) * focal
    if translation_parallax < config.min_parallax_px:
        return RelativePose(
            Status.POSE_FAILED,
            f"the rotation alone explains the matches (median displacement {translation_parallax:.2f} px after "
            f"undoing it < min_parallax_px {config.min_parallax_px:g}): translation not observable",
            inliers=np.zeros(count, bool), num_matches=count, parallax_px=parallax,
        )  # fmt: skip
    return RelativePose(Status.OK, "", R, t / max(np.linalg.norm(t), 1e-12), inliers, count, parallax)


def _normalised_matches(
    points0: np.ndarray, points1: np.ndarray, camera: CameraModel | None, camera1: CameraModel | None,
    config: TrackerConfig,
) -> RelativePose | tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """The usable rows of the matches, their normalised coordinates in both cameras and the mean focal
    length; or the failure (no intrinsics, too few finite matches, degenerate points, undistortion)."""
    count = points0.shape[0]
    none = np.zeros(count, bool)
    for cam in (camera, camera1):
        problem = "no camera intrinsics" if cam is None else cam.problem()
        if problem:
            return RelativePose(Status.NO_INTRINSICS, problem, inliers=none, num_matches=count)
    if count < config.min_matches:
        return RelativePose(
            Status.TOO_FEW_MATCHES, f"{count} matches < min_matches {config.min_matches}", inliers=none, num_matches=count
        )
    rows, problem = usable_points(points0, points1, 5)
    if len(rows) < config.min_matches:
        return RelativePose(
            Status.TOO_FEW_MATCHES,
            f"{len(rows)} matches with finite coordinates ({count - len(rows)} NaN or infinite) < min_matches "
            f"{config.min_matches}",
            inliers=none, num_matches=count,
        )  # fmt: skip
    if problem:
        return RelativePose(Status.POSE_FAILED, problem, inliers=none, num_matches=count)
    normalised0, problem0 = call_opencv(camera.undistort, points0[rows])
    normalised1, problem1 = call_opencv(camera1.undistort, points1[rows])
    if problem0 or problem1 or not (np.isfinite(normalised0).all() and np.isfinite(normalised1).all()):
        problem = problem0 or problem1 or "undistortion gave NaN or infinite coordinates"
        return RelativePose(Status.POSE_FAILED, problem, inliers=none, num_matches=count)
    return rows, normalised0, normalised1, 0.5 * (camera.focal + camera1.focal)


def _essential_pose(
    normalised0: np.ndarray, normalised1: np.ndarray, focal: float, config: TrackerConfig
) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None, str]:
    """(R, t (3,), inlier mask over the rows, "") from RANSAC on the essential matrix and the cheirality
    check, or (None, None, None, reason)."""
    found, problem = call_opencv(
        cv2.findEssentialMat, normalised0, normalised1, np.eye(3), method=cv2.RANSAC, prob=config.ransac_confidence,
        threshold=config.ransac_threshold_px / focal,
    )  # fmt: skip
    E, mask = found if found is not None else (None, None)
    if E is None or E.shape[0] < 3 or mask is None or not np.isfinite(E).all():
        return None, None, None, problem or "no essential matrix found"
    # Several solutions may be stacked (3k x 3): the first is RANSAC's best. The cheirality check's
    # distance bound is in baselines; OpenCV's default (50) drops every point of a short-baseline pair
    # (2 cm between video frames, scene 1.5 m away), so points only need to lie in front of both cameras.
    found, problem = call_opencv(
        cv2.recoverPose, E[:3], normalised0, normalised1, np.eye(3), distanceThresh=CHEIRALITY_DISTANCE, mask=mask.copy()
    )
    if found is None or not (np.isfinite(found[1]).all() and np.isfinite(found[2]).all()):
        return None, None, None, problem or "recoverPose gave a non-finite pose"
    _, R, t, mask, _ = found
    return R, t.reshape(3), mask.reshape(-1) > 0, ""


def _rotation_residual(normalised0: np.ndarray, normalised1: np.ndarray) -> float:
    """Median distance (normalised coordinates) between the points of image 1 and those of image 0
    turned by the rotation that best maps the rays of image 0 onto those of image 1 (Kabsch)."""
    rays0, rays1 = (np.c_[n, np.ones(len(n))] for n in (normalised0, normalised1))
    rays0 /= np.linalg.norm(rays0, axis=1, keepdims=True)
    rays1 /= np.linalg.norm(rays1, axis=1, keepdims=True)
    U, _, Vt = np.linalg.svd(rays1.T @ rays0)
    R = U @ np.diag([1.0, 1.0, np.linalg.det(U @ Vt)]) @ Vt
    turned = rays0 @ R.T
    with np.errstate(divide="ignore", invalid="ignore"):
        residual = np.linalg.norm(normalised1 - turned[:, :2] / turned[:, 2:], axis=1)
    return float(np.median(np.where(turned[:, 2] > 0, residual, np.inf)))


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
        self._periods: deque[float] = deque(maxlen=FRAME_PERIOD_WINDOW)  # recent stamp steps, seconds

    @property
    def frame_period(self) -> float | None:
        """Median of the recent stamp steps in seconds (None before two stamped frames)."""
        return float(np.median(self._periods)) if self._periods else None

    def max_gap(self) -> tuple[float | None, str]:
        """The largest stamp step that is not a gap now (None: no limit) and how it was set."""
        config = self.config
        if config.max_frame_gap:
            return config.max_frame_gap, f"max_frame_gap {config.max_frame_gap:g} s"
        period = self.frame_period
        if config.frame_gap_periods and period is not None:
            return config.frame_gap_periods * period, (
                f"frame_gap_periods {config.frame_gap_periods:g} x median frame period {period:.3f} s")
        return None, "no limit yet"

    def _check_gap(self, previous: float | None, stamp: float | None) -> str:
        """Why the step from ``previous`` to ``stamp`` is a gap ('' when it is not); records the step."""
        if previous is None or stamp is None:
            return ""
        step = stamp - previous
        limit, source = self.max_gap()
        if step > 0:
            self._periods.append(step)  # gaps too: a stream that slows down for good sets a new rate
        if step <= 0 or (limit is not None and step > limit):
            bound = f"0 to {limit:.3f} s ({source})" if limit is not None else "more than 0 s"
            return f"stamp jumped by {step:+.3f} s (allowed: {bound})"
        return ""

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
        keypoints_t, descriptors_t = self._frame_tensors(keypoints, descriptors, scores, image_size)
        current_keypoints = keypoints_t.cpu().numpy()
        count = current_keypoints.shape[0]
        previous = self._previous
        reason = self._check_gap(None if previous is None else previous.stamp, stamp)
        if previous is None or reason:
            return self._restart(current_keypoints, descriptors_t, stamp, reason)
        config = self.config
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


    def _frame_tensors(
        self, keypoints: Any, descriptors: Any, scores: Any, image_size: tuple[int, int] | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Keypoints (N, 2) and descriptors (N, D) on the device, checked, bucketed when configured."""
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
        return keypoints_t, descriptors_t

    def _restart(
        self, keypoints: np.ndarray, descriptors: torch.Tensor, stamp: float | None, gap_reason: str
    ) -> TrackingResult:
        """The first frame, or the first after a gap: every keypoint starts a track, the old ones end."""
        previous = self._previous
        count = keypoints.shape[0]
        ended = previous.track_ids.copy() if previous is not None else np.zeros(0, np.uint64)
        ids = self._new_ids(count)
        self._previous = _Frame(keypoints, descriptors, ids, np.ones(count, np.uint32), stamp)
        return TrackingResult(
            status=Status.GAP if previous is not None else Status.FIRST_FRAME,
            reason=gap_reason or "first frame: tracks start here",
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
