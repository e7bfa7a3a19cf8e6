"""ROS 2 node: camera images in, SuperPoint Features out.

Topics (relative, so that a launch file or ``-r`` remaps them, and namespaces separate cameras):

- ``image`` (sensor_msgs/Image, sensor-data QoS) when ``transport`` is ``raw`` or ``both``;
  ``<image>/compressed`` (sensor_msgs/CompressedImage) when it is ``compressed`` or ``both``
  (image_transport's naming: the suffix follows the remapped ``image`` name).
- ``features`` (superpoint_ros/Features, reliable, keep-last 5): the image's header, unchanged.
- ``debug_image`` (sensor_msgs/Image rgb8): the keypoints drawn, when ``publish_debug_image`` is
  true and someone subscribes.
- ``/diagnostics`` (diagnostic_msgs/DiagnosticArray): rate, latency, drops per camera.

With ``cameras: [left, right]`` one node serves several cameras (``left/image`` ->
``left/features`` ...) and frames that arrive together go to the device in one batch.

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
from functools import partial
from typing import Any

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import SetParametersResult
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import CompressedImage, Image

from superpoint_training.cli_options import describe_path
from superpoint_training.model.extractor import BACKEND_CHOICES, PRECISIONS, Extractor
from superpoint_training.model.keypoints import DESCRIPTOR_SAMPLING, SUBPIXEL, no_limit

from .detection_pipeline import DetectionPipeline, Frame, FrameQueue, Result, draw_keypoints
from .diagnostics import StreamStats, stream_status
from .features_message import DESCRIPTOR_ENCODINGS, sequence_field
from .image_conversion import DEFAULT_MAX_PIXELS, numpy_to_image_fields
from .node_common import ParameterSpec, declare_parameters, run_node

# Features: reliable with a small keep-last depth, so that default (reliable) and sensor-data
# (best-effort) subscribers both receive them, and a slow subscriber never holds up the node.
FEATURES_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=5, reliability=ReliabilityPolicy.RELIABLE)
TRANSPORTS = ("raw", "compressed", "both")


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
    ParameterSpec("subpixel", T.STRING, None, "Sub-pixel keypoint refinement: gaussian or quadratic (vertex of a "
                  "parabola through the log scores or the scores) or none (integer pixels); unset: the weights' "
                  "default.", choices=SUBPIXEL),
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
    ParameterSpec("max_image_pixels", T.INTEGER, DEFAULT_MAX_PIXELS, "Refuse images claiming more pixels "
                  "(malformed headers).", range=(1, 1 << 30)),
    ParameterSpec("diagnostics_period", T.DOUBLE, 1.0, "Seconds between /diagnostics messages (0: off).",
                  range=(0.0, 60.0), runtime=False),
)
SPECS = {spec.name: spec for spec in PARAMETERS}
EXTRACTOR_OPTIONS = ("detection_threshold", "nms_radius", "remove_borders", "max_keypoints", "descriptor_sampling",
                     "subpixel", "scales", "resize")


class DetectorNode(Node):
    """Subscriptions per camera -> FrameQueue -> worker thread (DetectionPipeline) -> publishers."""

    def __init__(self, **kwargs: Any):
        super().__init__("superpoint_detector", **kwargs)
        values = declare_parameters(self, PARAMETERS)
        options = {name: values[name] for name in EXTRACTOR_OPTIONS if values[name] is not None}
        self.extractor = Extractor(
            values["weights"], values["device"], precision=values["precision"], backend=values["backend"],
            warmup=False, **_extractor_args(options)
        )
        self.get_logger().info(f"SuperPoint on {describe_path(self.extractor)} (backend {values['backend']}, "
                               f"precision {values['precision']} requested): {self.extractor.weights_description}")
        if self.extractor.loaded.format == "untrained":
            self.get_logger().warning("running UNTRAINED weights: keypoints are not meaningful (set 'weights')")
        # show the values the weights chose for the parameters left unset
        self.set_parameters([
            Parameter(spec.name, value=_parameter_form(getattr(self.extractor.config, spec.name)))
            for spec in PARAMETERS if spec.default is None and values[spec.name] is None
        ])

        from superpoint_ros.msg import Features  # generated by the colcon build

        self.pipeline = DetectionPipeline(self.extractor, Features, values["descriptor_encoding"],
                                          weights_label=self.extractor.weights_description,
                                          max_pixels=values["max_image_pixels"])
        self.frame_queue_depth = values["frame_queue"]
        self.max_frame_age = values["max_frame_age"]
        self.batch_wait = values["batch_wait"]
        self.publish_debug_image = values["publish_debug_image"]

        cameras = list(values["cameras"]) or [""]
        self.queue = FrameQueue(len(cameras), self.frame_queue_depth)
        self.stats: list[StreamStats] = []
        self.image_topics: list[str] = []
        self.feature_publishers = []
        self.debug_publishers = []
        self.image_subscriptions = []
        transport = values["transport"]
        for index, camera in enumerate(cameras):
            prefix = f"{camera.strip('/')}/" if camera.strip("/") else ""
            image_topic = self.resolve_topic_name(prefix + "image")
            if transport in ("raw", "both"):
                self.image_subscriptions.append(self.create_subscription(
                    Image, prefix + "image", partial(self._on_image, index, False), qos_profile_sensor_data))
            if transport in ("compressed", "both"):
                self.image_subscriptions.append(self.create_subscription(
                    CompressedImage, image_topic + "/compressed", partial(self._on_image, index, True),
                    qos_profile_sensor_data))
            self.feature_publishers.append(self.create_publisher(Features, prefix + "features", FEATURES_QOS))
            self.debug_publishers.append(self.create_publisher(Image, prefix + "debug_image", FEATURES_QOS))
            self.stats.append(StreamStats(f"{self.get_name()}: {image_topic}"))
            self.image_topics.append(image_topic)
            self.get_logger().info(f"camera {index}: {image_topic} ({transport}) -> "
                                   f"{self.resolve_topic_name(prefix + 'features')}")
        self._logged_kinds: set[str] = set()
        self._batches = 0
        self._batched_frames = 0
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.diagnostics_publisher = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        if values["diagnostics_period"] > 0:
            self.create_timer(values["diagnostics_period"], self._publish_diagnostics)
        self._running = True
        self._worker = threading.Thread(target=self._work, name="superpoint_worker", daemon=True)
        self._worker.start()

    # -- receiving ----------------------------------------------------------------------------
    def _on_image(self, camera: int, compressed: bool, msg: Any) -> None:
        self.stats[camera].on_received()
        dropped = self.queue.put(Frame(camera, msg, compressed))
        if dropped:
            self.stats[camera].on_dropped(dropped)

    # -- processing (worker thread) -------------------------------------------------------------
    def _work(self) -> None:
        while self._running:
            frames = self.queue.take(self.batch_wait, timeout=0.2)
            if not frames:
                continue
            frames = self._drop_old(frames)
            if not frames:
                continue
            try:
                results, _ = self.pipeline.process(frames, keep_images=self._debug_wanted(frames))
            except Exception as error:  # noqa: BLE001 - keep serving; e.g. CUDA out of memory
                self.get_logger().error(f"extraction failed: {type(error).__name__}: {error}",
                                        throttle_duration_sec=5.0)
                continue
            self._batches += 1
            self._batched_frames += len(frames)
            try:
                for result in results:
                    self._publish(result)
            except Exception as error:  # noqa: BLE001
                if not self.context.ok():  # Ctrl-C while publishing: the context is gone
                    return
                self.get_logger().error(f"publishing failed: {type(error).__name__}: {error}",
                                        throttle_duration_sec=5.0)

    def _drop_old(self, frames: list[Frame]) -> list[Frame]:
        if self.max_frame_age <= 0:
            return frames
        now = self.get_clock().now().nanoseconds
        kept = []
        for frame in frames:
            stamp = frame.msg.header.stamp
            if now - (stamp.sec * 1_000_000_000 + stamp.nanosec) > self.max_frame_age * 1e9:
                self.stats[frame.camera].on_dropped()
            else:
                kept.append(frame)
        return kept

    def _debug_wanted(self, frames: list[Frame]) -> bool:
        return self.publish_debug_image and any(
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
        self.feature_publishers[camera].publish(result.message)
        latency = time.perf_counter() - result.frame.received
        stamp = result.message.header.stamp
        age = (self.get_clock().now().nanoseconds - (stamp.sec * 1_000_000_000 + stamp.nanosec)) * 1e-9
        self.stats[camera].on_published(latency, age if stamp.sec or stamp.nanosec else math.nan)
        if result.image is not None and result.keypoints is not None:
            drawn = draw_keypoints(result.image, result.keypoints)
            debug = Image(header=result.message.header, **_image_fields(drawn))
            self.debug_publishers[camera].publish(debug)

    # -- parameters and diagnostics ---------------------------------------------------------------
    def _on_set_parameters(self, parameters: list[Parameter]) -> SetParametersResult:
        changes = {p.name: p.value for p in parameters}
        try:
            for name in ("descriptor_encoding", "descriptor_sampling", "subpixel"):
                if name in changes and changes[name] not in SPECS[name].choices:
                    raise ValueError(f"{name} must be one of {SPECS[name].choices}, got {changes[name]!r}")
            options = {k: v for k, v in changes.items() if k in EXTRACTOR_OPTIONS}
            if options:
                self.pipeline.configure(**_extractor_args(options))
        except ValueError as error:
            return SetParametersResult(successful=False, reason=str(error))
        if "descriptor_encoding" in changes:
            self.pipeline.descriptor_encoding = changes["descriptor_encoding"]
        if "frame_queue" in changes:
            self.queue.depth = changes["frame_queue"]
        if "max_frame_age" in changes:
            self.max_frame_age = changes["max_frame_age"]
        if "batch_wait" in changes:
            self.batch_wait = changes["batch_wait"]
        if "publish_debug_image" in changes:
            self.publish_debug_image = changes["publish_debug_image"]
        if "max_image_pixels" in changes:
            self.pipeline.max_pixels = changes["max_image_pixels"]
        if changes:
            self.get_logger().info(f"parameters changed: {changes}")
        return SetParametersResult(successful=True)

    def _publish_diagnostics(self) -> None:
        hardware_id = str(self.extractor.device)
        array = DiagnosticArray()
        array.header.stamp = self.get_clock().now().to_msg()
        array.status = [stream_status(stats, DiagnosticStatus, KeyValue, hardware_id) for stats in self.stats]
        if self._batches:
            array.status[0].values.append(
                KeyValue(key="mean_batch_size", value=f"{self._batched_frames / self._batches:.2f}"))
        self.diagnostics_publisher.publish(array)

    def shutdown(self) -> None:
        """Stop the worker thread and destroy the node."""
        self._running = False
        self.queue.close()
        self._worker.join(timeout=10.0)
        self.destroy_node()


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
