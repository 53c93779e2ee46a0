"""Training augmentation: nnU-Net v2's transforms as an ordered list of named steps.

One :class:`AugmentationPipeline` turns a crop ``(C, *crop)`` float32 + seg ``(1, *crop)`` int16 into
a patch ``(C, *patch)`` / ``(1, *patch)`` using only the ``numpy.random.Generator`` it is given, so
a batch is a pure function of its seed (deterministic for any number of loader workers).

Each step (:class:`Step`, registered with :func:`register_step`) has a name, a probability, a
parameter draw from that generator and an apply that calls MONAI's deterministic transform with
the drawn parameters, so every random number is ours and drawn in nnU-Net's order. The order and
probabilities are nnU-Net v2's ``get_training_transforms`` (batchgenerators v2 transforms):
spatial (rotation p 0.2, scaling p 0.2, elastic off unless asked), noise p 0.1, blur p 0.2,
brightness p 0.15, contrast p 0.15, low resolution p 0.25, inverted gamma p 0.1, gamma p 0.3,
mirroring p 0.5 per axis; then the image is masked by ``use_mask_for_norm`` and seg -1 -> 0.
Beyond nnU-Net: an MR bias field step (``bias_field``, MONAI's ``RandBiasField``) that only the
"intensity" level turns on.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, Callable

import numpy as np
import torch

from medmamba.training.run_setup import AUGMENTATION_LEVELS

# nnU-Net v2 get_training_transforms order ("spatial" is drawn before the crop: it sets the crop size).
DEFAULT_STEPS = ("spatial", "noise", "blur", "brightness", "contrast", "low_resolution", "gamma_inverted", "gamma",
                 "mirror")


@dataclass(frozen=True)
class AugmentationParams:
    """Steps, probabilities and ranges; every default is nnU-Net v2's (``get_training_transforms``)."""

    rotation_deg: tuple[tuple[float, float], ...] = ((-30.0, 30.0),) * 3  # per rotation axis
    dummy_2d: bool = False  # 3D patch much thinner along axis 0: rotate/scale in-plane only
    p_rotation: float = 0.2
    p_scale: float = 0.2
    scale_range: tuple[float, float] = (0.7, 1.4)
    p_elastic: float = 0.0  # nnU-Net: elastic deformation off
    elastic_sigma: tuple[float, float] = (9.0, 13.0)  # batchgenerators/nnU-Net v1 sigma range, voxels
    elastic_magnitude: tuple[float, float] = (0.0, 200.0)  # batchgenerators/nnU-Net v1 alpha range
    p_noise: float = 0.1
    noise_sigma: tuple[float, float] = (0.0, 0.1)
    p_blur: float = 0.2
    blur_sigma: tuple[float, float] = (0.5, 1.0)
    p_blur_channel: float = 0.5
    p_brightness: float = 0.15
    brightness_range: tuple[float, float] = (0.75, 1.25)
    p_contrast: float = 0.15
    contrast_range: tuple[float, float] = (0.75, 1.25)
    p_lowres: float = 0.25
    lowres_zoom: tuple[float, float] = (0.5, 1.0)
    p_lowres_channel: float = 0.5
    p_gamma_inverted: float = 0.1
    p_gamma: float = 0.3
    gamma_range: tuple[float, float] = (0.7, 1.5)
    mirror_axes: tuple[int, ...] = (0, 1, 2)  # spatial axes, internal order
    p_mirror: float = 0.5
    p_bias_field: float = 0.0  # nnU-Net has no bias field step
    # TorchIO RandomBiasField defaults (coefficients +-0.5, order 3; Sudre et al. 2017)
    bias_field_coeff: tuple[float, float] = (-0.5, 0.5)
    bias_field_degree: int = 3
    mask_channels: tuple[int, ...] = field(default_factory=tuple)  # channels with use_mask_for_norm
    steps: tuple[str, ...] = DEFAULT_STEPS  # registered step names, applied in this order


