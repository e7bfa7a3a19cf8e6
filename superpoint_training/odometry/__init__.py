"""Visual odometry without ROS: the camera model (:mod:`.camera`), frame-to-frame tracking and
relative pose (:mod:`.tracking`), rigid transforms and static transform chains (:mod:`.transforms`)
and the evaluation against ground truth (:mod:`.evaluation`). The ROS nodes and the bag adapters in
``superpoint_ros`` build on these modules."""
