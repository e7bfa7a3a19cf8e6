"""ROS 2 node: SuperPoint Features in, keypoint tracks and monocular visual odometry out.

Each Features message is matched to the previous one on the device and goes through
:class:`superpoint_training.odometry.tracking.FrameTracker` (the same code as the offline runner
``python -m superpoint_ros.vo``). A managed (lifecycle) node: configure makes the tracker and the
publishers and starts reading ``/tf_static``, activate subscribes to the features, deactivate
stops, cleanup frees; ``autostart`` (default true) walks to active by itself.

Topics (relative ones: remap them or use a namespace per camera):

- ``features`` (superpoint_ros/Features, reliable, keep-last 10), in;
- ``camera_info`` (sensor_msgs/CameraInfo, sensor-data QoS), in: used for Features that carry no
  camera model of their own (``has_camera_info``); ``rectified: true`` says the images are
  ``image_rect`` (P and R apply, not K and D), as does a CameraInfo with zero distortion;
- ``tracks`` (superpoint_ros/Tracks): the tracks extended into each frame;
- ``odometry`` (nav_msgs/Odometry): the pose of ``base_frame`` in ``odom_frame`` (see below);
- ``inliers`` (std_msgs/UInt32): the RANSAC + cheirality inlier count of the frame's pose;
- ``tracking_status`` (diagnostic_msgs/DiagnosticStatus): each frame's status (``ok``,
  ``first_frame``, ``low_parallax``, ``too_few_matches``, ``too_few_inliers``, ``pose_failed``,
  ``no_intrinsics``, ``gap``) with its reason and counts;
- ``/diagnostics`` (diagnostic_msgs/DiagnosticArray, 1 Hz): OK; WARN when frames were lost
  recently, when the static transform or tf2_msgs is missing for ``publish_tf``, when publishing
  /tf would give a frame a second parent; ERROR when features arrive and no recent frame gave a
  pose (5 in a row); STALE when features stopped;
- ``/tf_static`` in (transient local, reliable, keep-last 100): the static chain from
  ``base_frame`` to the camera frame (the features' ``header.frame_id``), composed hop by hop
  (:class:`superpoint_training.odometry.transforms.StaticTree`; tf2 has no wheel);
- ``/tf`` out, only with ``publish_tf: true`` (default false): ``odom_frame -> base_frame``, never
  when ``base_frame`` already has another parent (on /tf_static or /tf) and never without the
  static chain; /diagnostics says why nothing is published. tf2_msgs is imported lazily: without
  it (no ROS 2 install) there is no TF at all, with a diagnostic.

Odometry (REP 105): ``odom_frame`` is where ``base_frame`` was at the first frame. With the static
transform T_base_cam, the base's pose is T_odom_base = T_base_cam T_cam0_cam inv(T_base_cam), and
the message has ``child_frame_id = base_frame``. Until that transform is known (or without
tf2_msgs), the message is the camera's own pose, ``child_frame_id`` the camera frame, in an odom
frame at the first camera pose with ``odom_axes`` (rep103: x forward, y left, z up; or optical).

Covariances (6x6 row-major, x y z roll pitch yaw) say what is known, never a made-up small value:

- a monocular step has no scale (``scale_source: unit``, each step has length 1): the position's
  and the linear velocity's variances are ``unknown_variance`` (1e9 by default: unknown, yet a
  positive definite matrix that filters such as robot_localization accept; REP 147's -1 convention
  is for fields a message does not fill at all). With ``scale_source: fixed`` (``step_length``
  metres per step) they grow by ``translation_step_variance`` per step (a random walk);
- orientation variance grows by ``rotation_step_variance`` (rad^2) per step (a random walk: a
  nominal model of the drift, not an estimate of this frame's error);
- twist (in ``child_frame_id``'s axes): from consecutive poses and stamps; angular velocity =
  rotation vector of the step / dt with variance ``rotation_step_variance`` / dt^2; linear
  velocity = step / dt with a fixed scale, else 0 with ``unknown_variance``. The first frame, a
  lost frame or a frame without a stamp step: zero twist with ``unknown_variance`` everywhere;
- a lost frame (any status but ok, first_frame, low_parallax) repeats the last pose with
  ``lost_variance``; matching restarts, so the motion during the loss is missing from later poses.

Gaps: with ``max_frame_gap: 0`` (default) a stamp step beyond ``frame_gap_periods`` (5) x the
median frame period is a gap (2.5 s for a 2 Hz camera), with ``max_frame_gap > 0`` that many seconds.

Run (from a colcon build, no ROS 2 distribution needed)::

    build_ros/install/superpoint_ros/lib/superpoint_ros/tracker_node --ros-args \\
        --params-file config/tracker.yaml -r features:=/camera/features -r camera_info:=/camera/camera_info
"""

