"""The one features file layout (HDF5 and npz): round trips, metadata, keys and bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from superpoint_training import Features
from superpoint_training.common.feature_io import FORMAT_NAME, FeatureFileError, FeatureStore


def _features(n: int, dim: int = 8, seed: int = 0, valid: np.ndarray | None = None) -> Features:
    rng = np.random.default_rng(seed)
    descriptors = rng.normal(size=(n, dim)).astype(np.float32)
    descriptors /= np.maximum(np.linalg.norm(descriptors, axis=1, keepdims=True), 1e-12)
    return Features(
        keypoints=rng.uniform(0, 100, size=(n, 2)).astype(np.float32),
        scores=np.sort(rng.uniform(0, 1, size=n).astype(np.float32))[::-1].copy(),
        descriptors=descriptors,
        image_size=(120, 160),
        valid=valid,
    )


@pytest.mark.parametrize("suffix", [".h5", ".npz"])
def test_round_trip_with_metadata_and_nested_keys(tmp_path, suffix):
    path = tmp_path / f"features{suffix}"
    first, second = _features(5), _features(0, seed=1)
    config = {"nms_radius": 4, "detection_threshold": 0.005}
    with FeatureStore.open(path, "w", weights="v6 weights from test", config=config) as store:
        store.write("a.png", first, source="/data/a.png", stamp=12)
        store.write("seq/b.png", second)
    with FeatureStore.open(path) as store:
        assert store.keys() == ["a.png", "seq/b.png"]
        assert "seq/b.png" in store and "seq" not in store and len(store) == 2
        meta = store.metadata
        assert meta["format"] == FORMAT_NAME and meta["version"] == 1
        assert meta["weights"] == "v6 weights from test" and meta["config"] == config
        got = store.read("a.png")
        np.testing.assert_array_equal(got.keypoints, first.keypoints)
        np.testing.assert_array_equal(got.scores, first.scores)
        np.testing.assert_array_equal(got.descriptors, first.descriptors)
        assert got.image_size == (120, 160) and got.valid is None
        assert store.read_attrs("a.png") == {"source": "/data/a.png", "stamp": 12}
        empty = store.read("seq/b.png")
        assert empty.keypoints.shape == (0, 2) and empty.descriptors.shape == (0, 8)
        with pytest.raises(KeyError, match="nope"):
            store.read("nope")
        with pytest.raises(ValueError, match="read-only"):
            store.write("c", first)


@pytest.mark.parametrize("suffix", [".h5", ".npz"])
def test_append_float16_torch_and_fixed_k(tmp_path, suffix):
    path = tmp_path / f"features{suffix}"
    with FeatureStore.open(path, "w", descriptor_dtype="float16") as store:
        store.write("one", _features(3))
    valid = np.array([True, True, True, False])
    fixed = _features(4, valid=valid)
    torch_features = Features(*(torch.from_numpy(np.asarray(a)) for a in (fixed.keypoints, fixed.scores,
                                                                          fixed.descriptors)),
                              image_size=(120, 160), valid=torch.from_numpy(valid))
    with FeatureStore.open(path, "a") as store:
        assert store.descriptor_dtype == "float16"
        store.write("two", torch_features)
        store.write("one", _features(2))  # replaces
    with FeatureStore.open(path) as store:
        assert store.keys() == ["one", "two"]
        assert len(store.read("one")) == 2
        two = store.read("two")
        assert len(two) == 3, "only the valid entries of fixed-K features are stored"
        assert two.descriptors.dtype == np.float32
        np.testing.assert_allclose(two.descriptors, fixed.descriptors[:3], atol=1e-3)


def test_detector_only_features(tmp_path):
    path = tmp_path / "f.h5"
    features = Features(np.zeros((3, 2), np.float32), np.ones(3, np.float32), np.zeros((3, 0), np.float32), (8, 8))
    with FeatureStore.open(path, "w") as store:
        store.write("x", features)
    with FeatureStore.open(path) as store:
        assert store.read("x").descriptors.shape == (3, 0)


def test_bad_input(tmp_path):
    with pytest.raises(FeatureFileError, match="unknown features file type"):
        FeatureStore.open(tmp_path / "f.txt", "w")
    with pytest.raises(FileNotFoundError, match="missing.h5"):
        FeatureStore.open(tmp_path / "missing.h5")
    with FeatureStore.open(tmp_path / "f.h5", "w") as store:
        for key in ("", "a//b", "../x", "x/keypoints"):
            with pytest.raises(FeatureFileError, match="bad feature key"):
                store.write(key, _features(1))
        with pytest.raises(FeatureFileError, match="reserved"):
            store.write("ok", _features(1), image_size=3)
        with pytest.raises(FeatureFileError, match="'meta'"):
            store.write("ok", _features(1), meta={"a": 1})
    import h5py

    with h5py.File(tmp_path / "other.h5", "w") as other:
        other.attrs["format"] = "something else"
    with pytest.raises(FeatureFileError, match="other.h5.*something else"):
        FeatureStore.open(tmp_path / "other.h5")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(FeatureFileError, match="junk.npz"):
        FeatureStore.open(tmp_path / "junk.npz")
