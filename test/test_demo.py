"""The README's main job: the matching demo on a real photo and a known warp."""

from __future__ import annotations

import cv2

from superpoint_training import match_features_demo


def test_demo_writes_the_picture_and_scores_both_methods(tmp_path, capsys):
    output = tmp_path / "matches.png"
    assert match_features_demo.main(["--output", str(output), "--device", "cpu", "--max_keypoints", "300"]) == 0
    picture = cv2.imread(str(output))
    assert picture is not None and picture.shape[0] > 2 * 512  # two rows: SuperPoint and SIFT
    out = capsys.readouterr().out
    assert "weights:" in out and "SuperPoint" in out and "SIFT" in out
    superpoint, sift = match_features_demo.main.last_results
    assert superpoint["keypoints0"] == 300
    assert sift["corner_error"] < 3.0  # the known homography is recovered by the baseline
    assert superpoint["extract_ms"] > 0


def test_demo_rejects_a_single_image(capsys):
    import pytest

    with pytest.raises(SystemExit):
        match_features_demo.main(["only_one.png"])
