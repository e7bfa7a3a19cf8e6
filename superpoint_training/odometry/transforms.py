"""Rigid transforms and a static transform tree, without tf2 (tf2_ros has no PyPI wheel).

A transform ``T_a_b`` is a 4x4 matrix that maps points from frame ``b`` to frame ``a``
(``x_a = T_a_b @ x_b``): the pose of ``b`` in ``a``, as a ``geometry_msgs/TransformStamped`` with
``header.frame_id = a`` and ``child_frame_id = b`` carries it. Quaternions are (x, y, z, w), the
order of ``geometry_msgs/Quaternion``.

:class:`StaticTree` keeps what arrives on ``/tf_static`` (each child frame has one parent; the latest
message for a child wins, as in tf2's buffer) and composes the chain between any two connected
frames. No ROS import here: the node passes message objects (or anything with their field names).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np

__all__ = [
    "quaternion_to_matrix",
    "matrix_to_quaternion",
    "make_transform",
    "invert",
    "rotation_vector",
    "StaticTree",
    "transform_from_message",
]


def quaternion_to_matrix(qx: float, qy: float, qz: float, qw: float) -> np.ndarray:
    """Unit quaternion (normalised here) -> 3x3 rotation matrix."""
    q = np.array([qx, qy, qz, qw], np.float64)
    norm = np.linalg.norm(q)
    if not np.isfinite(norm) or norm < 1e-12:
        raise ValueError(f"quaternion {tuple(q)} has no rotation (zero or non-finite norm)")
    x, y, z, w = q / norm
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])


def matrix_to_quaternion(R: np.ndarray) -> tuple[float, float, float, float]:
    """3x3 rotation matrix -> unit quaternion (x, y, z, w) with w >= 0."""
    m = np.asarray(R, np.float64)
    trace = m[0, 0] + m[1, 1] + m[2, 2]
    if trace > 0:
        s = 2.0 * math.sqrt(trace + 1.0)
        q = ((m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s, 0.25 * s)
    else:  # Shepperd's method: divide by the largest diagonal term
        i = int(np.argmax(np.diag(m)))
        j, k = (i + 1) % 3, (i + 2) % 3
        s = 2.0 * math.sqrt(max(1.0 + m[i, i] - m[j, j] - m[k, k], 1e-12))
        v = [0.0, 0.0, 0.0]
        v[i] = 0.25 * s
        v[j] = (m[j, i] + m[i, j]) / s
        v[k] = (m[k, i] + m[i, k]) / s
        q = (*v, (m[k, j] - m[j, k]) / s)
    norm = math.sqrt(sum(c * c for c in q))
    x, y, z, w = (c / norm for c in q)
    return (-x, -y, -z, -w) if w < 0 else (x, y, z, w)


def make_transform(translation: Iterable[float] = (0.0, 0.0, 0.0), rotation: np.ndarray | None = None) -> np.ndarray:
    """4x4 transform from a translation and a 3x3 rotation (identity when None)."""
    T = np.eye(4)
    if rotation is not None:
        T[:3, :3] = rotation
    T[:3, 3] = np.asarray(list(translation), np.float64)
    return T


def invert(T: np.ndarray) -> np.ndarray:
    """Inverse of a rigid 4x4 transform."""
    R, t = T[:3, :3], T[:3, 3]
    return make_transform(-R.T @ t, R.T)


def rotation_vector(R: np.ndarray) -> np.ndarray:
    """Axis times angle (radians) of a rotation matrix: the logarithm map, robust near 0 and pi."""
    R = np.asarray(R, np.float64)
    cos = float(np.clip((np.trace(R) - 1.0) / 2.0, -1.0, 1.0))
    angle = math.acos(cos)
    axis = np.array([R[2, 1] - R[1, 2], R[0, 2] - R[2, 0], R[1, 0] - R[0, 1]])
    if angle < 1e-7:
        return 0.5 * axis  # first order: sin(angle) ~ angle
    if math.pi - angle < 1e-4:  # near a half turn the antisymmetric part vanishes: use the diagonal
        k = int(np.argmax(np.diag(R)))
        v = R[:, k] + np.eye(3)[k]
        v /= np.linalg.norm(v)
        return angle * v
    return angle / (2.0 * math.sin(angle)) * axis


def _frame(name: str) -> str:
    return str(name).lstrip("/")  # tf2 drops a leading slash


def transform_from_message(msg: Any) -> tuple[str, str, np.ndarray]:
    """``geometry_msgs/TransformStamped`` (or any object with its fields) -> (parent, child, T_parent_child)."""
    t, q = msg.transform.translation, msg.transform.rotation
    T = make_transform((t.x, t.y, t.z), quaternion_to_matrix(q.x, q.y, q.z, q.w))
    if not np.all(np.isfinite(T)):
        raise ValueError(f"transform {msg.header.frame_id} -> {msg.child_frame_id} is not finite")
    return _frame(msg.header.frame_id), _frame(msg.child_frame_id), T


class StaticTree:
    """Static transforms (parent -> child), one parent per child; :meth:`lookup` composes chains."""

    def __init__(self) -> None:
        self._parent: dict[str, tuple[str, np.ndarray]] = {}
        self.reparented: list[str] = []  # "child: old -> new", when a message changed a child's parent

    def __len__(self) -> int:
        return len(self._parent)

    def add(self, parent: str, child: str, T_parent_child: np.ndarray) -> None:
        parent, child = _frame(parent), _frame(child)
        if not parent or not child or parent == child:
            raise ValueError(f"invalid static transform {parent!r} -> {child!r}")
        old = self._parent.get(child)
        if old is not None and old[0] != parent:
            self.reparented.append(f"{child}: {old[0]} -> {parent}")
        self._parent[child] = (parent, np.asarray(T_parent_child, np.float64))

    def add_message(self, msg: Any) -> list[str]:
        """Add every transform of a ``tf2_msgs/TFMessage``; returns one line per transform it could not use."""
        problems = []
        for transform in msg.transforms:
            try:
                self.add(*transform_from_message(transform))
            except ValueError as error:
                problems.append(str(error))
        return problems

    def parent_of(self, frame: str) -> str | None:
        entry = self._parent.get(_frame(frame))
        return entry[0] if entry else None

    def _ancestors(self, frame: str) -> list[str]:
        """``frame`` and its parents up to the root."""
        chain = [frame]
        while frame in self._parent:
            frame = self._parent[frame][0]
            if frame in chain:
                raise ValueError(f"static transforms form a loop through {frame!r}")
            chain.append(frame)
        return chain

    def lookup(self, target: str, source: str) -> np.ndarray | None:
        """T_target_source through the tree (pose of ``source`` in ``target``), None when not connected."""
        target, source = _frame(target), _frame(source)
        source_chain = self._ancestors(source)
        target_chain = set(self._ancestors(target))
        common = next((f for f in source_chain if f in target_chain), None)
        if common is None:
            return None
        T_root_source = self._up_to(source, common)
        T_root_target = self._up_to(target, common)
        return invert(T_root_target) @ T_root_source

    def _up_to(self, frame: str, ancestor: str) -> np.ndarray:
        T = np.eye(4)
        while frame != ancestor:
            parent, T_parent_frame = self._parent[frame]
            T = T_parent_frame @ T
            frame = parent
        return T

    def chain(self, target: str, source: str) -> list[str]:
        """The frames from ``source`` up to ``target`` when ``target`` is an ancestor (else empty)."""
        frames = self._ancestors(_frame(source))
        target = _frame(target)
        return frames[: frames.index(target) + 1] if target in frames else []
