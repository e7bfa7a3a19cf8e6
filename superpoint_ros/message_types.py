"""The package's message definitions as text, for tools that need the types without a ROS build.

The colcon build installs ``msg/*.msg`` as ``superpoint_ros/msg_definitions/`` (CMakeLists.txt) and
``pip install .`` copies them there too (setup.py); a source checkout falls back to the
repository's ``msg/`` folder. rosbags registers the types from that text::

    from rosbags.typesys import Stores, get_typestore
    typestore = get_typestore(Stores.ROS2_JAZZY)
    register_rosbags_types(typestore)
    Features = typestore.types["superpoint_ros/msg/Features"]
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

PACKAGE = "superpoint_ros"
_HERE = Path(__file__).resolve().parent


def definitions_dir() -> Path:
    """The folder holding the ``.msg`` files: installed package data first, then the repository's msg/."""
    for folder in (_HERE / "msg_definitions", _HERE.parent / "msg"):
        if folder.is_dir() and any(folder.glob("*.msg")):
            return folder
    raise FileNotFoundError(
        f"no .msg definitions found in {_HERE / 'msg_definitions'} (installed package data) "
        f"or {_HERE.parent / 'msg'} (source checkout): reinstall the package"
    )


def message_definitions() -> dict[str, str]:
    """``{"superpoint_ros/msg/Features": <.msg text>, ...}`` for every message of the package."""
    folder = definitions_dir()
    return {f"{PACKAGE}/msg/{path.stem}": path.read_text(encoding="utf-8") for path in sorted(folder.glob("*.msg"))}


def register_rosbags_types(typestore: Any) -> dict[str, Any]:
    """Register the package's messages with a rosbags typestore; returns the registered definitions."""
    from rosbags.typesys import get_types_from_msg

    types: dict[str, Any] = {}
    for name, text in message_definitions().items():
        types.update(get_types_from_msg(text, name))
    typestore.register(types)
    return types
