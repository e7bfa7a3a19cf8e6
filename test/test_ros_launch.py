"""launch/detector.launch.py: the command line it describes starts the built node, which serves features.

``launch`` and ``launch_ros`` do not install from PyPI, so the test gives the launch file minimal
stand-ins for the six classes it uses. They only record the arguments and turn them into a command
line the way launch_ros does (executable from the package's lib folder via the ament index,
``--ros-args``, ``-r __node:=``/``-r __ns:=``, one ``--params-file`` per parameters entry with dicts
written to a temporary YAML file, ``-r from:=to`` per remapping). The installed launch file is
evaluated, and that command line is started and must deliver features.
"""

from __future__ import annotations

import importlib.util
import sys
import time
import types
from pathlib import Path

import pytest
import yaml
from ros_fixtures import (
    PACKAGE_PREFIX,
    NodeProcess,
    RosHarness,
    image_message,
    node_environment,
    require_built_package,
)

pytestmark = pytest.mark.ros
LAUNCH_FILE = PACKAGE_PREFIX / "share" / "superpoint_ros" / "launch" / "detector.launch.py"


class _Substitution:
    def perform(self, context: dict) -> str:  # pragma: no cover - overridden
        raise NotImplementedError


def _perform(value, context: dict) -> str:
    if isinstance(value, _Substitution):
        return value.perform(context)
    if isinstance(value, (list, tuple)):
        return "".join(_perform(v, context) for v in value)
    return str(value)


class LaunchConfiguration(_Substitution):
    def __init__(self, name: str):
        self.name = name

    def perform(self, context: dict) -> str:
        return context[self.name]


class PathJoinSubstitution(_Substitution):
    def __init__(self, parts: list):
        self.parts = parts

    def perform(self, context: dict) -> str:
        return str(Path(*[_perform(p, context) for p in self.parts]))


class FindPackageShare(_Substitution):
    def __init__(self, package: str):
        self.package = package

    def perform(self, context: dict) -> str:
        from ament_index_python.packages import get_package_share_directory

        return get_package_share_directory(self.package)


class DeclareLaunchArgument:
    def __init__(self, name: str, default_value=None, description: str = ""):
        self.name, self.default_value, self.description = name, default_value, description


class OpaqueFunction:
    """launch's OpaqueFunction: ``function(context)`` returns actions; arguments are in
    ``context.launch_configurations`` (all strings)."""

    def __init__(self, *, function, args=None, kwargs=None):
        self.function, self.args, self.kwargs = function, list(args or []), dict(kwargs or {})

    def execute(self, context: dict) -> list:
        launch_context = types.SimpleNamespace(launch_configurations=dict(context))
        return list(self.function(launch_context, *self.args, **self.kwargs) or [])


class Node:
    def __init__(self, *, package, executable, name=None, namespace=None, parameters=(), remappings=(),
                 condition=None, **other):
        self.package, self.executable, self.name, self.namespace = package, executable, name, namespace
        self.parameters, self.remappings, self.other = list(parameters), list(remappings), other
        self.condition = condition

    def command(self, context: dict, tmp_path: Path) -> list[str]:
        """The command line launch_ros builds for this node."""
        from ament_index_python.packages import get_package_prefix

        executable = Path(get_package_prefix(self.package)) / "lib" / self.package / self.executable
        command = [str(executable), "--ros-args"]
        if self.name is not None:
            command += ["-r", f"__node:={_perform(self.name, context)}"]
        if self.namespace is not None:
            namespace = _perform(self.namespace, context)
            command += ["-r", f"__ns:=/{namespace.strip('/')}"]
        for index, entry in enumerate(self.parameters):
            if isinstance(entry, dict):  # launch_ros evaluates values as YAML and writes a file
                values = {k: yaml.safe_load(_perform(v, context)) for k, v in entry.items()}
                tmp_path.mkdir(parents=True, exist_ok=True)
                path = tmp_path / f"launch_params_{index}.yaml"
                path.write_text(yaml.safe_dump({"/**": {"ros__parameters": values}}))
                command += ["--params-file", str(path)]
            else:
                command += ["--params-file", _perform(entry, context)]
        for source, target in self.remappings:
            command += ["-r", f"{_perform(source, context)}:={_perform(target, context)}"]
        return command


