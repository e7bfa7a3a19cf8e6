"""ROS 2 node: SuperPoint Features in, keypoint tracks and monocular visual odometry out.

Each Features message is matched to the previous one on the device and goes through
:class:`superpoint_ros.tracking.FrameTracker` (the same code as the offline runner
``python -m superpoint_ros.vo``). Topics (relative, remap them or use a namespace per camera):

- ``features`` (superpoint_ros/Features, reliable, keep-last 10), in;
- ``camera_info`` (sensor_msgs/CameraInfo, sensor-data QoS), in: the latest one is used; its
  distortion model undistorts the matches;
- ``tracks`` (superpoint_ros/Tracks): the tracks extended into each frame (ids, positions,
  previous positions, lengths, match distances, RANSAC inliers, ended ids);
- ``odometry`` (nav_msgs/Odometry): the accumulated pose of the camera (``child_frame_id``: the
  features' ``header.frame_id`` unless ``child_frame`` is set) in ``odom_frame``;
- ``inliers`` (std_msgs/UInt32): the RANSAC + cheirality inlier count of the frame's pose, the
  quality measure beside the odometry (0 when no pose was estimated);
- ``tracking_status`` (diagnostic_msgs/DiagnosticStatus): level OK / WARN / ERROR, ``message`` the
  status (``ok``, ``first_frame``, ``low_parallax``, ``too_few_matches``, ``too_few_inliers``,
  ``pose_failed``, ``no_intrinsics``, ``gap``), values: reason, matches, inliers, keypoints,
  parallax_px, process_ms, lost_frames;
- ``/tf`` (tf2_msgs/TFMessage) ``odom_frame`` -> camera, only when ``tf2_msgs`` imports (it is part of
  a ROS 2 installation, not of the PyPI wheels this project's CI uses; the node logs which).

Odometry semantics:

- The odometry frame is the first frame's camera pose; with ``odom_axes: rep103`` (default) its
  axes follow REP 103 (x forward = the camera's optical z, y left, z up = the camera's -y), with
  ``optical`` they are the first camera's optical axes (x right, y down, z forward).
- Monocular steps have unit length (``scale_source: unit``); ``scale_source: fixed`` gives every
  step ``step_length`` metres (a known constant speed x frame period).
- A lost frame (any status but ok, first_frame, low_parallax) publishes no step: the odometry
  repeats the last pose with ``lost_variance`` on the covariance diagonal, the status topic says why,
  and matching restarts from that frame, so the motion during the loss is missing from later poses.
  ``low_parallax`` (matches moved less than ``min_parallax_px``) counts as standing still.
  Good frames carry ``pose_variance`` on the diagonal (a nominal value, not an estimate).

Run (from a colcon build, no ROS 2 distribution needed)::

    build_ros/install/superpoint_ros/lib/superpoint_ros/tracker_node --ros-args \\
        --params-file config/tracker.yaml -r features:=/camera/features -r camera_info:=/camera/camera_info
"""

from __future__ import annotations

import math
import sys
import time
from typing import Any

import numpy as np
from diagnostic_msgs.msg import DiagnosticStatus, KeyValue
from nav_msgs.msg import Odometry
from rcl_interfaces.msg import SetParametersResult
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo
from std_msgs.msg import UInt32

from .features_message import features_from_message
from .node_common import ParameterSpec, declare_parameters, run_node
from .tracking import CameraModel, FrameTracker, PoseAccumulator, Status, TrackerConfig, TrackingResult
from .tracks_message import tracks_to_message

try:  # part of a ROS 2 installation; not published on PyPI
    from geometry_msgs.msg import TransformStamped
    from tf2_msgs.msg import TFMessage
except ImportError:
    TFMessage = None

FEATURES_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10, reliability=ReliabilityPolicy.RELIABLE)
OUTPUT_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10, reliability=ReliabilityPolicy.RELIABLE)
# optical axes (x right, y down, z forward) -> REP 103 axes (x forward, y left, z up)
OPTICAL_TO_REP103 = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
LEVELS = {Status.OK: 0, Status.FIRST_FRAME: 0, Status.LOW_PARALLAX: 1}  # others: ERROR (2)

