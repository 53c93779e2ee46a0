"""Tests for the conv blocks, plain U-Net, U-Mamba (Bot/Enc) and SegMamba networks.

Sizes are tiny (2 shared CPU cores): 32x32 in 2D, 16^3 in 3D, a few channels per stage.
"""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from medmamba.errors import NetworkError
from medmamba.networks.registry import build_network, get_network_entry, list_networks

torch.set_num_threads(1)

# Tiny configurations per (network, spatial_dims); input sizes are multiples of each divisor.
TINY = {
    ("plain_unet", 2): dict(features_per_stage=[4, 8, 16, 16]),
    ("plain_unet", 3): dict(features_per_stage=[4, 8, 16]),
    ("umamba_bot", 2): dict(features_per_stage=[4, 8, 16, 16]),
    ("umamba_bot", 3): dict(features_per_stage=[4, 8, 16]),
    ("umamba_enc", 2): dict(features_per_stage=[4, 8, 16, 16]),
    ("umamba_enc", 3): dict(features_per_stage=[4, 8, 16]),
    ("segmamba", 2): dict(feature_size=[8, 16, 16, 32], depths=1, hidden_size=32),
    ("segmamba", 3): dict(feature_size=[8, 16, 16], depths=1, hidden_size=16),
}
SHAPE = {2: (32, 32), 3: (16, 16, 16)}
MAMBA_NETS = ("umamba_bot", "umamba_enc", "segmamba")


def _build(name: str, dims: int, **extra):
    kwargs = dict(spatial_dims=dims, in_channels=2, num_classes=3, deep_supervision=True, **TINY[(name, dims)])
    if name in MAMBA_NETS:
        kwargs["backend"] = "torch"
    kwargs.update(extra)
    return build_network(name, **kwargs)


def test_registered():
    names = list_networks()
    for name in ("plain_unet", "umamba_bot", "umamba_enc", "segmamba"):
        assert name in names
        entry = get_network_entry(name)
        assert entry.arxiv and entry.paper and entry.dims == (2, 3)


