"""Helpers shared by the tests (imported as ``helpers``; the folder is on sys.path under pytest)."""

from __future__ import annotations

import torch

from superpoint_training.model import ModelConfig, SuperPoint


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
