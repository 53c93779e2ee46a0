"""Planner numbers on hand-made fingerprints, the plans schema, and the stored cost fits."""
from __future__ import annotations

import json
import math

import pytest

from medmamba.errors import PlansError
from medmamba.plans.memory_model import FIT_FILE, cost_model, fit_line, load_fits
from medmamba.plans.planner import (
    CPU_BATCH_SIZE,
    CPU_SECONDS_PER_ITERATION,
    MAX_DATASET_FRACTION_PER_BATCH,
    fullres_target_spacing,
    plan_experiment,
    transpose_for,
)
from medmamba.atomic import atomic_write_json
from medmamba.formats.plans import Plans, load_plans
from medmamba.plans.topology import pool_and_conv_props
from medmamba.preprocessing.resampling import separate_z_axis

# Hand-made cost fits (bytes, seconds) so these tests do not depend on the measured file.
FITS = {"networks": {"umamba_bot": {
    "3": {"memory": {"fixed_bytes": 2e8, "bytes_per_voxel": 4000.0},
          "throughput": {"seconds_fixed": 0.05, "seconds_per_voxel": 2e-5}},
    "2": {"memory": {"fixed_bytes": 1e8, "bytes_per_voxel": 2000.0},
          "throughput": {"seconds_fixed": 0.02, "seconds_per_voxel": 1e-5}}}}}
MRI = {"channel_names": {"0": "T2"}, "labels": {"background": 0, "tumour": 1}, "file_ending": ".nii.gz"}


def fingerprint(spacings, shapes, relative=0.9, n_channels=1):
    stats = {"mean": 100.0, "median": 90.0, "std": 20.0, "min": 0.0, "max": 300.0,
             "percentile_00_5": 10.0, "percentile_99_5": 250.0}
    return {"spacings": spacings, "shapes_after_crop": shapes, "median_relative_size_after_cropping": relative,
            "foreground_intensity_properties_per_channel": {str(c): dict(stats) for c in range(n_channels)}}


def plan(fp, dataset_json=MRI, **kw):
    kw.setdefault("fits", FITS)
    kw.setdefault("target", "gpu")
    return plan_experiment(fp, dataset_json, "Dataset001_Test", **kw)


def assert_bottleneck_ok(config):
    kwargs = config.network.kwargs
    topo = pool_and_conv_props(config.spacing, config.patch_size)
    assert kwargs["strides"] == [list(s) for s in topo.strides]
    assert kwargs["n_stages"] == len(kwargs["strides"]) == len(kwargs["kernel_sizes"])
    divisor = [math.prod(s[a] for s in kwargs["strides"]) for a in range(config.spatial_dims)]
    for p, d in zip(config.patch_size, divisor):
        assert p % d == 0
        # bottleneck >= 4 voxels per axis unless the axis is never pooled (then it is the patch)
        assert p // d >= 4 or d == 1


def test_isotropic_plan():
    fp = fingerprint([[1.0, 1.0, 1.0]] * 20, [[160, 160, 160]] * 20)
    plans = plan(fp)
    # patch 96^3 covers < 25% of 160^3, but lowres would not halve the image: dropped (nnU-Net rule)
    assert list(plans.configurations) == ["2d", "3d_fullres"]
    full = plans.configuration("3d_fullres")
    assert full.spacing == [1.0, 1.0, 1.0]
    assert plans.transpose_forward == [0, 1, 2] and plans.transpose_backward == [0, 1, 2]
    assert full.patch_size[0] == full.patch_size[1] == full.patch_size[2]
    assert full.predicted_memory_gb <= 8.0
    assert full.batch_size >= 2
    assert full.network.name == "umamba_bot" and full.network.kwargs["spatial_dims"] == 3
    assert full.network.kwargs["features_per_stage"][:4] == [32, 64, 128, 256]
    assert max(full.network.kwargs["features_per_stage"]) <= 320
    assert_bottleneck_ok(full)
    assert_bottleneck_ok(plans.configuration("2d"))
    assert full.mirror_axes == [0, 1, 2] and plans.configuration("2d").mirror_axes == [0, 1]


