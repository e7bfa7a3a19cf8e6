"""Wire format: a second DDS vendor (Cyclone DDS's Python binding) talks to the node (Fast DDS).

Cyclone publishes a sensor_msgs/Image and receives superpoint_ros/Features using IDL types that
carry the ROS 2 names (``sensor_msgs::msg::dds_::Image_`` on DDS topic ``rt/<name>``), written
here from the .msg definitions without any ROS code. Both sides use UDP on 127.0.0.1 only, with
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
from superpoint_ros.image_conversion import numpy_to_image_fields

pytestmark = pytest.mark.ros
cyclonedds = pytest.importorskip("cyclonedds")
from cyclonedds.idl import IdlStruct  # noqa: E402
from cyclonedds.idl.types import float32, int32, sequence, uint8, uint32  # noqa: E402

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
class Features(IdlStruct, typename="superpoint_ros::msg::dds_::Features_"):
    header: Header
    height: uint32
    width: uint32
    keypoints: sequence[float32]
    scores: sequence[float32]
    descriptor_dim: uint32
    descriptor_encoding: str
    descriptor_data: sequence[uint8]
    weights: str


def test_cyclone_dds_exchanges_images_and_features_with_the_node(tmp_path, photo_gray):
    require_built_package()
    from cyclonedds.core import Policy, Qos
    from cyclonedds.domain import Domain, DomainParticipant
    from cyclonedds.pub import DataWriter
    from cyclonedds.sub import DataReader
    from cyclonedds.topic import Topic
    from cyclonedds.util import duration

    from superpoint_training.model.extractor import Extractor

    weights = write_random_weights(tmp_path / "random_v6.pth")
    params = write_params(tmp_path / "params.yaml", {"weights": str(weights), "device": "cpu", "max_keypoints": 64})
    profile = str(FASTDDS_LOOPBACK_PROFILE)
    env = node_environment({"FASTRTPS_DEFAULT_PROFILES_FILE": profile, "FASTDDS_DEFAULT_PROFILES_FILE": profile})
    env.pop("FASTDDS_BUILTIN_TRANSPORTS")
    node = NodeProcess(
        [NODE_EXECUTABLE, "--ros-args", "--params-file", params, "-r", "image:=/cyclone_test/image",
         "-r", "features:=/cyclone_test/features"],
        env=env,
    )
    domain = Domain(DOMAIN_ID, CYCLONE_LOOPBACK_CONFIG)
    participant = DomainParticipant(DOMAIN_ID)
    try:
        reliable = Qos(Policy.Reliability.Reliable(duration(seconds=1)), Policy.History.KeepLast(5))
        writer = DataWriter(participant, Topic(participant, "rt/cyclone_test/image", Image), qos=reliable)
        reader = DataReader(participant, Topic(participant, "rt/cyclone_test/features", Features), qos=reliable)
        node.wait_for_output("camera 0", timeout=90)
        fields = numpy_to_image_fields(photo_gray, "mono8")
        image = Image(header=Header(Time(4321, 99), "cyclone_cam"), **{**fields, "data": list(fields["data"])})
        received = []
        deadline = time.monotonic() + 60
        while not received and time.monotonic() < deadline:
            writer.write(image)
            end = time.monotonic() + 2.0
            while not received and time.monotonic() < end:
                received = [s for s in reader.take(N=10) if isinstance(s, Features)]
                time.sleep(0.05)
        assert received, f"no features over Cyclone DDS\n{node.output}"
        sample = received[0]
        assert (sample.header.stamp.sec, sample.header.stamp.nanosec, sample.header.frame_id) == (
            4321, 99, "cyclone_cam")
        decoded = features_from_message(sample)  # the helpers read Cyclone's objects too
        reference = Extractor(str(weights), device="cpu", max_keypoints=64, warmup=False)(photo_gray).numpy()
        assert len(decoded) == len(reference) == 64
        distances = np.linalg.norm(decoded.keypoints[:, None] - reference.keypoints[None], axis=2).min(1)
        assert (distances < 0.5).mean() > 0.95
        assert decoded.descriptors.shape == (64, 256) and decoded.image_size == photo_gray.shape
        addresses = udp_addresses(node.process.pid)
        assert addresses and is_loopback_only(addresses), addresses
        assert node.interrupt() == 0, node.output
    finally:
        del participant, domain
        node.stop()