class LaunchDescription:
    def __init__(self, entities: list):
        self.entities = list(entities)

    def commands(self, arguments: dict[str, str], tmp_path: Path) -> dict[str, list[str]]:
        """Evaluate like `ros2 launch ... name:=value` (unknown arguments are an error, as in launch):
        the command line of every node whose condition holds, by executable."""
        declared = {e.name: e for e in self.entities if isinstance(e, DeclareLaunchArgument)}
        unknown = set(arguments) - set(declared)
        assert not unknown, f"not declared by the launch file: {unknown}"
        context: dict[str, str] = {}
        for name, declaration in declared.items():
            context[name] = arguments.get(name, _perform(declaration.default_value, context))
        nodes = [e for e in self.entities if isinstance(e, Node)]
        for entity in self.entities:
            if isinstance(entity, OpaqueFunction):
                nodes += [e for e in entity.execute(context) if isinstance(e, Node)]
        return {
            node.executable: node.command(context, tmp_path / node.executable)
            for node in nodes
            if node.condition is None or node.condition.evaluate(context)
        }

    def command(self, arguments: dict[str, str], tmp_path: Path) -> list[str]:
        """The detector node's command line."""
        return self.commands(arguments, tmp_path)["detector_node"]


@pytest.fixture()
def launch_description(monkeypatch) -> LaunchDescription:
    require_built_package()
    modules = {
        "launch": {"LaunchDescription": LaunchDescription},
        "launch.actions": {"DeclareLaunchArgument": DeclareLaunchArgument, "OpaqueFunction": OpaqueFunction},
        "launch.substitutions": {"LaunchConfiguration": LaunchConfiguration, "PathJoinSubstitution": PathJoinSubstitution},
        "launch_ros": {},
        "launch_ros.actions": {"Node": Node},
        "launch_ros.substitutions": {"FindPackageShare": FindPackageShare},
    }
    for name, members in modules.items():
        module = types.ModuleType(name)
        module.__dict__.update(members)
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.setenv("AMENT_PREFIX_PATH", node_environment()["AMENT_PREFIX_PATH"])
    spec = importlib.util.spec_from_file_location("detector_launch", LAUNCH_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.generate_launch_description()


def test_launch_file_arguments_and_command(launch_description, tmp_path):
    declared = {e.name: e for e in launch_description.entities if isinstance(e, DeclareLaunchArgument)}
    assert set(declared) == {"image", "features", "namespace", "params_file", "device", "use_sim_time", "tracker",
                             "camera_info", "tracks", "odometry", "tracker_params_file", "weights", "transport",
                             "publish_debug_image", "cameras", "require_gpu", "sync", "use_camera_info", "autostart"}
    assert all(d.description for d in declared.values())
    command = launch_description.command({}, tmp_path)
    share = PACKAGE_PREFIX / "share" / "superpoint_ros"
    assert command[:2] == [str(PACKAGE_PREFIX / "lib" / "superpoint_ros" / "detector_node"), "--ros-args"]
    assert Path(command[0]).exists()
    params_files = [command[i + 1] for i, c in enumerate(command) if c == "--params-file"]
    # nothing given: the params file alone decides (no launch default overrides it)
    assert params_files == [str(share / "config" / "detector.yaml")] and Path(params_files[0]).exists()
    assert "image:=image" in command and "features:=features" in command and "__node:=superpoint_detector" in command


def test_only_given_arguments_override_the_params_file(launch_description, tmp_path):
    """Each parameter argument given reaches the node with its YAML type; the rest stay the file's."""
    from superpoint_ros.detector_node import SPECS

    given = {"weights": "untrained", "device": "cpu", "transport": "compressed", "publish_debug_image": "true",
             "cameras": "[left, right]", "require_gpu": "true", "sync": "exact", "use_camera_info": "true"}
    command = launch_description.command({**given, "params_file": "/robot/my_detector.yaml"}, tmp_path)
    params_files = [command[i + 1] for i, c in enumerate(command) if c == "--params-file"]
    assert params_files[0] == "/robot/my_detector.yaml"
    overrides = yaml.safe_load(Path(params_files[1]).read_text())["/**"]["ros__parameters"]
    assert overrides == {"weights": "untrained", "device": "cpu", "transport": "compressed",
                         "publish_debug_image": True, "cameras": ["left", "right"], "require_gpu": True,
                         "sync": "exact", "camera_info": True}
    assert set(overrides) <= set(SPECS)  # every argument names a real parameter
    # one argument given: only that one
    command = launch_description.command({"transport": "both"}, tmp_path / "one")
    params_files = [command[i + 1] for i, c in enumerate(command) if c == "--params-file"]
    assert yaml.safe_load(Path(params_files[1]).read_text())["/**"]["ros__parameters"] == {"transport": "both"}


def test_tracker_starts_only_when_asked(launch_description, tmp_path):
    assert set(launch_description.commands({}, tmp_path)) == {"detector_node"}
    commands = launch_description.commands(
        {"tracker": "true", "features": "/cam/features", "camera_info": "/cam/camera_info"}, tmp_path
    )
    tracker = commands["tracker_node"]
    assert Path(tracker[0]) == PACKAGE_PREFIX / "lib" / "superpoint_ros" / "tracker_node" and Path(tracker[0]).exists()
    assert "features:=/cam/features" in tracker and "camera_info:=/cam/camera_info" in tracker
    assert "features:=/cam/features" in commands["detector_node"]
    params_files = [tracker[i + 1] for i, c in enumerate(tracker) if c == "--params-file"]
    assert params_files[0] == str(PACKAGE_PREFIX / "share" / "superpoint_ros" / "config" / "tracker.yaml")
    assert Path(params_files[0]).exists()


def test_launch_command_starts_the_node_and_serves_features(launch_description, tmp_path, photo_rgb):
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image

    from superpoint_ros.msg import Features

    arguments = {
        "namespace": "launch_test",
        "image": "/launch_test/camera/image_raw",
        "features": "/launch_test/camera/features",
        "device": "cpu",
    }
    command = launch_description.command(arguments, tmp_path)
    node = NodeProcess(command)
    harness = RosHarness("launch_test_client")
    try:
        received = harness.collect(Features, "/launch_test/camera/features")
        publisher = harness.node.create_publisher(Image, "/launch_test/camera/image_raw", qos_profile_sensor_data)
        harness.wait_for_subscribers(publisher, timeout=60.0)
        bgr_photo = image_message(photo_rgb, "bgr8", sec=1234, frame_id="launch_cam")
        deadline = time.monotonic() + 60.0
        while not received and time.monotonic() < deadline:  # the first frame may beat the subscription match
            publisher.publish(bgr_photo)
            try:
                harness.wait_for(lambda: bool(received), timeout=2.0, what="features")
            except AssertionError:
                pass
        assert received, node.output
        message = received[0]
        assert message.header.stamp.sec == 1234 and message.header.frame_id == "launch_cam"
        assert (message.height, message.width) == photo_rgb.shape[:2]
        assert 0 < len(message.scores) <= 1000  # max_keypoints of config/detector.yaml
        assert "/launch_test/superpoint_detector" in _node_names(harness)
        assert node.interrupt() == 0, node.output
        assert "Traceback" not in node.output, node.output
    finally:
        harness.close()
        node.stop()


def _node_names(harness: RosHarness) -> list[str]:
    return [f"{ns.rstrip('/')}/{name}" for name, ns in harness.node.get_node_names_and_namespaces()]


def test_launch_file_is_plain_python():
    """The launch file uses nothing beyond the six launch classes (so the stand-ins cover it)."""
    source = (Path(__file__).resolve().parents[1] / "launch" / "detector.launch.py").read_text()
    imports = [line for line in source.splitlines() if line.startswith(("import ", "from "))]
    assert sorted(imports) == [
        "from launch import LaunchDescription",
        "from launch.actions import DeclareLaunchArgument, OpaqueFunction",
        "from launch.substitutions import LaunchConfiguration, PathJoinSubstitution",
        "from launch_ros.actions import Node",
        "from launch_ros.substitutions import FindPackageShare",
    ]
