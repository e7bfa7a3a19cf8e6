"""superpoint_ros.features_message and message_types: numpy/torch <-> Features, rclpy and rosbags alike."""

from __future__ import annotations

import array
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from rosbags.typesys import Stores, get_typestore

from superpoint_ros.features_message import FeatureArrays, features_from_message, features_to_message
from superpoint_ros.message_types import definitions_dir, message_definitions, register_rosbags_types
from superpoint_training.model.extractor import Extractor, Features


@pytest.fixture(scope="module")
def store():
    typestore = get_typestore(Stores.ROS2_JAZZY)
    register_rosbags_types(typestore)
    return typestore


@pytest.fixture(scope="module")
def features(photo_gray) -> Features:
    extractor = Extractor("untrained", device="cpu", max_keypoints=300, warmup=False)
    result = extractor(photo_gray)
    assert len(result) > 20
    return result


def bag_header(store, sec=12, nanosec=345, frame_id="camera"):
    Time, Header = store.types["builtin_interfaces/msg/Time"], store.types["std_msgs/msg/Header"]
    return Header(stamp=Time(sec=sec, nanosec=nanosec), frame_id=frame_id)


def test_message_definitions_match_the_repository():
    definitions = message_definitions()
    assert set(definitions) >= {"superpoint_ros/msg/Features"}
    text = definitions["superpoint_ros/msg/Features"]
    for field in ("float32[] keypoints", "uint8[] descriptor_data", "string descriptor_encoding", "string weights"):
        assert field in text
    assert (definitions_dir() / "Features.msg").read_text() == text


def test_float32_round_trip_through_rosbags_cdr(store, features):
    Features_ = store.types["superpoint_ros/msg/Features"]
    msg = features_to_message(Features_, bag_header(store), features.numpy(), (240, 320), weights="untrained")
    assert msg.descriptor_data.dtype == np.uint8 and msg.keypoints.dtype == np.float32
    raw = store.serialize_cdr(msg, Features_.__msgtype__)
    decoded = features_from_message(store.deserialize_cdr(raw, Features_.__msgtype__))
    assert isinstance(decoded, FeatureArrays)
    np.testing.assert_array_equal(decoded.keypoints, features.keypoints.numpy())
    np.testing.assert_array_equal(decoded.scores, features.scores.numpy())
    np.testing.assert_array_equal(decoded.descriptors, features.descriptors.numpy())
    assert decoded.image_size == (240, 320) and decoded.weights == "untrained"
    assert decoded.header.stamp.sec == 12 and decoded.header.frame_id == "camera"
    assert len(raw) > len(features) * 256 * 4


def test_int8_is_four_times_smaller_and_close(store, features):
    Features_ = store.types["superpoint_ros/msg/Features"]
    full = features_to_message(Features_, bag_header(store), features, encoding="float32")
    small = features_to_message(Features_, bag_header(store), features, encoding="int8")
    assert small.descriptor_data.size * 4 == full.descriptor_data.size
    decoded = features_from_message(small)
    reference = features.descriptors.numpy()
    cosine = (decoded.descriptors * reference).sum(1)
    assert cosine.min() > 0.999
    np.testing.assert_allclose(np.linalg.norm(decoded.descriptors, axis=1), 1.0, atol=1e-5)
    # round(127 d) stored as int8 bytes
    stored = small.descriptor_data.view(np.int8).reshape(len(features), -1)
    np.testing.assert_array_equal(stored, np.rint(reference * 127).astype(np.int8))
    # the same bytes from numpy and from torch input
    numpy_small = features_to_message(Features_, bag_header(store), features.numpy(), encoding="int8")
    np.testing.assert_array_equal(numpy_small.descriptor_data, small.descriptor_data)


def test_fixed_keypoints_send_only_valid_entries(store, photo_gray):
    extractor = Extractor("untrained", device="cpu", max_keypoints=5000, fixed_keypoints=True, warmup=False)
    fixed = extractor(photo_gray)
    n_valid = int(fixed.valid.sum())
    assert 0 < n_valid < 5000
    msg = features_to_message(store.types["superpoint_ros/msg/Features"], bag_header(store), fixed)
    decoded = features_from_message(msg)
    assert len(decoded) == n_valid
    np.testing.assert_array_equal(decoded.keypoints, fixed.keypoints[fixed.valid].numpy())


