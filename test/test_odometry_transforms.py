"""superpoint_training.odometry.transforms: quaternion maths against OpenCV's Rodrigues, and static chains composed
hop by hop (no ROS needed)."""

from __future__ import annotations

import types

import cv2
import numpy as np
import pytest

from superpoint_training.odometry.transforms import (
    StaticTree,
    invert,
    make_transform,
    matrix_to_quaternion,
    quaternion_to_matrix,
    rotation_vector,
)


def rodrigues(v) -> np.ndarray:
    return cv2.Rodrigues(np.asarray(v, np.float64))[0]


def transform_msg(parent: str, child: str, T: np.ndarray):
    """A geometry_msgs/TransformStamped look-alike."""
    x, y, z, w = matrix_to_quaternion(T[:3, :3])
    vec = types.SimpleNamespace
    return vec(
        header=vec(frame_id=parent),
        child_frame_id=child,
        transform=vec(translation=vec(x=T[0, 3], y=T[1, 3], z=T[2, 3]), rotation=vec(x=x, y=y, z=z, w=w)),
    )


def test_quaternions_and_rotation_vectors_agree_with_rodrigues():
    rng = np.random.default_rng(0)
    vectors = [rng.normal(size=3) * s for s in (1e-9, 0.01, 0.5, 2.0, 3.0)]
    vectors += [np.array([np.pi - 1e-6, 0, 0]), np.array([0, 0, np.pi]), np.array([1, 1, 0]) / np.sqrt(2) * np.pi]
    for v in vectors:
        R = rodrigues(v)
        q = matrix_to_quaternion(R)
        assert q[3] >= 0 and np.linalg.norm(q) == pytest.approx(1.0)
        np.testing.assert_allclose(quaternion_to_matrix(*q), R, atol=1e-9)
        w = rotation_vector(R)
        np.testing.assert_allclose(rodrigues(w), R, atol=1e-7)  # same rotation (v and -v are one at pi)
        if np.linalg.norm(v) < 3.0:
            np.testing.assert_allclose(w, v, atol=1e-7)
    # a quarter turn about z, written by hand: x -> y
    np.testing.assert_allclose(quaternion_to_matrix(0, 0, np.sin(np.pi / 4), np.cos(np.pi / 4)) @ [1, 0, 0], [0, 1, 0],
                               atol=1e-12)
    with pytest.raises(ValueError, match="no rotation"):
        quaternion_to_matrix(0, 0, 0, 0)


def test_static_chain_composes_hop_by_hop():
    T_base_link = make_transform((0.2, 0.0, 0.5), rodrigues([0, 0.1, 0]))
    T_link_optical = make_transform((0.0, 0.03, 0.0), rodrigues([-np.pi / 2, 0, 0]) @ rodrigues([0, 0, -np.pi / 2]))
    T_base_wheel = make_transform((-0.3, 0.2, 0.1))
    tree = StaticTree()
    for parent, child, T in (("base_link", "camera_link", T_base_link), ("/camera_link", "camera_optical", T_link_optical),
                             ("base_link", "wheel", T_base_wheel)):
        assert tree.add_message(types.SimpleNamespace(transforms=[transform_msg(parent, child, T)])) == []
    expected = T_base_link @ T_link_optical
    np.testing.assert_allclose(tree.lookup("base_link", "camera_optical"), expected, atol=1e-12)
    np.testing.assert_allclose(tree.lookup("camera_optical", "base_link"), invert(expected), atol=1e-12)
    # across a common ancestor: wheel -> base_link -> camera_link -> camera_optical
    np.testing.assert_allclose(tree.lookup("wheel", "camera_optical"), invert(T_base_wheel) @ expected, atol=1e-12)
    np.testing.assert_allclose(tree.lookup("base_link", "base_link"), np.eye(4))
    assert tree.lookup("base_link", "elsewhere") is None and tree.lookup("odom", "camera_optical") is None
    assert tree.chain("base_link", "camera_optical") == ["camera_optical", "camera_link", "base_link"]
    assert tree.parent_of("camera_link") == "base_link" and tree.parent_of("base_link") is None
    # a second parent for a frame is recorded (the latest wins, as in tf2's buffer)
    tree.add("map", "camera_link", np.eye(4))
    assert tree.reparented == ["camera_link: base_link -> map"] and tree.lookup("base_link", "camera_optical") is None
    bad = transform_msg("a", "b", np.eye(4))
    bad.transform.rotation.w = 0.0
    assert "no rotation" in tree.add_message(types.SimpleNamespace(transforms=[bad]))[0]
