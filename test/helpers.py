"""Helpers shared by the tests (imported as ``helpers``; the folder is on sys.path under pytest)."""

from __future__ import annotations

import torch

from superpoint_training.model.network import ModelConfig, SuperPoint


def random_state_dict(variant: str, seed: int = 0, dustbin_bias: float = 4.0) -> dict[str, torch.Tensor]:
    """Random weights in the layout of ``variant`` whose scores look like a trained net's.

    The dustbin gets a positive bias so that most cells are "no point" and the few keypoints above
    threshold have distinct scores (NMS ties do not decide the result). v6 gets random BatchNorm
    statistics so that they matter.
    """
    torch.manual_seed(seed)
    model = SuperPoint(ModelConfig(variant=variant))
    state = model.state_dict()
    for key, value in state.items():
        if key.endswith("running_var"):
            state[key] = torch.rand_like(value) * 0.5 + 0.75
        elif key.endswith("running_mean"):
            state[key] = torch.randn_like(value) * 0.05
        elif key.endswith("bn.weight"):
            state[key] = torch.rand_like(value) + 0.5
        elif key.endswith("bn.bias"):
            state[key] = torch.randn_like(value) * 0.05
    bias_key = "convPb.bias" if variant == "v1" else "detector.1.bn.bias"
    state[bias_key] = state[bias_key].clone()
    state[bias_key][-1] += dustbin_bias
    if variant == "v1":  # ML's weights have larger logits than a fresh init; widen the spread
        state["convPb.weight"] = state["convPb.weight"] * 8
    else:
        state["detector.1.bn.weight"] = state["detector.1.bn.weight"] * 8
    return state


def assert_same_features(actual, expected, score_atol: float = 1e-5, descriptor_atol: float = 1e-4,
                         position_atol: float = 1e-3, max_boundary_swaps: int | None = None) -> None:
    """Two extractions agree as sets of points, whatever order near-equal scores come in.

    Points are paired by position. A point of one set missing from the other is allowed only at the
    boundary of the other set (top-k or threshold): its score is within ``score_atol`` of the other
    set's lowest score, as when two CPUs' kernels round a tie differently. Paired points have scores
    within ``score_atol`` and descriptors within ``descriptor_atol``.
    """
    import numpy as np

    def arrays(features):
        return tuple(np.asarray(getattr(features, name), dtype=np.float64) for name in ("keypoints", "scores"))

    (ka, sa), (kb, sb) = arrays(actual), arrays(expected)
    assert np.all(np.diff(sa) <= score_atol) and np.all(np.diff(sb) <= score_atol), "scores not descending"
    distance = np.abs(ka[:, None, :] - kb[None, :, :]).max(-1) if len(ka) and len(kb) else np.zeros((len(ka), len(kb)))
    ia, ib = np.nonzero(distance <= position_atol)
    assert len(set(ia)) == len(ia) and len(set(ib)) == len(ib), "several points at one position"
    limit = max(2, len(kb) // 50) if max_boundary_swaps is None else max_boundary_swaps
    for scores, other, paired, name in ((sa, sb, ia, "actual"), (sb, sa, ib, "expected")):
        missing = np.setdiff1d(np.arange(len(scores)), paired)
        assert len(missing) <= limit, f"{len(missing)} points of {name} have no partner (of {len(scores)})"
        if len(missing):
            floor = other.min() if len(other) else np.inf
            assert np.all(scores[missing] <= floor + score_atol), (
                f"{name} has points away from the other set's boundary: scores {scores[missing]} vs lowest {floor}")
    np.testing.assert_allclose(sa[ia], sb[ib], atol=score_atol)
    da = np.asarray(actual.descriptors, dtype=np.float64)
    db = np.asarray(expected.descriptors, dtype=np.float64)
    if da.size and db.size:
        np.testing.assert_allclose(da[ia], db[ib], atol=descriptor_atol)
