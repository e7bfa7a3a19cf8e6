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
        numpy_to_image_fields(photo_gray, "nv24")


# -- the encodings camera drivers publish, checked against conversions written here from the standards --

def _bt601_encode(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Full-resolution Y, U, V (float) of RGB uint8, ITU-R BT.601 limited range (16-235, 16-240)."""
    r, g, b = (rgb[..., i].astype(np.float64) for i in range(3))
    y = 16 + 0.257 * r + 0.504 * g + 0.098 * b
    u = 128 - 0.148 * r - 0.291 * g + 0.439 * b
    v = 128 + 0.439 * r - 0.368 * g - 0.071 * b
    return y, u, v


def _bt601_decode(y: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """RGB uint8 of full-resolution Y, U, V, BT.601 limited range."""
    c, d, e = y - 16.0, u - 128.0, v - 128.0
    rgb = np.stack([1.164 * c + 1.596 * e, 1.164 * c - 0.392 * d - 0.813 * e, 1.164 * c + 2.017 * d], axis=-1)
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


def _u8(values: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


def _packed_422(rgb: np.ndarray, order: str) -> tuple[bytes, np.ndarray]:
    """Bytes of a 4:2:2 packed image (``order`` "YUYV" or "UYVY"), and the RGB a decoder should give."""
    y, u, v = _bt601_encode(rgb)
    u2 = (u[:, 0::2] + u[:, 1::2]) / 2  # one chroma pair per two pixels
    v2 = (v[:, 0::2] + v[:, 1::2]) / 2
    planes = {"Y0": _u8(y[:, 0::2]), "Y1": _u8(y[:, 1::2]), "U": _u8(u2), "V": _u8(v2)}
    names = ["Y0", "U", "Y1", "V"] if order == "YUYV" else ["U", "Y0", "V", "Y1"]
    packed = np.stack([planes[n] for n in names], axis=-1)  # (H, W/2, 4)
    yq = np.empty(y.shape, np.float64)
    yq[:, 0::2], yq[:, 1::2] = planes["Y0"], planes["Y1"]
    expected = _bt601_decode(yq, np.repeat(planes["U"], 2, 1).astype(float), np.repeat(planes["V"], 2, 1).astype(float))
    return packed.tobytes(), expected


def _semi_planar_420(rgb: np.ndarray, order: str) -> tuple[bytes, np.ndarray]:
    """Bytes of NV12 ("UV") or NV21 ("VU"), and the RGB a decoder should give (chroma per 2x2 block)."""
    y, u, v = _bt601_encode(rgb)

    def block(c):
        return _u8((c[0::2, 0::2] + c[0::2, 1::2] + c[1::2, 0::2] + c[1::2, 1::2]) / 4)

    uq, vq = block(u), block(v)
    first, second = (uq, vq) if order == "UV" else (vq, uq)
    chroma = np.stack([first, second], axis=-1).reshape(rgb.shape[0] // 2, rgb.shape[1])
    luma = _u8(y)
    up = np.ones((2, 2))
    expected = _bt601_decode(luma.astype(float), np.kron(uq, up), np.kron(vq, up))
    return np.concatenate([luma, chroma]).tobytes(), expected


YUV_CASES = {  # encoding -> (bytes maker, layout, OpenCV code cv_bridge uses, bytes per pixel of step)
    "yuv422_yuy2": (_packed_422, "YUYV", cv2.COLOR_YUV2RGB_YUY2, 2),
    "yuyv": (_packed_422, "YUYV", cv2.COLOR_YUV2RGB_YUY2, 2),
    "uyvy": (_packed_422, "UYVY", cv2.COLOR_YUV2RGB_UYVY, 2),
    "yuv422": (_packed_422, "UYVY", cv2.COLOR_YUV2RGB_UYVY, 2),
    "nv12": (_semi_planar_420, "UV", cv2.COLOR_YUV2RGB_NV12, 1),
    "nv21": (_semi_planar_420, "VU", cv2.COLOR_YUV2RGB_NV21, 1),
}


@pytest.mark.parametrize("encoding", list(YUV_CASES))
def test_yuv_encodings_give_the_photo_colours(photo_rgb, encoding):
    """Bytes laid out by hand from the BT.601 formulas: the node's RGB equals OpenCV's cvtColor with
    cv_bridge's code on those bytes, is within 2 levels of the textbook decode, and close to the photo
    (swapped chroma or a wrong byte order would be tens of levels off)."""
    make, layout, code, bytes_per_pixel = YUV_CASES[encoding]
    data, expected = make(photo_rgb, layout)
    height, width = photo_rgb.shape[:2]
    msg = SimpleNamespace(height=height, width=width, encoding=encoding, is_bigendian=0,
                          step=width * bytes_per_pixel, data=data)
    out = image_msg_to_numpy(msg)
    assert out.shape == photo_rgb.shape and out.dtype == np.uint8
    raw = np.frombuffer(data, np.uint8)
    shaped = raw.reshape(height, width, 2) if bytes_per_pixel == 2 else raw.reshape(height * 3 // 2, width)
    np.testing.assert_array_equal(out, cv2.cvtColor(shaped, code))
    assert np.abs(out.astype(int) - expected).max() <= 2
    error = np.abs(out.astype(int) - photo_rgb).mean(axis=(0, 1))
    assert error.max() < 4, error
    # our own encoder (numpy_to_image_fields, used by the tests and benchmarks) agrees, with row padding
    padded = image_msg_to_numpy(message(photo_rgb, encoding))
    assert np.abs(padded.astype(int) - photo_rgb).mean(axis=(0, 1)).max() < 4
    fields = numpy_to_image_fields(photo_rgb, encoding, row_padding=6)
    np.testing.assert_array_equal(image_msg_to_numpy(SimpleNamespace(**fields)), padded)


@pytest.mark.parametrize("encoding,order,alpha", [("rgb16", "rgb", False), ("bgr16", "bgr", False),
                                                  ("rgba16", "rgb", True), ("bgra16", "bgr", True),
                                                  ("8UC4", "bgr", True)])
@pytest.mark.parametrize("bigendian", [False, True])
def test_16bit_and_four_channel_colour(photo_rgb, encoding, order, alpha, bigendian):
    """Bytes laid out by hand: 16-bit values are the photo x 257 (+ noise below 1/257) in the named
    channel order, 8UC4 is OpenCV's BGRA; the result is the photo's RGB exactly."""
    wide = encoding != "8UC4"
    if not wide and bigendian:
        pytest.skip("one byte per channel")
    channels = photo_rgb[..., ::-1] if order == "bgr" else photo_rgb
    if alpha:
        channels = np.concatenate([channels, np.full_like(channels[..., :1], 7)], axis=2)  # alpha ignored
    if wide:
        noise = np.random.default_rng(0).integers(0, 100, channels.shape)
        values = (channels.astype(np.uint32) * 257 + noise).clip(0, 65535).astype(">u2" if bigendian else "<u2")
    else:
        values = channels
    height, width = photo_rgb.shape[:2]
    msg = SimpleNamespace(height=height, width=width, encoding=encoding, is_bigendian=int(bigendian),
                          step=values.strides[0], data=values.tobytes())
    out = image_msg_to_numpy(msg)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, photo_rgb)


@pytest.mark.parametrize("encoding,size", [("yuyv", (4, 5)), ("uyvy", (4, 5)), ("nv12", (5, 4)), ("nv21", (4, 5))])
def test_chroma_subsampled_encodings_need_even_sizes(encoding, size):
    height, width = size
    msg = SimpleNamespace(height=height, width=width, encoding=encoding, is_bigendian=0, step=width * 2,
                          data=bytes(height * width * 4))
    with pytest.raises(ImageConversionError) as error:
        image_msg_to_numpy(msg)
    assert error.value.kind == "odd_size"


def test_nv12_truncated_chroma_is_refused(photo_rgb):
    fields = numpy_to_image_fields(photo_rgb, "nv12")
    fields["data"] = fields["data"][: fields["step"] * fields["height"]]  # the Y plane only
    with pytest.raises(ImageConversionError) as error:
        image_msg_to_numpy(SimpleNamespace(**fields))
    assert error.value.kind == "truncated"


@pytest.mark.parametrize("fmt", ["jpg", "png"])
@pytest.mark.parametrize("gray", [False, True])
def test_compressed_size_is_read_from_the_header(photo_rgb, fmt, gray):
    from superpoint_ros.image_conversion import compressed_image_size

    image = cv2.resize(photo_rgb, (333, 211))
    if gray:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    params = [cv2.IMWRITE_JPEG_PROGRESSIVE, 1] if fmt == "jpg" and gray else []  # SOF2 as well as SOF0
    ok, encoded = cv2.imencode(f".{fmt}", image, params)
    assert ok and compressed_image_size(encoded.reshape(-1)) == (211, 333)
    assert compressed_image_size(encoded.reshape(-1)[:40]) is None or fmt == "png"  # cut: no guess (JPEG)
    assert compressed_image_size(b"GIF89a....") is None


def test_huge_compressed_image_is_refused_before_decoding(monkeypatch):
    """A 20000x20000 PNG header (a few bytes) is refused without calling the decoder."""
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return len(body).to_bytes(4, "big") + kind + body + zlib.crc32(kind + body).to_bytes(4, "big")

    header = (20000).to_bytes(4, "big") * 2 + bytes([8, 0, 0, 0, 0])
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 100)) + chunk(b"IEND", b"")
    monkeypatch.setattr(cv2, "imdecode", lambda *a: pytest.fail("decoded a refused image"))
    with pytest.raises(ImageConversionError) as info:
        compressed_msg_to_numpy(SimpleNamespace(format="png", data=png), max_pixels=1 << 26)
    assert info.value.kind == "too_large" and "20000x20000" in str(info.value)
