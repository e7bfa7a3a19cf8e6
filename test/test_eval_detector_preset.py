"""``evaluate_detector --preset reference``: the reference's threshold and box NMS on labelled images."""

from __future__ import annotations

import cv2
import numpy as np
import torch
import yaml

from superpoint_training import evaluate_detector
from superpoint_training.data.images import resize_crop
from superpoint_training.evaluation.presets import BoxNMSDetectorMetrics
from superpoint_training.model.keypoints import box_nms
from superpoint_training.training.detector_metrics import DetectorMetricsAccumulator

SIZE = (48, 64)


def test_box_nms_accumulator_is_box_nms_then_the_same_metrics():
    torch.manual_seed(0)
    scores = torch.rand(2, *SIZE) ** 4
    keypoint_map = (torch.rand(2, *SIZE) > 0.98).float()
    boxed = BoxNMSDetectorMetrics(detection_threshold=0.01, min_score=0.01, box_size=4)
    boxed.add_scores(scores, keypoint_map)
    manual = DetectorMetricsAccumulator(detection_threshold=0.01, min_score=0.01)
    for prob, gt in zip(box_nms(scores, 4, 0.1, 0.01).numpy(), keypoint_map.numpy(), strict=True):
        manual.add_image(prob, np.argwhere(gt > 0)[:, ::-1].astype(np.float64))
    assert boxed.compute() == manual.compute()
    maxpool = DetectorMetricsAccumulator(detection_threshold=0.01, min_score=0.01, nms_radius=4)
    maxpool.add_scores(scores, keypoint_map)
    assert maxpool.compute()["detections_per_image"] != boxed.compute()["detections_per_image"]


def test_cli_reference_preset(tmp_path, capsys):
    from skimage import data

    images, labels = tmp_path / "images", tmp_path / "labels"
    images.mkdir()
    labels.mkdir()
    for i, rgb in enumerate((data.astronaut(), data.coffee(), data.chelsea())):
        gray = resize_crop(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), SIZE)
        cv2.imwrite(str(images / f"p{i}.png"), gray)
        corners = cv2.goodFeaturesToTrack(gray, 30, 0.01, 4)[:, 0].astype(np.float32)
        np.savez(labels / f"p{i}.npz", keypoints=corners, image_size=np.array(SIZE))
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({
        "task": "magicpoint",
        "data": {"name": "image_folder", "images": str(images), "labels": str(labels), "resize": list(SIZE),
                 "validation_size": 2},
    }))
    results = {}
    for preset in ("project", "reference"):
        output = tmp_path / f"{preset}.yaml"
        argv = [str(config), "--weights", "magicpoint_shapes", "--split", "validation", "--device", "cpu",
                "--preset", preset, "--output", str(output)]
        assert evaluate_detector.main(argv) == 0
        results[preset] = yaml.safe_load(output.read_text())
    assert "preset reference: box NMS of size 4 (IoU 0.1)" in capsys.readouterr().out
    reference = results["reference"]
    assert reference["preset"] == "reference" and reference["images"] == 2
    assert reference["settings"]["nms"] == "box" and reference["settings"]["detection_threshold"] == 0.001
    assert reference["settings"]["remove_borders"] == 0
    assert results["project"]["settings"]["detection_threshold"] == 0.015 and "nms" not in results["project"]["settings"]
    project_figures = results["project"]["results"]["magicpoint_shapes"]
    reference_figures = reference["results"]["magicpoint_shapes"]
    assert reference_figures["detections_per_image"] > project_figures["detections_per_image"]  # 0.001 < 0.015
    assert 0 < reference_figures["mAP"] <= 1