@pytest.mark.parametrize("name,dims", sorted(TINY))
def test_forward_backward_deep_supervision(name, dims):
    torch.manual_seed(0)
    net = _build(name, dims)
    x = torch.randn(2, 2, *SHAPE[dims])
    net.train()
    outs = net(x)
    assert isinstance(outs, list) and len(outs) >= 2
    # highest resolution first, each level half the previous one (all strides 2 here)
    for i, out in enumerate(outs):
        assert out.shape == (2, 3, *[s // 2 ** i for s in SHAPE[dims]]), (i, out.shape)
    scales = net.deep_supervision_scales()
    assert len(scales) == len(outs)
    for scale, out in zip(scales, outs):
        assert tuple(out.shape[2:]) == tuple(round(s * f) for s, f in zip(SHAPE[dims], scale))
    loss = sum(o.float().square().mean() for o in outs)
    loss.backward()
    for pname, p in net.named_parameters():
        assert p.grad is not None, f"{pname} got no gradient"
        assert torch.isfinite(p.grad).all(), f"{pname} has a non-finite gradient"
    net.eval()
    with torch.no_grad():
        y = net(x)
    assert isinstance(y, torch.Tensor) and y.shape == (2, 3, *SHAPE[dims])
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("name", ["plain_unet", "umamba_bot", "segmamba"])
def test_no_deep_supervision_returns_tensor(name):
    net = _build(name, 2, deep_supervision=False).train()
    y = net(torch.randn(1, 2, 32, 32))
    assert isinstance(y, torch.Tensor) and y.shape == (1, 3, 32, 32)


@pytest.mark.parametrize("name", sorted({n for n, _ in TINY}))
def test_indivisible_size_is_a_clear_error(name):
    net = _build(name, 2)
    divisor = 16 if name == "segmamba" else 8  # 2**4 (stem + 3 downsamplings) / 2**3 (4 stages)
    assert net.input_divisor == (divisor, divisor)
    with pytest.raises(NetworkError, match=rf"multiple of \({divisor}, {divisor}\)"):
        net(torch.randn(1, 2, 33, 32))
    with pytest.raises(NetworkError, match="expects"):
        net(torch.randn(1, 2, 32))
    with pytest.raises(NetworkError, match="single voxel"):
        net(torch.randn(1, 2, divisor, divisor))


def test_non_square_and_anisotropic_topology():
    """Plans give per-axis kernels and strides (e.g. no pooling along a thick-slice axis)."""
    net = build_network("plain_unet", spatial_dims=3, in_channels=1, num_classes=2,
                        features_per_stage=[4, 8, 8], kernel_sizes=[[1, 3, 3], [3, 3, 3], [3, 3, 3]],
                        strides=[[1, 1, 1], [1, 2, 2], [2, 2, 2]]).train()
    outs = net(torch.randn(1, 1, 6, 16, 24))
    assert [tuple(o.shape[2:]) for o in outs] == [(6, 16, 24), (6, 8, 12)]
    assert net.deep_supervision_scales() == [(1.0, 1.0, 1.0), (1.0, 0.5, 0.5)]
    assert net.decoder.upsamples[0].conv.kernel_size == (2, 2, 2)
    net = build_network("umamba_enc", spatial_dims=2, in_channels=1, num_classes=2, features_per_stage=[4, 8, 8],
                        strides=[[1, 1], [2, 1], [2, 2]], backend="torch").train()
    outs = net(torch.randn(1, 1, 12, 20))
    assert [tuple(o.shape[2:]) for o in outs] == [(12, 20), (6, 20)]


def test_topology_errors():
    with pytest.raises(NetworkError, match="n_stages"):
        build_network("plain_unet", spatial_dims=2, features_per_stage=[4, 8, 16], strides=[1, 2])
    with pytest.raises(NetworkError, match="spatial_dims"):
        build_network("umamba_bot", spatial_dims=4)
    with pytest.raises(NetworkError, match=r"strides\[0\]"):
        build_network("plain_unet", spatial_dims=2, strides=[2, 2, 2])


# ---------------------------------------------------------------- parameter counts
def _conv(i, o, k, bias=True):
    return i * o * k + (o if bias else 0)


def test_plain_unet_param_count_matches_nnunet_topology():
    """Count of nnU-Net's PlainConvUNet derived by hand for 3D, 6 stages, 128^3 plan."""
    f = [32, 64, 128, 256, 320, 320]
    k, cin, ncls = 27, 1, 2
    expected = 0
    prev = cin
    for c in f:  # 2 x (conv + IN affine)
        expected += _conv(prev, c, k) + 2 * c + _conv(c, c, k) + 2 * c
        prev = c
    for lvl in range(len(f) - 2, -1, -1):  # transposed conv k2 s2, 2 convs on concat, 1x1 head
        c = f[lvl]
        expected += _conv(f[lvl + 1], c, 8) + _conv(2 * c, c, k) + 2 * c + _conv(c, c, k) + 2 * c
        expected += _conv(c, ncls, 1)
    net = build_network("plain_unet", spatial_dims=3, in_channels=cin, num_classes=ncls, n_stages=6)
    assert sum(p.numel() for p in net.parameters()) == expected
    assert net.topology.features_per_stage == tuple(f)  # 32 doubling, capped at 320 in 3D
    net2d = build_network("plain_unet", spatial_dims=2, n_stages=8)
    assert net2d.topology.features_per_stage[-1] == 512  # capped at 512 in 2D


def _mamba_params(c, k_routes=1, n=16, d_conv=4):
    """mamba_ssm.Mamba(d_model=c, expand 2) params, per-direction parts times k_routes (mamba_simple.py, segmamba.py)."""
    di, r = 2 * c, math.ceil(c / 16)
    per_dir = di * d_conv + di + di * (r + 2 * n) + r * di + di + di * n + di
    return c * 2 * di + di * c + k_routes * per_dir


def test_umamba_bot_param_count_matches_public_layout():
    """Hand count of U-Mamba_Bot incl. its deep-half block thinning."""
    f, k, cin, ncls, n = [32, 64, 128, 256, 320], 27, 1, 2, 5

    def res_block(i, o, proj):  # conv-IN-act-conv-IN (+1x1 projection)
        return _conv(i, o, k) + 2 * o + _conv(o, o, k) + 2 * o + (_conv(i, o, 1) if proj else 0)

    blocks = [2, 2, 2, 1, 1]          # s >= ceil(5/2) = 3 -> 1 block
    dec_blocks = [2, 2, 2, 1]         # j >= ceil(4/2 + 0.5) = 3 -> 1 block
    expected = res_block(cin, f[0], True) + (blocks[0] - 1) * res_block(f[0], f[0], False)
    prev = f[0]
    for s in range(n):
        expected += res_block(prev, f[s], True) + (blocks[s] - 1) * res_block(f[s], f[s], False)
        prev = f[s]
    expected += 2 * f[-1] + _mamba_params(f[-1])  # LayerNorm + Mamba at the bottleneck
    for j in range(n - 1):
        below, c = f[n - 1 - j], f[n - 2 - j]
        expected += _conv(below, c, 1)  # nearest upsample + 1x1 conv
        expected += res_block(2 * c, c, True) + (dec_blocks[j] - 1) * res_block(c, c, False)
        expected += _conv(c, ncls, 1)
    net = build_network("umamba_bot", spatial_dims=3, in_channels=cin, num_classes=ncls, n_stages=n)
    assert sum(p.numel() for p in net.parameters()) == expected


def test_segmamba_param_count():
    """Paper config (BraTS: 4 in / 4 out) vs the registered reference count (±5 %, here exact
    once our deep-supervision heads are left out)."""
    net = build_network("segmamba", spatial_dims=3, in_channels=4, num_classes=4)
    total = sum(p.numel() for p in net.parameters())
    heads = sum(p.numel() for p in net.ds_heads.parameters())
    ref = get_network_entry("segmamba").reference_params["value"]
    assert abs(total - ref) / ref < 0.05
    assert total - heads == ref
    # each ToM layer has three routes' worth of per-direction parameters (SegMamba segmamba.py)
    layer = net.stages[0][0].mixer
    assert layer.n_routes == 3 and sum(p.numel() for p in layer.parameters()) == _mamba_params(48, 3)


# ---------------------------------------------------------------- Mamba parts
@pytest.mark.parametrize("name", MAMBA_NETS)
def test_reference_and_torch_backends_agree(name):
    torch.manual_seed(1)
    cfg = ({"feature_size": [4, 8, 8], "depths": 1, "hidden_size": 8} if name == "segmamba"
           else {"features_per_stage": [4, 8, 8]})
    kwargs = dict(spatial_dims=2, in_channels=1, num_classes=2, deep_supervision=False, **cfg)
    net_ref = build_network(name, backend="reference", **kwargs).eval()
    net_torch = build_network(name, backend="torch", **kwargs).eval()
    net_torch.load_state_dict(net_ref.state_dict())
    x = torch.randn(1, 1, 16, 8)
    with torch.no_grad():
        torch.testing.assert_close(net_torch(x), net_ref(x), rtol=1e-4, atol=1e-4)


def test_route_mamba_backends_agree():
    from medmamba.networks.blocks.mamba_tokens import RouteMamba

    torch.manual_seed(4)
    m = RouteMamba(8, spatial_dims=3, routes="tom", backend="reference")
    x = torch.randn(2, 24, 8)
    ref = m(x, (2, 3, 4))
    m.backend = "torch"
    torch.testing.assert_close(m(x, (2, 3, 4)), ref, rtol=1e-5, atol=1e-6)
    assert ref.abs().mean() > 1e-3  # the comparison is not between two near-zero outputs


def test_umamba_with_other_route_sets():
    net = _build("umamba_enc", 2, routes="tom").train()
    layer = net.mamba_layers["3"].mixer
    assert layer.n_routes == 3
    outs = net(torch.randn(1, 2, 32, 32))
    assert outs[0].shape == (1, 3, 32, 32)


def test_route_mamba_matches_mamba_mixer():
    """Our K-route token Mamba with routes (raster) / (raster, raster_rev) equals B1's MambaMixer
    (plain Mamba / Vim bidirectional without halving) given the same weights."""
    from medmamba.networks.blocks.mamba_tokens import RouteMamba
    from medmamba.networks.blocks.ssm import MambaMixer

    torch.manual_seed(2)
    x = torch.randn(2, 12, 8)
    for routes, bidir in (("raster", False), (("raster", "raster_rev"), True)):
        ours = RouteMamba(8, spatial_dims=2, routes=routes, backend="torch")
        theirs = MambaMixer(8, bidirectional=bidir, divide_out=False, backend="torch")
        with torch.no_grad():
            theirs.in_proj.weight.copy_(ours.in_proj.weight)
            theirs.out_proj.weight.copy_(ours.out_proj.weight)
            theirs.A_logs.copy_(ours.A_log)
            theirs.Ds.copy_(ours.D)
            for k in range(ours.n_routes):
                # both run route k's causal conv along route k's own order (reversed for k = 1)
                theirs.convs[k].weight.copy_(ours.conv_weight[k].unsqueeze(1))
                theirs.convs[k].bias.copy_(ours.conv_bias[k])
                theirs.x_projs[k].weight.copy_(ours.x_proj_weight[k])
                theirs.dt_projs[k].weight.copy_(ours.dt_proj_weight[k])
                theirs.dt_projs[k].bias.copy_(ours.dt_proj_bias[k])
        with torch.no_grad():
            torch.testing.assert_close(ours(x, (3, 4)), theirs(x), rtol=1e-5, atol=1e-5)


def test_tom_interslice_route_is_used():
    """The third ToM route visits one in-plane position across all slices consecutively: with
    only that route, a token's output depends on earlier slices at its position, not on later ones."""
    from medmamba.networks.blocks.mamba_tokens import RouteMamba

    torch.manual_seed(3)
    m = RouteMamba(4, spatial_dims=3, routes=["interslice"], backend="torch")
    shape = (3, 2, 2)
    x = torch.randn(1, 12, 4, requires_grad=True)
    y = m(x, shape)
    # token (d=1, h=0, w=0) = raster 4: depends on (d=0, same h, w) = raster 0, not on raster 1 or 8
    (g,) = torch.autograd.grad(y[0, 4].sum(), x)
    assert g[0, 0].abs().sum() > 1e-3 * g[0, 4].abs().sum()  # a real dependence, not round-off
    assert g[0, 1].abs().sum() == 0 and g[0, 8].abs().sum() == 0


@pytest.mark.parametrize("name", MAMBA_NETS)
def test_gated_cnn_swap(name):
    net = _build(name, 2, mixer="gated_cnn").train()
    names = [n for n, _ in net.named_parameters()]
    assert not any("A_log" in n for n in names)  # no SSM left
    outs = net(torch.randn(1, 2, 32, 32))
    ssm_outs = _build(name, 2).train()(torch.randn(1, 2, 32, 32))
    assert [o.shape for o in outs] == [o.shape for o in ssm_outs]
    sum(o.mean() for o in outs).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())


def test_umamba_layer_placement():
    bot = _build("umamba_bot", 2)
    enc2 = _build("umamba_enc", 2)
    enc3 = _build("umamba_enc", 3)
    assert bot.mamba_stages == (3,)
    assert enc2.mamba_stages == (1, 3)       # 2D alternate stages, the last one included (UMambaEnc_2d.py)
    assert enc3.mamba_stages == (0, 1, 2)    # 3D every stage


# ---------------------------------------------------------------- learning
def _synthetic_pair():
    g = torch.Generator().manual_seed(0)
    yy, xx = torch.meshgrid(torch.arange(32), torch.arange(32), indexing="ij")
    label = (((yy - 12) ** 2 + (xx - 18) ** 2) < 60).long() + ((yy > 22) & (xx < 12)).long() * 2
    image = label.float() * 1.0 + 0.3 * torch.randn(32, 32, generator=g)
    return image[None, None], label[None]


def _dice(pred, label, c):
    p, t = pred == c, label == c
    return 2 * (p & t).sum().item() / max(p.sum().item() + t.sum().item(), 1)


@pytest.mark.parametrize("name", ["plain_unet", "umamba_bot", "umamba_enc", "segmamba"])
def test_overfits_one_image(name):
    torch.manual_seed(0)
    image, label = _synthetic_pair()
    cfg = ({"feature_size": [8, 16, 16], "depths": 1, "hidden_size": 16} if name == "segmamba"
           else {"features_per_stage": [8, 16, 16]})
    kw = {"backend": "torch"} if name in MAMBA_NETS else {}
    net = build_network(name, spatial_dims=2, in_channels=1, num_classes=3, deep_supervision=True, **cfg, **kw)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    net.train()
    for _step in range(60):
        outs = net(image)
        loss = sum(F.cross_entropy(o, F.interpolate(label[None].float(), size=o.shape[2:], mode="nearest")[0].long())
                   / 2 ** i for i, o in enumerate(outs))
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()
    with torch.no_grad():
        pred = net(image).argmax(1)
    dice = [_dice(pred, label, c) for c in (1, 2)]
    assert min(dice) > 0.9, dice


@pytest.mark.parametrize("name", ["plain_unet", "umamba_enc", "segmamba"])
def test_autocast_bf16_forward_backward(name):
    """Mixed precision: parameters stay fp32, outputs finite, gradients finite (AMP with fp32 params, state-spaces/mamba#6)."""
    torch.manual_seed(5)
    net = _build(name, 2).train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        outs = net(torch.randn(1, 2, 32, 32))
    assert all(torch.isfinite(o.float()).all() for o in outs)
    sum(o.float().mean() for o in outs).backward()
    assert all(p.dtype == torch.float32 and torch.isfinite(p.grad).all() for p in net.parameters())


@pytest.mark.parametrize("dims, shape", [(2, (3, 6, 5, 7)), (3, (2, 4, 3, 5, 6))])
@pytest.mark.parametrize("affine", [True, False])
def test_instance_norm_on_group_norm_equals_torchs(dims, shape, affine):
    """Our InstanceNorm (F.group_norm, one group per channel) against torch's: output and every
    gradient in fp64, same state dict; torch's one-voxel training error and unbatched input kept."""
    from medmamba.networks.blocks.conv import instance_norm

    ours = instance_norm(dims, shape[1], affine=affine).double()
    theirs = getattr(torch.nn, f"InstanceNorm{dims}d")(shape[1], affine=affine).double()
    assert isinstance(ours, type(theirs))
    if affine:
        with torch.no_grad():
            ours.weight.normal_()
            ours.bias.normal_()
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
    a, b = ours(x), theirs(x)
    assert (a - b).abs().max() < 1e-12
    grad = torch.randn_like(a)
    for ga, gb in zip(torch.autograd.grad(a, [x, *ours.parameters()], grad),
                      torch.autograd.grad(b, [x, *theirs.parameters()], grad)):
        assert (ga - gb).abs().max() < 1e-12
    with pytest.raises(ValueError, match="more than 1 spatial element"):
        ours.train()(torch.randn(2, shape[1], *([1] * dims), dtype=torch.float64))
    unbatched = torch.randn(*shape[1:], dtype=torch.float64)
    assert torch.allclose(ours(unbatched), theirs(unbatched))