def test_anisotropic_spacing_transpose_and_separate_z():
    spacings = [[0.8, 0.8, z] for z in (4.0, 5.0, 5.0, 6.0, 5.0, 4.5, 5.5, 5.0, 6.0, 4.0)]
    shapes = [[256, 256, 20]] * 10
    assert fullres_target_spacing(spacings, shapes)[2] == pytest.approx(4.0)  # 10th percentile of z
    plans = plan(fingerprint(spacings, shapes))
    assert plans.transpose_forward == [2, 0, 1]
    assert plans.transpose_backward == [1, 2, 0]
    full = plans.configuration("3d_fullres")
    assert full.spacing[0] == pytest.approx(4.0) and full.spacing[1:] == [0.8, 0.8]
    assert full.network.kwargs["kernel_sizes"][0] == [1, 3, 3]  # nnU-Net: no conv across coarse z early
    assert full.network.kwargs["strides"][1][0] == 1
    assert plans.configuration("2d").spacing == [0.8, 0.8]
    assert_bottleneck_ok(full)
    assert separate_z_axis([5.0, 0.8, 0.8], full.spacing) == 0
    assert separate_z_axis([1.0, 1.0, 1.0], [1.2, 1.0, 1.0]) is None


def test_nnunet_topology_examples():
    topo = pool_and_conv_props([1.0, 1.0, 1.0], [128, 128, 128])
    assert topo.n_stages == 6 and topo.pools_per_axis == (5, 5, 5)
    topo = pool_and_conv_props([3.0, 0.8, 0.8], [40, 224, 224])
    assert topo.pools_per_axis == (3, 5, 5)
    assert topo.strides[:3] == ((1, 1, 1), (1, 2, 2), (2, 2, 2)) and topo.strides[-1] == (1, 2, 2)
    assert topo.kernel_sizes[0] == (1, 3, 3)
    assert pool_and_conv_props([1.0, 1.0], [512, 512]).n_stages == 8


def test_transpose_puts_coarsest_axis_first():
    assert transpose_for([1.0, 3.0, 1.0]) == ([1, 0, 2], [1, 0, 2])


def test_ct_vs_mri_normalization():
    dj = {"channel_names": {"0": "CT", "1": "T2", "2": "noNorm"}, "labels": {"background": 0, "a": 1},
          "file_ending": ".nii.gz"}
    shapes = [[100, 100, 100]] * 4
    masked = plan(fingerprint([[1.0] * 3] * 4, shapes, relative=0.5, n_channels=3), dj)
    c = masked.configuration("3d_fullres")
    assert c.normalization_schemes == ["CTNormalization", "ZScoreNormalization", "NoNormalization"]
    assert c.use_mask_for_norm == [False, True, False]
    unmasked = plan(fingerprint([[1.0] * 3] * 4, shapes, relative=0.9, n_channels=3), dj)
    assert unmasked.configuration("3d_fullres").use_mask_for_norm == [False, False, False]
    assert c.network.kwargs["in_channels"] == 3 and c.network.kwargs["num_classes"] == 2


def test_lowres_trigger():
    small = plan(fingerprint([[1.0] * 3] * 10, [[64, 64, 64]] * 10))
    assert "3d_lowres" not in small.configurations
    assert small.configuration("3d_fullres").batch_dice is False
    big = plan(fingerprint([[1.0] * 3] * 10, [[400, 400, 400]] * 10))
    low, full = big.configuration("3d_lowres"), big.configuration("3d_fullres")
    assert math.prod(full.patch_size) / 400 ** 3 < 0.25
    assert min(low.spacing) > 1.0
    assert math.prod(low.patch_size) / math.prod(low.median_image_size_in_voxels) >= 0.25 - 1e-6
    assert full.batch_dice is True and low.data_identifier != full.data_identifier
    # nnU-Net: the lowres stage brings 3d_cascade_fullres = 3d_fullres + previous_stage, stages linked both ways
    assert "3d_cascade_fullres" not in small.configurations
    cascade = big.configuration("3d_cascade_fullres")
    assert (cascade.previous_stage, low.next_stage, full.next_stage) == ("3d_lowres", "3d_cascade_fullres", None)
    assert cascade.data_identifier == full.data_identifier and cascade.patch_size == full.patch_size
    assert cascade.network.kwargs["in_channels"] == full.network.kwargs["in_channels"] + 1  # one foreground label
    again = Plans.from_dict(json.loads(json.dumps(big.to_dict())))
    assert again.configuration("3d_cascade_fullres").previous_stage == "3d_lowres"
    assert again.configuration("3d_lowres").next_stage == "3d_cascade_fullres"