# nnU-Net's intensity transforms, switched off by ``level="light"``.
INTENSITY_PROBABILITIES = ("p_noise", "p_blur", "p_brightness", "p_contrast", "p_lowres", "p_gamma_inverted",
                           "p_gamma")


def configure_augmentation(patch_size: tuple[int, ...], mask_channels: tuple[int, ...] = (),
                           elastic: bool = False, level: str = "default") -> AugmentationParams:
    """nnU-Net's ``configure_rotation_dummyDA_mirroring_and_inital_patch_size`` rules.

    3D: +-30 deg per axis, "dummy 2D" (in-plane +-180 deg only) when max(patch)/patch[0] > 3.
    2D: +-180 deg, or +-15 deg when the patch aspect ratio max/min > 1.5.
    ``level``: "default" (all of nnU-Net's transforms), "light" (mirroring, rotation and scaling;
    no intensity transforms), "spatial" ("light" without mirroring, exactly what "light" with the
    ``no_mirroring`` variant trains), "intensity" (nnU-Net's intensity transforms plus an MR bias field; no
    spatial transform nor mirroring, so the crop is the patch), "none" (no transform at all: plain
    random crops).
    """
    if level not in AUGMENTATION_LEVELS:
        raise ValueError(f"augmentation level must be one of {', '.join(AUGMENTATION_LEVELS)}, got {level!r}")
    ndim = len(patch_size)
    full = (-180.0, 180.0)
    if ndim == 2:
        angle = (-15.0, 15.0) if max(patch_size) / min(patch_size) > 1.5 else full
        rotation, dummy = (angle,), False
    else:
        dummy = max(patch_size) / patch_size[0] > 3
        rotation = ((full,) if dummy else ((-30.0, 30.0),) * 3)
    params = AugmentationParams(
        rotation_deg=rotation, dummy_2d=dummy, mirror_axes=tuple(range(ndim)),
        mask_channels=tuple(mask_channels), p_elastic=0.2 if elastic else 0.0,  # 0.2 as nnU-Net v1's optional elastic
    )
    off = {name: 0.0 for name in INTENSITY_PROBABILITIES}
    if level == "light":
        params = replace(params, **off)
    elif level == "spatial":
        params = replace(params, **off, p_mirror=0.0, mirror_axes=())
    elif level == "none":
        params = replace(params, **off, p_rotation=0.0, p_scale=0.0, p_elastic=0.0, p_mirror=0.0)
    elif level == "intensity":
        # p 0.3 as nnU-Net's gamma probability; the budget schedule using this level is chosen by
        # benchmarks/recipe_crosssubject.py
        params = replace(params, steps=DEFAULT_STEPS + ("bias_field",), p_bias_field=0.3,
                         p_rotation=0.0, p_scale=0.0, p_elastic=0.0, p_mirror=0.0)
    return params


def _rotated_extent(size: np.ndarray, angles: list[float]) -> np.ndarray:
    """Axis-aligned extent of a box ``size`` rotated by each angle (radians) about each axis in turn."""
    ndim = len(size)
    corners = np.array(np.meshgrid(*[[-s / 2, s / 2] for s in size], indexing="ij")).reshape(ndim, -1)
    extent = np.abs(corners).max(axis=1) * 2
    planes = [(0, 1)] if ndim == 2 else [(1, 2), (0, 2), (0, 1)]  # rotation about axis 0, 1, 2
    for (a, b), angle in zip(planes, angles):
        c, s = math.cos(angle), math.sin(angle)
        rot = np.eye(ndim)
        rot[a, a], rot[a, b], rot[b, a], rot[b, b] = c, -s, s, c
        extent = np.maximum(extent, np.abs(rot @ corners).max(axis=1) * 2)
    return extent


