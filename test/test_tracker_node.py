"""The colcon-built tracker node over real rclpy / Fast DDS (shared memory, this run's domain id).

A test client publishes CameraInfo and Features (synthetic scenes with known motion, then the
Extractor's features of real frames) and checks Tracks, Odometry (covariances, twist), the inlier
count, the status and /diagnostics; a 2 Hz stream; a degenerate frame; the camera model carried in
Features; TF (a static chain on /tf_static, odom -> base_link on /tf, never a second parent); the
lifecycle driven over its services; the detector node upstream of the tracker; then Ctrl-C.
Run with ``bash scripts/test.sh test/test_tracker_node.py``.
"""

from __future__ import annotations

import os
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
    node_environment,
    write_params,
    write_random_weights,
)
from test_ros_node_lifecycle import LifecycleClient
from test_tracker_logic import CAMERA, MOTION_R, MOTION_T, SIZE, Scene

from superpoint_ros.features_message import features_to_message
from superpoint_ros.tracks_message import tracks_from_message
from superpoint_training.odometry.tracking import Status, angle_between_deg, rotation_angle_deg
from superpoint_training.odometry.transforms import invert, make_transform, matrix_to_quaternion, quaternion_to_matrix

pytestmark = pytest.mark.ros
TRACKER = PACKAGE_PREFIX / "lib" / "superpoint_ros" / "tracker_node"
DETECTOR = PACKAGE_PREFIX / "lib" / "superpoint_ros" / "detector_node"
NAMESPACE = "/tracker_test"
TUM = Path(__file__).resolve().parents[2] / "shared" / "data" / "tum_fr2_desk"
LOST_VARIANCE = 1e6
ROTATION_STEP_VARIANCE = 1e-4
UNKNOWN = 1e9
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
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
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
    harness.diagnostics = harness.collect(DiagnosticArray, "/diagnostics")
    harness.features_pub = harness.node.create_publisher(Features, f"{namespace}/features", 10)
    harness.info_pub = harness.node.create_publisher(CameraInfo, f"{namespace}/camera_info", qos_profile_sensor_data)
    return harness


def send_info(harness: RosHarness, info) -> None:
    harness.wait_for_subscribers(harness.info_pub)
    for _ in range(3):  # best effort: send a few, like a camera driver does every frame
        harness.info_pub.publish(info)
        time.sleep(0.1)


def send(harness: RosHarness, keypoints, descriptors, seconds: float, image_size=SIZE, camera=None) -> dict:
    """Publish one Features message (with ``camera``, a CameraGeometry, in it) and return what the
    tracker published for it."""
    harness.wait_for_subscribers(harness.features_pub)
    count = len(harness.status)
    features = types.SimpleNamespace(
        keypoints=np.asarray(keypoints, np.float32),
        scores=np.linspace(1.0, 0.1, len(keypoints), dtype=np.float32),
        descriptors=np.asarray(descriptors, np.float32),
        image_size=image_size,
        valid=None,
    )
    harness.features_pub.publish(features_to_message(harness.Features, header(seconds), features, camera=camera))
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
        {"device": "cpu", "lost_variance": LOST_VARIANCE, "rotation_step_variance": ROTATION_STEP_VARIANCE},
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
    R2, t2 = MOTION_R @ MOTION_R, MOTION_R @ MOTION_T + MOTION_T  # the same step again
    kp2, desc2, _ = scene.view(R2, t2)
    # no CameraInfo yet: the first frame starts the tracks, the second has tracks but no pose
    first = send(ros, kp0, desc0, 100.0)
    assert first["status"] == Status.FIRST_FRAME and len(first["tracks"].track_ids) == 0
    # no static transform base_link -> camera_optical: the odometry is of the camera frame
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
    assert moved["values"]["camera_model"] == "camera_info"
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
    # honest covariances: the monocular position is unknown, the orientation drifts one step's worth
    covariance = np.reshape(moved["odometry"].pose.covariance, (6, 6))
    np.testing.assert_allclose(np.diag(covariance), [UNKNOWN] * 3 + [ROTATION_STEP_VARIANCE] * 3)
    # the twist after a lost frame is unknown (no previous pose to difference)
    assert np.reshape(moved["odometry"].twist.covariance, (6, 6))[5, 5] == UNKNOWN
    # the next step 0.1 s later: angular velocity from the two poses, linear velocity unknown (no scale)
    again = send(ros, kp2, desc2, 100.4)
    assert again["status"] == Status.OK, again["values"]
    twist = again["odometry"].twist
    angular = np.array([twist.twist.angular.x, twist.twist.angular.y, twist.twist.angular.z])
    expected_rate = cv2.Rodrigues(MOTION_R.T)[0].reshape(3) / 0.1  # camera frame: the child frame here
    np.testing.assert_allclose(angular, expected_rate, atol=0.01 * np.linalg.norm(expected_rate))
    twist_covariance = np.diag(np.reshape(twist.covariance, (6, 6)))
    np.testing.assert_allclose(twist_covariance, [UNKNOWN] * 3 + [ROTATION_STEP_VARIANCE / 0.1**2] * 3, rtol=1e-6)
    assert twist.twist.linear.x == twist.twist.linear.y == twist.twist.linear.z == 0.0
    R_again, t_again = pose_of(again["odometry"])
    # unrelated descriptors: too few matches; the odometry repeats the last pose, marked lost
    other = Scene(400, seed=5)
    kp_other, desc_other, _ = other.view(np.eye(3), np.zeros(3))
    lost = send(ros, kp_other, desc_other, 100.5)
    assert lost["status"] == Status.TOO_FEW_MATCHES and lost["odometry"].pose.covariance[0] == LOST_VARIANCE
    R_lost, t_lost = pose_of(lost["odometry"])
    np.testing.assert_allclose(t_lost, t_again, atol=1e-9)
    # a gap in the stream (the default limit: 5 median frame periods, 0.5 s here): every track ends
    gap = send(ros, kp0, desc0, 101.5)
    assert gap["status"] == Status.GAP and len(gap["tracks"].track_ids) == 0
    assert "median frame period" in gap["values"]["reason"]
    assert len(gap["tracks"].ended_track_ids) == len(kp_other)
    assert float(gap["values"]["mean_process_ms"]) > 0


