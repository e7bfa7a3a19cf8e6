"""sensor_msgs/Image and CompressedImage <-> numpy, without cv_bridge and without rclpy.

Works on any object with the message's field names (rclpy messages, rosbags dataclasses, simple
namespaces), so the node and the bag tool share one code path. ``data`` may be ``bytes``,
``bytearray``, ``array.array('B')`` (rclpy), a uint8 numpy array (rosbags), a memoryview or a list.

What :func:`image_msg_to_numpy` returns, by encoding:

====================================================  =============================================
encoding                                               result
====================================================  =============================================
``mono8``, ``8UC1``                                    (H, W) uint8, a zero-copy view of ``data``
``mono16``, ``16UC1``                                  (H, W) float32 = value / 65535 (full range)
``32FC1``                                              (H, W) float32 in [0, 1], see below
``rgb8``                                               (H, W, 3) uint8 RGB, a zero-copy view
``bgr8``, ``8UC3`` (OpenCV order), ``bgra8``, ``rgba8``,  (H, W, 3) uint8 RGB (one cv2 conversion)
``8UC4`` (OpenCV order: BGRA)
``rgb16``, ``bgr16``, ``rgba16``, ``bgra16``           (H, W, 3) uint8 RGB = round(value / 257)
``yuv422_yuy2``, ``yuyv`` (Y0 U Y1 V)                  (H, W, 3) uint8 RGB, BT.601 limited range (cv2
``uyvy``, ``yuv422`` (U Y0 V Y1)                         ``COLOR_YUV2RGB_YUY2`` / ``_UYVY``, as cv_bridge)
``nv12``, ``nv21`` (Y plane, then interleaved UV / VU  (H, W, 3) uint8 RGB, BT.601 limited range (cv2
at half resolution; ``step`` is the Y row stride)        ``COLOR_YUV2RGB_NV12`` / ``_NV21``)
``bayer_{rggb,bggr,gbrg,grbg}8``                       (H, W, 3) uint8 RGB, demosaiced by cv2
``bayer_{rggb,bggr,gbrg,grbg}16``                      (H, W, 3) uint8 RGB, demosaiced in 16 bit, >> 8
====================================================  =============================================

4:2:2 encodings need an even width, 4:2:0 ones an even width and height (kind ``odd_size``).

``32FC1`` (typically depth in metres): NaN and infinite values become 0; when every finite value
already lies in [0, 1] the values are used unchanged, otherwise they are min-max normalised over
the finite values of that frame (a constant frame gives zeros).

Views are read-only when ``data`` is immutable (``bytes``); copy before writing into them. Rows
honour ``step`` (padding at the end of each row is skipped without a copy). Multi-byte encodings
honour ``is_bigendian``.

Every check failure raises :class:`ImageConversionError` whose ``kind`` names the problem, so that a
node can log each kind of malformed message once.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

__all__ = [
    "SUPPORTED_ENCODINGS",
    "DEFAULT_MAX_PIXELS",
    "ImageConversionError",
    "image_msg_to_numpy",
    "compressed_msg_to_numpy",
    "compressed_image_size",
    "numpy_to_image_fields",
]

ERROR_KINDS = (
    "step_too_small",
    "truncated",
    "unknown_encoding",
    "zero_size",
    "too_large",
    "encoding_step_mismatch",
    "decode_failed",
    "odd_size",
)
# 64 megapixels: larger than any camera stream, small enough that a corrupt header claiming
# 100000 x 100000 pixels is refused before anything is allocated.
DEFAULT_MAX_PIXELS = 1 << 26

# encoding -> (channels, bytes per channel, numpy dtype of one channel)
_LAYOUT: dict[str, tuple[int, int, str]] = {
    "mono8": (1, 1, "u1"),
    "8UC1": (1, 1, "u1"),
    "mono16": (1, 2, "u2"),
    "16UC1": (1, 2, "u2"),
    "32FC1": (1, 4, "f4"),
    "rgb8": (3, 1, "u1"),
    "bgr8": (3, 1, "u1"),
    "8UC3": (3, 1, "u1"),
    "rgba8": (4, 1, "u1"),
    "bgra8": (4, 1, "u1"),
    "8UC4": (4, 1, "u1"),
    "rgb16": (3, 2, "u2"),
    "bgr16": (3, 2, "u2"),
    "rgba16": (4, 2, "u2"),
    "bgra16": (4, 2, "u2"),
    # packed 4:2:2: two bytes per pixel
    "yuv422_yuy2": (2, 1, "u1"),
    "yuyv": (2, 1, "u1"),
    "uyvy": (2, 1, "u1"),
    "yuv422": (2, 1, "u1"),
    # semi-planar 4:2:0: a full-resolution Y plane, then H/2 rows of interleaved chroma
    "nv12": (1, 1, "u1"),
    "nv21": (1, 1, "u1"),
}
_YUV422_TO_RGB = {
    "yuv422_yuy2": cv2.COLOR_YUV2RGB_YUY2,
    "yuyv": cv2.COLOR_YUV2RGB_YUY2,
    "uyvy": cv2.COLOR_YUV2RGB_UYVY,
    "yuv422": cv2.COLOR_YUV2RGB_UYVY,  # ROS' "yuv422" is UYVY (cv_bridge decodes it so)
}
_YUV420_TO_RGB = {"nv12": cv2.COLOR_YUV2RGB_NV12, "nv21": cv2.COLOR_YUV2RGB_NV21}
# ROS names the 2x2 pattern from the top-left pixel; OpenCV names it from the second row's second
# and third pixels, so ROS "rggb" is OpenCV "BayerBG" (the mapping cv_bridge uses too).
_BAYER_CV = {
    "rggb": cv2.COLOR_BayerBG2RGB,
    "bggr": cv2.COLOR_BayerRG2RGB,
    "gbrg": cv2.COLOR_BayerGR2RGB,
    "grbg": cv2.COLOR_BayerGB2RGB,
}
for _pattern in _BAYER_CV:
    _LAYOUT[f"bayer_{_pattern}8"] = (1, 1, "u1")
    _LAYOUT[f"bayer_{_pattern}16"] = (1, 2, "u2")

SUPPORTED_ENCODINGS: tuple[str, ...] = tuple(_LAYOUT)
_COLOUR_TO_RGB = {
    "bgr8": cv2.COLOR_BGR2RGB,
    "8UC3": cv2.COLOR_BGR2RGB,
    "bgra8": cv2.COLOR_BGRA2RGB,
    "rgba8": cv2.COLOR_RGBA2RGB,
    "8UC4": cv2.COLOR_BGRA2RGB,
    "bgr16": cv2.COLOR_BGR2RGB,
    "bgra16": cv2.COLOR_BGRA2RGB,
    "rgba16": cv2.COLOR_RGBA2RGB,
}
# encodings whose pixels are colour (an RGB array in numpy_to_image_fields)
_COLOUR = frozenset(["rgb8", "rgb16", *_COLOUR_TO_RGB, *_YUV422_TO_RGB, *_YUV420_TO_RGB])


class ImageConversionError(ValueError):
    """A message that cannot be converted; ``kind`` is one of :data:`ERROR_KINDS`."""

    def __init__(self, kind: str, message: str):
        assert kind in ERROR_KINDS, kind
        super().__init__(f"{kind}: {message}")
        self.kind = kind


def _as_bytes(data: Any) -> np.ndarray:
    """``data`` as a flat uint8 array, without a copy when it supports the buffer protocol."""
    if isinstance(data, np.ndarray):
        if data.dtype != np.uint8:
            data = data.view(np.uint8) if data.flags.c_contiguous else np.ascontiguousarray(data).view(np.uint8)
        return data.reshape(-1)
    if isinstance(data, (list, tuple)):
        return np.asarray(data, dtype=np.uint8)
    try:
        return np.frombuffer(data, dtype=np.uint8)
    except (TypeError, ValueError):
        return np.asarray(data, dtype=np.uint8).reshape(-1)


def image_msg_to_numpy(msg: Any, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Convert a sensor_msgs/Image (any object with its fields) to gray or RGB numpy (see module doc)."""
    encoding = str(msg.encoding)
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    if encoding not in _LAYOUT:
        raise ImageConversionError(
            "unknown_encoding", f"encoding {encoding!r} is not supported (supported: {', '.join(SUPPORTED_ENCODINGS)})"
        )
    if height <= 0 or width <= 0:
        raise ImageConversionError("zero_size", f"image of {height}x{width} pixels")
    if height * width > max_pixels:
        raise ImageConversionError("too_large", f"{height}x{width} pixels exceeds the limit of {max_pixels}")
    if (encoding in _YUV422_TO_RGB and width % 2) or (encoding in _YUV420_TO_RGB and (width % 2 or height % 2)):
        raise ImageConversionError("odd_size", f"{encoding} needs an even {'size' if encoding[:2] == 'nv' else 'width'}"
                                               f", got {height}x{width}")
    channels, item, dtype = _LAYOUT[encoding]
    if encoding in _YUV420_TO_RGB:
        height = height * 3 // 2  # the chroma rows follow the Y plane at the same stride
    row_bytes = width * channels * item
    if step < row_bytes:
        raise ImageConversionError(
            "step_too_small", f"step {step} < width {width} x {channels * item} bytes per pixel of {encoding}"
        )
    if step % item:
        raise ImageConversionError(
            "encoding_step_mismatch", f"step {step} is not a multiple of the {item}-byte channels of {encoding}"
        )
    buffer = _as_bytes(msg.data)
    if buffer.size < height * step:
        raise ImageConversionError(
            "truncated", f"data has {buffer.size} bytes, {height} rows x step {step} need {height * step}"
        )
    rows = buffer[: height * step].reshape(height, step)[:, :row_bytes]
    if item > 1:
        order = ">" if bool(msg.is_bigendian) else "<"
        rows = rows.view(np.dtype(order + dtype))
    image = rows.reshape(height, width, channels) if channels > 1 else rows

    if encoding in _YUV422_TO_RGB:
        return cv2.cvtColor(np.ascontiguousarray(image), _YUV422_TO_RGB[encoding])
    if encoding in _YUV420_TO_RGB:
        return cv2.cvtColor(np.ascontiguousarray(image), _YUV420_TO_RGB[encoding])
    if dtype == "u2" and channels > 1:  # 16-bit colour: 8 bits are what the network sees
        image = _to_8bit(image)
        return cv2.cvtColor(image, _COLOUR_TO_RGB[encoding]) if encoding in _COLOUR_TO_RGB else image
    if encoding.startswith("bayer_"):
        pattern = encoding[len("bayer_") : -2 if item == 2 else -1]
        raw = np.ascontiguousarray(image, dtype=np.uint16 if item == 2 else np.uint8)
        rgb = cv2.cvtColor(raw, _BAYER_CV[pattern])
        return (rgb >> 8).astype(np.uint8) if item == 2 else rgb
    if encoding in _COLOUR_TO_RGB:
        return cv2.cvtColor(np.ascontiguousarray(image), _COLOUR_TO_RGB[encoding])
    if dtype == "u2":
        return image.astype(np.float32) * np.float32(1.0 / 65535.0)
    if dtype == "f4":
        return _normalise_float(image)
    return image


