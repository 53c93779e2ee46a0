"""Preprocess one case and invert it: the entry points shared by ``plan_and_preprocess`` and ``predict``.

Order per case (nnU-Net's run_case_npy, plus one step of ours): read → reorient to the
closest-RAS voxel order (permutations and flips only, exact inverse; cases of one dataset are
often stored in different orientations, which nnU-Net does not handle) → lift 2D images to 3D
(leading singleton axis, spacing 999 mm) → float32 → transpose to the internal axis order →
crop to nonzero → normalise (before resampling, so the nonzero mask still fits) → resample data
(order 3) and segmentation (one-hot order 1), "separate z" for anisotropic cases → sample
foreground locations → segmentation as int16.

``properties`` (JSON-serialisable) records everything :func:`revert_preprocessing` needs.
"""
from __future__ import annotations

import os
from typing import Any, Mapping, Sequence

import numpy as np

from medmamba.datasets.case_reader import read_case_and_label
from medmamba.datasets.cropping import crop_to_nonzero
from medmamba.datasets.orientation import Reorientation, canonical_reorientation
from medmamba.errors import PlansError
from medmamba.formats.label_layout import foreground_labels
from medmamba.formats.constants import LIFTED_AXIS_SPACING
from medmamba.formats.plans import ConfigurationPlan, Plans, plans_from_any
from medmamba.formats.preprocessed_case import PROPERTIES_FORMAT_VERSION
from medmamba.preprocessing.foreground import sample_annotated_locations, sample_foreground_locations
from medmamba.preprocessing.normalization import normalize_channel
from medmamba.preprocessing.resampling import compute_new_shape, resample_data_or_seg
from medmamba.preprocessing.slab_resampling import resample_bounded
from medmamba.datasets.geometry import ImageGeometry
from medmamba.datasets.image_io import write_image

# Normalisations computed voxel by voxel from fixed statistics (no statistic of the image itself).
_PER_VOXEL_SCHEMES = ("CTNormalization", "NoNormalization", "RGBTo01Normalization")
_NORMALIZE_SLAB_VOXELS = 1 << 22


def internal_target_spacing(config: ConfigurationPlan, spacing_internal: Sequence[float]) -> list[float]:
    """Target spacing (mm, 3 internal axes): a 2d configuration keeps the case's own axis-0 spacing."""
    if config.spatial_dims == 2:
        return [float(spacing_internal[0]), *map(float, config.spacing)]
    return [float(s) for s in config.spacing]


def preprocess_case(
    image_files: Sequence[str | os.PathLike],
    plans: Plans | Mapping[str, Any],
    configuration_name: str,
    label_file: str | os.PathLike | None = None,
) -> tuple[np.ndarray, np.ndarray | None, dict[str, Any]]:
    """Read and preprocess one case for ``configuration_name``.

    Returns:
        data: float32 (C, *spatial) in internal axis order (3 spatial axes; for a ``2d``
            configuration a stack of slices along axis 0).
        seg: int16 (1, *spatial), -1 outside the nonzero mask, or None without ``label_file``.
        properties: JSON-serialisable dict (see :func:`preprocess_arrays`).
    """
    plans = plans_from_any(plans)
    if len(image_files) != plans.num_input_channels:
        raise PlansError(f"case has {len(image_files)} channel file(s) but the plans expect "
                         f"{plans.num_input_channels} ({', '.join(plans.channel_names.values())})",
                         path=image_files[0] if image_files else None)
    declared = None
    if label_file is not None:
        declared = {v for value in plans.labels.values() for v in (value if isinstance(value, list) else [value])}
    data, seg, geometry = read_case_and_label(image_files, label_file, declared)
    props = {"image_files": [str(f) for f in image_files],
             "label_file": None if label_file is None else str(label_file)}
    data, seg_out, properties = preprocess_arrays(data, seg, geometry.spacing, plans, configuration_name,
                                                  direction=geometry.direction, overwrite_data=True)
    properties.update(props)
    properties["geometry"] = geometry.to_dict()
    return data, (seg_out if seg is not None else None), properties


