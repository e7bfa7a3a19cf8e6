"""A slow, obviously correct SuperPoint written from the definitions, for equivalence tests.

It shares no code with the package: the network runs as plain functional convolutions read from
the state dict, and everything after it is numpy with explicit index arithmetic and a Python loop
over keypoints for bilinear sampling. It follows SuperGlue's ``models/superpoint.py`` (v1 weights)
and rpautrat's ``superpoint_pytorch.py`` (v6 weights) step by step, at any image size as they
do: the network runs on the whole image (its 2x2 max-pools floor, so the maps are
floor(H/8) x floor(W/8)), the score map is the depth-to-space of those cells (8 floor(H/8) rows,
8 floor(W/8) columns; the last H mod 8 rows and W mod 8 columns have no score), the border is
counted from the score map's edges, and descriptors are sampled with the descriptor map's size.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def _v1_forward(state, image):
    x = image
    for i, name in enumerate("1234"):
        for half in "ab":
            x = F.relu(F.conv2d(x, state[f"conv{name}{half}.weight"], state[f"conv{name}{half}.bias"], padding=1))
        if i < 3:
            x = F.max_pool2d(x, 2)
    logits = F.conv2d(F.relu(F.conv2d(x, state["convPa.weight"], state["convPa.bias"], padding=1)),
                      state["convPb.weight"], state["convPb.bias"])
    desc = F.conv2d(F.relu(F.conv2d(x, state["convDa.weight"], state["convDa.bias"], padding=1)),
                    state["convDb.weight"], state["convDb.bias"])
    return logits, desc


def _v6_block(state, prefix, x, relu=True):
    weight = state[f"{prefix}.conv.weight"]
    x = F.conv2d(x, weight, state[f"{prefix}.conv.bias"], padding=weight.shape[-1] // 2)
    if relu:
        x = F.relu(x)
    mean, var = state[f"{prefix}.bn.running_mean"], state[f"{prefix}.bn.running_var"]
    gamma, beta = state[f"{prefix}.bn.weight"], state[f"{prefix}.bn.bias"]
    return (x - mean[:, None, None]) / torch.sqrt(var[:, None, None] + 1e-3) * gamma[:, None, None] + beta[:, None, None]


def _v6_forward(state, image):
    x = image
    for stage in range(4):
        x = _v6_block(state, f"backbone.{stage}.0", x)
        x = _v6_block(state, f"backbone.{stage}.1", x)
        if stage < 3:
            x = F.max_pool2d(x, 2)
    logits = _v6_block(state, "detector.1", _v6_block(state, "detector.0", x), relu=False)
    desc = _v6_block(state, "descriptor.1", _v6_block(state, "descriptor.0", x), relu=False)
    return logits, desc


def _max_filter(a: np.ndarray, r: int) -> np.ndarray:
    padded = np.pad(a, r, mode="constant", constant_values=-np.inf)
    windows = np.lib.stride_tricks.sliding_window_view(padded, (2 * r + 1, 2 * r + 1))
    return windows.max(axis=(-1, -2))


def _nms(scores: np.ndarray, r: int) -> np.ndarray:
    zeros = np.zeros_like(scores)
    max_mask = scores == _max_filter(scores, r)
    for _ in range(2):
        supp_mask = _max_filter(max_mask.astype(np.float64), r) > 0
        supp_scores = np.where(supp_mask, zeros, scores)
        new_max_mask = supp_scores == _max_filter(supp_scores, r)
        max_mask = max_mask | (new_max_mask & ~supp_mask)
    return np.where(max_mask, scores, zeros)


def _bilinear(desc: np.ndarray, u: float, v: float) -> np.ndarray:
    """Sample desc (D, h, w) at continuous pixel coordinates (u, v), zeros outside the grid."""
    d, h, w = desc.shape
    x0, y0 = int(np.floor(u)), int(np.floor(v))
    out = np.zeros(d)
    for dy in (0, 1):
        for dx in (0, 1):
            x, y = x0 + dx, y0 + dy
            weight = (1 - abs(u - x)) * (1 - abs(v - y))
            if 0 <= x < w and 0 <= y < h:
                out += weight * desc[:, y, x]
    return out


def reference_superpoint(state: dict, image: np.ndarray, variant: str, threshold=0.005, nms_radius=4,
                         border=4, max_keypoints=None):
    """image: (H, W) float in [0, 1], any H, W >= 8. Returns keypoints (N, 2) (x, y), scores (N,),
    descriptors (N, D), in descending score order."""
    state = {k: v.double() if v.is_floating_point() else v for k, v in state.items()}
    tensor = torch.from_numpy(image).double()[None, None]
    with torch.no_grad():
        logits, desc = (_v1_forward if variant == "v1" else _v6_forward)(state, tensor)
    logits, desc = logits[0].numpy(), desc[0].numpy()
    e = np.exp(logits - logits.max(axis=0))
    probs = (e / e.sum(axis=0))[:-1]
    hc, wc = probs.shape[1:]
    assert (hc, wc) == (image.shape[0] // 8, image.shape[1] // 8), "max-pools floor: floor(H/8) cells"
    scores = np.zeros((hc * 8, wc * 8))
    for c in range(64):  # channel c of cell (i, j) is pixel (8 i + c // 8, 8 j + c % 8)
        scores[c // 8::8, c % 8::8] = probs[c]
    scores = _nms(scores, nms_radius)
    H, W = scores.shape  # SuperGlue's remove_borders(h*8, w*8); rpautrat's scores[:, -pad:] on this map
    ys, xs = np.nonzero(scores > threshold)
    keep = (ys >= border) & (ys < H - border) & (xs >= border) & (xs < W - border)
    ys, xs = ys[keep], xs[keep]
    values = scores[ys, xs]
    order = np.argsort(-values, kind="stable")
    if max_keypoints is not None:
        order = order[:max_keypoints]
    ys, xs, values = ys[order], xs[order], values[order]
    desc = desc / np.linalg.norm(desc, axis=0, keepdims=True)
    descriptors = []
    for x, y in zip(xs, ys, strict=True):
        if variant == "v1":  # SuperGlue: align_corners=True on a grid scaled to 8 W - 4.5
            gx = (x - 4 + 0.5) / (wc * 8 - 4 - 0.5)
            gy = (y - 4 + 0.5) / (hc * 8 - 4 - 0.5)
            u, v = gx * (wc - 1), gy * (hc - 1)
        else:  # v6: align_corners=False at ((x + 0.5) / (8 wc)) * 2 - 1
            u = (x + 0.5) / (wc * 8) * wc - 0.5
            v = (y + 0.5) / (hc * 8) * hc - 0.5
        d = _bilinear(desc, u, v)
        descriptors.append(d / np.linalg.norm(d))
    keypoints = np.stack([xs, ys], axis=1).astype(np.float64)
    return keypoints, values, np.array(descriptors).reshape(len(xs), desc.shape[0])
