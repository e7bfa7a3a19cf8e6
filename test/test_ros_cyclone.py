"""Wire format: a second DDS vendor (Cyclone DDS's Python binding) talks to the node (Fast DDS).

Cyclone publishes a sensor_msgs/Image (yuv422_yuy2, as USB camera drivers send it) and its
CameraInfo, receives superpoint_ros/Features carrying that camera model, and observes the lifecycle
node's transition events, using IDL types that carry the ROS 2 names
(``sensor_msgs::msg::dds_::Image_`` on DDS topic ``rt/<name>``), written here from the .msg
definitions without any ROS code. Both sides use UDP on 127.0.0.1 only, with
multicast off (Fast DDS through an XML profile, Cyclone through its configuration).

No ``from __future__ import annotations`` here: cyclonedds reads the field annotations as types.
"""

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from ros_fixtures import (
    DOMAIN_ID,
    NODE_EXECUTABLE,
    NodeProcess,
    is_loopback_only,
    node_environment,
    require_built_package,
    udp_addresses,
    write_params,
    write_random_weights,
)

from superpoint_ros.features_message import features_from_message
from superpoint_ros.image_conversion import image_msg_to_numpy, numpy_to_image_fields

pytestmark = pytest.mark.ros
cyclonedds = pytest.importorskip("cyclonedds")
from cyclonedds.idl import IdlStruct  # noqa: E402
from cyclonedds.idl.types import array, float32, float64, int32, sequence, uint8, uint32, uint64  # noqa: E402

FASTDDS_LOOPBACK_PROFILE = Path(__file__).resolve().parents[1] / "config" / "fastdds_loopback.xml"
CYCLONE_LOOPBACK_CONFIG = """<CycloneDDS><Domain Id="any">
  <General><Interfaces><NetworkInterface address="127.0.0.1"/></Interfaces>
    <AllowMulticast>false</AllowMulticast><MaxMessageSize>65500B</MaxMessageSize></General>
  <Discovery><ParticipantIndex>auto</ParticipantIndex><MaxAutoParticipantIndex>20</MaxAutoParticipantIndex>
    <Peers><Peer address="127.0.0.1"/></Peers></Discovery>
</Domain></CycloneDDS>"""


@dataclass
class Time(IdlStruct, typename="builtin_interfaces::msg::dds_::Time_"):
    sec: int32
    nanosec: uint32


@dataclass
class Header(IdlStruct, typename="std_msgs::msg::dds_::Header_"):
    stamp: Time
    frame_id: str


@dataclass
class Image(IdlStruct, typename="sensor_msgs::msg::dds_::Image_"):
    header: Header
    height: uint32
    width: uint32
    encoding: str
    is_bigendian: uint8
    step: uint32
    data: sequence[uint8]


@dataclass
class RegionOfInterest(IdlStruct, typename="sensor_msgs::msg::dds_::RegionOfInterest_"):
    x_offset: uint32
    y_offset: uint32
    height: uint32
    width: uint32
    do_rectify: bool


@dataclass
class CameraInfo(IdlStruct, typename="sensor_msgs::msg::dds_::CameraInfo_"):
    header: Header
    height: uint32
    width: uint32
    distortion_model: str
    d: sequence[float64]
    k: array[float64, 9]
    r: array[float64, 9]
    p: array[float64, 12]
    binning_x: uint32
    binning_y: uint32
    roi: RegionOfInterest


@dataclass
class Features(IdlStruct, typename="superpoint_ros::msg::dds_::Features_"):  # format 2
    format_version: uint8
    header: Header
    height: uint32
    width: uint32
    keypoints: sequence[float32]
    scores: sequence[float32]
    descriptor_dim: uint32
    descriptor_encoding: str
    descriptor_data: sequence[uint8]
    weights: str
    has_camera_info: bool
    image_rectified: bool
    camera_height: uint32
    camera_width: uint32
    distortion_model: str
    d: sequence[float64]
    k: array[float64, 9]
    r: array[float64, 9]
    p: array[float64, 12]
    binning_x: uint32
    binning_y: uint32
    roi_x_offset: uint32
    roi_y_offset: uint32
    roi_height: uint32
    roi_width: uint32
    roi_do_rectify: bool
    keypoints_normalized: sequence[float32]


@dataclass
class LifecycleTransition(IdlStruct, typename="lifecycle_msgs::msg::dds_::Transition_"):
    id: uint8
    label: str


@dataclass
class LifecycleState(IdlStruct, typename="lifecycle_msgs::msg::dds_::State_"):
    id: uint8
    label: str


@dataclass
class TransitionEvent(IdlStruct, typename="lifecycle_msgs::msg::dds_::TransitionEvent_"):
    timestamp: uint64
    transition: LifecycleTransition
    start_state: LifecycleState
    goal_state: LifecycleState


K = [517.3, 0.0, 318.6, 0.0, 516.5, 255.3, 0.0, 0.0, 1.0]  # TUM fr1's published calibration
D = [0.2624, -0.9531, -0.0054, 0.0026, 1.1633]


