"""What a new user hits with bad input or an interruption: one clear line, nothing half-written.

Each test here failed before its fix (issue 11): tracebacks instead of one line, a file left behind
by a failed extraction, the YAML blamed for a --set, exit status 0 after Ctrl+C, runpy's warning, a
descriptor protocol run on weights without descriptors, plots that killed a finished evaluation.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from superpoint_training import evaluate, extract, match_features_demo, synthetic_hpatches
from superpoint_training import weights as weights_command
from superpoint_training.common.viz import GREEN, RED, draw_matches
from superpoint_training.data.hpatches import build

TEST_DIR = Path(__file__).resolve().parent


def one_error_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1, text
    assert lines[0].startswith("error: "), text
    assert "Traceback" not in text
    return lines[0]


def write_photo(path: Path, seed: int = 0, size=(96, 128)) -> Path:
    rng = np.random.default_rng(seed)
    image = cv2.GaussianBlur((rng.random(size) * 255).astype(np.uint8), (5, 5), 0)
    cv2.imwrite(str(path), image)
    return path


# ---------------------------------------------------------------- one line, not a traceback


def test_demo_missing_and_non_image_files(tmp_path, capsys):
    photo = write_photo(tmp_path / "a.png")
    not_image = tmp_path / "notes.png"
    not_image.write_text("not an image")
    assert match_features_demo.main([str(tmp_path / "missing.png"), str(photo), "--device", "cpu"]) == 1
    assert "missing.png" in one_error_line(capsys.readouterr().err)
    assert match_features_demo.main([str(not_image), str(photo), "--device", "cpu"]) == 1
    line = one_error_line(capsys.readouterr().err)
    assert "notes.png" in line and "not an image" in line


def test_vo_with_corrupt_weights(tmp_path, capsys):
    from superpoint_ros import vo

    frames = tmp_path / "frames"
    frames.mkdir()
    for i in range(2):
        write_photo(frames / f"{i:03d}.png", seed=i)
    camera = tmp_path / "camera.txt"
    camera.write_text("100 100 64 48\n")
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"PK\x03\x04 cut short")
    code = vo.main([str(frames), "--camera", str(camera), "--output", str(tmp_path / "out"),
                    "--weights", str(corrupt), "--device", "cpu", "--quiet"])  # fmt: skip
    assert code == 2
    assert "corrupt.pth" in one_error_line(capsys.readouterr().err)


def test_synthetic_hpatches_with_an_empty_or_missing_photo_folder(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert synthetic_hpatches.main([str(tmp_path / "out"), "--photos", str(empty)]) == 2
    assert "no images" in one_error_line(capsys.readouterr().err)
    assert synthetic_hpatches.main([str(tmp_path / "out"), "--photos", str(tmp_path / "absent")]) == 2
    assert "not found" in one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "out").exists()


def test_weights_check_says_a_png_is_not_a_pytorch_file(tmp_path, capsys):
    png = write_photo(tmp_path / "some.png")
    assert weights_command.main(["check", str(png)]) == 1
    line = one_error_line(capsys.readouterr().err)
    assert "not a PyTorch file" in line and "PNG image" in line
    archive = tmp_path / "features.npz"
    np.savez(archive, a=np.zeros(3))
    assert weights_command.main(["check", str(archive)]) == 1
    assert "not a PyTorch file" in one_error_line(capsys.readouterr().err)


# ---------------------------------------------------------------- extract: all or nothing


@pytest.mark.parametrize("suffix", [".h5", ".npz"])
def test_extract_leaves_nothing_when_no_image_is_readable(tmp_path, capsys, suffix):
    folder = tmp_path / "images"
    folder.mkdir()
    (folder / "broken.png").write_text("not an image")
    output = tmp_path / f"features{suffix}"
    argv = [str(folder), "--output", str(output), "--device", "cpu", "--quiet"]
    assert extract.main(argv) == 1
    assert sorted(os.listdir(tmp_path)) == ["images"]  # no output, no temporary file
    write_photo(folder / "good.png")
    assert extract.main(argv) == 0  # the re-run does not trip over an "exists" error
    assert sorted(os.listdir(tmp_path)) == ["features" + suffix, "images"]


def test_extract_failing_midway_keeps_the_previous_output(tmp_path, monkeypatch, capsys):
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(3):
        write_photo(folder / f"{i}.png", seed=i, size=(64 + 8 * i, 80))  # three sizes: three batches
    output = tmp_path / "features.npz"
    output.write_bytes(b"previous run")
    calls = {"n": 0}

    def failing_extract_all(*args, **kwargs):
        calls["n"] += 1
        raise OSError("disk full")

    monkeypatch.setattr(extract, "_extract_all", failing_extract_all)
    code = extract.main([str(folder), "--output", str(output), "--device", "cpu", "--quiet", "--overwrite"])
    assert code == 2 and calls["n"] == 1
    assert "disk full" in capsys.readouterr().err
    assert output.read_bytes() == b"previous run"
    assert sorted(os.listdir(tmp_path)) == ["features.npz", "images"]


# ---------------------------------------------------------------- training


TINY_CONFIG = """\
data: {name: "rectangles", size: 8, image_size: [32, 48]}
train: {iterations: 50, batch_size: 2, num_workers: 0, num_threads: 1, log_every: 1, image_every: 0,
        checkpoint_every: 100, device: cpu}