def test_degenerate_frame_is_published_as_pose_failed(ros):
    """Every keypoint at one pixel in each frame: the pose fails, and Tracks and Odometry say so."""
    scene = Scene(100, seed=3)
    _, desc, _ = scene.view(np.eye(3), np.zeros(3), shuffle=False)
    n = len(desc)
    send(ros, np.full((n, 2), 100.0, np.float32), desc, 400.0)  # a gap: tracks restart here
    failed = send(ros, np.tile(np.float32([[180.0, 130.0]]), (n, 1)), desc, 400.1)
    assert failed["status"] == Status.POSE_FAILED and failed["values"]["reason"]
    assert failed["tracks"].status == Status.POSE_FAILED and len(failed["tracks"].track_ids) == n
    assert failed["odometry"].pose.covariance[0] == LOST_VARIANCE and failed["level"] == b"\x02"
    # descriptors of another size than the previous frame's: the tracker raises inside; the frame is
    # still published as pose_failed with the reason, and tracking restarts from it
    odd = send(ros, np.full((n, 2), 100.0, np.float32), np.ones((n, 8), np.float32) / np.sqrt(8), 400.2)
    assert odd["status"] == Status.POSE_FAILED and "tracking failed" in odd["values"]["reason"], odd["values"]
    assert odd["odometry"].pose.covariance[0] == LOST_VARIANCE


def test_camera_model_carried_in_features_is_used(ros):
    """Features that carry their camera (format 2) need no CameraInfo topic: a 2x2-binned stream
    whose calibration is for the full-resolution sensor."""
    from superpoint_ros.features_message import CameraGeometry

    full = camera_info()
    full.height, full.width = 2 * SIZE[0], 2 * SIZE[1]
    K2 = CAMERA.K.copy()
    K2[:2] = 2 * K2[:2]
    K2[:2, 2] += 0.5  # the centre of a binned pixel, in full-resolution pixels
    full.k = K2.reshape(-1).tolist()
    full.binning_x = full.binning_y = 2
    geometry = CameraGeometry.from_camera_info(full)
    scene = Scene(400, seed=2)
    kp0, desc0, _ = scene.view(np.eye(3), np.zeros(3))
    kp1, desc1, _ = scene.view(MOTION_R, MOTION_T)
    send_info(ros, camera_info(zero=True))  # the topic's model is unusable: only the features' can work
    send(ros, kp0, desc0, 500.0, camera=geometry)
    moved = send(ros, kp1, desc1, 500.1, camera=geometry)
    assert moved["status"] == Status.OK and moved["values"]["camera_model"] == "features", moved["values"]
    R, t = pose_of(moved["odometry"])
    R0, _ = pose_of(ros.odometry[-2])
    step = (OPTICAL_TO_REP103.T @ R0).T @ (OPTICAL_TO_REP103.T @ R)
    assert rotation_angle_deg(step @ MOTION_R) < 0.2


