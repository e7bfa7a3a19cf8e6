"""The export CLI end to end on a tiny folder: label files, unreadable images, resume after an interruption."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml

from superpoint_training import export_detections
from superpoint_training.data.image_folder import ImageFolder, load_label
from superpoint_training.model.backends import is_available
from superpoint_training.model.network import ModelConfig, SuperPoint
from superpoint_training.training.homographic_adaptation import HomographicAdaptation

CONFIG = Path(__file__).resolve().parents[1] / "config" / "magic-point_coco_export.yaml"
FAST = [
    "--set", "model.homography_adaptation.num=3",
    "--set", "data.resize=[32, 40]",
    "--set", "data.num_workers=0",
    "--set", "model.detection_threshold=0.0",  # random weights: keep points whatever their score
    "--device", "cpu", "--no_progress",
]


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


@pytest.fixture()
def folder(tmp_path, photo_gray, monkeypatch) -> Path:
    images = tmp_path / "images"
    (images / "sub").mkdir(parents=True)
    cv2.imwrite(str(images / "a.png"), photo_gray[:60, :80])
    cv2.imwrite(str(images / "b.jpg"), photo_gray[100:180, 100:200])
    cv2.imwrite(str(images / "sub" / "c.png"), photo_gray[50:110, 200:300])
    (images / "broken.jpg").write_bytes(b"not an image")
    torch.manual_seed(0)
    model = SuperPoint(ModelConfig(variant="v6", descriptor_dim=0))
    record = {"format": "superpoint_ros", "model_config": model.config.to_dict(), "model": model.state_dict()}
    torch.save(record, tmp_path / "mp.pth")
    monkeypatch.setenv("SUPERPOINT_EXPER_DIR", str(tmp_path / "exper"))
    return tmp_path


def run(folder: Path, *extra: str) -> int:
    argv = [str(CONFIG), "none", "--export_name", "ha", "--weights", str(folder / "mp.pth"),
            "--images", str(folder / "images"), "--batch_size", "2", *FAST, *extra]
    return export_detections.main(argv)


def test_export_writes_labels_skips_unreadable_and_resumes(folder, capsys):
    assert run(folder) == 0
    out = folder / "exper" / "outputs" / "ha"
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.npz"))
    assert files == ["a.npz", "b.npz", "sub/c.npz"]
    assert "1 unreadable images skipped" in capsys.readouterr().err
    assert (out / "unreadable.txt").read_text().strip().endswith("broken.jpg")
    with np.load(out / "a.npz") as label:
        assert label["image_size"].tolist() == [32, 40] and label["original_size"].tolist() == [60, 80]
        assert label["keypoints"].shape[1] == 2 and len(label["keypoints"]) == len(label["scores"]) > 0
        assert label["prob"].shape == (32, 40) and label["counts"].max() <= 3
        assert np.array_equal(label["points"], np.round(label["keypoints"][:, ::-1]).astype(np.int32))
        assert '"num": 3' in str(label["meta"])
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*.npz")}
    assert run(folder, "--pred_only") == 0  # nothing left to do: finished labels are not rewritten
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.npz")} == stamps
    summary = (out / "summary.yaml").read_text()
    assert "written: 0" in summary and "already_exported: 3" in summary
    # the labels feed the image-folder dataset (same preprocessing)
    dataset = ImageFolder({"images": str(folder / "images"), "labels": "ha", "resize": [32, 40],
                           "validation_size": 0}, "training")
    item = dataset[0]
    assert item["image"].shape == (1, 32, 40) and item["keypoint_map"].sum() == len(load_label(out / "a.npz")["keypoints"])


def test_interrupted_export_resumes_without_half_files(folder, monkeypatch):
    calls = {"n": 0}
    original = HomographicAdaptation.__call__

    def interrupted(self, images, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return original(self, images, **kwargs)

    monkeypatch.setattr(HomographicAdaptation, "__call__", interrupted)
    out = folder / "exper" / "outputs" / "ha"
    out.mkdir(parents=True)
    (out / ".b.npz.999.tmp").write_bytes(b"half a file from a killed run")
    with pytest.raises(KeyboardInterrupt):
        run(folder, "--batch_size", "1")
    finished = sorted(p.name for p in out.rglob("*.npz"))
    assert finished == ["a.npz"]
    for path in out.rglob("*.npz"):
        np.load(path)["keypoints"]  # complete files only
    stamp = (out / "a.npz").stat().st_mtime_ns
    monkeypatch.setattr(HomographicAdaptation, "__call__", original)
    assert run(folder, "--batch_size", "1") == 0
    assert sorted(p.name for p in out.rglob("*.npz")) == ["a.npz", "b.npz", "c.npz"]
    assert (out / "a.npz").stat().st_mtime_ns == stamp
    assert not list(out.rglob("*.tmp"))
    assert "already_exported: 1" in (out / "summary.yaml").read_text()


def test_label_size_mismatch_names_the_file(folder):
    assert run(folder) == 0
    dataset = ImageFolder({"images": str(folder / "images"), "labels": "ha", "resize": [24, 32],
                           "validation_size": 0}, "training")
    with pytest.raises(ValueError, match=r"a\.npz.*\(32, 40\).*a\.png"):
        dataset[0]


def test_bad_config_and_missing_experiment_are_clear_errors(folder, capsys):
    assert run(folder, "--set", "model.homography_adaptation.aggregation=median") == 2
    assert "model.homography_adaptation.aggregation" in capsys.readouterr().err
    assert run(folder, "--set", "model.backend=tensorrt") == 2
    assert "model.backend: must be one of" in capsys.readouterr().err
    (folder / "exper" / "empty_experiment").mkdir(parents=True)
    argv = [str(CONFIG), "empty_experiment", "--export_name", "x", "--images", str(folder / "images"), *FAST]
    assert export_detections.main(argv) == 2
    assert "has no weights.pth" in capsys.readouterr().err


def test_ranks_share_the_images_without_talking(folder, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    for rank in ("0", "1"):
        monkeypatch.setenv("RANK", rank)
        monkeypatch.setenv("LOCAL_RANK", rank)
        assert run(folder, "--pred_only") == 0
    out = folder / "exper" / "outputs" / "ha"
    assert sorted(p.name for p in out.rglob("*.npz")) == ["a.npz", "b.npz", "c.npz"]
    written = [yaml.safe_load((out / f"summary_rank{r}.yaml").read_text())["written"] for r in (0, 1)]
    assert sorted(written) == [1, 2]  # 4 files, one unreadable, split by rank
    with np.load(out / "a.npz") as label:
        assert "prob" not in label and "keypoints" in label


def test_rounds_export_train_export(folder):
    """Export labels, train MagicPoint on them (config/magic-point_coco_train.yaml), export with the result."""
    from superpoint_training import train as train_cli

    assert run(folder) == 0
    config = Path(__file__).resolve().parents[1] / "config" / "magic-point_coco_train.yaml"
    overrides = [f"data.images={folder / 'images'}", "data.labels=ha", "data.resize=[32, 40]", "data.validation_size=1",
                 "train.iterations=2", "train.batch_size=2", "train.num_workers=0", "train.device=cpu",
                 "train.log_every=1", "train.checkpoint_every=2", "validation.every=2", "validation.batch_size=1"]
    argv = [str(config), "mp_round1", "--pretrained_model", str(folder / "mp.pth"), "--no_progress"]
    for override in overrides:
        argv += ["--set", override]
    assert train_cli.main(argv) == 0
    assert (folder / "exper" / "mp_round1" / "weights.pth").is_file()
    argv = [str(CONFIG), "mp_round1", "--export_name", "ha2", "--images", str(folder / "images"), *FAST]
    assert export_detections.main(argv) == 0
    summary = yaml.safe_load((folder / "exper" / "outputs" / "ha2" / "summary.yaml").read_text())
    assert summary["written"] == 3 and "mp_round1" in summary["weights"]
    # the weights say which labels and start weights made them
    provenance = torch.load(folder / "exper" / "mp_round1" / "weights.pth", weights_only=True)["provenance"]
    labels = provenance["labels"]["labels"]
    assert labels["folder"] == str((folder / "exper" / "outputs" / "ha").resolve())
    assert labels["homographies"] == 3 and str(folder / "mp.pth") in labels["weights"]
    assert provenance["pretrained"]["path"] == str((folder / "mp.pth").resolve())


def test_unknown_experiment_is_an_error_listing_the_experiments(folder, capsys):
    """A mistyped experiment never falls back to the shipped weights; those are used when named."""
    for name in ("magic-point_coco", "other"):
        (folder / "exper" / name).mkdir(parents=True)
        torch.save({}, folder / "exper" / name / "weights.pth")
    argv = [str(CONFIG), "magic-point_cocoo", "--export_name", "x", "--images", str(folder / "images"), *FAST]
    assert export_detections.main(argv) == 2
    err = capsys.readouterr().err
    assert "no experiment 'magic-point_cocoo'" in err and "magic-point_coco, other" in err
    assert not (folder / "exper" / "outputs" / "x" / "a.npz").exists()
    argv[1] = "magicpoint_shapes"  # the shipped weights, asked for by name
    assert export_detections.main(argv) == 0
    summary = yaml.safe_load((folder / "exper" / "outputs" / "x" / "summary.yaml").read_text())
    assert "magicpoint_shapes.pth" in summary["weights"]


def test_overlapping_training_and_validation_sets_are_refused(folder):
    from superpoint_training.data.image_folder import DataError

    config = {"images": str(folder / "images"), "resize": [32, 40]}
    with pytest.raises(DataError, match="validation_size 4 >= the 4 usable images.*overlap"):
        ImageFolder({**config, "validation_size": 4}, "training")
    with pytest.raises(DataError, match="validation_images is data.images"):
        ImageFolder({**config, "validation_images": str(folder / "images")}, "validation")
    train, val = ImageFolder({**config, "validation_size": 1}, "training"), ImageFolder({**config, "validation_size": 1}, "val")
    assert not set(train.paths) & set(val.paths) and len(train) == 3


@pytest.mark.parametrize("backend", [b for b in ("onnxruntime", "openvino") if is_available(b)])
def test_inference_backends_write_the_labels_of_torch(folder, backend):
    """Homographic adaptation is inference only: another backend's labels (fp32) are torch's, and
    the label files say which backend wrote them."""
    common = ["--set", "model.homography_adaptation.num=4", "--set", "data.resize=[48, 64]",
              "--set", "data.num_workers=0", "--set", "model.detection_threshold=0.0", "--device", "cpu",
              "--no_progress", "--weights", str(folder / "mp.pth"), "--images", str(folder / "images")]
    assert export_detections.main([str(CONFIG), "none", "--export_name", "t", *common]) == 0
    assert export_detections.main([str(CONFIG), "none", "--export_name", "b", *common,
                                   "--set", f"model.backend={backend}"]) == 0
    out = folder / "exper" / "outputs"
    for name in ("a.npz", "b.npz", "sub/c.npz"):
        with np.load(out / "t" / name) as ours, np.load(out / "b" / name) as theirs:
            np.testing.assert_allclose(theirs["prob"], ours["prob"], atol=2e-4)
            assert f'"backend": "{backend}"' in str(theirs["meta"]) and '"backend": "torch"' in str(ours["meta"])


def test_random_crop_cuts_image_and_labels_together(tmp_path):
    from superpoint_training.common.config import ConfigError

    images, labels = tmp_path / "images", tmp_path / "labels"
    images.mkdir(), labels.mkdir()
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        cv2.imwrite(str(images / f"{name}.png"), rng.integers(0, 256, (40, 48), dtype=np.uint8))
        keypoints = np.stack([rng.integers(0, 48, 60), rng.integers(0, 40, 60)], 1).astype(np.float32)
        np.savez(labels / f"{name}.npz", keypoints=keypoints, image_size=np.array([40, 48], np.int32))
    config = {"images": str(images), "labels": str(labels), "resize": [40, 48], "random_crop": [16, 24],
              "validation_size": 1, "augmentation": {"photometric": {"enable": False}}}
    whole = ImageFolder({**config, "random_crop": []}, "training")[0]
    torch.manual_seed(0)
    corners = set()
    for _ in range(6):
        item = ImageFolder(config, "training")[0]
        assert item["image"].shape == (1, 16, 24) and item["keypoint_map"].shape == (16, 24)
        found = [(y, x) for y in range(25) for x in range(25)
                 if torch.equal(whole["image"][0, y:y + 16, x:x + 24], item["image"][0])]
        assert len(found) == 1
        y, x = found[0]
        corners.add((y, x))
        assert torch.equal(whole["keypoint_map"][y:y + 16, x:x + 24], item["keypoint_map"])
    assert len(corners) > 1  # the window moves
    assert ImageFolder(config, "validation")[0]["image"].shape == (1, 40, 48)  # validation: whole images
    with pytest.raises(ConfigError, match=r"random_crop: \[48, 24\] is larger than resize"):
        ImageFolder({**config, "random_crop": [48, 24]}, "training")
