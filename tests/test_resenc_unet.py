"""nnU-Net's residual-encoder U-Net (``resenc_unet``): preset blocks, nnU-Net's feature-map anchors,
shapes and deep supervision."""
from __future__ import annotations

import pytest
import torch

from medmamba.networks.registry import build_network, get_capabilities, get_network_entry
from medmamba.networks.resenc_unet import BasicBlockD, resenc_blocks_per_stage

CONVS = (torch.nn.Conv2d, torch.nn.Conv3d, torch.nn.ConvTranspose2d, torch.nn.ConvTranspose3d)


def _net(dims: int, n_stages: int, features, **kw):
    return build_network("resenc_unet", spatial_dims=dims, in_channels=1, n_stages=n_stages,
                         features_per_stage=features, kernel_sizes=[3] * n_stages,
                         strides=[1] + [2] * (n_stages - 1), **kw)


def test_blocks_per_stage_are_the_presets():
    # ResEnc M and L (and XL) share (1, 3, 4, 6, 6, 6, ...) encoder blocks, one decoder conv (parity.md §4.2)
    assert resenc_blocks_per_stage(4) == (1, 3, 4, 6)
    assert resenc_blocks_per_stage(8) == (1, 3, 4, 6, 6, 6, 6, 6)
    net = _net(3, 5, [4, 8, 16, 16, 16], num_classes=2)
    assert [len(stage) for stage in net.encoder] == [1, 3, 4, 6, 6]
    assert all(isinstance(b, BasicBlockD) for stage in net.encoder for b in stage)
    assert [len(stage) for stage in net.decoder.stages] == [1, 1, 1, 1]
    # only each stage's first block projects (avg-pool by the stride, 1x1 conv, norm); the rest are identity
    first = net.encoder[1][0].shortcut
    assert [type(m).__name__ for m in first] == ["AvgPool3d", "Conv3d", "InstanceNorm3d"]
    assert all(isinstance(b.shortcut, torch.nn.Identity) for b in net.encoder[1][1:])
    assert isinstance(net.encoder[0][0].shortcut, torch.nn.Identity)  # stage 0: stride 1, stem width
    assert get_capabilities("resenc_unet").ssm is None and get_network_entry("ResEnc").name == "resenc_unet"


@pytest.mark.parametrize("dims,n_stages,edge,features,anchor", [
    # dynamic_network_architectures' ResidualEncoderUNet anchors (parity.md §4.2), 3 output classes
    (3, 6, 128, [32, 64, 128, 256, 320, 320], 558_319_104),
    (2, 7, 512, [32, 64, 128, 256, 512, 512, 512], 129_793_792),
])
def test_feature_map_size_matches_nnunet_anchor(dims, n_stages, edge, features, anchor):
    # nnU-Net's VRAM estimate: channels x spatial size of every conv, transposed conv and head output
    with torch.device("meta"):
        net = _net(dims, n_stages, features, num_classes=3).train()
    total = []
    for module in net.modules():
        if isinstance(module, CONVS):
            module.register_forward_hook(lambda m, i, o: total.append(o[0].numel()))
    net(torch.empty(1, 1, *[edge] * dims, device="meta"))
    assert sum(total) == anchor


@pytest.mark.parametrize("dims", [2, 3])
def test_shapes_and_deep_supervision(dims):
    torch.manual_seed(0)
    net = _net(dims, 4, [4, 8, 16, 16], num_classes=3)
    x = torch.randn(2, 1, *[16] * dims)
    outs = net.train()(x)
    assert len(outs) == 3
    assert [tuple(o.shape) for o in outs] == [(2, 3) + (16 // 2 ** i,) * dims for i in range(3)]
    assert net.deep_supervision_scales() == [(1.0,) * dims, (0.5,) * dims, (0.25,) * dims]
    sum(o.mean() for o in outs).backward()
    assert all(p.grad is not None for p in net.parameters())
    with torch.no_grad():
        assert net.eval()(x).shape == (2, 3) + (16,) * dims
