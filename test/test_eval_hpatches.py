"""HPatches loader and the synthetic-sequence builder, on small generated sets."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from superpoint_training.data.geometry import warp_image
from superpoint_training.data.hpatches import HPatches, HPatchesError, build, resize_transform
from superpoint_training.synthetic_hpatches import main


@pytest.fixture(scope="module")
def photos():
    from skimage import data

    return [("astronaut", data.astronaut()), ("coffee", data.coffee()), ("camera", data.camera())]


@pytest.fixture
def dataset_root(tmp_path, photos):
    build(tmp_path / "set", photos, sequences=3, size=(120, 200), progress=False)
    build(tmp_path / "short", photos[:1], sequences=2, size=(120, 200), images_per_sequence=3, progress=False, seed=1)
    # the second build names its sequences like the first; move them under new names
    (tmp_path / "short" / "v_astronaut").rename(tmp_path / "set" / "v_short")
    return tmp_path / "set"


def test_layout_pairs_and_fewer_images(dataset_root):
    names = sorted(p.name for p in dataset_root.iterdir())
    assert names == ["i_coffee", "v_astronaut", "v_camera", "v_short"]
    assert sorted(f.name for f in (dataset_root / "v_astronaut").iterdir()) == [
        "1.ppm", "2.ppm", "3.ppm", "4.ppm", "5.ppm", "6.ppm", "H_1_2", "H_1_3", "H_1_4", "H_1_5", "H_1_6"
    ]  # fmt: skip
    dataset = HPatches(dataset_root, resize="none")
    assert dataset.skipped == []
    assert len(dataset.pairs) == 5 + 5 + 5 + 2
    assert [p.name for p in dataset.pairs if p.sequence == "v_short"] == ["1-2", "1-3"]
    assert {p.kind for p in dataset.pairs if p.sequence == "i_coffee"} == {"illumination"}
    assert np.allclose(dataset.homography(dataset.pairs[0]), np.eye(3))  # illumination: identity
    assert len(HPatches(dataset_root, resize="none", split="viewpoint").pairs) == 12
    assert len(HPatches(dataset_root, resize="none", max_sequences=1).sequences) == 1


def test_missing_files_are_reported_by_name_and_skipped(dataset_root, caplog):
    (dataset_root / "v_astronaut" / "4.ppm").unlink()
    (dataset_root / "v_camera" / "H_1_3").unlink()
    dataset = HPatches(dataset_root, resize="none")
    assert sorted(dataset.sequences) == ["i_coffee", "v_short"]
    assert any("v_astronaut" in r and "4.ppm" in r for r in dataset.skipped)
    assert any("v_camera" in r and "H_1_3" in r for r in dataset.skipped)
    assert "4.ppm" in caplog.text


def test_non_invertible_homography_is_an_error_naming_the_file(dataset_root):
    np.savetxt(dataset_root / "v_camera" / "H_1_2", np.zeros((3, 3)))
    with pytest.raises(HPatchesError, match=r"v_camera/H_1_2.*not invertible"):
        HPatches(dataset_root)
    (dataset_root / "v_camera" / "H_1_2").write_text("not a matrix")
    with pytest.raises(HPatchesError, match="H_1_2"):
        HPatches(dataset_root)


def test_empty_or_wrong_folder(tmp_path):
    with pytest.raises(HPatchesError, match="no such dataset folder"):
        HPatches(tmp_path / "missing")
    with pytest.raises(HPatchesError, match="i_\\* or v_\\*"):
        HPatches(tmp_path)


@pytest.mark.parametrize(
    ("mode", "expected"), [("reference", (60, 80)), ("short_side", (48, 80)), ("none", (120, 200))]
)
def test_resizing_keeps_images_and_homography_consistent(dataset_root, mode, expected):
    """Warping resized image 1 by the adjusted H must reproduce resized image k."""
    dataset = HPatches(dataset_root, resize=mode, size=(60, 80), short_side=48)
    pair = next(p for p in dataset.pairs if p.sequence == "v_astronaut" and p.index == 2)
    image0, image1 = dataset.load(pair.sequence, 1), dataset.load(pair.sequence, pair.index)
    assert image0.image.shape == image1.image.shape == expected and image0.image.dtype == np.uint8
    H = dataset.homography(pair)
    warped = warp_image(image0.image, H).astype(np.float32)
    valid = warp_image(np.full(expected, 255, np.uint8), H) == 255
    valid = cv2.erode(valid.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
    error = np.abs(warped - image1.image)[valid].mean()
    # the same check with the crop offset / pixel-centre terms dropped is clearly worse
    scale_only = np.diag([image0.transform[0, 0], image0.transform[1, 1], 1.0])
    naive = scale_only @ dataset.sequences[pair.sequence].homographies[2] @ np.linalg.inv(scale_only)
    naive_error = np.abs(warp_image(image0.image, naive).astype(np.float32) - image1.image)[valid].mean()
    assert error < 8  # interpolation differences only
    if mode == "reference":
        assert naive_error > 3 * error


def test_resize_transform_maps_pixel_centres():
    new, offset, A = resize_transform((100, 200), "reference", (50, 50))
    assert new == (50, 100) and offset == (0, 25)
    # the centre of the original image stays the centre of the crop
    centre = A @ np.array([99.5, 49.5, 1.0])
    assert np.allclose(centre[:2], [24.5, 24.5])
    with pytest.raises(ValueError, match="resize must be one of"):
        resize_transform((10, 10), "bicubic")


def test_builder_cli(tmp_path, photos, capsys):
    folder = tmp_path / "photos"
    folder.mkdir()
    cv2.imwrite(str(folder / "a.png"), cv2.resize(photos[0][1], (100, 80)))
    assert main([str(tmp_path / "out"), "--photos", str(folder), "--sequences", "2", "--size", "40x48"]) == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["i_a_1", "v_a"]
    assert cv2.imread(str(tmp_path / "out" / "v_a" / "6.ppm")).shape == (40, 48, 3)
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "--sequences" in capsys.readouterr().out
