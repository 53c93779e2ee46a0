"""A small, deterministic, realistic-looking synthetic 3D dataset in nnU-Net raw format.

Each case is an abdomen-like phantom defined in LPS world millimetres and sampled on a per-case
voxel grid, so the anatomy is consistent in the world while the files differ the way real data
does: spacing (isotropic and anisotropic), size, field-of-view crop, storage orientation (LPS,
RAS or an oblique direction matrix) and on-disk dtype (int16, float32, uint16, and int16 with
NIfTI scl_slope/scl_inter). Structures (labels): ``liver`` (large deformed ellipsoid with a
texture), ``kidney`` (small ellipsoid with a darker medulla), ``vessel`` (thin curved tube) and
``lesion`` (small sphere inside the liver). Images carry smooth texture, a multiplicative bias
field, Gaussian noise, and partial-volume edges about one voxel wide.

The same seed and arguments give byte-identical files (numpy's PCG64 generator seeded per case,
and the NIfTI writer's gzip output is deterministic).

``partial=True`` writes the partially annotated variant ``DatasetXXX_DemoPartial``: the same cases,
but in every training label map a slab of ``PARTIAL_SLAB_FRACTION`` of the slices (last voxel axis,
at a random position per case) is set to the ``ignore`` label (``PARTIAL_IGNORE_VALUE``, declared in
dataset.json as nnU-Net does); the held-out labels (labelsTs) stay fully annotated.
"""
from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from medmamba.atomic import atomic_write_json
from medmamba.datasets.geometry import ImageGeometry
from medmamba.datasets.image_io import write_image
from medmamba.datasets.raw_dataset import dataset_folder_name, parse_dataset_folder_name
from medmamba.errors import DatasetError
from medmamba.errors import MedmambaError
from medmamba.formats.json_io import read_json

logger = logging.getLogger("medmamba.datasets.demo")

DEMO_NAME = "Demo"
DEMO_LABELS = {"background": 0, "liver": 1, "kidney": 2, "vessel": 3, "lesion": 4}
DEMO_CHANNELS = {"0": "T1", "1": "T2"}
# ``--regions``: a brain-tumour-like lesion with BraTS's nested structure, labelled as MSD Task01_BrainTumour
# (1 edema, 2 non-enhancing tumour, 3 enhancing tumour) and trained on BraTS's regions in nnU-Net's
# dataset.json terms (list values + regions_class_order, encompassing regions first).
DEMO_REGIONS_NAME = "DemoRegions"
DEMO_REGION_LABELS = {"background": 0, "whole_tumor": [1, 2, 3], "tumor_core": [2, 3], "enhancing_tumor": [3]}
DEMO_REGIONS_CLASS_ORDER = [1, 2, 3]
PARTIAL_NAME = "DemoPartial"
PARTIAL_IGNORE_VALUE = 5  # nnU-Net: the ignore label is the highest value, max(labels) + 1
PARTIAL_SLAB_FRACTION = 0.5  # half of every training label map unannotated
# Bumped whenever the generated content changes, so a cached demo folder is regenerated.
DEMO_FORMAT_VERSION = 1

# Voxel spacings (mm) cycled through the cases; the last two are anisotropic (thick slices).
# ~1.5-2 mm keeps ~48-64 voxels per axis over a ~100 mm field of view.
_SPACINGS = ((1.8, 1.8, 1.8), (1.5, 1.5, 1.5), (2.0, 2.0, 2.0), (1.6, 1.6, 3.0), (1.8, 1.8, 2.5))
# Oblique storage: 12 degrees about z then 8 degrees about x (arbitrary, clearly non-axis-aligned).
_OBLIQUE_DEG = (12.0, 8.0)
_ORIENTATIONS = ("LPS", "RAS", "oblique")
# On-disk storage variants; "int16_scaled" stores (value + 100) / 0.5 with scl_slope 0.5, scl_inter -100.
_STORAGE = ("int16", "float32", "uint16", "int16_scaled")
# Mean intensities per tissue (arbitrary units x 1000 on disk), per channel: T1-like, T2-like.
_TISSUE_MEANS = {
    "air": (0.02, 0.02),
    "body": (0.35, 0.45),
    "liver": (0.55, 0.30),
    "kidney": (0.72, 0.80),
    "medulla": (0.58, 0.90),
    "vessel": (0.95, 0.55),
    "lesion": (0.25, 0.85),
    "edema": (0.55, 0.75),
    "enhancing": (0.95, 0.50),
    "necrosis": (0.15, 0.90),
}
_NOISE_SIGMA = 0.025  # Gaussian noise: liver SNR ~20 (0.55 / 0.025), in the range of clinical abdominal MRI


