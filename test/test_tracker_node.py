"""The colcon-built tracker node over real rclpy / Fast DDS (shared memory, this run's domain id).

A test client publishes CameraInfo and Features (synthetic scenes with known motion, then the
Extractor's features of real frames) and checks Tracks, Odometry, the inlier count and the status;
then the detector node upstream of the tracker, fed with images; then Ctrl-C.
Run with ``bash scripts/test.sh test/test_tracker_node.py``.
"""

from __future__ import annotations

import time
import types
from pathlib import Path

import cv2
import numpy as np
import pytest
from ros_fixtures import (
    PACKAGE_PREFIX,
    NodeProcess,
    RosHarness,
    features_class,
    image_message,
    write_params,
    write_random_weights,
)
from test_tracker_logic import CAMERA, MOTION_R, MOTION_T, SIZE, Scene

from superpoint_ros.features_message import features_to_message
from superpoint_ros.tracking import Status, angle_between_deg, rotation_angle_deg
from superpoint_ros.tracks_message import tracks_from_message
from superpoint_ros.vo import quaternion_to_matrix

pytestmark = pytest.mark.ros
TRACKER = PACKAGE_PREFIX / "lib" / "superpoint_ros" / "tracker_node"
DETECTOR = PACKAGE_PREFIX / "lib" / "superpoint_ros" / "detector_node"
NAMESPACE = "/tracker_test"
TUM = Path(__file__).resolve().parents[2] / "shared" / "data" / "tum_fr2_desk"
LOST_VARIANCE = 1e6
POSE_VARIANCE = 0.01
OPTICAL_TO_REP103 = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])


def require_tracker() -> None:
    if not TRACKER.exists():
        pytest.skip(f"no tracker_node in {TRACKER.parent} (run scripts/setup.sh, or scripts/test.sh)")
    features_class()


def camera_info(camera=CAMERA, zero: bool = False):
    from sensor_msgs.msg import CameraInfo

    info = CameraInfo(height=SIZE[0], width=SIZE[1], distortion_model="plumb_bob")
    info.header.frame_id = "camera_optical"
    info.k = [0.0] * 9 if zero else camera.K.reshape(-1).tolist()
    info.d = [] if zero else camera.distortion.tolist()
    return info


def header(seconds: float, frame_id: str = "camera_optical"):
    from builtin_interfaces.msg import Time
    from std_msgs.msg import Header

    sec = int(seconds)
    return Header(stamp=Time(sec=sec, nanosec=int(round((seconds - sec) * 1e9))), frame_id=frame_id)


def start_client(namespace: str) -> RosHarness:
    from diagnostic_msgs.msg import DiagnosticStatus
    from nav_msgs.msg import Odometry
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import CameraInfo
    from std_msgs.msg import UInt32

    Features = features_class()
    from superpoint_ros.msg import Tracks

    harness = RosHarness(f"client_{namespace.strip('/')}")
    harness.Features = Features
    harness.tracks = harness.collect(Tracks, f"{namespace}/tracks")
    harness.odometry = harness.collect(Odometry, f"{namespace}/odometry")
    harness.inliers = harness.collect(UInt32, f"{namespace}/inliers")
    harness.status = harness.collect(DiagnosticStatus, f"{namespace}/tracking_status")
    harness.features_pub = harness.node.create_publisher(Features, f"{namespace}/features", 10)
    harness.info_pub = harness.node.create_publisher(CameraInfo, f"{namespace}/camera_info", qos_profile_sensor_data)
    return harness


def send_info(harness: RosHarness, info) -> None:
    harness.wait_for_subscribers(harness.info_pub)
    for _ in range(3):  # best effort: send a few, like a camera driver does every frame
        harness.info_pub.publish(info)
        time.sleep(0.1)


def send(harness: RosHarness, keypoints, descriptors, seconds: float, image_size=SIZE) -> dict:
    """Publish one Features message and return what the tracker published for it."""
    harness.wait_for_subscribers(harness.features_pub)
    count = len(harness.status)
    features = types.SimpleNamespace(
        keypoints=np.asarray(keypoints, np.float32),
        scores=np.linspace(1.0, 0.1, len(keypoints), dtype=np.float32),
        descriptors=np.asarray(descriptors, np.float32),
        image_size=image_size,
        valid=None,
    )
    harness.features_pub.publish(features_to_message(harness.Features, header(seconds), features))
    n = count + 1
    harness.wait_for(
        lambda: min(len(harness.status), len(harness.tracks), len(harness.odometry), len(harness.inliers)) >= n,
        timeout=180,  # generous: a loaded 2-core machine
        what=f"tracker outputs for frame {n}",
    )
    status = harness.status[n - 1]
    values = {kv.key: kv.value for kv in status.values}
    return {
        "status": status.message,
        "level": status.level,
        "values": values,
        "tracks": harness.tracks[n - 1],
        "odometry": harness.odometry[n - 1],
        "inliers": harness.inliers[n - 1].data,
    }


