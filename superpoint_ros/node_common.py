"""What the project's rclpy nodes share: declared parameters with ranges, and the entry point loop."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import rclpy
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.exceptions import ParameterUninitializedException
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


def declare_parameters(node: Node, specs: tuple[ParameterSpec, ...]) -> dict[str, Any]:
    """Declare ``specs`` on ``node`` and return their values (None: declared without a value).

    An unknown name in the params file or on the command line is an error, never ignored; so is a
    value outside a parameter's ``choices``.
    """
    known = {spec.name for spec in specs}
    given = getattr(node, "_parameter_overrides", {})  # rclpy keeps the overrides here (no public API)
    unknown = sorted(
        n for n in given
        if n not in known | {"use_sim_time", "start_type_description_service"} and not n.startswith("qos_overrides.")
    )
    if unknown:
        raise ValueError(f"unknown parameter(s) {unknown} for {node.get_name()} (known: {sorted(known)})")
    for spec in specs:
        node.declare_parameter(spec.name, spec.default if spec.default is not None else spec.type, spec.descriptor())
    values = {spec.name: parameter_value(node, spec.name) for spec in specs}
    for spec in specs:
        if spec.choices and values[spec.name] is not None and values[spec.name] not in spec.choices:
            raise ValueError(f"parameter {spec.name}: {values[spec.name]!r} is not one of {spec.choices}")
    return values


def parameter_value(node: Node, name: str) -> Any:
    """A declared parameter's value, None when it was declared without one."""
    try:
        return node.get_parameter(name).value
    except ParameterUninitializedException:
        return None


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
