"""Helpers for the node tests: the colcon-built executable as a subprocess, and an in-process rclpy
harness, all on loopback (Fast DDS shared memory) with a ROS domain id of this test run.

Imported by test_ros_node*.py (the test folder is on sys.path under pytest).
"""

from __future__ import annotations

import array
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from superpoint_ros.image_conversion import numpy_to_image_fields

REPO = Path(__file__).resolve().parents[1]
INSTALL = Path(os.environ.get("SUPERPOINT_ROS_INSTALL", REPO / "build_ros" / "install"))
PACKAGE_PREFIX = INSTALL / "superpoint_ros"
NODE_EXECUTABLE = PACKAGE_PREFIX / "lib" / "superpoint_ros" / "detector_node"
SITE = PACKAGE_PREFIX / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
# One domain per test run: parallel runs on one machine do not hear each other.
DOMAIN_ID = int(os.environ.get("SUPERPOINT_TEST_DOMAIN_ID", 1 + os.getpid() % 100))


def require_built_package() -> None:
    """Skip unless the colcon build exists and its messages import in this process (scripts/test.sh)."""
    if not NODE_EXECUTABLE.exists():
        pytest.skip(f"no colcon build at {INSTALL} (run scripts/setup.sh, or scripts/test.sh)")
    features_class()


def features_class() -> type:
    """``superpoint_ros.msg.Features`` from the build, also when the source tree shadows the install."""
    import superpoint_ros

    try:
        from superpoint_ros.msg import Features
    except ImportError:
        # `python -m pytest` from the repository puts the source package (without msg/) first:
        # let the package also look in the installed copy, which has the generated module.
        installed = SITE / "superpoint_ros"
        if not (installed / "msg").is_dir():
            pytest.skip("superpoint_ros.msg is not built (run scripts/setup.sh)")
        if str(installed) not in superpoint_ros.__path__:
            superpoint_ros.__path__.append(str(installed))
        try:
            from superpoint_ros.msg import Features
        except ImportError as error:
            pytest.skip(f"superpoint_ros.msg does not load here ({error}): run the tests with scripts/test.sh")
    return Features


def node_environment(extra: dict[str, str] | None = None) -> dict[str, str]:
    """Environment of a node subprocess: the build sourced, shared memory only, this run's domain."""
    env = dict(os.environ)
    # ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST would make rmw_fastrtps open UDP sockets on 0.0.0.0 and
    # on the external interface even with shared memory only: leave it unset.
    env.pop("ROS_AUTOMATIC_DISCOVERY_RANGE", None)
    env.update(
        ROS_DOMAIN_ID=str(DOMAIN_ID),
        FASTDDS_BUILTIN_TRANSPORTS="SHM",
        RMW_IMPLEMENTATION="rmw_fastrtps_cpp",
        PYTHONUNBUFFERED="1",
        RCUTILS_COLORIZED_OUTPUT="0",
        RCUTILS_LOGGING_BUFFERED_STREAM="0",
        OMP_NUM_THREADS="1",  # the CI machine has 2 cores; the test process needs one
    )
    # the executable's shebang is `/usr/bin/env python3`: this interpreter first
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"

    def prepend(key: str, value: Path) -> None:
        parts = [p for p in env.get(key, "").split(os.pathsep) if p]
        env[key] = os.pathsep.join([str(value)] + [p for p in parts if p != str(value)])

    prepend("PYTHONPATH", SITE)
    prepend("LD_LIBRARY_PATH", PACKAGE_PREFIX / "lib")
    prepend("AMENT_PREFIX_PATH", PACKAGE_PREFIX)
    env.update(extra or {})
    return env


