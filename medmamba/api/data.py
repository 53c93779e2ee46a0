"""Raw datasets: ``make_demo_dataset``, ``verify``, ``convert_msd``."""
from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from medmamba import option_ranges as R
from medmamba.datasets.demo import make_demo_dataset as make
from medmamba.datasets.msd import convert_msd_dataset
from medmamba.datasets.raw_dataset import resolve_dataset_folder
from medmamba.datasets.verify import verify_dataset
from medmamba.paths import raw_root

if TYPE_CHECKING:
    from medmamba.datasets.verify import VerifyReport


def make_demo_dataset(
    *,
    dataset_id: int = R.DATASET_ID.default,
    cases: int = R.DEMO_CASES.default,
    test_cases: int = R.DEMO_TEST_CASES.default,
    seed: int = R.DEMO_SEED.default,
    channels: int = R.DEMO_CHANNELS.default,
    size: int = R.DEMO_SIZE.default,
    overwrite: bool = False,
    raw: str | os.PathLike | None = None,
    progress: bool = True,
    regions: bool = False,
    partial: bool = False,
) -> Path:
    """Write the deterministic synthetic 3D demo dataset (liver, kidney, vessel, lesion) into the raw root
    and return its folder (``DatasetXXX_Demo``). ``size`` is the nominal voxels per axis at 1.75 mm;
    an existing folder made with the same arguments is reused, a different one needs ``overwrite``.
    ``regions``: ``DatasetXXX_DemoRegions``, a nested tumour declared as BraTS-style regions (whole tumour,
    tumour core, enhancing tumour) for region-based training. ``partial``: the partially annotated
    variant ``DatasetXXX_DemoPartial`` (half of every training label map is the ``ignore`` label 5)."""

    for option, value in ((R.DATASET_ID, dataset_id), (R.DEMO_CASES, cases), (R.DEMO_TEST_CASES, test_cases),
                          (R.SEED, seed), (R.DEMO_SIZE, size)):
        R.check(option, value, allow_none=False)

    return make(raw_root(raw), dataset_id=dataset_id, n_cases=cases, seed=seed, n_channels=channels,
                n_test=test_cases, size=size, overwrite=overwrite, progress=progress, regions=regions,
                partial=partial)


def verify(*, dataset: int | str, raw: str | os.PathLike | None = None, progress: bool = True) -> VerifyReport:
    """Check a raw dataset (files, dataset.json, geometry, label values, NaN) and return the
    :class:`~medmamba.datasets.verify.VerifyReport` (``ok``, ``errors``, ``warnings``: one line each)."""

    return verify_dataset(resolve_dataset_folder(dataset, raw_root(raw)), progress=progress)


def convert_msd(
    *,
    task_folder: str | os.PathLike,
    dataset_id: int | None = None,
    raw: str | os.PathLike | None = None,
    progress: bool = True,
    brats_regions: bool = False,
) -> Path:
    """Convert a Medical Segmentation Decathlon ``TaskXX_Name`` folder (only read) into a raw
    ``DatasetXXX_Name`` folder (id XX unless ``dataset_id``) and return it. ``brats_regions``
    (Task01_BrainTumour, labels 1 edema, 2 non-enhancing, 3 enhancing): declare BraTS's regions whole
    tumour [1, 2, 3], tumour core [2, 3], enhancing tumour [3] with ``regions_class_order`` [1, 2, 3]."""

    R.check(R.DATASET_ID, dataset_id)

    return convert_msd_dataset(task_folder, raw_root(raw), dataset_id, progress=progress, brats_regions=brats_regions)