def test_cyclone_dds_exchanges_images_and_features_with_the_node(tmp_path, photo_rgb):
    require_built_package()
    from cyclonedds.core import Policy, Qos
    from cyclonedds.domain import Domain, DomainParticipant
    from cyclonedds.pub import DataWriter
    from cyclonedds.sub import DataReader
    from cyclonedds.topic import Topic
    from cyclonedds.util import duration

    from superpoint_training.model.extractor import Extractor

    weights = write_random_weights(tmp_path / "random_v6.pth")
    params = write_params(tmp_path / "params.yaml", {"weights": str(weights), "device": "cpu", "max_keypoints": 64,
                                                     "camera_info": True, "undistort_keypoints": True})
    profile = str(FASTDDS_LOOPBACK_PROFILE)
    env = node_environment({"FASTRTPS_DEFAULT_PROFILES_FILE": profile, "FASTDDS_DEFAULT_PROFILES_FILE": profile})
    env.pop("FASTDDS_BUILTIN_TRANSPORTS")
    domain = Domain(DOMAIN_ID, CYCLONE_LOOPBACK_CONFIG)
    participant = DomainParticipant(DOMAIN_ID)
    reliable = Qos(Policy.Reliability.Reliable(duration(seconds=1)), Policy.History.KeepLast(5))
    # listening before the node starts: its autostart transitions are published once, to those present
    events = DataReader(participant, Topic(participant, "rt/cyclone_test/superpoint_detector/transition_event",
                                           TransitionEvent), qos=Qos(Policy.Reliability.Reliable(duration(seconds=1)),
                                                                     Policy.History.KeepLast(20)))
    node = NodeProcess(
        [NODE_EXECUTABLE, "--ros-args", "--params-file", params, "-r", "__ns:=/cyclone_test",
         "-r", "image:=/cyclone_test/image", "-r", "features:=/cyclone_test/features"],
        env=env,
    )
    try:
        writer = DataWriter(participant, Topic(participant, "rt/cyclone_test/image", Image), qos=reliable)
        info_writer = DataWriter(participant, Topic(participant, "rt/cyclone_test/camera_info", CameraInfo),
                                 qos=reliable)
        reader = DataReader(participant, Topic(participant, "rt/cyclone_test/features", Features), qos=reliable)
        node.wait_for_output("camera 0", timeout=90)
        fields = numpy_to_image_fields(photo_rgb, "yuv422_yuy2")
        header = Header(Time(4321, 99), "cyclone_cam")
        image = Image(header=header, **{**fields, "data": list(fields["data"])})
        info = CameraInfo(header=header, height=240, width=320, distortion_model="plumb_bob", d=D, k=K,
                          r=[1.0, 0, 0, 0, 1, 0, 0, 0, 1], p=[517.3, 0, 318.6, 0, 0, 516.5, 255.3, 0, 0, 0, 1, 0],
                          binning_x=0, binning_y=0, roi=RegionOfInterest(0, 0, 0, 0, False))
        received = []
        deadline = time.monotonic() + 60
        while not (received and received[-1].has_camera_info) and time.monotonic() < deadline:
            info_writer.write(info)
            time.sleep(0.05)
            writer.write(image)
            end = time.monotonic() + 2.0
            # the first frames may leave before the node's CameraInfo subscription matched: keep sending
            while not (received and received[-1].has_camera_info) and time.monotonic() < end:
                received += [s for s in reader.take(N=10) if isinstance(s, Features)]
                time.sleep(0.05)
        assert received and received[-1].has_camera_info, f"no features with a camera model over Cyclone DDS\n{node.output}"
        sample = received[-1]
        assert (sample.header.stamp.sec, sample.header.stamp.nanosec, sample.header.frame_id) == (
            4321, 99, "cyclone_cam")
        decoded = features_from_message(sample)  # the helpers read Cyclone's objects too
        seen = image_msg_to_numpy(image)  # the RGB the node decodes from YUYV
        reference = Extractor(str(weights), device="cpu", max_keypoints=64, warmup=False)(seen).numpy()
        assert len(decoded) == len(reference) == 64
        distances = np.linalg.norm(decoded.keypoints[:, None] - reference.keypoints[None], axis=2).min(1)
        assert (distances < 0.5).mean() > 0.95
        assert decoded.descriptors.shape == (64, 256) and decoded.image_size == photo_rgb.shape[:2]
        assert decoded.format_version == 2 and decoded.camera.distortion_model == "plumb_bob"
        np.testing.assert_array_equal(decoded.camera.k.reshape(-1), K)
        np.testing.assert_array_equal(decoded.camera.d, D)
        assert decoded.keypoints_normalized.shape == (64, 2)
        # the lifecycle: Cyclone saw the node's own walk to active (autostart)
        goals = [e.goal_state.label for e in events.take(N=50) if isinstance(e, TransitionEvent)]
        assert "active" in goals, goals
        addresses = udp_addresses(node.process.pid)
        assert addresses and is_loopback_only(addresses), addresses
        assert node.interrupt() == 0, node.output
    finally:
        del participant, domain
        node.stop()
