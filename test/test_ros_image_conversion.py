"""superpoint_ros.image_conversion: every encoding, step and byte order, the malformed kinds, compressed images."""

from __future__ import annotations

import array
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from superpoint_ros.image_conversion import (
    SUPPORTED_ENCODINGS,
    ImageConversionError,
    compressed_msg_to_numpy,
    image_msg_to_numpy,
    numpy_to_image_fields,
)

BAYER = [e for e in SUPPORTED_ENCODINGS if e.startswith("bayer_")]


def message(array_: np.ndarray, encoding: str, **overrides) -> SimpleNamespace:
    fields = numpy_to_image_fields(array_, encoding)
    fields.update(overrides)
    return SimpleNamespace(**fields)


def test_encodings_cover_the_issue_list():
    wanted = {"mono8", "mono16", "8UC1", "8UC3", "bgr8", "rgb8", "bgra8", "rgba8", "16UC1", "32FC1"}
    assert wanted <= set(SUPPORTED_ENCODINGS)
    assert {f"bayer_{p}{b}" for p in ("rggb", "bggr", "gbrg", "grbg") for b in (8, 16)} <= set(BAYER)


@pytest.mark.parametrize("encoding", ["bgr8", "rgb8", "bgra8", "rgba8", "8UC3"])
def test_colour_round_trip_is_exact(photo_rgb, encoding):
    out = image_msg_to_numpy(message(photo_rgb, encoding))
    assert out.dtype == np.uint8 and out.shape == photo_rgb.shape
    np.testing.assert_array_equal(out, photo_rgb)


def test_bgr8_bytes_are_in_bgr_order(photo_rgb):
    fields = numpy_to_image_fields(photo_rgb, "bgr8")
    raw = np.frombuffer(fields["data"], np.uint8).reshape(photo_rgb.shape)
    np.testing.assert_array_equal(raw, cv2.cvtColor(photo_rgb, cv2.COLOR_RGB2BGR))


@pytest.mark.parametrize("encoding", ["mono8", "8UC1"])
def test_mono8_is_a_zero_copy_view(photo_gray, encoding):
    fields = numpy_to_image_fields(photo_gray, encoding, row_padding=7)
    fields["data"] = bytearray(fields["data"])
    msg = SimpleNamespace(**fields)
    out = image_msg_to_numpy(msg)
    np.testing.assert_array_equal(out, photo_gray)
    assert np.shares_memory(out, np.frombuffer(msg.data, np.uint8))


def test_rgb8_with_row_padding_is_a_view(photo_rgb):
    fields = numpy_to_image_fields(photo_rgb, "rgb8", row_padding=4)
    assert fields["step"] == photo_rgb.shape[1] * 3 + 4
    data = bytearray(fields["data"])
    out = image_msg_to_numpy(SimpleNamespace(**{**fields, "data": data}))
    np.testing.assert_array_equal(out, photo_rgb)
    assert np.shares_memory(out, np.frombuffer(data, np.uint8))


@pytest.mark.parametrize("encoding", ["mono16", "16UC1"])
@pytest.mark.parametrize("bigendian", [False, True])
def test_16bit_gray_is_float_full_range(encoding, bigendian):
    values = np.array([[0, 1, 257], [4095, 32768, 65535]], np.uint16)
    fields = numpy_to_image_fields(values, encoding, row_padding=2)
    if bigendian:
        rows = np.frombuffer(fields["data"], np.uint8).reshape(2, -1)[:, :6]
        swapped = rows.copy().view("<u2").byteswap().view(np.uint8)
        fields["data"] = np.concatenate([swapped, np.zeros((2, 2), np.uint8)], axis=1).tobytes()
        fields["is_bigendian"] = 1
    out = image_msg_to_numpy(SimpleNamespace(**fields))
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, values / 65535.0, rtol=1e-6)


def test_uint8_into_16bit_scales_by_257(photo_gray):
    out = image_msg_to_numpy(message(photo_gray, "mono16"))
    np.testing.assert_allclose(out, photo_gray / 255.0, atol=1e-6)


