"""What the project's rclpy nodes share: declared parameters with ranges, and the entry point loop."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import rclpy
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.executors import ExternalShutdownException
from rclpy.logging import get_logger
from rclpy.node import Node
from rclpy.parameter import Parameter


@dataclass(frozen=True)
class ParameterSpec:
    """One node parameter: default (None: taken from the weights after loading), range, runtime."""

    name: str
    type: Parameter.Type
    default: Any
    description: str
    range: tuple[float, float] | None = None
    choices: tuple[str, ...] = ()
    runtime: bool = True

    def descriptor(self) -> ParameterDescriptor:
        text = self.description + (f" One of: {', '.join(self.choices)}." if self.choices else "")
        descriptor = ParameterDescriptor(description=text, read_only=not self.runtime)
        if self.range is not None and self.type == Parameter.Type.INTEGER:
            descriptor.integer_range = [IntegerRange(from_value=int(self.range[0]), to_value=int(self.range[1]), step=1)]
        elif self.range is not None:
            descriptor.floating_point_range = [
                FloatingPointRange(from_value=float(self.range[0]), to_value=float(self.range[1]), step=0.0)
            ]
        if self.choices:
            descriptor.additional_constraints = f"one of {list(self.choices)}"
        return descriptor


def run_node(factory: Callable[[], Node], name: str, args: list[str] | None = None) -> int:
    """Spin the node ``factory()`` builds until Ctrl-C (exit status 0) or a start-up error, which is
    logged as fatal (exit status 1): a bad weights file, device or parameter value."""
    rclpy.init(args=args)
    node = None
    status = 0
    try:
        node = factory()
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except Exception as error:  # noqa: BLE001 - any start-up failure ends the process with its message
        get_logger(name).fatal(f"{type(error).__name__}: {error}")
        status = 1
    finally:
        if node is not None:
            getattr(node, "shutdown", node.destroy_node)()
        rclpy.try_shutdown()
    return status