def _rotation(deg_z: float, deg_x: float) -> np.ndarray:
    z, x = np.deg2rad(deg_z), np.deg2rad(deg_x)
    rz = np.array([[np.cos(z), -np.sin(z), 0], [np.sin(z), np.cos(z), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(x), -np.sin(x)], [0, np.sin(x), np.cos(x)]])
    return rz @ rx


def _direction(orientation: str) -> np.ndarray:
    if orientation == "LPS":
        return np.eye(3)
    if orientation == "RAS":
        return np.diag([-1.0, -1.0, 1.0])
    return _rotation(*_OBLIQUE_DEG)


def _case_geometry(index: int, rng: np.random.Generator, size: int) -> ImageGeometry:
    spacing = np.asarray(_SPACINGS[index % len(_SPACINGS)])
    fov_mm = size * 1.75 * rng.uniform(0.88, 1.0, size=3)  # field of view varies per case (crop)
    shape = np.maximum(np.rint(fov_mm / spacing).astype(int), 8)
    direction = _direction(_ORIENTATIONS[index % len(_ORIENTATIONS)])
    centre = rng.uniform(-8.0, 8.0, size=3)  # field-of-view centre relative to the body (mm)
    origin = centre - direction @ (spacing * (shape - 1) / 2.0)
    storage = _STORAGE[index % len(_STORAGE)]
    header: dict[str, Any] = {"format": "nifti", "qform_code": 1, "sform_code": 1}
    if storage == "int16_scaled":
        header.update(scl_slope=0.5, scl_inter=-100.0)
    return ImageGeometry(
        spacing=tuple(spacing),
        origin=tuple(origin),
        direction=tuple(map(tuple, direction)),
        shape=tuple(shape),
        dtype="int16" if storage == "int16_scaled" else storage,
        header=header,
    )


def _smooth_field(p: np.ndarray, rng: np.random.Generator, wavelength_mm: tuple[float, float], n: int = 4) -> np.ndarray:
    """Sum of ``n`` random plane waves at world points ``p`` (3, ...); values in about [-1, 1]."""
    out = np.zeros(p.shape[1:], dtype=np.float32)
    for _ in range(n):
        k = rng.normal(size=3)
        k *= 2 * np.pi / (np.linalg.norm(k) * rng.uniform(*wavelength_mm))
        out += np.sin(np.tensordot(k.astype(np.float32), p, axes=1) + np.float32(rng.uniform(0, 2 * np.pi)))
    return out / np.float32(np.sqrt(n / 2.0))


def _occupancy(signed_distance_mm: np.ndarray, edge_mm: float) -> np.ndarray:
    """Partial-volume fraction from a signed distance (negative inside), a linear ramp ``edge_mm`` wide."""
    return np.clip(0.5 - signed_distance_mm / edge_mm, 0.0, 1.0).astype(np.float32)


def _ellipsoid_sd(p: np.ndarray, centre: np.ndarray, radii: np.ndarray) -> np.ndarray:
    """Approximate signed distance (mm) to an axis-aligned ellipsoid."""
    q = (p - centre.reshape(3, 1, 1, 1).astype(np.float32)) / radii.reshape(3, 1, 1, 1).astype(np.float32)
    return (np.sqrt((q * q).sum(0)) - 1.0) * np.float32(np.exp(np.log(radii).mean()))


