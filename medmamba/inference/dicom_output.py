"""What `predict` writes for a DICOM input folder besides the label maps: ``dicom_cases.json`` (case -> series)
and, with ``--output-format dicom-seg|both``, one DICOM SEG per case (``<case>.dcm``) made from the case's final
label map ``<case>.nii.gz`` (the array the prediction wrote, read back: the SEG equals it voxel for voxel).

``dicom-seg`` keeps only the SEG (the label map is removed once its SEG is written, so a later run without
``--overwrite`` predicts such cases again); ``both`` keeps the label map for analysis.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

from medmamba.atomic import atomic_write_json
from medmamba.errors import ConfigurationError
from medmamba.output_safety import OutputFolder
from medmamba import __version__
from medmamba.datasets.dicom_series import is_dicom_folder, series_for_path, series_path
from medmamba.datasets.image_io import SUPPORTED_ENDINGS, file_ending, read_image
from medmamba.formats.json_io import read_json
from medmamba.inference.dicom_cases import CASES_MAP_NAME, cases_map
from medmamba.inference.dicom_seg import segments_from_dataset, write_dicom_seg
from medmamba.errors import DatasetError

OUTPUT_FORMATS = ("nifti", "dicom-seg", "both")
SEG_ENDING = ".dcm"


def is_dicom_input(input_dir: str | Path) -> bool:
    """The input folder predict reads as DICOM (:func:`medmamba.inference.input_folder.gather_input_cases`)."""

    folder = Path(input_dir)
    if not folder.is_dir() or any(p.is_file() and file_ending(p) in SUPPORTED_ENDINGS for p in folder.iterdir()):
        return False
    return is_dicom_folder(folder)


def check_output_format(output_format: str, input_dir: str | Path) -> bool:
    """Validate ``--output-format`` against the input; returns whether the input is a DICOM folder."""
    if output_format not in OUTPUT_FORMATS:
        raise ConfigurationError(f"--output-format must be one of {', '.join(OUTPUT_FORMATS)}, got {output_format!r}")
    dicom = is_dicom_input(input_dir)
    if output_format != "nifti" and not dicom:
        raise ConfigurationError(f"--output-format {output_format} writes DICOM SEG, which references the source "
                                 "DICOM series: the input folder holds no DICOM files")
    return dicom


def write_dicom_outputs(input_dir: str | Path, output_dir: str | Path, written: Iterable[str], skipped: Iterable[str],
                        n_channels: int, output_format: str, model_name: str, overwrite: bool = False,
                        progress: bool = True) -> list[Path]:
    """Write ``dicom_cases.json`` and (``dicom-seg``/``both``) the SEG of each case whose label map is in
    ``output_dir``: the cases just ``written``, and ``skipped`` ones (label map already there) without a SEG yet.
    The SEG references channel 0's series. Returns the SEG files written."""
    from tqdm import tqdm

    input_dir, output_dir = Path(input_dir), Path(output_dir)
    mapping = cases_map(input_dir, n_channels)
    segs: list[Path] = []
    with OutputFolder(output_dir, inputs=[input_dir], overwrite=overwrite, what="output folder") as out:
        out.claim([CASES_MAP_NAME])
        atomic_write_json(output_dir / CASES_MAP_NAME, mapping)
        if output_format == "nifti":
            return segs

        dataset_json: dict[str, Any] = read_json(output_dir / "dataset.json", dict, "dataset.json", DatasetError)
        segments = segments_from_dataset(dataset_json)
        fresh = set(written)
        todo = [case for case in sorted(fresh | set(skipped)) if (output_dir / f"{case}.nii.gz").is_file()
                and case in mapping["cases"] and (case in fresh or not (output_dir / f"{case}{SEG_ENDING}").exists())]
        out.claim([f"{case}{SEG_ENDING}" for case in todo])
        for case in tqdm(todo, desc="DICOM SEG", unit="case", disable=not progress):
            label_map = output_dir / f"{case}.nii.gz"
            labels, _ = read_image(label_map)
            series = series_for_path(series_path(input_dir, mapping["cases"][case][0]["series_instance_uid"]))
            target = output_dir / f"{case}{SEG_ENDING}"
            write_dicom_seg(labels, series, target, segments, model_name, __version__)
            segs.append(target)
            if output_format == "dicom-seg":
                label_map.unlink()
    return segs