def test_lowres_spacing_factor_forces_the_cascade():
    forced = plan(fingerprint([[1.0] * 3] * 10, [[64, 64, 64]] * 10), lowres_spacing_factor=2.0)
    low, full = forced.configuration("3d_lowres"), forced.configuration("3d_fullres")
    assert low.spacing == [2.0 * s for s in full.spacing] and low.median_image_size_in_voxels == [32.0] * 3
    assert forced.configuration("3d_cascade_fullres").previous_stage == "3d_lowres"
    with pytest.raises(PlansError, match="2D"):
        plan(fingerprint([[999.0, 1.0, 1.0]] * 4, [[1, 64, 64]] * 4), lowres_spacing_factor=2.0)


def test_batch_capped_at_5_percent_of_dataset_and_floored_at_2():
    """Known outcomes with the hand-made FITS (3D: 0.2 GB fixed + 4000 B/voxel per sample)."""
    tiny = plan(fingerprint([[1.0] * 3] * 2, [[48, 48, 48]] * 2), memory_target_gb=80).configuration("3d_fullres")
    assert (tiny.patch_size, tiny.batch_size) == ([48, 48, 48], 2)  # 5% of 2 images < 1 patch: floor 2
    # 1000 cases: the whole image is the patch; 80 GB would hold ~180 samples, 5% of the dataset is 50
    many = plan(fingerprint([[1.0] * 3] * 1000, [[48, 48, 48]] * 1000), memory_target_gb=80)
    full = many.configuration("3d_fullres")
    assert MAX_DATASET_FRACTION_PER_BATCH == 0.05 and (full.patch_size, full.batch_size) == ([48, 48, 48], 50)
    # 8 GB holds 17 samples ((8e9 - 2e8) / (4000 * 48^3) = 17.6): memory, not the dataset, limits
    mid = plan(fingerprint([[1.0] * 3] * 1000, [[48, 48, 48]] * 1000), memory_target_gb=8).configuration("3d_fullres")
    assert mid.batch_size == 17 and mid.predicted_memory_gb == pytest.approx(7.72, abs=0.01)


# (memory target GB -> 3d_fullres patch) for 200^3 isotropic images with the hand-made FITS; each is
# nnU-Net's topology-padded patch at batch 2 under the target.
KNOWN_PATCHES = {1: [40, 48, 48], 2: [56, 56, 64], 4: [64, 80, 80], 8: [96, 96, 96], 16: [112, 128, 128],
                 32: [128, 160, 160], 80: [192, 224, 224]}


def test_memory_target_gives_known_patches_monotonically():
    fp = fingerprint([[1.0] * 3] * 10, [[200, 200, 200]] * 10)
    previous = 0
    for target, patch in KNOWN_PATCHES.items():
        c = plan(fp, memory_target_gb=target).configuration("3d_fullres")
        assert c.patch_size == patch and c.batch_size == 2
        assert c.predicted_memory_gb <= target  # the plan honours the target ...
        assert math.prod(c.patch_size) > previous  # ... and a larger target never gives a smaller patch
        previous = math.prod(c.patch_size)
        assert_bottleneck_ok(c)


def test_larger_dataset_never_lowers_the_batch():
    batches = [plan(fingerprint([[1.0] * 3] * n, [[48, 48, 48]] * n), memory_target_gb=80)
               .configuration("3d_fullres").batch_size for n in (2, 100, 300, 1000, 3000, 10000)]
    assert batches == [2, 5, 15, 50, 150, 180]  # 5% of the dataset until 80 GB (180 samples) binds


