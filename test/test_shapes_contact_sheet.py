"""The Synthetic Shapes contact sheet draws a few images per primitive now, without building the dataset."""

from __future__ import annotations

import cv2
import numpy as np

from superpoint_training import synthetic_shapes as shapes
from superpoint_training.data import shapes_dataset as ds
from superpoint_training.data.shapes_dataset import generate_synthetic_shapes

SMALL = {
    "primitives": ["draw_star", "draw_checkerboard"],
    "generation": {"image_size": [240, 320], "split_sizes": {"training": 3, "validation": 1, "test": 1}},
    "preprocessing": {"resize": [64, 80], "blur_size": 7},
}


def test_the_sheet_shows_the_images_the_dataset_holds(tmp_path):
    samples = ds.sample_images(SMALL["primitives"], 2, SMALL)
    directory = generate_synthetic_shapes(SMALL, root=tmp_path, workers=1, progress=False)
    for primitive in SMALL["primitives"]:
        images, keypoints, offsets = ds.load_entry(directory / f"{primitive}_training.npz")
        for i, (image, corners) in enumerate(samples[primitive]):
            assert np.array_equal(image, images[i]), (primitive, i)
            np.testing.assert_allclose(corners, keypoints[offsets[i] : offsets[i + 1]], atol=1e-5)


def test_cli_writes_a_sheet_and_builds_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SUPERPOINT_DATA_DIR", str(tmp_path / "data"))
    sheet = tmp_path / "sheet.png"
    code = shapes.main([str(sheet), "--primitives", "draw_cube", "draw_star", "--per-primitive", "3"])
    assert code == 0
    assert "6 images" in capsys.readouterr().out
    picture = cv2.imread(str(sheet))
    assert picture.shape[0] == 2 * (2 * 120 + 4)  # two rows of 120x160 images shown at scale 2
    assert picture.shape[1] == 190 + 3 * (2 * 160 + 4)
    red = (picture[..., 2] > 200) & (picture[..., 1] < 80) & (picture[..., 0] < 80)
    assert red.sum() > 0  # corners circled
    assert not (tmp_path / "data").exists()  # no dataset, no cache
    assert shapes.main([str(tmp_path / "no_folder" / "x.png"), "--per-primitive", "1", "--primitives", "draw_star"]) == 2
