"""benchmarks/bench_localisation.py: position error and the demo's corner error, measured on a small
photo under 2 known warps (the benchmark's own pairs are the demo's 512x512 photo under 8)."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from superpoint_training.data.geometry import random_homography, warp_image

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_localisation.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_localisation", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def small_pair(seed: int = 0):
    """The demo's photo at 192x256 and its warp by the random homography of ``seed``."""
    from skimage import data

    image0 = cv2.resize(data.astronaut(), (256, 192), interpolation=cv2.INTER_AREA)
    H = random_homography(image0.shape[:2], np.random.default_rng(seed))
    return image0, warp_image(image0, H), H, "small astronaut"


def test_position_errors_keep_the_nearest_within_the_limit(bench):
    H = np.array([[1, 0, 5], [0, 1, -3], [0, 0, 1]], np.float64)
    keypoints0 = np.array([[10, 10], [30, 40], [60, 20], [90, 90]], np.float64)
    keypoints1 = keypoints0 + [5, -3]  # exactly where H puts them ...
    keypoints1[0] += [0.3, 0]  # ... except three
    keypoints1[1] += [0, -0.5]
    keypoints1[2] += [3, 0]  # beyond 2 px: left out
    keypoints1 = np.vstack((keypoints1, [[15.1, 7.0]]))  # a point of image 1 nearer than the moved one for point 0
    distances = np.sort(bench.position_errors(keypoints0, keypoints1, H, within=2.0))
    np.testing.assert_allclose(distances, [0.0, 0.1, 0.5], atol=1e-9)
    assert len(bench.position_errors(keypoints0, np.zeros((0, 2)), H)) == 0


def test_corner_subpix_moves_a_keypoint_onto_a_corner_between_pixels(bench):
    image = np.zeros((40, 40), np.uint8)
    image[:20, :20] = 255
    image[20:, 20:] = 255  # a checkerboard corner at (19.5, 19.5), between pixel centres
    image = cv2.GaussianBlur(image, (0, 0), 1.0)
    keypoints = np.array([[18.0, 21.0], [19.0, 20.0]], np.float32)
    refined = bench.corner_subpix(image, keypoints)
    np.testing.assert_allclose(refined, [[19.5, 19.5], [19.5, 19.5]], atol=0.05)
    np.testing.assert_array_equal(keypoints, [[18, 21], [19, 20]])  # the caller's array is left as it was
    assert bench.corner_subpix(image, np.zeros((0, 2), np.float32)).shape == (0, 2)


def test_soft_argmax_finds_the_centre_of_a_peak_between_pixels(bench):
    y, x = np.mgrid[:30, :40]
    centre = np.array([17.3, 11.6])
    scores = np.exp(-((x - centre[0]) ** 2 + (y - centre[1]) ** 2) / (2 * 0.6**2))
    refined = bench.soft_argmax(scores, np.array([[17.0, 12.0], [16.6, 11.7]]), radius=2)
    np.testing.assert_allclose(refined, [centre, centre], atol=0.02)
    flat = bench.soft_argmax(np.zeros((30, 40)), np.array([[3.4, 5.6], [39.4, 29.6]]), radius=2)
    np.testing.assert_array_equal(flat, [[3, 6], [39, 29]])  # no score: the keypoint's pixel, inside the map


def test_bench_measures_every_method_on_each_warp(bench, monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(bench.demo, "default_pair", small_pair)
    path = tmp_path / "loc.json"
    argv = ["--warps", "2", "--device", "cpu", "--backend", "torch", "--precision", "fp32", "--scales", "1",
            "--subpixel", "gaussian", "--refine", "cornersubpix,softargmax", "--ransac-orders", "3", "--json", str(path)]
    assert bench.main(argv) == 0
    out = capsys.readouterr().out
    assert "summary over 2 warps" in out and "| SIFT |" in out

    report = json.loads(path.read_text())
    assert report["machine_record"]["versions"]["torch"] and isinstance(report["machine_record"]["cpu_flags"], list)
    assert report["settings"]["backend"] == "torch" and report["settings"]["scales"] == [1.0]
    assert report["pairs"]["seeds"] == [0, 1] and report["ransac_orders"] == 3
    assert report["command"].endswith(" ".join(argv[-2:]))
    methods = report["methods"]
    assert list(methods) == ["SuperPoint (scales 1, subpixel gaussian)",
                             "SuperPoint (scales 1, subpixel gaussian) + cornerSubPix (half window 3)",
                             "SuperPoint (scales 1, subpixel gaussian) + heatmap soft-argmax (half window 2)", "SIFT"]
    for name, result in methods.items():
        warps = result["per_warp"]
        assert len(warps) == 2
        for warp in warps:
            assert 0 <= warp["position_median"] <= 2.0
            assert len(warp["corner_error_orders"]) == 3
            assert warp["corner_error_orders"][0] == warp["corner_error"]  # order 0 is the demo's figure
        summary = result["summary"]
        assert summary["points_within"] == sum(w["within"] for w in warps) > 50, name
        assert summary["corner_error_median"] == pytest.approx(np.median([w["corner_error"] for w in warps]))
        assert math.isfinite(summary["corner_error_median"]), name
    assert methods["SIFT"]["summary"]["position_median"] < 0.5  # the baseline lands within half a pixel


def test_the_corner_error_of_a_warp_is_the_demos(bench, monkeypatch, tmp_path):
    from superpoint_training.model.extractor import Extractor

    image0, image1, H, _ = small_pair(1)
    extractor = Extractor("default", "cpu", max_keypoints=1000, scales=(1.0,))
    results = bench.measure(extractor, [(image0, image1, H)], orders=1)
    demo_result, _ = bench.demo.run_superpoint(extractor, image0, image1, H, repeats=1)
    (name, superpoint), (_, sift) = results.items()
    assert superpoint["per_warp"][0]["corner_error"] == demo_result.corner_error
    assert sift["per_warp"][0]["corner_error"] == bench.demo.run_sift(image0, image1, H)[0].corner_error


@pytest.mark.parametrize("argv, message", [
    (["--warps", "0"], "must be at least 1"),
    (["--ransac-orders", "x"], "expected a whole number"),
    (["--refine", "sharpen"], "choose from none, cornersubpix"),
])
def test_bad_options_are_one_line_errors(bench, capsys, argv, message):
    with pytest.raises(SystemExit) as exit_info:
        bench.main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_missing_weights_are_a_one_line_error(bench, monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(bench.demo, "default_pair", small_pair)
    path = tmp_path / "loc.json"
    assert bench.main(["--weights", str(tmp_path / "absent.pth"), "--warps", "1", "--json", str(path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err and err.count("\n") == 1
    assert not path.exists()


def test_an_unwritable_report_is_refused_before_measuring(bench, tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    assert bench.main(["--json", str(blocker / "loc.json"), "--warps", "1"]) == 1
    captured = capsys.readouterr()
    assert captured.err.startswith("error: cannot write") and captured.err.count("\n") == 1
    assert "summary" not in captured.out  # nothing was measured