def initial_patch_size(patch_size: tuple[int, ...], params: AugmentationParams) -> tuple[int, ...]:
    """Crop size taken before the spatial transform so rotation/scaling leave no empty corners.

    nnU-Net ``get_patch_size``: bounding box of the patch rotated by the largest angle (capped at
    90 deg) about each axis, divided by 0.85 (128^3 -> ~205^3).
    """
    if "spatial" not in params.steps or (params.p_rotation <= 0 and params.p_scale <= 0 and params.p_elastic <= 0):
        return tuple(patch_size)
    size = np.asarray(patch_size, dtype=float)
    max_angle = [min(math.pi / 2, math.radians(max(abs(lo), abs(hi)))) for lo, hi in params.rotation_deg]
    if params.dummy_2d:  # in-plane rotation only: axis 0 keeps its size
        inplane = _rotated_extent(size[1:], max_angle[:1])
        out = np.concatenate([size[:1], inplane / 0.85])
    else:
        out = _rotated_extent(size, max_angle) / 0.85
    return tuple(int(math.ceil(v)) for v in out)


def _draw_factor(rng: np.random.Generator, lo: float, hi: float) -> float:
    """nnU-Net's 50/50 sub-range draw: below 1 or above 1 with equal chance (brightness, contrast, gamma)."""
    if lo < 1 < hi and rng.random() < 0.5:
        return float(rng.uniform(lo, 1.0))
    return float(rng.uniform(max(lo, 1.0) if lo < 1 < hi else lo, hi))


# -- steps ------------------------------------------------------------------------------------
# draw(rng, params, shape) -> parameters (None: nothing to do); ``shape`` is the image's (C, *spatial).
# apply(image, seg, parameters, params) -> (image, seg); an intensity step returns ``seg`` as given.
Draw = Callable[[np.random.Generator, AugmentationParams, tuple[int, ...]], Any]
Apply = Callable[[np.ndarray, np.ndarray, Any, AugmentationParams], tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class Step:
    """One augmentation step.

    ``probability`` names the :class:`AugmentationParams` field holding the chance the step fires
    (nnU-Net's ``RandomTransform`` wrapper; the coin is drawn even at probability 0, so switching a
    step off does not shift the draws of the steps after it); None = the step always runs and its
    draw decides per axis or channel (nnU-Net's spatial and mirror transforms are not wrapped).
    ``spatial``: the step moves voxels, so it is applied to image and labels alike.
    """

    name: str
    draw: Draw
    apply: Apply
    probability: str | None = None
    spatial: bool = False
    description: str = ""

    def fires(self, rng: np.random.Generator, params: AugmentationParams) -> bool:
        return self.probability is None or bool(rng.random() < getattr(params, self.probability))

    def __call__(self, img: np.ndarray, seg: np.ndarray, rng: np.random.Generator, params: AugmentationParams
                 ) -> tuple[np.ndarray, np.ndarray]:
        """Coin, draw and apply (what the pipeline does for every step but the spatial one)."""
        if not self.fires(rng, params):
            return img, seg
        drawn = self.draw(rng, params, img.shape)
        return (img, seg) if drawn is None else self.apply(img, seg, drawn, params)


_STEPS: dict[str, Step] = {}


def register_step(name: str, probability: str | None = None, spatial: bool = False) -> Callable:
    """Class decorator: a class with static ``draw`` and ``apply`` becomes the step ``name``."""

    def decorator(cls: type) -> type:
        if name in _STEPS:
            raise ValueError(f"augmentation step {name!r} registered twice")
        _STEPS[name] = Step(name, cls.draw, cls.apply, probability, spatial, (cls.__doc__ or "").strip())
        return cls

    return decorator


def list_steps() -> list[str]:
    return sorted(_STEPS)


def get_step(name: str) -> Step:
    if name not in _STEPS:
        raise ValueError(f"unknown augmentation step {name!r}; known: {', '.join(list_steps())}")
    return _STEPS[name]


def _tensor(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x))


def _as_numpy(x) -> np.ndarray:
    if hasattr(x, "as_tensor"):
        x = x.as_tensor()
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


