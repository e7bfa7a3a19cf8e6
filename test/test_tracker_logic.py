"""superpoint_training.odometry.tracking on synthetic scenes: known camera motion, points projected through a
distorting camera, one random unit descriptor per 3D point (no ROS, no network)."""

from __future__ import annotations

import types

import cv2
import numpy as np
import pytest
import torch

from superpoint_ros.tracks_message import tracks_from_message, tracks_to_message
from superpoint_training.odometry.camera import CameraModel
from superpoint_training.odometry.tracking import (
    FrameTracker,
    PoseAccumulator,
    Status,
    TrackerConfig,
    angle_between_deg,
    bucket_indices,
    estimate_relative_pose,
    rotation_angle_deg,
)

K = np.array([[520.0, 0.0, 325.0], [0.0, 521.0, 250.0], [0.0, 0.0, 1.0]])
DISTORTION = np.array([0.23, -0.78, -0.003, -0.0001, 0.92])  # the TUM fr2 values: strong radial terms
SIZE = (480, 640)
CAMERA = CameraModel(K, DISTORTION, "plumb_bob", SIZE)


def rotation(rx: float, ry: float, rz: float) -> np.ndarray:
    return cv2.Rodrigues(np.array([rx, ry, rz], np.float64))[0]


class Scene:
    """3D points in front of the first camera, each with a fixed random unit descriptor."""

    def __init__(self, count: int = 400, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.points = np.c_[rng.uniform(-2.5, 2.5, count), rng.uniform(-1.8, 1.8, count), rng.uniform(4, 9, count)]
        descriptors = rng.normal(size=(count, 64)).astype(np.float32)
        self.descriptors = descriptors / np.linalg.norm(descriptors, axis=1, keepdims=True)
        self.rng = rng

    def view(self, R: np.ndarray, t: np.ndarray, camera: CameraModel = CAMERA, shuffle: bool = True):
        """Keypoints (N, 2), descriptors, and the point index of each, for the camera x = R X + t."""
        local = self.points @ R.T + t
        pixels, _ = cv2.projectPoints(self.points, cv2.Rodrigues(R)[0], t, camera.K, camera.distortion)
        pixels = pixels[:, 0]
        visible = (local[:, 2] > 0.1) & (pixels[:, 0] >= 0) & (pixels[:, 0] < SIZE[1] - 1)
        visible &= (pixels[:, 1] >= 0) & (pixels[:, 1] < SIZE[0] - 1)
        index = np.nonzero(visible)[0]
        if shuffle:
            index = self.rng.permutation(index)
        return pixels[index].astype(np.float32), self.descriptors[index], index


MOTION_R = rotation(0.01, -0.04, 0.02)
MOTION_T = np.array([0.25, -0.05, 0.1])


def test_undistort_inverts_the_distortion_models():
    scene = Scene(200)
    normalised = scene.points[:, :2] / scene.points[:, 2:]
    zero = np.zeros(3)
    for model, coefficients in (
        ("plumb_bob", DISTORTION),
        ("rational_polynomial", np.array([0.1, -0.05, 0.001, 0.002, 0.01, 0.02, -0.01, 0.005])),
    ):
        camera = CameraModel(K, coefficients, model)
        pixels, _ = cv2.projectPoints(scene.points, zero, zero, K, coefficients)
        np.testing.assert_allclose(camera.undistort(pixels[:, 0]), normalised, atol=1e-6)
    fisheye = CameraModel(K, np.array([0.05, -0.01, 0.002, -0.001]), "equidistant")
    pixels, _ = cv2.fisheye.projectPoints(scene.points[None], zero, zero, K, fisheye.distortion)
    np.testing.assert_allclose(fisheye.undistort(pixels[0]), normalised, atol=1e-6)
    plain = CameraModel.from_intrinsics(500, 500, 320, 240)
    np.testing.assert_allclose(plain.undistort(np.array([[820.0, 240.0]])), [[1.0, 0.0]])


def test_relative_pose_recovered_with_outliers():
    scene = Scene(400)
    kp0, _, idx0 = scene.view(np.eye(3), np.zeros(3), shuffle=False)
    kp1, _, idx1 = scene.view(MOTION_R, MOTION_T, shuffle=False)
    common = np.intersect1d(idx0, idx1)
    p0 = kp0[np.searchsorted(idx0, common)]
    p1 = kp1[np.searchsorted(idx1, common)].copy()
    outliers = np.random.default_rng(1).choice(len(common), len(common) // 5, replace=False)
    p1[outliers] = np.random.default_rng(2).uniform([0, 0], [640, 480], (len(outliers), 2))
    pose = estimate_relative_pose(p0, p1, CAMERA, TrackerConfig())
    assert pose.status == Status.OK, pose.reason
    assert rotation_angle_deg(pose.R @ MOTION_R.T) < 0.1
    assert angle_between_deg(pose.t, MOTION_T) < 1.0
    assert abs(np.linalg.norm(pose.t) - 1.0) < 1e-9
    assert pose.inliers[outliers].mean() < 0.05  # a random point may fall on its epipolar line
    assert pose.inliers.sum() >= 0.9 * (len(common) - len(outliers))
    # T_prev_cur is the current camera's pose in the previous frame: its centre lies along -R^T t
    centre = -MOTION_R.T @ MOTION_T
    assert angle_between_deg(pose.T_prev_cur[:3, 3], centre) < 1.0


def test_track_ids_persist_and_end_when_points_are_lost():
    scene = Scene(300)
    tracker = FrameTracker(TrackerConfig(), device="cpu")
    poses = [(np.eye(3), np.zeros(3)), (MOTION_R, MOTION_T), (MOTION_R @ MOTION_R, MOTION_R @ MOTION_T + MOTION_T)]
    point_to_id: dict[int, int] = {}
    for frame, (R, t) in enumerate(poses):
        kp, desc, index = scene.view(R, t)
        if frame == 2:  # points 0..49 disappear (occluded): their tracks must end here
            keep = index >= 50
            kp, desc, index = kp[keep], desc[keep], index[keep]
        result = tracker.process(torch.from_numpy(kp), torch.from_numpy(desc), CAMERA, stamp=0.1 * frame)
        if frame == 0:
            assert result.status == Status.FIRST_FRAME and result.num_matches == 0
            assert len(np.unique(result.keypoint_track_ids)) == len(kp)
        else:
            assert result.status == Status.OK, result.reason
            matched_points = index[np.nonzero(np.isin(result.keypoint_track_ids, result.track_ids))[0]]
            assert len(matched_points) == result.num_matches > 0.8 * len(kp)
            # every matched keypoint kept the id its 3D point had in the previous frame
            position_of = {tuple(p): i for i, p in zip(index, kp.tolist(), strict=True)}
            for track_id, position, length in zip(result.track_ids, result.positions.tolist(), result.lengths, strict=True):
                point = position_of[tuple(position)]
                assert point_to_id[point] == track_id
                assert 1 <= length <= frame + 1
            assert (result.lengths == frame + 1).mean() > 0.8
        if frame == 2:
            ended_points = {p for p, i in point_to_id.items() if i in set(result.ended_track_ids.tolist())}
            lost = {p for p in point_to_id if p < 50}
            assert lost <= ended_points
        point_to_id = dict(zip(index.tolist(), result.keypoint_track_ids.tolist(), strict=True))
    all_ids = result.keypoint_track_ids
    assert len(np.unique(all_ids)) == len(all_ids)


def test_too_few_matches_zero_intrinsics_and_gaps_are_reported_as_lost():
    scene = Scene(300)
    kp0, desc0, _ = scene.view(np.eye(3), np.zeros(3))
    kp1, desc1, _ = scene.view(MOTION_R, MOTION_T)
    tracker = FrameTracker(TrackerConfig(max_frame_gap=0.5), device="cpu")
    tracker.process(kp0, desc0, CAMERA, stamp=1.0)
    # a frame with unrelated descriptors: too few matches, no pose
    other = Scene(300, seed=7)
    kp_other, desc_other, _ = other.view(np.eye(3), np.zeros(3))
    result = tracker.process(kp_other, desc_other, CAMERA, stamp=1.1)
    assert result.status == Status.TOO_FEW_MATCHES and result.lost and result.pose.R is None
    assert "min_matches" in result.reason
    # zero intrinsics (ROS "uncalibrated"): tracks still come out, the pose is refused
    tracker.reset()
    tracker.process(kp0, desc0, None, stamp=2.0)
    zero = CameraModel(np.zeros((3, 3)), np.zeros(5))
    result = tracker.process(kp1, desc1, zero, stamp=2.1)
    assert result.status == Status.NO_INTRINSICS and result.lost
    assert "focal" in result.reason and result.num_matches > 100 and not result.inliers.any()
    result = tracker.process(kp0, desc0, None, stamp=2.2)
    assert result.status == Status.NO_INTRINSICS and "no camera" in result.reason
    # a gap in the stream: all tracks end, nothing is matched across it
    result = tracker.process(kp1, desc1, CAMERA, stamp=5.0)
    assert result.status == Status.GAP and result.num_matches == 0 and len(result.ended_track_ids) == len(kp0)
    result = tracker.process(kp1, desc1, CAMERA, stamp=4.0)  # stamp going backwards
    assert result.status == Status.GAP
    # recovery
    result = tracker.process(kp0, desc0, CAMERA, stamp=4.1)
    assert result.status == Status.OK


def test_still_camera_is_low_parallax_and_the_accumulator_chains_steps():
    scene = Scene(300)
    kp0, desc0, _ = scene.view(np.eye(3), np.zeros(3))
    tracker = FrameTracker(TrackerConfig(), device="cpu")
    tracker.process(kp0, desc0, CAMERA)
    result = tracker.process(kp0, desc0, CAMERA)
    assert result.status == Status.LOW_PARALLAX and not result.lost
    np.testing.assert_allclose(result.pose.T_prev_cur, np.eye(4))
    # two known steps, each scaled to its true length, give the true pose of the third camera
    R2, t2 = MOTION_R @ MOTION_R, MOTION_R @ MOTION_T + MOTION_T
    accumulator = PoseAccumulator()
    tracker = FrameTracker(TrackerConfig(), device="cpu")
    previous = (np.eye(3), np.zeros(3))
    for R, t in ((np.eye(3), np.zeros(3)), (MOTION_R, MOTION_T), (R2, t2)):
        kp, desc, _ = scene.view(R, t)
        result = tracker.process(kp, desc, CAMERA)
        if result.pose is not None:
            R_step = R @ previous[0].T
            t_step = t - R_step @ previous[1]
            accumulator.step(result.pose, scale=float(np.linalg.norm(t_step)))
        previous = (R, t)
    centre = -R2.T @ t2  # the third camera's centre in the first camera's frame
    np.testing.assert_allclose(accumulator.pose[:3, 3], centre, atol=5e-3)
    assert rotation_angle_deg(accumulator.pose[:3, :3] @ R2) < 0.1


def test_bucketing_keeps_the_best_points_per_cell():
    rng = np.random.default_rng(0)
    keypoints = torch.from_numpy(rng.uniform([0, 0], [639, 479], (2000, 2)).astype(np.float32))
    scores = torch.from_numpy(rng.uniform(size=2000).astype(np.float32))
    keep = bucket_indices(keypoints, scores, SIZE, (4, 5), 7).numpy()
    xy = keypoints.numpy() + 0.5  # cell of a pixel centre: (x + 0.5) * cols / width
    all_cells = (xy[:, 1] // 120) * 5 + xy[:, 0] // 128
    cells = all_cells[keep]
    assert np.bincount(cells.astype(int), minlength=20).max() == 7 and len(keep) == 140
    for cell in range(20):
        members = np.nonzero(all_cells == cell)[0]
        best = members[np.argsort(-scores.numpy()[members])[:7]]
        assert set(best) == set(keep[cells == cell])
    # through the tracker: the kept keypoints are bucketed too
    scene = Scene(400)
    kp, desc, _ = scene.view(np.eye(3), np.zeros(3))
    tracker = FrameTracker(TrackerConfig(bucket_rows=2, bucket_cols=2, bucket_max_per_cell=10), device="cpu")
    result = tracker.process(kp, desc, CAMERA, scores=np.linspace(1, 0, len(kp)), image_size=SIZE)
    assert result.num_keypoints == 40


def test_camera_model_sources_and_checks(tmp_path):
    text = tmp_path / "camera.txt"
    text.write_text("# fx fy cx cy k1 k2 p1 p2 k3\n520.9 521.0 325.1 249.7 0.23 -0.78 -0.003 -0.0001 0.92\n")
    camera = CameraModel.from_file(text)
    assert camera.K[0, 0] == pytest.approx(520.9) and camera.distortion.shape == (5,) and camera.problem() is None
    yaml_file = tmp_path / "camera.yaml"
    yaml_file.write_text(
        "image_width: 640\nimage_height: 480\ncamera_matrix: {rows: 3, cols: 3, data: [500, 0, 320, 0, 500, 240, 0, 0, 1]}\n"
        "distortion_model: equidistant\ndistortion_coefficients: {rows: 1, cols: 4, data: [0.1, 0.0, 0.0, 0.0]}\n"
    )
    fisheye = CameraModel.from_file(yaml_file)
    assert fisheye.distortion_model == "equidistant" and fisheye.image_size == (480, 640)
    info = types.SimpleNamespace(k=[0.0] * 9, d=[], distortion_model="", height=480, width=640)
    assert "uncalibrated" in CameraModel.from_camera_info(info).problem()
    info.k = K.reshape(-1).tolist()
    info.distortion_model = "plumb_bob"
    info.d = DISTORTION.tolist()
    assert CameraModel.from_camera_info(info).problem() is None
    info.distortion_model = "kannala_brandt_9"
    assert "distortion model" in CameraModel.from_camera_info(info).problem()
    with pytest.raises(ValueError, match="fx fy cx cy"):
        bad = tmp_path / "bad.txt"
        bad.write_text("520 521\n")
        CameraModel.from_file(bad)
    with pytest.raises(ValueError, match="min_matches"):
        TrackerConfig(min_matches=2)


def test_tracks_message_round_trip_with_rosbags_types():
    from rosbags.typesys import Stores, get_typestore

    from superpoint_ros.message_types import register_rosbags_types

    typestore = get_typestore(Stores.ROS2_JAZZY)
    register_rosbags_types(typestore)
    Tracks = typestore.types["superpoint_ros/msg/Tracks"]
    Header = typestore.types["std_msgs/msg/Header"]
    Time = typestore.types["builtin_interfaces/msg/Time"]
    scene = Scene(200)
    tracker = FrameTracker(TrackerConfig(), device="cpu")
    kp0, desc0, _ = scene.view(np.eye(3), np.zeros(3))
    kp1, desc1, _ = scene.view(MOTION_R, MOTION_T)
    tracker.process(kp0, desc0, CAMERA, stamp=10.25)
    result = tracker.process(kp1, desc1, CAMERA, stamp=10.35)
    header = Header(stamp=Time(sec=10, nanosec=350_000_000), frame_id="camera")
    msg = tracks_to_message(Tracks, header, result, SIZE, time_cls=Time)
    raw = typestore.serialize_cdr(msg, "superpoint_ros/msg/Tracks")
    decoded = tracks_from_message(typestore.deserialize_cdr(raw, "superpoint_ros/msg/Tracks"))
    np.testing.assert_array_equal(decoded.track_ids, result.track_ids)
    np.testing.assert_array_equal(decoded.positions, result.positions)
    np.testing.assert_array_equal(decoded.previous_positions, result.previous_positions)
    np.testing.assert_array_equal(decoded.inliers, result.inliers)
    np.testing.assert_array_equal(decoded.ended_track_ids, result.ended_track_ids)
    assert decoded.status == Status.OK and decoded.image_size == SIZE
    assert decoded.previous_stamp == pytest.approx(10.25, abs=1e-6) and len(decoded) == result.num_matches


def test_features_without_descriptors_are_refused():
    tracker = FrameTracker(TrackerConfig(), device="cpu")
    with pytest.raises(ValueError, match="no descriptors"):
        tracker.process(np.zeros((5, 2), np.float32), np.zeros((5, 0), np.float32), CAMERA)
    with pytest.raises(ValueError, match="do not match"):
        tracker.process(np.zeros((5, 2), np.float32), np.zeros((4, 8), np.float32), CAMERA)


def test_gap_limit_follows_the_stream_rate():
    """No max_frame_gap: a gap is 5 median frame periods, so a 2 Hz camera keeps its tracks and a
    30 Hz one restarts after half a second."""
    scene = Scene(300)
    kp, desc, _ = scene.view(np.eye(3), np.zeros(3))
    rng = np.random.default_rng(1)
    for rate, late in ((2.0, 3.0), (30.0, 0.5)):
        tracker = FrameTracker(TrackerConfig(), device="cpu")
        assert tracker.config.max_frame_gap is None
        stamp = 100.0
        for _ in range(20):
            result = tracker.process(kp, desc, CAMERA, stamp=stamp)
            assert result.status in (Status.FIRST_FRAME, Status.LOW_PARALLAX), (rate, result.reason)
            stamp += (1.0 + rng.uniform(-0.2, 0.2)) / rate  # jitter of a real driver
        assert tracker.frame_period == pytest.approx(1.0 / rate, rel=0.2)
        result = tracker.process(kp, desc, CAMERA, stamp=stamp + late)
        assert result.status == Status.GAP and "median frame period" in result.reason
    # a fixed max_frame_gap takes over; both off: only stamps going backwards are gaps
    fixed = FrameTracker(TrackerConfig(max_frame_gap=10.0), device="cpu")
    off = FrameTracker(TrackerConfig(frame_gap_periods=None), device="cpu")
    for stamp in (1.0, 1.1, 1.2, 9.0):
        assert fixed.process(kp, desc, CAMERA, stamp=stamp).status != Status.GAP
        assert off.process(kp, desc, CAMERA, stamp=stamp).status != Status.GAP
    assert off.process(kp, desc, CAMERA, stamp=8.0).status == Status.GAP
    with pytest.raises(ValueError, match="frame_gap_periods"):
        TrackerConfig(frame_gap_periods=0.5)


def camera_info_fields(**fields):
    """A sensor_msgs/CameraInfo look-alike (the fields CameraModel.from_camera_info reads)."""
    roi = types.SimpleNamespace(x_offset=0, y_offset=0, width=0, height=0, do_rectify=False)
    info = dict(height=SIZE[0], width=SIZE[1], distortion_model="plumb_bob", k=K.reshape(-1).tolist(),
                d=DISTORTION.tolist(), r=np.eye(3).reshape(-1).tolist(), p=np.c_[K, np.zeros(3)].reshape(-1).tolist(),
                binning_x=0, binning_y=0, roi=roi)
    info.update(fields)
    return types.SimpleNamespace(**info)


def test_camera_model_rectified_streams_use_p_and_r_and_are_undistorted_once():
    """image_rect pixels project through P in the frame R rotates to: the model returns the rays in
    the camera frame, with no second undistortion, whatever D the CameraInfo still carries."""
    scene = Scene(200)
    normalised = scene.points[:, :2] / scene.points[:, 2:]
    R_rect = rotation(0.02, -0.03, 0.01)
    P = np.array([[480.0, 0.0, 330.0, -36.0], [0.0, 480.0, 245.0, 0.0], [0.0, 0.0, 1.0, 0.0]])  # a right camera
    rectified = (scene.points @ R_rect.T) @ P[:, :3].T
    rectified = rectified[:, :2] / rectified[:, 2:]
    info = camera_info_fields(r=R_rect.reshape(-1).tolist(), p=P.reshape(-1).tolist())
    camera = CameraModel.from_camera_info(info, rectified=True)
    assert camera.uses_projection and camera.problem() is None and camera.focal == pytest.approx(480.0)
    np.testing.assert_allclose(camera.undistort(rectified), normalised, atol=1e-9)
    # the raw model (K, D) on the same pixels is far off: it would undistort a second time
    raw = CameraModel.from_camera_info(info)
    assert not raw.uses_projection and np.abs(raw.undistort(rectified) - normalised).max() > 1e-2
    # a rectifier's own CameraInfo (D all zero): rectified without being told
    zero_d = CameraModel.from_camera_info(camera_info_fields(d=[0.0] * 5, r=R_rect.reshape(-1).tolist(),
                                                             p=P.reshape(-1).tolist()))
    assert zero_d.uses_projection
    np.testing.assert_allclose(zero_d.undistort(rectified), normalised, atol=1e-9)
    # unusable projections are refused with a reason
    bad = CameraModel.from_camera_info(camera_info_fields(r=(2 * np.eye(3)).reshape(-1).tolist()), rectified=True)
    assert "not a rotation" in bad.problem()
    assert "P" in CameraModel(K, rectified=True, P=np.zeros((3, 4)) - 1).problem()


def test_camera_model_honours_binning_and_roi():
    """A 2x2-binned image of a 200x300 region at (40, 60) of the raw 640x480 sensor: the published
    pixels map back to the full-resolution pixels that the calibration describes."""
    scene = Scene(400)
    normalised = scene.points[:, :2] / scene.points[:, 2:]
    zero = np.zeros(3)
    full, _ = cv2.projectPoints(scene.points, zero, zero, K, DISTORTION)
    full = full[:, 0]
    roi = types.SimpleNamespace(x_offset=60, y_offset=40, width=300, height=200, do_rectify=False)
    camera = CameraModel.from_camera_info(camera_info_fields(binning_x=2, binning_y=2, roi=roi))
    assert camera.problem() is None and camera.output_size == (100, 150) and camera.image_size == SIZE
    assert camera.focal == pytest.approx(0.5 * (K[0, 0] + K[1, 1]) / 2)
    # full-resolution pixel centre = 2 u + 0.5 + offset
    published = np.c_[(full[:, 0] - 60 - 0.5) / 2, (full[:, 1] - 40 - 0.5) / 2]
    np.testing.assert_allclose(camera.to_full_resolution(published), full, atol=1e-9)
    np.testing.assert_allclose(camera.undistort(published), normalised, atol=1e-6)
    plain = CameraModel.from_camera_info(camera_info_fields())
    assert plain.output_size == SIZE and plain.binning == (1, 1) and plain.roi is None
    outside = types.SimpleNamespace(x_offset=600, y_offset=0, width=100, height=100, do_rectify=False)
    assert "does not fit" in CameraModel.from_camera_info(camera_info_fields(roi=outside)).problem()


def test_degenerate_matches_are_a_pose_failure_not_an_exception():
    """Every keypoint at one pixel in each frame (distinct descriptors, so they match): no pose."""
    scene = Scene(100)
    _, desc, _ = scene.view(np.eye(3), np.zeros(3), shuffle=False)
    count = len(desc)
    tracker = FrameTracker(TrackerConfig(), device="cpu")
    tracker.process(np.full((count, 2), 100.0, np.float32), desc, CAMERA, stamp=1.0)
    result = tracker.process(np.tile(np.float32([[180.0, 130.0]]), (count, 1)), desc, CAMERA, stamp=1.1)
    assert result.status == Status.POSE_FAILED and result.lost and result.num_matches == count
    assert result.reason and not result.inliers.any()