def _phantom(p: np.ndarray, rng: np.random.Generator, edge_mm: float, n_channels: int) -> tuple[list[np.ndarray], np.ndarray]:
    """Images (``n_channels`` arrays) and labels (uint8) at world points ``p`` (3, *shape), LPS mm."""
    # smooth random deformation (~3 mm, ~60-100 mm wavelength) so no two cases have the same shapes
    p = p + np.stack([3.0 * _smooth_field(p, rng, (60.0, 100.0), 3) for _ in range(3)])
    jitter = lambda scale: rng.uniform(1 - scale, 1 + scale, size=3)  # noqa: E731
    body = _occupancy(_ellipsoid_sd(p, np.zeros(3), np.array([48.0, 36.0, 70.0]) * jitter(0.08)), edge_mm)
    liver_c = np.array([-14.0, -4.0, 4.0]) + rng.uniform(-4, 4, 3)  # patient's right (-x in LPS), anterior
    liver_r = np.array([28.0, 22.0, 25.0]) * jitter(0.15)
    liver = _occupancy(_ellipsoid_sd(p, liver_c, liver_r), edge_mm)
    kidney_c = np.array([24.0, 14.0, -4.0]) + rng.uniform(-3, 3, 3)  # patient's left, posterior
    kidney_r = np.array([10.0, 8.0, 15.0]) * jitter(0.12)
    kidney = _occupancy(_ellipsoid_sd(p, kidney_c, kidney_r), edge_mm)
    medulla = _occupancy(_ellipsoid_sd(p, kidney_c, kidney_r * 0.5), edge_mm)
    # vessel: tube of radius ~3 mm around a gently curving superior-inferior centre line
    phase, amp = rng.uniform(0, 2 * np.pi), rng.uniform(3.0, 6.0)
    cx = 4.0 + amp * np.sin(p[2] / 18.0 + phase)
    cy = 6.0 + 0.6 * amp * np.cos(p[2] / 18.0 + phase)
    radius = rng.uniform(2.6, 3.4)
    tube_sd = np.sqrt((p[0] - cx) ** 2 + (p[1] - cy) ** 2) - radius
    tube_sd = np.maximum(tube_sd, np.abs(p[2]) - 40.0)  # cap the tube ends
    vessel = _occupancy(tube_sd, edge_mm)
    # lesion: small sphere well inside the liver
    lesion_c = liver_c + rng.uniform(-0.35, 0.35, 3) * liver_r
    lesion = _occupancy(_ellipsoid_sd(p, lesion_c, np.full(3, rng.uniform(5.0, 7.5))), edge_mm)
    lesion *= liver

    labels = np.zeros(p.shape[1:], dtype=np.uint8)
    for value, occ in ((1, liver), (2, kidney), (3, vessel), (4, lesion)):  # later structures win
        labels[occ > 0.5] = value

    bias = np.exp(0.18 * _smooth_field(p, rng, (150.0, 250.0), 2))  # multiplicative, ~+-20%
    images = []
    for c in range(n_channels):
        def tissue(name: str, texture: float, wavelength: tuple[float, float] = (8.0, 20.0)) -> np.ndarray:
            mean = _TISSUE_MEANS[name][c]
            return mean * (1.0 + texture * _smooth_field(p, rng, wavelength))

        img = np.full(p.shape[1:], _TISSUE_MEANS["air"][c], dtype=np.float32)
        for occ, value in (
            (body, tissue("body", 0.12)),
            (liver, tissue("liver", 0.06)),
            (kidney, tissue("kidney", 0.05)),
            (kidney * medulla, tissue("medulla", 0.05)),
            (vessel, tissue("vessel", 0.02)),
            (lesion, tissue("lesion", 0.10, (4.0, 8.0))),
        ):
            img = img * (1.0 - occ) + occ * value
        img = img * bias + rng.normal(0.0, _NOISE_SIGMA, size=img.shape).astype(np.float32)
        images.append((img * 1000.0).astype(np.float32))
    return images, labels


def _tumour_phantom(p: np.ndarray, rng: np.random.Generator, edge_mm: float, n_channels: int,
                    fov_mm: float) -> tuple[list[np.ndarray], np.ndarray]:
    """Like :func:`_phantom` with one tumour in the body: edema (1) around an enhancing rim (3) around a
    non-enhancing/necrotic centre (2), so whole tumour ⊃ tumour core ⊃ enhancing tumour. Sizes follow
    the nominal field of view ``fov_mm`` so that small test volumes still hold every part."""
    p = p + np.stack([3.0 * _smooth_field(p, rng, (60.0, 100.0), 3) for _ in range(3)])
    jitter = lambda scale: rng.uniform(1 - scale, 1 + scale, size=3)  # noqa: E731
    body = _occupancy(_ellipsoid_sd(p, np.zeros(3), np.array([48.0, 36.0, 70.0]) * jitter(0.08)), edge_mm)
    centre = rng.uniform(-0.08, 0.08, 3) * fov_mm
    outer = np.array([0.32, 0.28, 0.30]) * fov_mm * jitter(0.12)
    edema = _occupancy(_ellipsoid_sd(p, centre, outer), edge_mm)
    core_centre = centre + rng.uniform(-0.2, 0.2, 3) * outer
    core_r = outer * rng.uniform(0.6, 0.7)
    core = _occupancy(_ellipsoid_sd(p, core_centre, core_r), edge_mm) * edema
    necrosis = _occupancy(_ellipsoid_sd(p, core_centre, core_r * rng.uniform(0.5, 0.6)), edge_mm) * core
    labels = np.zeros(p.shape[1:], dtype=np.uint8)
    for value, occ in ((1, edema), (3, core), (2, necrosis)):  # later structures win: 3 is the rim around 2
        labels[occ > 0.5] = value
    bias = np.exp(0.18 * _smooth_field(p, rng, (150.0, 250.0), 2))
    images = []
    for c in range(n_channels):
        img = np.full(p.shape[1:], _TISSUE_MEANS["air"][c], dtype=np.float32)
        for occ, name, texture in ((body, "body", 0.12), (edema, "edema", 0.06), (core, "enhancing", 0.05),
                                   (necrosis, "necrosis", 0.10)):
            value = _TISSUE_MEANS[name][c] * (1.0 + texture * _smooth_field(p, rng, (8.0, 20.0)))
            img = img * (1.0 - occ) + occ * value
        img = img * bias + rng.normal(0.0, _NOISE_SIGMA, size=img.shape).astype(np.float32)
        images.append((img * 1000.0).astype(np.float32))
    return images, labels


