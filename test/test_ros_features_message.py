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

    from superpoint_ros.features_message import FORMAT_VERSION

    assert ros_features.FORMAT_VERSION == FORMAT_VERSION  # the .msg constant and the module agree

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


# -- format 2: the camera model, and old (format 1) messages ------------------------------------------

FORMAT_1_DEFINITION = """std_msgs/Header header
uint32 height
uint32 width
float32[] keypoints
float32[] scores
uint32 descriptor_dim
string descriptor_encoding
uint8[] descriptor_data
string weights
"""  # msg/Features.msg as released before format_version (git history), comments dropped


def camera_info(store=None, **changes):
    """A sensor_msgs/CameraInfo (rosbags when ``store`` is given, else a namespace) of a real calibration:
    TUM fr1's published intrinsics and plumb_bob distortion (fx 517.3, fy 516.5, cx 318.6, cy 255.3)."""
    fields = dict(
        height=480, width=640, distortion_model="plumb_bob",
        d=np.array([0.2624, -0.9531, -0.0054, 0.0026, 1.1633]),
        k=np.array([517.3, 0, 318.6, 0, 516.5, 255.3, 0, 0, 1.0]), r=np.eye(3).reshape(-1),
        p=np.array([517.3, 0, 318.6, 0, 0, 516.5, 255.3, 0, 0, 0, 1.0, 0]), binning_x=0, binning_y=0,
    )
    roi = dict(x_offset=0, y_offset=0, height=0, width=0, do_rectify=False)
    roi.update(changes.pop("roi", {}))
    fields.update(changes)
    if store is None:
        return SimpleNamespace(**fields, roi=SimpleNamespace(**roi), header=None)
    types = store.types
    return types["sensor_msgs/msg/CameraInfo"](header=bag_header(store), roi=types["sensor_msgs/msg/RegionOfInterest"](**roi),
                                               **fields)


def test_camera_model_round_trip_through_rosbags_cdr(store, features):
    from superpoint_ros.features_message import FORMAT_VERSION, CameraGeometry

    Features_ = store.types["superpoint_ros/msg/Features"]
    geometry = CameraGeometry.from_camera_info(camera_info(store, binning_x=2, binning_y=2,
                                                           roi={"x_offset": 8, "y_offset": 4, "height": 200,
                                                                "width": 300}))
    normalized = geometry.normalize(features.keypoints.numpy())
    msg = features_to_message(Features_, bag_header(store), features.numpy(), (240, 320), camera=geometry,
                              keypoints_normalized=normalized)
    raw = store.serialize_cdr(msg, Features_.__msgtype__)
    decoded = features_from_message(store.deserialize_cdr(raw, Features_.__msgtype__))
    assert decoded.format_version == FORMAT_VERSION == 2
    camera = decoded.camera
    assert camera is not None and camera.distortion_model == "plumb_bob" and (camera.height, camera.width) == (480, 640)
    np.testing.assert_array_equal(camera.k, geometry.k)
    np.testing.assert_array_equal(camera.p, geometry.p)
    np.testing.assert_array_equal(camera.d, geometry.d)
    assert (camera.binning_x, camera.binning_y, camera.roi) == (2, 2, (8, 4, 200, 300))
    np.testing.assert_array_equal(decoded.keypoints_normalized, normalized)
    # without a camera model: the fields are empty and decode as None
    plain = features_from_message(store.deserialize_cdr(
        store.serialize_cdr(features_to_message(Features_, bag_header(store), features.numpy()), Features_.__msgtype__),
        Features_.__msgtype__))
    assert plain.camera is None and plain.keypoints_normalized is None and plain.format_version == 2


def test_old_format_messages_still_decode(features):
    """A format-1 message (built from the old definition, as old bags hold it) decodes, camera-less."""
    from rosbags.typesys import get_types_from_msg

    old_store = get_typestore(Stores.ROS2_JAZZY)
    old_store.register(get_types_from_msg(FORMAT_1_DEFINITION, "superpoint_ros/msg/Features"))
    Old = old_store.types["superpoint_ros/msg/Features"]
    assert "format_version" not in Old.__dataclass_fields__
    msg = features_to_message(Old, bag_header(old_store), features.numpy(), (240, 320), weights="old")
    decoded = features_from_message(old_store.deserialize_cdr(old_store.serialize_cdr(msg, Old.__msgtype__),
                                                              Old.__msgtype__))
    assert decoded.format_version == 1 and decoded.camera is None and decoded.keypoints_normalized is None
    np.testing.assert_array_equal(decoded.keypoints, features.keypoints.numpy())
    assert decoded.weights == "old"


@pytest.mark.parametrize("model", ["plumb_bob", "rational_polynomial", "equidistant", "rectified"])
def test_normalized_keypoints_invert_the_camera_model(model):
    """Points in front of the camera projected forward (cv2.projectPoints / fisheye.projectPoints, then
    binned and cropped to the ROI) come back as their x/z, y/z."""
    import cv2

    rng = np.random.default_rng(1)
    truth = np.column_stack([rng.uniform(-0.5, 0.5, 50), rng.uniform(-0.4, 0.4, 50)])
    objects = np.column_stack([truth, np.ones(50)]).reshape(-1, 1, 3)
    info = camera_info(binning_x=2, binning_y=2, roi={"x_offset": 40, "y_offset": 20, "height": 200, "width": 280})
    k = info.k.reshape(3, 3)
    zero = np.zeros(3)
    from superpoint_ros.features_message import CameraGeometry

    if model == "equidistant":
        info.distortion_model, info.d = model, np.array([0.1, -0.05, 0.01, -0.002])
        sensor, _ = cv2.fisheye.projectPoints(objects, zero, zero, k, info.d)
    elif model == "rational_polynomial":
        info.distortion_model, info.d = model, np.array([0.2, -0.5, 0.001, 0.002, 0.3, 0.05, -0.1, 0.2])
        sensor, _ = cv2.projectPoints(objects, zero, zero, k, info.d)
    elif model == "plumb_bob":
        sensor, _ = cv2.projectPoints(objects, zero, zero, k, info.d)
    else:  # a rectified image: P's intrinsics, no distortion
        info.p = np.array([500.0, 0, 320, 0, 0, 500, 240, 0, 0, 0, 1, 0])
        sensor, _ = cv2.projectPoints(objects, zero, zero, info.p.reshape(3, 4)[:, :3], None)
    sensor = sensor.reshape(-1, 2)
    published = (sensor - [40, 20] + 0.5) / 2 - 0.5  # binned 2x2, then the ROI's offset
    geometry = CameraGeometry.from_camera_info(info, rectified=model == "rectified")
    np.testing.assert_allclose(geometry.sensor_pixels(published), sensor, atol=1e-9)
    np.testing.assert_allclose(geometry.normalize(published), truth, atol=2e-4)
    assert CameraGeometry.from_camera_info(camera_info(k=np.zeros(9))).normalize(published) is None  # uncalibrated
    assert CameraGeometry.from_camera_info(camera_info(d=np.ones(3))).normalize(published) is None  # D of no model
    assert CameraGeometry.from_camera_info(camera_info(distortion_model="kannala")).normalize(published) is None