validation: {every: 0, batch_size: 8, max_images: 4}
"""


@pytest.fixture
def tiny_config(tmp_path, monkeypatch, rectangles):
    monkeypatch.syspath_prepend(str(TEST_DIR))  # train_standin
    monkeypatch.setenv("SUPERPOINT_EXPER_DIR", str(tmp_path / "experiments"))
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY_CONFIG)
    return path


def test_set_error_names_the_set_not_the_yaml(tiny_config, capsys):
    from superpoint_training.train import main as train_main

    assert train_main([str(tiny_config), "x", "--set", "model.nope=1", "--no_progress"]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert line.startswith("error: --set model.nope=1: model.nope: unknown key")
    assert "tiny.yaml" not in line
    tiny_config.write_text(TINY_CONFIG + "model: {nope: 1}\n")  # the same key in the file blames the file
    assert train_main([str(tiny_config), "x", "--set", "train.iterations=3", "--no_progress"]) == 2
    assert f"error: {tiny_config}: model.nope: unknown key" in capsys.readouterr().err


def test_ctrl_c_saves_then_exits_130_and_resumes(tiny_config, monkeypatch, capsys):
    from superpoint_training.train import main as train_main
    from superpoint_training.training.magicpoint_task import MagicPointTask

    original = MagicPointTask.loss
    iterations = itertools.count(1)

    def press_ctrl_c_in_iteration_3(self, model, batch):
        if next(iterations) == 3:
            signal.raise_signal(signal.SIGINT)
        return original(self, model, batch)

    monkeypatch.setattr(MagicPointTask, "loss", press_ctrl_c_in_iteration_3)
    argv = [str(tiny_config), "tiny", "--no_progress"]
    assert train_main(argv) == 130
    out = capsys.readouterr().out
    assert "stopped at iteration 3" in out and "done:" not in out
    checkpoint = Path(os.environ["SUPERPOINT_EXPER_DIR"]) / "tiny" / "checkpoint.pth"
    assert torch.load(checkpoint, weights_only=False)["iteration"] == 3
    monkeypatch.setattr(MagicPointTask, "loss", original)
    assert train_main([*argv, "--set", "train.iterations=5"]) == 0  # resumable
    out = capsys.readouterr().out
    assert "resumed" in out and "done: iteration 5" in out


# ---------------------------------------------------------------- python -m without runpy's warning


def test_package_import_does_not_import_its_commands():
    commands = sorted(
        f"superpoint_training.{path.stem}"
        for path in (Path(weights_command.__file__).parent).glob("*.py")
        if 'if __name__ == "__main__"' in path.read_text(encoding="utf-8")
    )
    assert "superpoint_training.weights" in commands and "superpoint_training.evaluate" in commands
    script = "import json, sys, superpoint_training; print(json.dumps(sorted(sys.modules)))"
    result = subprocess.run([sys.executable, "-P", "-c", script], capture_output=True, text=True, check=True)
    imported = set(json.loads(result.stdout))
    assert not imported & set(commands)
    from superpoint_training import Extractor, load_superpoint  # the public names still resolve

    assert callable(Extractor) and callable(load_superpoint)


def test_weights_command_runs_without_runpy_warning():
    result = subprocess.run(
        [sys.executable, "-P", "-W", "error::RuntimeWarning", "-m", "superpoint_training.weights", "list"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "found in sys.modules" not in result.stderr
    assert "superpoint_ros" in result.stdout


# ---------------------------------------------------------------- evaluate


@pytest.fixture(scope="module")
def tiny_hpatches(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny_hpatches") / "set"
    rng = np.random.default_rng(3)
    photo = cv2.GaussianBlur((rng.random((120, 160, 3)) * 255).astype(np.uint8), (7, 7), 0)
    build(root, [("noise", photo)], sequences=2, size=(96, 128), images_per_sequence=3, progress=False)
    return root


def evaluate_argv(dataset: Path, output: Path, *extra: str) -> list[str]:
    return ["--dataset", str(dataset), "--output", str(output), "--resize", "none", "--device", "cpu",
            "--workers", "1", "--threads", "1", *extra]  # fmt: skip


def test_evaluate_skips_the_descriptor_protocol_for_weights_without_descriptors(tiny_hpatches, tmp_path, caplog):
    output = tmp_path / "report"
    argv = evaluate_argv(tiny_hpatches, output, "--methods", "superpoint,sift", "--weights", "magicpoint_shapes",
                         "--no-plots")  # fmt: skip
    assert evaluate.main(argv) == 0
    report = json.loads((output / "report.json").read_text())
    assert "superpoint" in report["aggregates"]["detector"]
    assert set(report["aggregates"]["descriptor"]) == {"sift"}  # no "NN mAP" of width-0 descriptors
    assert not [r for r in report["pairs"] if r["method"] == "superpoint" and r["protocol"] == "descriptor"]
    assert any("no descriptor head" in reason for reason in report["skipped_methods"])
    assert "no descriptor head" in caplog.text
    assert "no descriptor head" in (output / "report.md").read_text()


def test_evaluate_on_an_empty_dataset_creates_nothing(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    output = tmp_path / "report"
    with pytest.raises(SystemExit) as exit_info:
        evaluate.main(evaluate_argv(empty, output, "--methods", "sift"))
    assert exit_info.value.code == 2
    assert not output.exists()


def test_evaluate_without_matplotlib_writes_the_report_and_says_so(tiny_hpatches, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    output = tmp_path / "report"
    assert evaluate.main(evaluate_argv(tiny_hpatches, output, "--methods", "sift", "--match-pictures", "1")) == 0
    err = capsys.readouterr().err
    assert err.count("matplotlib is not installed") == 1
    report = json.loads((output / "report.json").read_text())
    assert report["aggregates"]["descriptor"]["sift"]["correct_e3"]["all"] is not None
    assert report["plots"] and all(Path(p).name.startswith("matches_") for p in report["plots"])
    assert (output / "report.md").exists()


def test_vo_without_matplotlib_writes_its_summary(tmp_path, monkeypatch, capsys):
    from superpoint_ros import vo

    monkeypatch.setitem(sys.modules, "matplotlib", None)
    frames = tmp_path / "frames"
    frames.mkdir()
    rng = np.random.default_rng(0)
    base = cv2.GaussianBlur((rng.random((120, 160)) * 255).astype(np.uint8), (5, 5), 0)
    for i in range(3):
        cv2.imwrite(str(frames / f"{i:03d}.png"), np.roll(base, 2 * i, axis=1))
    camera = tmp_path / "camera.txt"
    camera.write_text("100 100 80 60\n")
    output = tmp_path / "out"
    code = vo.main([str(frames), "--camera", str(camera), "--output", str(output), "--gaps", "1",
                    "--weights", "untrained", "--device", "cpu", "--quiet"])  # fmt: skip
    assert code == 0
    for name in ("summary.md", "summary.json", "pairs.csv"):
        assert (output / name).exists(), name
    assert not (output / "trajectory.png").exists()
    captured = capsys.readouterr()
    assert captured.err.count("matplotlib is not installed") == 1
    assert "trajectory.png" not in captured.out.splitlines()[-1]


# ---------------------------------------------------------------- the demo picture's legend


def test_match_picture_legend_says_what_green_and_red_mean():
    image = np.full((40, 60), 128, np.uint8)
    keypoints = np.array([[10.0, 10.0], [30.0, 20.0]], np.float32)
    matches = np.array([[0, 0], [1, 1]])
    plain = draw_matches(image, image, keypoints, keypoints, matches, np.array([True, False]), "t")
    with_legend = draw_matches(image, image, keypoints, keypoints, matches, np.array([True, False]), "t",
                               legend=("inlier", "outlier"))  # fmt: skip
    assert with_legend.shape[0] > plain.shape[0]
    bar = with_legend[28 : with_legend.shape[0] - plain.shape[0] + 28]
    assert (np.abs(bar.astype(int) - GREEN).sum(axis=-1) < 30).any()
    assert (np.abs(bar.astype(int) - RED).sum(axis=-1) < 30).any()


def test_write_skimage_photos_without_scikit_image_is_one_line(tmp_path, monkeypatch, capsys):
    from superpoint_training import write_skimage_photos as command

    monkeypatch.setitem(sys.modules, "skimage", None)  # import skimage now raises ImportError
    assert command.main([str(tmp_path / "photos")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "scikit-image" in err and "Traceback" not in err


# ---------------------------------------------------------------- train: every data error is one line (issue 25)


@pytest.fixture
def labelled_folder(tmp_path, monkeypatch) -> Path:
    """Three photos with labels exported for another size (24x32 where training reads 32x40)."""
    monkeypatch.setenv("SUPERPOINT_EXPER_DIR", str(tmp_path / "experiments"))
    labels = tmp_path / "experiments" / "outputs" / "labels"
    labels.mkdir(parents=True)
    (tmp_path / "images").mkdir()
    for i in range(3):
        write_photo(tmp_path / "images" / f"p{i}.png", seed=i)
        np.savez(labels / f"p{i}.npz", keypoints=np.zeros((0, 2), np.float32), image_size=np.array([24, 32]))
    return tmp_path


@pytest.mark.parametrize("case", ["missing_images", "missing_labels", "size_mismatch", "overlap"])
def test_train_data_errors_are_one_line(labelled_folder, capsys, case):
    from superpoint_training.train import main as train_main

    config = Path(__file__).resolve().parents[1] / "config" / "magic-point_coco_train.yaml"
    sets = {"data.images": str(labelled_folder / "images"), "data.labels": "labels", "data.resize": "[32, 40]",
            "data.validation_size": "1", "train.iterations": "1", "train.batch_size": "1",
            "train.num_workers": "1", "train.device": "cpu", "validation.every": "0"}
    expected = {"missing_images": "image folder not found", "missing_labels": "label folder not found",
                "size_mismatch": "labels for an image of size (24, 32)", "overlap": "would overlap"}[case]
    if case == "missing_images":
        sets["data.images"] = str(labelled_folder / "nowhere")
    elif case == "missing_labels":
        sets["data.labels"] = "export_never_made"
    elif case == "overlap":
        sets["data.validation_size"] = "3"
    argv = [str(config), f"run_{case}", "--no_progress"]
    for key, value in sets.items():
        argv += ["--set", f"{key}={value}"]
    assert train_main(argv) == 2
    assert expected in one_error_line(capsys.readouterr().err)
    with pytest.raises(ValueError, match=expected.replace("(", r"\(").replace(")", r"\)")):
        train_main([*argv, "--debug"])  # the traceback, for a bug report


def test_a_model_value_the_network_refuses_is_one_line(tiny_config, capsys):
    from superpoint_training.train import main as train_main

    assert train_main([str(tiny_config), "x", "--set", "model.batchnorm_momentum=2", "--no_progress"]) == 2
    assert "model.batchnorm_momentum must be in (0, 1]" in one_error_line(capsys.readouterr().err)
