"""Nothing of ours sends anything anywhere it was not asked to (issue: OpenVINO's telemetry sent DNS
queries for an analytics host from every start of the node).

The node (with a publisher feeding it images over Fast DDS with config/fastdds_loopback.xml), the
matching demo and the bag tool run under ``strace -f`` (every process and thread they start), and
every ``connect``/``sendto``/``sendmsg`` with an internet address is checked: only loopback
addresses and DDS multicast on the loopback interface pass; a DNS query (port 53) fails the test.
OpenVINO switches its telemetry off by itself when ``CI=true`` (or TF_BUILD, JENKINS_URL) is set,
so those variables are cleared for the subprocesses: otherwise this would pass in CI unseen.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CI_VARIABLES = ("CI", "TF_BUILD", "JENKINS_URL", "GITHUB_ACTIONS", "GITLAB_CI", "BUILDKITE", "TRAVIS", "CIRCLECI")
ADDRESS = re.compile(r'sin6?_port=htons\((\d+)\), (?:sin_addr=inet_addr\("([^"]+)"\)|.*?inet_pton\(AF_INET6, "([^"]+)")')

pytestmark = pytest.mark.skipif(shutil.which("strace") is None, reason="strace is not installed")


def outside_traffic(trace: str) -> list[str]:
    """The lines of an ``strace -e trace=connect,sendto,sendmsg`` log that reach beyond this machine:
    any DNS query, any internet address other than loopback (127/8, ::1) and DDS multicast."""
    found = []
    for line in trace.splitlines():
        for port, ipv4, ipv6 in ADDRESS.findall(line):
            address = ipv4 or ipv6
            if port == "53":
                found.append(line)
            elif address.startswith("127.") or address in ("::1", "::ffff:127.0.0.1"):
                continue
            elif address.startswith("239.255.") and 7400 <= int(port) < 7400 + 250 * 233:
                continue  # RTPS discovery multicast (port 7400 + 250 * domain), sent on the loopback interface
            else:
                found.append(line)
    return found


def audit_environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in CI_VARIABLES}
    env["PYTHONUNBUFFERED"] = "1"
    env["MPLBACKEND"] = "Agg"
    return env


def traced(command: list[str], log: Path) -> list[str]:
    return ["strace", "-f", "-qq", "-e", "trace=connect,sendto,sendmsg", "-o", str(log), *map(str, command)]


def assert_nothing_leaves(log: Path, what: str) -> None:
    trace = log.read_text(errors="replace")
    assert "connect(" in trace or "sendto(" in trace or "sendmsg(" in trace or trace == "", "strace recorded nothing"
    outside = outside_traffic(trace)
    assert not outside, f"{what} sent traffic off the machine:\n" + "\n".join(outside[:20])


def test_the_audit_sees_a_dns_query():
    """The parser flags what OpenVINO's telemetry did (a line as strace printed it) and passes DDS."""
    dns = '6020  connect(6, {sa_family=AF_INET, sin_port=htons(53), sin_addr=inet_addr("10.255.255.53")}, 16) = 0'
    https = '77 connect(5, {sa_family=AF_INET6, sin6_port=htons(443), sin6_flowinfo=htonl(0), ' \
            'inet_pton(AF_INET6, "2001:db8::1", &sin6_addr), sin6_scope_id=0}, 28) = -1 ENETUNREACH'
    dds = '81 sendto(12, "RTPS"..., 96, 0, {sa_family=AF_INET, sin_port=htons(7650), ' \
          'sin_addr=inet_addr("239.255.0.1")}, 16) = 96'
    local = '81 sendto(12, "RTPS"..., 96, 0, {sa_family=AF_INET, sin_port=htons(7661), ' \
            'sin_addr=inet_addr("127.0.0.1")}, 16) = 96'
    assert outside_traffic("\n".join([dns, https, dds, local])) == [dns, https]


