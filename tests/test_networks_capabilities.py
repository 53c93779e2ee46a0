"""Registry capabilities: what each network declares is what the built network does, and every
network trains at the smallest patch the planner can plan for it (batch 1 and 2)."""
from __future__ import annotations

import math

import pytest
import torch

from medmamba.errors import NetworkError
from medmamba.networks.registry import (
    TOPOLOGY_KWARGS,
    build_network,
    find_network,
    get_capabilities,
    get_network_entry,
    list_networks,
)
from medmamba.plans.memory_model import CostModel
from medmamba.plans.planner import network_kwargs, plan_patch_and_batch

# Every network the planner may be asked for; a network added to the registry without being
# listed here fails test_every_registered_network_is_covered.
ALL = ("hrvmamba", "mhsvm", "plain_unet", "resenc_unet", "segmamba", "umamba_bot", "umamba_enc", "vmunet")


# Narrower widths keep this fast on CPU; depth and downsampling, which set the smallest patch and
# the size of the deepest map, stay the paper's (4 stages / 4 branches).
NARROW = {
    "vmunet": dict(embed_dim=8, depths=[1, 1, 1, 1], depths_decoder=[1, 1, 1, 1]),
    "mhsvm": dict(embed_dim=8, depths=[1, 1, 1, 1], depths_decoder=[1, 1, 1, 1]),
    "hrvmamba": dict(widths=[8, 8, 8, 8], modules=[1, 1, 1], blocks=1, stem_channels=4),
    "segmamba": dict(feature_size=[4, 8, 8, 8], depths=[1, 1, 1, 1], hidden_size=8),
}
# For tests that only build: the adaptive networks narrowed too (their default 5-stage topology).
SMALL = {**NARROW, **{n: dict(features_per_stage=[4, 4, 8, 8, 8]) for n in ("plain_unet", "resenc_unet", "umamba_bot", "umamba_enc")}}


def test_every_registered_network_is_covered():
    assert tuple(list_networks()) == ALL


@pytest.mark.parametrize("name,attribute", [("vmunet", "divisor"), ("mhsvm", "divisor"), ("hrvmamba", "divisor"),
                                            ("segmamba", "input_divisor")])
def test_declared_divisor_is_the_built_networks(name, attribute):
    caps = get_capabilities(name)
    assert caps.topology == "fixed"
    for dims in caps.dims:
        net = build_network(name, spatial_dims=dims, in_channels=1, num_classes=2, **NARROW[name])
        built = getattr(net, attribute)
        assert (built if isinstance(built, int) else built[0]) == caps.input_divisor


@pytest.mark.parametrize("name", [n for n in ALL if get_capabilities(n).topology == "adaptive"])
def test_adaptive_networks_take_the_planned_topology(name):
    # an anisotropic 3-stage topology nobody would default to: the network must follow it
    topo = dict(n_stages=3, features_per_stage=[4, 8, 16], kernel_sizes=[[1, 3, 3], [3, 3, 3], [3, 3, 3]],
                strides=[[1, 1, 1], [1, 2, 2], [2, 2, 2]])
    assert set(topo) == set(TOPOLOGY_KWARGS)
    net = build_network(name, spatial_dims=3, in_channels=1, num_classes=2, **topo)
    assert net.input_divisor == (2, 4, 4)
    assert [list(s) for s in net.topology.strides] == topo["strides"]


@pytest.mark.parametrize("name", [n for n in ALL if get_capabilities(n).ssm is not None])
def test_declared_ssm_settings_reach_the_scan(name):
    """The routes/d_state the planner writes are taken: with d_state 1 every SSM parameter holding
    the state axis has size 1 (a builder that ignored the kwarg would keep its default)."""
    caps = get_capabilities(name)
    assert caps.ssm.d_state >= 1 and set(caps.ssm.routes) == set(caps.dims)
    assert {"routes", "d_state"} <= set(caps.ssm.kwargs)
    net = build_network(name, spatial_dims=2, in_channels=1, num_classes=2, routes=caps.ssm.routes[2], d_state=1,
                        **SMALL[name])
    a_logs = [p for n, p in net.named_parameters() if n.endswith(("A_log", "A_logs"))]
    assert a_logs and all(p.shape[-1] == 1 for p in a_logs)
    assert "gated_cnn" in caps.twin_mixers


_NORM_TYPES = {"batch": torch.nn.modules.batchnorm._BatchNorm, "instance": torch.nn.modules.instancenorm._InstanceNorm}