def test_diagnostics_report_the_tracker(ros):
    """/diagnostics carries the tracker's status: ERROR while no frame gives a pose."""
    scene = Scene(300, seed=4)
    kp, desc, _ = scene.view(np.eye(3), np.zeros(3))
    send_info(ros, camera_info(zero=True))
    for i in range(5):  # a gap, then no intrinsics: 5 frames in a row without a pose
        send(ros, kp, desc, 600.0 + 0.1 * i)
    count = len(ros.diagnostics)

    def tracker_status():
        for array in reversed(ros.diagnostics[count:]):
            for status in array.status:
                if status.name.endswith(": tracker") and NAMESPACE in status.name:
                    return status
        return None

    ros.wait_for(lambda: tracker_status() is not None, timeout=10, what="the tracker on /diagnostics")
    status = tracker_status()
    values = {kv.key: kv.value for kv in status.values}
    assert status.level == b"\x02" and "no pose" in status.message, status
    assert values["last_status"] == Status.NO_INTRINSICS and "unknown" in values["scale"]
    assert float(values["frame_period_s"]) > 0 and "median frame period" in values["max_frame_gap_s"]
    assert "tf" in values and "publish_tf false" in values["tf"]
    send_info(ros, camera_info())


def _real_frames(count: int) -> tuple[list[np.ndarray], list[float], object]:
    """Gray frames with stamps and their camera: the TUM snippet when present, else shifted crops of a photo."""
    from superpoint_training.odometry.camera import CameraModel

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


# -- lifecycle and TF: a second node, autostart false and publish_tf true ---------------------------
TF_NAMESPACE = "/tf_test"
TF_NODE = f"{TF_NAMESPACE}/superpoint_tracker"
T_BASE_LINK = make_transform((0.2, 0.05, 0.5), cv2.Rodrigues(np.array([0.0, 0.1, 0.02]))[0])  # camera_link
T_LINK_OPTICAL = make_transform((0.0, -0.03, 0.0), OPTICAL_TO_REP103)  # REP 103 body -> optical axes


def tf2_messages():
    try:
        from tf2_msgs.msg import TFMessage
    except ImportError:
        pytest.skip("tf2_msgs is not built (scripts/setup.sh builds test/ros_test_msgs/tf2_msgs)")
    return TFMessage


def transform_stamped(parent: str, child: str, T: np.ndarray, seconds: float = 0.0):
    from geometry_msgs.msg import TransformStamped

    msg = TransformStamped()
    msg.header = header(seconds, parent)
    msg.child_frame_id = child
    msg.transform.translation.x, msg.transform.translation.y, msg.transform.translation.z = (float(v) for v in T[:3, 3])
    r = msg.transform.rotation
    r.x, r.y, r.z, r.w = matrix_to_quaternion(T[:3, :3])
    return msg


def matrix_of(transform) -> np.ndarray:
    t, q = transform.translation, transform.rotation
    return make_transform((t.x, t.y, t.z), quaternion_to_matrix(q.x, q.y, q.z, q.w))


@pytest.fixture(scope="module")
def tf_node(tmp_path_factory):
    require_tracker()
    TFMessage = tf2_messages()
    params = write_params(
        tmp_path_factory.mktemp("tf_params") / "tracker.yaml",
        {"device": "cpu", "autostart": False, "publish_tf": True, "lost_variance": LOST_VARIANCE},
    )
    process = NodeProcess([TRACKER, "--ros-args", "-r", f"__ns:={TF_NAMESPACE}", "--params-file", params])
    process.wait_for_output(r"autostart is false", timeout=90)
    from lifecycle_msgs.msg import TransitionEvent
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

    harness = start_client(TF_NAMESPACE)
    harness.tf = harness.collect(TFMessage, "/tf", 100)
    harness.events = harness.collect(TransitionEvent, f"{TF_NODE}/transition_event")
    latched = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
    harness.static_pub = harness.node.create_publisher(TFMessage, "/tf_static", latched)
    harness.process = process
    harness.lifecycle = LifecycleClient(harness, TF_NODE)
    yield harness
    harness.close()
    process.stop()


def test_lifecycle_configure_and_activate_over_services(tf_node):
    assert tf_node.lifecycle.state() == "unconfigured"
    assert tf_node.lifecycle.transition("configure")
    assert tf_node.lifecycle.state() == "inactive"
    time.sleep(0.5)
    assert tf_node.features_pub.get_subscription_count() == 0  # inactive: nothing subscribed yet
    assert tf_node.lifecycle.transition("activate")
    assert tf_node.lifecycle.state() == "active"
    tf_node.wait_for_subscribers(tf_node.features_pub)
    tf_node.wait_for_publishers(timeout=60)
    tf_node.wait_for(lambda: len(tf_node.events) >= 2, what="transition events")
    labels = [e.goal_state.label for e in tf_node.events]
    assert "configuring" in labels and labels[-1] == "active", labels


