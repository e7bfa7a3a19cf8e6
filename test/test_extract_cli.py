"""`python -m superpoint_training.extract`: folders and files to the features layout, same results as the API."""

from __future__ import annotations

import cv2
import pytest
import torch
from helpers import assert_same_features, random_state_dict

from superpoint_training import Extractor
from superpoint_training.common.feature_io import FeatureStore
from superpoint_training.data.images import find_images
from superpoint_training.extract import main


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("weights") / "v6.pth"
    torch.save(random_state_dict("v6", seed=2), path)
    return path


@pytest.fixture()
def image_folder(tmp_path, photo_rgb, photo_gray):
    folder = tmp_path / "images"
    (folder / "sub").mkdir(parents=True)
    rgb = cv2.resize(photo_rgb, (160, 120), interpolation=cv2.INTER_AREA)
    cv2.imwrite(str(folder / "rgb.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    cv2.imwrite(str(folder / "flipped.jpg"), cv2.cvtColor(rgb[:, ::-1], cv2.COLOR_RGB2BGR))
    cv2.imwrite(str(folder / "sub" / "gray.png"), photo_gray[:100, :140])
    (folder / "broken.png").write_bytes(b"not an image")
    (folder / "notes.txt").write_text("ignored: not an image suffix")
    return folder, rgb


@pytest.mark.parametrize("suffix", [".h5", ".npz"])
def test_extract_folder_matches_api(tmp_path, image_folder, weights_file, photo_gray, suffix, capsys):
    folder, rgb = image_folder
    output = tmp_path / f"out{suffix}"
    args = [str(folder), "--output", str(output), "--weights", str(weights_file), "--device", "cpu",
            "--max_keypoints", "200", "--nms_radius", "3", "--batch-size", "2", "--recursive", "--quiet",
            "--backend", "torch", "--precision", "fp32"]  # the API's defaults (the CLI's are auto)
    assert main(args) == 0
    assert "skipped 1 unreadable files" in capsys.readouterr().err
    extractor = Extractor(str(weights_file), device="cpu", max_keypoints=200, nms_radius=3, warmup=False)
    with FeatureStore.open(output) as store:
        assert store.keys() == ["flipped.jpg", "rgb.png", "sub/gray.png"]
        meta = store.metadata
        assert meta["config"]["nms_radius"] == 3 and meta["config"]["max_keypoints"] == 200
        assert meta["weights"] == extractor.weights_description
        stored = store.read("rgb.png")
        assert store.read_attrs("rgb.png")["source"].endswith("rgb.png")
        assert store.read("sub/gray.png").image_size == (100, 140)
    expected = extractor(rgb).numpy()  # the CLI hands RGB to the API: BGR from OpenCV was converted
    assert stored.image_size == (120, 160) and 0 < len(stored) <= 200
    # batch 2 vs batch 1 kernels: the same points, near-equal scores may come in another order
    assert_same_features(stored, expected)
    gray = extractor(photo_gray[:100, :140]).numpy()
    with FeatureStore.open(output) as store:
        assert_same_features(store.read("sub/gray.png"), gray)


def test_extract_files_errors_and_overwrite(tmp_path, image_folder, weights_file, capsys):
    folder, _ = image_folder
    output = tmp_path / "out.h5"
    base = ["--output", str(output), "--weights", str(weights_file), "--device", "cpu", "-q"]
    assert main([str(folder / "rgb.png"), str(folder / "sub" / "gray.png"), *base]) == 0
    with FeatureStore.open(output) as store:
        assert store.keys() == ["gray.png", "rgb.png"]
    assert main([str(folder / "rgb.png"), *base]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main([str(folder), *base, "--overwrite"]) == 0  # not recursive: sub/ is left out
    with FeatureStore.open(output) as store:
        assert store.keys() == ["flipped.jpg", "rgb.png"]
    assert main([str(folder / "missing.png"), *base, "--overwrite"]) == 2
    assert "missing.png" in capsys.readouterr().err
    assert main([str(folder / "broken.png"), *base, "--overwrite"]) == 1, "nothing readable: failure status"
    assert main([str(folder), "--output", str(tmp_path / "out.csv"), "-q"]) == 2
    assert "out.csv" in capsys.readouterr().err


def test_find_images_reports_key_clashes(tmp_path):
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "x.png").write_bytes(b"")
    with pytest.raises(ValueError, match="x.png"):
        find_images([tmp_path / "a" / "x.png", tmp_path / "b" / "x.png"])
    assert [key for key, _ in find_images([tmp_path], recursive=True)] == ["a/x.png", "b/x.png"]
