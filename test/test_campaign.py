"""The weights campaign end to end on generated data (every stage, a weights card), and its parts."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml

from superpoint_training.campaign import main
from superpoint_training.common.config import ConfigError
from superpoint_training.data.photo_crops import photo_group, split_photos, write_photo_crops
from superpoint_training.training.campaign import STAGES, Campaign, load_campaign_config

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def generated_data(tmp_path_factory):
    pytest.importorskip("skimage")
    from superpoint_training.data.hpatches import build
    from superpoint_training.data.images import skimage_photos, write_skimage_photos

    root = tmp_path_factory.mktemp("campaign_data")
    write_skimage_photos(root / "photos" / "skimage")
    build(root / "hpatches", skimage_photos()[:2], size=(120, 160), images_per_sequence=3, progress=False)
    return root


def test_tiny_campaign_runs_every_stage_and_writes_a_card(generated_data, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SUPERPOINT_EXPER_DIR", str(tmp_path / "experiments"))
    monkeypatch.chdir(ROOT)
    args = [str(ROOT / "config" / "campaign_ci.yaml"), "--set", f"photos={generated_data / 'photos'}",
            "--set", f"report.hpatches={generated_data / 'hpatches'}"]
    start = time.perf_counter()
    assert main(args) == 0
    assert time.perf_counter() - start < 90
    folder = tmp_path / "experiments" / "campaign_ci"
    state = yaml.safe_load((folder / "campaign_state.yaml").read_text())
    assert [s for s in STAGES if state[s]["status"] == "done"] == list(STAGES)
    assert state["photo_crops"]["counts"]["validation"] > 0 and state["photo_crops"]["counts"]["training"] > 0
    assert Path(state["shapes"]["weights"]).is_file() and Path(state["superpoint"]["weights"]).is_file()
    assert "kept" in state["magicpoint_photos"] and "repeatability_after" in state["magicpoint_photos"]
    card = (folder / "WEIGHTS_CARD.md").read_text()
    for expected in ("| sift |", "| orb |", "| superpoint |", "per sequence", "flags:", "iterations",
                     "Detection defaults stored in the weights", "subpixel"):
        assert expected in card, expected
    assert "vo_skipped" in state["report"]
    # a second run resumes: nothing is run again
    capsys.readouterr()
    assert main(args) == 0
    assert capsys.readouterr().out.count("done before") == len(STAGES)


def test_redo_marks_the_stage_and_the_later_ones(tmp_path):
    config = load_campaign_config(ROOT / "config" / "campaign_ci.yaml")
    campaign = Campaign(config, exper_dir=tmp_path)
    campaign.state = {stage: {"status": "done"} for stage in STAGES}
    campaign.redo("superpoint")
    assert [s for s in STAGES if campaign.done(s)] == list(STAGES[: STAGES.index("superpoint")])
    assert yaml.safe_load(campaign.state_path.read_text()).keys() == set(STAGES[: STAGES.index("superpoint")])


def test_unknown_campaign_key_is_named(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nsuperpoint: {max_minuts: 3}\n")
    with pytest.raises(ConfigError, match="superpoint.max_minuts"):
        load_campaign_config(bad)
    assert main([str(bad)]) == 2


def test_photos_are_held_out_by_group(tmp_path):
    import cv2
    import numpy as np

    names = ["aloeL", "aloeR", "motorcycle_left", "motorcycle_right", "basketball1", "basketball2", "leuvenA",
             "leuvenB", "chelsea", "coffee", "rocket"] + [f"p{i}" for i in range(30)]
    rng = np.random.default_rng(0)
    (tmp_path / "photos" / "misc").mkdir(parents=True)
    for name in names:
        cv2.imwrite(str(tmp_path / "photos" / "misc" / f"{name}.jpg"), rng.integers(0, 255, (60, 80), dtype=np.uint8))
    video = tmp_path / "photos" / "tum_frames"
    video.mkdir()
    for stamp in ("1341847980.722988", "1341847981.726650", "1341847982.730674"):
        cv2.imwrite(str(video / f"{stamp}.jpg"), rng.integers(0, 255, (60, 80), dtype=np.uint8))
    assert photo_group(Path("x/aloeL.jpg")) == photo_group(Path("x/aloeR.jpg"))
    assert photo_group(Path("x/motorcycle_left.jpg")) == photo_group(Path("x/motorcycle_right.jpg"))
    split = split_photos(tmp_path / "photos", validation_fraction=0.3)
    assert {p.stem for p in split.excluded} == {"leuvenA", "leuvenB"}  # in the evaluation set
    assert split.validation and split.training
    groups_val = {photo_group(p) for p in split.validation}
    groups_train = {photo_group(p) for p in split.training}
    assert not groups_val & groups_train
    counts = write_photo_crops(tmp_path / "photos", tmp_path / "crops", (48, 64), crops_per_photo=2,
                               validation_fraction=0.3)
    assert counts["training"] == 3 * len(split.training) and counts["validation"] == len(split.validation)
    crop = cv2.imread(str(next((tmp_path / "crops" / "training").rglob("*_1.jpg"))), cv2.IMREAD_GRAYSCALE)
    assert crop.shape == (48, 64)
    again = write_photo_crops(tmp_path / "photos", tmp_path / "crops", (48, 64), crops_per_photo=2,
                              validation_fraction=0.3)
    assert again == counts  # resumable: the files are kept
