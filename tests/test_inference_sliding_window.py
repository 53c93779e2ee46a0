"""Sliding window: tile grid, gaussian weights, padding, 2D/3D, mirror TTA and fold averaging."""
import itertools
import math

import pytest
import torch

from medmamba.inference.array_prediction import mirror_subsets, predict_preprocessed_case
from medmamba.inference.sliding_window import (
    compute_window_starts, gaussian_importance_map, padding_for_patch, sliding_window_logits)


def _plain_unet(spatial_dims, in_channels=1, num_classes=3, seed=0):
    import medmamba.networks.plain_unet  # noqa: F401  (registers the network)
    from medmamba.networks.registry import build_network

    torch.manual_seed(seed)
    net = build_network("plain_unet", spatial_dims=spatial_dims, in_channels=in_channels, num_classes=num_classes,
                        n_stages=2, features_per_stage=[4, 8], deep_supervision=False)
    return net.eval()


@pytest.mark.parametrize("size,patch,step", [(10, 4, 0.5), (100, 64, 0.5), (7, 4, 0.5), (4, 4, 0.5), (13, 5, 0.33),
                                             (9, 4, 1.0)])
def test_window_starts_cover_and_are_symmetric(size, patch, step):
    starts = compute_window_starts(size, patch, step)
    span = size - patch
    assert starts[0] == 0 and starts[-1] == span
    assert starts == sorted(starts) and len(set(starts)) == len(starts)
    assert starts == [span - s for s in reversed(starts)]  # mirror-symmetric grid
    covered = set()
    for s in starts:
        covered.update(range(s, s + patch))
    assert covered == set(range(size))
    assert all(b - a <= math.ceil(patch * step) for a, b in zip(starts, starts[1:]))
    if span:
        assert len(starts) >= math.ceil(span / (patch * step)) + 1  # nnU-Net's count, +1 only for symmetry


def test_window_starts_examples():
    assert compute_window_starts(10, 4) == [0, 2, 4, 6]
    assert compute_window_starts(100, 64) == [0, 18, 36]
    assert compute_window_starts(7, 4) == [0, 1, 2, 3]  # odd span, odd count -> one more tile
    assert padding_for_patch(5, 8) == (2, 2)  # 3 missing -> 4, centred
    assert padding_for_patch(9, 8) == (0, 0)


def test_gaussian_importance_map():
    g = gaussian_importance_map((17, 6, 5))
    assert g.shape == (17, 6, 5) and g.dtype == torch.float32
    assert float(g.max()) == pytest.approx(10.0)  # nnU-Net scales the map to max 10
    # nnU-Net replaces zeros by the smallest non-zero value: the minimum sits in a corner, the
    # point farthest from the centre, and is still positive (a weight of 0 would divide by 0)
    assert float(g.min()) == float(g[0, 0, 0]) > 0
    assert torch.equal(g, torch.flip(g, (0, 1, 2)))
    line = gaussian_importance_map((17,))
    sigma = 17 / 8
    assert float(line[8 + 2] / line[8]) == pytest.approx(math.exp(-4 / (2 * sigma ** 2)), rel=1e-5)
    assert int(torch.argmax(line)) == 8


@pytest.mark.parametrize("use_gaussian", [True, False])
@pytest.mark.parametrize("shape", [(9, 7, 5), (3, 5, 2), (13, 4, 10)])
def test_pointwise_network_reproduces_full_image(shape, use_gaussian):
    # A 1x1 convolution has no spatial context, so any tiling must give exactly the whole-image output;
    # this checks tile placement, weighting, padding (axes smaller than the patch) and cropping back.
    torch.manual_seed(0)
    net = torch.nn.Conv3d(2, 3, kernel_size=1)
    x = torch.randn(2, *shape)
    out = sliding_window_logits(net, x, (4, 4, 4), use_gaussian=use_gaussian, batch_windows=3)
    with torch.no_grad():
        expected = net(x[None])[0]
    assert out.shape == (3, *shape)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


def test_2d_patch_on_3d_stack_is_slice_by_slice():
    net = _plain_unet(2, in_channels=1, num_classes=2)
    x = torch.randn(1, 3, 11, 6)
    out = sliding_window_logits(net, x, (8, 8), batch_windows=5)
    assert out.shape == (2, 3, 11, 6)
    for z in range(3):
        single = sliding_window_logits(net, x[:, z], (8, 8), batch_windows=2)
        torch.testing.assert_close(out[:, z], single, atol=1e-5, rtol=1e-5)


