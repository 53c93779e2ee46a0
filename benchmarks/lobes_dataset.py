"""Build a brain-lobe MRI dataset (nnU-Net raw format) from the templates shipped in PyPI's ``deepmriprep``.

Source (offline, from the package registry): ``pip download --no-deps --no-binary :all: deepmriprep==0.3.0``
(sdist, 17.8 MB, MIT licence). Its ``deepmriprep/data/templates/`` holds a real brain-extracted T1
template (``Template_05mm_bet.nii.gz``, 0.5 mm, CAT12's template built from real scans) and atlas
label maps registered to it, among them LPBA40 (Shattuck et al., NeuroImage 39:1064, 2008: 56
structures manually delineated on 40 real brains; ``lpba40.nii.gz``, 1 mm).

What this script makes (``Dataset501_BrainLobes``):

* labels: LPBA40's gyri merged into the four lobes per hemisphere (8 classes, by LPBA40's ROI ids:
  frontal 21-34, parietal 41-50, occipital 61-68, temporal 81-92; odd ids left, even right); the
  insula, cingulate, subcortical structures, cerebellum and brainstem are background;
* images: the T1 template on a 1.5 mm grid (deepmriprep's ``Template_4_GS`` grid, 113 x 137 x 113);
* cases: ``--train`` + ``--test`` cases, each the template and its labels moved by one random
  smooth deformation (affine: rotation up to 8 degrees per axis, scaling 0.9-1.1 per axis, shift up
  to 4 mm; plus a B-spline-like displacement field of up to ~4 mm) with a random bias field, gamma
  and noise. Seeds: train cases 0..n-1, test cases 1000.. (disjoint).

So the anatomy and its labels are real (one template brain), the between-case variation is
synthetic. A model that learns here learns real lobe boundaries on real T1 contrast, but the test
cases are not other people's brains: this checks learning under a time budget, not generalisation
across subjects.

    python benchmarks/lobes_dataset.py --deepmriprep deepmriprep-0.3.0 --raw RAW
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

DATASET = "Dataset501_BrainLobes"
# LPBA40 ROI id ranges per lobe (lpba40.csv of deepmriprep 0.3.0); odd = left, even = right.
LOBES = {"frontal": range(21, 35), "parietal": range(41, 51), "occipital": range(61, 69), "temporal": range(81, 93)}
LABELS = {"background": 0}
for i, lobe in enumerate(LOBES):
    LABELS[f"{lobe}_left"] = 2 * i + 1
    LABELS[f"{lobe}_right"] = 2 * i + 2
SOURCE = {
    "dataset": f"{DATASET}: lobes of the LPBA40 atlas on deepmriprep's T1 template, randomly deformed per case",
    "source": "PyPI deepmriprep 0.3.0 sdist (pip download --no-deps --no-binary :all: deepmriprep==0.3.0), "
              "deepmriprep/data/templates/{Template_05mm_bet.nii.gz, Template_4_GS.nii.gz, lpba40.nii.gz, lpba40.csv}",
    "licence": "deepmriprep package: MIT (its LICENSE and pyproject). The package states no separate terms for the "
               "template and atlas files; LPBA40 itself is distributed by LONI (Shattuck et al. 2008).",
    "citation": "Fisch et al., deepmriprep, arXiv:2408.10656 (2024); Shattuck et al., Construction of a 3D "
                "probabilistic atlas of human cortical structures, NeuroImage 39:1064-1080 (2008)",
    "real_vs_synthetic": "real anatomy and labels of one template brain; between-case deformations, bias field, "
                         "gamma and noise are synthetic (benchmarks/lobes_dataset.py)",
}


def world_to_voxel(affine: np.ndarray, world: np.ndarray) -> np.ndarray:
    """(3, N) world mm -> (3, N) voxel coordinates of an image with ``affine``."""
    inv = np.linalg.inv(affine)
    return inv[:3, :3] @ world + inv[:3, 3:4]


def random_transform(rng: np.random.Generator, shape: tuple[int, ...], affine: np.ndarray) -> np.ndarray:
    """World coordinates (3, N) each target voxel samples from: a random affine about the grid centre
    plus a smooth random displacement (coarse 5^3 grid of N(0, 2 mm), cubic upsampling)."""
    from scipy.ndimage import zoom
    from scipy.spatial.transform import Rotation

    grid = np.indices(shape).reshape(3, -1).astype(np.float64)
    world = affine[:3, :3] @ grid + affine[:3, 3:4]
    centre = world.mean(axis=1, keepdims=True)
    rot = Rotation.from_euler("xyz", rng.uniform(-8, 8, 3), degrees=True).as_matrix()
    scale = np.diag(rng.uniform(0.9, 1.1, 3))
    moved = rot @ scale @ (world - centre) + centre + rng.uniform(-4, 4, (3, 1))
    coarse = rng.normal(0.0, 2.0, (3, 5, 5, 5))
    field = np.stack([zoom(c, [s / 5 for s in shape], order=3) for c in coarse]).reshape(3, -1)
    return moved + field


def bias_and_noise(img: np.ndarray, rng: np.random.Generator, mask: np.ndarray) -> np.ndarray:
    from scipy.ndimage import zoom

    coarse = rng.normal(0.0, 0.1, (3, 3, 3))
    bias = np.exp(zoom(coarse, [s / 3 for s in img.shape], order=3))
    out = np.clip(img, 0, None) ** rng.uniform(0.8, 1.25) * bias
    out = out + rng.normal(0.0, rng.uniform(0.01, 0.04), img.shape) * mask
    return (np.clip(out, 0, None) * 1000).astype(np.float32)


@dataclass
class Template:
    """The T1 template (smoothed for the 1.5 mm grid), the LPBA40 atlas and the grid the cases are made on."""

    t1_affine: np.ndarray
    t1_data: np.ndarray
    atlas_affine: np.ndarray
    atlas_data: np.ndarray
    lobe_of: np.ndarray  # LPBA40 ROI id -> lobe label
    shape: tuple[int, ...]
    affine: np.ndarray


def load_template(t1_path: Path, atlas_path: Path, grid_path: Path) -> Template:
    import nibabel as nib
    from scipy.ndimage import gaussian_filter

    t1, atlas, grid = nib.load(t1_path), nib.load(atlas_path), nib.load(grid_path)  # grid: only its 1.5 mm grid
    # 0.5 mm -> 1.5 mm: smooth first (sigma of one target voxel in source voxels / 2) against aliasing
    t1_data = gaussian_filter(np.asarray(t1.dataobj, dtype=np.float32), 1.0)
    atlas_data = np.asarray(atlas.dataobj).astype(np.int16)
    lobe_of = np.zeros(int(atlas_data.max()) + 1, dtype=np.uint8)
    for i, ids in enumerate(LOBES.values()):
        for roi in ids:
            lobe_of[roi] = 2 * i + 1 + (roi % 2 == 0)
    return Template(t1.affine, t1_data, atlas.affine, atlas_data, lobe_of, grid.shape[:3], grid.affine)


def deformed_case(template: Template, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(image, lobe labels) of one case: the template moved by the random deformation of ``seed``, with
    bias field, gamma and noise."""
    from scipy.ndimage import map_coordinates

    t = template
    rng = np.random.default_rng(seed)
    world = random_transform(rng, t.shape, t.affine)
    img = map_coordinates(t.t1_data, world_to_voxel(t.t1_affine, world), order=1, cval=0.0).reshape(t.shape)
    lab = map_coordinates(t.atlas_data, world_to_voxel(t.atlas_affine, world), order=0, cval=0).reshape(t.shape)
    seg = t.lobe_of[np.clip(lab, 0, len(t.lobe_of) - 1)]
    return bias_and_noise(img, rng, (img > 0.02).astype(np.float32)), seg


