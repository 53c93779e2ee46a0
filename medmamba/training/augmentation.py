"""Training augmentation at nnU-Net v2's probabilities, built on MONAI transforms.

One :class:`AugmentationPipeline` turns a crop ``(C, *crop)`` float32 + seg ``(1, *crop)`` int16 into
a patch ``(C, *patch)`` / ``(1, *patch)`` using only the ``numpy.random.Generator`` it is given, so
a batch is a pure function of its seed (deterministic for any number of loader workers).
Order and probabilities follow reference/nnunet.md §5.5 (``get_training_transforms``):
spatial (rotation p 0.2, scaling p 0.2, elastic off unless asked), noise p 0.1, blur p 0.2,
brightness p 0.15, contrast p 0.15, low resolution p 0.25, inverted gamma p 0.1, gamma p 0.3,
mirroring p 0.5 per axis, mask by ``use_mask_for_norm``, seg -1 -> 0.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np
import torch
import torch.nn.functional as F

from medmamba.training.run_setup import AUGMENTATION_LEVELS


@dataclass(frozen=True)
class AugmentationParams:
    """Probabilities and ranges; every default is nnU-Net v2's (reference/nnunet.md §5.5)."""

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
    mask_channels: tuple[int, ...] = field(default_factory=tuple)  # channels with use_mask_for_norm


# Intensity transforms switched off by ``level="light"``.
INTENSITY_PROBABILITIES = ("p_noise", "p_blur", "p_brightness", "p_contrast", "p_lowres", "p_gamma_inverted",
                           "p_gamma")


def configure_augmentation(patch_size: tuple[int, ...], mask_channels: tuple[int, ...] = (),
                           elastic: bool = False, level: str = "default") -> AugmentationParams:
    """nnU-Net's ``configure_rotation_dummyDA_mirroring_and_inital_patch_size`` rules (§5.5).

    3D: +-30 deg per axis, "dummy 2D" (in-plane +-180 deg only) when max(patch)/patch[0] > 3.
    2D: +-180 deg, or +-15 deg when the patch aspect ratio max/min > 1.5.
    ``level``: "default" (all of nnU-Net's transforms), "light" (mirroring, rotation and scaling;
    no intensity transforms), "none" (no transform at all: plain random crops).
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
    elif level == "none":
        params = replace(params, **off, p_rotation=0.0, p_scale=0.0, p_elastic=0.0, p_mirror=0.0)
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
    90 deg) about each axis, divided by 0.85 (reference/nnunet.md §5.5; 128^3 -> ~205^3).
    """
    if params.p_rotation <= 0 and params.p_scale <= 0 and params.p_elastic <= 0:
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
    """nnU-Net's 50/50 sub-range draw: below 1 or above 1 with equal chance (§5.5 items 6, 7, 9)."""
    if lo < 1 < hi and rng.random() < 0.5:
        return float(rng.uniform(lo, 1.0))
    return float(rng.uniform(max(lo, 1.0) if lo < 1 < hi else lo, hi))