def preprocess_arrays(
    data: np.ndarray,
    seg: np.ndarray | None,
    spacing: Sequence[float],
    plans: Plans | Mapping[str, Any],
    configuration_name: str,
    direction: Sequence[Sequence[float]] | None = None,
    overwrite_data: bool = False,
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Preprocess in-memory arrays (file voxel order). Inputs are not modified, except ``data`` with
    ``overwrite_data`` (normalised in place: a 512×512×600 CT then needs one float32 copy, not two).

    Args:
        data: (C, *spatial) image channels, spatial 2D or 3D.
        seg: (1, *spatial) integer labels or None.
        spacing: mm per spatial axis of ``data``.
        direction: the image's LPS direction matrix (``ImageGeometry.direction``); the arrays are
            reoriented to closest-RAS first. None: the arrays are already in canonical order.
    Returns:
        ``(data float32 (C, X, Y, Z), seg int16 (1, X, Y, Z), properties)`` where ``seg`` is the
        nonzero mask encoding (0 / -1) when no labels were given. ``properties`` keys:
        ``format_version``, ``original_ndim``, ``original_shape``, ``spacing`` (file order),
        ``reorientation`` ({permutation, flips}), ``spacing_canonical`` (reoriented, lifted to 3D),
        ``transpose_forward``, ``spacing_after_transpose``, ``shape_before_cropping``,
        ``bbox_used_for_cropping`` ([[start, stop), ...] internal order), ``shape_after_cropping_and_before_resampling``,
        ``spacing_after_resampling``, ``shape_after_resampling``, ``configuration``, ``class_locations``
        ({label: [[i, j, k], ...]} internal order; only when labels were given), ``annotated_locations``
        ([[i, j, k], ...] of voxels that are not ``ignore``; only for datasets with an ignore label).
    """
    plans = plans_from_any(plans)
    config = plans.configuration(configuration_name)
    n_channels = plans.num_input_channels
    if data.shape[0] != n_channels:
        raise PlansError(f"case has {data.shape[0]} channel(s) but the plans expect {n_channels}")
    original_ndim = data.ndim - 1
    original_shape = list(data.shape[1:])
    if original_ndim not in (2, 3):
        raise PlansError(f"expected a 2D or 3D image, got array shape {tuple(data.shape[1:])}")
    reorientation = canonical_reorientation(direction) if direction is not None else \
        Reorientation(tuple(range(original_ndim)), (False,) * original_ndim)
    given = data
    data = reorientation.apply(data)
    seg = None if seg is None else reorientation.apply(seg)
    spacing3 = reorientation.spacing(spacing)
    data = data.astype(np.float32, copy=False)
    owned = overwrite_data or not np.may_share_memory(data, given)
    if original_ndim == 2:
        data = data[:, None]
        seg = None if seg is None else seg[:, None]
        spacing3 = [LIFTED_AXIS_SPACING, *spacing3]
    tf = list(config.transpose_forward)
    data = data.transpose([0, *[a + 1 for a in tf]])
    if seg is not None:
        seg = seg.transpose([0, *[a + 1 for a in tf]])
    spacing_t = [spacing3[a] for a in tf]
    shape_before = list(data.shape[1:])

    data, seg_c, bbox = crop_to_nonzero(data, seg)
    shape_after_crop = list(data.shape[1:])
    target_spacing = internal_target_spacing(config, spacing_t)
    new_shape = compute_new_shape(shape_after_crop, spacing_t, target_spacing)

    intensity = plans.foreground_intensity_properties_per_channel
    normed = data if owned else np.empty(data.shape, dtype=np.float32)  # ``data`` is a crop (view) of ours
    for c in range(n_channels):
        scheme = config.normalization_schemes[c]
        # per-voxel schemes run a slab at a time (their temporary copy is a slab); z-score needs the whole channel
        step = max(1, _NORMALIZE_SLAB_VOXELS // max(1, int(np.prod(data.shape[2:])))) \
            if scheme in _PER_VOXEL_SCHEMES else data.shape[1]
        for start in range(0, data.shape[1], step):
            rows = slice(start, start + step)
            normed[c, rows] = normalize_channel(data[c, rows], scheme, seg_c[0, rows], config.use_mask_for_norm[c],
                                                intensity.get(str(c)))
    rs = config.resampling
    # Slab-wise (same values): the whole-volume resize would hold float64 copies of the image.
    data_out = resample_bounded(normed, new_shape, spacing_t, target_spacing, is_seg=False,
                                order=rs.data_order, order_z=rs.order_z, force_separate_z=rs.force_separate_z,
                                anisotropy_threshold=rs.anisotropy_threshold)
    del normed
    # Labels keep the whole-volume resize (training; one-hot values of exactly 0.5 depend on its rounding);
    # the nonzero-mask encoding made at inference, which no caller reads, is resampled slab-wise.
    resample_seg = resample_data_or_seg if seg is not None else resample_bounded
    seg_out = resample_seg(seg_c, new_shape, spacing_t, target_spacing, is_seg=True,
                           order=rs.seg_order, order_z=rs.order_z, force_separate_z=rs.force_separate_z,
                           anisotropy_threshold=rs.anisotropy_threshold).astype(np.int16)
    properties: dict[str, Any] = {
        "format_version": PROPERTIES_FORMAT_VERSION,
        "configuration": configuration_name,
        "original_ndim": original_ndim,
        "original_shape": original_shape,
        "spacing": [float(v) for v in spacing],
        "reorientation": reorientation.to_dict(),
        "spacing_canonical": spacing3,
        "transpose_forward": tf,
        "spacing_after_transpose": spacing_t,
        "shape_before_cropping": shape_before,
        "bbox_used_for_cropping": bbox,
        "shape_after_cropping_and_before_resampling": shape_after_crop,
        "spacing_after_resampling": target_spacing,
        "shape_after_resampling": list(data_out.shape[1:]),
    }
    if seg is not None:
        properties["class_locations"] = sample_foreground_locations(seg_out, foreground_labels(plans.labels))
        if plans.ignore_label is not None:
            properties["annotated_locations"] = sample_annotated_locations(seg_out, plans.ignore_label)
    return np.ascontiguousarray(data_out), np.ascontiguousarray(seg_out), properties


def revert_preprocessing(
    probabilities: np.ndarray,
    properties: Mapping[str, Any],
    plans: Plans | Mapping[str, Any],
    configuration_name: str,
    regions: bool = False,
) -> np.ndarray:
    """Map per-class probabilities from the preprocessed grid back onto the original image grid.

    Args:
        probabilities: float (K, *spatial) on the preprocessed grid (``shape_after_resampling``,
            internal axis order), e.g. softmax outputs; a torch tensor is accepted.
        properties: the case's properties from :func:`preprocess_case`.
    Returns:
        float32 (K, *original array shape) in the file's voxel order: resampled back to the
        cropped grid (order ``resampling.probabilities_order``, separate z as in preprocessing),
        un-cropped (outside the crop: background probability 1, others 0; with ``regions``, sigmoid
        region probabilities, every channel 0 there), un-transposed,
        for 2D inputs with the lifted axis removed, and reoriented back to the file's voxel
        order. ``argmax(axis=0)`` gives the label map.
    """
    plans = plans_from_any(plans)
    config = plans.configuration(configuration_name)
    if hasattr(probabilities, "detach"):
        probabilities = probabilities.detach().float().cpu().numpy()
    probs = np.asarray(probabilities, dtype=np.float32)
    expected = list(properties["shape_after_resampling"])
    if list(probs.shape[1:]) != expected:
        raise PlansError(f"probabilities have spatial shape {list(probs.shape[1:])}, properties expect {expected}")
    rs = config.resampling
    shape_crop = list(properties["shape_after_cropping_and_before_resampling"])
    probs = resample_data_or_seg(probs, shape_crop, properties["spacing_after_resampling"],
                                 properties["spacing_after_transpose"], is_seg=False, order=rs.probabilities_order,
                                 order_z=rs.order_z, force_separate_z=rs.force_separate_z,
                                 anisotropy_threshold=rs.anisotropy_threshold)
    full = np.zeros((probs.shape[0], *properties["shape_before_cropping"]), dtype=np.float32)
    if not regions:  # region outputs have no background channel: outside the crop no region fires
        full[0] = 1.0
    sl = tuple(slice(lo, hi) for lo, hi in properties["bbox_used_for_cropping"])
    full[(slice(None), *sl)] = probs
    tf = list(properties["transpose_forward"])
    tb = list(np.argsort(tf))
    full = full.transpose([0, *[a + 1 for a in tb]])
    if properties["original_ndim"] == 2:
        full = full[:, 0]
    if "reorientation" in properties:
        full = Reorientation.from_dict(properties["reorientation"]).invert(full)
    return np.ascontiguousarray(full)


def export_segmentation(labels: np.ndarray, properties: Mapping[str, Any], output_path: str | os.PathLike) -> None:
    """Write a label map (*original array shape, ints) with the input image's exact geometry, atomically.

    The on-disk dtype is uint8 when every label fits, else int16.
    """

    geometry = ImageGeometry.from_dict(properties["geometry"])
    labels = np.asarray(labels)
    if tuple(labels.shape) != tuple(geometry.shape):
        raise PlansError(f"label map shape {tuple(labels.shape)} differs from the input image's {geometry.shape}",
                         path=output_path)
    dtype = np.uint8 if labels.size == 0 or (labels.min() >= 0 and labels.max() <= 255) else np.int16
    write_image(output_path, labels.astype(dtype), geometry, dtype=dtype)