def test_fixed_depth_networks_get_known_divisible_patches():
    """Anisotropic MRI-like data (0.8 x 0.8 x 3 mm, 300 x 280 x 60), stored fits, 8 GB: every axis
    a multiple of the network's declared divisor, and the expected sizes."""
    fp = fingerprint([[0.8, 0.8, 3.0]] * 10, [[300, 280, 60]] * 10)
    expected = {"vmunet": ([32, 288, 288], 32), "hrvmamba": ([32, 160, 160], 32), "segmamba": ([16, 160, 144], 16)}
    for name, (patch, divisor) in expected.items():
        full = plan_experiment(fp, MRI, "Dataset001_Test", networks={"*": name}).configuration("3d_fullres")
        assert full.patch_size == patch and all(p % divisor == 0 for p in full.patch_size)
        assert "strides" not in full.network.kwargs and full.predicted_memory_gb <= 8.0
    umamba = plan_experiment(fp, MRI, "Dataset001_Test", networks={"*": "umamba_bot"}).configuration("3d_fullres")
    assert umamba.patch_size == [32, 192, 160]
    assert umamba.network.kwargs["strides"] == [[1, 1, 1], [1, 2, 2], [2, 2, 2], [2, 2, 2], [2, 2, 2], [1, 2, 2]]


def test_2d_images_get_only_2d():
    plans = plan(fingerprint([[999.0, 0.5, 0.5]] * 5, [[1, 300, 200]] * 5))
    assert list(plans.configurations) == ["2d"]
    assert plans.configuration("2d").spacing == [0.5, 0.5]
    with pytest.raises(PlansError, match="not applicable"):
        plan(fingerprint([[999.0, 0.5, 0.5]] * 5, [[1, 300, 200]] * 5), configurations=["3d_fullres"])


def test_cpu_target_patch_and_batch():
    fp = fingerprint([[1.0] * 3] * 10, [[200, 200, 200]] * 10)
    plans = plan(fp, target="cpu", target_reason="test")
    assert plans.target == "cpu" and plans.target_reason == "test"
    full = plans.configuration("3d_fullres")
    assert full.batch_size == CPU_BATCH_SIZE and full.target == "cpu"
    assert math.prod(full.patch_size) <= 64 ** 3
    assert full.predicted_seconds_per_iteration <= CPU_SECONDS_PER_ITERATION
    two = plans.configuration("2d")
    assert math.prod(two.patch_size) <= 256 ** 2 and two.batch_size == CPU_BATCH_SIZE
    slow = {"networks": {"umamba_bot": {d: {**FITS["networks"]["umamba_bot"][d],
                                             "throughput": {"seconds_fixed": 0.0, "seconds_per_voxel": 1e-4}}
                                         for d in ("2", "3")}}}
    slow_full = plan(fp, target="cpu", fits=slow).configuration("3d_fullres")
    assert math.prod(slow_full.patch_size) < math.prod(full.patch_size)  # time budget shrinks the patch
    assert slow_full.predicted_seconds_per_iteration <= CPU_SECONDS_PER_ITERATION


def test_plan_is_a_pure_function_of_its_inputs():
    fp = fingerprint([[0.9, 0.9, 2.5]] * 6, [[180, 170, 60]] * 6)
    assert plan(fp).to_dict() == plan(fp).to_dict()


def test_real_registry_kwargs_build_network():
    import torch

    from medmamba.networks.registry import build_network

    fp = fingerprint([[1.0] * 3] * 4, [[40, 40, 40]] * 4)
    for name in ("umamba_bot", "segmamba"):
        fits = {"networks": {name: FITS["networks"]["umamba_bot"]}}
        c = plan_experiment(fp, MRI, "Dataset001_Test", fits=fits, networks={"*": name},
                            target="cpu").configuration("2d")
        if name == "segmamba":
            assert "strides" not in c.network.kwargs and all(p % 16 == 0 for p in c.patch_size)
        net = build_network(c.network.name, **{**c.network.kwargs, "deep_supervision": False}).eval()
        with torch.no_grad():
            out = net(torch.zeros(1, 1, *c.patch_size))
        assert tuple(out.shape) == (1, 2, *c.patch_size)
    # anisotropic 3D: kernel 1 and stride 1 along the coarse axis in early stages
    aniso = fingerprint([[0.8, 0.8, 4.0]] * 4, [[40, 40, 10]] * 4)
    c = plan_experiment(aniso, MRI, "Dataset001_Test", fits=FITS, target="cpu").configuration("3d_fullres")
    assert c.network.kwargs["kernel_sizes"][0] == [1, 3, 3]
    net = build_network(c.network.name, **{**c.network.kwargs, "deep_supervision": False}).eval()
    with torch.no_grad():
        assert tuple(net(torch.zeros(1, 1, *c.patch_size)).shape) == (1, 2, *c.patch_size)