def test_batch_size_does_not_change_the_result():
    net = _plain_unet(3)
    x = torch.randn(1, 10, 9, 8)
    a = sliding_window_logits(net, x, (8, 8, 8), batch_windows=1)
    b = sliding_window_logits(net, x, (8, 8, 8), batch_windows=7)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("dims,shape,patch,axes", [
    (3, (1, 10, 9, 6), (8, 8, 8), (0, 1, 2)),
    (3, (1, 10, 9, 6), (8, 8, 8), (1,)),
    (2, (1, 2, 11, 7), (8, 8), (0, 1)),
])
def test_tta_equals_mean_of_explicit_flips(dims, shape, patch, axes):
    net = _plain_unet(dims)
    x = torch.randn(*shape)
    probs = predict_preprocessed_case(net, x, patch, mirror_axes=axes)
    extra = x.ndim - 1 - len(patch)
    total = torch.zeros_like(probs)
    subsets = [c for r in range(len(axes) + 1) for c in itertools.combinations(axes, r)]
    assert len(mirror_subsets(axes)) == len(subsets) == 2 ** len(axes)
    for subset in subsets:
        d = [1 + extra + a for a in subset]
        flipped = torch.flip(x, d) if d else x
        logits = sliding_window_logits(net, flipped, patch)
        total += torch.flip(logits, d) if d else logits
    expected = torch.softmax(total / len(subsets), dim=0)
    torch.testing.assert_close(probs, expected, atol=1e-5, rtol=1e-5)
    assert torch.allclose(probs.sum(0), torch.ones(()), atol=1e-5)


def test_full_tta_is_exactly_flip_equivariant():
    # The symmetric grid + symmetric gaussian + centred padding make mirroring commute with tiling.
    net = _plain_unet(3)
    x = torch.randn(1, 11, 7, 5)  # odd spans, an axis smaller than the patch
    p = predict_preprocessed_case(net, x, (8, 8, 8), mirror_axes=(0, 1, 2))
    q = predict_preprocessed_case(net, torch.flip(x, (1, 3)), (8, 8, 8), mirror_axes=(0, 1, 2))
    torch.testing.assert_close(torch.flip(q, (1, 3)), p, atol=1e-5, rtol=1e-5)


def test_fold_average_is_mean_of_fold_probabilities():
    nets = [_plain_unet(3, seed=s) for s in (1, 2)]
    x = torch.randn(1, 9, 8, 8)
    both = predict_preprocessed_case(nets, x, (8, 8, 8), mirror_axes=None)
    singles = [predict_preprocessed_case(n, x, (8, 8, 8)) for n in nets]
    torch.testing.assert_close(both, (singles[0] + singles[1]) / 2, atol=1e-6, rtol=1e-5)
    assert not torch.allclose(singles[0], singles[1])


def test_gather_input_cases(tmp_path):
    from medmamba.inference.input_folder import gather_input_cases

    for name in ("a_0000.nii.gz", "a_0001.nii.gz", "b_0000.nrrd", "b_0001.nrrd", "c_0000.nii.gz", "c_0000.mha",
                 "c_0001.mha", "d.nii.gz", "x.mhd", "x.raw", "notes.json", ".hidden_0000.nii.gz"):
        (tmp_path / name).write_bytes(b"")
    cases, failures = gather_input_cases(tmp_path, 2)
    assert [(c.case_id, [f.name for f in c.image_files], c.ending) for c in cases] == [
        ("a", ["a_0000.nii.gz", "a_0001.nii.gz"], ".nii.gz"), ("b", ["b_0000.nrrd", "b_0001.nrrd"], ".nrrd")]
    reasons = dict(failures)
    assert "two files for one channel" in reasons["c"]
    assert "no _0000 channel suffix" in reasons["d"] and "no _0000 channel suffix" in reasons["x"]
    one, failures = gather_input_cases(tmp_path, 1)
    assert [c.case_id for c in one] == ["d", "x"]  # one-channel model: suffix-free names are cases
    reasons = dict(failures)
    assert "expects 1 channel" in reasons["a"] and "expects 1 channel" in reasons["b"] and "c" in reasons


def test_label_layouts_and_label_maps():
    import numpy as np

    from medmamba.inference.label_maps import layout_from_dataset, probabilities_to_label_map

    probs = np.zeros((3, 2, 2), dtype=np.float32)
    probs[0, 0, 0] = probs[1, 0, 1] = probs[2, 1, :] = 1.0
    layout = layout_from_dataset({"background": 0, "a": 1, "b": 2})
    seg = probabilities_to_label_map(probs, layout)
    assert seg.dtype == np.uint8 and seg.tolist() == [[0, 1], [2, 2]]
    # non-consecutive values map index -> value; large values give uint16
    seg = probabilities_to_label_map(probs, layout_from_dataset({"background": 0, "a": 5, "b": 300, "ignore": 7}))
    assert seg.dtype == np.uint16 and seg.tolist() == [[0, 5], [300, 300]]
    # regions: sigmoid outputs painted in regions_class_order, later regions win
    regions = layout_from_dataset({"background": 0, "whole": [1, 2], "core": 2}, {"regions_class_order": [1, 2]})
    assert regions.has_regions and regions.num_outputs == 2
    region_probs = np.array([[[0.9, 0.9], [0.2, 0.9]], [[0.1, 0.8], [0.9, 0.3]]], dtype=np.float32)
    assert probabilities_to_label_map(region_probs, regions).tolist() == [[1, 2], [2, 1]]
