"""The reference descriptor loss (``loss.descriptor: reference``) against a slow version written
from its definition (rpautrat/SuperPoint ``models/utils.py::descriptor_loss`` since 2019-11-25):
plain loops in float64 over every pair of cells."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from superpoint_training.common.config import ConfigError
from superpoint_training.training.losses import descriptor_loss


def slow_reference_loss(desc0, desc1, homography, valid_mask, lambda_d, positive_margin, negative_margin):
    """desc0, desc1 (B, D, Hc, Wc); homography (B, 3, 3) on (x, y) pixels; valid_mask (B, 8 Hc, 8 Wc)."""
    desc0, desc1 = np.asarray(desc0, np.float64), np.asarray(desc1, np.float64)
    b, d, hc, wc = desc0.shape
    cells = [(y, x) for y in range(hc) for x in range(wc)]  # row-major, as the reference's reshape
    total, normalization = 0.0, 0.0
    for i in range(b):
        H = np.asarray(homography[i], np.float64)

        def unit(desc, y, x, i=i):
            v = desc[i, :, y, x]
            return v / math.sqrt(max(float(v @ v), 1e-12))

        # ReLU of the cosines of every pair (cell of image 0, cell of image 1)
        sim = np.zeros((len(cells), len(cells)))
        for a, (y0, x0) in enumerate(cells):
            for c, (y1, x1) in enumerate(cells):
                sim[a, c] = max(0.0, float(unit(desc0, y0, x0) @ unit(desc1, y1, x1)))
        # L2-normalise over the cells of image 1 for each cell of image 0 ...
        for a in range(len(cells)):
            norm = math.sqrt(max(sum(sim[a, c] ** 2 for c in range(len(cells))), 1e-12))
            for c in range(len(cells)):
                sim[a, c] /= norm
        # ... then over the cells of image 0 for each cell of image 1
        for c in range(len(cells)):
            norm = math.sqrt(max(sum(sim[a, c] ** 2 for a in range(len(cells))), 1e-12))
            for a in range(len(cells)):
                sim[a, c] /= norm
        # a cell of image 1 counts when its 64 pixels are all valid
        valid = [float(np.all(valid_mask[i, 8 * y : 8 * y + 8, 8 * x : 8 * x + 8] > 0)) for y, x in cells]
        for a, (y0, x0) in enumerate(cells):
            p = H @ np.array([8 * x0 + 4, 8 * y0 + 4, 1.0])
            wx, wy = p[0] / p[2], p[1] / p[2]
            for c, (y1, x1) in enumerate(cells):
                s = 1.0 if math.hypot(wx - (8 * x1 + 4), wy - (8 * y1 + 4)) <= 7.5 else 0.0
                term = lambda_d * s * max(0.0, positive_margin - sim[a, c])
                term += (1 - s) * max(0.0, sim[a, c] - negative_margin)
                total += valid[c] * term
        normalization += sum(valid) * len(cells)
    return total / normalization


def random_case(seed: int, b: int = 2, d: int = 6, hc: int = 3, wc: int = 4):
    generator = torch.Generator().manual_seed(seed)
    desc0 = torch.randn(b, d, hc, wc, generator=generator)
    # image 1's descriptors: image 0's shifted by one cell plus noise, so that positives are not all equal
    desc1 = torch.roll(desc0, 1, dims=3) + 0.5 * torch.randn(b, d, hc, wc, generator=generator)
    homography = torch.eye(3).repeat(b, 1, 1)
    homography[:, 0, 2] = 8.0  # 8 px to the right ...
    homography[-1, 0, 1] = 0.05  # ... with a shear and a little perspective on the last
    homography[-1, 2, 0] = 0.002
    valid = torch.ones(b, 8 * hc, 8 * wc)
    valid[0, :, -3:] = 0  # the last column of cells of image 1 is (partly) outside the warp
    valid[-1, 5, 9] = 0
    return desc0, desc1, homography, valid


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("lambda_d, positive_margin, negative_margin", [(800.0, 1.0, 0.2), (0.05, 1.0, 0.2),
                                                                         (3.0, 0.3, 0.05)])
def test_reference_loss_matches_the_slow_definition(seed, lambda_d, positive_margin, negative_margin):
    desc0, desc1, homography, valid = random_case(seed)
    fast = descriptor_loss(desc0, desc1, homography, valid, lambda_d=lambda_d, positive_margin=positive_margin,
                           negative_margin=negative_margin, similarity="reference")
    slow = slow_reference_loss(desc0.numpy(), desc1.numpy(), homography.numpy(), valid.numpy(), lambda_d,
                               positive_margin, negative_margin)
    assert fast.item() == pytest.approx(slow, rel=1e-5)
    # and it is not the plain-cosine loss (the normalisations change the value)
    cosine = descriptor_loss(desc0, desc1, homography, valid, lambda_d=lambda_d, positive_margin=positive_margin,
                             negative_margin=negative_margin)
    assert abs(cosine.item() - slow) > 1e-3 * max(abs(slow), 1e-6)


def test_reference_loss_without_mask_zero_descriptors_and_gradient():
    desc0, desc1, homography, _ = random_case(2, b=1)
    ones = np.ones((1, 24, 32))
    fast = descriptor_loss(desc0, desc1, homography, None, lambda_d=800.0, similarity="reference")
    assert fast.item() == pytest.approx(slow_reference_loss(desc0, desc1, homography, ones, 800.0, 1.0, 0.2), rel=1e-5)
    # all-zero descriptors (a dead head) and anti-correlated ones (ReLU: all zero) stay finite with finite gradients
    zeros = torch.zeros(1, 6, 3, 4, requires_grad=True)
    loss = descriptor_loss(zeros, zeros, homography, similarity="reference")
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(zeros.grad).all()
    assert loss.item() == pytest.approx(slow_reference_loss(np.zeros((1, 6, 3, 4)), np.zeros((1, 6, 3, 4)),
                                                            homography, ones, 250.0, 1.0, 0.2), rel=1e-6)
    raw = desc0.clone().requires_grad_()
    descriptor_loss(raw, desc1, homography, similarity="reference", lambda_d=800.0).backward()
    assert torch.isfinite(raw.grad).all() and raw.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="similarity"):
        descriptor_loss(desc0, desc1, homography, similarity="relu")


def test_superpoint_coco_uses_the_reference_loss_and_the_task_names_the_choices(caplog):
    from superpoint_training.training.superpoint_task import DESCRIPTOR_LOSSES, SuperPointTask
    from superpoint_training.training.trainer import build_config

    assert DESCRIPTOR_LOSSES[0] == "reference" and {"dense_hinge", "sampled_info_nce"} <= set(DESCRIPTOR_LOSSES)
    config = build_config("config/superpoint_coco.yaml")
    assert config["loss"]["descriptor"] == "reference" and config["loss"]["preset"] == "v6_release"
    SuperPointTask(config, torch.device("cpu"))
    bad = build_config("config/superpoint_coco.yaml", ["loss.descriptor=referense"])
    with pytest.raises(ConfigError, match=r"loss.descriptor: 'referense' is not one of reference, dense_hinge"):
        SuperPointTask(bad, torch.device("cpu"))
    # a preset tuned for one loss, used with another, is said
    caplog.clear()
    SuperPointTask(build_config("config/superpoint_coco.yaml", ["loss.descriptor=dense_hinge"]), torch.device("cpu"))
    assert "loss.preset v6_release was tuned for loss.descriptor reference; this run uses dense_hinge" in caplog.text
    caplog.clear()
    SuperPointTask(config, torch.device("cpu"))
    assert "was tuned for" not in caplog.text