def main(argv: list[str] | None = None) -> int:
    import nibabel as nib

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--deepmriprep", type=Path, required=True, help="unpacked deepmriprep-0.3.0 sdist folder")
    ap.add_argument("--raw", type=Path, required=True, help="raw root to create the dataset in")
    ap.add_argument("--train", type=int, default=10)
    ap.add_argument("--test", type=int, default=4)
    args = ap.parse_args(argv)
    templates = args.deepmriprep / "deepmriprep" / "data" / "templates"
    template = load_template(templates / "Template_05mm_bet.nii.gz", templates / "lpba40.nii.gz",
                             templates / "Template_4_GS.nii.gz")
    out = args.raw / DATASET
    for sub in ("imagesTr", "labelsTr", "imagesTs", "labelsTs"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    seeds = [("Tr", k, k) for k in range(args.train)] + [("Ts", k, 1000 + k) for k in range(args.test)]
    for split, k, seed in seeds:
        img, seg = deformed_case(template, seed)
        case = f"lobes_{split.lower()}_{k:03d}"
        header = nib.Nifti1Header()
        header.set_xyzt_units("mm")
        nib.save(nib.Nifti1Image(img, template.affine, header), out / f"images{split}" / f"{case}_0000.nii.gz")
        nib.save(nib.Nifti1Image(seg.astype(np.uint8), template.affine, header), out / f"labels{split}" / f"{case}.nii.gz")
        present = sorted(int(v) for v in np.unique(seg))
        print(f"{case}: seed {seed}, labels {present}", flush=True)
    dataset_json = {"channel_names": {"0": "T1"}, "labels": LABELS, "numTraining": args.train,
                    "file_ending": ".nii.gz", "name": DATASET, "description": SOURCE["dataset"],
                    "reference": SOURCE["citation"], "licence": SOURCE["licence"]}
    (out / "dataset.json").write_text(json.dumps(dataset_json, indent=2))
    (args.raw / "SOURCE.json").write_text(json.dumps(SOURCE, indent=2))
    print(f"wrote {out} ({args.train} train, {args.test} test)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