def test_tf_odom_to_base_link_through_a_static_chain_at_2hz(tf_node):
    """odom -> base_link on /tf only once base_link -> camera_link -> camera_optical is on
    /tf_static; its value is the camera's motion composed with that chain; frames 0.5 s apart (2 Hz)
    are no gap; a base_link that gets another parent gets nothing from the tracker."""
    TFMessage = tf2_messages()
    scene = Scene(400, seed=8)
    views = []
    R, t = np.eye(3), np.zeros(3)
    for _ in range(4):
        views.append(scene.view(R, t)[:2])
        R, t = MOTION_R @ R, MOTION_R @ t + MOTION_T
    send_info(tf_node, camera_info())
    first = send(tf_node, *views[0], 700.0)
    moved = send(tf_node, *views[1], 700.5)
    assert first["status"] == Status.FIRST_FRAME and moved["status"] == Status.OK, moved["values"]
    time.sleep(0.5)
    assert tf_node.tf == []  # no static transform: nothing on /tf
    assert moved["odometry"].child_frame_id == "camera_optical"
    tf_node.process.wait_for_output(r"no static transform base_link -> camera_optical", timeout=10)
    # robot_state_publisher's part: the chain, latched, in two messages as two broadcasters would
    tf_node.wait_for_subscribers(tf_node.static_pub)
    tf_node.static_pub.publish(TFMessage(transforms=[transform_stamped("base_link", "camera_link", T_BASE_LINK)]))
    tf_node.static_pub.publish(TFMessage(transforms=[transform_stamped("camera_link", "camera_optical", T_LINK_OPTICAL)]))
    time.sleep(1.0)
    second = send(tf_node, *views[2], 701.0)
    assert second["status"] == Status.OK, second["values"]
    tf_node.wait_for(lambda: len(tf_node.tf) >= 1, timeout=10, what="odom -> base_link on /tf")
    (transform,) = tf_node.tf[0].transforms
    assert transform.header.frame_id == "odom" and transform.child_frame_id == "base_link"
    assert transform.header.stamp.sec == 701
    step = make_transform(-MOTION_R.T @ MOTION_T / np.linalg.norm(MOTION_T), MOTION_R.T)  # unit-length step
    T_base_cam = T_BASE_LINK @ T_LINK_OPTICAL
    expected = T_base_cam @ step @ step @ invert(T_base_cam)
    actual = matrix_of(transform.transform)
    assert rotation_angle_deg(actual[:3, :3] @ expected[:3, :3].T) < 0.3
    np.testing.assert_allclose(actual[:3, 3], expected[:3, 3], atol=0.05)
    odometry = second["odometry"]
    assert odometry.child_frame_id == "base_link" and odometry.header.frame_id == "odom"
    R_odom, t_odom = pose_of(odometry)
    np.testing.assert_allclose(t_odom, actual[:3, 3], atol=1e-9)
    # another node gives base_link a parent: the tracker must not give it a second one
    tf_node.static_pub.publish(TFMessage(transforms=[transform_stamped("map", "base_link", np.eye(4))]))
    time.sleep(1.0)
    third = send(tf_node, *views[3], 701.5)
    assert third["status"] == Status.OK, third["values"]  # 0.5 s steps: never a gap
    time.sleep(0.5)
    assert len(tf_node.tf) == 1
    tf_node.process.wait_for_output(r"base_link already has the parent 'map'", timeout=10)


def test_lifecycle_deactivate_cleanup_and_ctrl_c(tf_node):
    assert tf_node.lifecycle.transition("deactivate")
    assert tf_node.lifecycle.state() == "inactive"
    deadline = time.monotonic() + 10
    while tf_node.features_pub.get_subscription_count() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert tf_node.features_pub.get_subscription_count() == 0
    assert tf_node.lifecycle.transition("cleanup")
    assert tf_node.lifecycle.state() == "unconfigured"
    assert not tf_node.lifecycle.transition("activate")  # refused: not a transition of unconfigured
    assert tf_node.lifecycle.transition("configure")  # configure again after cleanup
    assert tf_node.lifecycle.state() == "inactive"
    labels = [e.goal_state.label for e in tf_node.events]
    assert {"configuring", "activating", "deactivating", "cleaningup"} <= set(labels), labels
    assert tf_node.process.interrupt() == 0, tf_node.process.output


def test_without_tf2_msgs_tf_is_unavailable_with_a_reason(tmp_path):
    """No ROS 2 install (tf2_msgs missing): the node runs, and says why there is no /tf."""
    require_tracker()
    env = node_environment()
    env["PYTHONPATH"] = os.pathsep.join(p for p in env["PYTHONPATH"].split(os.pathsep) if "tf2_msgs" not in p)
    params = write_params(tmp_path / "tracker.yaml", {"device": "cpu", "publish_tf": True})
    process = NodeProcess([TRACKER, "--ros-args", "-r", "__ns:=/no_tf2", "--params-file", params], env=env)
    try:
        process.wait_for_output(r"tracking /no_tf2/features", timeout=90)
        assert "publish_tf is true but /tf is unavailable: tf2_msgs is not installed" in process.output
        assert process.interrupt() == 0
    finally:
        process.stop()