def test_schema_round_trip_and_errors(tmp_path):
    plans = plan(fingerprint([[1.0] * 3] * 4, [[100, 100, 100]] * 4))
    path = tmp_path / "plans.json"
    atomic_write_json(path, plans.to_dict())
    again = load_plans(path)
    assert again.to_dict() == plans.to_dict()
    assert again.num_classes == 2 and again.num_input_channels == 1
    raw = json.loads(path.read_text())
    raw["configurations"]["3d_fullres_bs4"] = {"inherits_from": "3d_fullres", "batch_size": 4}
    path.write_text(json.dumps(raw))
    derived = load_plans(path).configuration("3d_fullres_bs4")
    assert derived.batch_size == 4 and derived.patch_size == plans.configuration("3d_fullres").patch_size
    with pytest.raises(PlansError, match="no configuration"):
        again.configuration("3d_cascade")
    raw["format_version"] = 99
    path.write_text(json.dumps(raw))
    with pytest.raises(PlansError, match="newer"):
        load_plans(path)
    del raw["transpose_forward"]
    raw["format_version"] = 1
    path.write_text(json.dumps(raw))
    with pytest.raises(PlansError, match="transpose_forward"):
        load_plans(path)
    with pytest.raises(PlansError, match="not found"):
        load_plans(tmp_path / "missing.json")
    assert Plans.from_dict(plans.to_dict()).configuration("2d").network.name == "umamba_bot"


def test_fit_line_and_cost_model_fallback():
    line = fit_line([1.0, 2.0, 3.0], [3.0, 5.0, 7.0])
    assert line.slope == pytest.approx(2.0) and line.intercept == pytest.approx(1.0)
    cm = cost_model(FITS, "not_measured", 3)
    assert cm.source == "fallback:umamba_bot"


def test_stored_fit_predicts_the_recorded_measurements():
    """The planner's memory prediction against the peaks measured by benchmarks/memory_model.py and
    recorded with the fit (medmamba/plans/memory_fit.json ``points``): never below a measured peak
    (a plan must not overrun its target), and at the largest measured patch, where the planner
    extrapolates from, within 30% of it (not wastefully conservative)."""
    fits = load_fits()
    assert FIT_FILE.name == "memory_fit.json" and "profile_memory" in fits["method"]
    from medmamba.networks.registry import list_networks

    assert set(fits["networks"]) == set(list_networks())  # every network has measured costs
    for name, per_dims in fits["networks"].items():
        assert set(per_dims) == {"2", "3"}
        for dims, entry in per_dims.items():
            cm = cost_model(fits, name, int(dims))
            assert cm.source == name
            ratios = []
            for point in entry["points"]:
                predicted = cm.memory_bytes(point["voxels"], 1)
                assert point["peak_bytes"] <= predicted, (name, dims, point["patch"])
                ratios.append(point["peak_bytes"] / predicted)
            largest = max(entry["points"], key=lambda p: p["voxels"])
            assert largest["peak_bytes"] / cm.memory_bytes(largest["voxels"], 1) >= 0.7, (name, dims)
            # recorded time of the largest point within a factor 1.5 of the fitted line
            secs = cm.seconds_per_iteration(largest["voxels"], 1)
            assert largest["seconds_per_iteration"] / 1.5 <= secs <= largest["seconds_per_iteration"] * 1.5


# --- routes, d_state and the memory-demand rule (medmamba/plans/memory_reductions.py) ---

def _cost(bytes_per_voxel=1000.0, fixed=1e8):
    from medmamba.plans.memory_model import CostModel

    return CostModel("vmunet", 2, "vmunet", fixed, bytes_per_voxel)


def _candidates():
    from medmamba.plans.memory_reductions import Reduction

    return [Reduction("d_state_1", {"d_state": 1}, 0.5, "hand"),
            Reduction("rotate_routes", {"routes": {"spec": "cross2d", "mode": "rotate", "routes_per_layer": 1}},
                      0.5, "hand")]