T = Parameter.Type
_D = TrackerConfig()
PARAMETERS: tuple[ParameterSpec, ...] = (
    ParameterSpec("device", T.STRING, "auto", "Torch device for matching: auto (CUDA if available), cpu, cuda...",
                  runtime=False),
    ParameterSpec("mutual", T.BOOL, _D.mutual, "Keep only mutual nearest-neighbour matches."),
    ParameterSpec("ratio", T.DOUBLE, _D.ratio or 0.0, "Lowe's ratio test on descriptor distances (0: off).",
                  range=(0.0, 1.0)),
    ParameterSpec("max_distance", T.DOUBLE, _D.max_distance or 0.0, "Largest L2 distance of a match between unit "
                  "descriptors (0: off).", range=(0.0, 2.0)),
    ParameterSpec("bucket_rows", T.INTEGER, 0, "Bucketing grid rows (0: no bucketing).", range=(0, 100)),
    ParameterSpec("bucket_cols", T.INTEGER, 0, "Bucketing grid columns (0: no bucketing).", range=(0, 100)),
    ParameterSpec("bucket_max_per_cell", T.INTEGER, 0, "Keypoints kept per grid cell, best scores first "
                  "(0: no bucketing).", range=(0, 100000)),
    ParameterSpec("min_matches", T.INTEGER, _D.min_matches, "Fewer matches with the previous frame: "
                  "too_few_matches (lost).", range=(5, 100000)),
    ParameterSpec("min_inliers", T.INTEGER, _D.min_inliers, "Fewer RANSAC + cheirality inliers: too_few_inliers "
                  "(lost).", range=(5, 100000)),
    ParameterSpec("ransac_threshold_px", T.DOUBLE, _D.ransac_threshold_px, "RANSAC epipolar distance threshold "
                  "in pixels.", range=(0.01, 100.0)),
    ParameterSpec("ransac_confidence", T.DOUBLE, _D.ransac_confidence, "RANSAC confidence.",
                  range=(0.5, 0.999999)),
    ParameterSpec("min_parallax_px", T.DOUBLE, _D.min_parallax_px, "Median match displacement below which the "
                  "camera counts as still (low_parallax, identity step); 0: off.", range=(0.0, 100.0)),
    ParameterSpec("max_frame_gap", T.DOUBLE, _D.max_frame_gap or 0.0, "Seconds between frame stamps beyond which "
                  "the stream has a gap (lost; tracks restart); 0: off.", range=(0.0, 3600.0)),
    ParameterSpec("odom_frame", T.STRING, "odom", "Frame id of the odometry (the first camera pose)."),
    ParameterSpec("child_frame", T.STRING, "", "Child frame id of the odometry; empty: the features' "
                  "header.frame_id (the camera's optical frame)."),
    ParameterSpec("odom_axes", T.STRING, "rep103", "Axes of odom_frame: rep103 (x forward, y left, z up) or "
                  "optical (x right, y down, z forward).", choices=("rep103", "optical"), runtime=False),
    ParameterSpec("scale_source", T.STRING, "unit", "Length of a monocular step: unit (1), fixed "
                  "(step_length metres).", choices=("unit", "fixed")),
    ParameterSpec("step_length", T.DOUBLE, 1.0, "Step length in metres when scale_source is fixed.",
                  range=(0.0, 1000.0)),
    ParameterSpec("publish_tf", T.BOOL, True, "Publish odom_frame -> camera on /tf (needs tf2_msgs)."),
    ParameterSpec("pose_variance", T.DOUBLE, 1e-2, "Covariance diagonal of good poses (nominal).",
                  range=(0.0, 1e12)),
    ParameterSpec("lost_variance", T.DOUBLE, 1e6, "Covariance diagonal while lost (the pose is the last good "
                  "one, not an estimate).", range=(0.0, 1e12)),
)
SPECS = {spec.name: spec for spec in PARAMETERS}
CONFIG_FIELDS = ("mutual", "ratio", "max_distance", "bucket_rows", "bucket_cols", "bucket_max_per_cell",
                 "min_matches", "min_inliers", "ransac_threshold_px", "ransac_confidence", "min_parallax_px",
                 "max_frame_gap")


def tracker_config(values: dict[str, Any]) -> TrackerConfig:
    """Parameter values -> TrackerConfig (0 turns ratio, max_distance and max_frame_gap off)."""
    options = {name: values[name] for name in CONFIG_FIELDS}
    for name in ("ratio", "max_distance", "max_frame_gap"):
        options[name] = float(options[name]) or None
    return TrackerConfig(**options)