def test_32fc1_rule():
    unit = np.array([[0.0, 0.25], [0.5, 1.0]], np.float32)
    np.testing.assert_array_equal(image_msg_to_numpy(message(unit, "32FC1")), unit)
    depth = np.array([[np.nan, 2.0], [np.inf, 6.0]], np.float32)  # metres, with holes
    out = image_msg_to_numpy(message(depth, "32FC1"))
    np.testing.assert_allclose(out, [[0.0, 0.0], [0.0, 1.0]])
    assert out.dtype == np.float32
    depth = np.array([[1.0, 2.0], [3.0, 5.0]], np.float32)
    np.testing.assert_allclose(image_msg_to_numpy(message(depth, "32FC1")), [[0.0, 0.25], [0.5, 1.0]])
    constant = np.full((2, 2), 7.0, np.float32)
    np.testing.assert_array_equal(image_msg_to_numpy(message(constant, "32FC1")), 0.0)


@pytest.mark.parametrize("encoding", BAYER)
def test_bayer_pattern_gives_the_right_colours(encoding):
    # Pure colours survive demosaicing exactly away from the border: any pattern mix-up swaps them.
    for colour in ([255, 0, 0], [0, 255, 0], [0, 0, 255], [200, 120, 40]):
        rgb = np.empty((16, 16, 3), np.uint8)
        rgb[:] = colour
        out = image_msg_to_numpy(message(rgb, encoding))
        assert out.shape == rgb.shape and out.dtype == np.uint8
        np.testing.assert_array_equal(out[4:-4, 4:-4], rgb[4:-4, 4:-4], err_msg=f"{encoding} {colour}")


@pytest.mark.parametrize("encoding", ["bayer_rggb8", "bayer_gbrg16"])
def test_bayer_photo_is_close(photo_rgb, encoding):
    out = image_msg_to_numpy(message(photo_rgb, encoding))
    error = np.abs(out.astype(float) - photo_rgb)[2:-2, 2:-2].mean()
    assert error < 8.0, error


@pytest.mark.parametrize(
    "data",
    [bytes, bytearray, lambda b: array.array("B", b), lambda b: np.frombuffer(b, np.uint8).copy(), list, memoryview],
    ids=["bytes", "bytearray", "array", "numpy", "list", "memoryview"],
)
def test_data_containers(photo_rgb, data):
    fields = numpy_to_image_fields(photo_rgb, "bgr8", row_padding=3)
    fields["data"] = data(fields["data"])
    np.testing.assert_array_equal(image_msg_to_numpy(SimpleNamespace(**fields)), photo_rgb)


def test_rclpy_and_rosbags_messages(photo_rgb):
    fields = numpy_to_image_fields(photo_rgb, "rgb8")
    from rosbags.typesys import Stores, get_typestore

    store = get_typestore(Stores.ROS2_JAZZY)
    Time, Header = store.types["builtin_interfaces/msg/Time"], store.types["std_msgs/msg/Header"]
    header = Header(stamp=Time(sec=1, nanosec=2), frame_id="cam")
    bag_msg = store.types["sensor_msgs/msg/Image"](
        header=header, **{**fields, "data": np.frombuffer(fields["data"], np.uint8)}
    )
    np.testing.assert_array_equal(image_msg_to_numpy(bag_msg), photo_rgb)
    sensor_msgs = pytest.importorskip("sensor_msgs.msg")
    data = array.array("B")
    data.frombytes(fields["data"])
    ros_msg = sensor_msgs.Image(**{**fields, "data": data})
    np.testing.assert_array_equal(image_msg_to_numpy(ros_msg), photo_rgb)


GOOD = {"height": 4, "width": 6, "encoding": "rgb8", "is_bigendian": 0, "step": 18, "data": bytes(72)}


