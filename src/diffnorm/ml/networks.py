"""Convolutional networks for γ (plain ``torch.nn``; training lives elsewhere).

All networks use *valid* 3×3 convolutions: an input with a halo of ``net.halo`` cells on each
side (built from the grid topology, see :mod:`diffnorm.ml.halo`) gives an output of the grid's
size, so any grid size works and nothing is invented at the borders.

The study's reference is ``ResidualCNN()``: 3×3 convolutions with 64 channels, BatchNorm and
ELU; an input layer, 4 blocks of 2 layers with additive skips, an output layer: 10 layers and
299 521 parameters with 4 input channels.
"""

from __future__ import annotations

import torch
from torch import nn

ACTIVATIONS = {
    "relu": nn.ReLU,
    "leakyrelu": nn.LeakyReLU,
    "prelu": nn.PReLU,
    "elu": nn.ELU,
    "softplus": nn.Softplus,
}
NORMS = ("batch", "group", "none")
SKIPS = ("add", "concat", "none")


def make_activation(name: str) -> nn.Module:
    try:
        return ACTIVATIONS[name.lower()]()
    except KeyError:
        raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {name!r}") from None


def make_norm(name: str, channels: int) -> nn.Module:
    if name == "batch":
        return nn.BatchNorm2d(channels)
    if name == "group":
        return nn.GroupNorm(min(8, channels), channels)
    if name == "none":
        return nn.Identity()
    raise ValueError(f"norm must be one of {NORMS}, got {name!r}")


def crop(x: torch.Tensor, k: int) -> torch.Tensor:
    """Remove ``k`` cells from every side of ``(…, H, W)``."""
    return x[..., k:-k, k:-k] if k > 0 else x


class ConvLayer(nn.Sequential):
    """Valid 3×3 convolution, normalization, activation."""

    def __init__(self, cin: int, cout: int, norm: str, activation: str, dilation: int = 1):
        super().__init__(
            nn.Conv2d(cin, cout, 3, dilation=dilation),
            make_norm(norm, cout),
            make_activation(activation),
        )
        self.shrink = dilation


class ResidualCNN(nn.Module):
    """Input layer, ``blocks`` blocks of ``layers_per_block`` layers, output layer.

    ``skip="add"`` adds each block's (cropped) input to its output (the study's network),
    ``"concat"`` concatenates them (the next block sees twice the channels), ``"none"`` is the
    plain CNN of the same depth.
    """

    def __init__(
        self,
        in_channels: int = 4,
        width: int = 64,
        blocks: int = 4,
        layers_per_block: int = 2,
        activation: str = "elu",
        norm: str = "batch",
        skip: str = "add",
        dilation: int = 1,
    ):
        super().__init__()
        if skip not in SKIPS:
            raise ValueError(f"skip must be one of {SKIPS}, got {skip!r}")
        if min(in_channels, width, layers_per_block) < 1 or blocks < 0 or dilation < 1:
            raise ValueError("in_channels, width, layers_per_block, dilation >= 1; blocks >= 0")
        self.in_channels = in_channels
        self.skip = skip
        self.stem = ConvLayer(in_channels, width, norm, activation)
        self.blocks = nn.ModuleList()
        channels = width
        for _ in range(blocks):
            layers = [ConvLayer(channels, width, norm, activation, dilation)]
            layers += [
                ConvLayer(width, width, norm, activation, dilation)
                for _ in range(layers_per_block - 1)
            ]
            self.blocks.append(nn.Sequential(*layers))
            channels = 2 * width if skip == "concat" else width
        self.head = nn.Conv2d(channels, 1, 3)
        self.block_shrink = layers_per_block * dilation
        self.halo = 2 + blocks * self.block_shrink

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H + 2·halo, W + 2·halo)`` → ``(B, 1, H, W)``."""
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"expected input (batch, {self.in_channels}, H, W), got {tuple(x.shape)}"
            )
        if min(x.shape[-2:]) <= 2 * self.halo:
            raise ValueError(
                f"input {tuple(x.shape[-2:])} is not larger than twice the network's halo "
                f"({self.halo} cells): pad the grid with its halo first"
            )
        y = self.stem(x)
        for block in self.blocks:
            z = block(y)
            if self.skip == "add":
                y = z + crop(y, self.block_shrink)
            elif self.skip == "concat":
                # the block input's newest features (the stem's or the previous block's) ride along
                y = torch.cat([crop(y[:, -z.shape[1] :], self.block_shrink), z], dim=1)
            else:
                y = z
        return self.head(y)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
