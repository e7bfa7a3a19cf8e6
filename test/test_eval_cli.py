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
    output, argv = first_run
    # Another number of RANSAC orders changes only the metrics: the predictions come from the cache.
    args = evaluate.build_parser().parse_args([*argv, "--no-plots", "--ransac-orders", "3"])
    args.argv = argv
    threads = torch.get_num_threads()
    report = evaluate.run(args)
    assert torch.get_num_threads() == threads  # --threads does not leak out of run()
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
