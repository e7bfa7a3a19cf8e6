"""ROS 2 lifecycle node: camera images in, SuperPoint Features out.

Topics (relative, so that a launch file or ``-r`` remaps them, and namespaces separate cameras):

- ``image`` (sensor_msgs/Image, sensor-data QoS) when ``transport`` is ``raw`` or ``both``;
  ``<image>/compressed`` (sensor_msgs/CompressedImage) when it is ``compressed`` or ``both``
  (image_transport's naming: the suffix follows the remapped ``image`` name).
- ``<image's namespace>/camera_info`` (sensor_msgs/CameraInfo) when ``camera_info`` is true (the
  image_transport camera convention: ``/cam/image_raw`` -> ``/cam/camera_info``); matched to each
  image by stamp, its model travels in the Features message.
- ``features`` (superpoint_ros/Features, reliable, keep-last 5): the image's header, unchanged.
- ``debug_image`` (sensor_msgs/Image rgb8): the keypoints drawn, when ``publish_debug_image`` is
  true and someone subscribes.
- ``/diagnostics`` (diagnostic_msgs/DiagnosticArray): one status per camera (rate, latency, drops,
  refused encodings, extraction failures, CameraInfo matching) and one for the node (lifecycle
  state, device, memory).

Lifecycle (:class:`~superpoint_ros.node_common.ManagedNode`): configure loads the weights, builds
the backend and warms it up for ``warmup_size``; activate subscribes; deactivate unsubscribes;
cleanup frees the network. ``autostart`` (default true) does configure and activate at start-up.

With ``cameras: [left, right]`` one node serves several cameras (``left/image`` ->
``left/features`` ...); ``sync: exact|approximate`` processes only frames whose stamps match.

Run (no ROS 2 distribution needed, from a colcon build)::

    build_ros/install/superpoint_ros/lib/superpoint_ros/detector_node --ros-args \\
        --params-file config/detector.yaml -r image:=/camera/image_raw -r features:=/camera/features

or ``ros2 launch superpoint_ros detector.launch.py image:=/camera/image_raw`` in a ROS 2 install.
"""

from __future__ import annotations

import math
import sys
import threading
import time
from collections import deque
from functools import partial
from typing import Any

import cv2
import numpy as np
from diagnostic_msgs.msg import DiagnosticStatus, KeyValue
from rcl_interfaces.msg import SetParametersResult
from rclpy.parameter import Parameter
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from rclpy.qos_overriding_options import QoSOverridingOptions
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from superpoint_training.common.cli import describe_path
from superpoint_training.model.extractor import BACKEND_CHOICES, PRECISIONS, Extractor, resolve_device
from superpoint_training.model.keypoints import DESCRIPTOR_SAMPLING, SUBPIXEL, no_limit

from .detection_pipeline import SYNC_MODES, DetectionPipeline, Frame, FrameQueue, Result, draw_keypoints, release_memory
from .diagnostics import OK, WARN, DiagnosticsPublisher, StreamStats, make_status, stream_status
from .features_message import DESCRIPTOR_ENCODINGS, sequence_field
from .image_conversion import DEFAULT_MAX_PIXELS, numpy_to_image_fields
from .node_common import ManagedNode, ParameterSpec, check_qos_overrides, parameter_value, run_node

# Features: reliable with a small keep-last depth, so that default (reliable) and sensor-data
# (best-effort) subscribers both receive them, and a slow subscriber never holds up the node.
FEATURES_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=5, reliability=ReliabilityPolicy.RELIABLE)
TRANSPORTS = ("raw", "compressed", "both")
BATCH_MODES = ("auto", "always", "never")
TIMED_WARMUP_CALLS = 3  # timed calls per batch size when batch_cameras: auto compares them
# batch_cameras auto batches when a frame costs less than this fraction of its time alone: a batch
# makes every frame wait for the whole call (end to end on the 2-core CPU, 4 cameras at 30 Hz,
# 2026-12-06: batched 4.4 frames/s, p50 1,017 ms, 1.4 GiB; one call per frame 4.3 frames/s,
# p50 629 ms, 0.6 GiB, while the batched call measured 0.84 of the single one per frame)
BATCH_GAIN_REQUIRED = 0.75
CAMERA_INFO_KEPT = 30  # CameraInfo messages kept per camera for matching by stamp
# memory model of memory_limits (measured, see there)
DEFAULT_MEMORY_BUDGET_MB = 2048
NODE_BASE_MB = 700
NETWORK_BYTES_PER_PIXEL = 600
CONVERT_BYTES_PER_PIXEL = 16


