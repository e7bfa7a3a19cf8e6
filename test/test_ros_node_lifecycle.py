"""The detector's managed lifecycle, driven over the standard lifecycle services from an rclpy client,
with CameraInfo matched into Features and a QoS override honoured (real Fast DDS, this run's domain).
"""

from __future__ import annotations

import re
import time

import numpy as np
import pytest
from ros_fixtures import (
    NODE_EXECUTABLE,
    NodeProcess,
    RosHarness,
    image_message,
    require_built_package,
    stamp,
    write_params,
    write_random_weights,
)

from superpoint_ros.features_message import CameraGeometry, features_from_message

pytestmark = pytest.mark.ros
NAMESPACE = "/lifecycle_test"
NODE = f"{NAMESPACE}/superpoint_detector"
# TUM fr1's published calibration (fx 517.3, fy 516.5, cx 318.6, cy 255.3, plumb_bob)
K = [517.3, 0.0, 318.6, 0.0, 516.5, 255.3, 0.0, 0.0, 1.0]
D = [0.2624, -0.9531, -0.0054, 0.0026, 1.1633]


def camera_info_message(sec: int, frame_id: str = "camera") -> object:
    from sensor_msgs.msg import CameraInfo
    from std_msgs.msg import Header

    return CameraInfo(header=Header(stamp=stamp(sec), frame_id=frame_id), height=240, width=320,
                      distortion_model="plumb_bob", d=D, k=K, r=[1.0, 0, 0, 0, 1, 0, 0, 0, 1],
                      p=[517.3, 0, 318.6, 0, 0, 516.5, 255.3, 0, 0, 0, 1, 0])


class LifecycleClient:
    """Calls ``<node>/change_state`` and ``<node>/get_state`` (lifecycle_msgs) from the harness's node."""

    def __init__(self, ros: RosHarness, node: str):
        from lifecycle_msgs.srv import ChangeState, GetState

        self.change = ros.node.create_client(ChangeState, f"{node}/change_state")
        self.get = ros.node.create_client(GetState, f"{node}/get_state")
        for client in (self.change, self.get):
            assert client.wait_for_service(timeout_sec=90), f"no lifecycle service {client.srv_name}"

    @staticmethod
    def _call(client, request, timeout: float = 60.0):
        future = client.call_async(request)
        deadline = time.monotonic() + timeout
        while not future.done() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert future.done(), f"{client.srv_name} did not answer in {timeout} s"
        return future.result()

    def state(self) -> str:
        from lifecycle_msgs.srv import GetState

        return self._call(self.get, GetState.Request()).current_state.label

    def transition(self, label: str) -> bool:
        from lifecycle_msgs.msg import Transition
        from lifecycle_msgs.srv import ChangeState

        return self._call(self.change, ChangeState.Request(transition=Transition(label=label))).success

    def transition_id(self, transition_id: int) -> bool:
        from lifecycle_msgs.msg import Transition
        from lifecycle_msgs.srv import ChangeState

        return self._call(self.change, ChangeState.Request(transition=Transition(id=transition_id))).success


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    require_built_package()
    folder = tmp_path_factory.mktemp("lifecycle")
    params = write_params(folder / "detector.yaml", {
        "weights": str(write_random_weights(folder / "random_v6.pth")),
        "device": "cpu",
        "autostart": False,
        "camera_info": True,
        "undistort_keypoints": True,
        "camera_info_max_age": 1.0,
        "warmup_size": [240, 320],
        "max_keypoints": 100,
        "frame_queue": 20,
        "diagnostics_period": 0.5,
        # honoured: the features publisher becomes best-effort (the default is reliable)
        f"qos_overrides.{NAMESPACE}/features.publisher.reliability": "best_effort",
    })
    process = NodeProcess([NODE_EXECUTABLE, "--ros-args", "-r", f"__ns:={NAMESPACE}", "--params-file", params])
    process.wait_for_output(r"autostart is false", timeout=90)
    yield process
    process.stop()


