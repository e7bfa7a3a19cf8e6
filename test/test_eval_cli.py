"""`python -m superpoint_training.evaluate` end to end on a small generated set."""

from __future__ import annotations

import json

import pytest
import torch

from superpoint_training import evaluate
from superpoint_training.data.hpatches import build


@pytest.fixture(scope="module")
def small_set(tmp_path_factory):
    from skimage import data

    root = tmp_path_factory.mktemp("synthetic") / "hpatches"
    photos = [("astronaut", data.astronaut()), ("coffee", data.coffee())]
    build(root, photos, sequences=2, size=(96, 128), images_per_sequence=4, progress=False)
    return root


@pytest.fixture(scope="module")
def first_run(small_set, tmp_path_factory):
    output = tmp_path_factory.mktemp("report")
    argv = ["--dataset", str(small_set), "--output", str(output), "--resize", "none", "--weights", "untrained"]
    argv += ["--device", "cpu", "--workers", "2", "--threads", "1", "--match-pictures", "1"]
    assert evaluate.main(argv) == 0
    return output, argv


def first_run_dataset(output) -> str:
    import json

    return json.loads((output / "report.json").read_text())["settings"]["dataset"]


def test_report_files_and_tables(first_run, small_set):
    output, _ = first_run
    markdown = (output / "report.md").read_text()
    for heading in (
        "## Detectors: repeatability",
        "## Descriptors: homography estimation, e = 3",
        "## Homography estimation, all changes, e = 1 / 3 / 5",
        "## Homography estimation per sequence, e = 3",
        "## Descriptors: nearest-neighbour mAP",
    ):
        assert heading in markdown
    assert "| | illumination | viewpoint | all |" in markdown
    assert "max-pool NMS with radius 4" in markdown and "the reference used a box NMS of that size" in markdown
    assert "UNTRAINED" in markdown  # the weights are named in the report
    for method in evaluate.ALL_METHODS:
        assert f"| {method} |" in markdown
    per_sequence = markdown.split("## Homography estimation per sequence, e = 3")[1].split("## ")[0]
    sequences = sorted(p.name for p in small_set.iterdir() if p.is_dir())
    assert len(sequences) == 2 and all(f"| {name} |" in per_sequence for name in sequences)
    plots = sorted(p.name for p in (output / "plots").iterdir())
    assert "detector_repeatability.png" in plots and "descriptor_correct_e3.png" in plots
    assert "precision_recall.png" in plots
    assert any(name.startswith("matches_") for name in plots)
    assert all((output / "plots" / name).stat().st_size > 1000 for name in plots)


def test_report_json_keeps_per_pair_figures(first_run):
    output, _ = first_run
    report = json.loads((output / "report.json").read_text())
    pairs = report["pairs"]
    detector = [r for r in pairs if r["protocol"] == "detector"]
    descriptor = [r for r in pairs if r["protocol"] == "descriptor"]
    assert len(detector) == 6 * 2 * 3  # 6 methods, 2 sequences, 3 pairs each
    assert len(descriptor) == 3 * 2 * 3  # superpoint, sift, orb
    assert {r["pair"] for r in pairs} == {"1-2", "1-3", "1-4"}
    record = next(r for r in descriptor if r["method"] == "sift" and r["sequence"].startswith("v_"))
    assert {"sequence", "pair", "method", "kind", "corner_error", "correct_e3", "matching_score", "nn_map"} <= set(
        record
    )
    aggregates = report["aggregates"]
    assert set(aggregates) == {"detector", "descriptor"}
    harris = aggregates["detector"]["harris"]["repeatability"]
    assert 0.3 < harris["viewpoint"] <= 1.0 and 0.3 < harris["illumination"] <= 1.0
    # SIFT on this easy set finds every homography within 5 px
    assert aggregates["descriptor"]["sift"]["correct_e5"]["all"] == 1.0
    assert report["precision_recall"]["sift"]["all"]["recall"][-1] == 1.0


