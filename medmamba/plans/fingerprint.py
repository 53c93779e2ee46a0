"""Dataset fingerprint → ``<preprocessed>/<dataset>/fingerprint.json``.

Per training case: spacing, shape before/after crop-to-nonzero and, per channel, a sample of
foreground intensities: ``N_case = int(samples_total // num_cases)`` values drawn uniformly with
replacement from the voxels where the cropped label is > 0 (RandomState seed 1234; nnU-Net's
rule, ``samples_total`` = 1e8). The dataset statistics (mean, median, std, min, max, 0.5 and 99.5
percentiles) are computed over all cases' samples concatenated.

Cases are first reoriented to the closest-RAS voxel order, as preprocessing does (cases of one
dataset may be stored in different orientations), and 2D images are lifted to 3D with a leading
singleton axis of spacing 999 mm (so the planner sees one code path); spacings and shapes are in
that canonical axis order.

Keys of fingerprint.json: ``format_version``, ``dataset_name``, ``case_ids``, ``spacings``,
``shapes_before_crop``, ``shapes_after_crop``, ``relative_sizes_after_cropping``,
``median_relative_size_after_cropping``, ``original_ndim``, ``samples_per_case``, ``seed``,
``foreground_intensity_properties_per_channel``.
"""
from __future__ import annotations

import logging
import math
import os
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from medmamba.atomic import atomic_write_json
from medmamba.errors import DatasetError, MedmambaError
from medmamba.formats.constants import LIFTED_AXIS_SPACING
from medmamba.formats.fingerprint import FINGERPRINT_FORMAT_VERSION, load_fingerprint
from medmamba.datasets.case_checks import dimensionality_findings
from medmamba.datasets.case_reader import read_case_and_label
from medmamba.datasets.cropping import crop_to_nonzero
from medmamba.datasets.orientation import canonical_reorientation
from medmamba.errors import ConfigurationError

logger = logging.getLogger("medmamba.plans")

# nnU-Net: 10e7 foreground samples for the whole dataset, seed 1234.
FOREGROUND_SAMPLES_TOTAL = int(1e8)
SEED = 1234


def case_fingerprint(image_files: Sequence[str | os.PathLike], label_file: str | os.PathLike,
                     samples_per_case: int, seed: int = SEED, declared_labels: Sequence[int] | None = None
                     ) -> dict[str, Any]:
    """Fingerprint of one case; ``samples`` is a list per channel of float32 arrays. The case is
    checked as `medmamba verify` checks it (label values against ``declared_labels`` when given)."""

    data, seg, geometry = read_case_and_label(image_files, label_file, declared_labels)
    reorientation = canonical_reorientation(geometry.direction)  # as preprocessing does
    data, seg = reorientation.apply(data), reorientation.apply(seg)
    spacing = reorientation.spacing(geometry.spacing)
    ndim = data.ndim - 1
    if ndim == 2:
        data, seg, spacing = data[:, None], seg[:, None], [LIFTED_AXIS_SPACING, *spacing]
    shape_before = list(data.shape[1:])
    data_c, seg_c, _ = crop_to_nonzero(data, seg)
    shape_after = list(data_c.shape[1:])
    fg = seg_c[0] > 0
    rng = np.random.RandomState(seed)
    samples = []
    for c in range(data_c.shape[0]):
        values = data_c[c][fg]
        if values.size == 0 or samples_per_case <= 0:
            samples.append(np.zeros(0, dtype=np.float32))
        else:
            samples.append(rng.choice(values, samples_per_case, replace=True).astype(np.float32))
    return {
        "spacing": spacing,
        "shape_before_crop": shape_before,
        "shape_after_crop": shape_after,
        "relative_size_after_cropping": math.prod(shape_after) / math.prod(shape_before),
        "original_ndim": ndim,
        "samples": samples,
    }


def _case_job(args: tuple) -> dict[str, Any]:
    return case_fingerprint(*args)


def intensity_statistics(samples: np.ndarray) -> dict[str, float]:
    """mean, median, std, min, max, percentile_00_5, percentile_99_5 of a 1-D sample (float64 maths)."""
    x = np.asarray(samples, dtype=np.float64)
    p005, p50, p995 = np.percentile(x, [0.5, 50.0, 99.5])
    return {"mean": float(x.mean()), "median": float(p50), "std": float(x.std()), "min": float(x.min()),
            "max": float(x.max()), "percentile_00_5": float(p005), "percentile_99_5": float(p995)}


