"""Detector and descriptor losses on hand-made cases."""

from __future__ import annotations

import math

import torch

from superpoint_training.training.losses import (
    DUSTBIN,
    cell_valid_mask,
    descriptor_loss,
    detector_labels,
    detector_loss,
)


def test_labels_keypoint_bin_and_dustbin():
    kmap = torch.zeros(1, 16, 16)
    kmap[0, 3, 5] = 1  # cell (0, 0), bin 3 * 8 + 5
    kmap[0, 8 + 7, 8 + 0] = 1  # cell (1, 1), bin 7 * 8 + 0
    labels = detector_labels(kmap)
    assert labels.shape == (1, 2, 2)
    assert labels[0, 0, 0] == 29 and labels[0, 1, 1] == 56
    assert labels[0, 0, 1] == DUSTBIN and labels[0, 1, 0] == DUSTBIN


def test_several_keypoints_in_a_cell_pick_one_at_random():
    kmap = torch.zeros(1, 8, 8)
    kmap[0, 1, 1] = kmap[0, 6, 2] = 1
    picks = {int(detector_labels(kmap, torch.Generator().manual_seed(s))[0, 0, 0]) for s in range(40)}
    assert picks == {9, 50}


def test_loss_value_and_valid_cells():
    kmap = torch.zeros(1, 8, 16)
    kmap[0, 2, 3] = 1  # cell 0 -> bin 19; cell 1 -> dustbin
    logits = torch.zeros(1, 65, 1, 2)
    logits[0, 19, 0, 0] = 10.0
    logits[0, DUSTBIN, 0, 1] = 10.0
    expected = -torch.log_softmax(logits[0, :, 0, 0], 0)[19]
    assert torch.isclose(detector_loss(logits, kmap), expected, atol=1e-6)
    uniform = torch.zeros(1, 65, 1, 2)
    assert math.isclose(float(detector_loss(uniform, kmap)), math.log(65), rel_tol=1e-6)
    # a wrong prediction in an invalid cell does not count: one invalid pixel invalidates the cell
    bad = logits.clone()
    bad[0, :, 0, 1] = 0
    bad[0, 0, 0, 1] = 20.0
    valid = torch.ones(1, 8, 16)
    valid[0, 7, 15] = 0
    assert cell_valid_mask(valid, (1, 1, 2)).tolist() == [[[1.0, 0.0]]]
    assert torch.isclose(detector_loss(bad, kmap, valid), expected, atol=1e-6)
    assert float(detector_loss(bad, kmap)) > 5
    assert float(detector_loss(bad, kmap, torch.zeros(1, 8, 16))) == 0.0


def test_loss_is_differentiable():
    logits = torch.randn(2, 65, 3, 4, requires_grad=True)
    detector_loss(logits, (torch.rand(2, 24, 32) > 0.98).float()).backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all()


def test_descriptor_loss_identity_homography():
    torch.manual_seed(0)
    b, d, hc, wc = 1, 16, 3, 4
    desc = torch.randn(b, d, hc, wc)
    eye = torch.eye(3)[None]
    # perfect descriptors: one-hot per cell, so positives have d = 1 and negatives d = 0
    onehot = torch.eye(hc * wc)[:, :].reshape(hc * wc, hc, wc)[None]
    assert float(descriptor_loss(onehot, onehot, eye, lambda_d=250)) == 0.0
    # all-identical descriptors: every negative pair costs 1 - 0.2
    same = torch.ones(b, d, hc, wc)
    n = hc * wc
    assert math.isclose(float(descriptor_loss(same, same, eye)), (n * n - n) * 0.8 / (n * n), rel_tol=1e-5)
    # opposite descriptors at corresponding cells: each positive costs lambda_d * 2
    loss = descriptor_loss(onehot, -onehot, eye, lambda_d=1.0)
    assert math.isclose(float(loss), n * 2.0 / (n * n), rel_tol=1e-5)
    value = descriptor_loss(desc.requires_grad_(), desc, eye)
    value.backward()
    assert torch.isfinite(desc.grad).all()


def test_descriptor_loss_follows_the_homography():
    hc, wc = 2, 3
    n = hc * wc
    onehot = torch.eye(n).reshape(n, hc, wc)[None]
    shift = torch.tensor([[[1.0, 0, 8], [0, 1, 0], [0, 0, 1]]])  # image 1 = image 0 moved 8 px right
    shifted = torch.roll(onehot, 1, dims=3)  # cell (y, x) of image 0 sits at (y, x + 1) in image 1
    assert float(descriptor_loss(onehot, shifted, shift, lambda_d=1.0, negative_margin=0.2)) < float(
        descriptor_loss(onehot, onehot, shift, lambda_d=1.0)
    )
    valid = torch.zeros(1, 16, 24)
    assert float(descriptor_loss(onehot, onehot, shift, valid)) == 0.0