def test_second_run_reads_the_cache(first_run):
    output, _ = first_run
    # Another number of RANSAC orders changes only the metrics: the predictions come from the cache.
    # (The typed entry point the command and the campaign call.)
    from superpoint_training.evaluation.hpatches_run import run

    threads = torch.get_num_threads()
    result = run(first_run_dataset(output), output, weights=["untrained"], resize="none", device="cpu", workers=2,
                 threads=1, plots=False, ransac_orders=3)  # fmt: skip
    assert torch.get_num_threads() == threads  # threads does not leak out of run()
    report = result.report
    assert report["settings"]["protocols"]["descriptor"]["ransac_orders"] == 3
    exports = [name for name in report["timings"] if name.startswith("export")]
    assert len(exports) == 9 and all("(0 images computed)" in name for name in exports)


def test_unknown_method_and_help(small_set, tmp_path, capsys):
    with pytest.raises(SystemExit):
        evaluate.main(["--dataset", str(small_set), "--output", str(tmp_path), "--methods", "sift,surf"])
    assert "unknown method(s) surf" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        evaluate.main(["--dataset", str(tmp_path / "nowhere"), "--output", str(tmp_path), "--methods", "sift"])
    assert "no such dataset folder" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        evaluate.main(["--dataset", str(small_set), "--output", str(tmp_path), "--ransac-orders", "0"])
    assert "--ransac-orders must be at least 1" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        evaluate.main(["--help"])
    assert "--protocol" in capsys.readouterr().out


def test_default_preset_is_the_project_protocol(first_run):
    output, _ = first_run
    report = json.loads((output / "report.json").read_text())
    assert report["settings"]["preset"] == "project" and report["choices"][0].startswith("preset project:")
    assert report["settings"]["protocols"]["descriptor"]["export_max"] == 5000
    assert "nms" not in report["settings"]["methods"]["superpoint"]


def test_reference_preset(small_set, tmp_path):
    """--preset reference: threshold 0.001, box NMS 4 / 8, no border, top 1000 per image; written in the report."""
    import numpy as np

    from superpoint_training.data.hpatches import HPatches
    from superpoint_training.model.extractor import Extractor
    from superpoint_training.model.keypoints import box_overlap_offsets

    argv = ["--dataset", str(small_set), "--output", str(tmp_path), "--resize", "none", "--methods", "superpoint,orb",
            "--preset", "reference", "--device", "cpu", "--workers", "1", "--threads", "1", "--no-plots"]
    assert evaluate.main(argv) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    settings = report["settings"]
    assert settings["preset"] == "reference" and report["choices"][0].startswith("preset reference:")
    superpoint = settings["methods"]["superpoint"]
    assert superpoint["nms"] == "box" and superpoint["nms_iou"] == 0.1
    assert superpoint["detection_threshold"] == 0.001 and superpoint["remove_borders"] == 0
    assert superpoint["subpixel"] == "none" and "scales" not in superpoint  # one scale
    assert {p["export_max"] for p in settings["protocols"].values()} == {1000}
    markdown = (tmp_path / "report.md").read_text()
    assert "SuperPoint with the reference's box NMS (boxes of side 8 px" in markdown
    assert "SuperPoint: detection threshold 0.001, no border removal, sub-pixel none, scales [1.0]" in markdown
    assert "max-pool NMS with radius 4 for SuperPoint" not in markdown
    # the cached points are those of an Extractor with box NMS, and no two of them overlap above IoU 0.1
    sequence = sorted(p.name for p in small_set.iterdir() if p.is_dir())[0]
    extractor = Extractor("default", "cpu", detection_threshold=0.001, remove_borders=0, subpixel="none", scales=[1.0],
                          warmup=False)
    image = HPatches(small_set, resize="none").load(sequence, 1).image
    for protocol, size in (("detector", 4), ("descriptor", 8)):
        cached = next((tmp_path / "cache" / protocol).glob(f"superpoint-*/{sequence}/1.npz"))
        with np.load(cached) as data:
            keypoints = data["keypoints"]
        assert 20 < len(keypoints) <= 1000
        extractor.configure(nms_box=size, max_keypoints=1000)
        np.testing.assert_array_equal(extractor([image])[0].numpy().keypoints, keypoints)
        offsets = np.array(box_overlap_offsets(size, 0.1))
        kept = {tuple(p) for p in keypoints.astype(int)}
        assert not any((x + dx, y + dy) in kept for x, y in kept for dx, dy in offsets)
