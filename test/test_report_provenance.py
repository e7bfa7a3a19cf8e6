"""Every report says how it was made: the evaluation report and the VO summary, written by the real
commands on tiny generated data, carry the library versions, the CPU flags, the inference backend and
the number of RANSAC orders."""

from __future__ import annotations

import json
import re

import cv2
import numpy as np
import pytest
import torch

from superpoint_training.common.machine import NOTABLE_FLAGS, cpu_flags, library_versions


def assert_machine_record(record: dict) -> None:
    versions = library_versions()
    assert record["versions"]["torch"] == versions["torch"] and versions["torch"]
    assert record["versions"]["opencv"] == versions["opencv"] and cv2.__version__ in versions["opencv"]
    assert record["versions"]["numpy"] == np.__version__
    assert record["cpu_flags"] == [flag for flag in NOTABLE_FLAGS if flag in cpu_flags()]
    assert isinstance(record["native_bf16"], bool) and record["cores"] >= 1 and record["cpu"]


def assert_machine_line(text: str) -> None:
    versions = library_versions()
    assert f"torch {versions['torch']}" in text and f"opencv {versions['opencv']}" in text
    assert f"numpy {np.__version__}" in text
    assert re.search(r"\d+ cores, flags: ", text)
    for flag in (f for f in NOTABLE_FLAGS if f in cpu_flags()):
        assert flag in text


@pytest.fixture(scope="module")
def small_photos():
    from skimage import data

    return [("astronaut", data.astronaut()), ("coffee", data.coffee())]


def test_evaluation_report_records_machine_backend_and_ransac_orders(tmp_path, small_photos):
    from superpoint_training import evaluate
    from superpoint_training.data.hpatches import build

    build(tmp_path / "set", small_photos[:1], sequences=1, size=(96, 128), images_per_sequence=3, progress=False)
    output = tmp_path / "report"
    argv = ["--dataset", str(tmp_path / "set"), "--output", str(output), "--resize", "none", "--weights", "untrained",
            "--methods", "superpoint,orb", "--protocol", "descriptor", "--ransac-orders", "3", "--device", "cpu",
            "--workers", "1", "--threads", "1", "--no-plots"]  # fmt: skip
    assert evaluate.main(argv) == 0
    report = json.loads((output / "report.json").read_text())
    assert_machine_record(report["machine_record"])
    assert_machine_line(report["machine"])
    assert report["settings"]["protocols"]["descriptor"]["ransac_orders"] == 3
    markdown = (output / "report.md").read_text()
    machine_line = next(line for line in markdown.splitlines() if line.startswith("- Date:"))
    assert_machine_line(machine_line)
    assert "cv2.findHomography RANSAC, 3 orders of the matches per pair" in markdown
    assert "SuperPoint inference: the network run by the torch backend in fp32" in markdown


def test_vo_summary_records_machine_backend_and_ransac_orders(tmp_path, small_photos):
    from superpoint_ros.vo import main

    gray = cv2.cvtColor(small_photos[0][1], cv2.COLOR_RGB2GRAY)
    frames = tmp_path / "frames"
    frames.mkdir()
    for i in range(3):
        cv2.imwrite(str(frames / f"{100 + i}.png"), gray[40 + 4 * i : 280 + 4 * i, 60 + 5 * i : 380 + 5 * i])
    (tmp_path / "camera.txt").write_text("300 300 160 120\n")
    output = tmp_path / "vo"
    assert main([str(frames), "--camera", str(tmp_path / "camera.txt"), "--output", str(output), "--gaps", "1",
                 "--weights", "untrained", "--max-keypoints", "200", "--device", "cpu", "--no-orb", "--quiet"]) == 0
    summary = json.loads((output / "summary.json").read_text())
    assert_machine_record(summary["machine_record"])
    assert_machine_line(summary["machine"])
    backend, precision = summary["extractor"]["backend"], summary["extractor"]["precision"]
    assert summary["ransac_orders"] == 1 and backend in ("torch", "onnxruntime", "openvino")  # the one used (auto)
    markdown = (output / "summary.md").read_text()
    assert_machine_line(next(line for line in markdown.splitlines() if line.startswith("- date:")))
    assert "1 RANSAC order per pair" in markdown and f"inference: {backend} backend, {precision}" in markdown
    assert torch.__version__.split("+")[0] in markdown


def test_bag_tool_summary_names_machine_and_backend(tmp_path, small_photos, capsys):
    from bag_files import BagImage, write_image_bag

    from superpoint_ros.extract_bag import main

    gray = np.ascontiguousarray(cv2.resize(cv2.cvtColor(small_photos[0][1], cv2.COLOR_RGB2GRAY), (160, 120)))
    write_image_bag(tmp_path / "bag", "mcap", [BagImage("/cam/image", 10**9 + i * 10**8, gray, "mono8") for i in range(2)])
    assert main([str(tmp_path / "bag"), "--output", str(tmp_path / "out"), "--weights", "untrained", "--device", "cpu",
                 "--max-keypoints", "50", "-q"]) == 0
    machine_line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("on "))
    assert_machine_line(machine_line)
    assert re.search(r"; (torch|onnxruntime|openvino) backend, (fp32|bf16|fp16|int8)$", machine_line)
