"""The networks: the study's parameter count, variants, halo padding, equivariance, refusals."""

from __future__ import annotations

import pytest
import torch

from diffnorm.ml.halo import pad_halo
from diffnorm.ml.networks import (
    Float32Block,
    ResidualCNN,
    UNet,
    count_parameters,
    for_inference,
    unet_extent,
)


def test_study_network_has_299521_parameters():
    net = ResidualCNN(in_channels=4)
    assert count_parameters(net) == 299_521
    assert net.halo == 10
    assert sum(isinstance(m, torch.nn.Conv2d) for m in net.modules()) == 10


@pytest.mark.parametrize("skip", ["add", "concat", "none"])
@pytest.mark.parametrize("norm, act", [("batch", "elu"), ("group", "prelu"), ("none", "softplus")])
def test_variants_keep_the_grid_size(skip, norm, act):
    net = ResidualCNN(in_channels=5, width=8, blocks=2, skip=skip, norm=norm, activation=act)
    x = torch.randn(2, 5, 7 + 2 * net.halo, 11 + 2 * net.halo)
    assert net(x).shape == (2, 1, 7, 11)


def test_dilation_widens_the_halo():
    net = ResidualCNN(width=8, blocks=2, dilation=2)
    assert net.halo == 2 + 2 * 2 * 2
    x = torch.randn(1, 4, 5 + 2 * net.halo, 6 + 2 * net.halo)
    assert net(x).shape == (1, 1, 5, 6)