def generate_case(index: int, seed: int, n_channels: int = 1, size: int = 56, regions: bool = False
                  ) -> tuple[list[np.ndarray], np.ndarray, ImageGeometry]:
    """One demo case: ``n_channels`` float32 images ``(i, j, k)``, uint8 labels, and its geometry.

    Deterministic in ``(index, seed, n_channels, size, regions)``; ``size`` is the nominal voxels per axis
    at 1.75 mm (56 gives ~48-64 voxels; tests use ~20). ``regions``: the nested tumour of
    :func:`_tumour_phantom` (labels 0-3) instead of the abdomen.
    """
    rng = np.random.default_rng([int(seed), int(index)])
    geometry = _case_geometry(index, rng, size)
    idx = np.stack(np.meshgrid(*[np.arange(s, dtype=np.float32) for s in geometry.shape], indexing="ij"))
    scaled = idx * np.asarray(geometry.spacing, dtype=np.float32).reshape(3, 1, 1, 1)
    world = np.tensordot(geometry.direction_matrix.astype(np.float32), scaled, axes=1)
    world += np.asarray(geometry.origin, dtype=np.float32).reshape(3, 1, 1, 1)
    if regions:
        images, labels = _tumour_phantom(world, rng, float(np.mean(geometry.spacing)), n_channels, size * 1.75)
    else:
        images, labels = _phantom(world, rng, edge_mm=float(np.mean(geometry.spacing)), n_channels=n_channels)
    if geometry.dtype == "uint16":
        images = [np.clip(im, 0, None) for im in images]
    return images, labels, geometry


def ignore_slab(labels: np.ndarray, index: int, seed: int) -> np.ndarray:
    """``labels`` with a slab of ``PARTIAL_SLAB_FRACTION`` of its slices (last axis) set to the
    ignore value; the slab's position is drawn from its own generator, so the images stay the same."""
    rng = np.random.default_rng([int(seed), int(index), 1])
    n = labels.shape[-1]
    width = max(1, int(round(PARTIAL_SLAB_FRACTION * n)))
    start = int(rng.integers(0, n - width + 1))
    out = labels.copy()
    out[..., start:start + width] = PARTIAL_IGNORE_VALUE
    return out


def _demo_record(n_cases: int, n_test: int, seed: int, n_channels: int, size: int,
                 regions: bool = False, partial: bool = False) -> dict[str, int]:
    record = {"version": DEMO_FORMAT_VERSION, "n_cases": n_cases, "n_test": n_test, "seed": seed,
              "n_channels": n_channels, "size": size}
    if regions:
        record["regions"] = 1
    if partial:
        record["partial"] = 1
    return record