from __future__ import annotations

import math
import sys
import time
from collections import deque
from typing import Any

import numpy as np
from diagnostic_msgs.msg import DiagnosticStatus
from geometry_msgs.msg import TransformStamped
from nav_msgs.msg import Odometry
from rcl_interfaces.msg import SetParametersResult
from rclpy.parameter import Parameter
from rclpy.qos import (
    DurabilityPolicy,
    HistoryPolicy,
    QoSProfile,
    ReliabilityPolicy,
    qos_profile_sensor_data,
)
from rclpy.qos_overriding_options import QoSOverridingOptions
from sensor_msgs.msg import CameraInfo
from std_msgs.msg import UInt32

from superpoint_training.odometry.camera import CameraModel
from superpoint_training.odometry.tracking import FrameTracker, PoseAccumulator, Status, TrackerConfig, TrackingResult
from superpoint_training.odometry.transforms import (
    StaticTree,
    invert,
    make_transform,
    matrix_to_quaternion,
    rotation_vector,
)

from . import diagnostics
from .features_message import features_from_message
from .node_common import ManagedNode, ParameterSpec, check_qos_overrides, run_node
from .tracks_message import tracks_to_message

FEATURES_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10, reliability=ReliabilityPolicy.RELIABLE)
OUTPUT_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10, reliability=ReliabilityPolicy.RELIABLE)
TF_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=100, reliability=ReliabilityPolicy.RELIABLE)
TF_STATIC_QOS = QoSProfile(  # as tf2's static listener and broadcaster: latched
    history=HistoryPolicy.KEEP_LAST, depth=100, reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.TRANSIENT_LOCAL,
)  # fmt: skip
# optical axes (x right, y down, z forward) -> REP 103 axes (x forward, y left, z up)
OPTICAL_TO_REP103 = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
FRAME_LEVELS = {Status.OK: diagnostics.OK, Status.FIRST_FRAME: diagnostics.OK, Status.LOW_PARALLAX: diagnostics.WARN}
RECENT_FRAMES = 20  # frames /diagnostics looks back on (WARN when some were lost)
ERROR_FRAMES = 5  # ERROR when this many frames in a row gave no pose
STALE_AFTER_S = 5.0

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
    ParameterSpec("max_frame_gap", T.DOUBLE, 0.0, "Seconds between frame stamps beyond which the stream has a gap "
                  "(lost; tracks restart); 0: frame_gap_periods x the stream's median frame period.",
                  range=(0.0, 3600.0)),
    ParameterSpec("frame_gap_periods", T.DOUBLE, _D.frame_gap_periods, "With max_frame_gap 0: a stamp step longer "
                  "than this many median frame periods is a gap; 0: only stamps going backwards are.",
                  range=(0.0, 1000.0)),
    ParameterSpec("rectified", T.BOOL, False, "The features come from rectified images (image_rect): use the "
                  "camera's P and R, do not undistort (also implied by a CameraInfo with zero distortion)."),
    ParameterSpec("odom_frame", T.STRING, "odom", "Frame id of the odometry: where base_frame was at the first frame."),
    ParameterSpec("base_frame", T.STRING, "base_link", "The robot's body frame, whose pose the odometry and /tf "
                  "carry; the static chain base_frame -> camera frame is read from /tf_static."),
    ParameterSpec("odom_axes", T.STRING, "rep103", "Axes of odom_frame while the odometry is of the camera (no "
                  "static transform yet): rep103 (x forward, y left, z up) or optical (x right, y down, z forward).",
                  choices=("rep103", "optical"), runtime=False),
    ParameterSpec("scale_source", T.STRING, "unit", "Length of a monocular step: unit (1, scale unknown), fixed "
                  "(step_length metres).", choices=("unit", "fixed")),
    ParameterSpec("step_length", T.DOUBLE, 1.0, "Step length in metres when scale_source is fixed.",
                  range=(0.0, 1000.0)),
    ParameterSpec("publish_tf", T.BOOL, False, "Publish odom_frame -> base_frame on /tf (needs tf2_msgs and the "
                  "static transform base_frame -> camera; never a second parent for a frame).", runtime=False),
    ParameterSpec("rotation_step_variance", T.DOUBLE, 1e-4, "Orientation variance (rad^2) added per step "
                  "(random-walk drift model).", range=(0.0, 1e6)),
    ParameterSpec("translation_step_variance", T.DOUBLE, 1e-2, "Position variance (m^2) added per step with "
                  "scale_source fixed.", range=(0.0, 1e6)),
    ParameterSpec("unknown_variance", T.DOUBLE, 1e9, "Variance of what is not known: monocular position and "
                  "linear velocity, any twist of a first or lost frame.", range=(1.0, 1e18)),
    ParameterSpec("lost_variance", T.DOUBLE, 1e6, "Pose covariance diagonal while lost (the pose is the last good "
                  "one, not an estimate).", range=(0.0, 1e18)),
)
SPECS = {spec.name: spec for spec in PARAMETERS}
CONFIG_FIELDS = ("mutual", "ratio", "max_distance", "bucket_rows", "bucket_cols", "bucket_max_per_cell",
                 "min_matches", "min_inliers", "ransac_threshold_px", "ransac_confidence", "min_parallax_px",
                 "max_frame_gap", "frame_gap_periods")