def test_every_transition_from_a_lifecycle_client(node, photo_rgb):
    from diagnostic_msgs.msg import DiagnosticArray
    from lifecycle_msgs.msg import TransitionEvent
    from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
    from sensor_msgs.msg import CameraInfo, Image

    from superpoint_ros.msg import Features

    ros = RosHarness("lifecycle_test_client")
    try:
        events = ros.collect(TransitionEvent, f"{NODE}/transition_event", QoSProfile(depth=20))
        features = ros.collect(Features, f"{NAMESPACE}/features", qos_profile_sensor_data)
        diagnostics = ros.collect(DiagnosticArray, "/diagnostics")
        images = ros.node.create_publisher(Image, f"{NAMESPACE}/image", qos_profile_sensor_data)
        infos = ros.node.create_publisher(CameraInfo, f"{NAMESPACE}/camera_info", 10)
        client = LifecycleClient(ros, NODE)
        assert client.state() == "unconfigured"
        # a transition the state does not have, asked by id, is refused and the node lives on
        from lifecycle_msgs.msg import Transition

        assert not client.transition_id(Transition.TRANSITION_ACTIVATE)
        assert client.state() == "unconfigured" and node.process.poll() is None, node.output
        next_sec = iter(range(100, 10000))

        def send(with_info: bool = True, timeout: float = 5.0):
            sec = next(next_sec) + (0 if with_info else 50_000)  # far from every CameraInfo sent
            if with_info:
                infos.publish(camera_info_message(sec))
                time.sleep(0.05)
            images.publish(image_message(photo_rgb, "yuv422_yuy2", sec))
            try:
                ros.wait_for(lambda: any(m.header.stamp.sec == sec for m in features), timeout=timeout)
            except AssertionError:
                return None
            return next(m for m in features if m.header.stamp.sec == sec)

        assert client.transition("configure") and client.state() == "inactive", node.output
        node.wait_for_output(r"warmed up for 240x320", timeout=5)
        ros.wait_for(lambda: any(s.name.endswith(": node") for a in diagnostics for s in a.status), timeout=20,
                     what="the node's diagnostics while inactive")
        assert client.transition("activate") and client.state() == "active"
        ros.wait_for_subscribers(images, timeout=30)
        ros.wait_for_publishers(timeout=30)
        message = None
        for _ in range(10):  # the first may be lost while the CameraInfo subscription matches
            message = send()
            if message is not None and message.has_camera_info:
                break
        assert message is not None and message.has_camera_info, node.output
        # the QoS override is in force on the features publisher
        (info,) = ros.node.get_publishers_info_by_topic(f"{NAMESPACE}/features")
        assert info.qos_profile.reliability == ReliabilityPolicy.BEST_EFFORT
        decoded = features_from_message(message)
        assert decoded.format_version == 2 and decoded.camera.distortion_model == "plumb_bob"
        np.testing.assert_array_equal(decoded.camera.k.reshape(-1), K)
        np.testing.assert_array_equal(decoded.camera.d, D)
        expected = CameraGeometry.from_camera_info(camera_info_message(0)).normalize(decoded.keypoints)
        np.testing.assert_allclose(decoded.keypoints_normalized, expected, atol=1e-6)
        assert len(decoded) > 10
        # an image far from any CameraInfo goes out without a camera model, and diagnostics say why
        stale = send(with_info=False, timeout=20)
        assert stale is not None and not stale.has_camera_info and len(stale.keypoints_normalized) == 0
        time.sleep(1.0)
        camera = [s for s in diagnostics[-1].status if s.name.endswith(f"{NAMESPACE}/image")][0]
        assert camera.level == bytes([1]) and "CameraInfo too old" in camera.message, camera

        assert client.transition("deactivate") and client.state() == "inactive"
        assert send(timeout=2.0) is None  # inactive: no subscription, nothing out
        assert client.transition("cleanup") and client.state() == "unconfigured"
        assert client.transition("configure") and client.transition("activate")
        ros.wait_for_subscribers(images, timeout=30)
        assert any(send() is not None for _ in range(10)), node.output
        assert client.transition("shutdown") and client.state() == "finalized"
        primary = ("unconfigured", "inactive", "active", "finalized")  # the transition states between them
        ros.wait_for(lambda: sum(e.goal_state.label in primary for e in events) >= 7, timeout=10,
                     what="transition events")
        goals = [e.goal_state.label for e in events if e.goal_state.label in primary]
        assert goals == ["inactive", "active", "inactive", "unconfigured", "inactive", "active", "finalized"], goals
        assert "Traceback" not in node.output
    finally:
        ros.close()
    assert node.interrupt() == 0, node.output


