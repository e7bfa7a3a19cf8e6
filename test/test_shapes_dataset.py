"""Synthetic Shapes cache and Dataset: layout, reuse, corrupt entries regenerated, items, config errors, CLI."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch

from superpoint_training import build_synthetic_shapes
from superpoint_training.common.config import ConfigError
from superpoint_training.data import shapes_dataset as ds
from superpoint_training.data.shapes_dataset import SyntheticShapes, generate_image, generate_synthetic_shapes

TINY = {
    "primitives": ["draw_polygon", "draw_ellipses", "draw_checkerboard"],
    "truncate": {"draw_ellipses": 0.5},
    "validation_size": 3,
    "generation": {"split_sizes": {"training": 4, "validation": 2, "test": 2}, "image_size": [240, 320]},
    "preprocessing": {"resize": [64, 80], "blur_size": 7},
}


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    root = tmp_path_factory.mktemp("shapes")
    return root, generate_synthetic_shapes(TINY, root=root, workers=2, progress=False)


def test_layout_and_markers(cache):
    root, directory = cache
    assert directory.parent == root and directory.name.startswith("v6_")
    for primitive in TINY["primitives"]:
        for split, size in TINY["generation"]["split_sizes"].items():
            path = directory / f"{primitive}_{split}.npz"
            images, keypoints, offsets = ds.load_entry(path)
            assert images.shape == (size, 64, 80) and images.dtype == np.uint8
            assert keypoints.dtype == np.float32 and offsets[-1] == len(keypoints)
            assert json.loads(path.with_name(path.name + ".sha256").read_text())["size"] == path.stat().st_size
    assert json.loads((directory / "config.json").read_text())["preprocessing"]["resize"] == [64, 80]


def test_content_matches_generate_image_and_ignores_worker_count(cache, tmp_path):
    _, directory = cache
    images, keypoints, offsets = ds.load_entry(directory / "draw_polygon_validation.npz")
    config = ds.merge_config(TINY)
    image, points = generate_image("draw_polygon", ds.image_seed(0, "draw_polygon", "validation", 1), config)
    np.testing.assert_array_equal(images[1], image)
    np.testing.assert_array_equal(keypoints[offsets[1]:offsets[2]], points)
    serial = generate_synthetic_shapes({**TINY, "primitives": ["draw_polygon"]}, root=tmp_path, workers=1,
                                       progress=False)
    np.testing.assert_array_equal(ds.load_entry(serial / "draw_polygon_training.npz")[0],
                                  ds.load_entry(directory / "draw_polygon_training.npz")[0])


def test_cache_is_reused(cache, monkeypatch):
    root, directory = cache

    def fail(*args, **kwargs):
        raise AssertionError("regenerated a complete cache")

    monkeypatch.setattr(ds, "_generate_entries", fail)
    assert generate_synthetic_shapes(TINY, root=root, progress=False) == directory
    # Settings that do not change the images share the cache.
    assert generate_synthetic_shapes({**TINY, "validation_size": 1}, root=root, progress=False) == directory
    assert ds.cache_key(TINY) != ds.cache_key({**TINY, "generation": {**TINY["generation"], "random_seed": 1}})


def test_corrupt_and_incomplete_entries_are_regenerated(tmp_path, capsys):
    config = {**TINY, "primitives": ["draw_checkerboard"]}
    directory = generate_synthetic_shapes(config, root=tmp_path, workers=1, progress=False)
    path = directory / "draw_checkerboard_training.npz"
    original = ds.load_entry(path)[0]

    data = bytearray(path.read_bytes())  # flip bytes in the middle, keep the size
    data[len(data) // 2:len(data) // 2 + 16] = bytes(16)
    path.write_bytes(bytes(data))
    with pytest.raises(ds.CorruptCacheError):
        ds.load_entry(path)
    dataset = SyntheticShapes(config, "training", root=tmp_path, workers=1, progress=False, apply_photometric=False)
    assert "regenerating" in capsys.readouterr().err
    np.testing.assert_array_equal(ds.load_entry(path)[0], original)
    assert len(dataset) == 4

    path.write_bytes(path.read_bytes()[:100])  # truncated: the marker's size no longer matches
    generate_synthetic_shapes(config, root=tmp_path, workers=1, progress=False)
    np.testing.assert_array_equal(ds.load_entry(path)[0], original)

    path.with_name(path.name + ".sha256").unlink()  # an interrupted write leaves no marker
    generate_synthetic_shapes(config, root=tmp_path, workers=1, progress=False)
    np.testing.assert_array_equal(ds.load_entry(path)[0], original)


def test_dataset_items(cache):
    root, _ = cache
    train = SyntheticShapes(TINY, "training", root=root, progress=False, apply_photometric=False)
    assert len(train) == 4 + 2 + 4  # polygons, half of the ellipses, checkerboards
    item = train[0]
    assert set(item) == {"image", "keypoint_map", "valid_mask", "name"}
    assert item["image"].shape == (1, 64, 80) and item["image"].dtype == torch.float32
    assert 0 <= item["image"].min() and item["image"].max() <= 1
    assert item["keypoint_map"].shape == (64, 80) and item["keypoint_map"].dtype == torch.float32
    assert set(torch.unique(item["keypoint_map"]).tolist()) <= {0.0, 1.0}
    assert torch.equal(item["valid_mask"], torch.ones(64, 80))
    names = [train[i]["name"] for i in range(len(train))]
    assert len(set(names)) == len(names)
    for i, name in enumerate(names):
        expected = np.unique(np.round(train.keypoints[i]), axis=0)
        assert train[i]["keypoint_map"].sum() == len(expected)
        if name.startswith("draw_ellipses"):
            assert train[i]["keypoint_map"].sum() == 0
    batch = next(iter(torch.utils.data.DataLoader(train, batch_size=3)))
    assert batch["image"].shape == (3, 1, 64, 80) and len(batch["name"]) == 3

    val = SyntheticShapes(TINY, "val", root=root, progress=False)
    assert len(val) == 3 and val.photometric is None  # validation_size; no augmentation outside training
    assert len(SyntheticShapes(TINY, "test", root=root, progress=False)) == 2 + 1 + 2


def test_photometric_augmentation_applies_to_training_only(cache):
    root, _ = cache
    augmented = SyntheticShapes(TINY, "training", root=root, progress=False)
    plain = SyntheticShapes(TINY, "training", root=root, progress=False, apply_photometric=False)
    assert augmented.photometric is not None
    assert not torch.equal(augmented[0]["image"], plain[0]["image"])
    assert torch.equal(augmented[0]["keypoint_map"], plain[0]["keypoint_map"])
    off = {**TINY, "augmentation": {"photometric": {"enable": False}}}
    assert SyntheticShapes(off, "training", root=root, progress=False).photometric is None


@pytest.mark.parametrize(
    ("config", "key"),
    [
        ({"primitive": "all"}, "primitive"),
        ({"generation": {"imagesize": [10, 10]}}, "generation.imagesize"),
        ({"generation": {"params": {"draw_star": {"branches": 3}}}}, "generation.params.draw_star.branches"),
        ({"truncate": {"draw_circle": 0.5}}, "truncate.draw_circle"),
        ({"primitives": ["draw_circle"]}, "primitives"),
        ({"augmentation": {"photometric": {"params": {"random_brightnes": {}}}}},
         "augmentation.photometric.params.random_brightnes"),
        ({"augmentation": {"homographic": {"params": {"patch": 0.5}}}}, "augmentation.homographic.params.patch"),
        ({"augmentation": {"geometric": {}}}, "augmentation.geometric"),
        ({"preprocessing": {"blur_size": "big"}}, "preprocessing.blur_size"),
    ],
)
def test_bad_config_names_the_key(config, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        ds.merge_config(config)


def test_reference_defaults():
    config = ds.merge_config({})
    assert config["primitives"] == list(ds.PRIMITIVES)
    assert config["generation"]["split_sizes"] == {"training": 10000, "validation": 200, "test": 500}
    assert config["generation"]["image_size"] == [960, 1280]
    assert config["preprocessing"] == {"resize": [120, 160], "blur_size": 21}
    assert config["truncate"] == {"draw_ellipses": 0.3, "draw_stripes": 0.2, "gaussian_noise": 0.1}
    homographic = config["augmentation"]["homographic"]
    assert homographic["valid_border_margin"] == 2 and homographic["params"]["patch_ratio"] == 0.8
    # Params given replace the shapes values; those left out take the reference functions' defaults.
    partial = ds.merge_config({"augmentation": {"homographic": {"params": {"patch_ratio": 0.85}}}})
    assert partial["augmentation"]["homographic"]["params"]["scaling_amplitude"] == 0.1


def test_unknown_split():
    with pytest.raises(ValueError, match="unknown split"):
        SyntheticShapes(TINY, "eval")


def test_cli_help(capsys):
    with pytest.raises(SystemExit) as exit_info:
        build_synthetic_shapes.main(["--help"])
    assert exit_info.value.code == 0
    assert "--contact-sheet" in capsys.readouterr().out


def test_cli_generates_and_writes_a_contact_sheet(tmp_path, capsys):
    sheet = tmp_path / "sheet.png"
    config = tmp_path / "config.yaml"
    config.write_text("data:\n  name: synthetic_shapes\n  generation: {image_size: [240, 320]}\n"
                      "  preprocessing: {resize: [64, 80], blur_size: 7}\n")
    code = build_synthetic_shapes.main(["--config", str(config), "--root", str(tmp_path), "--workers", "1", "--split-sizes", "2", "1", "1",
                    "--primitives", "draw_star", "draw_cube", "--contact-sheet", str(sheet), "--per-primitive", "2",
                    "--no-progress", "--verify"])
    assert code == 0
    image = cv2.imread(str(sheet))
    assert image is not None and image.shape[0] == 2 * (64 * 2 + 4)
    red = (image[..., 2] > 200) & (image[..., 1] < 80) & (image[..., 0] < 80)
    assert red.sum() > 0  # corner marks
    assert "contact sheet" in capsys.readouterr().out