def test_memory_rule_fires_only_when_short_and_in_order():
    from medmamba.plans.memory_reductions import choose_reductions

    voxels, batch = 1e5, 2  # activations: 2 * 1000 * 1e5 = 2e8 bytes; fixed 1e8 -> 0.3 GB predicted
    applied, costs = choose_reductions(_cost(), voxels, batch, 0.3e9, _candidates())
    assert applied == [] and costs == _cost()  # fits: nothing changes
    applied, costs = choose_reductions(_cost(), voxels, batch, 0.25e9, _candidates())
    assert [r.name for r in applied] == ["d_state_1"]  # N=1 alone suffices: 1e8 + 1e8 <= 0.25e9
    assert costs.memory_bytes_per_voxel == 500.0 and costs.memory_bytes(voxels, batch) <= 0.25e9
    applied, costs = choose_reductions(_cost(), voxels, batch, 0.16e9, _candidates())
    assert [r.name for r in applied] == ["d_state_1", "rotate_routes"]
    assert costs.memory_bytes_per_voxel == 250.0 and costs.source == "vmunet+d_state_1+rotate_routes"
    applied, _ = choose_reductions(_cost(), voxels, batch, 0.01e9, _candidates())
    assert len(applied) == 2  # still short: everything available is applied, nothing more


def test_reduction_candidates_and_factors():
    from medmamba.plans.memory_reductions import reduction_candidates, saving_factor

    fits = {"memory_reductions": {"networks": {
        "vmunet": {"2": {"d_state_1": {"factor": 0.7}, "rotate_routes": {"factor": 0.8}}},
        "umamba_bot": {"3": {"d_state_1": {"factor": 0.99}}}}}}
    vm = reduction_candidates("vmunet", 2, {"routes": "cross2d", "d_state": 16}, fits)
    assert [(r.name, r.factor) for r in vm] == [("d_state_1", 0.7), ("rotate_routes", 0.8)]
    assert vm[1].kwargs == {"routes": {"spec": "cross2d", "mode": "rotate", "routes_per_layer": 1}}
    # N already 1 (HRVMamba), a single raster route, RouteMamba networks and plain_unet: nothing to do
    assert [r.name for r in reduction_candidates("vmunet", 2, {"routes": "cross2d", "d_state": 1}, fits)] \
        == ["rotate_routes"]
    assert [r.name for r in reduction_candidates("umamba_bot", 2, {"routes": "raster", "d_state": 16}, fits)] \
        == ["d_state_1"]
    assert reduction_candidates("segmamba", 3, {"routes": "tom", "d_state": 1}, fits) == []
    assert reduction_candidates("plain_unet", 3, {"n_stages": 5}, fits) == []
    # fallbacks are conservative: own other dims, else the least saving factor measured anywhere
    assert saving_factor(fits, "d_state_1", "umamba_bot", 2) == (0.99, "fallback:umamba_bot/3")
    assert saving_factor(fits, "d_state_1", "segmamba", 2) == (0.99, "fallback:umamba_bot/3")
    assert saving_factor({}, "d_state_1", "vmunet", 2) is None


# What the memory rule does at 0.05 GB, where memory is short for every network: N = 1 unless the
# paper's N is already 1 (HRVMamba), then rotation where the routes take a rotating schedule
# (VM-UNet, HRVMamba); nothing for the CNN baseline.
SHORT_MEMORY_REDUCTIONS = {
    "hrvmamba": ["rotate_routes"], "mhsvm": ["d_state_1"], "plain_unet": [], "resenc_unet": [],
    "segmamba": ["d_state_1"],
    "umamba_bot": ["d_state_1"], "umamba_enc": ["d_state_1"], "vmunet": ["d_state_1", "rotate_routes"],
}


