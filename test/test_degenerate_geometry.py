"""Degenerate matched points give each caller's failure result with a reason, never an exception.

OpenCV 5.1 raises ``cv2.error`` (``solvePoly``) in ``findEssentialMat`` on collinear points and on a
pure rotation where 4.x returned no solution; both releases raise on empty input. Each path is fed
the same degenerate sets on whichever OpenCV is installed, and ``cv2.error`` is also injected, so
that the catch is tested on a release that does not raise by itself.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from superpoint_training.common.geometry_guard import call_opencv, find_homography, usable_points
from superpoint_training.data.geometry import warp_points
from superpoint_training.evaluation.metrics import homography_estimation
from superpoint_training.odometry.camera import CameraModel
from superpoint_training.odometry.tracking import FrameTracker, Status, TrackerConfig, estimate_relative_pose

K = np.array([[300.0, 0.0, 160.0], [0.0, 300.0, 120.0], [0.0, 0.0, 1.0]])
PLAIN = CameraModel(K)
DISTORTED = CameraModel(K, np.array([0.1, -0.05, 0.001, 0.002, 0.01]), "plumb_bob")
CONFIG = TrackerConfig()
LOST_WITHOUT_POSE = {Status.TOO_FEW_MATCHES, Status.TOO_FEW_INLIERS, Status.POSE_FAILED}


def project(points: np.ndarray, R: np.ndarray, t: np.ndarray, camera: CameraModel) -> np.ndarray:
    pixels, _ = cv2.projectPoints(points, cv2.Rodrigues(R)[0], t, camera.K, camera.distortion)
    return pixels[:, 0]


def scene(count: int = 60, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.c_[rng.uniform(-2, 2, count), rng.uniform(-1.5, 1.5, count), rng.uniform(4, 8, count)]


def moving_pair(camera: CameraModel = PLAIN) -> tuple[np.ndarray, np.ndarray]:
    points = scene()
    R = cv2.Rodrigues(np.array([0.01, -0.03, 0.02]))[0]
    return project(points, np.eye(3), np.zeros(3), camera), project(points, R, np.array([0.3, -0.05, 0.1]), camera)


def degenerate_sets(camera: CameraModel = PLAIN) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Matched pixel points (N, 2) of two images that no solver can use; enough rows for min_matches."""
    p0, p1 = moving_pair()
    line = np.c_[np.linspace(20, 300, 40), 0.5 * np.linspace(20, 300, 40) + 10]
    points = scene()
    rotated = project(points, cv2.Rodrigues(np.array([0.02, 0.08, -0.01]))[0], np.zeros(3), camera)
    return {
        "fewer than the solver needs": (p0[:3], p1[:3]),
        "all identical": (np.tile([[100.0, 80.0]], (40, 1)), np.tile([[130.0, 90.0]], (40, 1))),
        "all on one line": (line, line + [25.0, 12.5]),
        "duplicated pairs": (np.repeat(p0[:3], 14, axis=0), np.repeat(p1[:3], 14, axis=0)),
        "NaN coordinates": (np.full_like(p0, np.nan), p1),
        "inf coordinates": (p0, np.tile([[np.inf, 5.0], [-np.inf, np.inf]], (len(p1) // 2, 1))),
        "empty": (np.zeros((0, 2)), np.zeros((0, 2))),
        "pure rotation": (project(points, np.eye(3), np.zeros(3), camera), rotated),
    }


@pytest.fixture
def opencv_raises(monkeypatch):
    """Make one OpenCV function raise cv2.error as OpenCV 5.1's findEssentialMat does."""

    def install(name: str, module=cv2):
        def raising(*args, **kwargs):
            raise cv2.error("OpenCV(5.1.0) mathfuncs.cpp:1601: error: (-215:Assertion failed) injected in function 'solvePoly'")

        raising.__name__ = name
        monkeypatch.setattr(module, name, raising)

    return install


def test_a_moving_pair_still_gives_a_pose():
    for camera in (PLAIN, DISTORTED):
        pose = estimate_relative_pose(*moving_pair(camera), camera, CONFIG)
        assert pose.status == Status.OK, pose.reason
        assert pose.num_inliers >= 55


@pytest.mark.parametrize("name", list(degenerate_sets()))
@pytest.mark.parametrize("camera", [PLAIN, DISTORTED], ids=["pinhole", "distorted"])
def test_relative_pose_on_degenerate_points_fails_with_a_reason(name, camera):
    points0, points1 = degenerate_sets(camera)[name]
    pose = estimate_relative_pose(points0, points1, camera, CONFIG)
    assert pose.status in LOST_WITHOUT_POSE, (name, pose.status, pose.reason)
    assert not pose.has_pose and pose.reason
    assert pose.inliers.shape == (len(points0),) and pose.num_matches == len(points0)
    if name in ("all identical", "all on one line", "duplicated pairs"):
        assert pose.status == Status.POSE_FAILED and ("distinct" in pose.reason or "line" in pose.reason)
    if name == "pure rotation":  # 4.x: an essential matrix without cheirality inliers; 5.1: cv2.error
        assert pose.status in (Status.POSE_FAILED, Status.TOO_FEW_INLIERS)


def test_nan_points_are_left_out_and_the_rest_still_gives_a_pose():
    p0, p1 = moving_pair(DISTORTED)
    p0[[3, 17]] = np.nan
    p1[[5]] = -np.inf
    pose = estimate_relative_pose(p0, p1, DISTORTED, CONFIG)
    assert pose.status == Status.OK, pose.reason
    assert not pose.inliers[[3, 5, 17]].any() and pose.num_inliers >= 50
    p0[:45] = np.nan  # 15 finite matches left, fewer than min_matches 20
    pose = estimate_relative_pose(p0, p1, DISTORTED, CONFIG)
    assert pose.status == Status.TOO_FEW_MATCHES and "NaN or infinite" in pose.reason


@pytest.mark.parametrize("function", ["findEssentialMat", "recoverPose", "undistortPoints", "undistortPointsIter"])
def test_a_cv2_error_in_any_pose_step_is_pose_failed(function, opencv_raises):
    if not hasattr(cv2, function):
        pytest.skip(f"cv2.{function} does not exist in OpenCV {cv2.__version__}")
    opencv_raises(function)
    pose = estimate_relative_pose(*moving_pair(DISTORTED), DISTORTED, CONFIG)
    if function.startswith("undistort") and hasattr(cv2, "undistortPointsIter") != (function == "undistortPointsIter"):
        assert pose.status == Status.OK  # the other undistortion function is the one this OpenCV uses
        return
    assert pose.status == Status.POSE_FAILED and not pose.has_pose
    assert "injected" in pose.reason and "\n" not in pose.reason


def test_the_tracker_reports_the_frame_whose_pose_raised(opencv_raises):
    """The tracker node publishes Tracks and Odometry from this result: it must come back, with tracks."""
    p0, p1 = moving_pair()
    descriptors = np.random.default_rng(3).normal(size=(len(p0), 32)).astype(np.float32)
    descriptors /= np.linalg.norm(descriptors, axis=1, keepdims=True)
    tracker = FrameTracker(CONFIG)
    assert tracker.process(p0, descriptors, PLAIN, stamp=0.0).status == Status.FIRST_FRAME
    opencv_raises("findEssentialMat")
    result = tracker.process(p1, descriptors, PLAIN, stamp=0.1)
    assert result.status == Status.POSE_FAILED and result.lost and "findEssentialMat" in result.reason
    assert len(result) == len(p0) and not result.inliers.any()  # tracks continue, no pose step
    assert tracker.process(p1 + 0.01, descriptors, PLAIN, stamp=0.2).status == Status.LOW_PARALLAX


def test_usable_points_reasons():
    p0, p1 = moving_pair()
    rows, reason = usable_points(p0, p1, 5)
    assert reason == "" and np.array_equal(rows, np.arange(len(p0)))
    reasons = {name: usable_points(*points, 4)[1] for name, points in degenerate_sets().items()}
    assert "1 distinct" in reasons["all identical"] and "3 distinct" in reasons["duplicated pairs"]
    assert "one line" in reasons["all on one line"] and "0 distinct" in reasons["empty"]
    assert "60 with NaN" in reasons["NaN coordinates"]
    assert reasons["pure rotation"] == ""  # not degenerate for a homography: exactly one
    assert call_opencv(cv2.findHomography, np.zeros((0, 2)), np.zeros((0, 2)))[1].startswith("findHomography failed:")


def truth_pair() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    H = np.array([[1.05, 0.02, 8.0], [-0.03, 0.98, -5.0], [1e-4, -5e-5, 1.0]])
    points = np.random.default_rng(4).uniform([0, 0], [320, 240], (50, 2))
    return points, warp_points(points, H), H


@pytest.mark.parametrize("name", list(degenerate_sets()))
def test_homography_paths_on_degenerate_points_give_no_estimate(name):
    from superpoint_training.match_features_demo import _estimate

    points0, points1 = degenerate_sets()[name]
    if name == "pure rotation":  # a homography relates a pure rotation exactly: not degenerate here
        estimate, inliers, reason = find_homography(points0, points1, 3.0)
        assert estimate is not None and inliers.all() and reason == ""
        return
    estimate, inliers, reason = find_homography(points0, points1, 3.0)
    assert estimate is None and reason and inliers.shape == (len(points0),) and not inliers.any()
    assert _estimate(points0.astype(np.float32), points1.astype(np.float32))[0] is None
    matches = np.stack((np.arange(len(points0)), np.arange(len(points0))), axis=1)
    result = homography_estimation(points0, points1, matches, np.eye(3), (240, 320), orders=3)
    assert result["estimate"] is None and result["corner_error"] == float("inf")
    assert result["correct_e3"] == 0.0 and result["inliers"].shape == (len(points0),)


def test_homography_leaves_nan_rows_out_and_survives_a_cv2_error(opencv_raises):
    points0, points1, H = truth_pair()
    points1[[0, 9]] = np.nan
    matches = np.stack((np.arange(50), np.arange(50)), axis=1)
    result = homography_estimation(points0, points1, matches, H, (240, 320), orders=3)
    assert result["corner_error"] < 0.01 and result["correct_e1"] == 1.0
    assert not result["inliers"][[0, 9]].any() and result["inliers"].sum() == 48
    opencv_raises("findHomography")
    estimate, inliers, reason = find_homography(points0, points1, 3.0)
    assert estimate is None and not inliers.any() and "findHomography failed" in reason and "injected" in reason
    result = homography_estimation(points0, points1, matches, H, (240, 320), orders=3)
    assert result["estimate"] is None and result["correct_e5"] == 0.0