def _default_sigint() -> None:
    """In the child: SIGINT back to its default, as in a terminal. A test run started in the background
    by a non-interactive shell inherits SIGINT ignored, and a node would then not stop on Ctrl+C."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


class NodeProcess:
    """A node started as a subprocess; its output goes to a file that the test can search."""

    def __init__(self, command: list[str], env: dict[str, str] | None = None):
        self.command = [str(c) for c in command]
        self._log = tempfile.NamedTemporaryFile("w+", prefix="detector_node_", suffix=".log", delete=False)
        self.process = subprocess.Popen(
            self.command, stdout=self._log, stderr=subprocess.STDOUT, env=env or node_environment(), cwd=REPO,
            preexec_fn=_default_sigint,
        )

    @property
    def output(self) -> str:
        return Path(self._log.name).read_text(errors="replace")

    def wait_for_output(self, pattern: str, timeout: float = 60.0) -> re.Match:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = re.search(pattern, self.output)
            if match:
                return match
            if self.process.poll() is not None:
                raise AssertionError(f"node exited with {self.process.returncode}:\n{self.output}")
            time.sleep(0.1)
        raise AssertionError(f"no {pattern!r} in the node's output after {timeout} s:\n{self.output}")

    def interrupt(self, timeout: float = 20.0) -> int:
        """Ctrl-C (SIGINT) and wait; returns the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def stop(self) -> None:
        self.interrupt()
        self._log.close()
        os.unlink(self._log.name)


def udp_addresses(pid: int) -> list[str]:
    """Local addresses ("ip:port") of the UDP sockets process ``pid`` holds (Linux /proc)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    addresses = []
    for table in ("udp", "udp6"):
        lines = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
        for line in lines:
            fields = line.split()
            if fields[9] not in inodes:
                continue
            host, port = fields[1].split(":")
            if len(host) == 8:
                ip = ".".join(str(b) for b in reversed(bytes.fromhex(host)))
            else:
                ip = "::1" if host == "0" * 24 + "01000000" else f"ipv6:{host}"
            addresses.append(f"{ip}:{int(port, 16)}")
    return addresses


def is_loopback_only(addresses: list[str]) -> bool:
    """Bound to 127.x / ::1, or to a multicast group (receive only, reached through the loopback interface)."""
    for address in addresses:
        ip = address.rsplit(":", 1)[0]
        if ip == "::1" or ip.startswith("127."):
            continue
        if not ip.startswith("ipv6") and 224 <= int(ip.split(".")[0]) <= 239:
            continue
        return False
    return True


class RosHarness:
    """An rclpy node in this process, in its own context on this run's domain, spun by a thread."""

    def __init__(self, name: str = "superpoint_test"):
        os.environ.setdefault("FASTDDS_BUILTIN_TRANSPORTS", "SHM")  # shared memory only: no sockets
        os.environ.pop("ROS_AUTOMATIC_DISCOVERY_RANGE", None)  # LOCALHOST would open UDP sockets (see above)
        import rclpy
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.signals import SignalHandlerOptions

        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=DOMAIN_ID, signal_handler_options=SignalHandlerOptions.NO)
        self.node = rclpy.create_node(name, context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()
        self._cond = threading.Condition()
        self.subscriptions: list = []

    def _spin(self) -> None:
        while self.context.ok():
            try:
                self.executor.spin_once(timeout_sec=0.05)
            except Exception:  # noqa: BLE001 - shutting down
                if not self.context.ok():
                    return
                raise

    def collect(self, msg_type: type, topic: str, qos: Any = 10) -> list:
        """Subscribe and return the (growing) list of received messages."""
        received: list = []

        def on_message(msg: Any) -> None:
            with self._cond:
                received.append(msg)
                self._cond.notify_all()

        self.subscriptions.append(self.node.create_subscription(msg_type, topic, on_message, qos))
        return received

    def wait_for_publishers(self, timeout: float = 90.0) -> None:
        """Readiness handshake: every collecting subscription is matched with a publisher, so that
        nothing the node under test publishes next is lost to discovery still in progress."""
        deadline = time.monotonic() + timeout
        for subscription in self.subscriptions:
            while subscription.get_publisher_count() < 1:
                if time.monotonic() > deadline:
                    raise AssertionError(f"no publisher on {subscription.topic_name} after {timeout} s")
                time.sleep(0.05)

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 30.0, what: str = "condition") -> None:
        with self._cond:
            if not self._cond.wait_for(predicate, timeout):
                raise AssertionError(f"timed out after {timeout} s waiting for {what}")

    def wait_for_subscribers(self, publisher: Any, count: int = 1, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while publisher.get_subscription_count() < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"no subscriber on {publisher.topic_name} after {timeout} s")
            time.sleep(0.05)

    def set_parameters(self, node_name: str, values: dict[str, Any], timeout: float = 20.0) -> list:
        """Set parameters of another node through its service; returns the SetParametersResults."""
        from rcl_interfaces.srv import SetParameters
        from rclpy.parameter import Parameter

        client = self.node.create_client(SetParameters, f"{node_name}/set_parameters")
        try:
            if not client.wait_for_service(timeout_sec=timeout):
                raise AssertionError(f"no parameter service {node_name}/set_parameters")
            request = SetParameters.Request(
                parameters=[Parameter(k, value=v).to_parameter_msg() for k, v in values.items()]
            )
            future = client.call_async(request)
            deadline = time.monotonic() + timeout
            while not future.done() and time.monotonic() < deadline:
                time.sleep(0.02)
            assert future.done(), f"{node_name}/set_parameters did not answer"
            return list(future.result().results)
        finally:
            self.node.destroy_client(client)

    def close(self) -> None:
        import rclpy

        self.executor.shutdown(timeout_sec=1.0)
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)
        self._thread.join(timeout=5.0)