def test_planner_records_reductions_and_routes():
    import torch

    from medmamba.networks.registry import build_network, list_networks
    from medmamba.kernels.routes import ROUTE_SETS, route_names

    fits = load_fits()
    fp = fingerprint([[1.0] * 3] * 4, [[200, 200, 200]] * 4)
    two_d = fingerprint([[1.0, 1.0, 1.0]] * 4, [[96, 96, 1]] * 4)
    roomy = plan_experiment(fp, MRI, "Dataset001_Test", fits=fits, networks={"*": "vmunet"},
                            memory_target_gb=8).configuration("3d_fullres")
    assert roomy.network.kwargs["routes"] == "cross3d" and roomy.network.kwargs["d_state"] == 16
    assert "memory_reductions" not in roomy.extra  # memory is not short: the paper settings stay
    for name in list_networks():
        c = plan_experiment(two_d, MRI, "Dataset001_Test", fits=fits, networks={"*": name},
                            memory_target_gb=0.05).configuration("2d")
        kwargs = c.network.kwargs
        applied = [r["reduction"] for r in c.extra.get("memory_reductions", [])]
        assert applied == SHORT_MEMORY_REDUCTIONS[name], name
        if name in ("plain_unet", "resenc_unet"):  # the CNNs: no SSM settings
            assert "routes" not in kwargs and "d_state" not in kwargs and applied == []
        else:
            routes = kwargs["routes"]
            spec = routes["spec"] if isinstance(routes, dict) else routes
            assert spec in ROUTE_SETS[2] or spec in route_names(2)
        if name == "vmunet":
            assert applied == ["d_state_1", "rotate_routes"] and kwargs["d_state"] == 1
            assert kwargs["routes"] == {"spec": "cross2d", "mode": "rotate", "routes_per_layer": 1}
            assert "0.05 GB" in c.extra["memory_reductions"][0]["reason"]
        net = build_network(name, **kwargs)  # every planned kwargs dict builds
        if name == "vmunet":  # the rotated schedule runs (smallest fixed-depth 2D patch)
            net.eval()
            with torch.no_grad():
                assert net(torch.zeros(1, 1, 32, 64)).shape == (1, 2, 32, 64)
    saved = Plans.from_dict(json.loads(json.dumps(plan_experiment(
        two_d, MRI, "Dataset001_Test", fits=fits, networks={"*": "vmunet"}, memory_target_gb=0.05).to_dict())))
    assert saved.configuration("2d").extra["memory_reductions"][1]["reduction"] == "rotate_routes"


def test_lateralized_labels_keep_left_right_unmirrored():
    from medmamba.plans.planner import lateralized_labels

    assert lateralized_labels({"background": 0, "left_lung": 1, "right_lung": 2})
    assert lateralized_labels({"background": 0, "Frontal L": 1, "Frontal R": 2})
    assert not lateralized_labels({"background": 0, "left_kidney": 1, "liver": 2})  # one side only
    assert not lateralized_labels({"background": 0, "lrtumour": 1, "spleen": 2})
    lobes = {**MRI, "labels": {"background": 0, "frontal_left": 1, "frontal_right": 2}}
    # anisotropic in z (canonical axis 2): transpose [2, 0, 1] puts left-right at internal axis 1
    spacings, shapes = [[0.8, 0.8, 5.0]] * 10, [[200, 220, 30]] * 10
    plans = plan(fingerprint(spacings, shapes), lobes)
    assert plans.transpose_forward == [2, 0, 1]
    assert plans.configuration("3d_fullres").mirror_axes == [0, 2]
    assert plans.configuration("2d").mirror_axes == [1]  # 2D axes are internal 1, 2 -> left-right is 2D axis 0
    assert "left-right" in plans.configuration("2d").extra["mirroring"]
    assert plan(fingerprint(spacings, shapes)).configuration("3d_fullres").mirror_axes == [0, 1, 2]
    # 2D images (lifted: canonical axis 0 has one voxel) have no left-right axis to leave out
    flat = plan(fingerprint([[999.0, 1.0, 1.0]] * 10, [[1, 200, 200]] * 10), lobes)
    assert flat.configuration("2d").mirror_axes == [0, 1]


def test_lateralized_isotropic_data_slices_2d_axially():
    from medmamba.plans.planner import transpose_for

    assert transpose_for([1.5, 1.5, 1.5]) == ([0, 1, 2], [0, 1, 2])  # nnU-Net: first of the tied axes
    assert transpose_for([1.5, 1.5, 1.5], keep_left_right_in_plane=True) == ([2, 0, 1], [1, 2, 0])
    assert transpose_for([3.0, 1.0, 1.0], keep_left_right_in_plane=True)[0] == [0, 1, 2]  # no tie: coarsest
    lobes = {**MRI, "labels": {"background": 0, "frontal_left": 1, "frontal_right": 2}}
    plans = plan(fingerprint([[1.5, 1.5, 1.5]] * 10, [[113, 137, 113]] * 10), lobes)
    assert plans.transpose_forward == [2, 0, 1]  # 2D slices are axial: left-right stays in plane
    assert plans.configuration("2d").mirror_axes == [1]  # ... and is not mirrored
    assert plans.configuration("3d_fullres").mirror_axes == [0, 2]


