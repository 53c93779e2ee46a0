"""Augmentation steps on in-test arrays: image/label alignment under every spatial step, every step
changes the image when forced, intensity steps leave the labels alone, determinism, levels; 2D and 3D.

Alignment: the label is a threshold of a smooth image; after a spatial step (image linear, label
nearest) the label must still equal the threshold of the transformed image on >= 99% of the voxels
inside the source crop. A label left untransformed while the image moves agrees far less (checked
below, so the 99% test has the power to fail).
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from medmamba.training.augmentation import (
    DEFAULT_STEPS, INTENSITY_PROBABILITIES, AugmentationPipeline, configure_augmentation, get_step, initial_patch_size,
    list_steps,
)

PATCHES = [(64, 72), (40, 44, 48)]
ALL_OFF = {p: 0.0 for p in INTENSITY_PROBABILITIES} | {"p_rotation": 0.0, "p_scale": 0.0, "p_elastic": 0.0,
                                                       "p_mirror": 0.0}
# per step: the parameters that make it fire with certainty (and visibly: low resolution at <= 0.6 zoom)
FORCE = {
    "spatial": {"p_rotation": 1.0},
    "noise": {"p_noise": 1.0},
    "blur": {"p_blur": 1.0, "p_blur_channel": 1.0},
    "brightness": {"p_brightness": 1.0},
    "contrast": {"p_contrast": 1.0},
    "low_resolution": {"p_lowres": 1.0, "p_lowres_channel": 1.0, "lowres_zoom": (0.5, 0.6)},
    "gamma_inverted": {"p_gamma_inverted": 1.0},
    "gamma": {"p_gamma": 1.0},
    "mirror": {"p_mirror": 1.0},
    "bias_field": {"p_bias_field": 1.0},
}
SPATIAL_CASES = {
    "rotation": {"p_rotation": 1.0},
    "scaling": {"p_scale": 1.0},
    "elastic": {"p_elastic": 1.0, "elastic_magnitude": (150.0, 200.0)},  # upper range: visible deformation
    "rotation+scaling": {"p_rotation": 1.0, "p_scale": 1.0},
}


def _params(patch, **overrides):
    return dataclasses.replace(configure_augmentation(patch), **{**ALL_OFF, **overrides})


def _smooth_case(shape, seed, channels=1):
    """Smooth image (C, *shape) and its threshold as the label (1, *shape).

    Channel 0 is a gently curved surface away from the centre (a tilted plane plus a small
    quadratic): nearest (labels) and linear (image) sampling then disagree only within a voxel of
    one surface, < 1% of the voxels at these patch sizes. Further channels are smooth noise.
    """
    rng = np.random.default_rng(seed)
    x = np.stack(np.meshgrid(*[np.arange(s, dtype=np.float64) - (s - 1) / 2 for s in shape], indexing="ij"))
    normal = rng.normal(size=len(shape))
    offset = rng.choice([-1, 1], len(shape)) * rng.uniform(0.1, 0.2, len(shape)) * np.asarray(shape)
    x -= offset.reshape(-1, *[1] * len(shape))
    surface = np.tensordot(normal / np.linalg.norm(normal), x, 1) + 0.004 * (x**2).sum(0)
    noise = [gaussian_filter(rng.normal(size=shape), 3.0) * 10 for _ in range(channels - 1)]
    img = np.stack([surface, *noise]).astype(np.float32)
    return img, (img[:1] > 0).astype(np.int16), 0.0


def _agreement(img, seg, thr):
    """Fraction of voxels inside the source (seg >= 0) where seg == (img > thr)."""
    inside = seg[0] >= 0
    assert inside.mean() > 0.5  # the step kept most of the patch inside the crop
    return float(((img[0] > thr) == (seg[0] == 1))[inside].mean())


@pytest.mark.parametrize("patch", PATCHES)
@pytest.mark.parametrize("case", list(SPATIAL_CASES))
def test_spatial_step_keeps_labels_aligned(patch, case):
    params = _params(patch, **SPATIAL_CASES[case])
    if case == "elastic" and len(patch) == 3:  # 3D smoothing shrinks the offsets more: scale them to a few voxels
        params = dataclasses.replace(params, elastic_magnitude=(1500.0, 2000.0))
    pipe = AugmentationPipeline(patch, params)
    step = get_step("spatial")
    for seed in range(3):
        rng = np.random.default_rng(seed)
        drawn = pipe.draw_spatial(rng)
        assert drawn is not None
        img, seg, thr = _smooth_case(pipe.crop_size, 100 + seed)
        out_img, out_seg = step.apply(img.copy(), seg.copy(), drawn, params)
        assert out_img.shape == (1, *patch) and out_seg.shape == (1, *patch)
        assert set(np.unique(out_seg)) <= {-1, 0, 1}
        assert _agreement(out_img, out_seg, thr) >= 0.99
        # power check: the untransformed (centre-cropped) label does not match the moved image
        lo = [(c - p) // 2 for c, p in zip(pipe.crop_size, patch)]
        still = seg[(slice(None), *[slice(a, a + p) for a, p in zip(lo, patch)])]
        assert _agreement(out_img, np.where(out_seg < 0, -1, still), thr) < 0.99  # would fail the check above


@pytest.mark.parametrize("patch", PATCHES)
def test_mirror_step_keeps_labels_aligned(patch):
    params = _params(patch, p_mirror=1.0)
    img, seg, thr = _smooth_case(patch, 7)
    out_img, out_seg = get_step("mirror")(img.copy(), seg.copy(), np.random.default_rng(0), params)
    assert _agreement(out_img, out_seg, thr) == 1.0
    assert np.array_equal(out_img, np.flip(img, tuple(range(1, len(patch) + 1))))  # every axis flipped at p 1
    assert _agreement(out_img, seg, thr) < 0.9


def test_every_registered_step_is_covered_and_default_order_is_nnunets():
    assert sorted(FORCE) == list_steps()  # a new step must say here how to force it
    assert DEFAULT_STEPS == ("spatial", "noise", "blur", "brightness", "contrast", "low_resolution",
                             "gamma_inverted", "gamma", "mirror")
    assert configure_augmentation((16, 16)).steps == DEFAULT_STEPS


@pytest.mark.parametrize("patch", PATCHES)
@pytest.mark.parametrize("name", sorted(FORCE))
def test_forced_step_changes_the_image(patch, name):
    params = _params(patch, **FORCE[name])
    step = get_step(name)
    img, seg, _ = _smooth_case(patch if name != "spatial" else initial_patch_size(patch, params), 3, channels=2)
    rng = np.random.default_rng(5)
    if name == "spatial":
        out_img, out_seg = step.apply(img, seg, AugmentationPipeline(patch, params).draw_spatial(rng), params)
        crop = [(c - p) // 2 for c, p in zip(img.shape[1:], patch)]
        img = img[(slice(None), *[slice(a, a + p) for a, p in zip(crop, patch)])]  # what no transform would give
    else:
        seg_in = seg.copy()
        out_img, out_seg = step(img.copy(), seg_in, rng, params)
    assert out_img.shape == img.shape and out_img.dtype == np.float32 and np.isfinite(out_img).all()
    changed = np.abs(out_img - img)
    assert changed.max() > 1e-2 and (changed > 1e-4).mean() > 0.1, f"{name} left the image (nearly) as it was"
    if not step.spatial:
        assert out_seg is seg_in and np.array_equal(seg_in, seg), f"intensity step {name} touched the labels"


@pytest.mark.parametrize("patch", PATCHES)
def test_pipeline_deterministic_under_seed(patch):
    forced = {k: v for f in FORCE.values() for k, v in f.items()} | {"p_scale": 1.0}
    params = dataclasses.replace(configure_augmentation(patch), **forced)
    pipe = AugmentationPipeline(patch, params)
    img, seg, _ = _smooth_case(pipe.crop_size, 1, channels=2)

    def run(seed):
        rng = np.random.default_rng(seed)
        spatial = pipe.draw_spatial(rng)
        return pipe(img, seg, rng, spatial)

    a, b, c = run(11), run(11), run(12)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.allclose(a[0], c[0])
    assert a[0].shape == (2, *patch) and a[1].shape == (1, *patch) and a[1].min() >= 0
    assert np.array_equal(img, _smooth_case(pipe.crop_size, 1, channels=2)[0])  # the input is not modified


@pytest.mark.parametrize("patch", PATCHES)
def test_levels_none_is_identity_and_light_is_spatial_only(patch):
    img, seg, thr = _smooth_case(patch, 2, channels=2)
    none = AugmentationPipeline(patch, configure_augmentation(patch, level="none"))
    assert none.crop_size == patch
    for seed in range(5):
        rng = np.random.default_rng(seed)
        out_img, out_seg = none(img, seg, rng, none.draw_spatial(rng))
        assert np.array_equal(out_img, img) and np.array_equal(out_seg, seg)
    light = AugmentationPipeline(patch, configure_augmentation(patch, level="light"))
    big, big_seg, thr = _smooth_case(light.crop_size, 2, channels=2)
    for seed in range(5):  # no intensity step: the moved image keeps its values' range and its labels
        rng = np.random.default_rng(seed)
        spatial = light.draw_spatial(rng)
        size = light.crop_size if spatial is not None else patch
        lo = [(c - p) // 2 for c, p in zip(light.crop_size, size)]
        crop = tuple([slice(None)] + [slice(a, a + p) for a, p in zip(lo, size)])
        out_img, out_seg = light(big[crop], big_seg[crop], rng, spatial)
        assert out_img.max() <= big.max() + 1e-5 and out_img.min() >= min(big.min(), 0.0) - 1e-5
        inside = out_img[0] != 0
        assert ((out_img[0] > thr) == (out_seg[0] == 1))[inside].mean() >= 0.99


def test_mask_channels_zero_outside_the_crop():
    patch = (24, 24)
    params = dataclasses.replace(_params(patch, p_rotation=1.0, p_scale=1.0), mask_channels=(0,),
                                 scale_range=(1.4, 1.4))  # shrinks the content: corners come from outside
    pipe = AugmentationPipeline(patch, params)
    img, seg, _ = _smooth_case(pipe.crop_size, 4, channels=2)
    img = np.abs(img) + 10.0  # no voxel is 0 inside
    rng = np.random.default_rng(0)
    spatial = pipe.draw_spatial(rng)
    _, raw_seg = get_step("spatial").apply(img.copy(), seg.copy(), spatial, params)
    out_img, out_seg = pipe(img, seg, np.random.default_rng(0), pipe.draw_spatial(np.random.default_rng(0)))
    outside = raw_seg[0] < 0
    assert outside.any() and out_seg.min() == 0  # -1 became background
    assert np.all(out_img[0][outside] == 0.0)
    assert np.all(out_img[0][~outside] > 5.0)


@pytest.mark.parametrize("patch", PATCHES)
def test_intensity_level_changes_intensities_only(patch):
    params = configure_augmentation(patch, level="intensity", elastic=True)
    nnunet = configure_augmentation(patch)
    assert params.steps == DEFAULT_STEPS + ("bias_field",) and params.p_bias_field == 0.3
    assert all(getattr(params, p) == getattr(nnunet, p) > 0 for p in INTENSITY_PROBABILITIES)
    pipe = AugmentationPipeline(patch, params)
    no_bias = AugmentationPipeline(patch, dataclasses.replace(params, p_bias_field=0.0))
    assert pipe.crop_size == patch  # no spatial step: the crop is the patch
    img, seg, _ = _smooth_case(patch, 6, channels=2)
    changed = bias_fired = 0
    for seed in range(20):
        rng = np.random.default_rng(seed)
        spatial = pipe.draw_spatial(rng)
        assert spatial is None
        out_img, out_seg = pipe(img, seg, rng, spatial)
        assert out_img.shape == img.shape and np.array_equal(out_seg, seg)  # no voxel moved, no flip
        changed += not np.allclose(out_img, img)
        rng = np.random.default_rng(seed)
        bias_fired += not np.array_equal(out_img, no_bias(img, seg, rng, no_bias.draw_spatial(rng))[0])
    assert changed >= 10
    assert 0 < bias_fired < 20  # the bias field is part of the level, at probability 0.3


def _legendre_fit_residual(values: np.ndarray, where: np.ndarray, degree: int) -> float:
    """Largest residual, over ``where``, of a least-squares fit of ``values`` there by products of
    Legendre polynomials of degree <= ``degree`` per axis on coordinates scaled to [-1, 1] (a space
    that holds every MONAI bias field's logarithm)."""
    from numpy.polynomial import legendre

    coords = np.meshgrid(*[np.linspace(-1, 1, n) for n in values.shape], indexing="ij")
    vander = legendre.legvander2d if values.ndim == 2 else legendre.legvander3d
    basis = vander(*coords, [degree] * values.ndim)[where]
    coeff = np.linalg.lstsq(basis, values[where], rcond=None)[0]
    return float(np.abs(basis @ coeff - values[where]).max())


@pytest.mark.parametrize("patch", PATCHES)
def test_bias_field_multiplies_intensities_above_the_minimum_by_a_smooth_positive_field(patch):
    params = _params(patch, p_bias_field=1.0)
    pipe = AugmentationPipeline(patch, dataclasses.replace(params, steps=DEFAULT_STEPS + ("bias_field",)))
    img, seg, _ = _smooth_case(patch, 8, channels=2)
    assert img[0].min() < 0 < img[0].max()  # z-score-like: the shift to the minimum matters

    def run(seed):
        rng = np.random.default_rng(seed)
        return pipe(img, seg, rng, pipe.draw_spatial(rng))

    (a, a_seg), (b, _), (c, _) = run(3), run(3), run(4)
    assert np.array_equal(a, b) and np.array_equal(a_seg, seg)
    assert not np.allclose(a, c)
    log_fields = []
    for ch in range(img.shape[0]):
        x, out = img[ch].astype(np.float64), a[ch].astype(np.float64)
        low = x.min()
        assert out.min() == img[ch].min()  # the minimum is kept exactly
        above = x - low > 0.05 * (x.max() - low)  # away from the minimum, where the ratio is well conditioned
        ratio = (out[above] - low) / (x[above] - low)
        assert np.all(ratio > 0)
        assert ratio.max() / ratio.min() > 1.05  # not a constant factor
        log_field = np.zeros_like(x)
        log_field[above] = np.log(ratio)
        # smooth: the log ratio is one low-degree polynomial, to float32 rounding (noise would leave ~1)
        assert _legendre_fit_residual(log_field, above, params.bias_field_degree) < 1e-4
        log_fields.append(log_field)
    both = (img[0] - img[0].min() > 0.05 * np.ptp(img[0])) & (img[1] - img[1].min() > 0.05 * np.ptp(img[1]))
    assert not np.allclose(log_fields[0][both], log_fields[1][both], atol=1e-2)  # one field per channel


@pytest.mark.parametrize("level", ["default", "light", "none"])
@pytest.mark.parametrize("elastic", [False, True])
def test_other_levels_draw_no_bias_field(level, elastic):
    params = configure_augmentation((24, 24, 24), elastic=elastic, level=level)
    assert params.steps == DEFAULT_STEPS and params.p_bias_field == 0.0
