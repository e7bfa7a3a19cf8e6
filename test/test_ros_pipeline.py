"""The node's middleware-free parts: frame queue, batched pipeline, debug drawing, diagnostics."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
from rosbags.typesys import Stores, get_typestore

from superpoint_ros.detection_pipeline import DetectionPipeline, Frame, FrameQueue, draw_keypoints
from superpoint_ros.diagnostics import ERROR, OK, STALE, WARN, StreamStats, stream_status
from superpoint_ros.features_message import features_from_message
from superpoint_ros.image_conversion import numpy_to_image_fields
from superpoint_ros.message_types import register_rosbags_types
from superpoint_training.model.extractor import Extractor


def test_frame_queue_keeps_the_newest():
    queue = FrameQueue(cameras=2, depth=1)
    assert queue.put(Frame(0, "a")) == 0
    assert queue.put(Frame(0, "b")) == 1
    assert queue.put(Frame(1, "c")) == 0
    assert [f.msg for f in queue.take(timeout=0)] == ["b", "c"]
    assert queue.dropped == [1, 0]
    assert queue.take(timeout=0.01) == []
    queue.depth = 3
    for name in "xyzw":
        queue.put(Frame(1, name))
    assert [f.msg for f in queue.take(timeout=0)] == ["y"] and queue.dropped == [1, 1]


def test_frame_queue_batch_wait():
    queue = FrameQueue(cameras=2)
    queue.put(Frame(0, "left"))
    threading.Timer(0.05, lambda: queue.put(Frame(1, "right"))).start()
    start = time.monotonic()
    assert [f.msg for f in queue.take(batch_wait=2.0, timeout=1)] == ["left", "right"]
    assert time.monotonic() - start < 1.0  # returned when both cameras had a frame
    queue.put(Frame(0, "alone"))
    start = time.monotonic()
    assert [f.msg for f in queue.take(batch_wait=0.05, timeout=1)] == ["alone"]
    assert 0.04 < time.monotonic() - start < 1.0


def test_frame_queue_close_wakes_the_worker():
    queue = FrameQueue(cameras=1)
    threading.Timer(0.05, queue.close).start()
    assert queue.take(timeout=5) == []


@pytest.fixture(scope="module")
def features_type():
    store = get_typestore(Stores.ROS2_JAZZY)
    register_rosbags_types(store)
    header = store.types["std_msgs/msg/Header"](stamp=store.types["builtin_interfaces/msg/Time"](sec=5, nanosec=6),
                                                frame_id="cam")
    return store.types["superpoint_ros/msg/Features"], header


def test_pipeline_batches_and_skips_malformed(features_type, photo_rgb, photo_gray):
    msg_cls, header = features_type
    photo_rgb, photo_gray = photo_rgb[::2, ::2].copy(), photo_gray[::2, ::2].copy()  # 120x160: quick on 2 cores
    extractor = Extractor("untrained", device="cpu", max_keypoints=20, warmup=False)
    calls = []
    original = extractor.extract
    extractor.extract = lambda images: calls.append(len(images)) or original(images)
    pipeline = DetectionPipeline(extractor, msg_cls, "int8", weights_label="untrained")
    good = SimpleNamespace(header=header, **numpy_to_image_fields(photo_rgb, "bgr8"))
    gray = SimpleNamespace(header=header, **numpy_to_image_fields(photo_gray, "mono8"))
    bad = SimpleNamespace(header=header, **{**numpy_to_image_fields(photo_gray, "mono8"), "step": 3})
    results, times = pipeline.process([Frame(0, good), Frame(1, bad), Frame(2, gray)], keep_images=True)
    assert calls == [2] and times.batch_size == 2 and times.total > 0
    assert results[1].error.kind == "step_too_small" and results[1].message is None
    for result in (results[0], results[2]):
        decoded = features_from_message(result.message)
        assert len(decoded) == 20 and decoded.descriptor_encoding == "int8" and decoded.image_size == (120, 160)
        assert decoded.header.stamp.sec == 5 and result.image is not None
    np.testing.assert_allclose(
        features_from_message(results[0].message).keypoints, extractor(photo_rgb).keypoints.numpy(), atol=1e-4
    )
    with pytest.raises(ValueError, match="descriptor_encoding"):
        pipeline.descriptor_encoding = "fp16"
    pipeline.configure(max_keypoints=5)
    results, _ = pipeline.process([Frame(0, good)])
    assert len(results[0].message.scores) == 5 and results[0].image is None
    with pytest.raises(ValueError):
        pipeline.configure(detection_threshold=3.0)
    assert extractor.config.max_keypoints == 5


def test_draw_keypoints(photo_gray):
    drawn = draw_keypoints(photo_gray, np.array([[10.2, 20.7], [0.0, 0.0], [319.0, 239.0]]))
    assert drawn.shape == (240, 320, 3) and drawn.dtype == np.uint8
    assert (drawn[21, 10] == [0, 255, 0]).all() and (drawn[20:23, 9:12] == [0, 255, 0]).all()
    assert (drawn[0, 0] == [0, 255, 0]).all() and (drawn[239, 319] == [0, 255, 0]).all()
    assert (drawn[100, 100] == photo_gray[100, 100]).all()
    as_float = draw_keypoints(photo_gray.astype(np.float32) / 255, np.zeros((0, 2)))
    np.testing.assert_array_equal(as_float[..., 0], photo_gray)


def test_stream_stats_and_status():
    now = [100.0]
    stats = StreamStats("/cam/image", window_s=5.0, clock=lambda: now[0])
    make_status = lambda **kw: SimpleNamespace(**kw)  # noqa: E731
    assert stream_status(stats, make_status, make_status).level == bytes([WARN])
    for i in range(11):
        now[0] = 100.0 + i * 0.1
        stats.on_received()
        stats.on_published(latency_s=0.010 + 0.001 * i, age_s=0.02)
    stats.on_dropped(3)
    summary = stats.summary()
    assert summary["received"] == 11 and summary["dropped"] == 3
    assert summary["rate_hz"] == pytest.approx(10.0)
    assert summary["latency_p50_ms"] == pytest.approx(15.0)
    assert summary["age_p99_ms"] == pytest.approx(20.0)
    status = stream_status(stats, make_status, make_status, hardware_id="cpu")
    assert status.level == bytes([OK]) and status.hardware_id == "cpu"
    assert {v.key for v in status.values} >= {"rate_hz", "latency_p99_ms", "dropped"}
    stats.on_malformed("truncated")
    status = stream_status(stats, make_status, make_status)
    assert status.level == bytes([WARN]) and "truncated" in status.message
    assert any(v.key == "malformed_truncated" and v.value == "1" for v in status.values)
    now[0] += 10.0
    assert stream_status(stats, make_status, make_status).level == bytes([STALE])


def _stamped(camera: int, sec: int, nanosec: int = 0) -> Frame:
    return Frame(camera, SimpleNamespace(header=SimpleNamespace(stamp=SimpleNamespace(sec=sec, nanosec=nanosec))))


def test_frame_queue_exact_sync_pairs_equal_stamps_and_counts_the_rest():
    queue = FrameQueue(cameras=2, depth=5, sync="exact")
    for camera, sec in [(0, 1), (0, 2), (1, 2), (0, 3), (1, 4)]:
        queue.put(_stamped(camera, sec))
    pair = queue.take(timeout=0)
    assert [(f.camera, f.msg.header.stamp.sec) for f in pair] == [(0, 2), (1, 2)]
    assert queue.unmatched == [1, 0]  # left's frame 1 had no partner
    assert queue.take(timeout=0.05) == []  # left 3 vs right 4: no set
    assert queue.unmatched == [2, 0]  # left 3 can never match now (right is at 4)
    queue.put(_stamped(0, 4))
    assert [f.msg.header.stamp.sec for f in queue.take(timeout=0)] == [4, 4]


def test_frame_queue_approximate_sync_within_slop():
    queue = FrameQueue(cameras=3, depth=5, sync="approximate", slop=0.01)
    queue.put(_stamped(0, 10, 0))
    queue.put(_stamped(1, 10, 8_000_000))  # 8 ms later: inside the slop
    queue.put(_stamped(2, 10, 30_000_000))  # 30 ms: outside
    assert queue.take(timeout=0.05) == []
    assert queue.unmatched == [1, 1, 0]
    queue.put(_stamped(0, 10, 25_000_000))
    queue.put(_stamped(1, 10, 33_000_000))
    assert [f.msg.header.stamp.nanosec for f in queue.take(timeout=0)] == [25_000_000, 33_000_000, 30_000_000]
    with pytest.raises(ValueError, match="sync"):
        FrameQueue(cameras=2, sync="nearest")


def test_stream_status_error_and_warnings():
    now = [100.0]
    stats = StreamStats("/cam/image", window_s=2.0, clock=lambda: now[0])
    status_of = lambda **kw: stream_status(stats, SimpleNamespace, SimpleNamespace, **kw)  # noqa: E731
    for i in range(30):  # images for 3 s, no features: ERROR
        now[0] = 100.0 + i * 0.1
        stats.on_received()
    status = status_of()
    assert status.level == bytes([ERROR]) and "no features leave" in status.message
    for i in range(30):  # now at 2 Hz output of a 10 Hz camera
        now[0] = 103.0 + i * 0.1
        stats.on_received()
        if i % 5 == 0:
            stats.on_published(0.01)
    assert status_of().level == bytes([OK])
    status = status_of(expected_rate=5.0)
    assert status.level == bytes([WARN]) and "below expected_rate 5" in status.message
    stats.count("extraction_failed", detail="RuntimeError: out of memory")
    stats.on_malformed("unknown_encoding")
    stats.on_refused_encoding("yuv420p")
    status = status_of()
    assert status.level == bytes([WARN]) and "extraction failed: 1 (RuntimeError: out of memory)" in status.message
    assert "yuv420p: 1" in status.message
    values = {v.key: v.value for v in status.values}
    assert values["extraction_failed"] == "1" and values["refused_encodings"] == "yuv420p: 1"
    for name in [f"enc{i}" for i in range(12)]:
        stats.on_refused_encoding(name + "\n,:")
    assert "(other): 5" in stats.summary()["refused_encodings"]  # at most 8 names, cleaned


def test_pipeline_scales_large_frames_down_and_maps_keypoints_back(features_type, photo_gray):
    msg_cls, header = features_type
    extractor = Extractor("untrained", device="cpu", max_keypoints=50, warmup=False, subpixel="none")
    big = cv2.resize(photo_gray, (640, 480), interpolation=cv2.INTER_CUBIC)
    pipeline = DetectionPipeline(extractor, msg_cls, max_network_pixels=160 * 120)
    (result,), _ = pipeline.process([Frame(0, SimpleNamespace(header=header, **numpy_to_image_fields(big, "mono8")))])
    decoded = features_from_message(result.message)
    assert decoded.image_size == (480, 640) and pipeline.downscaled == 1
    small = extractor(cv2.resize(big, (160, 120), interpolation=cv2.INTER_AREA)).keypoints.numpy()
    np.testing.assert_allclose(decoded.keypoints, (small + 0.5) * 4 - 0.5, atol=1e-4)
    assert decoded.keypoints.max() > 200  # in the frame's pixels, not the network's