T = Parameter.Type
PARAMETERS: tuple[ParameterSpec, ...] = (
    ParameterSpec("weights", T.STRING, "default", "Weights file or name (default, superpoint_ros, "
                  "superpoint_ros_rotation, superpoint_v6_from_tf, superpoint_v1, magicpoint_shapes, "
                  "untrained).", runtime=False),
    ParameterSpec("device", T.STRING, "auto", "Torch device: auto (CUDA if available), cpu, cuda, cuda:1...",
                  runtime=False),
    ParameterSpec("backend", T.STRING, "auto", "Network backend: torch, onnxruntime or openvino (CPU, pip install "
                  ".[cpu]); auto: the fastest installed one that keeps the accuracy bounds (torch on CUDA).",
                  choices=BACKEND_CHOICES, runtime=False),
    ParameterSpec("precision", T.STRING, "auto", "Network precision (post-processing is fp32); auto: bf16 on a CPU "
                  "with native bf16 where it keeps the accuracy bounds, else fp32.", choices=("auto", *PRECISIONS),
                  runtime=False),
    ParameterSpec("detection_threshold", T.DOUBLE, None, "Keypoint score threshold (unset: the weights' "
                  "default: 0.005 for the published weights, 0.002 for superpoint_ros).", range=(0.0, 1.0)),
    ParameterSpec("nms_radius", T.INTEGER, None, "Max-pool NMS radius in pixels (unset: the weights' default, 4).",
                  range=(0, 64)),
    ParameterSpec("remove_borders", T.INTEGER, None, "Drop keypoints this close to the border (unset: the "
                  "weights' default, 4).", range=(0, 256)),
    ParameterSpec("max_keypoints", T.INTEGER, 1000, "Keep the best N keypoints per image; -1 or 0 keeps all.",
                  range=(-1, 1_000_000)),
    ParameterSpec("descriptor_sampling", T.STRING, None, "Descriptor sampling convention (unset: the weights' "
                  "default: cell for v6 and project weights, legacy for Magic Leap v1).", choices=DESCRIPTOR_SAMPLING),
    ParameterSpec("subpixel", T.STRING, None, "Sub-pixel keypoint refinement: corner (where the image's edge lines "
                  "meet in a 7x7 window), gaussian or quadratic (vertex of a parabola through the log scores or the "
                  "scores), learned (weights that carry a trained refinement) or none (integer pixels); unset: the "
                  "weights' default.", choices=SUBPIXEL),
    ParameterSpec("scales", T.DOUBLE_ARRAY, None, "Image pyramid: the sizes, as fractions of the image in (0, 1], "
                  "that the network sees, e.g. [1.0, 0.5] (keypoints of all levels in the image's pixels, a level's "
                  "scores times its scale; 1.5x the time); unset: the weights' default."),
    ParameterSpec("resize", T.INTEGER, 0, "Resize so that the longer side has this many pixels before "
                  "extraction (keypoints stay in the original image); 0 keeps the size.", range=(0, 8192)),
    ParameterSpec("descriptor_encoding", T.STRING, "float32", "Descriptor encoding in the Features message "
                  "(int8: 4x smaller, round(127 d)).", choices=DESCRIPTOR_ENCODINGS),
    ParameterSpec("cameras", T.STRING_ARRAY, [""], "Camera namespaces served by this node: each name N "
                  "subscribes N/image and publishes N/features; [''] is the single camera image -> features.",
                  runtime=False),
    ParameterSpec("transport", T.STRING, "raw", "Subscribe to sensor_msgs/Image (raw), to CompressedImage on "
                  "<image>/compressed (compressed), or both.", choices=TRANSPORTS, runtime=False),
    ParameterSpec("frame_queue", T.INTEGER, 1, "Frames kept per camera while the extractor is busy; older ones "
                  "are dropped (1: always the newest frame, lowest latency).", range=(1, 100)),
    ParameterSpec("max_frame_age", T.DOUBLE, 0.0, "Drop frames whose header stamp is older than this many "
                  "seconds when their turn comes (0: off).", range=(0.0, 60.0)),
    ParameterSpec("batch_wait", T.DOUBLE, 0.005, "With several cameras, wait up to this many seconds after "
                  "the first frame for the others, so that they share one device call.", range=(0.0, 1.0)),
    ParameterSpec("publish_debug_image", T.BOOL, False, "Publish debug_image (keypoints drawn) when someone "
                  "subscribes to it."),
    ParameterSpec("memory_budget_mb", T.INTEGER, DEFAULT_MEMORY_BUDGET_MB, "Memory the node may use (MiB, "
                  "resident); the defaults of max_image_pixels and max_network_pixels follow from it.",
                  range=(512, 1 << 20), runtime=False),
    ParameterSpec("max_image_pixels", T.INTEGER, None, "Refuse images with more pixels (logged, counted on "
                  "/diagnostics; compressed ones before decoding); unset: what memory_budget_mb allows, at most "
                  f"{DEFAULT_MAX_PIXELS}.", range=(1, 1 << 30)),
    ParameterSpec("max_network_pixels", T.INTEGER, None, "Larger images are scaled down to this many pixels "
                  "before the network (keypoints in the image's pixels); unset: what memory_budget_mb allows.",
                  range=(4096, 1 << 30)),
    ParameterSpec("warmup_size", T.INTEGER_ARRAY, [480, 640], "(height, width) the backend is compiled and "
                  "warmed up for at configure, so the first frames are not slow; [0, 0]: no warm-up.",
                  runtime=False),
    ParameterSpec("require_gpu", T.BOOL, False, "Fail at configure instead of running on the CPU.", runtime=False),
    ParameterSpec("expected_rate", T.DOUBLE, 0.0, "Features per second per camera a user needs; /diagnostics "
                  "warns below it (0: off).", range=(0.0, 1000.0)),
    ParameterSpec("camera_info", T.BOOL, False, "Subscribe to each camera's camera_info (beside the image) and "
                  "put the camera model matched by stamp into Features.", runtime=False),
    ParameterSpec("camera_info_max_age", T.DOUBLE, 1.0, "Without a CameraInfo of the image's stamp, use the "
                  "nearest one within this many seconds; beyond it the features go without (and /diagnostics "
                  "warns).", range=(0.0, 3600.0)),
    ParameterSpec("undistort_keypoints", T.BOOL, False, "With camera_info: also send the keypoints undistorted "
                  "and normalised (keypoints_normalized)."),
    ParameterSpec("image_rectified", T.BOOL, False, "The images are rectified (image_rect): normalise with "
                  "P, never with D; the Features say so."),
    ParameterSpec("sync", T.STRING, "none", "Several cameras: none (each frame as it comes), exact (only sets "
                  "of frames with equal stamps) or approximate (stamps within sync_slop).", choices=SYNC_MODES,
                  runtime=False),
    ParameterSpec("sync_slop", T.DOUBLE, 0.01, "Largest stamp difference (s) within a set for sync: "
                  "approximate.", range=(0.0, 10.0), runtime=False),
    ParameterSpec("batch_cameras", T.STRING, "auto", "Frames of several cameras in one device call: auto (when "
                  "the warm-up at configure measured it faster per frame and it fits memory_budget_mb; without a "
                  "warm-up: on a GPU only), always, never.", choices=BATCH_MODES),
    ParameterSpec("diagnostics_period", T.DOUBLE, 1.0, "Seconds between /diagnostics messages (0: off).",
                  range=(0.0, 60.0), runtime=False),
)