def test_cpu_plans_carry_the_measured_short_budget_recipe(tmp_path):
    from medmamba.plans.cpu_recipe import CPU_OPTIMIZER, CPU_RECIPE
    from medmamba.training.run_setup import TrainOptions, TrainingRecipe, resolve_recipe

    fp = fingerprint([[1.0, 1.0, 1.0]] * 10, [[100, 100, 100]] * 10)
    cpu = plan(fp, target="cpu").configuration("3d_fullres")
    gpu = plan(fp, target="gpu").configuration("3d_fullres")
    assert cpu.extra["optimizer"] == CPU_OPTIMIZER and cpu.extra["recipe"] == CPU_RECIPE
    assert "optimizer" not in gpu.extra and "recipe" not in gpu.extra  # GPU plans keep nnU-Net's recipe
    # the planned recipe is valid for the trainer, and a flag still overrides it
    opts = TrainOptions(dataset="1", configuration="3d_fullres")
    planned = CPU_RECIPE["augmentation"]
    level = planned if isinstance(planned, str) else planned[-1][1]  # a schedule: its last level without a budget
    expected = TrainingRecipe(**{**CPU_RECIPE, "augmentation": level})
    assert resolve_recipe(opts, cpu.extra["recipe"], tmp_path) == expected
    opts.augmentation = "default"
    assert resolve_recipe(opts, cpu.extra["recipe"], tmp_path).augmentation == "default"
    # measured on the cross-subject benchmark: no augmentation below 45 minutes, spatial with a clean finish from 45
    for budget, level in ((5, "none"), (15, "none"), (44.9, "none"), (45, "spatial"), (120, "spatial")):
        recipe = resolve_recipe(TrainOptions(dataset="1", configuration="3d_fullres", time_budget_minutes=budget),
                                cpu.extra["recipe"], tmp_path)
        assert (recipe.augmentation, recipe.clean_finish) == (level, 0.4)


def test_cpu_plans_carry_an_augmentation_schedule_through_plans_json(tmp_path, monkeypatch):
    from medmamba.plans import cpu_recipe
    from medmamba.training.run_setup import TrainOptions, resolve_recipe

    schedule = [[0, "none"], [10, "intensity"], [30, "default"]]
    monkeypatch.setitem(cpu_recipe.CPU_RECIPE, "augmentation", schedule)
    plans = plan(fingerprint([[1.0, 1.0, 1.0]] * 10, [[100, 100, 100]] * 10), target="cpu")
    carried = plans.configuration("3d_fullres").extra["recipe"]["augmentation"]
    assert carried == schedule and carried is not schedule  # a copy: editing the plan leaves the constant alone
    path = tmp_path / "plans.json"
    atomic_write_json(path, plans.to_dict())
    recipe = load_plans(path).configuration("3d_fullres").extra["recipe"]
    assert recipe["augmentation"] == schedule
    for budget, level in ((5, "none"), (10, "intensity"), (None, "default")):
        opts = TrainOptions(dataset="1", configuration="3d_fullres", time_budget_minutes=budget)
        assert resolve_recipe(opts, recipe, path).augmentation == level


def test_memory_decision_returns_its_notes_and_changes_nothing_when_roomy():
    from medmamba.networks.registry import get_capabilities
    from medmamba.plans.planner import NetworkChoice, PatchProblem, reduce_memory_if_short

    fits = load_fits()
    network = NetworkChoice("vmunet", 2, 1, 2)
    costs = cost_model(fits, "vmunet", 2)

    def problem(gb):
        return PatchProblem([1.0, 1.0], [96.0, 96.0], "gpu", gb, 4 * 96 * 96, get_capabilities("vmunet"))

    roomy = reduce_memory_if_short(network, problem(8.0), costs, fits)
    assert roomy.notes == {} and roomy.costs is costs
    assert roomy.network_kwargs == network.kwargs(roomy.topology)
    short = reduce_memory_if_short(network, problem(0.05), costs, fits)
    assert [n["reduction"] for n in short.notes["memory_reductions"]] == ["d_state_1", "rotate_routes"]
    assert short.costs.memory_bytes_per_voxel < costs.memory_bytes_per_voxel
    assert short.network_kwargs["d_state"] == 1 and short.network_kwargs["routes"]["mode"] == "rotate"