def test_exact_sync_over_rclpy(tmp_path, photo_rgb, photo_gray):
    """Two cameras with sync: exact: a pair with equal stamps comes out (same stamp on both), a frame
    whose partner never comes is dropped and counted as unmatched on /diagnostics. batch_cameras auto
    decides from the timed warm-up and says so; a CPU fallback is WARN; a camera whose every frame is
    refused is ERROR, naming the encoding."""
    require_built_package()
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image

    from superpoint_ros.detector_node import BATCH_GAIN_REQUIRED
    from superpoint_ros.msg import Features

    params = write_params(tmp_path / "detector.yaml", {
        "weights": str(write_random_weights(tmp_path / "random_v6.pth")), "device": "auto",
        "cameras": ["left", "right"], "sync": "exact", "frame_queue": 10, "warmup_size": [120, 160],
        "max_keypoints": 50, "diagnostics_period": 0.5,
    })
    process = NodeProcess([NODE_EXECUTABLE, "--ros-args", "-r", "__ns:=/sync_test", "--params-file", params])
    ros = RosHarness("sync_test_client")
    try:
        out = [ros.collect(Features, f"/sync_test/{side}/features") for side in ("left", "right")]
        diagnostics = ros.collect(DiagnosticArray, "/diagnostics")
        publishers = [ros.node.create_publisher(Image, f"/sync_test/{side}/image", qos_profile_sensor_data)
                      for side in ("left", "right")]
        for publisher in publishers:
            ros.wait_for_subscribers(publisher, timeout=90)
        ros.wait_for_publishers(timeout=30)
        time.sleep(0.5)
        publishers[0].publish(image_message(photo_gray, "mono8", 10))  # left alone: never matched
        for sec in (11, 12):
            for publisher in publishers:
                publisher.publish(image_message(photo_rgb, "rgb8", sec))
                time.sleep(0.02)
        ros.wait_for(lambda: all(any(m.header.stamp.sec == 12 for m in side) for side in out), timeout=60,
                     what="the second pair")
        stamps = [{m.header.stamp.sec for m in side} for side in out]
        assert 10 not in stamps[0] and {11, 12} <= stamps[0] & stamps[1], stamps
        time.sleep(1.0)
        left = {v.key: v.value for v in diagnostics[-1].status[0].values}
        assert int(left["unmatched"]) == 1, left
        decision = re.search(r"2 cameras in one call: (\d+) ms per frame against (\d+) ms alone: batch_cameras auto "
                             r"(batches|does not batch)", process.output)
        assert decision, process.output
        node = {v.key: v.value for v in diagnostics[-1].status[-1].values}
        batched, alone = float(node["ms_per_frame_batch_of_2"]), float(node["ms_per_frame_alone"])
        assert node["batch_cameras"] == str(decision.group(3) == "batches"), node
        if abs(batched - BATCH_GAIN_REQUIRED * alone) > 1.0:  # away from the threshold: rounding cannot flip it
            assert node["batch_cameras"] == str(batched < BATCH_GAIN_REQUIRED * alone), node
        # device auto without a GPU: the node says it fell back to the CPU
        import torch

        fell_back = not torch.cuda.is_available()
        assert node["cpu_fallback"] == str(fell_back) and (diagnostics[-1].status[-1].level == bytes([1])) == fell_back
        # a camera that sends only an encoding the node refuses: ERROR (images in, no features out), named
        for sec in range(20, 20 + 35):
            for publisher in publishers:
                publisher.publish(image_message(photo_gray, "mono8", sec, overrides={"encoding": "yuv420p"}))
            time.sleep(0.2)
        left = [s for s in diagnostics[-1].status if s.name.endswith("/left/image")][0]
        assert left.level == bytes([2]) and "no features leave" in left.message and "yuv420p" in left.message, left
    finally:
        ros.close()
        process.stop()
