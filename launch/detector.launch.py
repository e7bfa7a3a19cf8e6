"""Start superpoint_ros' detector node for one camera (and, with ``tracker:=true``, the tracker on its features).

    ros2 launch superpoint_ros detector.launch.py image:=/camera/image_raw features:=/camera/features
    ros2 launch superpoint_ros detector.launch.py namespace:=left image:=/left/image_raw device:=cuda
    ros2 launch superpoint_ros detector.launch.py image:=/camera/image_raw transport:=compressed
    ros2 launch superpoint_ros detector.launch.py cameras:='[left, right]' sync:=exact require_gpu:=true
    ros2 launch superpoint_ros detector.launch.py image:=/camera/image_raw tracker:=true \
        camera_info:=/camera/camera_info

Node parameters come from ``params_file`` (default: the installed config/detector.yaml). A
parameter argument (``weights``, ``device``, ``transport``, ...) overrides the file only when it is
given on the command line: their defaults are empty, meaning "not given", so a params file of
one's own is never overridden by this file's defaults. Both nodes are lifecycle nodes that
activate themselves (``autostart``, default true in their parameters), so no lifecycle manager is
needed.

Equivalent command without ros2 launch (what this file describes; ``-p`` only for arguments given)::

    <install>/lib/superpoint_ros/detector_node --ros-args -r __node:=superpoint_detector -r __ns:=/<namespace> \\
        --params-file <params_file> -p device:=cuda -r image:=<image> -r features:=<features>
    <install>/lib/superpoint_ros/tracker_node --ros-args -r __node:=superpoint_tracker -r __ns:=/<namespace> \\
        --params-file <tracker_params_file> -r features:=<features> -r camera_info:=<camera_info> \\
        -r tracks:=<tracks> -r odometry:=<odometry>
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

TOPICS = {
    "image": ("image", "Camera topic (sensor_msgs/Image; CompressedImage is read from <image>/compressed)"),
    "features": ("features", "Output topic (superpoint_ros/Features)"),
    "namespace": ("", "Namespace of the nodes and of their relative topics"),
    "params_file": (
        PathJoinSubstitution([FindPackageShare("superpoint_ros"), "config", "detector.yaml"]),
        "Detector parameters file (YAML)",
    ),
    "tracker": ("false", "Also start tracker_node on the features (tracks, odometry): true or false"),
    "camera_info": ("camera_info", "CameraInfo topic for the tracker (sensor_msgs/CameraInfo)"),
    "tracks": ("tracks", "Tracks output topic (superpoint_ros/Tracks)"),
    "odometry": ("odometry", "Odometry output topic (nav_msgs/Odometry)"),
    "tracker_params_file": (
        PathJoinSubstitution([FindPackageShare("superpoint_ros"), "config", "tracker.yaml"]),
        "Tracker parameters file (YAML)",
    ),
}
# Launch argument -> detector parameter; empty default = not given (the params file decides).
DETECTOR_PARAMETERS = {
    "weights": ("weights", "Weights file or name (default, superpoint_ros, superpoint_ros_rotation, ...)"),
    "device": ("device", "Torch device: auto, cpu, cuda, cuda:1 ..."),
    "transport": ("transport", "raw (sensor_msgs/Image), compressed (<image>/compressed) or both"),
    "publish_debug_image": ("publish_debug_image", "Publish debug_image with the keypoints drawn: true or false"),
    "cameras": ("cameras", "Camera namespaces served by one node, e.g. '[left, right]' (left/image -> left/features)"),
    "require_gpu": ("require_gpu", "Fail at start-up instead of running on the CPU: true or false"),
    "sync": ("sync", "Several cameras: none, exact (equal stamps) or approximate (within sync_slop)"),
    "use_camera_info": ("camera_info", "Subscribe to the camera_info beside each image and put the camera model "
                                       "into Features: true or false"),
    "autostart": ("autostart", "Configure and activate at start-up (false: wait for a lifecycle manager)"),
    "use_sim_time": ("use_sim_time", "Use the /clock topic as the time source: true or false"),
}
# Launch argument -> tracker parameter, also only when given.
TRACKER_PARAMETERS = ("device", "use_sim_time", "autostart")


def _given(context, names) -> dict:
    """{parameter: its argument} for the parameter arguments given (non-empty); launch_ros evaluates a
    LaunchConfiguration parameter value as YAML (true -> bool, [a, b] -> list)."""
    configurations = context.launch_configurations
    return {parameter: LaunchConfiguration(argument) for argument, parameter in names if configurations.get(argument)}


def _nodes(context) -> list:
    configurations = context.launch_configurations
    namespace = configurations["namespace"]
    detector_overrides = _given(context, [(a, p) for a, (p, _) in DETECTOR_PARAMETERS.items()])
    nodes = [Node(
        package="superpoint_ros",
        executable="detector_node",
        name="superpoint_detector",
        namespace=namespace,
        parameters=[configurations["params_file"]] + ([detector_overrides] if detector_overrides else []),
        remappings=[("image", configurations["image"]), ("features", configurations["features"])],
        output="screen",
        emulate_tty=True,
    )]
    tracker = configurations["tracker"].strip().lower()
    if tracker not in ("true", "false", "1", "0"):
        raise ValueError(f"tracker takes true or false, got {tracker!r}")
    if tracker in ("true", "1"):
        tracker_overrides = _given(context, [(name, name) for name in TRACKER_PARAMETERS])
        nodes.append(Node(
            package="superpoint_ros",
            executable="tracker_node",
            name="superpoint_tracker",
            namespace=namespace,
            parameters=[configurations["tracker_params_file"]] + ([tracker_overrides] if tracker_overrides else []),
            remappings=[(topic, configurations[topic]) for topic in ("features", "camera_info", "tracks", "odometry")],
            output="screen",
            emulate_tty=True,
        ))
    return nodes


def generate_launch_description() -> LaunchDescription:
    arguments = [
        DeclareLaunchArgument(name, default_value=default, description=description)
        for name, (default, description) in TOPICS.items()
    ] + [
        DeclareLaunchArgument(name, default_value="", description=f"{description} (default: the params file's)")
        for name, (_, description) in DETECTOR_PARAMETERS.items()
    ]
    return LaunchDescription([*arguments, OpaqueFunction(function=_nodes)])
