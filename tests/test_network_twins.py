"""Network twins by name suffix: ``NAME:gated_cnn`` (MambaOut mixer) and ``NAME:no_ssm`` (mixer removed)."""
from __future__ import annotations

import pytest
import torch

from medmamba.errors import NetworkError
from medmamba.formats.plans import NetworkSpec
from medmamba.networks.blocks.gated_cnn import GatedCNNMixer
from medmamba.networks.registry import (
    base_network_name,
    build_network,
    get_capabilities,
    get_network_entry,
    list_networks,
    twin_names,
)
from medmamba.plans.planner import network_kwargs
from medmamba.plans.topology import Topology

MAMBA = [n for n in list_networks() if get_capabilities(n).ssm is not None]
# Small widths, the paper's depth/downsampling (the smallest input each network takes).
SMALL = {
    "vmunet": dict(embed_dim=8, depths=[1, 1], depths_decoder=[1, 1]),
    "mhsvm": dict(embed_dim=8, depths=[1, 1], depths_decoder=[1, 1]),
    "hrvmamba": dict(widths=[8, 8, 8], modules=[1, 1], blocks=1, stem_channels=4),
    "segmamba": dict(feature_size=[4, 8, 8, 8], depths=[1, 1, 1, 1], hidden_size=8),
    "umamba_bot": dict(n_stages=3, features_per_stage=[4, 8, 8]),
    "umamba_enc": dict(n_stages=3, features_per_stage=[4, 8, 8]),
}
SHAPES = {"vmunet": 8, "mhsvm": 8, "hrvmamba": 16, "segmamba": 16, "umamba_bot": 8, "umamba_enc": 8}