@register_step("spatial", spatial=True)
class SpatialTransform:
    """Rotation (p 0.2, angle per axis), scaling (p 0.2, one factor for all axes, > 1 shrinks the
    content) and optional elastic deformation, resampled once onto the patch: image linear, labels
    nearest, outside the crop image 0 and labels -1."""

    @staticmethod
    def draw(rng: np.random.Generator, params: AugmentationParams, shape: tuple[int, ...]) -> dict | None:
        ndim = len(shape) - 1
        rotate = rng.random() < params.p_rotation
        scale = rng.random() < params.p_scale
        elastic = rng.random() < params.p_elastic
        if not (rotate or scale or elastic):
            return None
        angles = [float(np.radians(rng.uniform(lo, hi))) if rotate else 0.0 for lo, hi in params.rotation_deg]
        if ndim == 3 and params.dummy_2d:
            angles = [angles[0], 0.0, 0.0]  # in-plane: about axis 0 only
        factor = float(rng.uniform(*params.scale_range)) if scale else 1.0  # same for all axes (nnU-Net)
        scales = [factor] * ndim
        if params.dummy_2d:
            scales[0] = 1.0
        out = {"size": tuple(int(s) for s in shape[1:]), "angles": angles[0] if ndim == 2 else angles,
               "scales": scales}
        if elastic:
            out["elastic"] = (float(rng.uniform(*params.elastic_sigma)), float(rng.uniform(*params.elastic_magnitude)),
                              int(rng.integers(2**31)))
        return out

    @staticmethod
    def apply(img: np.ndarray, seg: np.ndarray, drawn: dict, params: AugmentationParams
              ) -> tuple[np.ndarray, np.ndarray]:
        from monai.transforms import AffineGrid, Resample
        from monai.transforms.utils import create_grid
        from scipy.ndimage import gaussian_filter

        size = drawn["size"]
        grid = None
        if "elastic" in drawn:  # as MONAI's Rand*Elastic: smoothed U(-1, 1) offsets * magnitude, in voxels
            sigma, magnitude, seed = drawn["elastic"]
            noise = np.random.default_rng(seed).uniform(-1, 1, (len(size), *size)).astype(np.float32)
            # scipy, not MONAI's GaussianSmooth: same values (zero padding), 20-50x faster at sigma 9-13
            offsets = np.stack([gaussian_filter(n, sigma, mode="constant", truncate=4.0) for n in noise]) * magnitude
            grid = create_grid(size, backend="torch", dtype=torch.float32)
            grid[: len(size)] += torch.from_numpy(offsets.astype(np.float32))
        grid, _ = AffineGrid(rotate_params=drawn["angles"], scale_params=drawn["scales"])(spatial_size=size, grid=grid)
        resample = Resample(padding_mode="zeros", dtype=np.float32)
        out_img = _as_numpy(resample(_tensor(img), grid, mode="bilinear"))
        # labels shifted by +1 so the zero padding becomes -1 (outside the image) after shifting back
        shifted = torch.from_numpy(np.asarray(seg, dtype=np.float32) + 1.0)
        out_seg = np.rint(_as_numpy(resample(shifted, grid, mode="nearest"))).astype(np.int16) - 1
        return out_img.astype(np.float32, copy=False), out_seg


@register_step("noise", probability="p_noise")
class GaussianNoise:
    """Additive N(0, sigma), sigma ~ U(0, 0.1), one sigma for all channels."""

    @staticmethod
    def draw(rng: np.random.Generator, params: AugmentationParams, shape: tuple[int, ...]) -> np.ndarray:
        sigma = rng.uniform(*params.noise_sigma)
        # the noise itself comes from our generator: MONAI's RandGaussianNoise would draw from its own
        return rng.normal(0.0, sigma, shape).astype(np.float32)

    @staticmethod
    def apply(img, seg, noise, params):
        return img + noise, seg