def tracker_config(values: dict[str, Any]) -> TrackerConfig:
    """Parameter values -> TrackerConfig (0 turns ratio, max_distance, max_frame_gap, frame_gap_periods off)."""
    options = {name: values[name] for name in CONFIG_FIELDS}
    for name in ("ratio", "max_distance", "max_frame_gap", "frame_gap_periods"):
        options[name] = float(options[name]) or None
    return TrackerConfig(**options)


def load_tf_message() -> type | None:
    """tf2_msgs/TFMessage, or None without a ROS 2 install (tf2_msgs has no PyPI wheel)."""
    try:
        from tf2_msgs.msg import TFMessage
    except ImportError:
        return None
    return TFMessage


class OdometryFrames:
    """Turns the camera's accumulated pose into the pose of the odometry's child frame.

    T_odom_child = T_odom_cam0 @ T_cam0_cam @ T_cam_child: with the static transform T_base_cam,
    T_odom_cam0 = T_base_cam and T_cam_child = inv(T_base_cam) (odom = the base at the first frame);
    without it, T_odom_cam0 = the ``odom_axes`` rotation and T_cam_child = identity.
    """

    def __init__(self, axes: np.ndarray):
        self.axes = make_transform(rotation=axes)

    def child_pose(self, T_cam0_cam: np.ndarray, T_base_cam: np.ndarray | None) -> np.ndarray:
        if T_base_cam is None:
            return self.axes @ T_cam0_cam
        return T_base_cam @ T_cam0_cam @ invert(T_base_cam)


def covariance(position: float, orientation: float) -> list[float]:
    """A 6x6 row-major diagonal covariance (x, y, z, then rotations about x, y, z)."""
    matrix = np.zeros((6, 6))
    matrix[[0, 1, 2], [0, 1, 2]] = position
    matrix[[3, 4, 5], [3, 4, 5]] = orientation
    return matrix.reshape(-1).tolist()