@pytest.mark.parametrize("name", ALL)
def test_declared_norm_is_the_feature_map_norm(name):
    """The trainer converts BatchNorm for DDP from the declaration: it must match the modules."""
    declared = get_capabilities(name).norm
    net = build_network(name, spatial_dims=3, in_channels=1, num_classes=2, **SMALL[name])
    present = {kind for kind, cls in _NORM_TYPES.items() if any(isinstance(m, cls) for m in net.modules())}
    assert present == ({declared} if declared in _NORM_TYPES else set())


def test_aliases_and_names_resolve():
    assert find_network("U-Mamba_Enc").name == "umamba_enc"
    assert find_network("u-mamba").name == "umamba_bot"
    assert find_network("VM-UNet").name == "vmunet" and find_network("nnU-Net").name == "plain_unet"
    assert find_network("no_such_net") is None
    with pytest.raises(NetworkError, match="registered networks: hrvmamba"):
        get_network_entry("no_such_net")


# ------------------------------------------------------------- smallest planned patch trains
def _smallest_planned(name: str, spacing: list[float]):
    """Patch and kwargs the planner ends at when memory never fits: its shrink loop's floor."""
    caps = get_capabilities(name)
    never_fits = CostModel(name, len(spacing), "test", memory_fixed_bytes=1e15, memory_bytes_per_voxel=1e9)
    topo, _ = plan_patch_and_batch(spacing, [512.0] * len(spacing), never_fits, "gpu", 8.0, 1e9, caps)
    return topo, network_kwargs(name, len(spacing), 1, 3, topo)


# Spacing only matters to adaptive (nnU-Net topology) networks: anisotropic 3D gets fewer pools.
CASES = [(n, s) for n in ALL for s in ([[1.0, 1.0]], [[1.0, 1.0, 1.0]]) for s in s] + \
    [(n, [4.0, 1.0, 1.0]) for n in ALL if get_capabilities(n).topology == "adaptive"]


@pytest.mark.parametrize("name,spacing", CASES, ids=[f"{n}-{len(s)}d-{s[0]:g}" for n, s in CASES])
def test_every_network_trains_at_the_smallest_planned_patch(name, spacing):
    caps = get_capabilities(name)
    topo, kwargs = _smallest_planned(name, spacing)
    patch = list(topo.patch_size)
    if caps.input_divisor:
        deepest = math.prod(p // caps.input_divisor for p in patch)
        assert all(p % caps.input_divisor == 0 for p in patch) and deepest == caps.min_deepest_voxels
    else:
        assert topo.n_stages == 2  # the planner's floor: one downsampling
    torch.manual_seed(0)
    net = build_network(name, **{**kwargs, **NARROW.get(name, {}), "backend": "torch"}).train()
    for batch in (1, 2):
        x = torch.randn(batch, 1, *patch)
        out = net(x)
        outs = out if isinstance(out, list) else [out]
        assert tuple(outs[0].shape) == (batch, 3, *patch)
        sum(o.float().square().mean() for o in outs).backward()
        grads = [p.grad for p in net.parameters() if p.requires_grad]
        assert all(g is not None and torch.isfinite(g).all() for g in grads)
        net.zero_grad(set_to_none=True)


def test_hrvmamba_one_voxel_branch_is_a_clear_error_and_never_planned():
    """The 1/32 branch of a 32^3 input has one voxel: BatchNorm cannot train it at batch 1."""
    net = build_network("hrvmamba", spatial_dims=3, in_channels=1, num_classes=3).train()
    with pytest.raises(NetworkError, match="batch of 1 at input size \\(32, 32, 32\\).*batch >= 2"):
        net(torch.randn(1, 1, 32, 32, 32))
    topo, _ = _smallest_planned("hrvmamba", [1.0, 1.0, 1.0])
    assert sorted(topo.patch_size) == [32, 32, 64]


def test_training_with_another_network_keeps_only_what_it_declares():
    """`train --network X` on a plan made for another network: X gets the planned U-Net topology if
    it is adaptive and SSM settings it declares, never the planned network's routes or d_state."""
    from medmamba.training.run_setup import _accepted_kwargs

    planned = {"spatial_dims": 3, "n_stages": 3, "features_per_stage": [32, 64, 128],
               "kernel_sizes": [[3, 3, 3]] * 3, "strides": [[1, 1, 1], [2, 2, 2], [2, 2, 2]],
               "routes": "raster", "d_state": 1, "expand": 3}
    topology = {k: planned[k] for k in TOPOLOGY_KWARGS}
    # (the common four come from the run itself, not from the plan)
    assert _accepted_kwargs("plain_unet", planned) == topology
    assert _accepted_kwargs("umamba_enc", planned) == {**topology, "expand": 3}
    assert _accepted_kwargs("segmamba", planned) == {"expand": 3}  # fixed depth
    assert _accepted_kwargs("vmunet", planned) == {}