def test_periodic_halo_makes_the_network_translation_equivariant_in_x():
    torch.manual_seed(0)
    net = ResidualCNN(width=8, blocks=2).double().eval()
    x = torch.randn(1, 4, 9, 16, dtype=torch.float64)
    y = net(pad_halo(x, net.halo, periodic_x=True, fill=-1.0))
    for k in (1, 5, 15):
        yk = net(pad_halo(torch.roll(x, k, dims=-1), net.halo, periodic_x=True, fill=-1.0))
        torch.testing.assert_close(yk, torch.roll(y, k, dims=-1), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("levels", [1, 2, 3])
def test_unet_extent_bounds_what_an_output_column_reads(levels):
    """Changing the input just beyond ``unet_extent`` never moves the output column and just
    inside it does: the bound is tight. At most the published ``7·2**levels − 5``."""
    torch.manual_seed(levels)
    net = UNet(in_channels=1, width=2, levels=levels, halo=1).double().eval()
    m = 2**levels
    width = 16 * m
    x = torch.randn(1, 1, 6, width, dtype=torch.float64)
    y = net(x)
    for phase in range(m):
        col = 6 * m + phase  # input column; the network crops one column of halo
        west, east = unet_extent(levels, phase)
        assert max(west, east) <= 7 * m - 5
        ends = ((col - west - 1, False), (col + east + 1, False), (col - west, True))
        for probe, moves in (*ends, (col + east, True)):
            z = x.clone()
            z[..., probe] += 10.0 * torch.randn(6, dtype=torch.float64)
            assert torch.equal(net(z)[..., col - 1], y[..., col - 1]) != moves
    assert max(max(unet_extent(levels, p)) for p in range(m)) == 7 * m - 5


@pytest.mark.parametrize("halo", [3, 8])
def test_wrap_context_makes_a_unet_blind_to_where_the_seam_is(halo):
    """With the wrap context the prediction of a periodic grid moves with the grid when its
    seam moves by whole pooling cells; with the halo alone it does not."""
    torch.manual_seed(0)
    net = UNet(in_channels=2, width=4, levels=2, halo=halo).double().eval()
    wrap = net.wrap_context
    assert wrap[0] % 4 == 0 and wrap != (0, 0)
    x = torch.randn(1, 2, 12, 28, dtype=torch.float64)

    def predict(a, context):
        y = net(pad_halo(a, halo, periodic_x=True, fill=-1.0, wrap=context))
        return y[..., context[0] : context[0] + a.shape[-1]]

    y = predict(x, wrap)
    assert y.shape == (1, 1, 12, 28)
    for k in (4, 8, 24):
        yk = predict(torch.roll(x, k, dims=-1), wrap)
        torch.testing.assert_close(yk, torch.roll(y, k, dims=-1), rtol=1e-12, atol=1e-12)
    plain = predict(x, (0, 0))
    rolled = predict(torch.roll(x, 8, dims=-1), (0, 0))
    assert not torch.allclose(rolled, torch.roll(plain, 8, dims=-1), atol=1e-6)


@pytest.mark.parametrize(
    "levels, halo, width, fold",
    [(2, 3, 28, "none"), (3, 16, 8, "none"), (1, 5, 2, "none"), (3, 8, 40, "T"), (2, 1, 12, "F")],
)
def test_a_periodic_strip_predicts_what_the_wrap_context_does(levels, halo, width, fold):
    """UNet.forward_periodic on the grid's own columns (wrapped per block, by index: a strip
    as narrow as the pooling too) against forward on the halo and the wrap context, under a
    north fold too: the same target from fewer columns; a width that is not a multiple of the
    pooling is refused."""
    torch.manual_seed(levels + halo)
    net = UNet(in_channels=2, width=4, levels=levels, halo=halo)
    for block in net.modules():  # batch norm statistics that are not the identity
        if isinstance(block, torch.nn.BatchNorm2d):
            block.running_mean.uniform_(-0.5, 0.5)
            block.running_var.uniform_(0.5, 2.0)
    net = net.double().eval()
    x = torch.randn(1, 2, 2 * halo + 6, width, dtype=torch.float64)
    wrap = net.wrap_context
    kinds = ["cell", "face_y"]
    with torch.no_grad():
        wide = net(pad_halo(x, halo, True, -1.0, fold, kinds, wrap))
        wide = wide[..., wrap[0] : wrap[0] + width]
        rows = pad_halo(x, halo, True, -1.0, fold, kinds)[..., halo:-halo]  # halo rows only
        strip = net.forward_periodic(rows)
    assert strip.shape == (1, 1, 2 * halo + 6, width)
    torch.testing.assert_close(strip, wide, rtol=1e-12, atol=1e-12)
    m = 2**levels
    if width > m:
        with pytest.raises(ValueError, match=f"multiple of {m} columns"):
            net.forward_periodic(rows[..., : width - 1])


def test_the_inference_copy_and_group_norms_on_a_strip():
    """The inference copy (batch norm folded, channels-last) runs on a strip to float32
    round-off; a group norm, whose statistics would count the wrapped columns twice, is not
    strip-ready (GammaNetwork then keeps the wrap context)."""
    from diffnorm.ml.networks import for_inference, strip_ready

    torch.manual_seed(0)
    net = for_inference(UNet(in_channels=2, width=4, levels=2, halo=3))
    assert strip_ready(net)
    x = torch.randn(1, 2, 12, 28)
    wrap = net.wrap_context
    with torch.no_grad():
        wide = net(pad_halo(x, 3, periodic_x=True, fill=-1.0, wrap=wrap))[
            ..., wrap[0] : wrap[0] + 28
        ]
        strip = net.forward_periodic(pad_halo(x, 3, periodic_x=True, fill=-1.0)[..., 3:-3])
    torch.testing.assert_close(strip, wide, rtol=1e-5, atol=1e-5)
    grouped = UNet(in_channels=2, width=8, levels=2, halo=3, norm="group").eval()
    assert not strip_ready(grouped)
    with pytest.raises(ValueError, match="per-position layers"):
        grouped.forward_periodic(torch.zeros(1, 2, 12, 28))


def test_halo_padding_topology():
    x = torch.arange(12.0).reshape(1, 1, 3, 4)
    p = pad_halo(x, 2, periodic_x=True, fill=-9.0)
    assert p.shape == (1, 1, 7, 8)
    torch.testing.assert_close(p[0, 0, 2, :2], x[0, 0, 0, 2:])  # wrapped from the east edge
    assert torch.all(p[0, 0, :2] == -9) and torch.all(p[0, 0, -2:] == -9)  # closed rows
    q = pad_halo(x, 2, periodic_x=False, fill=torch.tensor([5.0]))
    assert torch.all(q[0, 0, 2:5, :2] == 5)
    wide = pad_halo(x, 9, periodic_x=True)  # a halo wider than the grid still wraps
    torch.testing.assert_close(wide[0, 0, 9, 9 - 4 : 9], x[0, 0, 0])


def test_refuses_wrong_layout_and_too_small_grids():
    net = ResidualCNN(in_channels=4, width=8, blocks=1)
    with pytest.raises(ValueError, match=r"expected input \(batch, 4, H, W\)"):
        net(torch.randn(1, 3, 40, 40))
    with pytest.raises(ValueError, match="halo"):
        net(torch.randn(1, 4, 2 * net.halo, 40))


@pytest.mark.parametrize("shape", [(7, 11), (16, 16), (13, 30)])
def test_unet_keeps_any_grid_size(shape):
    from diffnorm.ml.networks import build_network

    net = build_network("unet", in_channels=5, width=4, levels=2, halo=3)
    assert not net.exact_tiling
    x = torch.randn(2, 5, shape[0] + 2 * net.halo, shape[1] + 2 * net.halo)
    assert net(x).shape == (2, 1, *shape)
    with pytest.raises(ValueError, match="arch must be one of"):
        build_network("transformer")


@pytest.mark.parametrize("arch", ["unet", "residual"])
def test_the_inference_copy_folds_batch_norm_and_predicts_the_same(arch):
    torch.manual_seed(0)
    if arch == "unet":
        net = UNet(in_channels=5, width=8, levels=2, halo=4)
    else:
        net = ResidualCNN(in_channels=5, width=8, blocks=2, norm="batch")
    for m in net.modules():  # running statistics far from the identity
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-1.0, 1.0)
            m.running_var.uniform_(0.2, 3.0)
            m.weight.data.uniform_(0.5, 2.0)
            m.bias.data.uniform_(-0.5, 0.5)
    net.eval()
    fast = for_inference(net)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fast.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())  # left untouched
    x = torch.randn(2, 5, 13 + 2 * net.halo, 17 + 2 * net.halo)
    with torch.no_grad():
        torch.testing.assert_close(fast(x), net(x), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("arch", ["unet", "residual"])
def test_the_bfloat16_copy_keeps_its_input_block_in_float32_and_stays_close(arch):
    torch.manual_seed(0)
    if arch == "unet":
        net = UNet(in_channels=5, width=8, levels=2, halo=4).eval()
        first = lambda n: n.down[0]  # noqa: E731
    else:
        net = ResidualCNN(in_channels=5, width=8, blocks=2, norm="batch").eval()
        first = lambda n: n.stem  # noqa: E731
    low = for_inference(net, "bfloat16")
    assert isinstance(first(low), Float32Block) and not isinstance(first(net), Float32Block)
    x = torch.randn(2, 5, 13 + 2 * net.halo, 17 + 2 * net.halo)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        y = low(x)
        inner = first(low)(x)
    exact = net(x).detach()
    assert inner.dtype == torch.float32  # the input block ran in float32 under autocast
    assert not torch.equal(y.float(), exact)  # the rest did not
    torch.testing.assert_close(y.float(), exact, rtol=0.05, atol=0.05)
    with pytest.raises(ValueError, match="precision must be one of"):
        for_inference(net, "float16")
