"""ONNX export of SuperPoint plus fixed-K post-processing: ONNX Runtime reproduces the Extractor."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import random_state_dict

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from superpoint_training.export_onnx import main  # noqa: E402
from superpoint_training.model.onnx_graph import (  # noqa: E402
    ExportModule,
    compare_with_extractor,
    export_onnx,
    make_extractor,
    run_onnx,
)

HEIGHT, WIDTH, K = 116, 156, 128  # not multiples of 8: the graph pads like the Extractor


def _valid_sorted(keypoints, scores, descriptors, valid):
    keypoints, scores, descriptors = keypoints[valid], scores[valid], descriptors[valid]
    rounded = np.round(keypoints, 2)  # sub-pixel positions: float noise must not change the order
    order = np.lexsort((rounded[:, 0], rounded[:, 1]))
    return keypoints[order], scores[order], descriptors[order]


@pytest.fixture(scope="module", params=[{"subpixel": "none"}, {"subpixel": "gaussian", "scales": (1.0, 0.5)}],
                ids=["integer", "subpixel-pyramid"])
def exported(tmp_path_factory, request):
    extractor = make_extractor(random_state_dict("v6", seed=3), max_keypoints=K, **request.param)
    path = export_onnx(extractor, tmp_path_factory.mktemp("onnx") / "sp.onnx", HEIGHT, WIDTH, batch="dynamic")
    return extractor, path


def test_onnx_runtime_reproduces_extractor(exported, photo_gray):
    extractor, path = exported
    photo = photo_gray[:HEIGHT, :WIDTH]
    images = np.stack([photo, photo[::-1]]).astype(np.float32)[:, None] / 255.0  # two images: dynamic batch
    outputs = run_onnx(path, images)
    assert outputs["keypoints"].shape == (2, K, 2) and outputs["scores"].shape == (2, K)
    assert outputs["descriptors"].shape == (2, K, 256) and outputs["valid"].dtype == bool
    reference = extractor([image[0] for image in images])  # the public API, fixed-K mode
    for i, features in enumerate(reference):
        features = features.numpy()
        assert features.valid.sum() > 60, "a real photo with trained-looking weights gives many keypoints"
        ours = _valid_sorted(*(outputs[k][i] for k in ("keypoints", "scores", "descriptors", "valid")))
        theirs = _valid_sorted(features.keypoints, features.scores, features.descriptors, features.valid)
        np.testing.assert_allclose(ours[0], theirs[0], atol=1e-4)
        np.testing.assert_allclose(ours[1], theirs[1], atol=1e-5)
        np.testing.assert_allclose(ours[2], theirs[2], atol=1e-4)
    stats = compare_with_extractor(outputs, extractor, images)
    assert stats["unmatched"] == 0 and stats["count_mismatch"] == 0
    single = run_onnx(path, images[:1])
    np.testing.assert_array_equal(single["valid"], outputs["valid"][:1])


def test_onnx_metadata(exported):
    extractor, path = exported
    meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert meta["weights"] == extractor.weights_description
    assert json.loads(meta["image_size"]) == [HEIGHT, WIDTH]
    assert json.loads(meta["detection_config"])["max_keypoints"] == K and meta["batch"] == "dynamic"


def test_export_cli_checks_the_model(tmp_path, capsys):
    import torch

    weights = tmp_path / "v1.pth"
    torch.save(random_state_dict("v1", seed=4), weights)  # v1: legacy descriptor sampling
    args = ["--weights", str(weights), "--output", str(tmp_path / "m.onnx"), "--height", "64", "--width", "88",
            "--max_keypoints", "32", "--exporter", "torchscript"]  # the faster exporter keeps this test short
    assert main(args) == 0
    assert "OK" in capsys.readouterr().out
    assert main(["--weights", str(weights), "--output", str(tmp_path / "m.txt")]) == 2
    assert main(["--weights", str(weights), "--output", str(tmp_path / "m.onnx"), "--batch", "two"]) == 2


def test_export_needs_fixed_k():
    from superpoint_training import Extractor

    with pytest.raises(ValueError, match="fixed-K"):
        ExportModule(Extractor(random_state_dict("v6"), device="cpu", warmup=False))
