"""The refinement's trainer: pairs from the known homography, a loss that falls, a weights file that loads."""

from __future__ import annotations

import cv2
import numpy as np
import torch

from superpoint_training import Extractor, train_refinement
from superpoint_training.model.loading import load_superpoint
from superpoint_training.model.refinement import SubpixelRefinement
from superpoint_training.training import refinement as trainer


def write_photos(folder, count: int = 3) -> None:
    """Blocky gray photos (corners everywhere), 300x400, plus one named like the measurement's."""
    rng = np.random.default_rng(0)
    for i in range(count):
        small = rng.integers(0, 256, (15, 20), dtype=np.uint8)
        image = cv2.resize(small, (400, 300), interpolation=cv2.INTER_NEAREST)
        cv2.imwrite(str(folder / f"photo{i}.png"), cv2.GaussianBlur(image, (3, 3), 0.8))
    cv2.imwrite(str(folder / "astronaut.png"), image)


def test_matches_follow_the_homography():
    warped = np.array([[10.0, 10.0], [20.0, 20.0], [30.0, 30.0]])
    points_b = np.array([[20.5, 20.0], [10.0, 11.5], [50.0, 50.0], [20.9, 20.0]])
    i, j = trainer.mutual_matches(warped, points_b, radius=2.0)
    assert i.tolist() == [0, 1] and j.tolist() == [1, 0]  # (30, 30) has none; 20.5 beats 20.9
    H = torch.tensor([[1.0, 0.1, 3.0], [0.0, 1.2, -2.0], [0.001, 0.0, 1.0]])
    points = torch.tensor([[5.0, 7.0], [100.0, 50.0]])
    expected = cv2.perspectiveTransform(points.numpy()[None].astype(np.float64), H.double().numpy())[0]
    np.testing.assert_allclose(trainer.warp_torch(points, H.expand(2, 3, 3)).numpy(), expected, rtol=1e-5)


def test_training_lowers_the_error_and_writes_loadable_weights(tmp_path, capsys):
    write_photos(tmp_path)
    assert [p.stem for p in trainer.list_photos(tmp_path)] == ["photo0", "photo1", "photo2"]
    extractor = Extractor("default", device="cpu", warmup=False, subpixel="none", scales=(1.0,), max_keypoints=300)
    refinement = SubpixelRefinement(image_radius=3)
    pairs = trainer.collect_pairs(extractor, trainer.list_photos(tmp_path), refinement, crops=2, size=(120, 160),
                                  match_radius=2.0, seed=0)
    assert len(pairs) > 50
    before = trainer.summary(refinement, pairs)
    assert before["median_learned_px"] == before["median_gaussian_px"]  # it starts as the Gaussian fit
    trainer.train(refinement, pairs, steps=150, batch_size=512, lr=3e-3, seed=0)
    after = trainer.summary(refinement, pairs)
    assert after["median_learned_px"] < 0.9 * before["median_gaussian_px"], (before, after)

    output = tmp_path / "out" / "learned.pth"
    code = train_refinement.main(["--photos", str(tmp_path), "--output", str(output), "--crops", "1", "--size", "120", "160",
                         "--steps", "20", "--val-every", "2", "--threads", "1", "--image-radius", "2"])
    assert code == 0 and "wrote" in capsys.readouterr().out
    loaded = load_superpoint(output)
    assert loaded.refinement is not None and loaded.refinement.image_radius == 2
    assert loaded.detection_defaults["subpixel"] == "learned"
    assert loaded.checkpoint is not None and "refinement" not in loaded.checkpoint


def test_bad_photo_folder_is_a_clear_error(tmp_path, capsys):
    assert train_refinement.main(["--photos", str(tmp_path), "--output", str(tmp_path / "x.pth")]) == 2
    assert "fewer than 2 photos" in capsys.readouterr().err
