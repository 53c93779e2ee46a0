"""DICOM round trip: series geometry read by medmamba vs the written truth and SimpleITK (GDCM), and label map ->
DICOM SEG -> highdicom read-back agreement, plus ``dciodvfy``'s verdict on each SEG.

Run: ``python benchmarks/dicom_roundtrip.py`` (about a minute on 2 cores). The series are synthetic CTs written
with pydicom by the test suite's writer (``tests/test_dicom.py``: int16 stored values, rescale slope/intercept,
shuffled files in nested folders): axial, oblique (20 degrees about an oblique axis), in-plane axes flipped, and
one Enhanced CT object (oblique, frames stored in reverse order; SimpleITK keeps that stored order, so its k axis
is reversed before comparing). Per series:

- geometry differences, medmamba vs truth and vs SimpleITK's ImageSeriesReader: origin (mm), spacing (mm), axis
  directions (degrees); the largest absolute voxel value difference vs SimpleITK;
- a random label map of 3 labels written as a SEG (medmamba's writer) and read back with highdicom
  (``get_volume``): voxel agreement with the label map and the largest voxel-centre distance between the two
  grids (mm);
- ``dciodvfy`` (Debian dicom3tools) on the SEG: its Error/Warning lines;
- peak resident memory of this process (``resource.getrusage``), which the largest series dominates, and of a
  fresh process reading one 512x512x200 int16 CT series (``read_memory``).

Wall times are contended (other developers share the 2 cores) and not reported.
Result: ``benchmarks/results/dicom_roundtrip_<date>.json``.
"""
from __future__ import annotations

import argparse
import datetime
import json
import resource
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))