def _to_8bit(values: np.ndarray) -> np.ndarray:
    """uint16 (any byte order) -> uint8 round(value / 257), the inverse of the x257 widening."""
    return cv2.convertScaleAbs(np.ascontiguousarray(values, dtype=np.uint16), alpha=1.0 / 257.0)


def _normalise_float(image: np.ndarray) -> np.ndarray:
    values = image.astype(np.float32)  # native byte order, and a copy we may write into
    finite = np.isfinite(values)
    all_finite = bool(finite.all())
    if all_finite:
        low, high = float(values.min()), float(values.max())
    elif finite.any():
        low, high = float(values[finite].min()), float(values[finite].max())
    else:
        return np.zeros_like(values)
    if low >= 0.0 and high <= 1.0:
        pass
    elif high <= low:
        values.fill(0.0)
    else:
        values -= np.float32(low)
        values *= np.float32(1.0 / (high - low))
        np.clip(values, 0.0, 1.0, out=values)
    if not all_finite:
        values[~finite] = 0.0
    return values


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# JPEG start-of-frame markers (the frame header holds the size): C0-CF except DHT, JPG and DAC
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def compressed_image_size(data: Any) -> tuple[int, int] | None:
    """(height, width) read from a PNG or JPEG header without decoding; None for other or broken data."""
    buffer = _as_bytes(data)
    head = buffer[:32].tobytes()
    if head.startswith(_PNG_SIGNATURE) and len(head) >= 24 and head[12:16] == b"IHDR":
        return int.from_bytes(head[20:24], "big"), int.from_bytes(head[16:20], "big")
    if not head.startswith(b"\xff\xd8"):
        return None
    position, end = 2, buffer.size
    for _ in range(4096):  # segments before the frame header; a real file has a few dozen
        while position < end and buffer[position] == 0xFF and position + 1 < end and buffer[position + 1] == 0xFF:
            position += 1  # fill bytes
        if position + 9 > end or buffer[position] != 0xFF:
            return None
        marker = int(buffer[position + 1])
        if marker in _JPEG_SOF:
            return (int(buffer[position + 5]) << 8 | int(buffer[position + 6]),
                    int(buffer[position + 7]) << 8 | int(buffer[position + 8]))
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # markers without a length
            position += 2
            continue
        position += 2 + (int(buffer[position + 2]) << 8 | int(buffer[position + 3]))
    return None


