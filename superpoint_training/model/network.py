"""The SuperPoint network in its two published layouts.

Both layouts share the VGG-style encoder and the two heads of the paper (DeTone et al., 2018):
8 conv 3x3 layers (64, 64, 64, 64, 128, 128, 128, 128) with a 2x2 max-pool after the 2nd, 4th and
6th, a detector head (conv 3x3 to 256, conv 1x1 to 65) and a descriptor head (conv 3x3 to 256,
conv 1x1 to the descriptor size).

- ``"v1"``: Magic Leap's ``superpoint_v1.pth`` layout (``conv1a`` ... ``convDb``), ReLU after every
  conv except the two 1x1 heads, no BatchNorm.
- ``"v6"``: rpautrat's ``superpoint_v6_from_tf.pth`` layout (``backbone.*``, ``detector.*``,
  ``descriptor.*``): each conv is followed by ReLU then BatchNorm (eps 1e-3); the 1x1 heads have
  BatchNorm but no ReLU. The project trains this layout.

The network returns raw head outputs; post-processing lives in :mod:`superpoint_training.model.keypoints`.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import asdict, dataclass

import torch
from torch import nn

STRIDE = 8
ENCODER_CHANNELS = (64, 64, 128, 128)
HEAD_CHANNELS = 256
VARIANTS = ("v1", "v6")


@dataclass(frozen=True)
class ModelConfig:
    """``batchnorm_momentum`` (v6 only) is PyTorch's: the weight of the new batch in the running
    statistics. TensorFlow's ``momentum`` is the weight of the old value, so the reference's TF
    default 0.99 is 0.01 here; PyTorch's default 0.1 is what the shipped weights were trained with.
    It changes training only (evaluation uses the stored running statistics)."""

    variant: str = "v6"
    descriptor_dim: int = 256  # 0: detector only (MagicPoint)
    batchnorm_momentum: float = 0.1

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise ValueError(f"model.variant must be one of {VARIANTS}, got {self.variant!r}")
        if self.descriptor_dim < 0:
            raise ValueError(f"model.descriptor_dim must be >= 0, got {self.descriptor_dim}")
        if not 0.0 < float(self.batchnorm_momentum) <= 1.0:
            raise ValueError(f"model.batchnorm_momentum must be in (0, 1] (PyTorch's convention: TF's 0.99 is "
                             f"0.01), got {self.batchnorm_momentum}")

    def to_dict(self) -> dict:
        """The fields as stored in checkpoints; ``batchnorm_momentum`` only when it is not PyTorch's
        default, so that checkpoints written before the key existed compare equal (resume, interpolation)."""
        values = asdict(self)
        if values["batchnorm_momentum"] == ModelConfig.batchnorm_momentum:
            del values["batchnorm_momentum"]
        return values


class _ConvReluBN(nn.Sequential):
    """v6 block: conv, optional ReLU, BatchNorm (the order of the TF reference)."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int, relu: bool = True, momentum: float = 0.1):
        super().__init__(
            OrderedDict(
                conv=nn.Conv2d(c_in, c_out, kernel_size, padding=kernel_size // 2),
                activation=nn.ReLU(inplace=True) if relu else nn.Identity(),
                bn=nn.BatchNorm2d(c_out, eps=1e-3, momentum=momentum),
            )
        )


def _build_v6(descriptor_dim: int, momentum: float = 0.1) -> nn.ModuleDict:
    channels = (1, *ENCODER_CHANNELS)
    stages = []
    for i in range(1, len(channels)):
        layers = [_ConvReluBN(channels[i - 1], channels[i], 3, momentum=momentum),
                  _ConvReluBN(channels[i], channels[i], 3, momentum=momentum)]
        if i < len(channels) - 1:
            layers.append(nn.MaxPool2d(2, 2))
        stages.append(nn.Sequential(*layers))
    parts = {
        "backbone": nn.Sequential(*stages),
        "detector": nn.Sequential(
            _ConvReluBN(channels[-1], HEAD_CHANNELS, 3, momentum=momentum),
            _ConvReluBN(HEAD_CHANNELS, STRIDE**2 + 1, 1, relu=False, momentum=momentum),
        ),
    }
    if descriptor_dim:
        parts["descriptor"] = nn.Sequential(
            _ConvReluBN(channels[-1], HEAD_CHANNELS, 3, momentum=momentum),
            _ConvReluBN(HEAD_CHANNELS, descriptor_dim, 1, relu=False, momentum=momentum),
        )
    return nn.ModuleDict(parts)


class SuperPoint(nn.Module):
    """SuperPoint (or MagicPoint when ``descriptor_dim == 0``).

    ``forward(image)`` takes a (B, 1, H, W) float image in [0, 1] with H and W multiples of 8 and
    returns ``(logits, descriptors)``: detector logits (B, 65, H/8, W/8) and raw (not normalised)
    dense descriptors (B, D, H/8, W/8), or ``None`` for a detector-only model or when
    ``with_descriptors`` is False (detection alone skips the descriptor head).
    """

    def __init__(self, config: ModelConfig | None = None):
        super().__init__()
        self.config = config or ModelConfig()
        if self.config.variant == "v6":
            parts = _build_v6(self.config.descriptor_dim, float(self.config.batchnorm_momentum))
            self.backbone = parts["backbone"]
            self.detector = parts["detector"]
            self.descriptor = parts["descriptor"] if "descriptor" in parts else None
        else:
            c1, c2, c3, c4 = ENCODER_CHANNELS
            pairs = [("1", 1, c1), ("2", c1, c2), ("3", c2, c3), ("4", c3, c4)]
            for name, c_in, c_out in pairs:
                setattr(self, f"conv{name}a", nn.Conv2d(c_in, c_out, 3, padding=1))
                setattr(self, f"conv{name}b", nn.Conv2d(c_out, c_out, 3, padding=1))
            self.convPa = nn.Conv2d(c4, HEAD_CHANNELS, 3, padding=1)
            self.convPb = nn.Conv2d(HEAD_CHANNELS, STRIDE**2 + 1, 1)
            if self.config.descriptor_dim:
                self.convDa = nn.Conv2d(c4, HEAD_CHANNELS, 3, padding=1)
                self.convDb = nn.Conv2d(HEAD_CHANNELS, self.config.descriptor_dim, 1)

    @property
    def has_descriptor(self) -> bool:
        return self.config.descriptor_dim > 0

    def forward(self, image: torch.Tensor, with_descriptors: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.config.variant == "v6":
            features = self.backbone(image)
            logits = self.detector(features)
            descriptors = self.descriptor(features) if with_descriptors and self.descriptor is not None else None
            return logits, descriptors
        relu = torch.relu
        x = image
        for i, name in enumerate("1234"):
            x = relu(getattr(self, f"conv{name}a")(x))
            x = relu(getattr(self, f"conv{name}b")(x))
            if i < 3:
                x = nn.functional.max_pool2d(x, 2, 2)
        logits = self.convPb(relu(self.convPa(x)))
        descriptors = self.convDb(relu(self.convDa(x))) if with_descriptors and self.has_descriptor else None
        return logits, descriptors