def extract_fingerprint(cases: Sequence[Any], num_channels: int, dataset_name: str = "",
                        num_processes: int = 1, samples_total: int = FOREGROUND_SAMPLES_TOTAL,
                        progress: bool = True, declared_labels: Sequence[int] | None = None) -> dict[str, Any]:
    """Fingerprint of labelled ``cases`` (objects with ``case_id``, ``image_files``, ``label_file``).

    Runs ``num_processes`` worker processes (spawn) with a tqdm progress bar.
    """
    from tqdm import tqdm

    cases = [c for c in cases if c.label_file is not None]
    if not cases:
        raise DatasetError("no labelled training cases to fingerprint")
    per_case = _samples_per_case(samples_total, len(cases))
    declared = None if declared_labels is None else sorted(declared_labels)
    jobs = [(c.image_files, c.label_file, per_case, SEED, declared) for c in cases]
    bar = dict(total=len(jobs), desc="fingerprint", unit="case", disable=not progress)
    if num_processes <= 1:
        results = [_case_job(j) for j in tqdm(jobs, **bar)]
    else:
        import multiprocessing

        try:
            with ProcessPoolExecutor(num_processes, mp_context=multiprocessing.get_context("spawn")) as pool:
                results = list(tqdm(pool.map(_case_job, jobs), **bar))
        except BrokenProcessPool:
            raise MedmambaError(f"a fingerprint worker process died, probably out of RAM; rerun with fewer "
                                f"processes (-np {max(1, num_processes // 2)})") from None
    mixed = dimensionality_findings({Path(c.image_files[0]): r["original_ndim"] for c, r in zip(cases, results)})
    if mixed:
        raise DatasetError(mixed[0].problem, path=mixed[0].path)
    ndims = {r["original_ndim"] for r in results}
    stats = {}
    for c in range(num_channels):
        chunks = [r["samples"][c] for r in results if r["samples"][c].size]
        if not chunks:
            raise DatasetError("no foreground voxels (label > 0) in any training case; check labelsTr")
        stats[str(c)] = intensity_statistics(np.concatenate(chunks))
    rel = [r["relative_size_after_cropping"] for r in results]
    return {
        "format_version": FINGERPRINT_FORMAT_VERSION,
        "dataset_name": dataset_name,
        "case_ids": [c.case_id for c in cases],
        "spacings": [r["spacing"] for r in results],
        "shapes_before_crop": [r["shape_before_crop"] for r in results],
        "shapes_after_crop": [r["shape_after_crop"] for r in results],
        "relative_sizes_after_cropping": rel,
        "median_relative_size_after_cropping": float(np.median(rel)),
        "original_ndim": ndims.pop(),
        "samples_per_case": per_case,
        "seed": SEED,
        "foreground_intensity_properties_per_channel": stats,
    }


def _samples_per_case(samples_total: int, num_cases: int) -> int:
    """Foreground samples per case; at least one per case (the intensity statistics need samples)."""

    if isinstance(samples_total, bool) or not isinstance(samples_total, (int, np.integer)) or \
            samples_total < max(1, num_cases):
        raise ConfigurationError(f"--fingerprint-samples must be an integer of at least the number of labelled "
                                 f"training cases ({num_cases}), got {samples_total!r}")
    return int(samples_total // num_cases)


def fingerprint_dataset(cases: Sequence[Any], num_channels: int, output_file: str | os.PathLike,
                        dataset_name: str = "", num_processes: int = 1, clean: bool = False,
                        samples_total: int = FOREGROUND_SAMPLES_TOTAL, progress: bool = True,
                        declared_labels: Sequence[int] | None = None) -> dict[str, Any]:
    """Load the cached ``output_file`` unless ``clean`` or the dataset's cases changed; else extract and write it.

    With a cached fingerprint the cases are still checked, by preprocessing, which reads each again."""
    out = Path(output_file)
    labelled = [c for c in cases if c.label_file is not None]
    per_case = _samples_per_case(samples_total, len(labelled)) if labelled else 0
    if out.is_file() and not clean:
        cached = load_fingerprint(out)
        if cached.get("case_ids") == [c.case_id for c in labelled] and cached.get("samples_per_case") == per_case:
            logger.info("fingerprint: using cached %s (pass --clean to recompute)", out)
            return cached
        logger.info("fingerprint: %s is stale (cases or sampling changed); recomputing", out)
    fp = extract_fingerprint(labelled, num_channels, dataset_name, num_processes, samples_total, progress,
                             declared_labels)
    atomic_write_json(out, fp)
    return fp