@register_step("blur", probability="p_blur")
class GaussianBlur:
    """Gaussian blur, each channel with p 0.5, sigma ~ U(0.5, 1) drawn per axis and channel."""

    @staticmethod
    def draw(rng, params, shape) -> list:
        return [[float(rng.uniform(*params.blur_sigma)) for _ in shape[1:]] if rng.random() < params.p_blur_channel
                else None for _ in range(shape[0])]

    @staticmethod
    def apply(img, seg, sigmas, params):
        from monai.transforms import GaussianSmooth

        for c, sigma in enumerate(sigmas):
            if sigma is not None:
                img[c] = _as_numpy(GaussianSmooth(sigma=sigma)(_tensor(img[c : c + 1])))[0]
        return img, seg


@register_step("brightness", probability="p_brightness")
class MultiplicativeBrightness:
    """Multiply each channel by a factor in [0.75, 1.25] (50/50 below or above 1)."""

    @staticmethod
    def draw(rng, params, shape) -> list[float]:
        return [_draw_factor(rng, *params.brightness_range) for _ in range(shape[0])]

    @staticmethod
    def apply(img, seg, factors, params):
        from monai.transforms import ScaleIntensity

        for c, f in enumerate(factors):
            img[c] = _as_numpy(ScaleIntensity(minv=None, maxv=None, factor=f - 1.0)(_tensor(img[c])))
        return img, seg


@register_step("contrast", probability="p_contrast")
class Contrast:
    """``(x - mean) * f + mean`` per channel, f as brightness, clipped to the channel's old range."""

    @staticmethod
    def draw(rng, params, shape) -> list[float]:
        return [_draw_factor(rng, *params.contrast_range) for _ in range(shape[0])]

    @staticmethod
    def apply(img, seg, factors, params):
        from monai.transforms import ScaleIntensityFixedMean

        for c, f in enumerate(factors):
            scale = ScaleIntensityFixedMean(factor=f - 1.0, fixed_mean=True, preserve_range=True)
            img[c] = _as_numpy(scale(_tensor(img[c])))
        return img, seg


@register_step("low_resolution", probability="p_lowres")
class SimulateLowResolution:
    """Each channel with p 0.5: zoom U(0.5, 1) for all axes (not axis 0 in dummy 2D), nearest-exact
    down, (bi/tri)linear back up."""

    @staticmethod
    def draw(rng, params, shape) -> list:
        return [float(rng.uniform(*params.lowres_zoom)) if rng.random() < params.p_lowres_channel else None
                for _ in range(shape[0])]

    @staticmethod
    def apply(img, seg, zooms, params):
        from monai.transforms import RandSimulateLowResolution

        in_plane = params.dummy_2d and img.ndim == 4  # axis 0 kept: its slices are the "channels"
        up = "bilinear" if img.ndim == 3 or in_plane else "trilinear"
        for c, zoom in enumerate(zooms):
            if zoom is None:
                continue
            # a one-point zoom range makes MONAI's random transform deterministic: the zoom is ours
            lowres = RandSimulateLowResolution(prob=1.0, downsample_mode="nearest-exact", upsample_mode=up,
                                               zoom_range=(zoom, zoom))
            x = _tensor(img[c]) if in_plane else _tensor(img[c : c + 1])
            out = _as_numpy(lowres(x))
            img[c] = out if in_plane else out[0]
        return img, seg


def _gamma_apply(invert: bool) -> Apply:
    def apply(img, seg, gammas, params):
        from monai.transforms import AdjustContrast

        for c, gamma in enumerate(gammas):
            adjust = AdjustContrast(gamma, invert_image=invert, retain_stats=True)
            img[c] = _as_numpy(adjust(_tensor(img[c])))
        return img, seg

    return apply


def _gamma_draw(rng, params, shape) -> list[float]:
    return [_draw_factor(rng, *params.gamma_range) for _ in range(shape[0])]


