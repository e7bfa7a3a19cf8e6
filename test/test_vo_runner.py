"""The offline VO runner: ground-truth handling, the TUM fr2_desk snippet (skipped when absent) and a bag."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from superpoint_ros.vo import main
from superpoint_training.odometry.evaluation import associate, load_tum_trajectory, relative_groundtruth
from superpoint_training.odometry.tracking import rotation_angle_deg
from superpoint_training.odometry.transforms import quaternion_to_matrix

TUM = Path(__file__).resolve().parents[2] / "shared" / "data" / "tum_fr2_desk"


def test_groundtruth_reading_association_and_relative_motion(tmp_path):
    path = tmp_path / "gt.txt"
    half = np.sqrt(0.5)
    path.write_text(
        "# timestamp tx ty tz qx qy qz qw\n"
        "10.00 0 0 0 0 0 0 1\n"
        f"10.10 1 0 0 0 0 {half} {half}\n"  # 90 degrees about z, moved 1 m along x
        "10.20 2 0 0 0 0 0 1\n"
    )
    stamps, poses = load_tum_trajectory(path)
    assert stamps.tolist() == [10.0, 10.1, 10.2]
    np.testing.assert_allclose(poses[1][:3, :3], [[0, -1, 0], [1, 0, 0], [0, 0, 1]], atol=1e-12)
    assert associate([10.005, 10.16, 11.0, None], stamps, 0.02) == [0, None, None, None]
    assert associate([10.19], stamps, 0.02) == [2]
    R, t = relative_groundtruth(poses[0], poses[1])  # x_1 = R x_0 + t
    origin_in_1 = R @ np.zeros(3) + t
    np.testing.assert_allclose(origin_in_1, np.linalg.inv(poses[1])[:3, 3])
    assert rotation_angle_deg(R) == pytest.approx(90.0)
    np.testing.assert_allclose(quaternion_to_matrix(0, 0, 0, 2.0), np.eye(3))
    bad = tmp_path / "bad.txt"
    bad.write_text("1 2 3\n")
    with pytest.raises(ValueError, match="expected 8 values"):
        load_tum_trajectory(bad)


@pytest.mark.skipif(not TUM.is_dir(), reason=f"TUM snippet not found at {TUM}")
def test_runner_on_the_tum_snippet(tmp_path):
    output = tmp_path / "vo"
    argv = [
        str(TUM / "rgb"),
        "--camera", str(TUM / "camera.txt"),
        "--groundtruth", str(TUM / "groundtruth.txt"),
        "--output", str(output),
        "--gaps", "1", "5",
        "--max-frames", "6",
        "--max-keypoints", "512",
        "--device", "cpu",
        "--quiet",
    ]  # fmt: skip
    assert main(argv) == 0
    summary = json.loads((output / "summary.json").read_text())
    assert set(summary["methods"]) == {"superpoint", "orb"} and summary["frames"] == 6
    for method in ("superpoint", "orb"):
        gaps = summary["methods"][method]["gaps"]
        assert gaps["1"]["pairs"] == 5 and gaps["5"]["pairs"] == 1
        assert sum(gaps["1"]["statuses"].values()) == 5
    orb = summary["methods"]["orb"]["gaps"]
    # the snippet's README: ORB + essential matrix agree with the ground truth to 0.2-1.1 degrees
    assert orb["1"]["ok"] == 5 and orb["1"]["median_rotation_error_deg"] < 2.0
    assert orb["5"]["median_rotation_error_deg"] < 2.0 and orb["5"]["median_translation_direction_error_deg"] < 20.0
    assert orb["5"]["median_gt_rotation_deg"] == pytest.approx(12.9, abs=0.5)
    if "UNTRAINED" not in summary["weights"]:
        sp = summary["methods"]["superpoint"]["gaps"]
        assert sp["5"]["ok"] == 1 and sp["5"]["median_rotation_error_deg"] < 3.0
    with open(output / "pairs.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 12 and {r["method"] for r in rows} == {"superpoint", "orb"}
    assert (output / "trajectory.png").stat().st_size > 10_000
    assert "| orb | 5 |" in (output / "summary.md").read_text()


def test_runner_reads_a_bag_and_reports_bad_input(tmp_path, capsys):
    import cv2
    from bag_files import BagImage, write_image_bag
    from skimage import data

    photo = cv2.resize(cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2GRAY), (400, 300))
    images = [
        BagImage("/cam/image", 1_000_000_000 + i * 100_000_000, np.ascontiguousarray(photo[20 + 3 * i : 260 + 3 * i, 30 + 4 * i : 350 + 4 * i]), "mono8")
        for i in range(3)
    ]
    bag = tmp_path / "bag"
    write_image_bag(bag, "mcap", images)
    camera = tmp_path / "camera.txt"
    camera.write_text("300 300 160 120\n")
    weights = tmp_path / "random.pth"
    import torch
    from helpers import random_state_dict

    torch.save(random_state_dict("v6"), weights)
    output = tmp_path / "out"
    argv = [str(bag), "--camera", str(camera), "--output", str(output), "--gaps", "1", "--weights", str(weights),
            "--max-keypoints", "256", "--device", "cpu", "--quiet"]  # fmt: skip
    assert main(argv) == 0
    summary = json.loads((output / "summary.json").read_text())
    assert summary["frames"] == 3 and summary["methods"]["orb"]["gaps"]["1"]["pairs"] == 2
    assert summary["groundtruth"] == "none"
    # no intrinsics anywhere: a clear error, exit status 2
    assert main([str(bag), "--output", str(tmp_path / "x"), "--weights", str(weights), "--quiet"]) == 2
    assert "no intrinsics" in capsys.readouterr().err
    assert main([str(tmp_path / "missing"), "--camera", str(camera), "--output", str(tmp_path / "y")]) == 2


def test_a_pair_whose_pose_raises_is_reported_failed_and_the_run_goes_on(tmp_path, monkeypatch):
    """OpenCV 5.1 raises cv2.error in findEssentialMat where 4.x returned no solution: every release
    must give the pair the status pose_failed with the reason, and the runner the rest of the pairs."""
    import cv2
    from skimage import data

    calls = []

    def raise_every_other(*args, **kwargs):
        calls.append(1)
        if len(calls) % 2:
            raise cv2.error("OpenCV(5.1.0) mathfuncs.cpp:1601: error: (-215:Assertion failed) in function 'solvePoly'")
        return find_essential(*args, **kwargs)

    find_essential = cv2.findEssentialMat
    monkeypatch.setattr(cv2, "findEssentialMat", raise_every_other)
    gray = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2GRAY)
    frames = tmp_path / "frames"
    frames.mkdir()
    for i in range(5):
        cv2.imwrite(str(frames / f"{100 + i}.png"), gray[40 + 6 * i : 340 + 6 * i, 60 + 9 * i : 460 + 9 * i])
    (tmp_path / "camera.txt").write_text("400 400 200 150\n")
    output = tmp_path / "out"
    assert main([str(frames), "--camera", str(tmp_path / "camera.txt"), "--output", str(output), "--gaps", "1",
                 "--weights", "untrained", "--max-keypoints", "100", "--device", "cpu", "--quiet"]) == 0
    with open(output / "pairs.csv", encoding="utf-8") as handle:
        orb = [row for row in csv.DictReader(handle) if row["method"] == "orb"]
    assert [row["frame0"] for row in orb] == ["0", "1", "2", "3"]  # every pair reported, in order
    statuses = [row["status"] for row in orb]
    assert "pose_failed" in statuses and "ok" in statuses, statuses
    summary = json.loads((output / "summary.json").read_text())
    assert summary["methods"]["orb"]["gaps"]["1"]["statuses"]["pose_failed"] >= 1


def test_ransac_orders_report_the_mean_of_each_orders_median(tmp_path):
    def run(output, *extra):
        argv = [str(TUM / "rgb"), "--camera", str(TUM / "camera.txt"), "--groundtruth", str(TUM / "groundtruth.txt"),
                "--output", str(output), "--gaps", "1", "--max-frames", "6", "--max-keypoints", "512",
                "--device", "cpu", "--quiet", "--no-orb", *extra]  # fmt: skip
        assert main(argv) == 0
        with open(output / "pairs.csv", newline="") as handle:
            return json.loads((output / "summary.json").read_text()), list(csv.DictReader(handle))

    one, one_rows = run(tmp_path / "one")
    three, rows = run(tmp_path / "three", "--ransac-orders", "3")
    assert three["ransac_orders"] == 3 and len(rows) == 15 and {r["order"] for r in rows} == {"0", "1", "2"}
    gap = three["methods"]["superpoint"]["gaps"]["1"]
    assert gap["pairs"] == 5  # pairs, not pairs x orders
    first = [r for r in rows if r["order"] == "0"]
    assert [r["rotation_error_deg"] for r in first] == [r["rotation_error_deg"] for r in one_rows]  # order 0: as before
    for key, summary_key in (("rotation_error_deg", "median_rotation_error_deg"),
                             ("translation_direction_error_deg", "median_translation_direction_error_deg")):
        medians = [np.nanmedian([float(r[key]) for r in rows if r["order"] == o]) for o in "012"]
        assert gap[summary_key] == pytest.approx(np.mean(medians))
    assert len({r["rotation_error_deg"] for r in rows if r["frame0"] == "0"}) > 1  # the orders differ
    assert main([str(TUM / "rgb"), "--camera", str(TUM / "camera.txt"), "--output", str(tmp_path / "bad"),
                 "--ransac-orders", "0", "--quiet"]) == 2
