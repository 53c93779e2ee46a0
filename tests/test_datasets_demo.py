"""Demo dataset generator: deterministic bytes, the promised variety, valid raw format."""
import json
import time

import numpy as np
import pytest
from nibabel.orientations import aff2axcodes

from medmamba.datasets.demo import DEMO_LABELS, generate_case, make_demo_dataset
from medmamba.datasets.image_io import read_image
from medmamba.datasets.raw_dataset import list_cases, load_dataset_json
from medmamba.datasets.verify import verify_dataset
from medmamba.errors import DatasetError


def _files(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_default_demo_is_deterministic_fast_and_valid(tmp_path):
    start = time.perf_counter()
    a = make_demo_dataset(tmp_path / "a", progress=False)
    elapsed = time.perf_counter() - start
    b = make_demo_dataset(tmp_path / "b", progress=False)
    assert a.name == "Dataset999_Demo"
    files_a, files_b = _files(a), _files(b)
    assert files_a == files_b  # same seed -> same bytes
    assert len([f for f in files_a if f.startswith("imagesTr/")]) == 12
    assert len([f for f in files_a if f.startswith("labelsTs/")]) == 4
    assert elapsed < 20.0, f"demo generation took {elapsed:.1f} s"  # ~0.5 s measured on 2 cores
    dataset_json = load_dataset_json(a)
    assert dataset_json["labels"] == DEMO_LABELS and dataset_json["numTraining"] == 12
    report = verify_dataset(a, progress=False)
    assert report.ok, report.errors
    assert report.warnings == []

    shapes, spacings, orientations, dtypes = set(), set(), set(), set()
    for case in list_cases(a) + list_cases(a, "Ts"):
        image, geometry = read_image(case.image_files[0])
        labels, _ = read_image(case.label_file)
        shapes.add(geometry.shape)
        spacings.add(tuple(round(s, 3) for s in geometry.spacing))
        orientations.add("".join(aff2axcodes(geometry.affine_ras())) if np.allclose(np.abs(geometry.direction_matrix), np.eye(3)) else "oblique")
        dtypes.add((geometry.dtype, geometry.header.get("scl_slope", 1.0) != 1.0))
        assert all(40 <= s <= 70 for s in geometry.shape[:2]) and 28 <= geometry.shape[2] <= 70, geometry.shape  # ~48-64 per axis, fewer thick slices
        assert set(np.unique(labels)) <= set(DEMO_LABELS.values())
        assert np.all(np.isfinite(image))
    assert len(shapes) >= 8
    assert {(1.6, 1.6, 3.0), (1.5, 1.5, 1.5)} <= spacings  # anisotropic and isotropic
    assert orientations == {"LPS", "RAS", "oblique"}
    assert dtypes == {("int16", False), ("float32", False), ("uint16", False), ("int16", True)}


def test_every_class_present_with_partial_volume_edges():
    images, labels, geometry = generate_case(0, seed=0, n_channels=2, size=56)
    counts = np.bincount(labels.ravel(), minlength=5)
    # background, liver, kidney, vessel, lesion all present, each in a structure of some size
    # (at least 0.05% of the volume, ~80 voxels here; a stray voxel is not a lesion)
    assert np.all(counts >= 5e-4 * labels.size), counts
    assert counts[4] < counts[2] < counts[1]  # lesion smallest, liver largest
    assert len(images) == 2 and images[0].shape == labels.shape == geometry.shape
    assert not np.allclose(images[0], images[1])  # two contrasts
    liver = images[0][labels == 1]
    background = images[0][labels == 0]
    assert liver.mean() > background.mean()  # distinct textures/intensities
    assert liver.std() > 10  # noise + texture + bias (units: x1000)


def test_seed_changes_content_and_existing_folder_rules(tmp_path):
    a = make_demo_dataset(tmp_path, dataset_id=990, n_cases=2, n_test=1, size=16, seed=1, progress=False)
    before = _files(a)
    assert make_demo_dataset(tmp_path, dataset_id=990, n_cases=2, n_test=1, size=16, seed=1, progress=False) == a
    assert _files(a) == before  # reused, untouched
    with pytest.raises(DatasetError, match="overwrite"):
        make_demo_dataset(tmp_path, dataset_id=990, n_cases=2, n_test=1, size=16, seed=2, progress=False)
    make_demo_dataset(tmp_path, dataset_id=990, n_cases=2, n_test=1, size=16, seed=2, overwrite=True, progress=False)
    after = _files(a)
    assert after.keys() == before.keys() and after != before
    assert json.loads(after["dataset.json"])["medmamba_demo"]["seed"] == 2
    assert [p.name for p in tmp_path.iterdir()] == [a.name]  # no temporary folders left
    (tmp_path / "Dataset991_Mine").mkdir()
    with pytest.raises(DatasetError, match="already used by Dataset991_Mine"):
        make_demo_dataset(tmp_path, dataset_id=991, n_cases=1, n_test=0, size=16, progress=False)