def compressed_msg_to_numpy(msg: Any, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode a sensor_msgs/CompressedImage (JPEG, PNG, ...) to gray (H, W) or RGB (H, W, 3) uint8.

    16-bit PNGs (e.g. ``format = "16UC1; compressedDepth png"``; its 12-byte depth header is
    skipped) give float32 in [0, 1] like ``mono16``. An undecodable payload raises
    :class:`ImageConversionError` of kind ``decode_failed``.
    """
    buffer = _as_bytes(msg.data)
    fmt = str(getattr(msg, "format", ""))
    if "compresseddepth" in fmt.lower().replace(" ", ""):
        buffer = buffer[12:]  # compressed_depth_image_transport's ConfigHeader precedes the PNG
    if buffer.size == 0:
        raise ImageConversionError("zero_size", f"compressed image ({fmt!r}) with no data")
    size = compressed_image_size(buffer)
    if size is not None and size[0] * size[1] > max_pixels:  # refused before anything is decoded
        raise ImageConversionError("too_large", f"{fmt or 'compressed'} image of {size[0]}x{size[1]} pixels exceeds "
                                                f"the limit of {max_pixels}")
    image = cv2.imdecode(buffer, cv2.IMREAD_UNCHANGED)
    if image is None or image.size == 0:
        raise ImageConversionError("decode_failed", f"OpenCV cannot decode {buffer.size} bytes of {fmt!r}")
    if image.shape[0] * image.shape[1] > max_pixels:
        raise ImageConversionError("too_large", f"decoded {image.shape[0]}x{image.shape[1]} exceeds {max_pixels}")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2RGB if image.shape[2] == 4 else cv2.COLOR_BGR2RGB)
    if image.dtype == np.uint16:
        return image.astype(np.float32) * np.float32(1.0 / 65535.0)
    if image.dtype != np.uint8:
        raise ImageConversionError("decode_failed", f"decoded pixels of type {image.dtype} are not supported")
    return image


def _to_depth(array: np.ndarray, dtype: str) -> np.ndarray:
    """uint8 / uint16 / float [0, 1] pixel values as the channel type of an encoding."""
    if dtype == "f4":
        return array.astype(np.float32)
    if dtype == "u1":
        if array.dtype == np.uint8:
            return array
        if np.issubdtype(array.dtype, np.floating):
            return np.clip(np.rint(array * 255.0), 0, 255).astype(np.uint8)
        raise ValueError(f"8-bit encodings take uint8 or float [0, 1] arrays, got {array.dtype}")
    if array.dtype == np.uint16:
        return array
    if array.dtype == np.uint8:
        return array.astype(np.uint16) * np.uint16(257)
    if np.issubdtype(array.dtype, np.floating):
        return np.clip(np.rint(array * 65535.0), 0, 65535).astype(np.uint16)
    raise ValueError(f"16-bit encodings take uint16, uint8 or float [0, 1] arrays, got {array.dtype}")


def _mosaic(rgb: np.ndarray, pattern: str) -> np.ndarray:
    """Sample an RGB image through a Bayer colour filter (pattern named from the top-left pixel)."""
    channel = {"r": 0, "g": 1, "b": 2}
    raw = np.empty(rgb.shape[:2], dtype=rgb.dtype)
    for index, letter in enumerate(pattern):
        dy, dx = divmod(index, 2)
        raw[dy::2, dx::2] = rgb[dy::2, dx::2, channel[letter]]
    return raw


def _rgb_to_yuv(rgb: np.ndarray, encoding: str) -> np.ndarray:
    """RGB uint8 -> the packed (H, W, 2) or semi-planar (3H/2, W) bytes of a YUV encoding (BT.601)."""
    if encoding in ("yuv422_yuy2", "yuyv"):
        return cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_YUY2)
    if encoding in ("uyvy", "yuv422"):
        return cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_UYVY)
    height, width = rgb.shape[:2]
    planar = cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_I420).reshape(-1)  # Y, then U and V planes
    luma, chroma = planar[: height * width], planar[height * width :].reshape(2, -1)
    order = (0, 1) if encoding == "nv12" else (1, 0)
    interleaved = np.stack([chroma[order[0]], chroma[order[1]]], axis=1).reshape(height // 2, width)
    return np.concatenate([luma.reshape(height, width), interleaved], axis=0)


def numpy_to_image_fields(array: np.ndarray, encoding: str, row_padding: int = 0) -> dict[str, Any]:
    """Fields of a sensor_msgs/Image holding ``array``, the inverse of :func:`image_msg_to_numpy`.

    ``array`` is what :func:`image_msg_to_numpy` returns for that encoding: gray (H, W) for mono and
    Bayer-free single-channel encodings, RGB (H, W, 3) for colour and Bayer encodings (mosaiced
    here). uint8 data is scaled by 257 for 16-bit encodings; float data in [0, 1] is scaled to the
    encoding's range (``32FC1`` stores it unchanged). ``row_padding`` bytes of zeros end each row
    (to exercise ``step``). Returns ``dict(height, width, encoding, is_bigendian, step, data)`` with
    ``data`` as bytes; ``Image(**fields)`` builds an rclpy or rosbags message.
    """
    if encoding not in _LAYOUT:
        raise ValueError(f"unknown encoding {encoding!r} (supported: {', '.join(SUPPORTED_ENCODINGS)})")
    array = np.asarray(array)
    channels, item, dtype = _LAYOUT[encoding]
    colour = encoding.startswith("bayer_") or encoding in _COLOUR
    if colour and (array.ndim != 3 or array.shape[2] != 3):
        raise ValueError(f"{encoding} takes an RGB (H, W, 3) array, got shape {array.shape}")
    if not colour and array.ndim != 2:
        raise ValueError(f"{encoding} takes a gray (H, W) array, got shape {array.shape}")
    pixels = _to_depth(array, dtype)
    height, width = pixels.shape[:2]
    if encoding in _YUV422_TO_RGB or encoding in _YUV420_TO_RGB:
        if width % 2 or (encoding in _YUV420_TO_RGB and height % 2):
            raise ValueError(f"{encoding} needs an even width (and height for 4:2:0), got {height}x{width}")
        pixels = _rgb_to_yuv(np.ascontiguousarray(pixels), encoding)
    elif encoding.startswith("bayer_"):
        pixels = _mosaic(pixels, encoding[len("bayer_") : -2 if item == 2 else -1])
    elif encoding.startswith("bgr") or encoding in ("8UC3", "8UC4"):
        pixels = pixels[..., ::-1]
    if channels == 4:  # opaque alpha
        pixels = np.concatenate([pixels, np.full_like(pixels[..., :1], np.iinfo(pixels.dtype).max)], axis=2)
    rows = np.ascontiguousarray(pixels, dtype=np.dtype("<" + dtype)).reshape(pixels.shape[0], -1).view(np.uint8)
    if row_padding:
        rows = np.concatenate([rows, np.zeros((rows.shape[0], row_padding), np.uint8)], axis=1)
    return {
        "height": height,
        "width": width,
        "encoding": encoding,
        "is_bigendian": 0,
        "step": int(rows.shape[1]),
        "data": rows.tobytes(),
    }