class TrackerNode(ManagedNode):
    def __init__(self, **kwargs: Any):
        super().__init__("superpoint_tracker", PARAMETERS, **kwargs)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.TFMessage = load_tf_message()
        self.tracker: FrameTracker | None = None
        self.diagnostics: diagnostics.DiagnosticsPublisher | None = None
        self._outputs: list = []
        self._inputs: list = []
        self._static_subscription = None
        self.tf_publisher = None
        self._reset_state()

    def _reset_state(self) -> None:
        self.odometry = PoseAccumulator()
        self.static = StaticTree()
        self.tf_parents: dict[str, str] = {}  # child -> parent seen on /tf (other than our own odom -> base)
        self.camera_info: CameraModel | None = None
        self.camera_source = "none"
        self.camera_frame = ""
        self.tf_state = "off (publish_tf false)"
        self.lost_frames = 0
        self.frames = 0
        self.process_seconds = 0.0
        self.recent: deque[str] = deque(maxlen=RECENT_FRAMES)
        self.last_result: TrackingResult | None = None
        self.last_features_time = math.nan
        self.previous_child: tuple[float, np.ndarray] | None = None  # (stamp, T_odom_child) of the last good frame
        self.orientation_variance = 0.0  # random-walk variances so far
        self.position_variance = 0.0
        self._logged: set[str] = set()

    # -- lifecycle ----------------------------------------------------------------------------------
    def configure_node(self) -> None:
        from superpoint_ros.msg import Features, Tracks  # generated by the colcon build
        from superpoint_training.model.extractor import resolve_device

        self._reset_state()
        self.Features, self.Tracks = Features, Tracks
        self.tracker = FrameTracker(tracker_config(self.values), resolve_device(self.values["device"]))
        self.frames_to_odom = OdometryFrames(OPTICAL_TO_REP103 if self.values["odom_axes"] == "rep103" else np.eye(3))
        overridable = QoSOverridingOptions.with_default_policies()
        for attribute, msg_type, topic in (
            ("tracks_publisher", Tracks, "tracks"),
            ("odometry_publisher", Odometry, "odometry"),
            ("inliers_publisher", UInt32, "inliers"),
            ("status_publisher", DiagnosticStatus, "tracking_status"),
        ):
            publisher = self.create_lifecycle_publisher(msg_type, topic, OUTPUT_QOS, qos_overriding_options=overridable)
            setattr(self, attribute, publisher)
            self._outputs.append(publisher)
        self.diagnostics = diagnostics.DiagnosticsPublisher(self, 1.0, lambda: [self.summary_status()])
        if self.TFMessage is None:
            self.tf_state = "unavailable: tf2_msgs is not installed (part of a ROS 2 install, no PyPI wheel)"
        else:
            self._static_subscription = self.create_subscription(
                self.TFMessage, "/tf_static", self._on_tf_static, TF_STATIC_QOS)
            if self.values["publish_tf"]:
                self.tf_publisher = self.create_lifecycle_publisher(self.TFMessage, "/tf", TF_QOS)
                self._outputs.append(self.tf_publisher)
                self.tf_state = "waiting for features (the camera frame)"
        if self.values["publish_tf"] and self.TFMessage is None:
            self.get_logger().warning(f"publish_tf is true but /tf is {self.tf_state}")

    def activate_node(self) -> None:
        overridable = QoSOverridingOptions.with_default_policies()
        self._inputs = [
            self.create_subscription(self.Features, "features", self._on_features, FEATURES_QOS,
                                     qos_overriding_options=overridable),
            self.create_subscription(CameraInfo, "camera_info", self._on_camera_info, qos_profile_sensor_data,
                                     qos_overriding_options=overridable),
        ]
        if self.tf_publisher is not None:
            self._inputs.append(self.create_subscription(self.TFMessage, "/tf", self._on_tf, TF_QOS))
        check_qos_overrides(self)
        self.get_logger().info(
            f"tracking {self.resolve_topic_name('features')} (camera model: from the features, else "
            f"{self.resolve_topic_name('camera_info')}) on {self.tracker.device}; odometry of "
            f"{self.values['base_frame']} in {self.values['odom_frame']} on {self.resolve_topic_name('odometry')}, "
            f"scale {self.values['scale_source']}; /tf: {self.tf_state}"
        )

    def deactivate_node(self) -> None:
        for subscription in self._inputs:
            self.destroy_subscription(subscription)
        self._inputs = []

    def cleanup_node(self) -> None:
        self.deactivate_node()
        if self._static_subscription is not None:
            self.destroy_subscription(self._static_subscription)
            self._static_subscription = None
        for publisher in self._outputs:
            self.destroy_lifecycle_publisher(publisher)
        self._outputs = []
        self.tf_publisher = None
        if self.diagnostics is not None:
            self.diagnostics.destroy()
            self.diagnostics = None
        self.tracker = None

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
        if self.tracker is not None:
            self.tracker.config = config
        changes = {k: v for k, v in changes.items() if not k.startswith("qos_overrides.")}  # declared read-only
        if changes and self.tracker is not None:
            self.get_logger().info(f"parameters changed: {changes}")
        return SetParametersResult(successful=True)

    # -- input ------------------------------------------------------------------------------------
    def _on_camera_info(self, msg: Any) -> None:
        self.camera_info = CameraModel.from_camera_info(msg, rectified=self.values["rectified"])

    def _on_tf_static(self, msg: Any) -> None:
        for problem in self.static.add_message(msg):
            self._log_once(f"tf_static:{problem}", f"/tf_static: {problem}")

    def _on_tf(self, msg: Any) -> None:
        own = (self.values["odom_frame"], self.values["base_frame"])
        for transform in msg.transforms:
            parent, child = transform.header.frame_id.lstrip("/"), transform.child_frame_id.lstrip("/")
            if (parent, child) != own:
                self.tf_parents[child] = parent

    def _camera_for(self, features: Any, image_size: tuple[int, int]) -> tuple[CameraModel | None, str]:
        """The camera model of this frame (the one the Features carry, else camera_info's) or why none.

        The keypoints are undistorted once, here, from their pixels; ``keypoints_normalized`` of
        the message (when the detector filled it) is not used on top of that."""
        if features.camera is not None:
            camera = features.camera.camera_model(self.values["rectified"])
            self.camera_source = "features"
        else:
            camera = self.camera_info
            self.camera_source = "camera_info" if camera is not None else "none"
            if camera is None:
                return None, (f"no camera model: the features carry none and no CameraInfo arrived on "
                              f"{self.resolve_topic_name('camera_info')}")
        problem = camera.problem()
        if problem:
            return None, f"camera model from {self.camera_source} unusable: {problem}"
        size = camera.output_size
        if size is not None and tuple(size) != tuple(image_size):
            return None, (f"the camera model ({self.camera_source}) is for {size[1]}x{size[0]} images, the features "
                          f"for {image_size[1]}x{image_size[0]}")
        return camera, ""

    def _on_features(self, msg: Any) -> None:
        t0 = time.perf_counter()
        self.last_features_time = time.monotonic()
        try:
            features = features_from_message(msg)
        except ValueError as error:
            self._log_once("malformed", f"skipping malformed Features message: {error}")
            return
        camera, camera_problem = self._camera_for(features, features.image_size)
        stamp = msg.header.stamp.sec + 1e-9 * msg.header.stamp.nanosec
        try:
            result = self.tracker.process(
                features.keypoints, features.descriptors, camera, stamp=stamp, scores=features.scores,
                image_size=features.image_size,
            )
        except Exception as error:  # noqa: BLE001 - keep serving, and say so: e.g. a descriptor size that changed
            self.tracker.reset()
            result = failed_result(f"tracking failed: {type(error).__name__}: {error}", stamp, len(features.keypoints))
        if camera_problem and result.status == Status.NO_INTRINSICS:
            result.reason = camera_problem
        self.camera_frame = msg.header.frame_id.lstrip("/")
        self._advance(result)
        elapsed = time.perf_counter() - t0
        self.frames += 1
        self.process_seconds += elapsed
        self._publish(msg, features.image_size, result, elapsed, stamp)

    def _advance(self, result: TrackingResult) -> None:
        self.recent.append(result.status)
        self.last_result = result
        if result.lost:
            self.lost_frames += 1
            self._log_once(result.status, f"lost track: {result.status}: {result.reason} (logged once per kind; "
                                          "see tracking_status)")
            return
        if result.pose is not None and result.pose.has_pose:
            fixed = self.values["scale_source"] == "fixed"
            self.odometry.step(result.pose, self.values["step_length"] if fixed else 1.0)
            if result.status == Status.OK:  # a still frame adds no drift
                self.orientation_variance += self.values["rotation_step_variance"]
                self.position_variance += self.values["translation_step_variance"] if fixed else 0.0

    def _log_once(self, kind: str, text: str) -> None:
        if kind not in self._logged:
            self._logged.add(kind)
            self.get_logger().warning(text)

    # -- TF ---------------------------------------------------------------------------------------
    def base_to_camera(self) -> np.ndarray | None:
        """T_base_cam from /tf_static (identity when base_frame is the camera frame), None when unknown."""
        if not self.camera_frame:
            return None
        return self.static.lookup(self.values["base_frame"], self.camera_frame)

    def tf_refusal(self, T_base_cam: np.ndarray | None) -> str:
        """Why odom -> base_frame must not go on /tf now ('' when it may)."""
        odom, base = self.values["odom_frame"], self.values["base_frame"]
        if self.TFMessage is None:
            return self.tf_state
        if not self.camera_frame:
            return "no features yet (their header.frame_id names the camera frame)"
        if T_base_cam is None:
            return (f"no static transform {base} -> {self.camera_frame} on /tf_static ({len(self.static)} "
                    "transforms received): nothing is published on /tf")
        # a static parent (even odom: a second, contradicting source) or another parent on /tf
        parent = self.static.parent_of(base) or self.tf_parents.get(base)
        if parent is not None:
            return f"{base} already has the parent {parent!r}: publishing {odom} -> {base} would give it a second one"
        if self.static.chain(base, odom):
            return f"{odom} is {base} or below it in the TF tree: {odom} -> {base} would close a loop"
        return ""

    # -- output -----------------------------------------------------------------------------------
    def _publish(self, msg: Any, image_size: tuple[int, int], result: TrackingResult, elapsed: float,
                 stamp: float) -> None:
        header = msg.header
        self.tracks_publisher.publish(tracks_to_message(self.Tracks, header, result, image_size))

        T_base_cam = self.base_to_camera()
        pose = self.frames_to_odom.child_pose(self.odometry.pose, T_base_cam)
        child = self.values["base_frame"] if T_base_cam is not None else self.camera_frame
        odometry = Odometry()
        odometry.header.stamp = header.stamp
        odometry.header.frame_id = self.values["odom_frame"]
        odometry.child_frame_id = child
        p, o = odometry.pose.pose.position, odometry.pose.pose.orientation
        p.x, p.y, p.z = (float(v) for v in pose[:3, 3])
        o.x, o.y, o.z, o.w = matrix_to_quaternion(pose[:3, :3])
        unknown = self.values["unknown_variance"]
        fixed = self.values["scale_source"] == "fixed"
        if result.lost:
            odometry.pose.covariance = covariance(self.values["lost_variance"], self.values["lost_variance"])
        else:
            odometry.pose.covariance = covariance(self.position_variance if fixed else unknown, self.orientation_variance)
        self._fill_twist(odometry, result, stamp, pose, child, fixed, unknown)
        self.odometry_publisher.publish(odometry)
        self.inliers_publisher.publish(UInt32(data=result.num_inliers if result.status == Status.OK else 0))

        refusal = self.tf_refusal(T_base_cam) if self.tf_publisher is not None else ""
        if self.tf_publisher is not None:
            self.tf_state = refusal or f"publishing {self.values['odom_frame']} -> {self.values['base_frame']}"
            if refusal:
                self._log_once(f"tf:{refusal}", f"/tf: {refusal}")
            elif not result.lost:
                self.tf_publisher.publish(self.TFMessage(transforms=[self._transform(odometry)]))
        self.status_publisher.publish(self.frame_status(header, result, elapsed))

    def _fill_twist(self, odometry: Any, result: TrackingResult, stamp: float, pose: np.ndarray, child: str,
                    fixed: bool, unknown: float) -> None:
        """Twist in the child frame from this pose and the last good one (see the module docstring)."""
        previous = self.previous_child
        good = not result.lost and result.status != Status.FIRST_FRAME
        self.previous_child = (stamp, pose) if not result.lost else None
        dt = stamp - previous[0] if previous is not None else 0.0
        if not good or previous is None or dt <= 0:
            odometry.twist.covariance = covariance(unknown, unknown)
            return
        step = invert(previous[1]) @ pose  # the child's motion, in the previous child frame
        angular = rotation_vector(step[:3, :3]) / dt
        a = odometry.twist.twist.angular
        a.x, a.y, a.z = (float(v) for v in angular)
        translation_variance = unknown  # a monocular step's length is unknown, even a "still" one's
        if fixed:
            v = odometry.twist.twist.linear
            v.x, v.y, v.z = (float(c) for c in step[:3, 3] / dt)
            translation_variance = self.values["translation_step_variance"] / dt**2
        odometry.twist.covariance = covariance(translation_variance, self.values["rotation_step_variance"] / dt**2)

    def _transform(self, odometry: Any) -> Any:
        transform = TransformStamped()
        transform.header = odometry.header
        transform.child_frame_id = odometry.child_frame_id
        p = odometry.pose.pose.position
        transform.transform.translation.x, transform.transform.translation.y, transform.transform.translation.z = (
            p.x, p.y, p.z)
        transform.transform.rotation = odometry.pose.pose.orientation
        return transform

    def frame_status(self, header: Any, result: TrackingResult, elapsed: float) -> Any:
        """This frame's DiagnosticStatus (the tracking_status topic)."""
        parallax = result.pose.parallax_px if result.pose is not None else math.nan
        return diagnostics.make_status(
            f"{self.get_fully_qualified_name()}: {self.resolve_topic_name('features')}",
            FRAME_LEVELS.get(result.status, diagnostics.ERROR),
            result.status,
            {
                "reason": result.reason,
                "stamp": f"{header.stamp.sec}.{header.stamp.nanosec:09d}",
                "keypoints": result.num_keypoints,
                "matches": result.num_matches,
                "inliers": result.num_inliers,
                "parallax_px": f"{parallax:.2f}",
                "process_ms": f"{elapsed * 1e3:.2f}",
                "mean_process_ms": f"{self.process_seconds / max(1, self.frames) * 1e3:.2f}",
                "lost_frames": self.lost_frames,
                "frames": self.frames,
                "camera_model": self.camera_source,
            },
            hardware_id=str(self.tracker.device),
        )

    def summary_status(self) -> Any:
        """The node's DiagnosticStatus on /diagnostics (see the module docstring for the levels)."""
        recent = list(self.recent)
        lost = sum(status in Status.LOST for status in recent)
        since = time.monotonic() - self.last_features_time
        last = self.last_result
        tf_problem = self.values["publish_tf"] and not self.tf_state.startswith("publishing")
        if not self.is_active:
            level, message = diagnostics.OK, "inactive (lifecycle)"
        elif not recent:
            level, message = diagnostics.WARN, f"no features received yet on {self.resolve_topic_name('features')}"
        elif since > STALE_AFTER_S:
            level, message = diagnostics.STALE, f"no features for {since:.1f} s"
        elif len(recent) >= ERROR_FRAMES and all(s in Status.LOST for s in recent[-ERROR_FRAMES:]):
            level, message = diagnostics.ERROR, f"no pose in the last {ERROR_FRAMES} frames: {last.status}: {last.reason}"
        elif lost:
            level, message = diagnostics.WARN, f"{lost} of the last {len(recent)} frames lost ({last.status})"
        elif tf_problem:
            level, message = diagnostics.WARN, f"/tf: {self.tf_state}"
        else:
            level, message = diagnostics.OK, f"tracking ({last.status})"
        period = self.tracker.frame_period if self.tracker is not None else None
        limit, source = self.tracker.max_gap() if self.tracker is not None else (None, "")
        return diagnostics.make_status(
            f"{self.get_fully_qualified_name()}: tracker", level, message,
            {
                "frames": self.frames,
                "lost_frames": self.lost_frames,
                "lost_recent": lost,
                "last_status": last.status if last else "",
                "last_reason": last.reason if last else "",
                "camera_model": self.camera_source,
                "camera_frame": self.camera_frame,
                "tf": self.tf_state,
                "frame_period_s": f"{period:.4f}" if period else "unknown",
                "max_frame_gap_s": f"{limit:.4f} ({source})" if limit else source,
                "scale": "unknown (monocular, unit steps)" if self.values["scale_source"] == "unit" else "fixed",
            },
            hardware_id=str(self.tracker.device) if self.tracker is not None else "",
        )


def failed_result(reason: str, stamp: float, keypoints: int) -> TrackingResult:
    """A POSE_FAILED frame with no tracks (the tracker raised; it restarts from the next frame)."""
    empty = np.zeros(0, np.uint64)
    return TrackingResult(
        status=Status.POSE_FAILED, reason=reason, track_ids=empty, positions=np.zeros((0, 2), np.float32),
        previous_positions=np.zeros((0, 2), np.float32), lengths=np.zeros(0, np.uint32),
        match_distances=np.zeros(0, np.float32), inliers=np.zeros(0, bool), ended_track_ids=empty,
        num_keypoints=keypoints, stamp=stamp,
    )  # fmt: skip


def main(args: list[str] | None = None) -> int:
    """Entry point of the installed ``tracker_node`` executable; Ctrl-C exits cleanly with status 0."""
    return run_node(TrackerNode, "superpoint_tracker", args)


if __name__ == "__main__":
    sys.exit(main())