def test_empty_features(store):
    empty = Features(np.zeros((0, 2), np.float32), np.zeros(0, np.float32), np.zeros((0, 256), np.float32), (8, 8))
    msg = features_to_message(store.types["superpoint_ros/msg/Features"], bag_header(store), empty)
    decoded = features_from_message(msg)
    assert decoded.keypoints.shape == (0, 2) and decoded.descriptors.shape == (0, 256)
    assert decoded.image_size == (8, 8)


def test_reads_any_object_with_the_fields():
    kp = np.array([[1.0, 2.0], [3.0, 4.0]], np.float32)
    desc = np.eye(2, 4, dtype=np.float32)
    msg = SimpleNamespace(
        header=None,
        height=10,
        width=20,
        keypoints=kp.reshape(-1).tolist(),
        scores=array.array("f", [0.5, 0.25]),
        descriptor_dim=4,
        descriptor_encoding="float32",
        descriptor_data=desc.tobytes(),
        weights="w",
    )
    decoded = features_from_message(msg)
    np.testing.assert_array_equal(decoded.keypoints, kp)
    np.testing.assert_array_equal(decoded.descriptors, desc)
    np.testing.assert_array_equal(decoded.scores, [0.5, 0.25])


@pytest.mark.parametrize(
    "change, match",
    [
        ({"keypoints": [1.0, 2.0, 3.0]}, "even number"),
        ({"scores": [1.0]}, "scores"),
        ({"descriptor_data": bytes(7)}, "descriptor_data"),
        ({"descriptor_encoding": "float16"}, "descriptor_encoding"),
    ],
)
def test_inconsistent_messages_name_the_field(change, match):
    good = {
        "header": None,
        "height": 1,
        "width": 1,
        "keypoints": [0.0, 0.0, 1.0, 1.0],
        "scores": [1.0, 0.5],
        "descriptor_dim": 2,
        "descriptor_encoding": "float32",
        "descriptor_data": bytes(16),
        "weights": "",
    }
    with pytest.raises(ValueError, match=match):
        features_from_message(SimpleNamespace(**{**good, **change}))


def test_unknown_encoding_is_refused(store, features):
    with pytest.raises(ValueError, match="descriptor encoding"):
        features_to_message(store.types["superpoint_ros/msg/Features"], bag_header(store), features, encoding="fp16")


def test_rclpy_message_class(features, store):
    """The colcon-built class: array.array fields (rclpy's fast path); CDR readable by rosbags and back."""
    from ros_fixtures import features_class

    ros_features = features_class()  # skips without the colcon build
    from rclpy.serialization import deserialize_message, serialize_message
    from std_msgs.msg import Header

    header = Header(frame_id="camera")
    header.stamp.sec, header.stamp.nanosec = 12, 345
    for encoding in ("float32", "int8"):
        msg = features_to_message(ros_features, header, features, (240, 320), encoding, "untrained")
        assert isinstance(msg.keypoints, array.array) and isinstance(msg.descriptor_data, array.array)
        raw = serialize_message(msg)
        bag_msg = features_to_message(
            store.types["superpoint_ros/msg/Features"], bag_header(store), features, (240, 320), encoding, "untrained"
        )
        bag_raw = bytes(store.serialize_cdr(bag_msg, "superpoint_ros/msg/Features"))
        assert len(bytes(raw)) == len(bag_raw)  # same layout; alignment padding bytes may differ
        for decoded in (
            features_from_message(deserialize_message(raw, ros_features)),
            features_from_message(deserialize_message(bag_raw, ros_features)),  # rosbags -> rclpy
            features_from_message(store.deserialize_cdr(bytes(raw), "superpoint_ros/msg/Features")),  # and back
        ):
            np.testing.assert_array_equal(decoded.keypoints, features.keypoints.numpy())
            np.testing.assert_array_equal(decoded.descriptors, features_from_message(bag_msg).descriptors)
            assert decoded.header.stamp.nanosec == 345 and decoded.descriptor_encoding == encoding


def test_cuda_tensors_if_available(store, features):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    on_gpu = features.to("cuda")
    for encoding in ("float32", "int8"):
        a = features_to_message(store.types["superpoint_ros/msg/Features"], bag_header(store), on_gpu, encoding=encoding)
        b = features_to_message(store.types["superpoint_ros/msg/Features"], bag_header(store), features, encoding=encoding)
        np.testing.assert_array_equal(a.descriptor_data, b.descriptor_data)
