"""The detector node's work without the middleware: frame queue, conversion, batched extraction,
message building and the debug drawing.

:class:`FrameQueue` keeps the newest frames of each camera and drops older ones while the extractor
is busy (latency first). :class:`DetectionPipeline` turns one batch of image messages (one per
camera) into Features messages with a single :class:`~superpoint_training.model.extractor.Extractor`
call, timing each stage. Imports without rclpy, so the stage benchmark runs on any GPU machine.

Multi-camera rigs: ``FrameQueue(sync="exact")`` hands out only sets of frames whose header stamps
are equal (``"approximate"``: within ``slop`` seconds of one another); frames that cannot be part of
a set any more are dropped and counted in ``unmatched``.

Memory: frames with more than ``max_network_pixels`` are scaled down before the network (the
keypoints are mapped back to the frame's pixels), so that the network's workspace stays bounded;
after such a frame :func:`release_memory` hands the freed heap back to the system.
"""

from __future__ import annotations

import ctypes
import dataclasses
import gc
import math
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from superpoint_training.data.images import to_rgb

from .features_message import DESCRIPTOR_ENCODINGS, CameraGeometry, features_to_message
from .image_conversion import DEFAULT_MAX_PIXELS, ImageConversionError, compressed_msg_to_numpy, image_msg_to_numpy


@dataclass
class Frame:
    """One received image message; ``received`` is ``time.perf_counter()`` at arrival."""

    camera: int
    msg: Any
    compressed: bool = False
    received: float = field(default_factory=time.perf_counter)
    camera_info: Any = None  # the sensor_msgs/CameraInfo matched to it, if any

    @property
    def stamp_ns(self) -> int:
        stamp = self.msg.header.stamp
        return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


SYNC_MODES = ("none", "exact", "approximate")


class FrameQueue:
    """Per-camera queues of at most ``depth`` frames; a new frame pushes out the oldest (counted).

    ``take`` returns the oldest waiting frame of every camera that has one, so frames that arrive
    together from several cameras go to the device in one batch. With ``batch_wait`` > 0 it waits
    that long after the first frame for the other cameras (not past the moment all have one).
    """

    def __init__(self, cameras: int, depth: int = 1, sync: str = "none", slop: float = 0.0):
        if sync not in SYNC_MODES:
            raise ValueError(f"sync must be one of {SYNC_MODES}, got {sync!r}")
        self._queues = [deque() for _ in range(cameras)]
        self._depth = max(1, int(depth))
        self._cond = threading.Condition()
        self._closed = False
        self.sync = sync if cameras > 1 else "none"
        self.slop_ns = int(round(slop * 1e9)) if sync == "approximate" else 0
        self.dropped = [0] * cameras
        self.unmatched = [0] * cameras

    @property
    def depth(self) -> int:
        return self._depth

    @depth.setter
    def depth(self, value: int) -> None:
        with self._cond:
            self._depth = max(1, int(value))

    def put(self, frame: Frame) -> int:
        """Queue ``frame``; returns how many older frames of its camera were dropped for it."""
        with self._cond:
            queue = self._queues[frame.camera]
            queue.append(frame)
            dropped = 0
            while len(queue) > self._depth:
                queue.popleft()
                dropped += 1
            self.dropped[frame.camera] += dropped
            self._cond.notify()
            return dropped

    def take(self, batch_wait: float = 0.0, timeout: float | None = None) -> list[Frame]:
        """Oldest frame of each camera with one; [] on timeout or when closed."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._closed or any(self._queues), timeout):
                return []
            if self._closed:
                return []
            if self.sync != "none":
                return self._take_matched(timeout)
            if batch_wait > 0 and len(self._queues) > 1:
                deadline = time.monotonic() + batch_wait
                while not self._closed and not all(self._queues):
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    self._cond.wait(remaining)
            return [queue.popleft() for queue in self._queues if queue]

    def _take_matched(self, timeout: float | None) -> list[Frame]:
        """A set of frames, one per camera, with stamps within the slop; [] when none forms in time.

        Called with the lock held. The pivot is the newest of the cameras' oldest stamps: a frame
        older than pivot - slop can never be matched (later frames are newer), so it is dropped.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._closed:
            if all(self._queues):
                pivot = max(queue[0].stamp_ns for queue in self._queues)
                for camera, queue in enumerate(self._queues):
                    while queue and queue[0].stamp_ns < pivot - self.slop_ns:
                        queue.popleft()
                        self.unmatched[camera] += 1
                if all(self._queues) and all(abs(q[0].stamp_ns - pivot) <= self.slop_ns for q in self._queues):
                    return [queue.popleft() for queue in self._queues]
                continue
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return []
            self._cond.wait(remaining)
        return []

    def clear(self) -> None:
        """Forget the waiting frames (deactivation)."""
        with self._cond:
            for queue in self._queues:
                queue.clear()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()


@dataclass
class StageTimes:
    """Seconds spent per stage on one batch (extraction includes the upload to the device)."""

    batch_size: int = 0
    convert: float = 0.0
    extract: float = 0.0
    build: float = 0.0

    @property
    def total(self) -> float:
        return self.convert + self.extract + self.build


@dataclass
class Result:
    """The outcome for one frame: a Features message, or the conversion error that skipped it."""

    frame: Frame
    message: Any = None
    image: np.ndarray | None = None
    keypoints: Any = None
    error: ImageConversionError | None = None
    scale: float = 1.0  # network image size / frame size


