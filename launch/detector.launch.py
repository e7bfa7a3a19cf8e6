"""Start superpoint_ros' detector node for one camera (and, with ``tracker:=true``, the tracker on its features).

    ros2 launch superpoint_ros detector.launch.py image:=/camera/image_raw features:=/camera/features
    ros2 launch superpoint_ros detector.launch.py namespace:=left image:=/left/image_raw device:=cuda
    ros2 launch superpoint_ros detector.launch.py image:=/camera/image_raw tracker:=true \
        camera_info:=/camera/camera_info

Several cameras in one node: list them in a params file (``cameras: [left, right]``, topics
``<namespace>/left/image`` -> ``<namespace>/left/features``) and pass ``params_file:=...``.

Equivalent command without ros2 launch (what this file describes)::

    <install>/lib/superpoint_ros/detector_node --ros-args -r __ns:=/<namespace> \\
        --params-file <share>/superpoint_ros/config/detector.yaml -p device:=auto -p use_sim_time:=false \\
        -r image:=<image> -r features:=<features>
    <install>/lib/superpoint_ros/tracker_node --ros-args -r __ns:=/<namespace> \
        --params-file <share>/superpoint_ros/config/tracker.yaml -p device:=auto -p use_sim_time:=false \
        -r features:=<features> -r camera_info:=<camera_info> -r tracks:=<tracks> -r odometry:=<odometry>
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

ARGUMENTS = {
    "image": ("image", "Camera topic (sensor_msgs/Image; CompressedImage is read from <image>/compressed)"),
    "features": ("features", "Output topic (superpoint_ros/Features)"),
    "namespace": ("", "Namespace of the node and of its relative topics"),
    "params_file": (
        PathJoinSubstitution([FindPackageShare("superpoint_ros"), "config", "detector.yaml"]),
        "Parameters file (YAML)",
    ),
    "device": ("auto", "Torch device: auto, cpu, cuda, cuda:1 ..."),
    "use_sim_time": ("false", "Use the /clock topic as the time source"),
    "tracker": ("false", "Also start tracker_node on the features (tracks, odometry)"),
    "camera_info": ("camera_info", "CameraInfo topic for the tracker (sensor_msgs/CameraInfo)"),
    "tracks": ("tracks", "Tracks output topic (superpoint_ros/Tracks)"),
    "odometry": ("odometry", "Odometry output topic (nav_msgs/Odometry)"),
    "tracker_params_file": (
        PathJoinSubstitution([FindPackageShare("superpoint_ros"), "config", "tracker.yaml"]),
        "Tracker parameters file (YAML)",
    ),
}


def generate_launch_description() -> LaunchDescription:
    arguments = [
        DeclareLaunchArgument(name, default_value=default, description=description)
        for name, (default, description) in ARGUMENTS.items()
    ]
    common = {"device": LaunchConfiguration("device"), "use_sim_time": LaunchConfiguration("use_sim_time")}
    detector = Node(
        package="superpoint_ros",
        executable="detector_node",
        name="superpoint_detector",
        namespace=LaunchConfiguration("namespace"),
        parameters=[LaunchConfiguration("params_file"), common],
        remappings=[("image", LaunchConfiguration("image")), ("features", LaunchConfiguration("features"))],
        output="screen",
        emulate_tty=True,
    )
    tracker = Node(
        package="superpoint_ros",
        executable="tracker_node",
        name="superpoint_tracker",
        namespace=LaunchConfiguration("namespace"),
        parameters=[LaunchConfiguration("tracker_params_file"), common],
        remappings=[
            (topic, LaunchConfiguration(topic)) for topic in ("features", "camera_info", "tracks", "odometry")
        ],
        condition=IfCondition(LaunchConfiguration("tracker")),
        output="screen",
        emulate_tty=True,
    )
    return LaunchDescription([*arguments, detector, tracker])
