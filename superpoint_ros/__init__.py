"""ROS 2 side of superpoint_ros: message conversions, the detector node, bag extraction, VO.

Modules that need no middleware (conversions, bag tool, offline VO) import without rclpy.
"""
