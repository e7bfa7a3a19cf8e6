"""Start superpoint_ros' detector node for one camera.

    ros2 launch superpoint_ros detector.launch.py image:=/camera/image_raw features:=/camera/features
    ros2 launch superpoint_ros detector.launch.py namespace:=left image:=/left/image_raw device:=cuda

Several cameras in one node: list them in a params file (``cameras: [left, right]``, topics
``<namespace>/left/image`` -> ``<namespace>/left/features``) and pass ``params_file:=...``.

Equivalent command without ros2 launch (what this file describes)::

    <install>/lib/superpoint_ros/detector_node --ros-args -r __ns:=/<namespace> \\
        --params-file <share>/superpoint_ros/config/detector.yaml -p device:=auto -p use_sim_time:=false \\
        -r image:=<image> -r features:=<features>
"""

from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

from launch import LaunchDescription

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
}


def generate_launch_description() -> LaunchDescription:
    arguments = [
        DeclareLaunchArgument(name, default_value=default, description=description)
        for name, (default, description) in ARGUMENTS.items()
    ]
    node = Node(
        package="superpoint_ros",
        executable="detector_node",
        name="superpoint_detector",
        namespace=LaunchConfiguration("namespace"),
        parameters=[
            LaunchConfiguration("params_file"),
            {"device": LaunchConfiguration("device"), "use_sim_time": LaunchConfiguration("use_sim_time")},
        ],
        remappings=[("image", LaunchConfiguration("image")), ("features", LaunchConfiguration("features"))],
        output="screen",
        emulate_tty=True,
    )
    return LaunchDescription([*arguments, node])