@register_step("gamma_inverted", probability="p_gamma_inverted")
class InvertedGamma:
    """Negate, gamma in [0.7, 1.5] (50/50 sub-ranges) on min-max scaled values, restore mean/std, negate."""

    draw = staticmethod(_gamma_draw)
    apply = staticmethod(_gamma_apply(invert=True))


@register_step("gamma", probability="p_gamma")
class Gamma:
    """Gamma in [0.7, 1.5] (50/50 sub-ranges) on min-max scaled values, then the mean/std restored."""

    draw = staticmethod(_gamma_draw)
    apply = staticmethod(_gamma_apply(invert=False))


@register_step("bias_field", probability="p_bias_field")
class BiasField:
    """Multiply each channel by a smooth MR bias field: exp of a Legendre polynomial of degree 3,
    coefficients U(-0.5, 0.5) (MONAI's RandBiasField), applied above the channel's minimum."""

    @staticmethod
    def draw(rng, params, shape) -> list[int]:
        # one seed per channel for MONAI's generator: the coefficients follow from our rng
        return [int(rng.integers(2**31)) for _ in range(shape[0])]

    @staticmethod
    def apply(img, seg, seeds, params):
        from monai.transforms import RandBiasField

        for c, seed in enumerate(seeds):
            bias = RandBiasField(degree=params.bias_field_degree, coeff_range=params.bias_field_coeff, prob=1.0)
            bias.set_random_state(seed=seed)
            # z-scored values are partly negative: a field multiplying them would flip its effect there
            low = img[c].min()
            img[c] = _as_numpy(bias(_tensor(img[c : c + 1] - low)))[0] + low
        return img, seg


@register_step("mirror", spatial=True)
class Mirror:
    """Flip each allowed axis with p 0.5."""

    @staticmethod
    def draw(rng, params, shape) -> list[int] | None:
        axes = [axis for axis in params.mirror_axes if rng.random() < params.p_mirror]
        return axes or None

    @staticmethod
    def apply(img, seg, axes, params):
        # numpy views, no copy (MONAI's Flip copies); the pipeline makes the result contiguous once
        flip = tuple(a + 1 for a in axes)
        return np.flip(img, flip), np.flip(seg, flip)


class AugmentationPipeline:
    """Callable ``(crop, seg, rng, spatial) -> (image (C, *patch) float32, seg (1, *patch) int16)``."""

    def __init__(self, patch_size: tuple[int, ...], params: AugmentationParams) -> None:
        self.patch_size = tuple(int(p) for p in patch_size)
        self.params = params
        self.steps = [get_step(name) for name in params.steps]
        self.crop_size = initial_patch_size(self.patch_size, params)

    def draw_spatial(self, rng: np.random.Generator) -> dict | None:
        """The spatial step's draw, made before the crop (it decides the crop size); None = plain crop."""
        if "spatial" not in self.params.steps:
            return None
        return get_step("spatial").draw(rng, self.params, (0, *self.patch_size))

    def __call__(self, crop: np.ndarray, seg: np.ndarray, rng: np.random.Generator, spatial: dict | None
                 ) -> tuple[np.ndarray, np.ndarray]:
        """``crop`` is ``self.crop_size`` when ``spatial`` is given, else already ``patch_size``."""
        if spatial is not None and "spatial" in self.params.steps:
            img, sg = crop, seg  # the spatial step resamples into new arrays
        else:
            img, sg = np.array(crop, dtype=np.float32), np.array(seg, dtype=np.int16)
        for step in self.steps:
            if step.name == "spatial":
                if spatial is not None:
                    img, sg = step.apply(img, sg, spatial, self.params)
            else:
                img, sg = step(img, sg, rng, self.params)
        img, sg = np.ascontiguousarray(img, dtype=np.float32), np.ascontiguousarray(sg, dtype=np.int16)
        for c in self.params.mask_channels:
            img[c][sg[0] < 0] = 0.0
        sg[sg < 0] = 0
        return img, sg