@pytest.mark.parametrize(
    "change, kind",
    [
        ({"step": 17}, "step_too_small"),
        ({"data": bytes(71)}, "truncated"),
        ({"encoding": "yuv422_weird"}, "unknown_encoding"),
        ({"height": 0, "data": b"", "step": 18}, "zero_size"),
        ({"width": 0}, "zero_size"),
        ({"height": 100000, "width": 100000, "step": 300000}, "too_large"),
        ({"encoding": "mono16", "width": 6, "step": 13, "data": bytes(52)}, "encoding_step_mismatch"),
        ({"encoding": "32FC1", "step": 26, "data": bytes(104)}, "encoding_step_mismatch"),
    ],
)
def test_malformed_messages_raise_with_kind(change, kind):
    with pytest.raises(ImageConversionError) as info:
        image_msg_to_numpy(SimpleNamespace(**{**GOOD, **change}))
    assert info.value.kind == kind
    assert isinstance(info.value, ValueError)


def test_max_pixels_is_configurable():
    with pytest.raises(ImageConversionError, match="too_large"):
        image_msg_to_numpy(SimpleNamespace(**GOOD), max_pixels=23)
    assert image_msg_to_numpy(SimpleNamespace(**GOOD), max_pixels=24).shape == (4, 6, 3)


def test_extra_trailing_data_is_ignored(photo_gray):
    fields = numpy_to_image_fields(photo_gray, "mono8")
    fields["data"] += bytes(10)
    np.testing.assert_array_equal(image_msg_to_numpy(SimpleNamespace(**fields)), photo_gray)


def _compressed(image: np.ndarray, ext: str, fmt: str, prefix: bytes = b"") -> SimpleNamespace:
    ok, encoded = cv2.imencode(ext, image)
    assert ok
    return SimpleNamespace(format=fmt, data=array.array("B", prefix + encoded.tobytes()))


def test_compressed_jpeg_and_png(photo_rgb, photo_gray):
    bgr = cv2.cvtColor(photo_rgb, cv2.COLOR_RGB2BGR)
    out = compressed_msg_to_numpy(_compressed(bgr, ".jpg", "rgb8; jpeg compressed bgr8"))
    assert out.shape == photo_rgb.shape and out.dtype == np.uint8
    assert np.abs(out.astype(float) - photo_rgb).mean() < 4.0  # RGB, not BGR
    np.testing.assert_array_equal(compressed_msg_to_numpy(_compressed(bgr, ".png", "png")), photo_rgb)
    np.testing.assert_array_equal(compressed_msg_to_numpy(_compressed(photo_gray, ".png", "mono8; png")), photo_gray)
    bgra = cv2.cvtColor(bgr, cv2.COLOR_BGR2BGRA)
    np.testing.assert_array_equal(compressed_msg_to_numpy(_compressed(bgra, ".png", "bgra8; png")), photo_rgb)


def test_compressed_depth_png():
    depth = (np.arange(48, dtype=np.uint16).reshape(6, 8) * 1000).astype(np.uint16)
    msg = _compressed(depth, ".png", "16UC1; compressedDepth png", prefix=bytes(12))
    np.testing.assert_allclose(compressed_msg_to_numpy(msg), depth / 65535.0, rtol=1e-6)


def test_compressed_errors():
    with pytest.raises(ImageConversionError) as info:
        compressed_msg_to_numpy(SimpleNamespace(format="jpeg", data=b"not an image at all"))
    assert info.value.kind == "decode_failed"
    with pytest.raises(ImageConversionError) as info:
        compressed_msg_to_numpy(SimpleNamespace(format="jpeg", data=b""))
    assert info.value.kind == "zero_size"


def test_numpy_to_image_fields_checks_its_input(photo_gray, photo_rgb):
    with pytest.raises(ValueError, match="RGB"):
        numpy_to_image_fields(photo_gray, "bgr8")
    with pytest.raises(ValueError, match="gray"):
        numpy_to_image_fields(photo_rgb, "mono8")
    with pytest.raises(ValueError, match="unknown encoding"):
        numpy_to_image_fields(photo_gray, "nv12")
