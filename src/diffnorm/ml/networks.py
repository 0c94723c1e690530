"""Convolutional networks for γ (plain ``torch.nn``; training lives elsewhere).

All networks use *valid* 3×3 convolutions: an input with a halo of ``net.halo`` cells on each
side (built from the grid topology, see :mod:`diffnorm.ml.halo`) gives an output of the grid's
size, so any grid size works and nothing is invented at the borders.

The study's reference is ``ResidualCNN()``: 3×3 convolutions with 64 channels, BatchNorm and
ELU; an input layer, 4 blocks of 2 layers with additive skips, an output layer: 10 layers and
299 521 parameters with 4 input channels. ``UNet`` is the encoder–decoder baseline: its
receptive field is the whole grid, so its halo is a choice, and tiles do not reproduce a
whole-grid prediction exactly (``exact_tiling`` is False).

Every network has ``in_channels``, ``halo``, ``exact_tiling`` and ``wrap_context`` and maps
``(B, C, H + 2·halo, W + 2·halo)`` to ``(B, 1, H, W)``; :func:`build_network` makes one from a
plain dict, which is how model files store the architecture.
"""

from __future__ import annotations

import copy

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
            raise ValueError(
                "in_channels, width, layers_per_block and dilation must be >= 1 and blocks >= 0, "
                f"got {in_channels}, {width}, {layers_per_block}, {dilation} and {blocks}"
            )
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
        self.halo = residual_halo(blocks, layers_per_block, dilation)

    exact_tiling = True  # valid convolutions: a tile with its halo sees all it needs
    wrap_context = (0, 0)  # nor does a periodic grid need more than its halo

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H + 2·halo, W + 2·halo)`` → ``(B, 1, H, W)``."""
        check_input(x, self.in_channels, self.halo)
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


def residual_halo(blocks: int, layers_per_block: int, dilation: int = 1) -> int:
    """Cells each side of the grid that :class:`ResidualCNN` consumes: stem, head, blocks."""
    return 2 + blocks * layers_per_block * dilation


def check_input(x: torch.Tensor, in_channels: int, halo: int) -> None:
    if torch.jit.is_tracing():  # shapes are symbolic in an export; the caller checked them
        return
    if x.ndim != 4 or x.shape[1] != in_channels:
        raise ValueError(f"expected input (batch, {in_channels}, H, W), got {tuple(x.shape)}")
    if min(x.shape[-2:]) <= 2 * halo:
        raise ValueError(
            f"input {tuple(x.shape[-2:])} is not larger than twice the network's halo "
            f"({halo} cells): pad the grid with its halo first"
        )


class UNet(nn.Module):
    """Encoder–decoder baseline: ``levels`` 2× poolings, two same-padded 3×3 layers per level,
    channels doubling with depth, concatenated skips. The padded input is extended to a
    multiple of ``2**levels`` (replicating its last row/column) and the halo cropped at the end.
    """

    exact_tiling = False

    def __init__(
        self,
        in_channels: int = 5,
        width: int = 32,
        levels: int = 3,
        activation: str = "elu",
        norm: str = "batch",
        halo: int = 8,
    ):
        super().__init__()
        if min(in_channels, width, levels) < 1 or halo < 1:
            raise ValueError("in_channels, width, levels and halo must be >= 1")
        self.in_channels, self.levels, self.halo = in_channels, levels, halo

        def double(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(cin, cout, 3, padding=1),
                make_norm(norm, cout),
                make_activation(activation),
                nn.Conv2d(cout, cout, 3, padding=1),
                make_norm(norm, cout),
                make_activation(activation),
            )

        widths = [width * 2**k for k in range(levels + 1)]
        self.down = nn.ModuleList(
            [double(in_channels, widths[0])]
            + [double(widths[k], widths[k + 1]) for k in range(levels)]
        )
        self.up = nn.ModuleList(
            [nn.ConvTranspose2d(widths[k + 1], widths[k], 2, stride=2) for k in range(levels)]
        )
        self.merge = nn.ModuleList([double(2 * widths[k], widths[k]) for k in range(levels)])
        self.head = nn.Conv2d(widths[0], 1, 1)

    @property
    def wrap_context(self) -> tuple[int, int]:
        """Columns of wrapped input to add west and east of the halo on a periodic grid so that
        every cell's whole dependency set is real data: on a grid whose width is a multiple
        of ``2**levels`` the prediction is then the same wherever the seam is cut, in steps of
        ``2**levels`` columns (other shifts, or other widths, move the pooling lattice under
        the cells across the seam). With the halo alone, the cells next to a seam saw zero
        padding a few dozen columns out (up to 0.15 in log γ² on ORCA1). The west context is a
        multiple of ``2**levels``: the grid keeps its place in the pooling lattice."""
        m = 2**self.levels
        west, east = zip(*(unet_extent(self.levels, p) for p in range(m)), strict=True)
        pad = self.halo  # the grid's first cell sits at column ``pad`` of the padded input
        while any(pad + i < west[(pad + i) % m] for i in range(m)):
            pad += m
        return pad - self.halo, max(max(east), self.halo) - self.halo

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, self.in_channels, self.halo)
        h, w = x.shape[-2:]
        m = 2**self.levels
        x = nn.functional.pad(x, (0, -w % m, 0, -h % m), mode="replicate")
        skips = []
        for k, block in enumerate(self.down):
            x = block(x if k == 0 else nn.functional.max_pool2d(x, 2))
            skips.append(x)
        y = skips.pop()
        for k in reversed(range(self.levels)):
            y = self.merge[k](torch.cat([skips.pop(), self.up[k](y)], dim=1))
        y = self.head(y)[..., :h, :w]
        return crop(y, self.halo)

    def forward_periodic(self, x: torch.Tensor) -> torch.Tensor:
        """:meth:`forward` on a periodic strip: ``x`` holds the grid's own columns (a multiple
        of ``2**levels``) and its halo rows only; each block reads its input wrapped by one
        column per convolution and pads only along y. Every cell then sees the wrapped data
        :meth:`forward` sees with :attr:`wrap_context` columns on each side, so the output is
        the same (to the bit on ORCA1 in float32, to the convolutions' rounding elsewhere:
        ~5e-7 on small grids), from the grid's width instead of ~1.3× it (ORCA1-like forward
        pass 121 → 108 ms, medians of 31 interleaved calls). Only for networks whose blocks
        act per position but for their convolutions (:func:`strip_ready`: a group norm's
        statistics would count the wrapped columns twice). Returns ``(B, 1, H, W)``: the halo
        rows cropped."""
        if x.ndim != 4 or x.shape[1] != self.in_channels or x.shape[-2] <= 2 * self.halo:
            raise ValueError(
                f"expected input (batch, {self.in_channels}, H > {2 * self.halo}, W), got "
                f"{tuple(x.shape)}"
            )
        h, w = x.shape[-2:]
        m = 2**self.levels
        if w % m:
            raise ValueError(f"a periodic strip must be a multiple of {m} columns wide, got {w}")
        x = nn.functional.pad(x, (0, 0, 0, -h % m), mode="replicate")
        # the pooling lattice as in forward: the grid's column i at phase (halo + i) mod m
        phase = self.halo % m
        if phase:
            x = torch.roll(x, phase, dims=-1)
        skips = []
        for k, block in enumerate(self.down):
            x = periodic_block(block, x if k == 0 else nn.functional.max_pool2d(x, 2))
            skips.append(x)
        y = skips.pop()
        for k in reversed(range(self.levels)):
            y = periodic_block(self.merge[k], torch.cat([skips.pop(), self.up[k](y)], dim=1))
        y = self.head(y)[..., self.halo : h - self.halo, :]
        return torch.roll(y, -phase, dims=-1) if phase else y


def periodic_block(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """A U-Net block (3×3 same convolutions, norms, activations) on a strip that wraps in x:
    the input wrapped by as many columns as there are convolutions, each padded along y only
    (the ``Float32Block`` of a bfloat16 copy in float32, as its ``forward`` runs it)."""
    if isinstance(block, Float32Block):
        with torch.autocast(x.device.type, enabled=False):
            return periodic_block(block.block, x.float())
    if not strip_ready(block):
        raise ValueError(
            f"periodic_block: not a block of per-position layers and 3×3 convolutions: {block}"
        )
    k = sum(isinstance(layer, nn.Conv2d) for layer in block)
    w = x.shape[-1]
    if w >= k:  # two slices: an index_select along W of a channels-last tensor cost the gain
        x = torch.cat([x[..., -k:], x, x[..., :k]], dim=-1)
    else:  # at the deepest level a strip can be narrower than k: by index modulo the width
        x = x.index_select(-1, torch.arange(-k, w + k, device=x.device) % w)
    for layer in block:
        if isinstance(layer, nn.Conv2d):
            x = nn.functional.conv2d(x, layer.weight, layer.bias, padding=(1, 0))
        else:
            x = layer(x)
    return x


# layers that act on each position alone (with the convolutions, all a strip's block may hold)
PER_POSITION = (nn.BatchNorm2d, nn.Identity, *ACTIVATIONS.values())


def strip_ready(module: nn.Module) -> bool:
    """Whether every layer of ``module``'s blocks acts per position or is a plain same-padded
    3×3 convolution (stride, dilation and groups 1, zero padding): what
    :meth:`UNet.forward_periodic` can run on a wrapped strip."""

    def plain(conv: nn.Conv2d) -> bool:
        return (
            conv.kernel_size == (3, 3)
            and conv.padding == (1, 1)
            and conv.stride == (1, 1)
            and conv.dilation == (1, 1)
            and conv.groups == 1
            and conv.padding_mode == "zeros"
        )

    blocks = [*module.down, *module.merge] if isinstance(module, UNet) else [module]
    for block in blocks:
        inner = block.block if isinstance(block, Float32Block) else block
        if not isinstance(inner, nn.Sequential):
            return False
        for layer in inner:
            if isinstance(layer, nn.Conv2d):
                if not plain(layer):
                    return False
            elif not isinstance(layer, PER_POSITION):
                return False
    return True


def unet_extent(levels: int, phase: int) -> tuple[int, int]:
    """Input columns west and east of an output column that a :class:`UNet` with ``levels``
    poolings reads, for an output column at ``phase`` (its index mod ``2**levels`` in the
    padded input). Exact interval arithmetic over the layers (two same-padded 3×3
    convolutions per block, 2×2 pooling, 2×2 stride-2 transposed convolutions, skips); at
    most ``7·2**levels − 5``."""

    def down(k: int, lo: int, hi: int) -> tuple[int, int]:
        lo, hi = lo - 2, hi + 2  # the block's two 3×3 convolutions
        return (lo, hi) if k == 0 else down(k - 1, 2 * lo, 2 * hi + 1)  # through the pooling

    def up(k: int, lo: int, hi: int) -> tuple[int, int]:
        if k == levels:
            return down(levels, lo, hi)
        lo, hi = lo - 2, hi + 2  # the merge block
        skip, deeper = down(k, lo, hi), up(k + 1, lo // 2, hi // 2)
        return min(skip[0], deeper[0]), max(skip[1], deeper[1])

    m = 2**levels
    c = 8 * m * m + phase % m  # far from 0: floor division stays on one side
    lo, hi = up(0, c, c)
    return c - lo, hi - c


ARCHITECTURES = {"residual": ResidualCNN, "unet": UNet}


def build_network(arch: str, **kwargs) -> nn.Module:
    """``build_network("residual", in_channels=5, width=64, …)``; unknown keys are refused."""
    try:
        cls = ARCHITECTURES[arch]
    except KeyError:
        raise ValueError(f"arch must be one of {sorted(ARCHITECTURES)}, got {arch!r}") from None
    return cls(**kwargs)


PRECISIONS = ("float32", "bfloat16")


def cpu_has_bfloat16() -> bool:
    """Whether this CPU has bfloat16 arithmetic (AVX-512 BF16 or AMX), without which the
    ``bfloat16`` precision is emulated and slower than float32: ORCA1's cnn call took 0.27 s
    against 0.33 s in float32 on a 2-core CPU with AMX, 2.81 s against 0.76 s on an AVX2-only
    AMD EPYC. True when this PyTorch cannot tell (no warning then)."""
    probes = [
        getattr(torch.cpu, name, None)
        for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    ]
    known = [probe for probe in probes if callable(probe)]
    return not known or any(probe() for probe in known)


class Float32Block(nn.Module):
    """Runs ``block`` in float32 inside a bfloat16 autocast region. The block that reads the
    standardized inputs: bfloat16's 8-bit mantissa there made most of the rounding error
    (ORCA1, shipped U-Net: RMS change of the output 1.3e-2 standardized units with every layer
    in bfloat16, 7.9e-3 with this block in float32)."""

    def __init__(self, block: nn.Module):
        super().__init__()
        self.block = block

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, enabled=False):
            return self.block(x.float())


def for_inference(net: nn.Module, precision: str = "float32") -> nn.Module:
    """A copy of ``net`` for prediction only (eval mode): each convolution followed by batch
    norm becomes one convolution, ``w' = w·g/σ``, ``b' = (b − μ)·g/σ + β`` with the running
    statistics, and the weights are laid out channels-last, oneDNN's fast path on CPU (ORCA1
    forward pass 0.127 → 0.078 s on 2 cores). Outputs agree to float32 round-off.

    ``precision="bfloat16"``: the first block stays float32 (:class:`Float32Block`) and the
    caller runs the copy under ``torch.autocast(dtype=torch.bfloat16)``: on a CPU with AMX or
    AVX-512 BF16, and on GPUs, the other convolutions run about 2.5× faster."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")

    net = copy.deepcopy(net).eval()
    for block in net.modules():
        if not isinstance(block, nn.Sequential):
            continue
        for k in range(len(block) - 1):
            conv, norm = block[k], block[k + 1]
            if isinstance(conv, nn.Conv2d) and isinstance(norm, nn.BatchNorm2d):
                block[k], block[k + 1] = fuse_conv_bn_eval(conv, norm), nn.Identity()
    if precision == "bfloat16":
        if isinstance(net, UNet):
            net.down[0] = Float32Block(net.down[0])
        else:
            net.stem = Float32Block(net.stem)
    return net.to(memory_format=torch.channels_last)


def first_conv(net: nn.Module) -> nn.Conv2d:
    """The convolution that reads the input channels."""
    return next(m for m in net.modules() if isinstance(m, nn.Conv2d))


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
