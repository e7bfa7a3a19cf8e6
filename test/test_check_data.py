"""check_data on tiny fake data folders: counts against the release, sizes, what is missing, where to get it."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import cv2
import numpy as np
import pytest

from superpoint_training import check_data
from superpoint_training.data import dataset_check


def write_images(folder: Path, count: int, size=(48, 64)) -> None:
    folder.mkdir(parents=True)
    for i in range(count):
        cv2.imwrite(str(folder / f"COCO_x_{i:012d}.jpg"), np.full(size, 40 * i, np.uint8))


def write_sequence(folder: Path, pairs: int = 5, size=(40, 50)) -> None:
    folder.mkdir(parents=True)
    for i in range(1, pairs + 2):
        cv2.imwrite(str(folder / f"{i}.ppm"), np.zeros((*size, 3), np.uint8))
        if i > 1:
            np.savetxt(folder / f"H_1_{i}", np.eye(3))


def test_missing_and_partial_data_say_what_is_missing_and_where_to_get_it(tmp_path, capsys):
    write_images(tmp_path / "COCO" / "train2014", 3)
    (tmp_path / "COCO" / "train2014" / "COCO_x_broken.jpg").write_bytes(b"not a jpeg")
    write_sequence(tmp_path / "hpatches-sequences-release" / "i_ajuntament")
    write_sequence(tmp_path / "hpatches-sequences-release" / "v_boat", pairs=3)
    assert check_data.main(["--data-dir", str(tmp_path), "--sample", "10"]) == 1
    out = capsys.readouterr().out
    assert f"coco_train2014: INCOMPLETE: {tmp_path / 'COCO' / 'train2014'} (4 of 82,783 images)" in out
    assert "82,779 images fewer than the release" in out and "1 sampled images do not decode" in out
    assert "height 48-48, width 64-64" in out
    assert "coco_val2014: MISSING" in out and "http://images.cocodataset.org/zips/val2014.zip" in out
    assert "hpatches: INCOMPLETE" in out and "(1 of 116 sequences)" in out
    assert "1 of 57 illumination (i_*) and 0 of 59 viewpoint (v_*) sequences complete (images 1..6" in out
    assert "v_boat: 3 pairs instead of 5" in out and "hpatches-sequences-release.tar.gz" in out
    assert "synthetic_shapes: generated, nothing to download" in out


def test_complete_dataset_passes(tmp_path, monkeypatch, capsys):
    spec = dataclasses.replace(dataset_check.DATASETS["coco_val2014"], expected=2)
    monkeypatch.setitem(dataset_check.DATASETS, "coco_val2014", spec)
    write_images(tmp_path / "val", 2)
    assert check_data.main(["coco_val2014", "--path", str(tmp_path / "val")]) == 0
    out = capsys.readouterr().out
    assert "coco_val2014: ok" in out and "get it:" not in out and "problem" not in out


def test_data_dir_defaults_to_the_environment_and_bad_names_are_usage_errors(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SUPERPOINT_DATA_DIR", str(tmp_path))
    assert check_data.main(["hpatches", "--sample", "0"]) == 1
    assert f"data folder: {tmp_path}" in capsys.readouterr().out
    with pytest.raises(SystemExit) as usage:
        check_data.main(["coco2014"])
    assert usage.value.code == 2 and "unknown dataset 'coco2014'" in capsys.readouterr().err