def publish_until_answered(ros: RosHarness, publisher: Any, message: Any, answers: list, timeout: float = 60.0,
                           retry: float = 5.0) -> Any:
    """Publish ``message`` (again every ``retry`` s: best-effort delivery may lose one) until a message
    with its header stamp arrives in ``answers`` (a ``RosHarness.collect`` list); that answer, or None."""
    wanted = (message.header.stamp.sec, message.header.stamp.nanosec)
    deadline = time.monotonic() + timeout

    def answered() -> Any:
        return next((m for m in answers if (m.header.stamp.sec, m.header.stamp.nanosec) == wanted), None)

    while time.monotonic() < deadline:
        publisher.publish(message)
        try:
            ros.wait_for(lambda: answered() is not None, timeout=retry)
            return answered()
        except AssertionError:
            continue
    return None


def stamp(sec: int, nanosec: int = 0) -> Any:
    from builtin_interfaces.msg import Time

    return Time(sec=sec, nanosec=nanosec)


def image_message(
    image: np.ndarray, encoding: str, sec: int, frame_id: str = "camera", overrides: dict | None = None
) -> Any:
    """A sensor_msgs/Image of ``image`` (RGB or gray, see numpy_to_image_fields), stamped ``sec``;
    ``overrides`` replaces fields (to make malformed messages)."""
    from sensor_msgs.msg import Image
    from std_msgs.msg import Header

    fields = numpy_to_image_fields(image, encoding)
    fields.update(overrides or {})
    data = array.array("B")
    data.frombytes(bytes(fields.pop("data")))
    return Image(header=Header(stamp=stamp(sec), frame_id=frame_id), data=data, **fields)


def compressed_message(image_rgb: np.ndarray, sec: int, frame_id: str = "camera", fmt: str = "png") -> Any:
    from sensor_msgs.msg import CompressedImage
    from std_msgs.msg import Header

    ok, encoded = cv2.imencode(f".{fmt}", cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR))
    assert ok
    data = array.array("B")
    data.frombytes(encoded.tobytes())
    return CompressedImage(header=Header(stamp=stamp(sec), frame_id=frame_id), format=fmt, data=data)


def write_random_weights(path: Path, seed: int = 0) -> Path:
    """A random v6 state dict with trained-like score statistics (fast and deterministic)."""
    import torch
    from helpers import random_state_dict

    torch.save(random_state_dict("v6", seed=seed), path)
    return path


def write_params(path: Path, values: dict[str, Any], node: str = "/**") -> Path:
    """A ROS 2 params file for ``node``."""
    import yaml

    path.write_text(yaml.safe_dump({node: {"ros__parameters": values}}))
    return path
