"""The colcon-built detector node over real rclpy / Fast DDS (shared memory, this run's domain id).

One node process serves two cameras (Image on one, CompressedImage on the other) for the whole
module; a test publisher sends real photos and checks the features, batching, run-time parameters,
stale-frame dropping, malformed messages, the debug image, /diagnostics and Ctrl-C.
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
    compressed_message,
    image_message,
    publish_until_answered,
    require_built_package,
    udp_addresses,
    write_params,
    write_random_weights,
)

from superpoint_ros.features_message import features_from_message
from superpoint_ros.image_conversion import SUPPORTED_ENCODINGS

pytestmark = pytest.mark.ros
NAMESPACE = "/node_test"
NODE = f"{NAMESPACE}/superpoint_detector"
MAX_KEYPOINTS = 200
GRAY_ENCODINGS = ("mono8", "8UC1", "mono16", "16UC1", "32FC1")


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory) -> Path:
    return write_random_weights(tmp_path_factory.mktemp("weights") / "random_v6.pth")


@pytest.fixture(scope="module")
def node(tmp_path_factory, weights_file):
    require_built_package()
    params = write_params(
        tmp_path_factory.mktemp("params") / "detector.yaml",
        {
            "weights": str(weights_file),
            "device": "cpu",
            "cameras": ["cam0", "cam1"],
            "transport": "both",
            "max_keypoints": MAX_KEYPOINTS,
            "frame_queue": 50,  # the tests wait for each frame; dropping is tested by lowering it
            "batch_wait": 0.3,  # generous on a loaded 2-core machine, so that the two cameras batch
            "publish_debug_image": True,
            "diagnostics_period": 0.5,
            "batch_cameras": "always",  # the CPU default is one frame per call; batching is tested here
            "warmup_size": [240, 320],
        },
    )
    process = NodeProcess([NODE_EXECUTABLE, "--ros-args", "-r", f"__ns:={NAMESPACE}", "--params-file", params])
    process.wait_for_output(r"SuperPoint on cpu, (torch|onnxruntime|openvino) (fp32|bf16|fp16)", timeout=90)
    process.wait_for_output(r"camera 1: ", timeout=90)
    yield process
    process.stop()


@pytest.fixture(scope="module")
def ros(node):
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import CompressedImage, Image

    from superpoint_ros.msg import Features

    harness = RosHarness("node_test_client")
    harness.features = [harness.collect(Features, f"{NAMESPACE}/cam{i}/features") for i in range(2)]
    harness.image_pub = [
        harness.node.create_publisher(Image, f"{NAMESPACE}/cam{i}/image", qos_profile_sensor_data) for i in range(2)
    ]
    harness.compressed_pub = [
        harness.node.create_publisher(CompressedImage, f"{NAMESPACE}/cam{i}/image/compressed", qos_profile_sensor_data)
        for i in range(2)
    ]
    for publisher in harness.image_pub + harness.compressed_pub:
        harness.wait_for_subscribers(publisher, timeout=60)
    yield harness
    harness.close()


@pytest.fixture(scope="module")
def reference_extractor(weights_file):
    from superpoint_training.model.extractor import Extractor

    # the path the node's defaults (backend and precision auto) pick on this machine
    return Extractor(str(weights_file), device="cpu", max_keypoints=MAX_KEYPOINTS, warmup=False, backend="auto",
                     precision="auto")


_next_stamp = iter(range(1000, 100000))


def send_and_receive(ros, camera: int, make_msg, timeout: float = 60.0):
    """Publish one frame (re-sent while the first may be lost to matching) and wait for its features."""
    sec = next(_next_stamp)
    msg = make_msg(sec)
    publisher = ros.compressed_pub[camera] if type(msg).__name__ == "CompressedImage" else ros.image_pub[camera]
    answer = publish_until_answered(ros, publisher, msg, ros.features[camera], timeout)
    assert answer is not None, f"no features for stamp {sec} on camera {camera}"
    return answer


def assert_same_keypoints(features_msg, reference, tolerance: float = 0.5) -> None:
    decoded = features_from_message(features_msg)
    expected = reference.keypoints.numpy()
    assert len(decoded) > 10
    assert abs(len(decoded) - len(expected)) <= max(2, len(expected) // 50)
    distances = np.linalg.norm(decoded.keypoints[:, None] - expected[None], axis=2).min(1)
    assert (distances < tolerance).mean() > 0.95, distances


def test_image_and_compressed_cameras_batched(ros, node, photo_rgb, reference_extractor):
    """Two cameras, one raw bgr8 and one PNG CompressedImage, sent together: one device call."""
    from superpoint_ros.msg import Features  # noqa: F401  (the type the subscriptions use)

    other = cv2.flip(photo_rgb, 1)
    for attempt in range(5):
        sec = next(_next_stamp)
        ros.image_pub[0].publish(image_message(photo_rgb, "bgr8", sec, frame_id="cam0_optical"))
        ros.compressed_pub[1].publish(compressed_message(other, sec, frame_id="cam1_optical"))
        try:
            ros.wait_for(
                lambda sec=sec: all(any(m.header.stamp.sec == sec for m in f) for f in ros.features),
                timeout=20.0,
                what="features of both cameras",
            )
            break
        except AssertionError:
            if attempt == 4:
                raise
    first = next(m for m in ros.features[0] if m.header.stamp.sec == sec)
    second = next(m for m in ros.features[1] if m.header.stamp.sec == sec)
    assert first.header.frame_id == "cam0_optical" and second.header.frame_id == "cam1_optical"
    assert (first.height, first.width) == (second.height, second.width) == photo_rgb.shape[:2]
    assert first.weights.endswith("random_v6.pth") and first.descriptor_encoding == "float32"
    assert_same_keypoints(first, reference_extractor(photo_rgb))
    assert_same_keypoints(second, reference_extractor(other))
    decoded = features_from_message(first)
    assert decoded.descriptors.shape == (len(decoded), 256)
    np.testing.assert_allclose(np.linalg.norm(decoded.descriptors, axis=1), 1.0, atol=1e-4)
    assert np.all(np.diff(decoded.scores) <= 0) and decoded.scores.min() >= 0.005
    # one batch of two: the node reports its mean batch size on /diagnostics
    batch = _diagnostic_value(ros, "mean_batch_size", camera=None)
    assert float(batch) > 1.0


@pytest.mark.parametrize("camera", [0, 1])
def test_every_encoding(ros, camera, photo_rgb):
    small = cv2.resize(photo_rgb, (160, 120), interpolation=cv2.INTER_AREA)
    gray = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY)
    encodings = SUPPORTED_ENCODINGS[camera::2]  # half per camera keeps the test short
    for encoding in encodings:
        colour = encoding not in GRAY_ENCODINGS
        image = small if colour else (gray.astype(np.float32) / 255.0 if encoding == "32FC1" else gray)
        message = send_and_receive(ros, camera, lambda sec, e=encoding, im=image: image_message(im, e, sec))
        assert (message.height, message.width) == (120, 160), encoding
        assert len(message.scores) > 0, encoding


def test_runtime_parameters(ros, photo_rgb):
    results = ros.set_parameters(NODE, {"max_keypoints": 10, "descriptor_encoding": "int8", "subpixel": "none"})
    assert all(r.successful for r in results), results
    message = send_and_receive(ros, 0, lambda sec: image_message(photo_rgb, "rgb8", sec))
    assert len(message.scores) == 10 and message.descriptor_encoding == "int8"
    assert len(message.descriptor_data) == 10 * 256
    keypoints = features_from_message(message).keypoints
    assert np.all(np.abs(keypoints) < 400) and np.array_equal(keypoints, np.round(keypoints))  # integer pixels
    # out of range, unknown choice and read-only values are refused and change nothing
    for bad in ({"detection_threshold": 2.0}, {"descriptor_encoding": "float16"}, {"subpixel": "cubic"},
                {"scales": [1.0, 1.5]}, {"weights": "untrained"}):
        (result,) = ros.set_parameters(NODE, bad)
        assert not result.successful, bad
    results = ros.set_parameters(NODE, {"max_keypoints": MAX_KEYPOINTS, "descriptor_encoding": "float32",
                                        "subpixel": "gaussian"})
    assert all(r.successful for r in results)
    message = send_and_receive(ros, 0, lambda sec: image_message(photo_rgb, "rgb8", sec))
    assert len(message.scores) > 10 and message.descriptor_encoding == "float32"
    keypoints = features_from_message(message).keypoints
    assert not np.array_equal(keypoints, np.round(keypoints))  # sub-pixel positions
    # the network on the half-size image only (a one-level pyramid): other points, in the image's pixels
    single = {tuple(p) for p in np.round(keypoints, 2).tolist()}
    (result,) = ros.set_parameters(NODE, {"scales": [0.5]})
    assert result.successful, result.reason
    try:
        message = send_and_receive(ros, 0, lambda sec: image_message(photo_rgb, "rgb8", sec))
        keypoints = features_from_message(message).keypoints
        half = {tuple(p) for p in np.round(keypoints, 2).tolist()}
        assert len(half) > 10 and half - single
        assert np.all(keypoints >= 0) and np.all(keypoints < [photo_rgb.shape[1], photo_rgb.shape[0]])
    finally:
        (result,) = ros.set_parameters(NODE, {"scales": [1.0]})
        assert result.successful


def test_stale_frames_are_dropped(ros, photo_rgb):
    (result,) = ros.set_parameters(NODE, {"frame_queue": 1})
    assert result.successful
    try:
        dropped_before = int(_diagnostic_value(ros, "dropped", camera=0))
        first = next(_next_stamp)
        stamps = [first + i for i in range(12)]
        for _ in stamps[1:]:
            next(_next_stamp)
        for sec in stamps:  # a burst far faster than the CPU extracts
            ros.image_pub[0].publish(image_message(photo_rgb, "rgb8", sec))
            time.sleep(0.01)
        ros.wait_for(lambda: any(m.header.stamp.sec == stamps[-1] for m in ros.features[0]), timeout=30,
                     what="features of the newest frame")
        served = {m.header.stamp.sec for m in ros.features[0]} & set(stamps)
        assert len(served) < len(stamps)
        time.sleep(1.2)  # next diagnostics
        assert int(_diagnostic_value(ros, "dropped", camera=0)) > dropped_before
    finally:
        ros.set_parameters(NODE, {"frame_queue": 50})


MALFORMED = {
    "step_too_small": {"step": 10},
    "truncated": {"data": bytes(100)},
    "unknown_encoding": {"encoding": "yuv_unheard_of"},
    "zero_size": {"height": 0, "data": b""},
    "too_large": {"height": 100000, "width": 100000, "step": 300000},
    "encoding_step_mismatch": {"encoding": "mono16", "step": 641},
}


def test_malformed_messages_are_logged_once_and_skipped(ros, node, photo_rgb, photo_gray):
    from sensor_msgs.msg import CompressedImage
    from std_msgs.msg import Header

    for kind, change in MALFORMED.items():
        base = photo_gray if kind == "encoding_step_mismatch" else photo_rgb
        for _ in range(2):
            bad = image_message(base, "mono16" if kind == "encoding_step_mismatch" else "bgr8", 1, overrides=change)
            ros.image_pub[0].publish(bad)
        # the node keeps serving good frames on the same camera
        message = send_and_receive(ros, 0, lambda sec: image_message(photo_rgb, "bgr8", sec))
        assert message.height == photo_rgb.shape[0], kind
    garbage = CompressedImage(header=Header(frame_id="x"), format="jpeg", data=list(b"not a jpeg"))
    for _ in range(2):
        ros.compressed_pub[1].publish(garbage)
    send_and_receive(ros, 1, lambda sec: compressed_message(photo_rgb, sec))
    time.sleep(1.2)
    log = node.output
    status = _diagnostics(ros)
    kinds = [*MALFORMED, "decode_failed"]
    counts = {v.key: int(v.value) for s in status for v in s.values if v.key in [f"malformed_{k}" for k in kinds]}
    for kind in kinds:
        assert len(re.findall(rf"skipping malformed image on \S+: {kind}:", log)) == 1, (kind, log)
        assert counts.get(f"malformed_{kind}", 0) >= 1, counts
    # each kind was sent twice (best-effort delivery may lose one): most were counted twice, logged once
    assert sum(counts.values()) > 1.5 * (len(MALFORMED) + 1), counts
    # the refused encoding is named, with its count
    refused = [v.value for s in status for v in s.values if v.key == "refused_encodings"]
    assert any(re.search(r"yuv_unheard_of: [12]\b", r) for r in refused), refused


def test_debug_image(ros, photo_rgb):
    from sensor_msgs.msg import Image

    from superpoint_ros.image_conversion import image_msg_to_numpy

    debug = ros.collect(Image, f"{NAMESPACE}/cam0/debug_image")
    time.sleep(1.0)  # let the node see the subscriber
    message = send_and_receive(ros, 0, lambda sec: image_message(photo_rgb, "rgb8", sec))
    ros.wait_for(lambda: any(d.header.stamp.sec == message.header.stamp.sec for d in debug), timeout=20,
                 what="debug image")
    drawn = image_msg_to_numpy(next(d for d in debug if d.header.stamp.sec == message.header.stamp.sec))
    assert drawn.shape == photo_rgb.shape
    keypoints = np.rint(features_from_message(message).keypoints).astype(int)
    assert (drawn[keypoints[:, 1], keypoints[:, 0]] == [0, 255, 0]).all()


def test_diagnostics(ros):
    status = _diagnostics(ros)
    names = [s.name for s in status]
    assert any(f"{NAMESPACE}/cam0/image" in n for n in names) and any(f"{NAMESPACE}/cam1/image" in n for n in names)
    values = {v.key: v.value for v in status[0].values}
    for key in ("rate_hz", "latency_p50_ms", "latency_p99_ms", "received", "published", "dropped"):
        assert key in values
    assert int(values["published"]) > 0 and status[0].hardware_id == "cpu"
    node = {v.key: v.value for v in status[-1].values}
    assert status[-1].name.endswith(": node") and node["lifecycle_state"] == "active"
    assert node["cpu_fallback"] == "False" and status[-1].level == bytes([0])  # device: cpu was asked for
    assert 0 < float(node["rss_mb"]) < float(node["memory_budget_mb"])


def test_node_opens_no_network_sockets(node):
    """Shared memory only: the node holds no UDP socket (so nothing can leave the loopback interface)."""
    assert udp_addresses(node.process.pid) == []


def test_ctrl_c_exits_cleanly(node, ros):
    assert node.interrupt() == 0, node.output
    assert "Traceback" not in node.output and "Exception" not in node.output, node.output


def test_startup_errors_name_the_problem(tmp_path):
    """A missing weights file, a misspelt parameter, a QoS override no topic has, require_gpu without a
    GPU: exit status 1 and a message naming them."""
    require_built_package()
    import torch

    cases = {
        "missing_weights": ({"weights": "/nonexistent/weights.pth", "device": "cpu"}, r"/nonexistent/weights\.pth"),
        "unknown_parameter": ({"weights": "untrained", "max_keypoint": 10}, r"unknown parameter\(s\) \['max_keypoint'\]"),
        "qos_override_of_nothing": ({"weights": "untrained", "device": "cpu", "warmup_size": [0, 0],
                                     "qos_overrides./no_such_topic.publisher.depth": 3},
                                    r"qos_overrides \['qos_overrides\./no_such_topic\.publisher\.depth'\] match no"),
        "require_gpu": ({"weights": "untrained", "device": "auto", "require_gpu": True},
                        r"require_gpu is true but the device is cpu"),
    }
    if torch.cuda.is_available():
        del cases["require_gpu"]  # cannot fail here
    processes = {  # started together: most of the time is importing torch
        name: NodeProcess([NODE_EXECUTABLE, "--ros-args", "--params-file", write_params(tmp_path / f"{name}.yaml", p)])
        for name, (p, _) in cases.items()
    }
    try:
        for name, (_, expected) in cases.items():
            process = processes[name]
            assert process.process.wait(120) == 1, process.output
            assert re.search(expected, process.output), process.output
    finally:
        for process in processes.values():
            process.stop()


def _diagnostics(ros, timeout: float = 10.0):
    from diagnostic_msgs.msg import DiagnosticArray

    if not hasattr(ros, "diagnostics"):
        ros.diagnostics = ros.collect(DiagnosticArray, "/diagnostics")
    count = len(ros.diagnostics)
    ros.wait_for(lambda: len(ros.diagnostics) > count, timeout=timeout, what="/diagnostics")
    return ros.diagnostics[-1].status


def _diagnostic_value(ros, key: str, camera: int | None = 0) -> str:
    """A value of camera ``camera``'s status (None: the node's status, the last one)."""
    status = _diagnostics(ros)
    values = {v.key: v.value for v in status[-1 if camera is None else camera].values}
    return values.get(key, "0")