def run_traced_command(module: str, arguments: list, folder: Path, what: str) -> None:
    """``python -m module arguments`` (the auto backend on the CPU) under strace; it must succeed and
    send nothing off the machine."""
    log = folder / f"{module}.strace"
    command = [sys.executable, "-m", module, *arguments, "--device", "cpu", "--backend", "auto"]
    result = subprocess.run(traced(command, log), env=audit_environment(), cwd=folder, capture_output=True,
                            text=True, timeout=600)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert_nothing_leaves(log, what)


def test_demo_sends_nothing(tmp_path):
    run_traced_command("superpoint_training.match_features_demo", ["--output", tmp_path / "demo.png"], tmp_path,
                       "the demo")


def test_bag_tool_sends_nothing(tmp_path):
    pytest.importorskip("rosbags")
    import numpy as np
    from bag_files import BagImage, write_image_bag

    rng = np.random.default_rng(0)
    frames = [BagImage("/camera/image_raw", (i + 1) * 10**9, (rng.random((96, 128)) * 255).astype(np.uint8), "mono8")
              for i in range(2)]  # fmt: skip
    write_image_bag(tmp_path / "bag", "mcap", frames)
    run_traced_command("superpoint_ros.extract_bag", [tmp_path / "bag", "--output", tmp_path / "out"], tmp_path,
                       "the bag tool")


PUBLISHER = """
import sys, time
import numpy as np
import rclpy
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image
from superpoint_ros.msg import Features
rclpy.init()
node = rclpy.create_node("audit_camera")
received = []
node.create_subscription(Features, "features", received.append, 10)
publisher = node.create_publisher(Image, "image", qos_profile_sensor_data)
rng = np.random.default_rng(0)
deadline = time.monotonic() + float(sys.argv[1])
while not received and time.monotonic() < deadline:
    image = Image(height=120, width=160, encoding="mono8", step=160)
    image.header.frame_id = "camera"
    image.data = (rng.random((120, 160)) * 255).astype(np.uint8).tobytes()
    publisher.publish(image)
    rclpy.spin_once(node, timeout_sec=0.5)
print("features received" if received else "no features", flush=True)
sys.exit(0 if received else 1)
"""


@pytest.mark.ros
def test_node_sends_nothing_but_dds_on_loopback(tmp_path):
    from ros_fixtures import NODE_EXECUTABLE, node_environment, require_built_package

    require_built_package()
    env = node_environment({"FASTRTPS_DEFAULT_PROFILES_FILE": str(ROOT / "config" / "fastdds_loopback.xml")})
    env.pop("FASTDDS_BUILTIN_TRANSPORTS", None)
    for name in CI_VARIABLES:
        env.pop(name, None)
    node_log, camera_log = tmp_path / "node.strace", tmp_path / "camera.strace"
    node_output = (tmp_path / "node.log").open("w")
    # own process group: Ctrl+C reaches the node itself, not only strace (which would detach and leave it running)
    node = subprocess.Popen(traced([sys.executable, NODE_EXECUTABLE, "--ros-args", "-p", "device:=cpu",
                                    "-p", "backend:=auto"], node_log),
                            env=env, cwd=tmp_path, stdout=node_output, stderr=subprocess.STDOUT,
                            start_new_session=True)  # fmt: skip
    try:
        camera = subprocess.run(traced([sys.executable, "-P", "-c", textwrap.dedent(PUBLISHER), "150"], camera_log),
                                env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)  # fmt: skip
    finally:
        os.killpg(node.pid, signal.SIGINT)
        try:
            node.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(node.pid, signal.SIGKILL)
            node.wait()
        node_output.close()
    output = (tmp_path / "node.log").read_text(errors="replace")
    assert camera.returncode == 0, f"{camera.stdout}{camera.stderr[-2000:]}\nnode:\n{output[-3000:]}"
    assert_nothing_leaves(node_log, "the detector node")
    assert_nothing_leaves(camera_log, "the test's camera publisher")
    # the node did speak DDS over UDP (the audit looked at real traffic)
    assert re.search(r'sin_addr=inet_addr\("127\.0\.0\.1"\)', node_log.read_text(errors="replace"))
