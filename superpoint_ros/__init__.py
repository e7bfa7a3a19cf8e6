"""ROS 2 side of superpoint_ros: message conversions, the detector node, bag extraction, VO.

Modules that need no middleware (conversions, bag tool, offline VO) import without rclpy.
"""

from superpoint_training.common.no_telemetry import block_telemetry

block_telemetry()  # the nodes and tools send nothing off the machine (see that module)