def rotation_to_quaternion(R: np.ndarray) -> tuple[float, float, float, float]:
    """Rotation matrix -> (x, y, z, w), w >= 0."""
    m = np.asarray(R, np.float64)
    trace = m[0, 0] + m[1, 1] + m[2, 2]
    if trace > 0:
        s = 2.0 * math.sqrt(trace + 1.0)
        q = (m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s, 0.25 * s
    else:
        i = int(np.argmax(np.diag(m)))
        j, k = (i + 1) % 3, (i + 2) % 3
        s = 2.0 * math.sqrt(max(1.0 + m[i, i] - m[j, j] - m[k, k], 1e-12))
        v = [0.0, 0.0, 0.0]
        v[i] = 0.25 * s
        v[j] = (m[j, i] + m[i, j]) / s
        v[k] = (m[k, i] + m[i, k]) / s
        q = (*v, (m[k, j] - m[j, k]) / s)
    norm = math.sqrt(sum(c * c for c in q))
    x, y, z, w = (c / norm for c in q)
    return (-x, -y, -z, -w) if w < 0 else (x, y, z, w)


class TrackerNode(Node):
    def __init__(self, **kwargs: Any):
        super().__init__("superpoint_tracker", **kwargs)
        values = declare_parameters(self, PARAMETERS)
        self.values = values
        config = tracker_config(values)
        from superpoint_training.model.extractor import resolve_device

        self.tracker = FrameTracker(config, resolve_device(values["device"]))
        self.odometry = PoseAccumulator()
        self.axes = OPTICAL_TO_REP103 if values["odom_axes"] == "rep103" else np.eye(3)

        from superpoint_ros.msg import Features, Tracks  # generated by the colcon build

        self.Tracks = Tracks
        self.camera: CameraModel | None = None
        self.lost_frames = 0
        self.frames = 0
        self.process_seconds = 0.0
        self._logged: set[str] = set()
        self.create_subscription(Features, "features", self._on_features, FEATURES_QOS)
        self.create_subscription(CameraInfo, "camera_info", self._on_camera_info, qos_profile_sensor_data)
        self.tracks_publisher = self.create_publisher(Tracks, "tracks", OUTPUT_QOS)
        self.odometry_publisher = self.create_publisher(Odometry, "odometry", OUTPUT_QOS)
        self.inliers_publisher = self.create_publisher(UInt32, "inliers", OUTPUT_QOS)
        self.status_publisher = self.create_publisher(DiagnosticStatus, "tracking_status", OUTPUT_QOS)
        self.tf_publisher = None
        if TFMessage is not None:
            self.tf_publisher = self.create_publisher(TFMessage, "/tf", 100)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.get_logger().info(
            f"tracking {self.resolve_topic_name('features')} with {self.resolve_topic_name('camera_info')} on "
            f"{self.tracker.device}; odometry on {self.resolve_topic_name('odometry')} in {values['odom_frame']} "
            f"({values['odom_axes']} axes, scale {values['scale_source']}); /tf: "
            + ("published" if self.tf_publisher is not None else "not available (tf2_msgs is not installed)")
        )

    def _on_set_parameters(self, parameters: list[Parameter]) -> SetParametersResult:
        changes = {p.name: p.value for p in parameters}
        values = {**self.values, **changes}
        try:
            for name in ("odom_axes", "scale_source"):
                if values[name] not in SPECS[name].choices:
                    raise ValueError(f"{name} must be one of {SPECS[name].choices}, got {values[name]!r}")
            config = tracker_config(values)
        except (ValueError, TypeError) as error:
            return SetParametersResult(successful=False, reason=str(error))
        self.values = values
        self.tracker.config = config
        if changes:
            self.get_logger().info(f"parameters changed: {changes}")
        return SetParametersResult(successful=True)

    # -- input ------------------------------------------------------------------------------------
    def _on_camera_info(self, msg: CameraInfo) -> None:
        self.camera = CameraModel.from_camera_info(msg)

    def _camera_for(self, image_size: tuple[int, int]) -> tuple[CameraModel | None, str]:
        camera = self.camera
        if camera is None:
            return None, f"no CameraInfo received on {self.resolve_topic_name('camera_info')}"
        problem = camera.problem()
        if problem:
            return None, f"CameraInfo unusable: {problem}"
        if camera.image_size is not None and tuple(camera.image_size) != tuple(image_size):
            return None, (f"CameraInfo is for {camera.image_size[1]}x{camera.image_size[0]} images, the features for "
                          f"{image_size[1]}x{image_size[0]}")
        return camera, ""

    def _on_features(self, msg: Any) -> None:
        t0 = time.perf_counter()
        try:
            features = features_from_message(msg)
        except ValueError as error:
            self._log_once("malformed", f"skipping malformed Features message: {error}")
            return
        camera, camera_problem = self._camera_for(features.image_size)
        stamp = msg.header.stamp.sec + 1e-9 * msg.header.stamp.nanosec
        try:
            result = self.tracker.process(
                features.keypoints, features.descriptors, camera, stamp=stamp, scores=features.scores,
                image_size=features.image_size,
            )
        except Exception as error:  # noqa: BLE001 - keep serving; e.g. a descriptor size that changed
            self.get_logger().error(f"tracking failed: {type(error).__name__}: {error}", throttle_duration_sec=5.0)
            self.tracker.reset()
            return
        if camera_problem and result.status == Status.NO_INTRINSICS:
            result.reason = camera_problem
        self._advance(result)
        elapsed = time.perf_counter() - t0
        self.frames += 1
        self.process_seconds += elapsed
        self._publish(msg, features.image_size, result, elapsed)

    def _advance(self, result: TrackingResult) -> None:
        if result.lost:
            self.lost_frames += 1
            self._log_once(result.status, f"lost track: {result.status}: {result.reason} (logged once per kind; "
                                          "see tracking_status)")
            return
        if result.pose is not None and result.pose.has_pose:
            scale = self.values["step_length"] if self.values["scale_source"] == "fixed" else 1.0
            self.odometry.step(result.pose, scale)

    def _log_once(self, kind: str, text: str) -> None:
        if kind not in self._logged:
            self._logged.add(kind)
            self.get_logger().warning(text)

    # -- output -----------------------------------------------------------------------------------
    def _publish(self, msg: Any, image_size: tuple[int, int], result: TrackingResult, elapsed: float) -> None:
        header = msg.header
        tracks = tracks_to_message(self.Tracks, header, result, image_size)
        self.tracks_publisher.publish(tracks)

        child = self.values["child_frame"] or header.frame_id
        pose = self.odometry.pose
        rotation = self.axes @ pose[:3, :3]
        translation = self.axes @ pose[:3, 3]
        qx, qy, qz, qw = rotation_to_quaternion(rotation)
        odometry = Odometry()
        odometry.header.stamp = header.stamp
        odometry.header.frame_id = self.values["odom_frame"]
        odometry.child_frame_id = child
        position = odometry.pose.pose.position
        position.x, position.y, position.z = (float(v) for v in translation)
        orientation = odometry.pose.pose.orientation
        orientation.x, orientation.y, orientation.z, orientation.w = qx, qy, qz, qw
        variance = self.values["lost_variance"] if result.lost else self.values["pose_variance"]
        covariance = np.zeros(36)
        covariance[::7] = variance
        odometry.pose.covariance = covariance
        odometry.twist.covariance = covariance  # no twist estimate: zero velocity, stated as uncertain
        self.odometry_publisher.publish(odometry)
        self.inliers_publisher.publish(UInt32(data=result.num_inliers if result.status == Status.OK else 0))

        if self.tf_publisher is not None and self.values["publish_tf"] and not result.lost:
            transform = TransformStamped()
            transform.header = odometry.header
            transform.child_frame_id = child
            transform.transform.translation.x, transform.transform.translation.y, transform.transform.translation.z = (
                position.x, position.y, position.z)
            transform.transform.rotation = odometry.pose.pose.orientation
            self.tf_publisher.publish(TFMessage(transforms=[transform]))

        parallax = result.pose.parallax_px if result.pose is not None else math.nan
        status = DiagnosticStatus(
            level=bytes([LEVELS.get(result.status, 2)]),
            name=f"{self.get_fully_qualified_name()}: {self.resolve_topic_name('features')}",
            message=result.status,
            hardware_id=str(self.tracker.device),
        )
        status.values = [
            KeyValue(key=key, value=str(value))
            for key, value in (
                ("reason", result.reason),
                ("stamp", f"{header.stamp.sec}.{header.stamp.nanosec:09d}"),
                ("keypoints", result.num_keypoints),
                ("matches", result.num_matches),
                ("inliers", result.num_inliers),
                ("parallax_px", f"{parallax:.2f}"),
                ("process_ms", f"{elapsed * 1e3:.2f}"),
                ("mean_process_ms", f"{self.process_seconds / max(1, self.frames) * 1e3:.2f}"),
                ("lost_frames", self.lost_frames),
                ("frames", self.frames),
            )
        ]
        self.status_publisher.publish(status)


def main(args: list[str] | None = None) -> int:
    """Entry point of the installed ``tracker_node`` executable; Ctrl-C exits cleanly with status 0."""
    return run_node(TrackerNode, "superpoint_tracker", args)


if __name__ == "__main__":
    sys.exit(main())