class AugmentationPipeline:
    """Callable ``(crop, seg, rng) -> (image (C, *patch) float32, seg (1, *patch) int16)``."""

    def __init__(self, patch_size: tuple[int, ...], params: AugmentationParams) -> None:
        self.patch_size = tuple(int(p) for p in patch_size)
        self.params = params
        self.crop_size = initial_patch_size(self.patch_size, params)

    # -- spatial -----------------------------------------------------------------------------
    def draw_spatial(self, rng: np.random.Generator) -> dict | None:
        """Rotation (radians per axis) / scale / elastic draw; None = plain centre crop."""
        p, ndim = self.params, len(self.patch_size)
        rotate = rng.random() < p.p_rotation
        scale = rng.random() < p.p_scale
        elastic = rng.random() < p.p_elastic
        if not (rotate or scale or elastic):
            return None
        angles = [float(np.radians(rng.uniform(lo, hi))) if rotate else 0.0 for lo, hi in p.rotation_deg]
        if ndim == 3 and p.dummy_2d:
            angles = [angles[0], 0.0, 0.0]  # in-plane: about axis 0 only
        factor = float(rng.uniform(*p.scale_range)) if scale else 1.0  # same for all axes (nnU-Net)
        scales = [factor] * ndim
        if p.dummy_2d:
            scales[0] = 1.0
        out = {"angles": angles[0] if ndim == 2 else angles, "scales": scales}
        if elastic:
            out["elastic"] = (float(rng.uniform(*p.elastic_sigma)), float(rng.uniform(*p.elastic_magnitude)),
                              int(rng.integers(2**31)))
        return out

    def apply_spatial(self, image: np.ndarray, seg: np.ndarray, spatial: dict) -> tuple[np.ndarray, np.ndarray]:
        from monai.transforms import Affine

        common = dict(rotate_params=spatial["angles"], scale_params=spatial["scales"],
                      spatial_size=self.patch_size, padding_mode="zeros", image_only=True)
        img = Affine(mode="bilinear", **common)(torch.from_numpy(np.ascontiguousarray(image)))
        # seg: shift so outside-image (padding 0) becomes -1 after shifting back; nearest keeps labels
        shifted = torch.from_numpy(np.ascontiguousarray(seg, dtype=np.float32) + 1.0)
        sg = Affine(mode="nearest", **common)(shifted)
        img, sg = _as_numpy(img), np.rint(_as_numpy(sg)).astype(np.int16) - 1
        if "elastic" in spatial:
            img, sg = self._elastic(img, sg, *spatial["elastic"])
        return img.astype(np.float32, copy=False), sg

    def _elastic(self, img: np.ndarray, seg: np.ndarray, sigma: float, magnitude: float, seed: int):
        """batchgenerators' elastic deformation: displacement = GaussianSmooth(U(-1, 1) field, sigma)
        * magnitude (voxels) per axis, applied with grid_sample (image linear, seg nearest)."""
        from monai.transforms import GaussianSmooth

        shape = img.shape[1:]
        ndim = len(shape)
        noise = np.random.default_rng(seed).uniform(-1, 1, (ndim, *shape)).astype(np.float32)
        field = _as_numpy(GaussianSmooth(sigma=sigma)(torch.from_numpy(noise))) * magnitude
        coords = np.stack(np.meshgrid(*[np.arange(n, dtype=np.float32) for n in shape], indexing="ij"))
        pos = coords + field
        # grid_sample wants normalised (x, y[, z]) = reversed axis order, align_corners=True scale
        norm = [2 * pos[d] / max(shape[d] - 1, 1) - 1 for d in range(ndim)]
        grid = torch.from_numpy(np.stack(norm[::-1], -1)[None].astype(np.float32))
        out_img = F.grid_sample(torch.from_numpy(np.ascontiguousarray(img))[None], grid, mode="bilinear",
                                padding_mode="zeros", align_corners=True)[0]
        shifted = torch.from_numpy(seg.astype(np.float32) + 1.0)[None]  # outside -> 0 -> -1 after shift
        out_seg = F.grid_sample(shifted, grid, mode="nearest", padding_mode="zeros", align_corners=True)[0]
        return out_img.numpy(), np.rint(out_seg.numpy()).astype(np.int16) - 1

    # -- intensity ---------------------------------------------------------------------------
    def apply_intensity(self, img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        p, ndim = self.params, img.ndim - 1
        if rng.random() < p.p_noise:
            sigma = rng.uniform(*p.noise_sigma)  # same sigma for all channels
            img = img + rng.normal(0.0, sigma, img.shape).astype(np.float32)
        if rng.random() < p.p_blur:
            from monai.transforms import GaussianSmooth

            for c in range(img.shape[0]):
                if rng.random() < p.p_blur_channel:
                    sig = [float(rng.uniform(*p.blur_sigma)) for _ in range(ndim)]
                    img[c] = _as_numpy(GaussianSmooth(sigma=sig)(torch.from_numpy(img[c : c + 1])))[0]
        if rng.random() < p.p_brightness:
            for c in range(img.shape[0]):
                img[c] *= _draw_factor(rng, *p.brightness_range)
        if rng.random() < p.p_contrast:
            for c in range(img.shape[0]):
                f = _draw_factor(rng, *p.contrast_range)
                mean, lo, hi = img[c].mean(), img[c].min(), img[c].max()
                img[c] = np.clip((img[c] - mean) * f + mean, lo, hi)
        if rng.random() < p.p_lowres:
            img = self._low_resolution(img, rng)
        if rng.random() < p.p_gamma_inverted:
            img = self._gamma(img, rng, invert=True)
        if rng.random() < p.p_gamma:
            img = self._gamma(img, rng, invert=False)
        return img

    def _low_resolution(self, img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        p, shape = self.params, img.shape[1:]
        for c in range(img.shape[0]):
            if rng.random() >= p.p_lowres_channel:
                continue
            zoom = rng.uniform(*p.lowres_zoom)
            small = [max(1, int(round(s * zoom))) for s in shape]
            if p.dummy_2d:
                small[0] = shape[0]
            x = torch.from_numpy(np.ascontiguousarray(img[c]))[None, None]
            down = F.interpolate(x, size=small, mode="nearest-exact")
            up = F.interpolate(down, size=shape, mode="bilinear" if len(shape) == 2 else "trilinear",
                               align_corners=False)
            img[c] = up[0, 0].numpy()
        return img

    def _gamma(self, img: np.ndarray, rng: np.random.Generator, invert: bool) -> np.ndarray:
        for c in range(img.shape[0]):
            x = -img[c] if invert else img[c]
            mean, std = x.mean(), x.std()
            lo = x.min()
            span = x.max() - lo
            gamma = _draw_factor(rng, *self.params.gamma_range)
            x = np.power((x - lo) / (span + 1e-7), gamma) * (span + 1e-7) + lo  # 1e-7: BG2 epsilon
            x = (x - x.mean()) / (x.std() + 1e-8) * std + mean  # restore statistics (nnU-Net retain_stats)
            img[c] = -x if invert else x
        return img

    # -- whole pipeline ----------------------------------------------------------------------
    def __call__(self, crop: np.ndarray, seg: np.ndarray, rng: np.random.Generator, spatial: dict | None
                 ) -> tuple[np.ndarray, np.ndarray]:
        """``crop`` is ``self.crop_size`` when ``spatial`` is given, else already ``patch_size``."""
        if spatial is not None:
            img, sg = self.apply_spatial(crop, seg, spatial)
        else:
            img, sg = np.array(crop, dtype=np.float32), np.array(seg, dtype=np.int16)
        img = self.apply_intensity(img, rng)
        for axis in self.params.mirror_axes:
            if rng.random() < self.params.p_mirror:
                img, sg = np.flip(img, axis + 1), np.flip(sg, axis + 1)
        img, sg = np.ascontiguousarray(img, dtype=np.float32), np.ascontiguousarray(sg, dtype=np.int16)
        for c in self.params.mask_channels:
            img[c][sg[0] < 0] = 0.0
        sg[sg < 0] = 0
        return img, sg


def _as_numpy(x) -> np.ndarray:
    if hasattr(x, "as_tensor"):
        x = x.as_tensor()
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)