class DetectionPipeline:
    """Image messages -> numpy -> one Extractor call -> Features messages of ``msg_cls``.

    ``msg_cls``: the rclpy ``superpoint_ros.msg.Features`` or a rosbags Features type.
    ``synchronize``: wait for the device after extraction so that stage times are exact on a GPU
    (the benchmark sets it; the node does not need it).
    """

    def __init__(
        self,
        extractor: Any,
        msg_cls: type,
        descriptor_encoding: str = "float32",
        weights_label: str = "",
        max_pixels: int = DEFAULT_MAX_PIXELS,
        synchronize: bool = False,
        max_network_pixels: int = 0,
        undistort_keypoints: bool = False,
        image_rectified: bool = False,
    ):
        self.extractor = extractor
        self.max_network_pixels = max_network_pixels  # 0: no limit
        self.undistort_keypoints = undistort_keypoints
        self.image_rectified = image_rectified
        self.downscaled = 0  # frames scaled down to fit max_network_pixels
        self.msg_cls = msg_cls
        self.descriptor_encoding = descriptor_encoding
        self.weights_label = weights_label
        self.max_pixels = max_pixels
        self.synchronize = synchronize
        self.lock = threading.Lock()  # held while extracting; configure() takes it too

    @property
    def descriptor_encoding(self) -> str:
        return self._encoding

    @descriptor_encoding.setter
    def descriptor_encoding(self, value: str) -> None:
        if value not in DESCRIPTOR_ENCODINGS:
            raise ValueError(f"descriptor_encoding must be one of {DESCRIPTOR_ENCODINGS}, got {value!r}")
        self._encoding = value

    def configure(self, **options: Any) -> None:
        """Change extractor options between batches (ValueError leaves the old ones)."""
        with self.lock:
            self.extractor.configure(**options)

    def convert(self, frame: Frame) -> np.ndarray:
        if frame.compressed:
            return compressed_msg_to_numpy(frame.msg, self.max_pixels)
        return image_msg_to_numpy(frame.msg, self.max_pixels)

    def fit_network(self, image: np.ndarray) -> tuple[np.ndarray, float]:
        """``image`` scaled down (area interpolation) to at most ``max_network_pixels``, and the scale."""
        height, width = image.shape[:2]
        if not self.max_network_pixels or height * width <= self.max_network_pixels:
            return image, 1.0
        scale = math.sqrt(self.max_network_pixels / (height * width))
        size = (max(8, int(width * scale)), max(8, int(height * scale)))
        self.downscaled += 1
        return cv2.resize(image, size, interpolation=cv2.INTER_AREA), size[0] / width

    def process(self, frames: list[Frame], keep_images: bool = False) -> tuple[list[Result], StageTimes]:
        """Convert, extract (one call for the batch) and build the messages; one Result per frame."""
        times = StageTimes()
        start = time.perf_counter()
        results = [Result(frame) for frame in frames]
        good: list[Result] = []
        inputs: list[np.ndarray] = []
        for result in results:
            try:
                result.image = self.convert(result.frame)
                network_image, result.scale = self.fit_network(result.image)
                inputs.append(network_image)
                good.append(result)
            except ImageConversionError as error:
                result.error = error
        converted = time.perf_counter()
        times.convert = converted - start
        times.batch_size = len(good)
        if not good:
            return results, times
        with self.lock:
            features = self.extractor.extract(inputs)
            if self.synchronize and self.extractor.device.type == "cuda":
                import torch

                torch.cuda.synchronize(self.extractor.device)
        del inputs
        extracted = time.perf_counter()
        times.extract = extracted - converted
        encoding = self._encoding
        for result, feats in zip(good, features, strict=True):
            if result.scale != 1.0:  # pixel centres: x = (x' + 0.5) / scale - 0.5
                feats = dataclasses.replace(feats, keypoints=(feats.keypoints + 0.5) / result.scale - 0.5)
            camera = None
            normalized = None
            if result.frame.camera_info is not None:
                camera = CameraGeometry.from_camera_info(result.frame.camera_info, self.image_rectified)
                if self.undistort_keypoints:
                    feats = feats.numpy()  # one copy to the host, for the normalisation and the message
                    valid = getattr(feats, "valid", None)
                    keypoints = feats.keypoints if valid is None else feats.keypoints[valid]
                    try:
                        normalized = camera.normalize(keypoints)
                    except (cv2.error, ValueError):  # a CameraInfo OpenCV cannot use: features without them
                        normalized = None
            result.message = features_to_message(
                self.msg_cls,
                result.frame.msg.header,
                feats,
                image_size=result.image.shape[:2],
                encoding=encoding,
                weights=self.weights_label,
                camera=camera,
                keypoints_normalized=normalized,
            )
            if keep_images:
                result.keypoints = feats.keypoints
            else:
                result.image = None
        times.build = time.perf_counter() - extracted
        return results, times


def release_memory() -> None:
    """Collect garbage and return freed heap pages to the system (glibc's malloc_trim; elsewhere only gc).

    After a large frame the allocator keeps its high-water mark otherwise (seen: 8.5 GiB kept after
    one 4000x4000 JPEG)."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def draw_keypoints(image: np.ndarray, keypoints: Any, radius: int = 1, colour=(0, 255, 0)) -> np.ndarray:
    """An RGB uint8 copy of ``image`` with a (2 radius + 1)-pixel square on each keypoint (vectorised)."""
    canvas = to_rgb(image)
    points = keypoints.detach().cpu().numpy() if hasattr(keypoints, "detach") else np.asarray(keypoints)
    if len(points) == 0:
        return canvas
    height, width = canvas.shape[:2]
    xy = np.rint(points).astype(np.int64)
    offsets = np.arange(-radius, radius + 1)
    xs = np.clip(xy[:, 0:1, None] + offsets[None, None, :], 0, width - 1)
    ys = np.clip(xy[:, 1:2, None] + offsets[None, :, None], 0, height - 1)
    xs, ys = np.broadcast_arrays(xs, ys)
    canvas[ys.reshape(-1), xs.reshape(-1)] = colour
    return canvas
