"""Shared fixtures: a tiny preprocessed dataset written directly in the docs/internals.md format
(no preprocessing run), used by the tests/test_training_*.py modules; every C++ kernel build
failing on purpose, for the fallback tests."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from medmamba.formats.preprocessed_case import mark_complete

DATASET = "Dataset901_TrainTiny"


def _case(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """One bright sphere (label 1) in noise: data float32 (1, s, s, s), seg int16 (1, s, s, s)."""
    grid = np.stack(np.meshgrid(*[np.arange(size)] * 3, indexing="ij"), -1).astype(np.float32)
    centre = rng.uniform(size * 0.3, size * 0.7, 3)
    radius = rng.uniform(size * 0.18, size * 0.3)
    seg = (np.linalg.norm(grid - centre, axis=-1) <= radius).astype(np.int16)[None]
    data = (seg.astype(np.float32) * 2.0 - 1.0 + rng.normal(0, 0.5, seg.shape)).astype(np.float32)
    return data, seg


def _make_preprocessed(root: Path, n_cases: int = 6, size: int = 20, patch3d=(16, 16, 16), patch2d=(16, 16),
                      network: str = "plain_unet", network_kwargs: dict | None = None, batch_size: int = 2,
                      seed: int = 0) -> Path:
    """Write ``root/Dataset901_TrainTiny`` with 3d_fullres and 2d configurations; returns the folder."""
    folder = Path(root) / DATASET
    rng = np.random.default_rng(seed)
    kwargs = network_kwargs if network_kwargs is not None else {
        "n_stages": 3, "features_per_stage": [4, 8, 16]}
    configs = {}
    for name, patch in (("3d_fullres", patch3d), ("2d", patch2d)):
        ndim = len(patch)
        configs[name] = {
            "data_identifier": f"medmambaPlans_{name}", "spatial_dims": ndim, "spacing": [1.0] * ndim,
            "patch_size": list(patch), "batch_size": batch_size, "median_image_size_in_voxels": [size] * ndim,
            "transpose_forward": [0, 1, 2], "transpose_backward": [0, 1, 2],
            "normalization_schemes": ["ZScoreNormalization"], "use_mask_for_norm": [False], "resampling": {},
            "network": {"name": network, "kwargs": {"spatial_dims": ndim, "in_channels": 1, "num_classes": 2,
                                                    "deep_supervision": True, **kwargs}},
            "mirror_axes": list(range(ndim)), "batch_dice": True,
        }
    plans = {
        "format_version": 1, "dataset_name": DATASET, "plans_name": "medmambaPlans",
        "transpose_forward": [0, 1, 2], "transpose_backward": [0, 1, 2],
        "original_median_spacing_after_transp": [1.0, 1.0, 1.0],
        "original_median_shape_after_transp": [size] * 3,
        "foreground_intensity_properties_per_channel": {"0": {"mean": 1.0, "median": 1.0, "std": 0.5, "min": -1.0,
                                                              "max": 3.0, "percentile_00_5": -0.5,
                                                              "percentile_99_5": 2.5}},
        "channel_names": {"0": "MR"}, "labels": {"background": 0, "sphere": 1}, "file_ending": ".nii.gz",
        "configurations": configs,
    }
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "plans.json").write_text(json.dumps(plans, indent=1))
    dataset_json = {"channel_names": {"0": "MR"}, "labels": {"background": 0, "sphere": 1},
                    "numTraining": n_cases, "file_ending": ".nii.gz"}
    (folder / "dataset.json").write_text(json.dumps(dataset_json))
    for i in range(n_cases):
        data, seg = _case(rng, size)
        locs = np.argwhere(seg[0] == 1)
        for name in configs:
            sub = folder / f"medmambaPlans_{name}"
            sub.mkdir(exist_ok=True)
            np.save(sub / f"case_{i:03d}.npy", data)
            np.save(sub / f"case_{i:03d}_seg.npy", seg)
            props = {"class_locations": {"1": np.concatenate([np.zeros((len(locs), 1), int), locs], 1).tolist()}}
            (sub / f"case_{i:03d}.json").write_text(json.dumps(props))
    for name in configs:
        mark_complete(folder / f"medmambaPlans_{name}", [f"case_{i:03d}" for i in range(n_cases)])
    return folder


@pytest.fixture(scope="session")
def make_preprocessed():
    """``make_preprocessed(root, n_cases=6, size=20, ...)`` writes ``root/Dataset901_TrainTiny`` (a sphere in
    noise per case; 3d_fullres and 2d configurations) and returns that folder."""
    return _make_preprocessed


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """A trained model and everything the commands read, made once: ``root/pre`` (Dataset901_TrainTiny,
    written directly), ``root/res`` (plain_unet 3d_fullres fold_all, one iteration), ``root/images``
    (two 20^3 test images), ``root/labels`` (their label maps), ``root/pred_a`` and ``root/pred_b``
    (predictions with saved probabilities) and ``root/raw/Dataset998_Demo`` (a tiny raw demo dataset).
    Returns a namespace of these paths. Tests must not write into them."""
    from types import SimpleNamespace

    from medmamba import api
    from medmamba.datasets.geometry import ImageGeometry
    from medmamba.datasets.image_io import write_image

    root = tmp_path_factory.mktemp("tiny_model")
    _make_preprocessed(root / "pre", n_cases=4, size=20)
    api.train(dataset=DATASET, configuration="3d_fullres", fold="all", epochs=1, iterations_per_epoch=1,
              val_iterations=1, final_validation=False, device="cpu", num_workers=0, augmentation="none",
              preprocessed=root / "pre", results=root / "res", progress=False)
    rng = np.random.default_rng(0)
    geometry = ImageGeometry.identity((20, 20, 20), (1.0, 1.0, 1.0))
    for i in range(2):
        data, seg = _case(rng, 20)
        write_image(root / "images" / f"case_{i}_0000.nii.gz", data[0], geometry)
        write_image(root / "labels" / f"case_{i}.nii.gz", seg[0], geometry, dtype=np.uint8)
    for name in ("pred_a", "pred_b"):
        api.predict(input_folder=root / "images", output_folder=root / name, dataset=DATASET,
                    configuration="3d_fullres", folds=["all"], device="cpu", tta=False, save_probabilities=True,
                    num_workers=0, results=root / "res", progress=False, echo=lambda line: None)
    raw = api.make_demo_dataset(dataset_id=998, cases=2, test_cases=0, size=8, raw=root / "raw", progress=False)
    return SimpleNamespace(root=root, pre=root / "pre", res=root / "res", images=root / "images",
                           labels=root / "labels", pred_a=root / "pred_a", pred_b=root / "pred_b", raw=raw,
                           raw_root=root / "raw", dataset=DATASET,
                           model=root / "res" / DATASET / "plain_unet__medmambaPlans__3d_fullres")


@pytest.fixture(scope="session")
def trained_tiny_model(tmp_path_factory, make_preprocessed):
    """One fold of plain_unet trained for one iteration on the tiny preprocessed dataset ("2d"
    configuration), plus raw test images to predict: ``(results root, model folder, images folder)``."""
    import nibabel as nib

    from medmamba import api

    root = tmp_path_factory.mktemp("trained_tiny")
    make_preprocessed(root / "preprocessed", n_cases=5, size=16)
    api.train(dataset=901, configuration="2d", fold=0, epochs=1, iterations_per_epoch=1, val_iterations=1,
              preprocessed=root / "preprocessed", results=root / "results", num_workers=0, progress=False)
    images = root / "images"
    images.mkdir()
    rng = np.random.default_rng(3)
    for i, shape in enumerate([(18, 16, 5), (20, 17, 4)]):
        data, _ = _case(rng, max(shape))
        volume = data[0][: shape[0], : shape[1], : shape[2]]
        affine = np.diag([0.9, 1.1, 2.0, 1.0])
        nib.save(nib.Nifti1Image(volume.astype(np.float32), affine), str(images / f"case{i}_0000.nii.gz"))
    model = root / "results" / DATASET / "plain_unet__medmambaPlans__2d"
    return root / "results", model, images


@pytest.fixture
def failed_cpp_builds(monkeypatch):
    """Every C++ kernel build fails (``cpp_build.FAIL_ENV``) for one test. The switch covers both
    kernels, and any status computed meanwhile (``medmamba info`` asks for both) is cached, so
    both caches and both warn-once flags are reset before and after; afterwards both kernels must
    load again, so no later test silently runs a fallback."""
    from medmamba.kernels import cpp_build, cpp_scan, deform_sampling

    statuses = (cpp_scan.cpp_scan_status, deform_sampling.cpp_deform_status)
    monkeypatch.setenv(cpp_build.FAIL_ENV, "1")
    monkeypatch.setattr(cpp_build, "_WARNED", set())
    for status in statuses:
        status.cache_clear()
    yield
    monkeypatch.delenv(cpp_build.FAIL_ENV)
    for status in statuses:
        status.cache_clear()
    assert [status() for status in statuses] == [None, None]
