"""What the project's rclpy nodes share: declared parameters with ranges, the managed lifecycle
and the entry point loop.

Lifecycle (both nodes): subclass :class:`ManagedNode` and fill in the four hooks; each raises on
failure (the message is logged and the transition fails, so a supervisor sees it)::

    class MyNode(ManagedNode):
        def __init__(self, **kwargs):
            super().__init__("my_node", PARAMETERS, **kwargs)   # declares PARAMETERS + autostart
        def configure_node(self): ...    # read self.values, load/allocate, create publishers
        def activate_node(self): ...     # create subscriptions, start work
        def deactivate_node(self): ...   # destroy subscriptions, stop work
        def cleanup_node(self): ...      # free what configure_node made

    sys.exit(run_node(MyNode, "my_node", args))

Publishers made with ``create_lifecycle_publisher`` publish only while active (rclpy's own
mechanism). ``autostart`` (parameter, default true) walks unconfigured -> inactive -> active when
:func:`run_node` starts the node (``node.start()``), so plain launch files need no lifecycle
manager; a failed autostart ends the process with the error (exit status 1). With ``autostart:
false`` a supervisor drives the transitions over the standard ``~/change_state`` services, and
``~/transition_event`` reports each one. Shutdown from any state runs the hooks that undo it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import rclpy
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.exceptions import ParameterUninitializedException
from rclpy.executors import ExternalShutdownException
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
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


AUTOSTART = ParameterSpec("autostart", Parameter.Type.BOOL, True, "Walk the lifecycle to active at start-up "
                          "(false: wait for a lifecycle manager's configure and activate).", runtime=False)


class ManagedNode(LifecycleNode):
    """A lifecycle node whose transitions call four hooks (see the module docstring).

    ``self.values``: the declared parameters' values at start-up (declared in the constructor, as
    ROS expects of lifecycle nodes; run-time parameters are read again with ``parameter_value``).
    ``self.last_error``: the message of the last failed transition.
    """

    def __init__(self, name: str, specs: tuple[ParameterSpec, ...], **kwargs: Any):
        super().__init__(name, **kwargs)
        self.values = declare_parameters(self, (*specs, AUTOSTART))
        self.last_error = ""
        self._configured = False
        self._active = False
        self._guard_change_state()

    def _guard_change_state(self) -> None:
        """rclpy raises inside the change_state service for a transition id the current state does not
        have (activate while unconfigured), which ends spin and the node: refuse it instead."""
        service = self._service_change_state
        change = service.callback

        def refuse_invalid(request: Any, response: Any) -> Any:
            try:
                return change(request, response)
            except Exception as error:  # noqa: BLE001 - an invalid request must not end the node
                self.get_logger().warning(f"refused lifecycle transition {request.transition.id} "
                                          f"({request.transition.label or 'no label'}): {error}")
                response.success = False
                return response

        service.callback = refuse_invalid

    # -- hooks for subclasses: raise to fail the transition --------------------------------------
    def configure_node(self) -> None:
        """unconfigured -> inactive: load, allocate, create publishers."""

    def activate_node(self) -> None:
        """inactive -> active: subscribe and start working."""

    def deactivate_node(self) -> None:
        """active -> inactive: stop subscribing and working."""

    def cleanup_node(self) -> None:
        """inactive -> unconfigured: free what configure_node made."""

    # -- rclpy lifecycle callbacks ----------------------------------------------------------------
    def _transition(self, name: str, hook: Callable[[], None]) -> TransitionCallbackReturn:
        try:
            hook()
        except Exception as error:  # noqa: BLE001 - a failed transition reports, the node lives on
            self.last_error = f"{type(error).__name__}: {error}"
            self.get_logger().error(f"{name} failed: {self.last_error}")
            return TransitionCallbackReturn.FAILURE
        return TransitionCallbackReturn.SUCCESS

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        result = self._transition("configure", self.configure_node)
        self._configured = result == TransitionCallbackReturn.SUCCESS
        if not self._configured:  # leave nothing half-made behind: cleanup must cope with that
            self._transition("cleanup after the failed configure", self.cleanup_node)
        return result

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        result = self._transition("activate", self.activate_node)
        if result != TransitionCallbackReturn.SUCCESS:
            self._transition("deactivate after the failed activate", self.deactivate_node)
            return result
        self._active = True
        return super().on_activate(state)  # enables the lifecycle publishers

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        super().on_deactivate(state)
        self._active = False
        return self._transition("deactivate", self.deactivate_node)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._configured = False
        return self._transition("cleanup", self.cleanup_node)

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._wind_down()
        return TransitionCallbackReturn.SUCCESS

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._wind_down()
        return TransitionCallbackReturn.SUCCESS

    def _wind_down(self) -> None:
        if self._active:
            self._active = False
            self._transition("deactivate", self.deactivate_node)
        if self._configured:
            self._configured = False
            self._transition("cleanup", self.cleanup_node)

    @property
    def is_active(self) -> bool:
        return self._active

    def start(self) -> None:
        """With ``autostart``: configure and activate now; RuntimeError (the hook's message) on failure."""
        if not self.values["autostart"]:
            self.get_logger().info("autostart is false: waiting for configure and activate (lifecycle services)")
            return
        for trigger in (self.trigger_configure, self.trigger_activate):
            if trigger() != TransitionCallbackReturn.SUCCESS:
                raise RuntimeError(self.last_error or "lifecycle transition failed")

    def shutdown(self) -> None:
        """Undo whatever state the node is in (hooks), then destroy it."""
        self._wind_down()
        self.destroy_node()


def check_qos_overrides(node: Node) -> None:
    """Refuse ``qos_overrides.*`` parameters that no publisher or subscription declared.

    Call after the node made its entities with ``QoSOverridingOptions`` (rclpy declares the
    overridable policies then); an override for another topic or policy would otherwise be silently
    ignored. ValueError names them and the ones that exist.
    """
    given = getattr(node, "_parameter_overrides", {})  # rclpy keeps the overrides here (no public API)
    unused = sorted(n for n in given if n.startswith("qos_overrides.") and not node.has_parameter(n))
    if unused:
        declared = sorted(n for n in node._parameters if n.startswith("qos_overrides."))  # noqa: SLF001
        raise ValueError(f"qos_overrides {unused} match no topic or policy of {node.get_name()} "
                         f"(overridable: {declared})")


def run_node(factory: Callable[[], Node], name: str, args: list[str] | None = None) -> int:
    """Spin the node ``factory()`` builds until Ctrl-C (exit status 0) or a start-up error, which is
    logged as fatal (exit status 1): a bad weights file, device or parameter value. A
    :class:`ManagedNode` is started first (``autostart``)."""
    rclpy.init(args=args)
    node = None
    status = 0
    try:
        node = factory()
        if isinstance(node, ManagedNode):
            node.start()
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