@pytest.fixture(scope="module")
def tracker(tmp_path_factory):
    require_tracker()
    params = write_params(
        tmp_path_factory.mktemp("params") / "tracker.yaml",
        {"device": "cpu", "max_frame_gap": 0.5, "pose_variance": POSE_VARIANCE, "lost_variance": LOST_VARIANCE},
    )
    process = NodeProcess([TRACKER, "--ros-args", "-r", f"__ns:={NAMESPACE}", "--params-file", params])
    process.wait_for_output(r"tracking /tracker_test/features", timeout=90)
    yield process
    process.stop()


@pytest.fixture(scope="module")
def ros(tracker):
    harness = start_client(NAMESPACE)
    harness.wait_for_publishers(timeout=120)  # the tracker's outputs are matched before frame 1 goes out
    yield harness
    harness.close()


def pose_of(odometry) -> tuple[np.ndarray, np.ndarray]:
    p, q = odometry.pose.pose.position, odometry.pose.pose.orientation
    return quaternion_to_matrix(q.x, q.y, q.z, q.w), np.array([p.x, p.y, p.z])


def test_known_motion_gives_tracks_odometry_and_lost_statuses(ros):
    scene = Scene(400)
    kp0, desc0, _ = scene.view(np.eye(3), np.zeros(3))
    kp1, desc1, _ = scene.view(MOTION_R, MOTION_T)
    # no CameraInfo yet: the first frame starts the tracks, the second has tracks but no pose
    first = send(ros, kp0, desc0, 100.0)
    assert first["status"] == Status.FIRST_FRAME and len(first["tracks"].track_ids) == 0
    assert first["odometry"].header.frame_id == "odom" and first["odometry"].child_frame_id == "camera_optical"
    second = send(ros, kp0, desc0, 100.1)
    assert second["status"] == Status.NO_INTRINSICS and "no CameraInfo" in second["values"]["reason"]
    assert len(second["tracks"].track_ids) > 100 and second["inliers"] == 0
    assert second["odometry"].pose.covariance[0] == LOST_VARIANCE and second["level"] == b"\x02"
    # zero intrinsics (uncalibrated camera): still lost, with the reason
    send_info(ros, camera_info(zero=True))
    third = send(ros, kp0, desc0, 100.2)
    assert third["status"] == Status.NO_INTRINSICS and "uncalibrated" in third["values"]["reason"]
    # calibrated: the known motion comes out as odometry (REP 103 axes, unit step)
    send_info(ros, camera_info())
    moved = send(ros, kp1, desc1, 100.3)
    assert moved["status"] == Status.OK, moved["values"]
    tracks = tracks_from_message(moved["tracks"])
    assert tracks.status == Status.OK and len(tracks) > 0.8 * len(kp1)
    assert tracks.header.stamp.sec == 100 and tracks.previous_stamp == pytest.approx(100.2, abs=1e-6)
    assert (tracks.lengths == 4).mean() > 0.8  # tracks seen since the first frame kept their ids
    assert moved["inliers"] == tracks.inliers.sum() > 0.8 * len(tracks)
    R, t = pose_of(moved["odometry"])
    R_expected = OPTICAL_TO_REP103 @ MOTION_R.T
    t_expected = OPTICAL_TO_REP103 @ (-MOTION_R.T @ MOTION_T)
    assert rotation_angle_deg(R @ R_expected.T) < 0.2
    assert angle_between_deg(t, t_expected) < 1.5 and np.linalg.norm(t) == pytest.approx(1.0, abs=1e-6)
    assert moved["odometry"].pose.covariance[0] == POSE_VARIANCE
    # unrelated descriptors: too few matches; the odometry repeats the last pose, marked lost
    other = Scene(400, seed=5)
    kp_other, desc_other, _ = other.view(np.eye(3), np.zeros(3))
    lost = send(ros, kp_other, desc_other, 100.4)
    assert lost["status"] == Status.TOO_FEW_MATCHES and lost["odometry"].pose.covariance[0] == LOST_VARIANCE
    R_lost, t_lost = pose_of(lost["odometry"])
    np.testing.assert_allclose(t_lost, t, atol=1e-9)
    # a gap in the stream: every track ends
    gap = send(ros, kp0, desc0, 110.0)
    assert gap["status"] == Status.GAP and len(gap["tracks"].track_ids) == 0
    assert len(gap["tracks"].ended_track_ids) == len(kp_other)
    assert float(gap["values"]["mean_process_ms"]) > 0