def _angle_degrees(a: np.ndarray, b: np.ndarray) -> float:
    cos = np.clip(np.sum(a * b, axis=0) / (np.linalg.norm(a, axis=0) * np.linalg.norm(b, axis=0)), -1.0, 1.0)
    return float(np.degrees(np.arccos(cos)).max())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs=3, default=[256, 224, 60], help="series voxels (i, j, k)")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args()

    import highdicom
    import pydicom
    import SimpleITK as sitk

    from bench_helpers import machine_info, write_result
    from medmamba import __version__
    from medmamba.datasets.dicom_series import read_series, scan_dicom_folder
    from medmamba.inference.dicom_seg import segments_from_dataset, write_dicom_seg
    from tests.test_dicom import _seg_volume_in_our_grid, oblique_direction, sitk_series, volume, write_enhanced, \
        write_series

    shape = tuple(args.shape)
    cases = {
        "axial": dict(direction=np.eye(3), slope=1.0, intercept=-1024.0),
        "oblique_20deg": dict(direction=oblique_direction(20.0), slope=0.5, intercept=-1000.0),
        "inplane_flipped": dict(direction=np.diag([-1.0, -1.0, 1.0]), slope=1.0, intercept=0.0),
    }
    segments = segments_from_dataset({"labels": {"background": 0, "liver": 1, "spleen": 2, "lesion": 3}})
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for name, kw in [*cases.items(), ("enhanced_oblique", None)]:
            folder = root / name
            if kw is None:
                array = volume((shape[0] // 2, shape[1] // 2, shape[2] // 2), seed=9, scale=0.5, offset=-100.0)
                truth = write_enhanced(folder / "volume.dcm", array, direction=oblique_direction(-35.0))
            else:
                array = volume(shape, seed=1, scale=kw["slope"], offset=kw["intercept"])
                truth = write_series(folder, array, **kw)
            (series,) = scan_dicom_folder(folder).series
            data, geometry = read_series(series)
            row = {"shape": list(data.shape), "dtype": data.dtype.name,
                   "vs_truth": {"origin_mm": float(np.abs(np.subtract(geometry.origin, truth["origin"])).max()),
                                "spacing_mm": float(np.abs(np.subtract(geometry.spacing, truth["spacing"])).max()),
                                "direction_deg": _angle_degrees(geometry.direction_matrix, truth["direction"]),
                                "max_value_diff": float(np.abs(data - array).max())}}
            if kw is not None:
                ref, spacing, origin, direction = sitk_series(truth["files"])
            else:
                image = sitk.ReadImage(str(folder / "volume.dcm"))
                ref = sitk.GetArrayFromImage(image).transpose(2, 1, 0)
                spacing, origin = np.asarray(image.GetSpacing()), np.asarray(image.GetOrigin())
                direction = np.reshape(image.GetDirection(), (3, 3))
            reversed_k = float(direction[:, 2] @ geometry.direction_matrix[:, 2]) < 0
            if reversed_k:  # GDCM keeps an enhanced object's stored frame order; compare on medmamba's (sorted) order
                origin = origin + (ref.shape[2] - 1) * spacing[2] * direction[:, 2]
                direction = direction * np.array([1.0, 1.0, -1.0])
                ref = ref[:, :, ::-1]
            row["vs_simpleitk"] = {
                "simpleitk_k_axis_reversed": reversed_k,
                "origin_mm": float(np.abs(np.subtract(geometry.origin, origin)).max()),
                "spacing_mm": float(np.abs(np.subtract(geometry.spacing, spacing)).max()),
                "direction_deg": _angle_degrees(geometry.direction_matrix, direction),
                "max_value_diff": float(np.abs(data.astype(np.float64) - ref).max()) if ref.shape == data.shape
                else f"shape {ref.shape} vs {data.shape}"}
            rng = np.random.default_rng(3)
            labels = np.zeros(data.shape, np.uint8)
            for value in (1, 2, 3):
                centre = [int(rng.integers(s // 4, 3 * s // 4)) for s in data.shape]
                labels[tuple(slice(max(0, c - s // 6), c + s // 6) for c, s in zip(centre, data.shape))] = value
            seg_path = root / f"{name}_seg.dcm"
            write_dicom_seg(labels, series, seg_path, segments, "benchmark/plain_unet", __version__)
            seg = highdicom.seg.segread(seg_path)
            on_grid, mm = _seg_volume_in_our_grid(seg, geometry)
            referenced = {i.ReferencedSOPInstanceUID for s in seg.ReferencedSeriesSequence
                          for i in s.ReferencedInstanceSequence}
            sources = {str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in series.files}
            row["seg"] = {"frames": int(seg.number_of_frames), "segments": len(seg.get_segment_numbers()),
                          "voxel_agreement": float((on_grid == labels).mean()),
                          "voxels_differing": int((on_grid != labels).sum()), "grid_distance_mm": mm,
                          "references_every_source_instance": referenced == sources,
                          "frame_of_reference_shared": seg.FrameOfReferenceUID == series.frame_of_reference_uid,
                          "bytes": seg_path.stat().st_size}
            if shutil.which("dciodvfy"):
                run = subprocess.run(["dciodvfy", str(seg_path)], capture_output=True, text=True, timeout=120)
                lines = [line for line in (run.stdout + run.stderr).splitlines() if line.strip()]
                row["dciodvfy"] = {"errors": [line for line in lines if line.startswith("Error")],
                                   "warnings": [line for line in lines if line.startswith("Warning")],
                                   "output": lines[:20]}
            results[name] = row
            print(name, json.dumps(row)[:400])
        # peak memory of reading one 512x512x200 int16 CT series, in a fresh process (its max RSS alone)
        big = root / "ct_512"
        write_series(big, volume((512, 512, 200), seed=1, offset=-1024.0), intercept=-1024.0, subfolders=False)
        # VmHWM (peak RSS of this process image): ru_maxrss of a child forked from this large process would
        # start at this process's size
        hwm = "int(next(l for l in open('/proc/self/status') if l.startswith('VmHWM')).split()[1]) / 1024"
        code = ("from medmamba.datasets.dicom_series import read_series, scan_dicom_folder; import pydicom; "
                f"base = {hwm}; (s,) = scan_dicom_folder({str(big)!r}).series; a, g = read_series(s); "
                f"print(base, {hwm}, a.nbytes / 2**20)")
        after_import, peak, array_mb = map(float, subprocess.run([sys.executable, "-c", code], capture_output=True,
                                                                 text=True, check=True).stdout.split())
        read_memory = {"series": "512x512x200 int16 CT, 200 files", "array_mib": array_mb,
                       "peak_rss_mib": peak, "rss_after_imports_mib": after_import,
                       "peak_minus_imports_over_array": (peak - after_import) / array_mb}
        print("read memory", read_memory)
    record = {"date": datetime.date.today().isoformat(), "read_memory": read_memory,
              "machine": machine_info(packages=["pydicom", "highdicom", "SimpleITK"]),
              "note": "wall times not reported: 2 shared cores (other developers' jobs running)",
              "peak_rss_mib_this_process": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
              "series": results}
    write_result(args.out, "dicom_roundtrip", record)


if __name__ == "__main__":
    main()
