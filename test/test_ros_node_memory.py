"""The detector's memory budget over real rclpy: a large JPEG is scaled down before the network (the
keypoints come back in its pixels), one beyond max_image_pixels is refused (log line, diagnostic)
without decoding, and the node stays within memory_budget_mb throughout.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from ros_fixtures import (
    NODE_EXECUTABLE,
    NodeProcess,
    RosHarness,
    publish_until_answered,
    require_built_package,
    stamp,
    write_params,
    write_random_weights,
)

from superpoint_ros.features_message import features_from_message

pytestmark = [pytest.mark.ros, pytest.mark.slow]
NAMESPACE = "/memory_test"
BUDGET_MB = 1024  # max_image_pixels 21,233,664 and max_network_pixels 566,231 (detector_node.memory_limits)


def jpeg_message(image_rgb: np.ndarray, sec: int, quality: int = 50):
    """A CompressedImage JPEG kept under Fast DDS's shared-memory segment (0.5 MB) so it is not lost."""
    import array

    from sensor_msgs.msg import CompressedImage
    from std_msgs.msg import Header

    ok, encoded = cv2.imencode(".jpg", cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok and encoded.size < 450_000, encoded.size
    data = array.array("B")
    data.frombytes(encoded.tobytes())
    return CompressedImage(header=Header(stamp=stamp(sec), frame_id="camera"), format="jpeg", data=data)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def test_large_frames_within_the_budget(tmp_path, photo_rgb):
    require_built_package()
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import CompressedImage

    from superpoint_ros.msg import Features

    params = write_params(tmp_path / "detector.yaml", {
        "weights": str(write_random_weights(tmp_path / "random_v6.pth")), "device": "cpu", "transport": "compressed",
        "memory_budget_mb": BUDGET_MB, "warmup_size": [0, 0], "diagnostics_period": 0.5, "frame_queue": 5,
    })
    node = NodeProcess([NODE_EXECUTABLE, "--ros-args", "-r", f"__ns:={NAMESPACE}", "--params-file", params])
    ros = RosHarness("memory_test_client")
    try:
        features = ros.collect(Features, f"{NAMESPACE}/features")
        diagnostics = ros.collect(DiagnosticArray, "/diagnostics")
        publisher = ros.node.create_publisher(CompressedImage, f"{NAMESPACE}/image/compressed", qos_profile_sensor_data)
        ros.wait_for_subscribers(publisher, timeout=90)

        def send(image: np.ndarray, sec: int):
            return publish_until_answered(ros, publisher, jpeg_message(image, sec), features, retry=8.0)

        assert send(photo_rgb, 1) is not None, node.output
        before = rss_mb(node.process.pid)
        large = cv2.resize(photo_rgb, (4000, 3000), interpolation=cv2.INTER_CUBIC)  # 12 MP
        message = send(large, 2)
        assert message is not None, node.output
        decoded = features_from_message(message)
        assert decoded.image_size == (3000, 4000) and len(decoded) > 10
        assert decoded.keypoints[:, 0].max() > 1000 and decoded.keypoints[:, 1].max() > 1000  # the frame's pixels
        peak = rss_mb(node.process.pid)
        for sec in range(3, 6):
            assert send(photo_rgb, sec) is not None
        # beyond max_image_pixels: refused from the JPEG header, logged, counted; the node serves on
        huge = np.full((4000, 6000, 3), 128, np.uint8)  # 24 MP (flat: a small file)
        huge_message = jpeg_message(huge, 100)
        for _ in range(2):
            publisher.publish(huge_message)
        node.wait_for_output(r"skipping malformed image on \S+: too_large: jpeg image of 4000x6000", timeout=30)
        assert send(photo_rgb, 6) is not None
        after = rss_mb(node.process.pid)
        time.sleep(1.0)
        node_status = [s for s in diagnostics[-1].status if s.name.endswith(": node")][0]
        values = {v.key: v.value for v in node_status.values}
        camera_values = {v.key: v.value for v in diagnostics[-1].status[0].values}
        assert int(values["frames_scaled_down"]) >= 1 and int(camera_values["malformed_too_large"]) >= 1
        assert max(before, peak, after, float(values["rss_mb"])) < BUDGET_MB, (before, peak, after, values)
        print(f"rss MiB: before {before:.0f}, after the 12 MP frame {peak:.0f}, at the end {after:.0f}")
        assert not re.search(r"Traceback|Killed", node.output)
    finally:
        ros.close()
        node.stop()