def _params(net: torch.nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def _has_ssm(net: torch.nn.Module) -> bool:
    # every SSM here (MultiRouteSSM, MambaMixer, RouteMamba, the multi-head scan) owns A_log(s)
    return any("A_log" in name for name, _ in net.named_parameters())


def test_every_mamba_network_has_both_twins_and_others_none():
    assert set(MAMBA) == set(SMALL)
    for name in list_networks():
        expected = [f"{name}:gated_cnn", f"{name}:no_ssm"] if name in MAMBA else []
        assert twin_names(name) == expected
    assert twin_names("umamba_bot:no_ssm") == []
    for bad in ("plain_unet:no_ssm", "umamba_bot:attention", "nonexistent:no_ssm"):
        with pytest.raises(NetworkError, match="twin suffixes"):
            get_network_entry(bad)


@pytest.mark.parametrize("name", sorted(SMALL))
def test_twins_build_without_ssm_and_train(name):
    torch.manual_seed(0)
    for dims in get_capabilities(name).dims:
        base = build_network(name, spatial_dims=dims, in_channels=1, num_classes=2, **SMALL[name])
        gated = build_network(f"{name}:gated_cnn", spatial_dims=dims, in_channels=1, num_classes=2, **SMALL[name])
        none = build_network(f"{name}:no_ssm", spatial_dims=dims, in_channels=1, num_classes=2, **SMALL[name])
        assert _has_ssm(base) and not _has_ssm(gated) and not _has_ssm(none)
        assert any(isinstance(m, GatedCNNMixer) for m in gated.modules())
        assert not any(isinstance(m, GatedCNNMixer) for m in none.modules())
        # removing the mixer removes parameters; the twins keep every other parameter of the base
        assert _params(none) < min(_params(base), _params(gated))
        base_other = {k: v.shape for k, v in base.state_dict().items() if "mixer" not in k and "mamba" not in k}
        none_all = {k: v.shape for k, v in none.state_dict().items()}
        assert all(none_all.get(k) == s for k, s in base_other.items() if "A_log" not in k), name
        # the last axis doubled: two voxels at the deepest stage, which InstanceNorm needs
        x = torch.randn(2, 1, *[SHAPES[name]] * (dims - 1), 2 * SHAPES[name])
        for net in (gated, none):
            net.train()
            outs = net(x)
            outs = outs if isinstance(outs, list) else [outs]
            assert outs[0].shape == (2, 2) + x.shape[2:]
            sum(o.sum() for o in outs).backward()
            assert all(p.grad is not None for p in net.parameters() if p.requires_grad)


def test_twin_capabilities_derive_from_base_without_ssm():
    for name in MAMBA:
        base = get_capabilities(name)
        for twin in twin_names(name):
            caps = get_capabilities(twin)
            assert caps.ssm is None and caps.twin_mixers == ()
            assert (caps.dims, caps.topology, caps.input_divisor, caps.norm) == (
                base.dims, base.topology, base.input_divisor, base.norm)
            assert base_network_name(twin) == name
            assert get_network_entry(twin).name == twin
    # the planner writes no SSM settings for a twin, the base's for the base
    topo = Topology(patch_size=(16, 16), strides=((1, 1), (2, 2), (2, 2)), kernel_sizes=((3, 3),) * 3,
                    pools_per_axis=(2, 2), divisible_by=(4, 4))
    assert "routes" in network_kwargs("umamba_bot", 2, 1, 2, topo)
    kwargs = network_kwargs("umamba_bot:no_ssm", 2, 1, 2, topo)
    assert "routes" not in kwargs and "d_state" not in kwargs and kwargs["n_stages"] == 3


def test_twin_name_round_trips_through_plans_and_checkpoint(tmp_path):
    from medmamba.formats.checkpoint import Checkpoint, read_checkpoint, write_checkpoint
    from medmamba.inference.model_folder import build_network_from_checkpoint

    spec = NetworkSpec("umamba_bot:no_ssm", {"spatial_dims": 2, "in_channels": 1, "num_classes": 2,
                                             **SMALL["umamba_bot"]})
    net = build_network(spec.name, **spec.kwargs)
    ckpt = Checkpoint(network_name=spec.name, network_kwargs=dict(spec.kwargs), state_dict=net.state_dict(),
                      plans={}, configuration="2d", dataset_json={}, mirror_axes=[])
    path = write_checkpoint(tmp_path / "ckpt.pt", ckpt)
    loaded = read_checkpoint(path)
    assert loaded.network_name == "umamba_bot:no_ssm"
    rebuilt = build_network_from_checkpoint(loaded)
    assert not _has_ssm(rebuilt) and _params(rebuilt) == _params(net)


def test_twin_is_planned_with_its_base_costs():
    from medmamba.plans.memory_model import cost_model, load_fits

    fits = load_fits()
    base = cost_model(fits, "umamba_bot", 2)
    twin = cost_model(fits, "umamba_bot:no_ssm", 2)
    assert twin.source == "base:umamba_bot"
    assert (twin.memory_bytes_per_voxel, twin.seconds_per_voxel) == (base.memory_bytes_per_voxel,
                                                                      base.seconds_per_voxel)


def test_twin_name_round_trips_through_planned_plans():
    from medmamba.formats.plans import Plans
    from medmamba.plans.memory_model import load_fits
    from medmamba.plans.planner import plan_experiment

    stats = {"mean": 100.0, "median": 90.0, "std": 20.0, "min": 0.0, "max": 300.0,
             "percentile_00_5": 10.0, "percentile_99_5": 250.0}
    fp = {"spacings": [[1.0, 1.0, 1.0]] * 4, "shapes_after_crop": [[96, 96, 1]] * 4,
          "median_relative_size_after_cropping": 0.9, "foreground_intensity_properties_per_channel": {"0": stats}}
    dataset_json = {"channel_names": {"0": "T2"}, "labels": {"background": 0, "tumour": 1}, "file_ending": ".nii.gz"}
    plans = plan_experiment(fp, dataset_json, "Dataset001_Test", fits=load_fits(),
                            networks={"*": "umamba_bot:gated_cnn"}, target="cpu")
    saved = Plans.from_dict(plans.to_dict()).configuration("2d")
    assert saved.network.name == "umamba_bot:gated_cnn" and "routes" not in saved.network.kwargs
    assert saved.extra["cost_model"] == "base:umamba_bot"
    net = build_network(saved.network.name, **saved.network.kwargs)
    assert not _has_ssm(net) and any(isinstance(m, GatedCNNMixer) for m in net.modules())