def _real_frames(count: int) -> tuple[list[np.ndarray], list[float], object]:
    """Gray frames with stamps and their camera: the TUM snippet when present, else shifted crops of a photo."""
    from superpoint_ros.tracking import CameraModel

    if TUM.is_dir():
        files = sorted((TUM / "rgb").glob("*.png"))[:count]
        frames = [cv2.imread(str(f), cv2.IMREAD_GRAYSCALE) for f in files]
        return frames, [float(f.stem) for f in files], CameraModel.from_file(TUM / "camera.txt")
    from skimage import data

    photo = cv2.resize(cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2GRAY), (800, 600))
    frames = [np.ascontiguousarray(photo[40 + 4 * i : 520 + 4 * i, 60 + 6 * i : 700 + 6 * i]) for i in range(count)]
    return frames, [200.0 + 0.1 * i for i in range(count)], CAMERA


def test_extractor_features_of_real_frames(ros):
    from superpoint_training.model.extractor import Extractor

    frames, stamps, camera = _real_frames(3)
    send_info(ros, camera_info(camera))
    extractor = Extractor("default", "cpu", max_keypoints=512, warmup=False)
    trained = extractor.loaded.format != "untrained"
    results = []
    for frame, stamp in zip(frames, stamps, strict=True):
        f = extractor(frame).numpy()
        results.append(send(ros, f.keypoints, f.descriptors, stamp, image_size=frame.shape[:2]))
    assert results[0]["status"] in (Status.GAP, Status.FIRST_FRAME)
    for result, stamp in zip(results[1:], stamps[1:], strict=True):
        tracks = tracks_from_message(result["tracks"])
        assert tracks.image_size == frames[0].shape[:2]
        stamp_msg = result["odometry"].header.stamp
        assert stamp_msg.sec + 1e-9 * stamp_msg.nanosec == pytest.approx(stamp, abs=1e-6)
        assert len(tracks) > 0 and np.all(tracks.positions >= -0.5) and np.all(tracks.positions[:, 0] < 640)
        assert np.all(np.diff(np.sort(tracks.track_ids.astype(np.int64))) > 0)
        if trained:  # untrained weights give too few consistent matches for a pose
            assert result["status"] == Status.OK, result["values"]


def test_parameters_are_checked_at_run_time(ros):
    good = ros.set_parameters(f"{NAMESPACE}/superpoint_tracker", {"ratio": 0.8, "bucket_rows": 4})
    assert all(r.successful for r in good)
    bad = ros.set_parameters(f"{NAMESPACE}/superpoint_tracker", {"scale_source": "magic"})
    assert not bad[0].successful


def test_ctrl_c_exits_cleanly(tracker, ros):
    assert tracker.interrupt() == 0, tracker.output


def test_detector_node_upstream(tmp_path):
    """Images -> detector_node -> Features -> tracker_node -> Tracks and Odometry."""
    require_tracker()
    if not DETECTOR.exists():
        pytest.skip("no detector_node built")
    namespace = "/pipeline_test"
    weights = write_random_weights(tmp_path / "random_v6.pth")
    detector_params = write_params(
        tmp_path / "detector.yaml", {"weights": str(weights), "device": "cpu", "max_keypoints": 300, "frame_queue": 10}
    )
    tracker_params = write_params(tmp_path / "tracker.yaml", {"device": "cpu", "max_frame_gap": 0.0})
    detector = NodeProcess([DETECTOR, "--ros-args", "-r", f"__ns:={namespace}", "--params-file", detector_params])
    tracker = NodeProcess([TRACKER, "--ros-args", "-r", f"__ns:={namespace}", "--params-file", tracker_params])
    harness = None
    try:
        detector.wait_for_output(r"camera 0: ", timeout=120)
        tracker.wait_for_output(r"tracking /pipeline_test/features", timeout=120)
        from rclpy.qos import qos_profile_sensor_data
        from sensor_msgs.msg import Image

        harness = start_client(namespace)
        harness.wait_for_publishers(timeout=120)
        image_pub = harness.node.create_publisher(Image, f"{namespace}/image", qos_profile_sensor_data)
        harness.wait_for_subscribers(image_pub)
        frames, stamps, camera = _real_frames(3)
        send_info(harness, camera_info(camera))
        for index, (frame, stamp) in enumerate(zip(frames, stamps, strict=True)):
            sec = int(stamp)
            msg = image_message(frame, "mono8", sec, frame_id="camera_optical")
            msg.header.stamp.nanosec = int(round((stamp - sec) * 1e9))
            image_pub.publish(msg)
            harness.wait_for(
                lambda n=index + 1: min(len(harness.tracks), len(harness.odometry)) >= n,
                timeout=90,
                what=f"tracks and odometry for image {index + 1}",
            )
        assert harness.tracks[0].status == Status.FIRST_FRAME
        last = tracks_from_message(harness.tracks[-1])
        assert last.header.frame_id == "camera_optical" and len(last) > 0
        assert last.header.stamp.sec == int(stamps[-1]) and harness.odometry[-1].child_frame_id == "camera_optical"
        assert tracker.interrupt() == 0 and detector.interrupt() == 0
    finally:
        if harness is not None:
            harness.close()
        tracker.stop()
        detector.stop()