SPECS = {spec.name: spec for spec in PARAMETERS}
EXTRACTOR_OPTIONS = ("detection_threshold", "nms_radius", "remove_borders", "max_keypoints", "descriptor_sampling",
                     "subpixel", "scales", "resize")
LARGE_FRAME_PIXELS = 4_000_000  # after a frame this large the freed heap goes back to the system


def memory_limits(budget_mb: int) -> tuple[int, int]:
    """(max_image_pixels, max_network_pixels) that keep a node within ``budget_mb`` MiB resident.

    Measured (2026-12-06, 2-core CPU, OpenVINO bf16, default weights with their 3-level pyramid):
    the idle node is about 600 MiB, the network's workspace about 450 bytes per image pixel (1 MP
    +566 MiB, 4 MP +1,780 MiB), decoding and conversion at most 16 bytes per pixel (rgba16
    message + RGB + scaled copy). Margins: 700 MiB and 600 B/px.
    """
    free = max(budget_mb - NODE_BASE_MB, 64) * (1 << 20)
    return min(DEFAULT_MAX_PIXELS, free // CONVERT_BYTES_PER_PIXEL), max(4096, free // NETWORK_BYTES_PER_PIXEL)


class DetectorNode(ManagedNode):
    """Subscriptions per camera -> FrameQueue -> worker thread (DetectionPipeline) -> publishers."""

    def __init__(self, **kwargs: Any):
        super().__init__("superpoint_detector", PARAMETERS, **kwargs)
        self.extractor = None
        self.pipeline = None
        self.queue: FrameQueue | None = None
        self._worker: threading.Thread | None = None
        self._running = False
        self.stats: list[StreamStats] = []
        self.image_topics: list[str] = []
        self.info_topics: list[str] = []
        self.feature_publishers: list = []
        self.debug_publishers: list = []
        self.image_subscriptions: list = []
        self.camera_infos: list[deque] = []
        self._info_lock = threading.Lock()
        self.diagnostics: DiagnosticsPublisher | None = None
        self.cpu_fallback = False
        self.batching = False
        self.auto_batching = False  # what batch_cameras: auto chose at configure
        self.batch_timing: dict[str, float] = {}
        self._logged_kinds: set[str] = set()
        self._batches = 0
        self._batched_frames = 0
        self.add_on_set_parameters_callback(self._on_set_parameters)

    def _value(self, name: str) -> Any:
        return parameter_value(self, name)

    # -- lifecycle ------------------------------------------------------------------------------
    def configure_node(self) -> None:
        values = {spec.name: self._value(spec.name) for spec in PARAMETERS}
        device = resolve_device(values["device"])
        self.cpu_fallback = values["device"] == "auto" and device.type != "cuda"
        if values["require_gpu"] and device.type != "cuda":
            raise RuntimeError(f"require_gpu is true but the device is {device} (device: {values['device']!r}; "
                               "no CUDA device is visible to torch)")
        options = {name: values[name] for name in EXTRACTOR_OPTIONS if values[name] is not None}
        self.extractor = Extractor(
            values["weights"], device, precision=values["precision"], backend=values["backend"],
            warmup=False, **_extractor_args(options)
        )
        self.get_logger().info(f"SuperPoint on {describe_path(self.extractor)} (backend {values['backend']}, "
                               f"precision {values['precision']} requested): {self.extractor.weights_description}")
        if self.cpu_fallback:
            self.get_logger().warning("no GPU: running on the CPU (require_gpu: true makes this an error)")
        if self.extractor.loaded.format == "untrained":
            self.get_logger().warning("running UNTRAINED weights: keypoints are not meaningful (set 'weights')")
        # show the values the weights and the memory budget chose for the parameters left unset
        image_limit, network_limit = memory_limits(values["memory_budget_mb"])
        derived = {"max_image_pixels": image_limit, "max_network_pixels": network_limit}
        self.set_parameters([
            Parameter(spec.name, value=derived.get(spec.name, None) if spec.name in derived
                      else _parameter_form(getattr(self.extractor.config, spec.name)))
            for spec in PARAMETERS if spec.default is None and values[spec.name] is None
        ])
        from superpoint_ros.msg import Features  # generated by the colcon build

        cameras = list(values["cameras"]) or [""]
        self.pipeline = DetectionPipeline(
            self.extractor, Features, values["descriptor_encoding"], weights_label=self.extractor.weights_description,
            max_pixels=self._value("max_image_pixels"), max_network_pixels=self._value("max_network_pixels"),
            undistort_keypoints=values["undistort_keypoints"], image_rectified=values["image_rectified"])
        self.auto_batching = self._warm_up(values["warmup_size"], len(cameras), values["memory_budget_mb"])
        self.batching = _batching(values["batch_cameras"], self.auto_batching)
        self.queue = FrameQueue(len(cameras), values["frame_queue"], values["sync"], values["sync_slop"])
        if values["sync"] != "none" and values["frame_queue"] < 3:
            self.queue.depth = 3  # a set needs room for frames that arrive out of step
        qos = QoSOverridingOptions.with_default_policies()
        self.stats, self.image_topics, self.info_topics = [], [], []
        self.feature_publishers, self.debug_publishers, self.camera_infos = [], [], []
        for index, camera in enumerate(cameras):
            prefix = _prefix(camera)
            image_topic = self.resolve_topic_name(prefix + "image")
            self.feature_publishers.append(self.create_lifecycle_publisher(
                Features, prefix + "features", FEATURES_QOS, qos_overriding_options=qos))
            self.debug_publishers.append(self.create_lifecycle_publisher(Image, prefix + "debug_image", FEATURES_QOS))
            self.stats.append(StreamStats(f"{self.get_name()}: {image_topic}"))
            self.image_topics.append(image_topic)
            self.info_topics.append(image_topic.rsplit("/", 1)[0] + "/camera_info")
            self.camera_infos.append(deque(maxlen=CAMERA_INFO_KEPT))
            info = f", CameraInfo from {self.info_topics[-1]}" if values["camera_info"] else ""
            self.get_logger().info(f"camera {index}: {image_topic} ({values['transport']}{info}) -> "
                                   f"{self.resolve_topic_name(prefix + 'features')}")
        self.diagnostics = DiagnosticsPublisher(self, values["diagnostics_period"], self._statuses)
        self._running = True
        self._worker = threading.Thread(target=self._work, name="superpoint_worker", daemon=True)
        self._worker.start()

    def _warm_up(self, size: list[int], cameras: int, budget_mb: int) -> bool:
        """Compile and warm up for ``size`` (batch 1, and batch ``cameras`` when batching may be used);
        returns whether batching the cameras is faster per frame (what ``batch_cameras: auto`` uses).

        Without a warm-up size nothing is measured: batching is assumed faster on a GPU only.
        Batching is not considered when the batch's network workspace would not fit the budget.
        """
        size = [int(v) for v in size]
        if len(size) != 2 or min(size) < 0:
            raise ValueError(f"warmup_size must be [height, width], got {size}")
        if min(size) == 0:
            return self.extractor.device.type == "cuda"
        fits = NODE_BASE_MB + cameras * size[0] * size[1] * NETWORK_BYTES_PER_PIXEL / (1 << 20) <= budget_mb
        compare = cameras > 1 and self._value("batch_cameras") != "never" and fits
        single = self._timed_warmup(size, 1, TIMED_WARMUP_CALLS if compare else 0)
        if not compare:
            return False
        batched = self._timed_warmup(size, cameras, TIMED_WARMUP_CALLS) / cameras
        faster = batched < BATCH_GAIN_REQUIRED * single
        if not faster:
            self._forget_batch_shapes(cameras)
        self.batch_timing = {"ms_per_frame_alone": round(single * 1e3, 1),
                             f"ms_per_frame_batch_of_{cameras}": round(batched * 1e3, 1)}
        self.get_logger().info(f"{cameras} cameras in one call: {batched * 1e3:.0f} ms per frame against "
                               f"{single * 1e3:.0f} ms alone: batch_cameras auto {'batches' if faster else 'does not batch'}")
        return faster

    def _forget_batch_shapes(self, batch_size: int) -> None:
        """Drop what a compiled backend keeps for batches of ``batch_size`` (OpenVINO: one compiled
        model per input shape, about 0.7 GiB for 4 x 640x480) once batching is ruled out."""
        if self.extractor.forget_shapes(lambda shape: shape[0] == batch_size):
            release_memory()

    def _timed_warmup(self, size: list[int], batch_size: int, calls: int) -> float:
        """Seconds of a warmed-up call, the fastest of a few (the first call of a size compiles, untimed).

        On a textured image, not a blank one: with max_keypoints found the post-processing costs
        what it costs on camera frames (measured 2026-12-06, 2-core CPU, OpenVINO bf16, 640x480:
        blank frames 263 vs 251 ms per frame alone vs in a batch of 4, textured 245 vs 438 ms).
        """
        texture = _warmup_texture(size[0], size[1])
        start = time.perf_counter()
        times = []
        with self.pipeline.lock:
            self.extractor.extract([texture] * batch_size)
            compiled = time.perf_counter()
            for _ in range(calls):  # the fastest: other processes' load only adds
                begin = time.perf_counter()
                self.extractor.extract([texture] * batch_size)
                times.append(time.perf_counter() - begin)
        elapsed = min(times, default=math.nan)
        self.get_logger().info(f"warmed up for {size[0]}x{size[1]} (batch {batch_size}) in {compiled - start:.2f} s")
        return elapsed

    def activate_node(self) -> None:
        transport = self._value("transport")
        qos = QoSOverridingOptions.with_default_policies()
        for index, camera in enumerate(list(self._value("cameras")) or [""]):
            prefix = _prefix(camera)
            if transport in ("raw", "both"):
                self.image_subscriptions.append(self.create_subscription(
                    Image, prefix + "image", partial(self._on_image, index, False), qos_profile_sensor_data,
                    qos_overriding_options=qos))
            if transport in ("compressed", "both"):
                self.image_subscriptions.append(self.create_subscription(
                    CompressedImage, self.image_topics[index] + "/compressed", partial(self._on_image, index, True),
                    qos_profile_sensor_data, qos_overriding_options=qos))
            if self._value("camera_info"):
                self.image_subscriptions.append(self.create_subscription(
                    CameraInfo, self.info_topics[index], partial(self._on_camera_info, index),
                    qos_profile_sensor_data))
        check_qos_overrides(self)

    def deactivate_node(self) -> None:
        for subscription in self.image_subscriptions:
            self.destroy_subscription(subscription)
        self.image_subscriptions = []
        if self.queue is not None:
            self.queue.clear()

    def cleanup_node(self) -> None:
        self._running = False
        if self.queue is not None:
            self.queue.close()
        if self._worker is not None:
            self._worker.join(timeout=10.0)
            self._worker = None
        for publisher in self.feature_publishers + self.debug_publishers:
            self.destroy_lifecycle_publisher(publisher)
        self.feature_publishers, self.debug_publishers = [], []
        if self.diagnostics is not None:
            self.diagnostics.destroy()
            self.diagnostics = None
        device = getattr(self.extractor, "device", None)
        self.pipeline = self.extractor = self.queue = None
        release_memory()
        if device is not None and device.type == "cuda":
            import torch

            torch.cuda.empty_cache()

    # -- receiving ----------------------------------------------------------------------------
    def _on_image(self, camera: int, compressed: bool, msg: Any) -> None:
        queue = self.queue
        if queue is None:
            return
        self.stats[camera].on_received()
        dropped = queue.put(Frame(camera, msg, compressed))
        if dropped:
            self.stats[camera].on_dropped(dropped)

    def _on_camera_info(self, camera: int, msg: Any) -> None:
        with self._info_lock:
            self.camera_infos[camera].append(msg)

    def _match_camera_info(self, frame: Frame) -> Any:
        """The CameraInfo of the frame's stamp, else the nearest within camera_info_max_age, else None."""
        with self._info_lock:
            infos = list(self.camera_infos[frame.camera])
        stats = self.stats[frame.camera]
        if not infos:
            stats.count("camera_info_missing")
            return None
        gaps = [abs(_stamp_ns(info.header.stamp) - frame.stamp_ns) for info in infos]
        best = min(range(len(infos)), key=lambda i: (gaps[i], -i))
        if gaps[best] == 0:
            return infos[best]
        if gaps[best] <= self._value("camera_info_max_age") * 1e9:
            stats.count("camera_info_nearest")
            return infos[best]
        stats.count("camera_info_stale", detail=f"{gaps[best] * 1e-9:.2f} s from the image")
        return None

    # -- processing (worker thread) -------------------------------------------------------------
    def _work(self) -> None:
        while self._running:
            queue = self.queue
            if queue is None:
                return
            frames = queue.take(self._value("batch_wait"), timeout=0.2)
            unmatched = list(queue.unmatched)
            for camera, count in enumerate(unmatched):
                self.stats[camera].set_count("unmatched", count)
            if not frames:
                continue
            frames = self._drop_old(frames)
            if not frames:
                continue
            if self._value("camera_info"):
                for frame in frames:
                    frame.camera_info = self._match_camera_info(frame)
            for batch in [frames] if self.batching else [[frame] for frame in frames]:
                if not self._process(batch):
                    return

    def _process(self, frames: list[Frame]) -> bool:
        """Extract and publish one batch; False when the node is going away."""
        pipeline = self.pipeline
        if pipeline is None:
            return False
        try:
            results, times = pipeline.process(frames, keep_images=self._debug_wanted(frames))
        except Exception as error:  # noqa: BLE001 - keep serving; e.g. CUDA out of memory
            for frame in frames:
                self.stats[frame.camera].count("extraction_failed", detail=f"{type(error).__name__}: {error}")
            self.get_logger().error(f"extraction failed: {type(error).__name__}: {error}",
                                    throttle_duration_sec=5.0)
            release_memory()
            return True
        self._batches += 1
        self._batched_frames += times.batch_size
        try:
            for result in results:
                self._publish(result)
        except Exception as error:  # noqa: BLE001
            if not self.context.ok():  # Ctrl-C while publishing: the context is gone
                return False
            self.get_logger().error(f"publishing failed: {type(error).__name__}: {error}",
                                    throttle_duration_sec=5.0)
        if any(r.image is not None and r.image.size > LARGE_FRAME_PIXELS for r in results) or any(
                _pixels(f.msg) > LARGE_FRAME_PIXELS for f in frames):
            del results
            release_memory()
        return True

    def _drop_old(self, frames: list[Frame]) -> list[Frame]:
        max_age = self._value("max_frame_age")
        if max_age <= 0:
            return frames
        now = self.get_clock().now().nanoseconds
        kept = []
        for frame in frames:
            if now - frame.stamp_ns > max_age * 1e9:
                self.stats[frame.camera].on_dropped()
            else:
                kept.append(frame)
        return kept

    def _debug_wanted(self, frames: list[Frame]) -> bool:
        return self._value("publish_debug_image") and any(
            self.debug_publishers[f.camera].get_subscription_count() > 0 for f in frames
        )

    def _publish(self, result: Result) -> None:
        camera = result.frame.camera
        if result.error is not None:
            self.stats[camera].on_malformed(result.error.kind)
            if result.error.kind == "unknown_encoding":
                self.stats[camera].on_refused_encoding(result.frame.msg.encoding)
            if result.error.kind not in self._logged_kinds:  # once per kind; diagnostics count the rest
                self._logged_kinds.add(result.error.kind)
                self.get_logger().warning(f"skipping malformed image on {self.image_topics[camera]}: "
                                          f"{result.error} (further '{result.error.kind}' errors are counted on "
                                          "/diagnostics, not logged)")
            return
        if not self.is_active:
            return
        self.feature_publishers[camera].publish(result.message)
        latency = time.perf_counter() - result.frame.received
        stamp = result.message.header.stamp
        age = (self.get_clock().now().nanoseconds - _stamp_ns(stamp)) * 1e-9
        self.stats[camera].on_published(latency, age if stamp.sec or stamp.nanosec else math.nan)
        if result.image is not None and result.keypoints is not None:
            drawn = draw_keypoints(result.image, result.keypoints)
            debug = Image(header=result.message.header, **_image_fields(drawn))
            self.debug_publishers[camera].publish(debug)

    # -- parameters and diagnostics ---------------------------------------------------------------
    def _on_set_parameters(self, parameters: list[Parameter]) -> SetParametersResult:
        changes = {p.name: p.value for p in parameters}
        try:
            for name, value in changes.items():
                if name in SPECS and SPECS[name].choices and value not in SPECS[name].choices:
                    raise ValueError(f"{name} must be one of {SPECS[name].choices}, got {value!r}")
            options = {k: v for k, v in changes.items() if k in EXTRACTOR_OPTIONS}
            if options and self.pipeline is not None:
                self.pipeline.configure(**_extractor_args(options))
        except ValueError as error:
            return SetParametersResult(successful=False, reason=str(error))
        pipeline = self.pipeline
        if pipeline is not None:
            for name, attribute in (("descriptor_encoding", "descriptor_encoding"), ("max_image_pixels", "max_pixels"),
                                    ("max_network_pixels", "max_network_pixels"),
                                    ("undistort_keypoints", "undistort_keypoints"),
                                    ("image_rectified", "image_rectified")):
                if name in changes:
                    setattr(pipeline, attribute, changes[name])
            if "batch_cameras" in changes:
                mode = changes["batch_cameras"]
                self.batching = _batching(mode, self.auto_batching)
        if "frame_queue" in changes and self.queue is not None:
            self.queue.depth = changes["frame_queue"]
        known = {k: v for k, v in changes.items() if k in SPECS}  # not the qos_overrides rclpy declares
        if known and self.pipeline is not None:
            self.get_logger().info(f"parameters changed: {known}")
        return SetParametersResult(successful=True)

    def _statuses(self) -> list[Any]:
        hardware_id = str(self.extractor.device) if self.extractor is not None else ""
        expected = self._value("expected_rate")
        statuses = [stream_status(stats, DiagnosticStatus, KeyValue, hardware_id, expected_rate=expected)
                    for stats in self.stats]
        if not self.is_active:  # frames are not expected while inactive
            for status in statuses:
                status.level, status.message = bytes([OK]), f"node {self._state_label()}: " + status.message
        return [*statuses, self._node_status(hardware_id)]

    def _state_label(self) -> str:
        return self._state_machine.current_state[1]

    def _node_status(self, hardware_id: str) -> Any:
        values: dict[str, Any] = {"lifecycle_state": self._state_label()}
        level, message = OK, f"{self._state_label()} on {hardware_id or 'no device yet'}"
        if self.extractor is not None:
            values.update(device=hardware_id, backend=self.extractor.backend, precision=self.extractor.precision,
                          cpu_fallback=self.cpu_fallback, batch_cameras=self.batching, **self.batch_timing)
        if self.pipeline is not None:
            values.update(max_image_pixels=self.pipeline.max_pixels,
                          max_network_pixels=self.pipeline.max_network_pixels,
                          frames_scaled_down=self.pipeline.downscaled)
        values.update(memory_budget_mb=self._value("memory_budget_mb"), rss_mb=round(_rss_mb(), 1))
        if self._batches:
            values["mean_batch_size"] = f"{self._batched_frames / self._batches:.2f}"
        if self.cpu_fallback:
            level, message = WARN, "no GPU: running on the CPU (fell back from device auto)"
        if values["rss_mb"] > self._value("memory_budget_mb"):
            level, message = WARN, f"resident memory {values['rss_mb']:.0f} MiB exceeds memory_budget_mb"
        return make_status(f"{self.get_name()}: node", level, message, values, hardware_id)


def _warmup_texture(height: int, width: int) -> np.ndarray:
    """A deterministic gray texture with corners everywhere (smoothed noise), uint8."""
    noise = np.random.default_rng(0).integers(0, 256, (height, width), dtype=np.uint8)
    return cv2.GaussianBlur(noise, (0, 0), 2.0)


def _batching(mode: str, auto: bool) -> bool:
    return mode == "always" or (mode == "auto" and auto)


def _prefix(camera: str) -> str:
    return f"{camera.strip('/')}/" if camera.strip("/") else ""


def _stamp_ns(stamp: Any) -> int:
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def _pixels(msg: Any) -> int:
    return int(getattr(msg, "height", 0)) * int(getattr(msg, "width", 0))


def _rss_mb() -> float:
    """This process's resident memory in MiB (Linux /proc; NaN elsewhere)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return math.nan


def _extractor_args(options: dict[str, Any]) -> dict[str, Any]:
    """Parameter values -> Extractor keywords (-1 or 0 max_keypoints: all; -1 or 0 resize: off)."""
    args = dict(options)
    for name in ("max_keypoints", "resize"):
        if name in args:
            args[name] = no_limit(args[name])
    return args


def _parameter_form(value: Any) -> Any:
    """An extractor option as a parameter value (tuples, e.g. ``scales``, as lists)."""
    return list(value) if isinstance(value, tuple) else value


def _image_fields(rgb: Any) -> dict[str, Any]:
    fields = numpy_to_image_fields(rgb, "rgb8")
    return {**fields, "data": sequence_field(memoryview(fields.pop("data")), "B")}


def main(args: list[str] | None = None) -> int:
    """Entry point of the installed ``detector_node`` executable; Ctrl-C exits cleanly with status 0."""
    return run_node(DetectorNode, "superpoint_detector", args)


if __name__ == "__main__":
    sys.exit(main())