def make_demo_dataset(
    raw_root: str | os.PathLike,
    dataset_id: int = 999,
    n_cases: int = 12,
    seed: int = 0,
    n_channels: int = 1,
    n_test: int = 4,
    size: int = 56,
    overwrite: bool = False,
    progress: bool = True,
    regions: bool = False,
    partial: bool = False,
) -> Path:
    """Write ``Dataset{id}_Demo`` (``n_cases`` training + ``n_test`` held-out cases) into ``raw_root``;
    with ``partial`` the partially annotated ``Dataset{id}_DemoPartial`` (see the module docstring).

    ``regions``: ``Dataset{id}_DemoRegions`` instead, a nested tumour (labels 1 edema, 2 non-enhancing,
    3 enhancing) declared as BraTS's regions whole tumour [1, 2, 3], tumour core [2, 3] and enhancing
    tumour [3] with ``regions_class_order`` [1, 2, 3] (nnU-Net's region-based training).

    If the folder already holds a demo generated with the same arguments it is reused as is;
    a different dataset there raises DatasetError unless ``overwrite``. The folder appears
    atomically (built beside it, then renamed). Returns the dataset folder.
    """
    from tqdm.auto import tqdm

    if n_cases < 1 or n_test < 0 or n_channels not in (1, 2) or size < 8:
        raise DatasetError(
            f"invalid demo settings: cases={n_cases} (>=1), test cases={n_test} (>=0), "
            f"channels={n_channels} (1 or 2), size={size} (>=8)"
        )
    if regions and partial:
        raise DatasetError("the demo is either the region variant or the partially annotated one, not both")
    final_name = dataset_folder_name(
        dataset_id, DEMO_REGIONS_NAME if regions else PARTIAL_NAME if partial else DEMO_NAME)  # checks the id first
    raw_root = Path(raw_root)
    raw_root.mkdir(parents=True, exist_ok=True)
    final = raw_root / final_name
    record = _demo_record(n_cases, n_test, seed, n_channels, size, regions, partial)
    clash = [p.name for p in raw_root.iterdir() if p.is_dir() and p != final
             and (parse_dataset_folder_name(p.name) or (None,))[0] == dataset_id]
    if clash:
        raise DatasetError(f"dataset id {dataset_id} is already used by {clash[0]}; pick another id", path=raw_root)
    if final.exists():
        existing = _existing_record(final)
        if existing == record:
            logger.info("demo dataset already present with the same settings: %s", final)
            return final
        if not overwrite:
            raise DatasetError("folder exists with different content; pass overwrite=True (--overwrite) to replace it", path=final)

    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=raw_root))
    try:
        names = [f"demo_{i:03d}" for i in range(n_cases + n_test)]
        for i in tqdm(range(n_cases + n_test), desc="demo cases", unit="case", disable=not progress):
            split = "Tr" if i < n_cases else "Ts"
            images, labels, geometry = generate_case(i, seed, n_channels, size, regions)
            if partial and split == "Tr":
                labels = ignore_slab(labels, i, seed)
            for c, img in enumerate(images):
                write_image(tmp / f"images{split}" / f"{names[i]}_{c:04d}.nii.gz", img, geometry)
            write_image(tmp / f"labels{split}" / f"{names[i]}.nii.gz", labels, geometry, dtype=np.uint8)
        dataset_json: dict[str, Any] = {
            "channel_names": {k: v for k, v in DEMO_CHANNELS.items() if int(k) < n_channels},
            "labels": (DEMO_REGION_LABELS if regions else
                       {**DEMO_LABELS, "ignore": PARTIAL_IGNORE_VALUE} if partial else DEMO_LABELS),
            **({"regions_class_order": DEMO_REGIONS_CLASS_ORDER} if regions else {}),
            "numTraining": n_cases,
            "file_ending": ".nii.gz",
            "name": f"medmamba synthetic demo (seed {seed})",
            "description": ("Synthetic tumour phantom: edema (1) around an enhancing rim (3) around a "
                            "non-enhancing centre (2), trained as BraTS's nested regions. " if regions else
                            "Synthetic abdomen-like phantom: liver, kidney, vessel, lesion. ")
            + "Generated by medmamba.datasets.demo.make_demo_dataset; cases differ in spacing, size, "
              "orientation and on-disk dtype on purpose."
            + (" Training labels are partial: half of the slices of each is 'ignore'." if partial else ""),
            "licence": "CC0",
            "medmamba_demo": record,
        }
        atomic_write_json(tmp / "dataset.json", dataset_json)
        if final.exists():
            trash = Path(tempfile.mkdtemp(prefix=f".{final.name}.old.", dir=raw_root))
            os.replace(final, trash / final.name)
            os.replace(tmp, final)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    logger.info("wrote demo dataset %s (%d training + %d test cases)", final, n_cases, n_test)
    return final


def _existing_record(folder: Path) -> dict[str, Any] | None:
    try:
        return read_json(folder / "dataset.json", dict, "dataset.json").get("medmamba_demo")
    except MedmambaError:
        return None
